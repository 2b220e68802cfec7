//! The connection task (rumqtt's "event loop"): owns the socket, the
//! protocol state, the heartbeat and the reconnect loop. Handles talk to it
//! through [`Command`]s; it talks to the app through [`Event`]s.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use im_protocol::{codec, ClientFrame, CloseCode, CloseReaction, RequestId, ServerFrame, UserId, WireLimits};
use tokio::sync::{mpsc, oneshot};
use url::Url;

use crate::backoff::Backoff;
use crate::client::{Command, ReplyTx, Request, SendReceipt};
use crate::connect::{Attempt, AttemptError};
use crate::cursor_store::CursorStore;
use crate::error::{RequestError, SendError, StopReason};
use crate::events::{Event, Events};
use crate::files::Files;
use crate::options::{Auth, Config};
use crate::outbox::{CmidGen, Outbox};
use crate::pacer::Pacer;
use crate::read_book::ReadBook;
use crate::read_sync::ReadSync;
use crate::state::SyncState;
use crate::typing::{TypingIn, TypingOut};
use crate::Client;

mod connection;
mod frames;
mod read_state;

/// How often the driver flushes cursors, retries a failed sync and releases
/// rate-limited sends.
const TICK: Duration = Duration::from_millis(500);

/// Starts the driver task and returns the handle and the event stream.
pub(crate) fn spawn(config: Config) -> (Client, Events) {
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::channel(config.event_buffer);
    let book = Arc::new(std::sync::Mutex::new(ReadBook::default()));
    let http = crate::http::client(&config);
    let token = match &config.auth {
        Auth::Token(t) => Some(t.clone()),
        Auth::Login { .. } => None,
    };
    let files = Arc::new(Files::new(config.api_base.clone(), crate::http::file_client(&config), token));
    let client = Client::new(cmd_tx, config.request_timeout, book.clone(), files.clone());
    tokio::spawn(Driver::new(config, http, cmd_rx, ev_tx, book, files).run());
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
    /// Told each connection's token, for the handles' uploads and downloads.
    files: Arc<Files>,
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
    /// A connection is up (its `hello` arrived).
    connected: bool,
    limits: WireLimits,
    /// What the app can read of each conversation's read state.
    book: Arc<std::sync::Mutex<ReadBook>>,
    /// Read marks, the inbox walk and `received` reports to send.
    read_sync: ReadSync,
    /// This user's typing, to refresh and stop.
    typing_out: TypingOut,
    /// Typing refreshes and stops due to be written.
    typing_due: Vec<(im_protocol::ConversationId, bool)>,
    /// Others' typing, to expire.
    typing_in: TypingIn,
    /// Requests whose answers nobody waits for (typing refreshes), by `rid`.
    quiet: HashSet<RequestId>,
    /// Unread counts changed by the app's own marks, to tell it.
    pending_unread: Vec<(im_protocol::ConversationId, crate::read_book::Change)>,
    /// Paces frames under the server's rate limit.
    pacer: Pacer,
    backoff: Backoff,
    /// Someone waits for the shutdown to finish.
    shutdown_done: Option<oneshot::Sender<()>>,
}

impl Driver {
    fn new(
        config: Config,
        http: reqwest::Client,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        book: Arc<std::sync::Mutex<ReadBook>>,
        files: Arc<Files>,
    ) -> Self {
        Self {
            http,
            files,
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
            connected: false,
            limits: WireLimits::default(),
            book,
            read_sync: ReadSync::default(),
            typing_out: TypingOut::default(),
            typing_due: Vec::new(),
            typing_in: TypingIn::default(),
            quiet: HashSet::new(),
            pending_unread: Vec::new(),
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
            let last_error: String;
            match outcome {
                Ok(conn) => {
                    relogged = false;
                    let url = conn.url.clone();
                    let ended = self.run_connection(conn).await;
                    self.disconnected();
                    for (conv, user) in self.typing_in.clear() {
                        self.emit(Event::Typing { conv, user, typing: false }).await;
                    }
                    let (code, reason) = match ended {
                        Ended::Stop(reason) => return reason,
                        Ended::Closed { code, reason } => (Some(code), reason),
                        Ended::Lost(why) => (None, why),
                    };
                    tracing::info!(code = code.map(|c| c.0), %reason, "disconnected");
                    self.emit(Event::Disconnected { code, reason: reason.clone() }).await;
                    last_error = reason.clone();
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
                    last_error = why;
                }
            }
            let Some((attempt, delay)) = self.backoff.next() else {
                return StopReason::TooManyAttempts {
                    attempts: self.config.reconnect.max_attempts.unwrap_or(0),
                    last_error,
                };
            };
            self.emit(Event::Reconnecting { attempt, delay, reason: last_error.clone() }).await;
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
                cmd = self.commands.recv() => {
                    self.command(cmd)?;
                    if let Err(Ended::Stop(reason)) = self.flush_unread().await {
                        return Err(reason);
                    }
                }
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
            Some(Command::Send { conv, draft, reply }) => {
                let cmid = self.cmids.next();
                if let Err(e) = self.check_size(conv, &cmid, &draft) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                if let Err(reply) = self.outbox.push(conv, cmid, *draft, reply) {
                    let _ = reply.send(Err(SendError::QueueFull));
                }
                Ok(())
            }
            Some(Command::Request { request, reply }) => {
                self.waiting.retain(|(_, r)| !r.is_closed());
                self.waiting.push((request, reply));
                Ok(())
            }
            Some(Command::MarkRead { conv, id }) => {
                self.mark_read(conv, id);
                Ok(())
            }
            Some(Command::Typing { conv, typing, reply }) => {
                if !self.connected {
                    let _ = reply.send(Err(RequestError::Disconnected));
                    return Ok(());
                }
                match self.typing_out.call(conv, typing, std::time::Instant::now()) {
                    Some(typing) => self.waiting.push((Request::Typing { conv, typing }, reply)),
                    // Throttled: the last `true` is still fresh on the receivers.
                    None => {
                        let _ = reply.send(Ok(ServerFrame::Ok { rid: 0 }));
                    }
                }
                Ok(())
            }
        }
    }

    /// Refuses a body over `max_body_bytes`, or whose frame (after JSON
    /// escaping) would exceed `max_frame_bytes`: the server would close the
    /// connection with 1009, and resending it would loop.
    fn check_size(
        &self,
        conv: im_protocol::ConversationId,
        cmid: &im_protocol::ClientMsgId,
        draft: &crate::draft::Draft,
    ) -> Result<(), SendError> {
        let max = self.limits.max_body_bytes;
        let probe = draft.frame(RequestId::MAX, conv, cmid.clone());
        let content_len = match &probe {
            ClientFrame::Send { content: Some(c), .. } => c.to_string().len(),
            _ => 0,
        };
        let len = draft.body.len() + content_len;
        if len > max {
            return Err(SendError::BodyTooLarge { len, max });
        }
        let frame_len = codec::encode_client(&probe).len();
        if frame_len > self.limits.max_frame_bytes {
            return Err(SendError::BodyTooLarge { len: frame_len, max: self.limits.max_frame_bytes });
        }
        Ok(())
    }

    fn disconnected(&mut self) {
        self.connected = false;
        self.read_sync.disconnected();
        self.typing_out.clear();
        self.typing_due.clear();
        self.quiet.clear();
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
