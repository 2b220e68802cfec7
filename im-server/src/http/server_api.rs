//! The server API, for the application's backend: under
//! `/api/v1/server/`, authenticated by an API key
//! ([`ServerConfig::server_api_keys`](crate::ServerConfig::server_api_keys))
//! instead of a user's token, acting for any user. With no key configured
//! every route answers 404, as if it did not exist.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use im_protocol::{ClientMsgId, ConversationId, ErrorCode, GroupId, Message, MessageId, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult};
use super::extract::{parse_conv, ApiJson, ApiPath, ApiQuery};
use super::messages::{HistoryBody, HistoryQuery};
use crate::logic::erasure::{ErasedMessages, Erasure};
use crate::logic::groups::GroupInfo;
use crate::logic::messages::Draft;
use crate::model::{Role, Room, User};
use crate::state::AppState;

/// A request that presented one of the configured API keys
/// (`Authorization: Bearer <key>`).
#[derive(Debug, Clone, Copy)]
pub struct ServerKey;

/// Whether `given` is one of `keys`, comparing SHA-256 digests in constant
/// time and looking at every key (neither the timing nor the position of a
/// match tells anything).
fn key_matches(given: &str, keys: &[String]) -> bool {
    let given = Sha256::digest(given.as_bytes());
    keys.iter().fold(false, |found, k| {
        let k = Sha256::digest(k.as_bytes());
        let diff = given.iter().zip(k.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found | (diff == 0)
    })
}

impl FromRequestParts<AppState> for ServerKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let keys = &app.config().server_api_keys;
        if keys.is_empty() {
            // Off: answered as any unknown path is.
            return Err(StatusCode::NOT_FOUND.into_response());
        }
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if given.is_empty() || !key_matches(given, keys) {
            return Err(
                ApiError::new(ErrorCode::Unauthorized, "a server API key is required").into_response()
            );
        }
        Ok(ServerKey)
    }
}

/// `POST /server/users` body: an application user by subject, or a
/// registration.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum NewUser {
    /// The user `~subject` (created if new).
    Subject {
        /// The application's user id.
        subject: String,
        /// A display name (set or changed).
        #[serde(default)]
        name: Option<String>,
    },
    /// An `im` account with a password.
    Account {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
}

/// `POST /server/users` → 200 (subject, existing or new) or 201 (registered).
pub(crate) async fn create_user(
    State(app): State<AppState>,
    _: ServerKey,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    match body {
        NewUser::Subject { subject, name } => {
            Ok((StatusCode::OK, Json(app.logic().user_for_subject(&subject, name.as_deref()).await?)))
        }
        NewUser::Account { username, password } => {
            let mut user = app.logic().register(&username, &password).await?;
            user.password_hash.clear();
            Ok((StatusCode::CREATED, Json(user)))
        }
    }
}

/// `GET /server/users/{id}` → the user.
pub(crate) async fn user(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<User>> {
    Ok(Json(app.logic().user(UserId(id)).await?))
}

/// `POST /server/groups` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewGroup {
    owner: UserId,
    name: String,
    #[serde(default)]
    members: Vec<UserId>,
}

