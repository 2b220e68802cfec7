//! Contacts and blocks of the caller.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use im_protocol::{ContactState, UserId};
use serde::Serialize;

use super::error::ApiResult;
use super::extract::{ApiPath, Authed};
use crate::logic::contacts::ContactEntry;
use crate::state::AppState;

/// `GET /contacts` answer.
#[derive(Serialize)]
pub(crate) struct ContactList {
    pub(crate) contacts: Vec<ContactEntry>,
}

/// `POST /contacts/{user_id}` answer: the relation now.
#[derive(Serialize)]
pub(crate) struct ContactOut {
    user_id: UserId,
    state: ContactState,
}

/// `GET /blocks` answer.
#[derive(Serialize)]
pub(crate) struct BlockList {
    pub(crate) blocks: Vec<UserId>,
}

/// `GET /contacts` → the caller's contacts and requests (accepted ones with presence).
pub(crate) async fn list(State(app): State<AppState>, Authed(s): Authed) -> ApiResult<Json<ContactList>> {
    Ok(Json(ContactList { contacts: app.logic().contact_list(s.user).await? }))
}

/// `POST /contacts/{user_id}` → asks the user (or accepts their request).
pub(crate) async fn request(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(user): ApiPath<u64>,
) -> ApiResult<Json<ContactOut>> {
    let state = app.logic().request_contact(s.user, UserId(user)).await?;
    Ok(Json(ContactOut { user_id: UserId(user), state }))
}

/// `DELETE /contacts/{user_id}` → 204: declines, cancels or removes.
pub(crate) async fn remove(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(user): ApiPath<u64>,
) -> ApiResult<StatusCode> {
    app.logic().remove_contact(s.user, UserId(user)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /blocks` → the users the caller blocks.
pub(crate) async fn blocks(State(app): State<AppState>, Authed(s): Authed) -> ApiResult<Json<BlockList>> {
    Ok(Json(BlockList { blocks: app.logic().blocks_of(s.user).await? }))
}

/// `PUT /blocks/{user_id}` → 204.
pub(crate) async fn block(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(user): ApiPath<u64>,
) -> ApiResult<StatusCode> {
    app.logic().block(s.user, UserId(user)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /blocks/{user_id}` → 204.
pub(crate) async fn unblock(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(user): ApiPath<u64>,
) -> ApiResult<StatusCode> {
    app.logic().unblock(s.user, UserId(user)).await?;
    Ok(StatusCode::NO_CONTENT)
}
