//! The dispatcher: which message node a client should open its WebSocket to.
//!
//! Clients ask `GET /dispatch` before **every** (re)connect instead of
//! remembering a node, so a drained or dead node stops receiving clients as
//! soon as it stops being offered. The answer is the least-loaded live node
//! of the [node registry](crate::dispatch) that is not draining — any node
//! can answer for the whole cluster, a draining one included. With no node
//! to offer, the answer is 503 `unavailable` and the client retries.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use im_protocol::ErrorCode;
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use crate::config::ServerConfig;
use crate::state::AppState;

/// How long `GET /dispatch` waits for the node registry: a client asks
/// before every connect, so while the registry's store does not answer
/// (Redis away or cut off) it gets a quick 503 `unavailable` and retries,
/// instead of waiting for the store's own timeouts.
const REGISTRY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// The dispatcher's answer.
#[derive(Debug, Serialize)]
pub(crate) struct Dispatch {
    /// The WebSocket URL to connect to.
    url: String,
    /// The node behind it.
    node: String,
}

/// `GET /dispatch` (no auth) → `{url, node}`.
pub(crate) async fn dispatch(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Dispatch>> {
    let cfg = app.config();
    let Ok(nodes) = tokio::time::timeout(REGISTRY_DEADLINE, app.registry().live_nodes()).await else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the node registry does not answer; retry shortly",
        ));
    };
    let mut nodes = nodes.map_err(crate::error::Error::from)?;
    // This node knows it drains before the registry does.
    if app.is_draining() {
        nodes.retain(|n| n.node != cfg.node_name);
    }
    let Some(chosen) = crate::dispatch::pick(&nodes) else {
        return Err(ApiError::new(ErrorCode::Unavailable, "no node available; retry shortly"));
    };
    let url = match &chosen.ws_url {
        Some(url) => url.clone(),
        // Only this node can be reached the way the client reached us.
        None if chosen.node == cfg.node_name => local_ws_url(cfg, &headers, app.serves_tls())?,
        None => return Err(ApiError::new(ErrorCode::Unavailable, "node has no public URL configured")),
    };
    Ok(Json(Dispatch { url, node: chosen.node.clone() }))
}

/// This node's WebSocket URL: [`ServerConfig::public_ws_url`] when set,
/// else `ws://<Host>/ws` from the request (`wss://` when this node
/// terminates TLS, or when a proxy says the request came over TLS with
/// `X-Forwarded-Proto: https`).
fn local_ws_url(cfg: &ServerConfig, headers: &HeaderMap, serves_tls: bool) -> ApiResult<String> {
    if let Some(url) = &cfg.public_ws_url {
        return Ok(url.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| valid_host(h))
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidField, "missing or invalid Host header"))?;
    let tls = serves_tls
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let scheme = if tls { "wss" } else { "ws" };
    Ok(format!("{scheme}://{host}/ws"))
}

/// A `host[:port]` (name, IPv4 or bracketed IPv6) and nothing else, so the
/// answer is always a well-formed URL.
fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(host: Option<&str>, proto: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", HeaderValue::from_str(p).unwrap());
        }
        h
    }

    #[test]
    fn url_from_config_or_host() {
        let mut cfg = ServerConfig::default();
        assert_eq!(
            local_ws_url(&cfg, &headers(Some("127.0.0.1:8080"), None), false).unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(local_ws_url(&cfg, &headers(Some("[::1]:9"), None), false).unwrap(), "ws://[::1]:9/ws");
        assert_eq!(
            local_ws_url(&cfg, &headers(Some("chat.example"), Some("https")), false).unwrap(),
            "wss://chat.example/ws"
        );
        assert_eq!(
            local_ws_url(&cfg, &headers(Some("127.0.0.1:8443"), None), true).unwrap(),
            "wss://127.0.0.1:8443/ws",
            "a node that terminates TLS hands out wss://"
        );
        for bad in [None, Some(""), Some("evil.example/path"), Some("a b"), Some("x@y")] {
            let err = local_ws_url(&cfg, &headers(bad, None), false).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidField, "{bad:?}");
        }
        cfg.public_ws_url = Some("wss://im.example/ws".into());
        assert_eq!(local_ws_url(&cfg, &headers(None, None), false).unwrap(), "wss://im.example/ws");
    }
}