/// `POST /server/groups` → 201 group info.
pub(crate) async fn create_group(
    State(app): State<AppState>,
    _: ServerKey,
    ApiJson(body): ApiJson<NewGroup>,
) -> ApiResult<(StatusCode, Json<GroupInfo>)> {
    app.logic().user(body.owner).await?;
    let info = app.logic().create_group(body.owner, &body.name, &body.members).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `POST /server/groups/{id}/members` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewMember {
    user_id: UserId,
    #[serde(default = "member")]
    role: Role,
}

fn member() -> Role {
    Role::Member
}

/// `POST /server/groups/{id}/members` → 204, acting as the group's owner.
pub(crate) async fn add_member(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<NewMember>,
) -> ApiResult<StatusCode> {
    let owner = app.logic().group_owner(GroupId(id)).await?;
    app.logic().add_member(owner, GroupId(id), body.user_id, body.role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /server/groups/{id}/members/{user_id}` → 204, acting as the owner.
pub(crate) async fn remove_member(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath((id, user)): ApiPath<(u64, u64)>,
) -> ApiResult<StatusCode> {
    let owner = app.logic().group_owner(GroupId(id)).await?;
    app.logic().remove_member(owner, GroupId(id), UserId(user)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /server/groups/{id}/owner` and `POST /groups/{id}/owner` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOwner {
    pub(crate) user_id: UserId,
}

/// `POST /server/groups/{id}/owner` → 204: member `user_id` owns the
/// group; the owner before becomes an admin.
pub(crate) async fn transfer_group(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<NewOwner>,
) -> ApiResult<StatusCode> {
    let owner = app.logic().group_owner(GroupId(id)).await?;
    app.logic().transfer_ownership(owner, GroupId(id), body.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /server/users/{id}` query: what happens to the user's messages
/// (required: an erasure cannot be undone).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EraseQuery {
    messages: Option<String>,
}

/// `DELETE /server/users/{id}?messages=keep|recall` → 200 with what the
/// erasure did (see `Logic::erase_user`).
pub(crate) async fn erase_user(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<EraseQuery>,
) -> ApiResult<Json<Erasure>> {
    let messages = match q.messages.as_deref() {
        Some("keep") => ErasedMessages::Keep,
        Some("recall") => ErasedMessages::Recall,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "messages: keep or recall (what happens to the user's messages must be stated)",
            ))
        }
    };
    Ok(Json(app.logic().erase_user(UserId(id), messages).await?))
}

/// `POST /server/rooms` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRoom {
    creator: UserId,
    name: String,
}

/// `POST /server/rooms` → 201 room.
pub(crate) async fn create_room(
    State(app): State<AppState>,
    _: ServerKey,
    ApiJson(body): ApiJson<NewRoom>,
) -> ApiResult<(StatusCode, Json<Room>)> {
    app.logic().user(body.creator).await?;
    Ok((StatusCode::CREATED, Json(app.logic().create_room(body.creator, &body.name).await?)))
}

/// `POST /server/messages` body: a message from `from`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewMessage {
    conv: ConversationId,
    from: UserId,
    cmid: ClientMsgId,
    body: String,
    #[serde(default)]
    mentions: Vec<UserId>,
    kind: Option<String>,
    content: Option<serde_json::Value>,
    reply_to: Option<MessageId>,
}

/// A stored message and whether it had been stored before.
#[derive(Serialize)]
pub(crate) struct Posted {
    message: Message,
    duplicate: bool,
}

/// `POST /server/messages` → 201 (stored) or 200 (a duplicate of
/// `(conv, from, cmid)`: the original, nothing stored).
pub(crate) async fn post_message(
    State(app): State<AppState>,
    _: ServerKey,
    ApiJson(b): ApiJson<NewMessage>,
) -> ApiResult<(StatusCode, Json<Posted>)> {
    // A direct chat only checks its other party: the sender must exist too.
    app.logic().user(b.from).await?;
    let draft = Draft {
        body: b.body,
        mentions: b.mentions,
        kind: b.kind,
        content: b.content,
        reply_to: b.reply_to,
        target: None,
    };
    let appended = app.logic().send(b.from, None, b.conv, b.cmid, draft).await?;
    let status = if appended.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(Posted { message: appended.message, duplicate: appended.duplicate })))
}

/// `GET /server/conversations/{conv}/messages?before=&limit=` → any conversation's history.
pub(crate) async fn history(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(conv): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<HistoryBody>> {
    let page = app.logic().history_page(parse_conv(&conv)?, q.before, q.limit).await?;
    Ok(Json(page.into()))
}

/// `POST /server/users/{id}/disconnect` → 204.
pub(crate) async fn disconnect(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<StatusCode> {
    app.logic().disconnect_user(UserId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /server/users/{id}/revoke-tokens` → 204: every token of the user
/// issued until now is refused on every node; their connections close.
pub(crate) async fn revoke_user_tokens(
    State(app): State<AppState>,
    _: ServerKey,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<StatusCode> {
    app.logic().revoke_all_tokens(UserId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /server/tokens/revoke` and `POST /server/sessions/disconnect`
/// body: the token naming a session.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    token: String,
}

/// `POST /server/tokens/revoke` → 204.
pub(crate) async fn revoke(
    State(app): State<AppState>,
    _: ServerKey,
    ApiJson(b): ApiJson<TokenBody>,
) -> ApiResult<StatusCode> {
    app.logic().revoke_token(&b.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /server/sessions/disconnect` → 204: the connections of the
/// token's session close with 3000 on every node; the token stays valid.
pub(crate) async fn disconnect_session(
    State(app): State<AppState>,
    _: ServerKey,
    ApiJson(b): ApiJson<TokenBody>,
) -> ApiResult<StatusCode> {
    app.logic().disconnect_session(&b.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::key_matches;

    #[test]
    fn keys_match_exactly() {
        let keys = vec!["first-key-0123456789".to_string(), "second-key-0123456789".to_string()];
        assert!(key_matches("second-key-0123456789", &keys));
        assert!(!key_matches("second-key-012345678", &keys));
        assert!(!key_matches("", &keys));
        assert!(!key_matches("x", &[]));
    }
}
