//! The HTTP face of [`crate::error::Error`]: a JSON body with the code's status.
//!
//! Every failure of the business API — from the logic, an extractor or the
//! router's limits — answers
//!
//! ```json
//! {"code": "not_member", "message": "not a member of this group"}
//! ```
//!
//! with the status [`ErrorCode::http_status`] names, so a client branches on
//! `code` and shows `message` to a developer, never to an end user.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use im_protocol::ErrorCode;
use serde::Serialize;

use crate::error::Error;

/// An error answered by the business API (wraps [`crate::error::Error`]).
///
/// Handlers return `Result<_, ApiError>` and use `?` on [`crate::logic::Logic`]
/// calls. The response carries the [`ErrorCode`] as an extension, so the
/// API's middleware counts and logs each failure once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub Error);

/// The result of a business API handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with `code` and a human-readable `message` (no secrets).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(Error::new(code, message))
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ApiError {}

/// The wire form of an error body.
#[derive(Serialize)]
struct Body<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(Body { code, message: &self.0.message })).into_response();
        resp.extensions_mut().insert(code);
        resp
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    #[tokio::test]
    async fn renders_code_message_and_status() {
        let resp = ApiError::new(ErrorCode::GroupFull, "full").into_response();
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        assert_eq!(resp.extensions().get::<ErrorCode>(), Some(&ErrorCode::GroupFull));
        assert_eq!(
            resp.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let body = to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"code":"group_full","message":"full"}"#);
    }

    #[test]
    fn every_code_has_a_valid_status() {
        for &code in ErrorCode::ALL {
            let resp = ApiError::new(code, "x").into_response();
            assert_eq!(resp.status().as_u16(), code.http_status(), "{code}");
        }
    }
}
