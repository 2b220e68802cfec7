//! The connection task (rumqtt's "event loop"): owns the socket, the
//! protocol state, the heartbeat and the reconnect loop. Handles talk to it
//! through [`Command`]s; it talks to the app through [`Event`]s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use im_core::{
    codec, ClientFrame, CloseCode, CloseReaction, ConversationId, MessageId, RequestId, UserId, WireLimits,
};
use tokio::sync::{mpsc, oneshot};
use url::Url;

use crate::backoff::Backoff;
use crate::client::{Command, ReplyTx, Request, SendReceipt};
use crate::connect::{Attempt, AttemptError};
use crate::cursor_store::CursorStore;
use crate::error::{RequestError, SendError, StopReason};
use crate::events::{Event, Events};
use crate::options::{Auth, Config};
use crate::outbox::{CmidGen, Outbox};
use crate::pacer::Pacer;
use crate::state::SyncState;
use crate::Client;

mod connection;
mod frames;

/// How often the driver flushes cursors, retries a failed sync and releases
/// rate-limited sends.
const TICK: Duration = Duration::from_millis(500);

/// Starts the driver task and returns the handle and the event stream.
pub(crate) fn spawn(config: Config) -> (Client, Events) {
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::channel(config.event_buffer);
    let client = Client::new(cmd_tx, config.request_timeout);
    tokio::spawn(Driver::new(config, cmd_rx, ev_tx).run());
    (client, Events::new(ev_rx))
}

type SendReply = oneshot::Sender<Result<SendReceipt, SendError>>;

/// How a connection ended.
enum Ended {
    /// The server closed with a code.
    Closed { code: CloseCode, reason: String },
    /// The socket failed, ended without a close frame, or went silent.
    Lost(String),
    /// The client must stop.
    Stop(StopReason),
}

struct Driver {
    config: Config,
    http: reqwest::Client,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    store: Arc<dyn CursorStore>,
    sync: SyncState,
    outbox: Outbox<SendReply>,
    cmids: CmidGen,
    /// Requests not yet sent (waiting for a connection).
    waiting: Vec<(Request, ReplyTx)>,
    /// Requests sent on the current connection, by `rid`.
    in_flight: HashMap<RequestId, ReplyTx>,
    next_rid: RequestId,
    token: Option<String>,
    device: Option<String>,
    me: Option<UserId>,
    /// The protocol version of the current connection.
    protocol: u32,
    limits: WireLimits,
    /// Direct-chat and group messages of others handed to the app since
    /// the last `received` report: the highest id per conversation.
    unreported: BTreeMap<ConversationId, MessageId>,
    /// `received` reports sent and not yet answered, by `rid`.
    reports: HashSet<RequestId>,
    /// When the last `received` report went out.
    last_report: Option<std::time::Instant>,
    /// Paces frames under the server's rate limit.
    pacer: Pacer,
    backoff: Backoff,
    /// Someone waits for the shutdown to finish.
    shutdown_done: Option<oneshot::Sender<()>>,
}

impl Driver {
    fn new(config: Config, commands: mpsc::Receiver<Command>, events: mpsc::Sender<Event>) -> Self {
        let http = reqwest::Client::builder().timeout(config.connect_timeout).build().unwrap_or_default();
        Self {
            http,
            commands,
            events,
            store: config.cursor_store.clone(),
            sync: SyncState::default(),
            outbox: Outbox::new(config.send_queue),
            cmids: CmidGen::new(),
            waiting: Vec::new(),
            in_flight: HashMap::new(),
            next_rid: 0,
            token: None,
            device: config.device.clone(),
            me: None,
            protocol: 1,
            limits: WireLimits::default(),
            unreported: BTreeMap::new(),
            reports: HashSet::new(),
            last_report: None,
            pacer: Pacer::new(&WireLimits::default(), std::time::Instant::now()),
            backoff: Backoff::new(&config.reconnect),
            shutdown_done: None,
            config,
        }
    }

