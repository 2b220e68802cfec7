//! One live connection: the heartbeat, reading frames, writing what is due.

use std::time::Duration;

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use im_protocol::{codec, ClientFrame, CloseCode};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{Driver, Ended, TICK};
use crate::connect::{Connection, Socket};
use crate::error::StopReason;
use crate::events::Event;
use crate::pacer::Pacer;

impl Driver {
    pub(super) async fn run_connection(&mut self, conn: Connection) -> Ended {
        let Connection { socket, token, hello, .. } = conn;
        self.files.set_token(&token);
        self.token = Some(token);
        self.device = Some(hello.device.clone());
        self.me = Some(hello.user);
        self.protocol = hello.protocol;
        self.connected = true;
        self.limits = hello.limits;
        self.pacer = Pacer::new(&hello.limits, std::time::Instant::now());
        let heartbeat = hello.heartbeat_interval.min(self.config.heartbeat_interval);
        let pong_timeout = self.config.pong_timeout;
        tracing::info!(node = %hello.node, user = %hello.user, "connected");
        self.sync.connected();
        let (mut sink, mut stream) = socket.split();
        if let Some(stop) =
            self.emit(Event::Connected { node: hello.node, user: hello.user, device: hello.device }).await
        {
            return close(&mut sink, stop, pong_timeout).await;
        }
        let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(TICK);
        // Set when a ping goes out with no frame received since; cleared by any frame.
        let mut waiting_since: Option<Instant> = None;
        loop {
            if let Err(why) = self.pump(&mut sink, pong_timeout).await {
                return Ended::Lost(why);
            }
            let dead_at = waiting_since.map(|t| t + pong_timeout);
            // Biased: the rare timers first (so a flood of frames cannot
            // starve our pings), then commands, then the socket, and the
            // dead-peer deadline only when nothing is readable (frames that
            // queued up while the app was slow to read events are not silence).
            tokio::select! {
                biased;
                _ = ping.tick() => {
                    self.pacer.spend(1);
                    if let Err(why) = write(&mut sink, &ClientFrame::Ping { rid: None }, pong_timeout).await {
                        return Ended::Lost(why);
                    }
                    waiting_since.get_or_insert_with(Instant::now);
                }
                _ = tick.tick() => {
                    self.typing_due.extend(self.typing_out.tick(std::time::Instant::now()));
                    if let Err(ended) = self.expire_typing().await {
                        return end(&mut sink, ended, pong_timeout).await;
                    }
                    self.flush_store();
                    self.sync.retry_sync();
                    self.outbox.release();
                    // Requests the app stopped waiting for stay counted until the
                    // server answers (it answers each exactly once), so the
                    // in-flight window stays exact.
                }
                cmd = self.commands.recv() => {
                    if let Err(reason) = self.command(cmd) {
                        return close(&mut sink, reason, pong_timeout).await;
                    }
                    if let Err(ended) = self.flush_unread().await {
                        return end(&mut sink, ended, pong_timeout).await;
                    }
                }
                msg = stream.next() => {
                    waiting_since = None;
                    if let Some(ended) = self.incoming(msg).await {
                        return end(&mut sink, ended, pong_timeout).await;
                    }
                }
                _ = sleep_until_opt(dead_at), if dead_at.is_some() => {
                    return Ended::Lost(format!("no frame within {pong_timeout:?} of a ping"));
                }
                _ = self.events.closed() => return close(&mut sink, StopReason::Shutdown, pong_timeout).await,
            }
        }
    }

