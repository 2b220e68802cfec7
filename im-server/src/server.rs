//! Assembling and running a server: [`Server::builder`] wires the seams
//! (storage, presence, broker, push) into the logic, binds one port for
//! HTTP and WebSocket, and [`RunningServer::shutdown`] stops it gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::accept::{serve_http, ConnectionsPerIp, TcpAcceptor};
use im_protocol::CloseCode;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::attachments::{AttachmentStore, FsAttachments};
use crate::auth::{Authenticator, PasswordHasher, SessionTokens, TokenSigner};
use crate::broker::{Broker, BrokerError, EventSink, LocalBroker};
use crate::config::ServerConfig;
use crate::dispatch::{LocalRegistry, NodeRegistry};
use crate::hub::Hub;
use crate::logic::{Logic, Services};
use crate::metrics::Metrics;
use crate::presence::{MemoryPresence, PresenceStore, PresenceTracker};
use crate::push::{LogPush, PushDispatcher, PushNotifier};
use crate::state::AppState;
use crate::store::{Directory, MemoryStore, MessageStore, SessionStore, StoreError};

/// Presence transitions buffered before they are dropped (best effort).
const PRESENCE_QUEUE: usize = 4096;
/// Longest pause between sweeps of presence left behind by dead nodes (the
/// sweep runs every grace period, at most this long).
const PRESENCE_SWEEP_MAX: Duration = Duration::from_secs(5);
/// Longest pause between sweeps of unreferenced uploads (they run every
/// quarter of the orphan TTL, at most this long).
const ORPHAN_SWEEP_MAX: Duration = Duration::from_secs(600);
/// How often expired sessions are purged.
const SESSION_PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Binding the port failed.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The store could not be opened.
    #[error("cannot open storage: {0}")]
    Store(#[from] StoreError),
    /// The broker could not be subscribed.
    #[error("cannot subscribe to the broker: {0}")]
    Broker(#[from] BrokerError),
    /// A message feed was asked for over a store that keeps none
    /// ([`MessageStore::feed`]).
    #[error("the message store keeps no feed cursors, so it cannot run a message feed")]
    NoFeed,
}

/// Entry point: `Server::builder()`.
pub struct Server;

impl Server {
    /// A builder with in-memory defaults for every seam.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Configures the seams of a server. Anything not set defaults to the
/// in-memory implementation (or [`LocalBroker`], [`LogPush`]).
#[derive(Default)]
pub struct ServerBuilder {
    config: ServerConfig,
    messages: Option<Arc<dyn MessageStore>>,
    directory: Option<Arc<dyn Directory>>,
    sessions: Option<Arc<dyn SessionStore>>,
    presence: Option<Arc<dyn PresenceStore>>,
    broker: Option<Arc<dyn Broker>>,
    push: Option<Arc<dyn PushNotifier>>,
    registry: Option<Arc<dyn NodeRegistry>>,
    token_secret: Option<Vec<u8>>,
    hasher: Option<PasswordHasher>,
    attachments: Option<Arc<dyn AttachmentStore>>,
    hooks: Option<Arc<dyn crate::hooks::Hooks>>,
    feed: Option<(Arc<dyn crate::feed::FeedSink>, crate::feed::FeedConfig)>,
    authenticators: Vec<Arc<dyn Authenticator>>,
    #[cfg(feature = "jwt")]
    jwt: Option<crate::auth::jwt::JwtConfig>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
}

impl ServerBuilder {
    /// Sets the configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Terminates TLS with this certificate and key: the port then serves
    /// `https://` and `wss://` only, and the dispatcher hands out `wss://`
    /// URLs. Keep the [`TlsConfig`](crate::tls::TlsConfig) to reload it.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Also accepts tokens issued by the application's backend: JWTs
    /// checked against `cfg` (keys, issuer, audience). The subject is the
    /// application's user id; `im` maps it to a user of its own, created on
    /// first sight. `im`'s own register and login keep working.
    #[cfg(feature = "jwt")]
    pub fn jwt(mut self, cfg: crate::auth::jwt::JwtConfig) -> Self {
        self.jwt = Some(cfg);
        self
    }

    /// Lets the application allow, deny and rewrite, and hear what
    /// happens ([`crate::hooks::Hooks`]). Default: none (nothing is asked).
    pub fn hooks(mut self, hooks: Arc<dyn crate::hooks::Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Adds an authenticator of the embedder's own, asked before JWT and
    /// `im`'s session tokens ([`Authenticator`]).
    pub fn authenticator(mut self, a: Arc<dyn Authenticator>) -> Self {
        self.authenticators.push(a);
        self
    }

    /// Uses one in-memory store for messages, directory and sessions.
    pub fn memory(self) -> Self {
        self.store(Arc::new(MemoryStore::new()))
    }

    /// Uses the embedded persistent store in `data_dir` (file `im.redb`) for
    /// messages, directory and sessions, and `data_dir/attachments` for
    /// uploads unless [`attachments`](Self::attachments) chose otherwise.
    #[cfg(feature = "embedded")]
    pub fn embedded(mut self, data_dir: impl AsRef<std::path::Path>) -> Result<Self, StartError> {
        let dir = data_dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let store = crate::store::EmbeddedStore::open(dir.join("im.redb"))?;
        if self.attachments.is_none() {
            self.attachments = Some(Arc::new(FsAttachments::open(dir.join("attachments"))?));
        }
        Ok(self.store(Arc::new(store)))
    }

    /// Sets where uploaded attachments are kept. Default: `attachments/` of
    /// the embedded store's directory, else a temporary directory removed
    /// at shutdown ([`FsAttachments`] is for one node; a cluster uses an
    /// S3 store).
    pub fn attachments(mut self, store: Arc<dyn AttachmentStore>) -> Self {
        self.attachments = Some(store);
        self
    }

    /// Uses one object for messages, directory and sessions.
    pub fn store<S: MessageStore + Directory + SessionStore>(mut self, store: Arc<S>) -> Self {
        self.messages = Some(store.clone());
        self.directory = Some(store.clone());
        self.sessions = Some(store);
        self
    }

    /// Sets the message store.
    pub fn messages(mut self, s: Arc<dyn MessageStore>) -> Self {
        self.messages = Some(s);
        self
    }

    /// Sets the directory.
    pub fn directory(mut self, s: Arc<dyn Directory>) -> Self {
        self.directory = Some(s);
        self
    }

    /// Sets the session store.
    pub fn sessions(mut self, s: Arc<dyn SessionStore>) -> Self {
        self.sessions = Some(s);
        self
    }

    /// Sets the presence store.
    pub fn presence(mut self, s: Arc<dyn PresenceStore>) -> Self {
        self.presence = Some(s);
        self
    }

    /// Sets the broker.
    pub fn broker(mut self, b: Arc<dyn Broker>) -> Self {
        self.broker = Some(b);
        self
    }

    /// Runs the durable message feed into `sink`: every stored message and
    /// event at least once, in each conversation's id order, from a cursor
    /// kept in the message store ([`crate::feed`]). Default: no feed.
    pub fn feed(mut self, sink: Arc<dyn crate::feed::FeedSink>, cfg: crate::feed::FeedConfig) -> Self {
        self.feed = Some((sink, cfg));
        self
    }

    /// Sets the push notifier.
    pub fn push(mut self, p: Arc<dyn PushNotifier>) -> Self {
        self.push = Some(p);
        self
    }

    /// Sets the node registry the dispatcher chooses from.
    pub fn registry(mut self, r: Arc<dyn NodeRegistry>) -> Self {
        self.registry = Some(r);
        self
    }

    /// Sets the token signing secret. Every node of a cluster needs the same
    /// one. Default: random per process (tokens die with the process).
    pub fn token_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.token_secret = Some(secret.into());
        self
    }

    /// Sets the password hasher (e.g. cheaper parameters in tests).
    pub fn password_hasher(mut self, h: PasswordHasher) -> Self {
        self.hasher = Some(h);
        self
    }

    /// Shares state with other nodes through Redis at `url`: presence (with
    /// the configured grace), the node registry and fan-out (per-node and
    /// per-room pub/sub channels), and sessions unless a store with
    /// sessions was set already (PostgreSQL keeps them durably). Call after
    /// [`config`](Self::config): the node name and grace come from it.
    #[cfg(feature = "redis")]
    pub async fn redis(mut self, url: &str) -> Result<Self, StartError> {
        use crate::redis::{Redis, RedisConfig, RedisPresence, RedisRegistry, RedisSessions};
        let config = RedisConfig { url: url.to_string(), prefix: self.config.redis_prefix.clone() };
        let redis = Redis::connect(&config).await?;
        let presence =
            RedisPresence::new(redis.clone(), self.config.presence_conn_ttl, self.config.presence_grace);
        self.presence = Some(Arc::new(presence));
        self.registry = Some(Arc::new(RedisRegistry::new(redis.clone())));
        self.broker =
            Some(Arc::new(crate::redis::broker::RedisBroker::new(&redis, self.config.node_name.clone())));
        if self.sessions.is_none() {
            self.sessions = Some(Arc::new(RedisSessions::new(redis)));
        }
        Ok(self)
    }

    /// Keeps messages, the directory and sessions in PostgreSQL at `url`
    /// (migrations run now; pooled connections).
    #[cfg(feature = "postgres")]
    pub async fn postgres(self, url: &str) -> Result<Self, StartError> {
        self.postgres_with(url, crate::store::postgres::PgOptions::default()).await
    }

    /// [`postgres`](Self::postgres) with options (pool size, schema).
    #[cfg(feature = "postgres")]
    pub async fn postgres_with(
        self,
        url: &str,
        opts: crate::store::postgres::PgOptions,
    ) -> Result<Self, StartError> {
        let store = crate::store::PgStore::connect(url, opts).await?;
        Ok(self.store(Arc::new(store)))
    }

    /// Binds `addr` and starts serving HTTP and WebSocket on it.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<RunningServer, StartError> {
        let listener = TcpListener::bind(addr).await?;
        self.serve(listener).await
    }

    /// Starts serving on an already bound listener.
    pub async fn serve(self, listener: TcpListener) -> Result<RunningServer, StartError> {
        let addr = listener.local_addr()?;
        let cfg = Arc::new(self.config);
        let metrics = Arc::new(Metrics::new());
        let default_store = Arc::new(MemoryStore::new());
        let messages = self.messages.unwrap_or_else(|| default_store.clone());
        let directory = self.directory.unwrap_or_else(|| default_store.clone());
        let sessions = self.sessions.unwrap_or_else(|| default_store.clone());
        let presence_store = self.presence.unwrap_or_else(|| Arc::new(MemoryPresence::new()));
        let broker = self.broker.unwrap_or_else(|| Arc::new(LocalBroker::new()));
        let push = self.push.unwrap_or_else(|| Arc::new(LogPush));
        let registry = self.registry.unwrap_or_else(|| Arc::new(LocalRegistry::new()));
        let secret = self.token_secret.unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec());
        let attachments: Arc<dyn AttachmentStore> = match self.attachments {
            Some(a) => a,
            None => Arc::new(FsAttachments::temporary()?),
        };

        let hub = Arc::new(Hub::new(cfg.node_name.clone(), metrics.clone()));
        let weak_broker = Arc::downgrade(&broker);
        hub.set_room_listener(Box::new(move |room, interested| {
            if let Some(b) = weak_broker.upgrade() {
                b.room_interest(room, interested);
            }
        }));
        // With several nodes, one conversation's messages can arrive
        // interleaved: put them back in id order before the hub.
        let sink: Arc<dyn EventSink> = if broker.spans_nodes() && !cfg.reorder_window.is_zero() {
            crate::reorder::Reorder::new(hub.clone(), cfg.reorder_window)
        } else {
            hub.clone()
        };
        broker.subscribe(sink).await?;
        let (presence, presence_changes) =
            PresenceTracker::new(presence_store, cfg.presence_grace, PRESENCE_QUEUE);
        let session_tokens = SessionTokens::new(TokenSigner::new(&secret), sessions.clone());
        let mut authenticators = self.authenticators;
        #[cfg(feature = "jwt")]
        if let Some(jwt) = self.jwt {
            authenticators.push(Arc::new(crate::auth::JwtAuthenticator::new(jwt, sessions.clone())));
        }
        authenticators.push(Arc::new(session_tokens.clone()));
        let feed = match self.feed {
            Some((sink, feed_cfg)) => Some(
                crate::feed::Feed::new(
                    messages.clone(),
                    sink,
                    feed_cfg,
                    cfg.node_name.clone(),
                    metrics.clone(),
                )
                .ok_or(StartError::NoFeed)?,
            ),
            None => None,
        };
        let (feed, feed_hints) = match feed {
            Some((feed, hints, rx)) => {
                feed.start().await?;
                (Some((feed, rx)), Some(hints))
            }
            None => (None, None),
        };
        let services = Services {
            messages: messages.clone(),
            directory,
            auth: session_tokens,
            authenticators,
            hasher: self.hasher.unwrap_or_default(),
            presence,
            broker,
            push: PushDispatcher::new(push, cfg.push_max_in_flight, metrics.clone()),
            metrics: metrics.clone(),
            attachments,
            hooks: self.hooks.map(crate::logic::Hooks::new),
            feed: feed_hints,
        };
        let logic = Arc::new(Logic::new(cfg.clone(), services));
        let state = AppState::new(logic.clone(), hub, metrics, registry.clone());
        #[cfg(feature = "tls")]
        let tls = self.tls;
        #[cfg(not(feature = "tls"))]
        let tls: Option<std::convert::Infallible> = None;
        if tls.is_some() {
            state.set_serves_tls();
        }
        let ttl = cfg.registry_ttl;
        registry.announce(&state.node_info(), ttl).await?;

        let mut background = vec![
            tokio::spawn({
                let logic = logic.clone();
                async move { logic.run_presence_fanout(presence_changes).await }
            }),
            tokio::spawn({
                let logic = logic.clone();
                async move { logic.run_receipts().await }
            }),
            tokio::spawn({
                let presence = logic.services().presence.clone();
                let sweep_every = cfg.presence_grace.clamp(Duration::from_millis(100), PRESENCE_SWEEP_MAX);
                async move {
                    let mut every = tokio::time::interval(sweep_every);
                    loop {
                        every.tick().await;
                        presence.sweep().await;
                    }
                }
            }),
            tokio::spawn({
                let (presence, hub) = (logic.services().presence.clone(), state.hub().clone());
                let every = cfg.presence_refresh;
                async move {
                    let mut every = tokio::time::interval(every);
                    every.tick().await;
                    loop {
                        every.tick().await;
                        let conns: Vec<_> =
                            hub.connections().iter().map(|c| (c.user, c.conn_ref())).collect();
                        presence.refresh(&conns).await;
                    }
                }
            }),
            tokio::spawn({
                let state = state.clone();
                async move {
                    let mut every = tokio::time::interval(ttl / 3);
                    loop {
                        every.tick().await;
                        if let Err(e) = state.registry().announce(&state.node_info(), ttl).await {
                            tracing::warn!(error = %e, "node registry: announce failed");
                        }
                    }
                }
            }),
            tokio::spawn({
                let logic = logic.clone();
                let every = (cfg.attachment_orphan_ttl / 4).clamp(Duration::from_secs(1), ORPHAN_SWEEP_MAX);
                async move {
                    let mut every = tokio::time::interval(every);
                    loop {
                        every.tick().await;
                        match logic.sweep_orphan_attachments().await {
                            Ok(n) if n > 0 => tracing::info!(removed = n, "unreferenced uploads removed"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "sweeping unreferenced uploads failed"),
                        }
                    }
                }
            }),
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SESSION_PURGE_EVERY);
                loop {
                    every.tick().await;
                    match sessions.purge_expired(crate::time::now_ms()).await {
                        Ok(n) if n > 0 => tracing::info!(purged = n, "expired sessions purged"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "session purge failed"),
                    }
                }
            }),
        ];

        if let Some((feed, hints)) = feed {
            background.push(tokio::spawn(feed.run(hints)));
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let router = crate::http::router(state.clone());
        let per_ip = ConnectionsPerIp::new(cfg.max_connections_per_ip);
        let tcp = TcpAcceptor::new(listener, per_ip, state.metrics().clone());
        let header_timeout = cfg.header_read_timeout;
        let http = match tls {
            #[cfg(feature = "tls")]
            Some(tls) => {
                let listener = crate::tls::TlsListener::new(tcp, tls);
                tokio::spawn(serve_http(listener, router, header_timeout, stop_rx))
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match never {},
            None => tokio::spawn(serve_http(tcp, router, header_timeout, stop_rx)),
        };
        let scheme = if state.serves_tls() { "HTTPS and WSS" } else { "HTTP and WebSocket" };
        tracing::info!(%addr, node = %cfg.node_name, "im-server listening ({scheme} on /ws)");
        Ok(RunningServer { addr, state, messages, stop_tx, http, background })
    }
}