    async fn run(mut self) {
        let reason = match self.store.load() {
            Ok(cursors) => {
                self.sync = SyncState::new(cursors);
                self.reconnect_loop().await
            }
            Err(e) => StopReason::CursorStore(e.to_string()),
        };
        tracing::info!(%reason, "im client stopped");
        for e in self.outbox.drain() {
            let _ = e.reply.send(Err(SendError::Stopped));
        }
        for (_, reply) in self.waiting.drain(..) {
            let _ = reply.send(Err(RequestError::Stopped));
        }
        for (_, reply) in self.in_flight.drain() {
            let _ = reply.send(Err(RequestError::Stopped));
        }
        self.flush_store();
        let _ = self.events.send(Event::Stopped { reason }).await;
        if let Some(done) = self.shutdown_done.take() {
            let _ = done.send(());
        }
    }

    /// Connects, runs the connection, and reconnects as the close code says,
    /// until something terminal happens.
    async fn reconnect_loop(&mut self) -> StopReason {
        // `Some(url)`: the next attempt reuses it ("same node"); `None`: resolve.
        let mut same_url: Option<Url> = None;
        let mut relogged = false;
        loop {
            let attempt = Attempt {
                config: self.config.clone(),
                http: self.http.clone(),
                token: self.token.clone(),
                same_url: same_url.take(),
                device: self.device.clone(),
            };
            let fresh_token = self.token.is_none();
            let outcome = match self.serve_commands(attempt.run()).await {
                Ok(o) => o,
                Err(stop) => return stop,
            };
            match outcome {
                Ok(conn) => {
                    relogged = false;
                    let url = conn.url.clone();
                    let ended = self.run_connection(conn).await;
                    self.disconnected();
                    let (code, reason) = match ended {
                        Ended::Stop(reason) => return reason,
                        Ended::Closed { code, reason } => (Some(code), reason),
                        Ended::Lost(why) => (None, why),
                    };
                    tracing::info!(code = code.map(|c| c.0), %reason, "disconnected");
                    self.emit(Event::Disconnected { code, reason: reason.clone() }).await;
                    match code.map(CloseCode::reaction) {
                        Some(CloseReaction::Stop) => {
                            let code = code.unwrap_or(CloseCode::UNAUTHORIZED);
                            let relogin = code == CloseCode::UNAUTHORIZED
                                && matches!(self.config.auth, Auth::Login { .. });
                            if !relogin {
                                return StopReason::Closed { code, reason };
                            }
                            self.token = None;
                        }
                        Some(CloseReaction::Reconnect) => same_url = Some(url),
                        Some(CloseReaction::ReconnectViaDispatcher) | None => {}
                    }
                }
                Err(AttemptError::Stop(reason)) => return reason,
                Err(AttemptError::TokenRefused(reason)) => {
                    // A password client logs in again once; a fixed token is dead.
                    let can_relogin =
                        matches!(self.config.auth, Auth::Login { .. }) && !fresh_token && !relogged;
                    if !can_relogin {
                        return reason;
                    }
                    relogged = true;
                    self.token = None;
                    continue;
                }
                Err(AttemptError::Retry(why)) => {
                    tracing::debug!(%why, "connection attempt failed");
                }
            }
            let Some((attempt, delay)) = self.backoff.next() else {
                return StopReason::TooManyAttempts {
                    attempts: self.config.reconnect.max_attempts.unwrap_or(0),
                };
            };
            self.emit(Event::Reconnecting { attempt, delay }).await;
            if let Err(stop) = self.serve_commands(tokio::time::sleep(delay)).await {
                return stop;
            }
        }
    }

