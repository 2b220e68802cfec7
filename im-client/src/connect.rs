//! One connection attempt: log in if needed, ask the dispatcher if needed,
//! open the WebSocket with the token, and wait for `hello`.

use std::time::Duration;

use futures::StreamExt;
use im_protocol::{
    codec, CloseCode, CloseReaction, ServerFrame, UserId, WireLimits, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::StopReason;
use crate::http::{self, HttpFailure};
use crate::options::{Auth, Config, Endpoint};

/// How much the socket reads at a time (tungstenite zero-fills this much
/// before every read).
const READ_BUFFER: usize = 8 * 1024;

/// The WebSocket of one connection.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the server said in `hello`.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    /// The protocol version the connection speaks.
    pub(crate) protocol: u32,
    pub(crate) user: UserId,
    pub(crate) device: String,
    pub(crate) node: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) limits: WireLimits,
}

/// An open connection that has received `hello`.
pub(crate) struct Connection {
    pub(crate) socket: Socket,
    /// The WebSocket URL (for "reconnect to the same node").
    pub(crate) url: Url,
    /// The token it was opened with.
    pub(crate) token: String,
    pub(crate) hello: Hello,
}

/// Why an attempt failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Do not retry.
    Stop(StopReason),
    /// The token was refused (HTTP 401, or close 4000 before `hello`). With
    /// password login the client logs in again; with a fixed token it stops.
    TokenRefused(StopReason),
    /// Back off, then try again through the dispatcher.
    Retry(String),
}

/// Inputs of one attempt, owned so the attempt runs beside the command loop.
pub(crate) struct Attempt {
    pub(crate) config: Config,
    pub(crate) http: reqwest::Client,
    /// A token we hold (`None`: log in first).
    pub(crate) token: Option<String>,
    /// The URL to reuse ("same node"), or `None` to resolve it.
    pub(crate) same_url: Option<Url>,
    pub(crate) device: Option<String>,
}

impl Attempt {
    /// Runs the attempt within the configured connect timeout.
    pub(crate) async fn run(self) -> Result<Connection, AttemptError> {
        let limit = self.config.connect_timeout;
        match tokio::time::timeout(limit, self.steps()).await {
            Ok(r) => r,
            Err(_) => Err(AttemptError::Retry(format!("no hello within the connect timeout ({limit:?})"))),
        }
    }

    async fn steps(self) -> Result<Connection, AttemptError> {
        let token = match (self.token, &self.config.auth) {
            (Some(t), _) => t,
            (None, Auth::Token(t)) => t.clone(),
            (None, Auth::Login { username, password }) => {
                http::login(&self.http, &self.config.api_base, username, password).await.map_err(
                    |e| match e {
                        HttpFailure::Refused(why) => AttemptError::Stop(StopReason::LoginFailed(why)),
                        HttpFailure::Transient(why) => AttemptError::Retry(why),
                    },
                )?
            }
        };
        let url = match (self.same_url, &self.config.endpoint) {
            (Some(u), _) => u,
            (None, Endpoint::WebSocket(u)) => u.clone(),
            (None, Endpoint::Dispatcher(d)) => http::dispatch(&self.http, d).await.map_err(|e| match e {
                HttpFailure::Refused(why) | HttpFailure::Transient(why) => AttemptError::Retry(why),
            })?,
        };
        // The newest protocol version first; a server that refuses it with
        // 4003 (an older server) is asked for the next older one.
        let mut version = PROTOCOL_VERSION;
        loop {
            let mut socket = handshake(
                &url,
                &token,
                self.device.as_deref(),
                version,
                #[cfg(feature = "tls")]
                self.config.tls.clone(),
            )
            .await?;
            match wait_for_hello(&mut socket).await {
                Ok(hello) => return Ok(Connection { socket, url, token, hello }),
                Err(AttemptError::Stop(StopReason::Closed { code, .. }))
                    if code == CloseCode::UNSUPPORTED_PROTOCOL && version > MIN_PROTOCOL_VERSION =>
                {
                    tracing::info!(
                        version,
                        "server does not speak this protocol version; asking for an older one"
                    );
                    version -= 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

async fn handshake(
    url: &Url,
    token: &str,
    device: Option<&str>,
    version: u32,
    #[cfg(feature = "tls")] tls: std::sync::Arc<crate::tls::rustls::ClientConfig>,
) -> Result<Socket, AttemptError> {
    let mut full = url.clone();
    {
        let mut q = full.query_pairs_mut();
        if let Some(d) = device {
            q.append_pair("device", d);
        }
        q.append_pair("v", &version.to_string());
    }
    let mut req = full
        .as_str()
        .into_client_request()
        .map_err(|e| AttemptError::Stop(StopReason::HandshakeRefused { status: bad_request(e) }))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| AttemptError::TokenRefused(StopReason::Unauthorized))?;
    req.headers_mut().insert("authorization", bearer);
    // Chat frames are small and latency-bound: no Nagle delay. tungstenite
    // zero-fills its whole read buffer before every read, so a small one
    // (its default is 128 KiB) saves that per received frame; larger frames
    // (sync pages) are read in several chunks.
    let config = Some(WebSocketConfig::default().read_buffer_size(READ_BUFFER));
    #[cfg(feature = "tls")]
    let opened = tokio_tungstenite::connect_async_tls_with_config(
        req,
        config,
        true,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    )
    .await;
    #[cfg(not(feature = "tls"))]
    let opened = tokio_tungstenite::connect_async_with_config(req, config, true).await;
    match opened {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(resp)) => match resp.status().as_u16() {
            401 => Err(AttemptError::TokenRefused(StopReason::Unauthorized)),
            status @ (400 | 403) => Err(AttemptError::Stop(StopReason::HandshakeRefused { status })),
            status => Err(AttemptError::Retry(format!("handshake refused with HTTP {status}"))),
        },
        Err(e) => Err(AttemptError::Retry(format!("connect to {url} failed: {}", http::describe(&e)))),
    }
}

fn bad_request(e: WsError) -> u16 {
    tracing::error!(error = %e, "cannot build the WebSocket request");
    400
}

async fn wait_for_hello(socket: &mut Socket) -> Result<Hello, AttemptError> {
    loop {
        match socket.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                return match codec::decode_server(text.as_str()) {
                    Ok(ServerFrame::Hello {
                        protocol,
                        user,
                        device,
                        node,
                        heartbeat_interval_ms,
                        limits,
                        ..
                    }) => Ok(Hello {
                        protocol,
                        user,
                        device,
                        node,
                        heartbeat_interval: Duration::from_millis(heartbeat_interval_ms.max(1)),
                        limits,
                    }),
                    Ok(other) => {
                        Err(AttemptError::Retry(format!("first frame was {}, not hello", other.type_name())))
                    }
                    Err(e) => Err(AttemptError::Retry(format!("undecodable first frame: {e}"))),
                };
            }
            Some(Ok(WsMessage::Close(frame))) => {
                let (code, reason) = match frame {
                    Some(f) => (CloseCode(u16::from(f.code)), f.reason.to_string()),
                    None => return Err(AttemptError::Retry("closed before hello".into())),
                };
                let stop = StopReason::Closed { code, reason };
                return Err(match code.reaction() {
                    _ if code == CloseCode::UNAUTHORIZED => AttemptError::TokenRefused(stop),
                    CloseReaction::Stop => AttemptError::Stop(stop),
                    _ => AttemptError::Retry(format!("closed with {} before hello", code.0)),
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(AttemptError::Retry(format!("connection failed before hello: {e}"))),
            None => return Err(AttemptError::Retry("connection ended before hello".into())),
        }
    }
}