/// A server that is serving. Stop it with [`shutdown`](Self::shutdown).
pub struct RunningServer {
    addr: SocketAddr,
    state: AppState,
    messages: Arc<dyn MessageStore>,
    stop_tx: watch::Sender<bool>,
    http: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (`https://` with TLS), the business API's base URL.
    pub fn http_url(&self) -> String {
        let scheme = if self.state.serves_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `ws://ADDR/ws` (`wss://` with TLS), the WebSocket URL.
    pub fn ws_url(&self) -> String {
        let scheme = if self.state.serves_tls() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.addr)
    }

    /// The shared state (logic, hub, metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops gracefully: refuses new connections, closes every connection
    /// with 3500 ("reconnect via the dispatcher"), waits for them to go (at
    /// most `shutdown_timeout`), stops HTTP and flushes storage.
    pub async fn shutdown(self) {
        self.stop_with(CloseCode::SHUTDOWN).await
    }

    /// Drains, then stops: see [`AppState::start_drain`]. Connections that
    /// arrived meanwhile are closed with 3501 too; storage is flushed.
    pub async fn drain(self) {
        self.state.start_drain();
        self.state.drained().await;
        self.stop_with(CloseCode::DRAIN).await
    }

    /// Stops this node abruptly, as a crash (`kill -9`) would, for
    /// fault-injection tests: sockets end without close frames, nothing is
    /// withdrawn from the registry or from shared presence (they must
    /// expire), storage is not flushed. Memory-only state is lost.
    pub async fn crash(self) {
        self.state.set_crashed();
        self.state.set_draining();
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
        self.state.hub().close_all(CloseCode::RECONNECT);
        let _ = self.stop_tx.send(true);
        self.http.abort();
        let _ = self.http.await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.state.holders() > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!("crashed (simulated)");
    }

    /// Resolves when a drain (e.g. from `POST /admin/drain`) has finished
    /// asking connections to go; the owner then calls [`shutdown`](Self::shutdown).
    pub async fn drained(&self) {
        self.state.drained().await
    }

    async fn stop_with(self, code: CloseCode) {
        let hub = self.state.hub().clone();
        self.state.set_draining();
        let node = self.state.config().node_name.clone();
        if let Err(e) = self.state.registry().withdraw(&node).await {
            tracing::warn!(error = %e, "node registry: withdraw failed");
        }
        let closing = hub.close_all(code);
        tracing::info!(connections = closing, "shutting down");
        let deadline = tokio::time::Instant::now() + self.state.config().shutdown_timeout;
        while hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
        // Connection tasks and in-flight requests hold the state (and so the
        // stores); wait until they are gone, so the storage is really closed
        // when this returns and can be reopened at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.state.holders() > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = self.messages.flush().await {
            tracing::error!(error = %e, "flushing storage at shutdown failed");
        }
        tracing::info!("stopped");
    }
}
