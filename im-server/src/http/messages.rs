//! History: pages of a conversation's stored messages, newest first by page.

use axum::extract::State;
use axum::Json;
use im_protocol::{Message, MessageId};
use serde::{Deserialize, Serialize};

use super::error::ApiResult;
use super::extract::{parse_conv, ApiPath, ApiQuery, Authed};
use crate::logic::messages::HistoryPage;
use crate::state::AppState;

/// `GET /conversations/{conv}/messages` query.
#[derive(Deserialize)]
pub(crate) struct HistoryQuery {
    pub(crate) before: Option<MessageId>,
    pub(crate) limit: Option<u32>,
}

/// One page of history.
#[derive(Serialize)]
pub(crate) struct HistoryBody {
    /// Ascending ids.
    messages: Vec<Message>,
    /// Older messages exist (ask again with `before` = the first id).
    has_more: bool,
}

impl From<HistoryPage> for HistoryBody {
    fn from(page: HistoryPage) -> Self {
        HistoryBody { messages: page.messages, has_more: page.has_more }
    }
}

/// `GET /conversations/{conv}/messages?before=&limit=` → `{messages, has_more}`.
pub(crate) async fn history(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(conv): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<HistoryBody>> {
    let page = app.logic().history(s.user, parse_conv(&conv)?, q.before, q.limit).await?;
    Ok(Json(page.into()))
}
