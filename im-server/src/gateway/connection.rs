//! One WebSocket connection: a reader, a request worker and a writer,
//! tied together by the [`ConnHandle`]'s close signal.
//!
//! - The **reader** enforces the idle timeout (any frame, ping or pong
//!   resets it), the rate limit and the frame size, decodes frames, answers
//!   `ping` at once and hands every other request to the worker.
//! - The **worker** starts requests in the order sent — so one device's
//!   sends keep their order — with up to `max_in_flight` unanswered at once
//!   (a send's commit overlaps the next requests), and answers them in
//!   order; the reader keeps reading meanwhile, so heartbeats are never
//!   stuck behind a slow request.
//! - The **writer** drains the send queue in batches (one flush per batch),
//!   sends WebSocket pings every heartbeat interval, and ends the connection
//!   with the close code that was asked for. Every socket write is raced
//!   against the close signal, so a reader that stopped reading cannot pin
//!   the connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{FuturesOrdered, SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use im_protocol::{codec, ClientFrame, CloseCode, ErrorCode, ServerFrame};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
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
/// A writer's batch buffer grown past this many frames is given back after use.
const KEEP_BATCH: usize = 8;
/// How long the writer waits to deliver the close frame, and the reader for
/// the client's close reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Decoded requests waiting for the worker; when full, the reader waits
/// (back-pressure on the client's socket). Requests travel boxed: the
/// channel allocates its slots 32 at a time up front, and 32 boxes cost
/// 256 bytes per idle connection where 32 frames would cost 3 KiB.
const REQUEST_QUEUE: usize = 32;

/// Runs a connection to its end, holding its place among the node's
/// connections (`_permit`) until then.
pub(super) async fn run(
    app: AppState,
    sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    session: Session,
    device: String,
    version: Option<u32>,
    _permit: OwnedSemaphorePermit,
) {
    let cfg = app.config();
    let hub = app.hub().clone();
    let user = session.user;
    let handle = hub.new_conn(user, session.id.clone(), device, (cfg.send_queue, cfg.send_queue_bytes));
    app.metrics().connection_opened();

    // Every phase but the reading is boxed: a connection's future is as
    // large as its largest phase and is kept for the connection's life, so
    // an inline setup or teardown would cost every idle connection its size
    // (docs/benchmarks.md, idle memory).
    let Some(version) = version else {
        handle.close(CloseCode::UNSUPPORTED_PROTOCOL);
        Box::pin(write_loop(sink, handle.clone(), app.clone(), session.expires_at)).await;
        Box::pin(linger(&mut stream)).await;
        Box::pin(finish(&app, &handle, false)).await;
        return;
    };
    Box::pin(admit(&app, &handle, &session, version)).await;

    let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
    let worker = tokio::spawn(work_loop(inbox, handle.clone(), app.clone()));
    let mut writer = tokio::spawn(write_loop(sink, handle.clone(), app.clone(), session.expires_at));
    let client_closed = read_loop(&mut stream, &handle, &app, requests).await;
    // The worker finishes the request in hand (a send already stored must
    // still be published), then sees the closed inbox.
    let _ = worker.await;
    if tokio::time::timeout(CLOSE_TIMEOUT * 2, &mut writer).await.is_err() {
        writer.abort();
    }
    if !client_closed && !app.is_crashed() {
        Box::pin(linger(&mut stream)).await;
    }
    Box::pin(finish(&app, &handle, true)).await;
}

