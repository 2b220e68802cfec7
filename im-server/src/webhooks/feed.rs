//! [`WebhookFeed`]: the message feed posted as signed batches.

use std::time::Duration;

use async_trait::async_trait;
use im_protocol::{ConversationId, Message};

use super::Poster;
use crate::feed::{FeedError, FeedSink};

/// Posts each feed batch as
/// `{"type":"messages","conv":"g:12","messages":[{…message…}, …]}` —
/// consecutive ids of one conversation, ascending, in the protocol's
/// `message` shape. A 2xx answer takes the batch; anything else (or no
/// answer within the timeout) has it posted again later, so a receiver
/// must accept repeats: skip ids it has seen for that conversation.
#[derive(Debug, Clone)]
pub struct WebhookFeed {
    poster: Poster,
}

impl WebhookFeed {
    /// A feed posting to `url`, signed with `secret`, each post given up
    /// after `timeout`.
    ///
    /// # Panics
    ///
    /// If the HTTP client cannot be initialised (as `reqwest::Client::new`).
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>, timeout: Duration) -> Self {
        WebhookFeed { poster: Poster::new(url.into(), secret.into(), timeout) }
    }
}

#[derive(serde::Serialize)]
struct Batch<'a> {
    r#type: &'static str,
    conv: ConversationId,
    messages: &'a [Message],
}

#[async_trait]
impl FeedSink for WebhookFeed {
    async fn deliver(&self, conv: ConversationId, messages: &[Message]) -> Result<(), FeedError> {
        self.poster.post(&Batch { r#type: "messages", conv, messages }).await.map(drop).map_err(FeedError)
    }
}
