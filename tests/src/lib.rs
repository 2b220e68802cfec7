//! Harness of the end-to-end suites: start a real server on loopback, drive
//! its HTTP API with reqwest and its WebSocket with a minimal
//! tokio-tungstenite client that speaks `im_protocol` frames.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use im_protocol::{codec, ClientFrame, CloseCode, ConversationId, MessageId, ServerFrame, UserId};
use im_server::auth::PasswordHasher;
use im_server::{RunningServer, Server, ServerBuilder, ServerConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod cluster;
pub mod files;
pub mod pki;
pub mod proxy;
pub mod s3;
pub mod webhook;

/// How long a test waits for one expected frame before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// Argon2 parameters cheap enough for tests (never use in production).
pub fn fast_hasher() -> PasswordHasher {
    PasswordHasher::with_params(256, 1, 1).expect("valid argon2 params")
}

/// A builder with test defaults: cheap password hashing, fixed token secret.
pub fn builder(cfg: ServerConfig) -> ServerBuilder {
    Server::builder()
        .config(cfg)
        .password_hasher(fast_hasher())
        .token_secret(b"test-secret-test-secret-32-bytes".to_vec())
}

/// Starts an in-memory server on 127.0.0.1 with `cfg`.
pub async fn start(cfg: ServerConfig) -> RunningServer {
    builder(cfg).memory().bind("127.0.0.1:0").await.expect("server starts")
}

/// Starts a server on the embedded store in `dir`, listening on `addr`.
/// A listener of a server that just stopped (or was killed) on the same
/// address may linger a moment: the bind is retried for up to 5 s.
pub async fn start_embedded(dir: impl AsRef<std::path::Path>, addr: &str) -> RunningServer {
    let mut last = None;
    for _ in 0..100 {
        match builder(ServerConfig::default()).embedded(dir.as_ref()).expect("store opens").bind(addr).await {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}: {last:?}");
}

/// Starts a server with the default configuration.
pub async fn start_default() -> RunningServer {
    start(ServerConfig::default()).await
}

/// Waits (at most 15 s) for the first client event matching `pred`;
/// returns it and the events skipped on the way. Panics, naming `what`
/// and what was seen, when none comes.
pub async fn until(
    events: &mut im_client::Events,
    what: &str,
    mut pred: impl FnMut(&im_client::Event) -> bool,
) -> (im_client::Event, Vec<im_client::Event>) {
    const EVENT_WAIT: Duration = Duration::from_secs(15);
    let mut skipped = Vec::new();
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => panic!("no {what} within {EVENT_WAIT:?}; saw {skipped:?}"),
            Ok(None) => panic!("event stream ended while waiting for {what}; saw {skipped:?}"),
            Ok(Some(e)) if pred(&e) => return (e, skipped),
            Ok(Some(e)) => skipped.push(e),
        }
    }
}

/// Connects an `im-client` to `server` with `token`, reconnecting quickly
/// (20 to 50 ms, at most 3 attempts); returns it, its events and the first
/// `Connected` or `Stopped` event (a refused token stops it at once).
pub async fn connect_or_stop(
    server: &RunningServer,
    token: &str,
) -> (im_client::Client, im_client::Events, im_client::Event) {
    let (c, mut ev) = im_client::Client::builder()
        .url(server.ws_url())
        .token(token)
        .backoff(Duration::from_millis(20), Duration::from_millis(50))
        .max_reconnect_attempts(3)
        .connect()
        .expect("client starts");
    let (first, _) = until(&mut ev, "Connected or Stopped", |e| {
        matches!(e, im_client::Event::Connected { .. } | im_client::Event::Stopped { .. })
    })
    .await;
    (c, ev, first)
}

/// A signed-in user: id and token.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// The user id.
    pub id: UserId,
    /// Their login name.
    pub name: String,
    /// A bearer token.
    pub token: String,
}

