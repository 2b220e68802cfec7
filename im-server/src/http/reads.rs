//! Read state over HTTP: the inbox (every conversation with its unread
//! count), marking a conversation read, and the read state of one.

use axum::extract::State;
use axum::Json;
use im_protocol::{ConversationId, ErrorCode, InboxEntry, MessageId};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{parse_conv, ApiJson, ApiPath, ApiQuery, Authed};
use crate::state::AppState;

/// `GET /conversations` query.
#[derive(Deserialize)]
pub(crate) struct InboxQuery {
    after: Option<String>,
    limit: Option<u32>,
}

/// One page of the inbox.
#[derive(Serialize)]
pub(crate) struct InboxBody {
    /// Ascending conversation ids.
    conversations: Vec<InboxEntry>,
    /// More follow (ask again with `after` = the last `conv`).
    has_more: bool,
}

/// `POST /conversations/{conv}/read` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadBody {
    id: MessageId,
}

/// A user's read state in one conversation.
#[derive(Serialize)]
pub(crate) struct ReadState {
    /// The user's read id.
    read: MessageId,
    /// Each device's own report (WebSocket `read` frames), by device id.
    devices: Vec<DeviceReadBody>,
}

#[derive(Serialize)]
pub(crate) struct DeviceReadBody {
    device: String,
    read: MessageId,
}

/// `{shared}`: whether the user shows read and delivered ids to others.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiptsSetting {
    shared: bool,
}

/// `GET /conversations/{conv}/receipts` answer.
#[derive(Serialize)]
pub(crate) struct ReceiptsBody {
    /// Every member who shares receipts, by user id.
    receipts: Vec<im_protocol::Receipt>,
}

/// `GET /conversations/{conv}/receipts` → `{receipts}`.
pub(crate) async fn receipts(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(conv): ApiPath<String>,
) -> ApiResult<Json<ReceiptsBody>> {
    let conv = parse_conv(&conv)?;
    Ok(Json(ReceiptsBody { receipts: app.logic().receipt_list(s.user, conv).await? }))
}

/// `GET /me/receipts` → `{shared}`.
pub(crate) async fn receipts_setting(
    State(app): State<AppState>,
    Authed(s): Authed,
) -> ApiResult<Json<ReceiptsSetting>> {
    Ok(Json(ReceiptsSetting { shared: app.logic().receipts_shared(s.user).await? }))
}

/// `PUT /me/receipts {shared}` → `{shared}`.
pub(crate) async fn set_receipts_setting(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiJson(body): ApiJson<ReceiptsSetting>,
) -> ApiResult<Json<ReceiptsSetting>> {
    app.logic().set_receipts_shared(s.user, body.shared).await?;
    Ok(Json(body))
}

/// `PUT /conversations/{conv}/mute` body: until when (ms; absent or null: for good).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MuteBody {
    #[serde(default)]
    until: Option<u64>,
}

/// `PUT /conversations/{conv}/mute {until?}` → 204.
pub(crate) async fn mute(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(conv): ApiPath<String>,
    ApiJson(body): ApiJson<MuteBody>,
) -> ApiResult<axum::http::StatusCode> {
    let conv = parse_conv(&conv)?;
    if body.until == Some(0) {
        return Err(ApiError::new(ErrorCode::InvalidField, "until must be a time in ms (DELETE unmutes)"));
    }
    app.logic().mute(s.user, conv, body.until).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `DELETE /conversations/{conv}/mute` → 204.
pub(crate) async fn unmute(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(conv): ApiPath<String>,
) -> ApiResult<axum::http::StatusCode> {
    let conv = parse_conv(&conv)?;
    app.logic().mute(s.user, conv, Some(0)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `GET /conversations?after=&limit=` → `{conversations, has_more}`.
pub(crate) async fn inbox(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> ApiResult<Json<InboxBody>> {
    let after = q.after.as_deref().map(parse_conv).transpose()?;
    let page = app.logic().inbox(s.user, after, q.limit).await?;
    Ok(Json(InboxBody { conversations: page.entries, has_more: page.has_more }))
}

/// `POST /conversations/{conv}/read {id}` → the user's read state after it.
pub(crate) async fn mark(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(conv): ApiPath<String>,
    ApiJson(body): ApiJson<ReadBody>,
) -> ApiResult<Json<ReadState>> {
    let conv = parse_conv(&conv)?;
    app.logic().mark_read(s.user, None, None, conv, body.id).await?;
    state(&app, s.user, conv).await
}

/// `GET /conversations/{conv}/read` → `{read, devices}`.
pub(crate) async fn get(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(conv): ApiPath<String>,
) -> ApiResult<Json<ReadState>> {
    let conv = parse_conv(&conv)?;
    app.logic().check_access(s.user, conv).await?;
    state(&app, s.user, conv).await
}

async fn state(
    app: &AppState,
    user: im_protocol::UserId,
    conv: ConversationId,
) -> ApiResult<Json<ReadState>> {
    let (read, devices) = app.logic().read_state(user, conv).await?;
    let devices = devices.into_iter().map(|d| DeviceReadBody { device: d.device, read: d.read }).collect();
    Ok(Json(ReadState { read, devices }))
}