    /// Runs `fut` (a connection attempt, a backoff sleep) while queueing the
    /// handles' commands. `Err` when the client must stop.
    async fn serve_commands<F: Future>(&mut self, fut: F) -> Result<F::Output, StopReason> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                cmd = self.commands.recv() => self.command(cmd)?,
                _ = self.events.closed() => return Err(StopReason::Shutdown),
            }
        }
    }

    /// Takes in one command; sending happens in [`pump`](Self::pump).
    fn command(&mut self, cmd: Option<Command>) -> Result<(), StopReason> {
        match cmd {
            None => Err(StopReason::Shutdown),
            Some(Command::Shutdown { done }) => {
                self.shutdown_done = Some(done);
                Err(StopReason::Shutdown)
            }
            Some(Command::Send { conv, body, reply }) => {
                let cmid = self.cmids.next();
                if let Err(e) = self.check_size(conv, &cmid, &body) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                if let Err(reply) = self.outbox.push(conv, cmid, body, reply) {
                    let _ = reply.send(Err(SendError::QueueFull));
                }
                Ok(())
            }
            Some(Command::Request { request, reply }) => {
                self.waiting.retain(|(_, r)| !r.is_closed());
                self.waiting.push((request, reply));
                Ok(())
            }
        }
    }

    /// Refuses a body over `max_body_bytes`, or whose frame (after JSON
    /// escaping) would exceed `max_frame_bytes`: the server would close the
    /// connection with 1009, and resending it would loop.
    fn check_size(
        &self,
        conv: im_core::ConversationId,
        cmid: &im_core::ClientMsgId,
        body: &str,
    ) -> Result<(), SendError> {
        let max = self.limits.max_body_bytes;
        if body.len() > max {
            return Err(SendError::BodyTooLarge { len: body.len(), max });
        }
        let probe =
            ClientFrame::Send { rid: RequestId::MAX, conv, cmid: cmid.clone(), body: body.to_owned() };
        let frame_len = codec::encode_client(&probe).len();
        if frame_len > self.limits.max_frame_bytes {
            return Err(SendError::BodyTooLarge { len: frame_len, max: self.limits.max_frame_bytes });
        }
        Ok(())
    }

    fn disconnected(&mut self) {
        self.reports.clear();
        self.sync.disconnected();
        self.outbox.disconnected();
        for (_, reply) in self.in_flight.drain() {
            let _ = reply.send(Err(RequestError::Disconnected));
        }
        self.flush_store();
    }

    fn flush_store(&self) {
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "flushing sync cursors failed");
        }
    }

    /// The `received` report due now, if any: at most one per
    /// [`RECEIPT_INTERVAL_MS`](im_core::limits::RECEIPT_INTERVAL_MS), on a
    /// version-2 connection, naming the conversations that advanced.
    fn due_report(&mut self, rid: RequestId) -> Option<ClientFrame> {
        let interval = Duration::from_millis(im_core::limits::RECEIPT_INTERVAL_MS);
        if self.protocol < 2
            || self.unreported.is_empty()
            || self.last_report.is_some_and(|at| at.elapsed() < interval)
        {
            return None;
        }
        let mut cursors = std::mem::take(&mut self.unreported);
        if cursors.len() > im_core::limits::DEFAULT_MAX_SYNC_CURSORS {
            let rest_from = *cursors.keys().nth(im_core::limits::DEFAULT_MAX_SYNC_CURSORS)?;
            self.unreported = cursors.split_off(&rest_from);
        }
        self.last_report = Some(std::time::Instant::now());
        self.reports.insert(rid);
        Some(ClientFrame::Received { rid, cursors })
    }

    /// Delivers an event; `Some(Shutdown)` when the app dropped the stream.
    async fn emit(&self, event: Event) -> Option<StopReason> {
        self.events.send(event).await.err().map(|_| StopReason::Shutdown)
    }

    async fn emit_or_stop(&self, event: Event) -> Result<(), Ended> {
        match self.emit(event).await {
            None => Ok(()),
            Some(reason) => Err(Ended::Stop(reason)),
        }
    }
}