/// HTTP calls against a server.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client of `server`'s HTTP API.
    pub fn new(server: &RunningServer) -> Self {
        Self::at(server.http_url())
    }

    /// A client of the HTTP API at `base` (`http://host:port`).
    pub fn at(base: String) -> Self {
        Self::with_client(base, reqwest::Client::new())
    }

    /// A client of the HTTP API at `base` through `http` (e.g. one that
    /// trusts a test CA for `https://`).
    pub fn with_client(base: String, http: reqwest::Client) -> Self {
        Self { base, http }
    }

    /// Sends a request and returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("http body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Registers and logs in `name` (password "password-123").
    pub async fn user(&self, name: &str) -> TestUser {
        let creds = json!({"username": name, "password": "password-123"});
        let (s, _) = self.call("POST", "/api/v1/register", None, Some(creds.clone())).await;
        assert!(s == 201 || s == 409, "register {name}: {s}");
        self.login(name).await
    }

    /// Logs in an existing user (password "password-123").
    pub async fn login(&self, name: &str) -> TestUser {
        let creds = json!({"username": name, "password": "password-123"});
        let (s, body) = self.call("POST", "/api/v1/login", None, Some(creds)).await;
        assert_eq!(s, 200, "login {name}: {body}");
        TestUser {
            id: UserId(body["user_id"].as_u64().expect("user_id")),
            name: name.into(),
            token: body["token"].as_str().expect("token").into(),
        }
    }

    /// Creates a group owned by `owner` with `members`; returns its id.
    pub async fn group(&self, owner: &TestUser, name: &str, members: &[&TestUser]) -> u64 {
        let ids: Vec<u64> = members.iter().map(|m| m.id.0).collect();
        let (s, body) = self
            .call("POST", "/api/v1/groups", Some(&owner.token), Some(json!({"name": name, "members": ids})))
            .await;
        assert_eq!(s, 201, "create group: {body}");
        body["id"].as_u64().expect("group id")
    }

    /// Creates a room (its creator joins); returns its id.
    pub async fn room(&self, creator: &TestUser, name: &str) -> u64 {
        let (s, body) =
            self.call("POST", "/api/v1/rooms", Some(&creator.token), Some(json!({"name": name}))).await;
        assert_eq!(s, 201, "create room: {body}");
        body["id"].as_u64().expect("room id")
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A minimal WebSocket client speaking `im_protocol` frames.
pub struct Ws {
    socket: Socket,
    /// The `hello` frame the server sent first.
    pub hello: ServerFrame,
    next_rid: u64,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The server sent a close frame with this code.
    Closed(CloseCode),
    /// The socket ended without a close frame.
    Dropped,
}

impl Ws {
    /// Connects to `ws_url` with `token` in the Authorization header and
    /// waits for `hello`.
    pub async fn connect(ws_url: &str, token: &str, device: &str) -> Ws {
        Ws::connect_url(format!("{ws_url}?device={device}"), token).await
    }

    /// Like [`Ws::connect`], asking for protocol version `v`.
    pub async fn connect_v(ws_url: &str, token: &str, device: &str, v: u32) -> Ws {
        Ws::connect_url(format!("{ws_url}?device={device}&v={v}"), token).await
    }

    async fn connect_url(url: String, token: &str) -> Ws {
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
        // tungstenite zero-fills its whole read buffer before every read: the
        // default 128 KiB made this client most of the CPU an in-process
        // benchmark spent (docs/benchmarks.md §4).
        let config =
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024);
        let (socket, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
            .await
            .expect("websocket connects");
        let mut ws = Ws { socket, hello: ServerFrame::Pong { rid: None }, next_rid: 1 };
        ws.hello = ws.recv().await;
        assert_eq!(ws.hello.type_name(), "hello", "first frame must be hello");
        ws
    }

    /// Connects as `user` to `server`.
    pub async fn open(server: &RunningServer, user: &TestUser, device: &str) -> Ws {
        Ws::connect(&server.ws_url(), &user.token, device).await
    }

    /// A fresh request id.
    pub fn rid(&mut self) -> u64 {
        self.next_rid += 1;
        self.next_rid
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_text(codec::encode_client(frame)).await;
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: String) {
        self.socket.send(WsMessage::Text(text.into())).await.expect("send frame");
    }

    /// Sends a raw WebSocket message.
    pub async fn send_raw(&mut self, msg: WsMessage) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.socket.send(msg).await
    }

    /// The next server frame (pings are answered by tungstenite, skipped here).
    pub async fn recv(&mut self) -> ServerFrame {
        match self.try_recv(WAIT).await {
            Ok(Some(f)) => f,
            Ok(None) => panic!("no frame within {WAIT:?}"),
            Err(e) => panic!("connection ended while waiting for a frame: {e:?}"),
        }
    }

    /// The next server frame within `wait`: `Ok(None)` on time-out,
    /// `Err(how)` if the connection ended.
    pub async fn try_recv(&mut self, wait: Duration) -> Result<Option<ServerFrame>, Ended> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return Ok(None),
                Ok(n) => n,
            };
            match next {
                Some(Ok(WsMessage::Text(t))) => {
                    return Ok(Some(codec::decode_server(t.as_str()).expect("server frames decode")))
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Err(frame
                        .map(|f| Ended::Closed(CloseCode(u16::from(f.code))))
                        .unwrap_or(Ended::Dropped))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Ended::Dropped),
            }
        }
    }

    /// Skips frames until one matches `pred`, and returns it.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
        loop {
            let f = self.recv().await;
            if pred(&f) {
                return f;
            }
        }
    }

    /// Sends a request and returns the reply with the same `rid` (skipping pushes).
    pub async fn request(&mut self, frame: ClientFrame) -> ServerFrame {
        let rid = frame.rid();
        self.send(&frame).await;
        self.recv_until(|f| reply_rid(f) == rid && rid.is_some()).await
    }

    /// Sends `body {tag}` to `conv` with client message id `t-{tag}` and
    /// returns the id of its `ack` (panics on any other reply).
    pub async fn send_message(&mut self, conv: ConversationId, tag: &str) -> MessageId {
        let rid = self.rid();
        let frame = ClientFrame::send(rid, conv, cmid(tag), format!("body {tag}"));
        match self.request(frame).await {
            ServerFrame::Ack { id, .. } => id,
            other => panic!("send {tag}: {other:?}"),
        }
    }

    /// Every frame that arrives within `wait` (for checking that something
    /// does not arrive).
    pub async fn frames_within(&mut self, wait: Duration) -> Vec<ServerFrame> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.try_recv(left).await {
                Ok(Some(f)) => got.push(f),
                _ => break,
            }
        }
        got
    }

    /// Waits for the server to close the connection and returns how.
    pub async fn closed(&mut self) -> Ended {
        loop {
            match self.try_recv(WAIT).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("connection still open after {WAIT:?}"),
                Err(e) => return e,
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self
            .socket
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: WsCloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

/// The request id a reply frame carries.
pub fn reply_rid(f: &ServerFrame) -> Option<u64> {
    match f {
        ServerFrame::Ack { rid, .. }
        | ServerFrame::SyncPage { rid, .. }
        | ServerFrame::HistoryPage { rid, .. }
        | ServerFrame::Ok { rid }
        | ServerFrame::PresenceList { rid, .. }
        | ServerFrame::InboxPage { rid, .. }
        | ServerFrame::ReceiptList { rid, .. } => Some(*rid),
        ServerFrame::Error { rid, .. } | ServerFrame::Pong { rid } => *rid,
        _ => None,
    }
}

/// A `send` frame of event `kind` (`reaction`, `edit`, `recall`) about
/// message `target`, with client message id `t-{tag}`.
#[allow(clippy::too_many_arguments)]
pub fn event_frame(
    rid: u64,
    conv: ConversationId,
    tag: &str,
    kind: &str,
    target: MessageId,
    body: &str,
    content: Option<Value>,
) -> ClientFrame {
    ClientFrame::Send {
        rid,
        conv,
        cmid: cmid(tag),
        body: body.into(),
        mentions: Vec::new(),
        kind: Some(kind.into()),
        content,
        reply_to: None,
        target: Some(target),
    }
}

/// Sends an event from `ws` and returns its id (panics on an error).
pub async fn send_event(
    ws: &mut Ws,
    conv: ConversationId,
    tag: &str,
    kind: &str,
    target: MessageId,
    body: &str,
    content: Option<Value>,
) -> MessageId {
    let rid = ws.rid();
    match ws.request(event_frame(rid, conv, tag, kind, target, body, content)).await {
        ServerFrame::Ack { id, .. } => id,
        other => panic!("{kind} {tag}: {other:?}"),
    }
}

/// A unique client message id for tests.
pub fn cmid(tag: impl std::fmt::Display) -> im_protocol::ClientMsgId {
    im_protocol::ClientMsgId::new(format!("t-{tag}")).expect("valid cmid")
}
