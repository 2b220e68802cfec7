//! Groups: managed, capped membership.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use im_protocol::{GroupId, UserId};
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, Authed};
use crate::logic::groups::GroupInfo;
use crate::model::{Group, Role};
use crate::state::AppState;

/// `POST /groups` body.
#[derive(Deserialize)]
pub(crate) struct NewGroup {
    name: String,
    #[serde(default)]
    members: Vec<UserId>,
}

/// `POST /groups/{id}/members` body.
#[derive(Deserialize)]
pub(crate) struct NewMember {
    user_id: UserId,
    #[serde(default = "member")]
    role: Role,
}

fn member() -> Role {
    Role::Member
}

/// `POST /groups` → 201 group info; the caller owns the group.
pub(crate) async fn create(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiJson(body): ApiJson<NewGroup>,
) -> ApiResult<(StatusCode, Json<GroupInfo>)> {
    let info = app.logic().create_group(s.user, &body.name, &body.members).await?;
    tracing::info!(group = %info.group.id, owner = %s.user, "group created");
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /groups` → the caller's groups.
pub(crate) async fn mine(State(app): State<AppState>, Authed(s): Authed) -> ApiResult<Json<Vec<Group>>> {
    Ok(Json(app.logic().my_groups(s.user).await?))
}

/// `GET /groups/{id}` → group info, for members.
pub(crate) async fn info(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<GroupInfo>> {
    Ok(Json(app.logic().group_info(s.user, GroupId(id)).await?))
}

/// `POST /groups/{id}/members` → 204 (adds, or changes a role).
pub(crate) async fn add_member(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<NewMember>,
) -> ApiResult<StatusCode> {
    app.logic().add_member(s.user, GroupId(id), body.user_id, body.role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /groups/{id}/members/{user_id}` → 204 (removes, or leaves when
/// `user_id` is the caller).
pub(crate) async fn remove_member(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath((id, user)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    app.logic().remove_member(s.user, GroupId(id), UserId(user)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /groups/{id}/owner` → 204: the owner hands the group to member
/// `user_id` and becomes an admin.
pub(crate) async fn transfer(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<super::server_api::NewOwner>,
) -> ApiResult<StatusCode> {
    app.logic().transfer_ownership(s.user, GroupId(id), body.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
