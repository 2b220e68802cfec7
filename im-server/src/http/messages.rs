//! History: pages of a conversation's stored messages, newest first by page.

use axum::extract::State;
use axum::Json;
use im_core::{ConversationId, ErrorCode, Message, MessageId};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery, Authed};
use crate::state::AppState;

/// `GET /conversations/{conv}/messages` query.
#[derive(Deserialize)]
pub(crate) struct HistoryQuery {
    before: Option<MessageId>,
    limit: Option<u32>,
}

/// One page of history.
#[derive(Serialize)]
pub(crate) struct HistoryBody {
    /// Ascending ids.
    messages: Vec<Message>,
    /// Older messages exist (ask again with `before` = the first id).
    has_more: bool,
}

/// `GET /conversations/{conv}/messages?before=&limit=` → `{messages, has_more}`.
pub(crate) async fn history(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(conv): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<HistoryBody>> {
    let conv: ConversationId = conv.parse().map_err(|e: im_core::ids::ParseConversationIdError| {
        ApiError::new(ErrorCode::InvalidField, e.to_string())
    })?;
    let page = app.logic().history(s.user, conv, q.before, q.limit).await?;
    Ok(Json(HistoryBody { messages: page.messages, has_more: page.has_more }))
}
