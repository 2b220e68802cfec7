//! Rooms: open membership, joined and left freely.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use im_protocol::{ErrorCode, RoomId};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::logic::rooms::ROOM_LIST_MAX;
use crate::model::Room;
use crate::state::AppState;

/// `POST /rooms` body.
#[derive(Deserialize)]
pub(crate) struct NewRoom {
    name: String,
}

/// `GET /rooms` query: rooms with ids above `after`, at most `limit`.
#[derive(Deserialize)]
pub(crate) struct ListQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `POST /rooms` → 201 room; the creator has joined it.
pub(crate) async fn create(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiJson(body): ApiJson<NewRoom>,
) -> ApiResult<(StatusCode, Json<Room>)> {
    let room = app.logic().create_room(s.user, &body.name).await?;
    tracing::info!(room = %room.id, by = %s.user, "room created");
    Ok((StatusCode::CREATED, Json(room)))
}

/// `GET /rooms?after=&limit=` → a page of rooms in id order.
pub(crate) async fn list(
    State(app): State<AppState>,
    Authed(_): Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Room>>> {
    let limit = match q.limit {
        Some(0) => return Err(ApiError::new(ErrorCode::InvalidField, "limit must be at least 1")),
        Some(n) => n.min(ROOM_LIST_MAX),
        None => ROOM_LIST_MAX,
    };
    Ok(Json(app.logic().list_rooms(RoomId(q.after.unwrap_or(0)), limit).await?))
}

/// `GET /me/rooms` → ids of the rooms the caller has joined.
pub(crate) async fn mine(State(app): State<AppState>, Authed(s): Authed) -> ApiResult<Json<Vec<RoomId>>> {
    Ok(Json(app.logic().my_rooms(s.user).await?))
}

/// `POST /rooms/{id}/join` → 204 (idempotent).
pub(crate) async fn join(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<StatusCode> {
    app.logic().join_room(s.user, RoomId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /rooms/{id}/leave` → 204 (idempotent).
pub(crate) async fn leave(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<StatusCode> {
    app.logic().leave_room(s.user, RoomId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
