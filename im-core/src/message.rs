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
}
