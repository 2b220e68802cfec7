//! Moderation: sanctions (mute, kick, ban and their lifting) in a group or
//! room, and a room's moderators.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use im_protocol::{ErrorCode, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{parse_conv, ApiJson, ApiPath, Authed};
use crate::logic::moderation::Sanctioning;
use crate::state::AppState;
use crate::store::Sanction;

/// `POST /conversations/{conv}/sanctions` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SanctionBody {
    user_id: UserId,
    /// `mute`, `unmute`, `kick`, `ban` or `unban`.
    action: String,
    /// For `mute`: how long (absent: until unmuted).
    #[serde(default)]
    duration_ms: Option<u64>,
}

/// A sanction as the API shows it.
#[derive(Serialize)]
pub(crate) struct SanctionOut {
    user_id: UserId,
    banned: bool,
    /// 0: not muted.
    muted_until: u64,
}

impl From<Sanction> for SanctionOut {
    fn from(s: Sanction) -> Self {
        SanctionOut { user_id: s.user, banned: s.banned, muted_until: s.muted_until }
    }
}

/// `GET /conversations/{conv}/sanctions` answer.
#[derive(Serialize)]
pub(crate) struct SanctionList {
    pub(crate) sanctions: Vec<SanctionOut>,
}

/// `POST /conversations/{conv}/sanctions {user_id, action, duration_ms?}` → 200 the user's sanction now.
pub(crate) async fn act(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(conv): ApiPath<String>,
    ApiJson(body): ApiJson<SanctionBody>,
) -> ApiResult<Json<SanctionOut>> {
    let conv = parse_conv(&conv)?;
    let action = body.action()?;
    Ok(Json(app.logic().sanction(s.user, conv, body.user_id, action).await?.into()))
}

impl SanctionBody {
    /// The user it names.
    pub(crate) fn user(&self) -> UserId {
        self.user_id
    }

    /// The action it asks for.
    pub(crate) fn action(&self) -> Result<Sanctioning, ApiError> {
        Ok(match (self.action.as_str(), self.duration_ms) {
            ("mute", d) => Sanctioning::Mute(d),
            (_, Some(_)) => {
                return Err(ApiError::new(ErrorCode::InvalidField, "duration_ms is only for mute"));
            }
            ("unmute", None) => Sanctioning::Unmute,
            ("kick", None) => Sanctioning::Kick,
            ("ban", None) => Sanctioning::Ban,
            ("unban", None) => Sanctioning::Unban,
            (other, None) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!("action {other:?}: expected mute, unmute, kick, ban or unban"),
                ));
            }
        })
    }
}

/// `GET /conversations/{conv}/sanctions` → the banned and muted users (moderators only).
pub(crate) async fn list(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(conv): ApiPath<String>,
) -> ApiResult<Json<SanctionList>> {
    let conv = parse_conv(&conv)?;
    let sanctions = app.logic().sanctions(s.user, conv).await?.into_iter().map(Into::into).collect();
    Ok(Json(SanctionList { sanctions }))
}

/// `GET /rooms/{id}/moderators` answer.
#[derive(Serialize)]
pub(crate) struct Moderators {
    pub(crate) moderators: Vec<UserId>,
}

/// `GET /rooms/{id}/moderators`.
pub(crate) async fn moderators(
    State(app): State<AppState>,
    Authed(_): Authed,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Moderators>> {
    Ok(Json(Moderators { moderators: app.logic().room_moderators(RoomId(id)).await? }))
}

/// `PUT /rooms/{id}/moderators/{user_id}` → 204 (the room's creator only).
pub(crate) async fn appoint(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath((id, user)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    app.logic().set_room_moderator(s.user, RoomId(id), UserId(user), true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /rooms/{id}/moderators/{user_id}` → 204 (the room's creator only).
pub(crate) async fn dismiss(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath((id, user)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    app.logic().set_room_moderator(s.user, RoomId(id), UserId(user), false).await?;
    Ok(StatusCode::NO_CONTENT)
}