/// Says `hello`, registers the connection with the hub and its rooms,
/// checks that its session was not revoked while it upgraded, and counts
/// it in presence.
async fn admit(app: &AppState, handle: &Arc<ConnHandle>, session: &Session, version: u32) {
    let cfg = app.config();
    let hub = app.hub();
    let user = session.user;
    handle.set_protocol(version);

    // `hello` is queued before the hub can route anything to this
    // connection, so it is always the first frame.
    handle.send(&ServerFrame::Hello {
        protocol: version,
        user,
        device: handle.device.clone(),
        node: cfg.node_name.clone(),
        heartbeat_interval_ms: cfg.heartbeat_interval.as_millis() as u64,
        idle_timeout_ms: cfg.idle_timeout.as_millis() as u64,
        limits: cfg.limits,
    });
    hub.register(handle.clone(), &[]);
    // Registered first, then rooms and the session are read: a room join or
    // a logout that raced the upgrade is not missed.
    match app.logic().my_rooms(user).await {
        Ok(rooms) => hub.add_rooms(user, &rooms),
        Err(e) => {
            tracing::warn!(%user, error = %e, "closing: rooms unavailable");
            handle.close(CloseCode::RECONNECT);
        }
    }
    let alive = match app.logic().session_alive(&session.id).await {
        // A revoke-all that raced the upgrade: its disconnect may have come
        // before this connection was registered.
        Ok(true) => app.logic().revoked_by_all(session).await.map(|revoked| !revoked),
        other => other,
    };
    match alive {
        Ok(true) => {}
        Ok(false) => handle.close(CloseCode::SESSION_REVOKED),
        Err(_) => handle.close(CloseCode::RECONNECT),
    }
    if app.is_draining() {
        // Upgraded while the node began to stop: it may have missed close_all.
        handle.close(CloseCode::SHUTDOWN);
    }
    app.logic().services().presence.connected(user, &handle.conn_ref()).await;
    tracing::debug!(conn = handle.id, %user, device = %handle.device, "connected");
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
        // A crashed node tells nobody: shared presence must expire it.
        if !app.is_crashed() {
            app.logic().services().presence.disconnected(handle.user, &handle.conn_ref()).await;
        }
    }
    let code = handle.close_code().unwrap_or(NORMAL);
    app.metrics().connection_closed();
    app.metrics().close(code);
    tracing::debug!(conn = handle.id, user = %handle.user, code = code.0, reason = code.name(), "disconnected");
}

/// Starts requests in the order they arrived until the reader closes the
/// inbox, with up to `max_in_flight` of them unanswered at once; replies go
/// out in request order. A `send` counts as started once its place in the
/// conversation is fixed, so one device's messages keep their order while
/// their commits overlap; any other request waits for the earlier ones.
async fn work_loop(mut inbox: mpsc::Receiver<Box<ClientFrame>>, handle: Arc<ConnHandle>, app: AppState) {
    let max_in_flight = app.config().limits.max_in_flight.max(1) as usize;
    let mut in_flight: FuturesOrdered<frames::Pending<'_>> = FuturesOrdered::new();
    loop {
        let frame = tokio::select! {
            biased;
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                reply_out(&app, &handle, reply);
                continue;
            }
            frame = inbox.recv(), if in_flight.len() < max_in_flight => frame,
        };
        let Some(frame) = frame.map(|f| *f) else { break };
        if handle.close_code().is_some() {
            break;
        }
        // Only sends overlap: any other request starts once every earlier
        // one is answered, so it sees their effects (read your writes).
        if !matches!(frame, ClientFrame::Send { .. }) {
            while let Some(reply) = in_flight.next().await {
                reply_out(&app, &handle, reply);
            }
        }
        // Earlier sends keep completing while this one starts.
        // Boxed: a request's future (any handler's) would otherwise be kept
        // inside every idle connection's worker.
        let mut start = Box::pin(frames::start(&app, &handle, frame));
        let pending = loop {
            tokio::select! {
                biased;
                pending = &mut start => break pending,
                Some(reply) = in_flight.next(), if !in_flight.is_empty() => reply_out(&app, &handle, reply),
            }
        };
        in_flight.push_back(pending);
    }
    // Sends already placed must still be published (and answered if the
    // connection is still there).
    while let Some(reply) = in_flight.next().await {
        reply_out(&app, &handle, reply);
    }
}

fn reply_out(app: &AppState, handle: &ConnHandle, reply: Option<ServerFrame>) {
    let Some(reply) = reply else { return };
    if let ServerFrame::Error { code, .. } = &reply {
        app.metrics().error(*code);
    }
    handle.send(&reply);
}

