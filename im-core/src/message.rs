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
    /// For an event (`reaction`, `edit`, `recall`; see [`crate::events`]):
    /// the message of this conversation it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<MessageId>,
    /// The newest edit applied to this message (the edit event's id);
    /// absent when never edited. `body`, `content` and `mentions` are the
    /// edited ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<MessageId>,
    /// The recall event that emptied this message: it is a tombstone with
    /// no body, content, mentions or reactions left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalled: Option<MessageId>,
    /// The reactions on this message now, in the order their emojis were
    /// first used (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<crate::events::Reaction>,
}

impl Message {
    /// A plain text message with no optional field set.
    pub fn new(
        conv: ConversationId,
        id: MessageId,
        from: UserId,
        cmid: ClientMsgId,
        body: impl Into<String>,
        ts: u64,
    ) -> Self {
        Message {
            conv,
            id,
            from,
            cmid,
            body: body.into(),
            ts,
            mentions: Vec::new(),
            kind: None,
            content: None,
            reply_to: None,
            target: None,
            edited: None,
            recalled: None,
            reactions: Vec::new(),
        }
    }

    /// Whether this message was recalled (a tombstone).
    pub fn is_recalled(&self) -> bool {
        self.recalled.is_some()
    }

    /// Whether this message is an event (`reaction`, `edit`, `recall`,
    /// `system`) rather than something said; events do not count as unread.
    pub fn is_event(&self) -> bool {
        crate::events::is_event_kind(self.kind())
    }

    /// The kind: [`content::TEXT`](crate::content::TEXT) when absent.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or(crate::content::TEXT)
    }

    /// The typed content (checked as the server checked it on sending).
    pub fn typed_content(&self) -> Result<crate::content::Content, crate::content::ContentError> {
        crate::content::Content::from_parts(self.kind(), self.content.as_ref())
    }
}
