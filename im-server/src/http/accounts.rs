//! Accounts: register, login, logout, and looking users up.

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use im_protocol::{ErrorCode, UserId};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, Authed};
use crate::model::User;
use crate::state::AppState;

/// `POST /register` and `POST /login` bodies.
#[derive(Deserialize)]
pub(crate) struct Credentials {
    username: String,
    password: String,
}

/// A user as the API shows it: never the password hash.
#[derive(Debug, Serialize)]
pub(crate) struct UserView {
    id: UserId,
    username: String,
    created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView { id: u.id, username: u.username, created_at: u.created_at, display_name: u.display_name }
    }
}

/// `POST /register` → 201 user.
pub(crate) async fn register(
    State(app): State<AppState>,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let user = app.logic().register(&c.username, &c.password).await?;
    tracing::info!(user = %user.id, "user registered");
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// `POST /login` → 200 `{token, user_id, expires_at}`.
pub(crate) async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    ApiJson(c): ApiJson<Credentials>,
) -> Response {
    let from = Some(peer.ip());
    if let Some(wait) = app.logic().login_retry_after(&c.username, from).await {
        // Locked out: say how long, in the header and the body.
        let secs = wait.as_secs().max(1);
        let body = serde_json::json!({
            "code": ErrorCode::RateLimited,
            "message": format!("too many failed logins; retry in {secs} s"),
            "retry_after_ms": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        });
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], Json(body))
            .into_response();
        resp.extensions_mut().insert(ErrorCode::RateLimited);
        return resp;
    }
    // Checked just above: not again.
    match app.logic().login_counted(&c.username, &c.password, from).await {
        Ok(login) => Json(login).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /logout` → 204; the session's WebSockets are closed too.
pub(crate) async fn logout(State(app): State<AppState>, Authed(session): Authed) -> ApiResult<StatusCode> {
    app.logic().logout(&session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /me` → the signed-in user.
pub(crate) async fn me(State(app): State<AppState>, Authed(session): Authed) -> ApiResult<Json<UserView>> {
    Ok(Json(app.logic().user(session.user).await?.into()))
}

/// `GET /users/{id}` → a user.
pub(crate) async fn user(
    State(app): State<AppState>,
    Authed(_): Authed,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(app.logic().user(UserId(id)).await?.into()))
}

/// `GET /users/by-name/{username}` → a user.
pub(crate) async fn user_by_name(
    State(app): State<AppState>,
    Authed(_): Authed,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(app.logic().user_by_name(&name).await?.into()))
}
