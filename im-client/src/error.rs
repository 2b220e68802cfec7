//! Errors, one type per operation, each an enum a caller can match on.

use im_protocol::{CloseCode, ErrorCode};

/// Why [`Client::send`](crate::Client::send) failed. A send that is merely
/// delayed (disconnected, rate limited, server busy) does not fail: it is
/// kept and resent with the same client message id until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The server refused the message for good (e.g. `not_member`,
    /// `body_too_large`, `no_such_group`). Do not resend it unchanged.
    #[error("refused by the server: {code}: {message}")]
    Rejected {
        /// The error code.
        code: ErrorCode,
        /// Detail for logs.
        message: String,
    },
    /// The body is larger than the server's `max_body_bytes`; not sent.
    #[error("body of {len} bytes exceeds the limit of {max}")]
    BodyTooLarge {
        /// The body's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The queue of unacknowledged sends is full; try again later.
    #[error("too many unacknowledged sends")]
    QueueFull,
    /// The client stopped before the message was acknowledged. It may or
    /// may not have been stored; a sync after logging in again tells.
    #[error("the client stopped before the send was acknowledged")]
    Stopped,
}

/// Why a request (join, leave, history, presence query) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The server answered with an error.
    #[error("refused by the server: {code}: {message}")]
    Rejected {
        /// The error code.
        code: ErrorCode,
        /// Detail for logs.
        message: String,
    },
    /// No answer within the request timeout.
    #[error("no reply within the request timeout")]
    Timeout,
    /// The connection was lost after the request was sent; it may or may
    /// not have taken effect. Requests are not resent automatically.
    #[error("the connection was lost before the reply")]
    Disconnected,
    /// The client has stopped.
    #[error("the client has stopped")]
    Stopped,
    /// The server answered with a frame of the wrong type (a protocol bug).
    #[error("unexpected reply: {0}")]
    UnexpectedReply(&'static str),
}

/// Why the client stopped for good (the reason of [`Event::Stopped`](crate::Event::Stopped)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    /// The app called [`Client::shutdown`](crate::Client::shutdown) or dropped the event stream.
    #[error("shut down by the application")]
    Shutdown,
    /// The server closed with a terminal code (4000–4999): 4000 unauthorized,
    /// 4001 session revoked (logout), 4002 banned, 4003 unsupported protocol,
    /// 4004 policy violation.
    #[error("closed by the server with terminal code {} ({}): {reason}", code.0, code.name())]
    Closed {
        /// The close code.
        code: CloseCode,
        /// The close reason the server gave.
        reason: String,
    },
    /// The WebSocket handshake was refused with HTTP 401: the token is
    /// missing, invalid, expired or revoked. Log in again.
    #[error("the token was refused (HTTP 401); log in again")]
    Unauthorized,
    /// The handshake was refused with HTTP 400 (bad parameter, a client bug)
    /// or 403 (origin not allowed, a deployment error).
    #[error("the handshake was refused with HTTP {status}")]
    HandshakeRefused {
        /// The HTTP status.
        status: u16,
    },
    /// Logging in with username and password failed for good (wrong
    /// credentials, or an unusable answer).
    #[error("login failed: {0}")]
    LoginFailed(String),
    /// The configured `max_attempts` consecutive reconnects all failed.
    #[error("gave up after {attempts} consecutive failed attempts; the last one: {last_error}")]
    TooManyAttempts {
        /// How many attempts were made.
        attempts: u32,
        /// Why the last attempt failed.
        last_error: String,
    },
    /// The cursor store could not be read at start.
    #[error("the cursor store failed: {0}")]
    CursorStore(String),
}

/// Why a [`ClientBuilder`](crate::ClientBuilder) cannot build a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No server URL was given.
    #[error("no server URL: set ClientBuilder::url")]
    NoUrl,
    /// No credentials were given.
    #[error("no credentials: set ClientBuilder::token or ClientBuilder::login")]
    NoAuth,
    /// The URL is not usable.
    #[error("bad URL {url:?}: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The TLS options are not usable (a PEM without a certificate, a key
    /// that does not match, no CA to trust).
    #[error("TLS options not usable: {0}")]
    Tls(String),
}
