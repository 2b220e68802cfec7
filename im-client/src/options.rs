//! [`ClientBuilder`]: every option with a sane default (after async-nats'
//! `ConnectOptions` and rumqtt's `MqttOptions`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::backoff::ReconnectPolicy;
use crate::cursor_store::{CursorStore, MemoryCursorStore};
use crate::error::ConfigError;
use crate::events::Events;
use crate::Client;

/// How the client finds its message node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A fixed WebSocket URL (`ws://host/ws`), e.g. a load balancer.
    WebSocket(Url),
    /// A dispatcher (`http://host/dispatch`) answering `{"url": "ws://…"}`,
    /// asked again before every reconnect that is not "same node".
    Dispatcher(Url),
}

/// How the client authenticates.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    /// A token from an earlier login.
    Token(String),
    /// Log in through the business API (`POST {api}/api/v1/login`); log in
    /// again when the server says the token expired (4000 / HTTP 401).
    Login { username: String, password: String },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(…)"),
            Auth::Login { username, .. } => write!(f, "Login({username:?}, …)"),
        }
    }
}

/// The validated configuration the driver runs with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) endpoint: Endpoint,
    pub(crate) api_base: Url,
    pub(crate) auth: Auth,
    pub(crate) device: Option<String>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) pong_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) reconnect: ReconnectPolicy,
    pub(crate) cursor_store: Arc<dyn CursorStore>,
    pub(crate) send_queue: usize,
    pub(crate) event_buffer: usize,
    pub(crate) sync_page_limit: Option<u32>,
    /// TLS for `wss://` and `https://`.
    #[cfg(feature = "tls")]
    pub(crate) tls: Arc<crate::tls::rustls::ClientConfig>,
}

/// Configures and starts a [`Client`].
///
/// Only a URL and credentials are required; everything else has a default:
///
/// | option | default |
/// |---|---|
/// | [`heartbeat_interval`](Self::heartbeat_interval) | 20 s (or the server's `heartbeat_interval_ms` if shorter) |
/// | [`pong_timeout`](Self::pong_timeout) | 10 s |
/// | [`connect_timeout`](Self::connect_timeout) | 10 s |
/// | [`request_timeout`](Self::request_timeout) | 10 s |
/// | [`reconnect`](Self::reconnect) | 0.5 s doubling to 30 s, ±30 % jitter, forever |
/// | [`cursor_store`](Self::cursor_store) | [`MemoryCursorStore`] |
/// | [`send_queue`](Self::send_queue) | 1000 unacknowledged sends |
/// | [`event_buffer`](Self::event_buffer) | 1024 events |
/// | [`tls`](Self::tls) | trust the Mozilla root store (`tls` feature) |
#[derive(Clone)]
pub struct ClientBuilder {
    url: Option<String>,
    api_base: Option<String>,
    auth: Option<Auth>,
    device: Option<String>,
    heartbeat_interval: Duration,
    pong_timeout: Duration,
    connect_timeout: Duration,
    request_timeout: Duration,
    reconnect: ReconnectPolicy,
    cursor_store: Option<Arc<dyn CursorStore>>,
    send_queue: usize,
    event_buffer: usize,
    sync_page_limit: Option<u32>,
    #[cfg(feature = "tls")]
    tls: crate::tls::TlsOptions,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            url: None,
            api_base: None,
            auth: None,
            device: None,
            heartbeat_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            cursor_store: None,
            send_queue: 1000,
            event_buffer: 1024,
            sync_page_limit: None,
            #[cfg(feature = "tls")]
            tls: crate::tls::TlsOptions::new(),
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("device", &self.device)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where to connect: a WebSocket URL (`ws://host:port/ws`, used as is on
    /// every reconnect, e.g. behind a load balancer) or a dispatcher URL
    /// (`http://host:port/dispatch`, asked for a node before the first
    /// connect and again before every reconnect the protocol sends back to
    /// the dispatcher). `wss://` and `https://` need the `tls` feature
    /// (on by default); see [`tls`](Self::tls).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Base URL of the business API, for [`login`](Self::login)
    /// (`http://host:port`). Default: the scheme, host and port of
    /// [`url`](Self::url) (`ws` becomes `http`).
    pub fn api_base(mut self, base: impl Into<String>) -> Self {
        self.api_base = Some(base.into());
        self
    }

    /// Authenticate with a token from an earlier login (sent as
    /// `Authorization: Bearer`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(Auth::Token(token.into()));
        self
    }

