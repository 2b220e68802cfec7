//! [`Hooks`](crate::hooks::Hooks) and the message feed as signed HTTP
//! webhooks, so the binary's operators get the same seams as embedders:
//! [`WebhookHooks`] asks the application's backend before connections and
//! sends and tells it of joins, leaves and presence; [`WebhookFeed`] posts
//! every stored message and event at least once, in order
//! ([`crate::feed`]).
//!
//! Every call is a `POST` of JSON with a `type`, signed as
//! [`signature`] says. What each call carries and expects, and what
//! happens when the backend is down, is in `docs/embedding.md`.

pub mod signature;

#[cfg(feature = "webhook")]
mod feed;
#[cfg(feature = "webhook")]
mod hooks;

#[cfg(feature = "webhook")]
pub use feed::WebhookFeed;
#[cfg(feature = "webhook")]
pub use hooks::WebhookHooks;

use std::collections::BTreeSet;
use std::time::Duration;

/// What an asking hook (`connect`, `before_send`) does when the backend is
/// down: no answer within the timeout, a transport error, an answer other
/// than 2xx, or one it cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenDown {
    /// Go ahead as if it had allowed (fail-open): chat keeps working while
    /// the backend is away, unchecked.
    #[default]
    Allow,
    /// Refuse with `unavailable` (fail-closed): nothing unchecked gets
    /// through; connections (HTTP 503) and sends are retried by the clients.
    Refuse,
}

impl std::str::FromStr for WhenDown {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" | "open" => Ok(WhenDown::Allow),
            "refuse" | "closed" => Ok(WhenDown::Refuse),
            _ => Err(format!("{s:?}: expected allow (fail-open) or refuse (fail-closed)")),
        }
    }
}

/// A call [`WebhookHooks`] can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookCall {
    /// Asked before a WebSocket opens.
    Connect,
    /// Asked before a message is stored.
    BeforeSend,
    /// Told of a join (room joined, group member added).
    Join,
    /// Told of a leave.
    Leave,
    /// Told of a presence change.
    Presence,
}

impl HookCall {
    /// Every call.
    pub const ALL: [HookCall; 5] =
        [HookCall::Connect, HookCall::BeforeSend, HookCall::Join, HookCall::Leave, HookCall::Presence];

    /// Its `type` in the JSON body (and its name on the command line).
    pub fn as_str(self) -> &'static str {
        match self {
            HookCall::Connect => "connect",
            HookCall::BeforeSend => "before_send",
            HookCall::Join => "join",
            HookCall::Leave => "leave",
            HookCall::Presence => "presence",
        }
    }
}

impl std::str::FromStr for HookCall {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        HookCall::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("{s:?}: expected one of connect, before_send, join, leave, presence"))
    }
}

/// Where and how [`WebhookHooks`] calls.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The backend's URL (every call goes there; the body's `type` says which).
    pub url: String,
    /// The shared signing secret.
    pub secret: Vec<u8>,
    /// How long an asking hook waits for its answer (the longest a
    /// connection or a send is held up by the backend).
    pub timeout: Duration,
    /// What asking hooks do when the backend is down.
    pub when_down: WhenDown,
    /// The calls made; others are not (an unasked `before_send` costs nothing).
    pub calls: BTreeSet<HookCall>,
}

impl WebhookConfig {
    /// Every call to `url`, signed with `secret`, 2 s timeout, fail-open.
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            timeout: Duration::from_secs(2),
            when_down: WhenDown::Allow,
            calls: HookCall::ALL.into_iter().collect(),
        }
    }
}

/// Posts signed JSON to one URL.
#[cfg(feature = "webhook")]
#[derive(Debug, Clone)]
struct Poster {
    url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
}

#[cfg(feature = "webhook")]
impl Poster {
    /// # Panics
    ///
    /// If the HTTP client cannot be initialised (as `reqwest::Client::new`).
    fn new(url: String, secret: Vec<u8>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|e| panic!("cannot initialise the webhook HTTP client: {e}"));
        Poster { url, secret, client }
    }

    /// Posts `body`; the answer's bytes on 2xx, else why not.
    async fn post(&self, body: &impl serde::Serialize) -> Result<bytes::Bytes, String> {
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let header = signature::sign(&self.secret, crate::time::now_ms() / 1000, &body);
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, header)
            .body(body)
            .send()
            .await
            // The URL may carry a secret; keep it out of errors and logs.
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        response.bytes().await.map_err(|e| e.without_url().to_string())
    }
}
