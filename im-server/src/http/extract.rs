//! Extractors of the business API: the signed-in session and request inputs
//! (JSON body, path, query) whose failures answer our JSON error body
//! instead of axum's plain-text rejections.

use std::error::Error as StdError;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Json, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use im_protocol::ErrorCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::{token_from_request, AuthError};
use crate::model::Session;
use crate::state::AppState;

/// Longest rejection detail echoed to the client (the detail may quote the
/// client's own input back, so it is bounded).
const MAX_DETAIL: usize = 300;

/// The live session of the request's token.
///
/// The token is read by [`crate::auth::token_from_request`] (`Authorization:
/// Bearer`, else the `im_token` cookie, else the `token` query parameter) and
/// checked by [`crate::logic::Logic::authenticate`]. A missing, malformed,
/// expired or revoked token answers 401 `unauthorized`; a session store that
/// cannot be reached answers 503 `unavailable`.
///
/// Put it first among a handler's arguments so an anonymous request is
/// refused before its input is examined.
#[derive(Debug, Clone)]
pub struct Authed(pub Session);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = token_from_request(&parts.headers, parts.uri.query()) else {
            return Err(auth_error(&AuthError::Missing));
        };
        match app.logic().authenticate(&token).await {
            Ok(session) => Ok(Authed(session)),
            Err(e) => Err(auth_error(&e)),
        }
    }
}

fn auth_error(e: &AuthError) -> ApiError {
    let message = match e {
        // The back-end detail stays in the server's logs.
        AuthError::Backend(detail) => {
            tracing::warn!(%detail, "authentication back-end failed");
            "sessions are unavailable, retry later".to_owned()
        }
        AuthError::Missing => {
            "no token: send `Authorization: Bearer <token>`, the `im_token` cookie or `?token=`".to_owned()
        }
        other => other.to_string(),
    };
    ApiError::new(e.error_code(), message)
}

/// A JSON request body; failures answer JSON errors.
///
/// - not JSON, or no `Content-Type: application/json` → 400 `bad_frame`;
/// - valid JSON of the wrong shape (missing field, wrong type) → 400 `invalid_field`;
/// - larger than the body limit ([`super::MAX_BODY_BYTES`]) → 413 `body_too_large`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(r: &JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            ApiError::new(ErrorCode::InvalidField, detail(&format!("invalid request body: {}", inner(e))))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::BadFrame, "expected a JSON body with `Content-Type: application/json`")
        }
        _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is over {} bytes", super::MAX_BODY_BYTES),
        ),
        // The parser's recursion limit: the body may be valid JSON, only too deep.
        JsonRejection::JsonSyntaxError(e) if im_protocol::codec::is_depth_limit(&inner(e)) => ApiError::new(
            ErrorCode::BadFrame,
            format!("the request body nests JSON deeper than {} levels", im_protocol::codec::MAX_JSON_DEPTH),
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::new(ErrorCode::BadFrame, detail(&format!("the request body is not JSON: {}", inner(e))))
        }
        _ => ApiError::new(ErrorCode::BadFrame, "could not read the request body"),
    }
}

/// Path parameters; a parameter that does not parse (e.g. `/groups/abc`)
/// answers 400 `invalid_field`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(r @ PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::new(ErrorCode::InvalidField, detail(&r.body_text())))
            }
            Err(r) => {
                // A routing bug, not a client mistake.
                tracing::error!(rejection = %r.body_text(), "path parameters missing");
                Err(ApiError::new(ErrorCode::Internal, "internal error"))
            }
        }
    }
}

/// Query parameters; a parameter that does not parse (e.g. `?limit=x`)
/// answers 400 `invalid_field`. Unknown parameters (such as `token`) are
/// ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::new(ErrorCode::InvalidField, detail(&format!("invalid query: {}", inner(&e)))))
            }
            Err(r) => Err(ApiError::new(ErrorCode::InvalidField, detail(&r.body_text()))),
        }
    }
}

/// The cause behind an axum rejection, without axum's generic prefix.
fn inner(e: &dyn StdError) -> String {
    e.source().map_or_else(|| e.to_string(), ToString::to_string)
}

/// `text` cut to at most [`MAX_DETAIL`] bytes on a character boundary.
fn detail(text: &str) -> String {
    if text.len() <= MAX_DETAIL {
        return text.to_owned();
    }
    let mut end = MAX_DETAIL;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A conversation id from a path segment; a malformed one answers 400
/// `invalid_field`.
pub(crate) fn parse_conv(s: &str) -> Result<im_protocol::ConversationId, ApiError> {
    s.parse().map_err(|e: im_protocol::ids::ParseConversationIdError| {
        ApiError::new(ErrorCode::InvalidField, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_is_bounded_on_char_boundaries() {
        assert_eq!(detail("short"), "short");
        let long = "é".repeat(MAX_DETAIL);
        let cut = detail(&long);
        assert!(cut.len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