    /// Authenticate by logging in with a username and password through the
    /// business API; the client logs in again by itself when the token
    /// expires.
    pub fn login(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some(Auth::Login { username: username.into(), password: password.into() });
        self
    }

    /// This device's id (1–64 printable ASCII characters). Keep it across
    /// runs along with the cursor store. Default: the server assigns one on
    /// the first connection and the client reuses it on reconnects.
    pub fn device(mut self, device: impl Into<String>) -> Self {
        self.device = Some(device.into());
        self
    }

    /// Longest interval between two `ping`s. The server's
    /// `heartbeat_interval_ms` is used when it is shorter.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = every.max(Duration::from_millis(10));
        self
    }

    /// After a `ping`, how long to wait for any frame before the connection
    /// counts as dead (also when TCP reports nothing). A dead connection is
    /// noticed at most `heartbeat_interval + pong_timeout` after the last frame.
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.pong_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Longest time for one connection attempt: login, dispatcher, TCP,
    /// WebSocket handshake and the server's `hello`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest wait for the reply to a request (join, leave, history,
    /// presence query), including time spent waiting for a connection.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The whole reconnect policy.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Reconnect delays: the first one and the cap.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect.initial_delay = initial;
        self.reconnect.max_delay = max;
        self
    }

    /// Growth factor of reconnect delays (default 2.0).
    pub fn backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.reconnect.multiplier = multiplier;
        self
    }

    /// Random spread of reconnect delays, a fraction `0.0`–`1.0` (default 0.3).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.reconnect.jitter = jitter;
        self
    }

    /// Stop after this many consecutive failed reconnect attempts (default: never).
    pub fn max_reconnect_attempts(mut self, attempts: u32) -> Self {
        self.reconnect.max_attempts = Some(attempts);
        self
    }

    /// Where sync cursors are kept (default: in memory).
    pub fn cursor_store(mut self, store: impl CursorStore) -> Self {
        self.cursor_store = Some(Arc::new(store));
        self
    }

    /// Most sends awaiting their ack; [`Client::send`] fails with
    /// [`SendError::QueueFull`](crate::SendError::QueueFull) beyond it.
    pub fn send_queue(mut self, bound: usize) -> Self {
        self.send_queue = bound.max(1);
        self
    }

    /// Capacity of the event stream.
    pub fn event_buffer(mut self, capacity: usize) -> Self {
        self.event_buffer = capacity.max(1);
        self
    }

    /// TLS options for `wss://` and `https://`: trusted CAs, a client
    /// certificate (default: trust the Mozilla root store).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, options: crate::tls::TlsOptions) -> Self {
        self.tls = options;
        self
    }

    /// Messages per sync page asked for (default: the server's maximum).
    pub fn sync_page_limit(mut self, limit: u32) -> Self {
        self.sync_page_limit = Some(limit.max(1));
        self
    }

    /// Starts the client: spawns its connection task on the current Tokio
    /// runtime and returns the handle and the event stream at once. The
    /// connection is made in the background; watch for [`Event::Connected`]
    /// and [`Event::Synced`](crate::Event::Synced) (or
    /// [`Event::Stopped`](crate::Event::Stopped) if it cannot be made).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    ///
    /// [`Event::Connected`]: crate::Event::Connected
    pub fn connect(self) -> Result<(Client, Events), ConfigError> {
        let config = self.validate()?;
        Ok(crate::driver::spawn(config))
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let raw = self.url.ok_or(ConfigError::NoUrl)?;
        let auth = self.auth.ok_or(ConfigError::NoAuth)?;
        let bad = |url: &str, why: &str| ConfigError::BadUrl { url: url.into(), why: why.into() };
        let url = Url::parse(&raw).map_err(|e| bad(&raw, &e.to_string()))?;
        if url.host_str().is_none() {
            return Err(bad(&raw, "no host"));
        }
        let (endpoint, http_scheme) = match url.scheme() {
            "ws" => (Endpoint::WebSocket(url.clone()), "http"),
            "wss" => (Endpoint::WebSocket(url.clone()), "https"),
            "http" => (Endpoint::Dispatcher(url.clone()), "http"),
            "https" => (Endpoint::Dispatcher(url.clone()), "https"),
            _ => return Err(bad(&raw, "expected ws://, wss://, http:// or https://")),
        };
        #[cfg(not(feature = "tls"))]
        if matches!(url.scheme(), "wss" | "https") {
            // This build links no TLS stack: terminate TLS in front of the
            // client (or use a plain URL on a trusted network).
            return Err(bad(&raw, "TLS (wss://, https://) needs im-client's `tls` feature"));
        }
        #[cfg(feature = "tls")]
        let tls = self.tls.build().map_err(ConfigError::Tls)?;
        let api_base = match self.api_base {
            Some(b) => Url::parse(&b).map_err(|e| bad(&b, &e.to_string()))?,
            None => {
                let host = url.host_str().unwrap_or_default();
                let origin = match url.port() {
                    Some(p) => format!("{http_scheme}://{host}:{p}"),
                    None => format!("{http_scheme}://{host}"),
                };
                Url::parse(&origin).map_err(|e| bad(&origin, &e.to_string()))?
            }
        };
        if let Some(d) = &self.device {
            if d.is_empty() || d.len() > 64 || !d.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::BadUrl {
                    url: raw,
                    why: "device id: 1-64 printable ASCII characters".into(),
                });
            }
        }
        Ok(Config {
            endpoint,
            api_base,
            auth,
            device: self.device,
            heartbeat_interval: self.heartbeat_interval,
            pong_timeout: self.pong_timeout,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            reconnect: self.reconnect,
            cursor_store: self.cursor_store.unwrap_or_else(|| Arc::new(MemoryCursorStore::new())),
            send_queue: self.send_queue,
            event_buffer: self.event_buffer,
            sync_page_limit: self.sync_page_limit,
            #[cfg(feature = "tls")]
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_endpoint_and_the_api_base() {
        let c = ClientBuilder::new().url("ws://127.0.0.1:9/ws").token("t").validate().unwrap();
        assert!(matches!(c.endpoint, Endpoint::WebSocket(_)));
        assert_eq!(c.api_base.as_str(), "http://127.0.0.1:9/");
        let c = ClientBuilder::new().url("http://h:8/dispatch").login("a", "b").validate().unwrap();
        assert!(matches!(c.endpoint, Endpoint::Dispatcher(_)));
        assert_eq!(c.api_base.as_str(), "http://h:8/");
        assert_eq!(ClientBuilder::new().token("t").validate().err(), Some(ConfigError::NoUrl));
        assert_eq!(ClientBuilder::new().url("ws://h/ws").validate().err(), Some(ConfigError::NoAuth));
        assert!(ClientBuilder::new().url("ftp://h/").token("t").validate().is_err());
        let tls = ClientBuilder::new().url("wss://h:8443/ws").token("t").validate();
        if cfg!(feature = "tls") {
            assert_eq!(tls.unwrap().api_base.as_str(), "https://h:8443/");
        } else {
            assert!(tls.is_err(), "no TLS in this build");
        }
        assert!(ClientBuilder::new().url("ws://h/ws").token("t").device("a b").validate().is_err());
    }
}
