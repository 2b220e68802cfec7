//! One WebSocket connection: a reader in the connection's task and a writer
//! task, tied together by the [`ConnHandle`]'s close signal.
//!
//! The reader enforces the idle timeout (any frame, ping or pong resets it),
//! the rate limit and the frame size, and answers each frame before reading
//! the next — so one device's frames are handled in the order sent. The
//! writer drains the bounded send queue in batches (one flush per batch),
//! sends WebSocket pings every heartbeat interval, and ends the connection
//! with the close code that was asked for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use im_core::{codec, CloseCode, ErrorCode, ServerFrame};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;

use super::frames;
use super::ratelimit::TokenBucket;
use crate::hub::ConnHandle;
use crate::model::Session;
use crate::state::AppState;
use crate::time::now_ms;

/// Standard close code for "normal closure" (the client left).
const NORMAL: CloseCode = CloseCode(1000);
/// Frames written per flush at most.
const WRITE_BATCH: usize = 64;
/// How long the writer waits to deliver the close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs a connection to its end.
pub(super) async fn run(
    app: AppState,
    socket: WebSocket,
    session: Session,
    device: String,
    version_ok: bool,
) {
    let cfg = app.config();
    let hub = app.hub().clone();
    let metrics = app.metrics().clone();
    let user = session.user;
    let (handle, queue) = ConnHandle::new(
        hub.next_conn_id(),
        user,
        session.id.clone(),
        device,
        cfg.send_queue,
        metrics.clone(),
    );
    let (sink, mut stream) = socket.split();
    metrics.connection_opened();

    if !version_ok {
        handle.close(CloseCode::UNSUPPORTED_PROTOCOL);
        write_loop(sink, queue, handle.clone(), &app, session.expires_at).await;
        linger(&mut stream).await;
        finish(&app, &handle, false).await;
        return;
    }

    let rooms = match app.logic().my_rooms(user).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%user, error = %e, "connection refused: rooms unavailable");
            handle.close(CloseCode::RECONNECT);
            write_loop(sink, queue, handle.clone(), &app, session.expires_at).await;
            linger(&mut stream).await;
            finish(&app, &handle, false).await;
            return;
        }
    };
    // `hello` is queued before the hub can route anything to this
    // connection, so it is always the first frame.
    handle.send(&ServerFrame::Hello {
        protocol: im_core::PROTOCOL_VERSION,
        user,
        device: handle.device.clone(),
        node: cfg.node_name.clone(),
        heartbeat_interval_ms: cfg.heartbeat_interval.as_millis() as u64,
        idle_timeout_ms: cfg.idle_timeout.as_millis() as u64,
        limits: cfg.limits,
    });
    hub.register(handle.clone(), &rooms);
    app.logic().services().presence.connected(user).await;
    tracing::debug!(conn = handle.id, %user, device = %handle.device, "connected");

    let writer = tokio::spawn({
        let (handle, app) = (handle.clone(), app.clone());
        async move { write_loop(sink, queue, handle, &app, session.expires_at).await }
    });
    let client_closed = read_loop(&mut stream, &handle, &app).await;
    let _ = writer.await;
    if !client_closed {
        linger(&mut stream).await;
    }
    finish(&app, &handle, true).await;
}