/// Reads frames until the connection must end; returns `true` when the
/// client closed or vanished (nothing left to read).
async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    handle: &Arc<ConnHandle>,
    app: &AppState,
    requests: mpsc::Sender<Box<ClientFrame>>,
) -> bool {
    let cfg = app.config();
    let limits = cfg.limits;
    let mut bucket = TokenBucket::new(limits.rate_per_sec, limits.rate_burst, Instant::now());
    // Consecutive over-rate frames tolerated before the connection is closed.
    let max_strikes = limits.rate_burst.max(1);
    let mut strikes = 0u32;
    let touch_every = cfg.heartbeat_interval / 2;
    let mut last_touch = Instant::now();
    // One registration with the close signal for the connection's life
    // (not one per frame).
    let closed = handle.closed();
    tokio::pin!(closed);

    loop {
        let next = tokio::select! {
            biased;
            _ = &mut closed => return false,
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
            // Boxed: the reader's future is the idle connection's (see `run`).
            let conn = handle.conn_ref();
            Box::pin(app.logic().services().presence.touch(handle.user, &conn)).await;
        }
        let text = match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => {
                handle.close(NORMAL);
                return true;
            }
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        };
        // Every data frame costs a token, binary ones included.
        if !bucket.take(Instant::now()) {
            strikes += 1;
            if strikes > max_strikes {
                tracing::info!(conn = handle.id, user = %handle.user, "closing: sustained flooding");
                handle.close(CloseCode::POLICY_VIOLATION);
                return false;
            }
            app.metrics().frame_in("rate_limited");
            let rid = text.as_ref().and_then(|t| peek_rid(t.as_str()));
            reply_error(app, handle, rid, ErrorCode::RateLimited, "too many frames, slow down");
            continue;
        }
        strikes = 0;
        let Some(text) = text else {
            app.metrics().frame_in("invalid");
            reply_error(app, handle, None, ErrorCode::BadFrame, "binary frames are not supported");
            continue;
        };
        // Decoded and boxed before the await below, so the reader's future
        // keeps no frame-sized slot for its whole life.
        let frame = match codec::decode_client(text.as_str()) {
            Ok(ClientFrame::Ping { rid }) => {
                app.metrics().frame_in("ping");
                handle.send(&ServerFrame::Pong { rid });
                continue;
            }
            Ok(frame) => Box::new(frame),
            Err(e) => {
                app.metrics().frame_in("invalid");
                tracing::debug!(conn = handle.id, code = %e.code, detail = %e.detail, "bad frame");
                reply_error(app, handle, e.rid, e.code, &e.detail);
                continue;
            }
        };
        app.metrics().frame_in(frame.type_name());
        tokio::select! {
            sent = requests.send(frame) => if sent.is_err() { return false },
            _ = &mut closed => return false,
        }
    }
}

/// The `rid` of a frame without parsing it (for refusals that must stay
/// cheap): the number after the first `"rid"` key.
fn peek_rid(text: &str) -> Option<u64> {
    let after = &text[text.find("\"rid\"")? + 5..];
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    after[..digits].parse().ok()
}

fn reply_error(app: &AppState, handle: &ConnHandle, rid: Option<u64>, code: ErrorCode, msg: &str) {
    app.metrics().error(code);
    handle.send(&ServerFrame::error(rid, code, msg));
}

/// The close code for a failed read: an oversized frame is 1009, text that
/// is not UTF-8 is 1007, anything else means the peer is gone.
fn read_error_code(e: axum::Error) -> CloseCode {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => CloseCode::FRAME_TOO_BIG,
        Some(tungstenite::Error::Utf8(_)) => CloseCode::INVALID_PAYLOAD,
        _ => NORMAL,
    }
}

/// Writes a batch of frames with one flush (one `write` to the socket for
/// the whole batch, as far as the kernel takes it).
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Utf8Bytes>,
) -> Result<u64, axum::Error> {
    let n = batch.len() as u64;
    for frame in batch.drain(..) {
        sink.feed(Message::Text(frame)).await?;
    }
    sink.flush().await?;
    Ok(n)
}

