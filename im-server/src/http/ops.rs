//! Operations endpoints: metrics for Prometheus, health for load balancers.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use im_protocol::ErrorCode;

use super::error::ApiError;
use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;

/// `GET /metrics` → every metric in the OpenMetrics text format.
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics().render()).into_response()
}

/// `POST /admin/drain` (bearer = the configured admin token) → 202: the
/// node starts draining (see [`AppState::start_drain`]). 404 when no admin
/// token is configured, 401 for a wrong one.
pub(crate) async fn drain(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let Some(expected) = app.config().admin_token.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return ApiError::new(ErrorCode::Unauthorized, "admin token required").into_response();
    }
    app.start_drain();
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"draining": true}))).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /openapi.json` → the OpenAPI 3 description of every route
/// (`docs/openapi.json`, embedded at build time).
pub(crate) async fn openapi() -> Response {
    let spec = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/openapi.json"));
    ([(axum::http::header::CONTENT_TYPE, "application/json")], spec).into_response()
}

/// `GET /healthz` → 200 `ok`, or 503 `unavailable` while the node drains or
/// shuts down, so a load balancer stops sending it new clients.
pub(crate) async fn healthz(State(app): State<AppState>) -> Response {
    if app.is_draining() {
        return ApiError::new(ErrorCode::Unavailable, "draining").into_response();
    }
    (StatusCode::OK, "ok").into_response()
}