/// After the server's close frame: reads (and discards) until the client's
/// close reply, briefly. Dropping the socket while the client still sends
/// would make the kernel reset the connection, and a reset can destroy the
/// close frame — and with it the close code the client must act on.
async fn linger(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn finish(app: &AppState, handle: &Arc<ConnHandle>, registered: bool) {
    if registered {
        app.hub().unregister(handle);
        app.logic().services().presence.disconnected(handle.user).await;
    }
    let code = handle.close_code().unwrap_or(NORMAL);
    app.metrics().connection_closed();
    app.metrics().close(code);
    tracing::debug!(conn = handle.id, user = %handle.user, code = code.0, reason = code.name(), "disconnected");
}

/// Reads frames until the connection must end; returns `true` when the
/// client closed or vanished (nothing left to read).
async fn read_loop(stream: &mut SplitStream<WebSocket>, handle: &Arc<ConnHandle>, app: &AppState) -> bool {
    let cfg = app.config();
    let limits = cfg.limits;
    let mut bucket = TokenBucket::new(limits.rate_per_sec, limits.rate_burst, Instant::now());
    // Consecutive over-rate frames tolerated before the connection is closed.
    let max_strikes = limits.rate_burst.max(1);
    let mut strikes = 0u32;
    let touch_every = cfg.heartbeat_interval / 2;
    let mut last_touch = Instant::now();

    loop {
        let next = tokio::select! {
            biased;
            _ = handle.closed() => return false,
            next = tokio::time::timeout(cfg.idle_timeout, stream.next()) => next,
        };
        let msg = match next {
            Err(_) => {
                handle.close(CloseCode::HEARTBEAT_TIMEOUT);
                return false;
            }
            Ok(None) => {
                handle.close(NORMAL);
                return true;
            }
            Ok(Some(Err(e))) => {
                let code = read_error_code(e);
                handle.close(code);
                return code == NORMAL;
            }
            Ok(Some(Ok(msg))) => msg,
        };
        if last_touch.elapsed() >= touch_every {
            last_touch = Instant::now();
            app.logic().services().presence.touch(handle.user).await;
        }
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                reply_error(app, handle, None, ErrorCode::BadFrame, "binary frames are not supported");
                continue;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => {
                handle.close(NORMAL);
                return true;
            }
        };
        if !bucket.take(Instant::now()) {
            strikes += 1;
            if strikes > max_strikes {
                tracing::info!(conn = handle.id, user = %handle.user, "closing: sustained flooding");
                handle.close(CloseCode::POLICY_VIOLATION);
                return false;
            }
            app.metrics().frame_in("invalid");
            reply_error(app, handle, None, ErrorCode::RateLimited, "too many frames, slow down");
            continue;
        }
        strikes = 0;
        match codec::decode_client(text.as_str()) {
            Ok(frame) => {
                app.metrics().frame_in(frame.type_name());
                let reply = frames::handle(app, handle, frame).await;
                if let ServerFrame::Error { code, .. } = &reply {
                    app.metrics().error(*code);
                }
                handle.send(&reply);
            }
            Err(e) => {
                app.metrics().frame_in("invalid");
                tracing::debug!(conn = handle.id, code = %e.code, detail = %e.detail, "bad frame");
                reply_error(app, handle, e.rid, e.code, &e.detail);
            }
        }
    }
}

fn reply_error(app: &AppState, handle: &ConnHandle, rid: Option<u64>, code: ErrorCode, msg: &str) {
    app.metrics().error(code);
    handle.send(&ServerFrame::error(rid, code, msg));
}

/// The close code for a failed read: an oversized frame is 1009, anything
/// else means the peer is gone.
fn read_error_code(e: axum::Error) -> CloseCode {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => CloseCode::FRAME_TOO_BIG,
        _ => NORMAL,
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Utf8Bytes>,
    handle: Arc<ConnHandle>,
    app: &AppState,
    expires_at: u64,
) {
    let metrics = app.metrics();
    let mut ping = tokio::time::interval(app.config().heartbeat_interval);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            biased;
            _ = handle.closed() => break,
            frame = queue.recv() => {
                let Some(frame) = frame else { break };
                // Batch whatever is already queued into one flush.
                let mut n = 1u64;
                let mut res = sink.feed(Message::Text(frame)).await;
                while res.is_ok() && (n as usize) < WRITE_BATCH {
                    match queue.try_recv() {
                        Ok(f) => {
                            res = sink.feed(Message::Text(f)).await;
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                let flushed = match res {
                    Ok(()) => tokio::select! {
                        r = sink.flush() => r.is_ok(),
                        _ = handle.closed() => false,
                    },
                    Err(_) => false,
                };
                if !flushed {
                    handle.close(NORMAL);
                    break;
                }
                metrics.frames_out(n);
            }
            _ = ping.tick() => {
                if now_ms() >= expires_at {
                    handle.close(CloseCode::UNAUTHORIZED);
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    handle.close(NORMAL);
                    break;
                }
            }
        }
    }
    let code = handle.close_code().unwrap_or(NORMAL);
    if code != NORMAL {
        let frame = CloseFrame { code: code.0, reason: Utf8Bytes::from_static(code.name()) };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}
