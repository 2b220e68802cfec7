//! The server API's part for relations and moderation: the application's
//! backend makes and ends contacts, blocks for a user, and moderates any
//! group or room with its highest rank (the group's owner, the room's
//! creator). Same key and rules as [`super::server_api`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use im_protocol::{RoomId, UserId};

use super::contacts::{BlockList, ContactList};
use super::error::ApiResult;
use super::extract::{parse_conv, ApiJson, ApiPath};
use super::moderation::{Moderators, SanctionBody, SanctionList, SanctionOut};
use super::server_api::ServerKey;
use crate::state::AppState;

/// `GET /server/users/{id}/contacts` → the user's contacts and requests.
pub(crate) async fn contacts(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<ContactList>> {
    let user = app.logic().user(UserId(id)).await?.id;
    Ok(Json(ContactList { contacts: app.logic().contact_list(user).await? }))
}

/// `PUT /server/users/{id}/contacts/{other}` → 204: the two are contacts
/// now (no request; a block either way refuses it).
pub(crate) async fn befriend(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath((id, other)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    app.logic().befriend(UserId(id), UserId(other)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /server/users/{id}/contacts/{other}` → 204: any relation between
/// the two ends (contact or request).
pub(crate) async fn unfriend(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath((id, other)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    let user = app.logic().user(UserId(id)).await?.id;
    app.logic().remove_contact(user, UserId(other)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /server/users/{id}/blocks` → the users the user blocks.
pub(crate) async fn blocks(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<BlockList>> {
    let user = app.logic().user(UserId(id)).await?.id;
    Ok(Json(BlockList { blocks: app.logic().blocks_of(user).await? }))
}

/// `PUT /server/users/{id}/blocks/{other}` → 204: the user blocks `other`.
pub(crate) async fn block(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath((id, other)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    let user = app.logic().user(UserId(id)).await?.id;
    app.logic().block(user, UserId(other)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /server/users/{id}/blocks/{other}` → 204: the block is lifted.
pub(crate) async fn unblock(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath((id, other)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    let user = app.logic().user(UserId(id)).await?.id;
    app.logic().unblock(user, UserId(other)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /server/conversations/{conv}/sanctions` → 200 the user's sanction
/// now, done with the conversation's highest rank.
pub(crate) async fn sanction(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(conv): ApiPath<String>,
    ApiJson(body): ApiJson<SanctionBody>,
) -> ApiResult<Json<SanctionOut>> {
    let conv = parse_conv(&conv)?;
    let action = body.action()?;
    let chief = app.logic().chief_moderator(conv).await?;
    Ok(Json(app.logic().sanction(chief, conv, body.user(), action).await?.into()))
}

/// `GET /server/conversations/{conv}/sanctions` → the banned and muted users.
pub(crate) async fn sanctions(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(conv): ApiPath<String>,
) -> ApiResult<Json<SanctionList>> {
    let conv = parse_conv(&conv)?;
    let chief = app.logic().chief_moderator(conv).await?;
    let sanctions = app.logic().sanctions(chief, conv).await?.into_iter().map(Into::into).collect();
    Ok(Json(SanctionList { sanctions }))
}

/// `PUT /server/rooms/{id}/moderators/{user_id}` → 204, as the room's creator.
pub(crate) async fn appoint(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath((id, user)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    set_moderator(app, id, user, true).await
}

/// `DELETE /server/rooms/{id}/moderators/{user_id}` → 204, as the room's creator.
pub(crate) async fn dismiss(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath((id, user)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    set_moderator(app, id, user, false).await
}

async fn set_moderator(app: AppState, room: u64, user: u64, on: bool) -> ApiResult<StatusCode> {
    let conv = im_protocol::ConversationId::Room(RoomId(room));
    let creator = app.logic().chief_moderator(conv).await?;
    app.logic().set_room_moderator(creator, RoomId(room), UserId(user), on).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /server/rooms/{id}/moderators`.
pub(crate) async fn moderators(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Moderators>> {
    Ok(Json(Moderators { moderators: app.logic().room_moderators(RoomId(id)).await? }))
}
