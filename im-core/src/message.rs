//! A stored chat message as it travels to clients.

use serde::{Deserialize, Serialize};

use crate::ids::{ClientMsgId, ConversationId, MessageId, UserId};

/// One stored message.
///
/// `(conv, id)` identifies it; `id` orders it within `conv`. `ts` is the
/// server's wall clock at storage time in milliseconds since the Unix epoch,
/// for display only — never for ordering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The conversation.
    pub conv: ConversationId,
    /// Position in the conversation, assigned by the server (1, 2, 3, …).
    pub id: MessageId,
    /// The sender.
    pub from: UserId,
    /// The sender's client message id (idempotency key).
    pub cmid: ClientMsgId,
    /// The content, UTF-8 text (apps may put JSON in it).
    pub body: String,
    /// Server time of storage, ms since the Unix epoch (display only).
    pub ts: u64,
    /// Users the message mentions (absent on the wire when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<UserId>,
    /// The kind, when not plain text (see [`crate::content`]); absent: `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The content object of a kind other than text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
    /// The earlier message of the same conversation this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
}

impl Message {
    /// The kind: [`content::TEXT`](crate::content::TEXT) when absent.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or(crate::content::TEXT)
    }

    /// The typed content (checked as the server checked it on sending).
    pub fn typed_content(&self) -> Result<crate::content::Content, crate::content::ContentError> {
        crate::content::Content::from_parts(self.kind(), self.content.as_ref())
    }
}