    /// Handles one item read from the socket; `Some` when the connection ended.
    async fn incoming(
        &mut self,
        msg: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    ) -> Option<Ended> {
        match msg {
            Some(Ok(WsMessage::Text(text))) => match codec::decode_server(text.as_str()) {
                Ok(frame) => self.frame(frame).await.err(),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable frame from the server ignored");
                    None
                }
            },
            Some(Ok(WsMessage::Close(frame))) => Some(match frame {
                Some(f) => Ended::Closed { code: CloseCode(u16::from(f.code)), reason: f.reason.to_string() },
                None => Ended::Lost("closed without a code".into()),
            }),
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(Ended::Lost(format!("socket error: {e}"))),
            None => Some(Ended::Lost("connection ended".into())),
        }
    }

    /// Sends what is due: the next sync page request, unsent sends, waiting requests.
    async fn pump(&mut self, sink: &mut SplitSink<Socket, WsMessage>, limit: Duration) -> Result<(), String> {
        let unanswered = self.outbox.unanswered()
            + self.in_flight.len()
            + self.read_sync.unanswered()
            + self.quiet.len()
            + usize::from(self.sync.sync_in_flight());
        let mut budget = send_budget(
            self.pacer.available(std::time::Instant::now()),
            self.limits.max_in_flight,
            unanswered,
        );
        if budget == 0 {
            return Ok(());
        }
        self.next_rid += 1;
        let mut frames: Vec<ClientFrame> =
            self.sync.next_sync(self.next_rid, self.config.sync_page_limit).into_iter().collect();
        budget -= frames.len();
        let next_rid = &mut self.next_rid;
        frames.extend(self.outbox.frames_to_send(budget, || {
            *next_rid += 1;
            *next_rid
        }));
        // Typing the client refreshes or stops by itself goes before the
        // app's own typing calls queued since, so the latest state arrives last.
        let left = budget.saturating_sub(frames.len()).min(self.typing_due.len());
        for (conv, typing) in self.typing_due.drain(..left) {
            self.next_rid += 1;
            self.quiet.insert(self.next_rid);
            frames.push(ClientFrame::Typing { rid: self.next_rid, conv, typing });
        }
        self.waiting.retain(|(_, reply)| !reply.is_closed());
        let n = self.waiting.len().min(budget.saturating_sub(frames.len()));
        for (request, reply) in self.waiting.drain(..n) {
            self.next_rid += 1;
            frames.push(request.frame(self.next_rid));
            self.in_flight.insert(self.next_rid, reply);
        }
        let left = budget.saturating_sub(frames.len());
        let next_rid = &mut self.next_rid;
        let extra = self.read_sync.frames(left, self.protocol, std::time::Instant::now(), || {
            *next_rid += 1;
            *next_rid
        });
        frames.extend(extra);

        self.pacer.spend(frames.len());
        for f in &frames {
            write(sink, f, limit).await?;
        }
        Ok(())
    }
}

/// How many requests may be written now: what the rate pacer allows, and
/// no more than the server's `max_in_flight` minus those unanswered (an
/// older server announces none: one at a time).
fn send_budget(paced: usize, max_in_flight: u32, unanswered: usize) -> usize {
    paced.min((max_in_flight.max(1) as usize).saturating_sub(unanswered))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes one frame; a write that cannot finish within `limit` means the
/// peer is gone (a blackholed connection fills the send buffer).
async fn write(
    sink: &mut SplitSink<Socket, WsMessage>,
    frame: &ClientFrame,
    limit: Duration,
) -> Result<(), String> {
    let text = codec::encode_client(frame);
    match tokio::time::timeout(limit, sink.send(WsMessage::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err(format!("write blocked for {limit:?}")),
    }
}

/// How a connection ends: a stop closes it with 1000 first.
async fn end(sink: &mut SplitSink<Socket, WsMessage>, ended: Ended, limit: Duration) -> Ended {
    match ended {
        Ended::Stop(reason) => close(sink, reason, limit).await,
        other => other,
    }
}

/// Closes the connection with 1000 (best effort) and stops.
async fn close(sink: &mut SplitSink<Socket, WsMessage>, reason: StopReason, limit: Duration) -> Ended {
    let frame = CloseFrame { code: WsCloseCode::Normal, reason: "client stopped".into() };
    let _ = tokio::time::timeout(limit, sink.send(WsMessage::Close(Some(frame)))).await;
    Ended::Stop(reason)
}

#[cfg(test)]
mod tests {
    use super::send_budget;

    #[test]
    fn the_budget_respects_the_pacer_and_the_servers_in_flight_window() {
        assert_eq!(send_budget(100, 64, 0), 64);
        assert_eq!(send_budget(10, 64, 0), 10);
        assert_eq!(send_budget(100, 64, 60), 4);
        assert_eq!(send_budget(100, 64, 64), 0);
        assert_eq!(send_budget(100, 64, 70), 0, "after a reconnect more may be pending");
        assert_eq!(send_budget(100, 0, 0), 1, "0 would stall; treated as 1");
    }
}
