//! Gateway: the WebSocket handshake and the per-connection tasks.
//!
//! The handshake ([`ws_handler`]) refuses bad requests *before* the
//! upgrade: a foreign `Origin` (403), a missing or bad token (401), a bad
//! device id (400), a full or draining node (503). After the upgrade,
//! `connection` runs a reader (heartbeat timeout, rate limit, decoding)
//! and a writer (bounded queue, WebSocket pings) per socket, and
//! `frames` turns each decoded frame into a logic call.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use im_protocol::ErrorCode;

use crate::state::AppState;

mod connection;
mod frames;
pub(crate) mod ratelimit;

/// Bytes read from the socket at a time. tungstenite's default (128 KiB)
/// is zero-filled on the first read and kept for the connection's life: at
/// 10k idle connections that alone is 1.3 GB. A larger frame still reads
/// whole (the buffer grows to the frame's length).
const READ_BUFFER: usize = 2 * 1024;
/// Encoded frames buffered before a write reaches the socket; the writer
/// flushes every batch, so this only bounds how much one batch coalesces.
const WRITE_BUFFER: usize = 16 * 1024;

/// Handshake parameters from the query string (percent-decoded).
#[derive(Debug, Default, PartialEq, Eq, serde::Deserialize)]
struct Params {
    device: Option<String>,
    #[serde(rename = "v")]
    version: Option<String>,
}

fn parse_params(query: Option<&str>) -> Option<Params> {
    let uri: axum::http::Uri = format!("/?{}", query.unwrap_or("")).parse().ok()?;
    axum::extract::Query::<Params>::try_from_uri(&uri).ok().map(|q| q.0)
}

/// Whether neither an `Authorization: Bearer` header nor a `token` query
/// parameter carried the token (so it came from the cookie).
fn token_came_from_cookie(headers: &HeaderMap, query: Option<&str>) -> bool {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "));
    let in_query = query.unwrap_or("").split('&').any(|p| p.starts_with("token="));
    !bearer && !in_query
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

fn valid_device(d: &str) -> bool {
    (1..=64).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_graphic())
}

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message });
    (status, axum::Json(body)).into_response()
}

/// `GET /ws`: authenticates and upgrades to a WebSocket connection.
pub async fn ws_handler(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let cfg = app.config();
    if app.is_draining() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, "node is draining");
    }
    if let (Some(allowed), Some(origin)) = (&cfg.allowed_origins, headers.get(axum::http::header::ORIGIN)) {
        let ok = origin.to_str().map(|o| allowed.iter().any(|a| a == o)).unwrap_or(false);
        if !ok {
            return refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "origin not allowed");
        }
    }
    let Some(token) = crate::auth::token_from_request(&headers, query.as_deref()) else {
        return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "missing token");
    };
    // A browser sends cookies cross-site: a cookie-authenticated socket
    // from a page of another origin is refused even without an allow-list
    // (cross-site WebSocket hijacking).
    if cfg.allowed_origins.is_none() && token_came_from_cookie(&headers, query.as_deref()) {
        if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
            if !same_origin(origin.to_str().unwrap_or(""), &headers) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    "cross-origin cookie authentication",
                );
            }
        }
    }
    let session = match app.logic().authenticate(&token).await {
        Ok(s) => s,
        Err(e) => {
            let code = e.error_code();
            let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return refuse(status, code, "invalid token");
        }
    };
    let Some(params) = parse_params(query.as_deref()) else {
        return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, "malformed query string");
    };
    let device = match params.device {
        Some(d) if valid_device(&d) => d,
        Some(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidField,
                "device: 1 to 64 printable ASCII characters",
            )
        }
        None => format!("{:016x}", rand::random::<u64>()),
    };
    match app.logic().hook_connect(session.user, &device).await {
        crate::hooks::Verdict::Allow => {}
        crate::hooks::Verdict::Deny(reason) => {
            return refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden, &reason)
        }
        crate::hooks::Verdict::Unavailable(reason) => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, &reason)
        }
    }
    // Absent: version 1. Not a number: refused like any malformed
    // parameter. A number this server does not speak: closed with 4003.
    let version = match params.version.as_deref() {
        None => Some(1),
        Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) => {
            return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, "v: a protocol version number")
        }
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|v| (im_protocol::MIN_PROTOCOL_VERSION..=im_protocol::PROTOCOL_VERSION).contains(v)),
    };
    let Ok(permit) = app.connection_permits().clone().try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, "too many connections");
    };
    let max = cfg.limits.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
            // Split before the task's future is built: the WebSocket itself
            // (a couple of KiB) moves into the halves' shared allocation
            // instead of also being kept inside every connection's future.
            // The connection's future is returned as it is, not awaited in
            // a wrapper: a wrapper would hold its arguments a second time.
            let (sink, stream) = socket.split();
            connection::run(app, sink, stream, session, device, version, permit)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_handshake_params() {
        let p = parse_params(Some("token=abc&device=phone-1&v=1")).unwrap();
        assert_eq!(p, Params { device: Some("phone-1".into()), version: Some("1".into()) });
        assert_eq!(parse_params(None), Some(Params::default()));
        let decoded = parse_params(Some("device=bad%20id")).unwrap();
        assert_eq!(decoded.device.as_deref(), Some("bad id"));
        assert!(valid_device("laptop"));
        assert!(!valid_device(""));
        assert!(!valid_device("has space"));
        assert!(!valid_device(&"x".repeat(65)));
    }

    #[test]
    fn cookie_tokens_require_a_same_origin_page() {
        let mut h = HeaderMap::new();
        h.insert("host", "chat.example:8080".parse().unwrap());
        h.insert("cookie", "im_token=t".parse().unwrap());
        assert!(token_came_from_cookie(&h, Some("device=x")));
        assert!(!token_came_from_cookie(&h, Some("token=t")));
        assert!(same_origin("https://chat.example:8080", &h));
        assert!(!same_origin("https://evil.example", &h));
        h.insert("authorization", "Bearer t".parse().unwrap());
        assert!(!token_came_from_cookie(&h, None));
    }
}