/// Writes whatever the send queue still holds, a batch at a time.
async fn write_queued(
    sink: &mut SplitSink<WebSocket, Message>,
    handle: &ConnHandle,
    batch: &mut Vec<Utf8Bytes>,
) {
    batch.clear();
    loop {
        handle.queue().take_ready(batch, WRITE_BATCH);
        if batch.is_empty() || write_batch(sink, batch).await.is_err() {
            return;
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    handle: Arc<ConnHandle>,
    app: AppState,
    expires_at: u64,
) {
    let metrics = app.metrics();
    let mut ping = tokio::time::interval(app.config().heartbeat_interval);
    ping.tick().await; // the first tick is immediate
    let mut batch = Vec::new();
    let closed = handle.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            biased;
            _ = &mut closed => break,
            more = handle.queue().take(&mut batch, WRITE_BATCH) => {
                if !more {
                    break;
                }
                let written = tokio::select! {
                    biased;
                    r = write_batch(&mut sink, &mut batch) => r.ok(),
                    _ = &mut closed => None,
                };
                match written {
                    Some(n) => metrics.frames_out(n),
                    None => {
                        handle.close(NORMAL);
                        break;
                    }
                }
                if batch.capacity() > KEEP_BATCH {
                    batch = Vec::new(); // an idle connection keeps no large buffer
                }
            }
            _ = ping.tick() => {
                if now_ms() >= expires_at {
                    handle.close(CloseCode::UNAUTHORIZED);
                    break;
                }
                let sent = tokio::select! {
                    r = sink.send(Message::Ping(Default::default())) => r.is_ok(),
                    _ = &mut closed => false,
                };
                if !sent {
                    handle.close(NORMAL);
                    break;
                }
            }
        }
    }
    handle.queue().close();
    let code = handle.close_code().unwrap_or(NORMAL);
    if code != NORMAL && !app.is_crashed() {
        // What was queued before the close goes out first, above all the
        // errors that explain it (the `rate_limited` answers before a 4004),
        // as far as the client reads it within half the close timeout. A
        // slow consumer's backlog is why it is closed: it is dropped.
        if code != CloseCode::SLOW_CONSUMER {
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT / 2, write_queued(&mut sink, &handle, &mut batch)).await;
        }
        let frame = CloseFrame { code: code.0, reason: Utf8Bytes::from_static(code.name()) };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker's future is kept for every connection's life: a request
    /// handler inlined into it (not boxed) costs every idle connection its
    /// size. 328 bytes today; 2,816 when the handlers were inline.
    #[tokio::test]
    async fn an_idle_workers_future_holds_no_request_handler() {
        let server = crate::Server::builder().memory().bind("127.0.0.1:0").await.unwrap();
        let app = server.state().clone();
        let handle = app.hub().new_conn(im_protocol::UserId(1), "s".into(), "d".into(), (8, 1 << 16));
        let (_requests, inbox) = mpsc::channel(REQUEST_QUEUE);
        let worker = work_loop(inbox, handle, app);
        let size = std::mem::size_of_val(&worker);
        assert!(size <= 512, "work_loop's future is {size} bytes: box what it awaits (docs/architecture.md)");
        drop(worker);
        server.shutdown().await;
    }

    #[test]
    fn peeks_the_rid_without_parsing() {
        assert_eq!(peek_rid(r#"{"type":"send","rid":42,"body":"x"}"#), Some(42));
        assert_eq!(peek_rid(r#"{ "rid" :  7 }"#), Some(7));
        assert_eq!(peek_rid(r#"{"type":"ping"}"#), None);
        assert_eq!(peek_rid(r#"{"rid":"x"}"#), None);
        assert_eq!(peek_rid(r#"{"body":"\"rid\":5"}"#), None, "escaped quotes are not a key");
        assert_eq!(peek_rid("\"rid\""), None);
    }
}
