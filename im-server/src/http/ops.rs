//! Operations endpoints: metrics for Prometheus, health for load balancers.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use im_core::ErrorCode;

use super::error::ApiError;
use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;

/// `GET /metrics` → every metric in the OpenMetrics text format.
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics().render()).into_response()
}

/// `GET /healthz` → 200 `ok`, or 503 `unavailable` while the node drains or
/// shuts down, so a load balancer stops sending it new clients.
pub(crate) async fn healthz(State(app): State<AppState>) -> Response {
    if app.is_draining() {
        return ApiError::new(ErrorCode::Unavailable, "draining").into_response();
    }
    (StatusCode::OK, "ok").into_response()
}
