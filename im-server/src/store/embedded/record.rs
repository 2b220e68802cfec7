//! How a message is stored: its value in the `messages` table and in the
//! message log, with short keys, optional ones left out when empty.

use im_protocol::{ClientMsgId, ConversationId, Message, MessageId, UserId};
use serde::{Deserialize, Serialize};

use super::DbError;

/// A message's stored value; `conv` and `id` are its key. Optional keys
/// are left out when empty, so values written before they existed decode
/// unchanged and the message log's record format stays the same.
#[derive(Serialize)]
pub(super) struct MsgOut<'a> {
    pub(super) f: u64,
    pub(super) c: &'a str,
    pub(super) b: &'a str,
    pub(super) t: u64,
    #[serde(skip_serializing_if = "<[UserId]>::is_empty")]
    pub(super) m: &'a [UserId],
    /// Kind, when not text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) k: Option<&'a str>,
    /// Content object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) x: Option<&'a serde_json::Value>,
    /// Reply target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) r: Option<u64>,
    /// Event target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) g: Option<u64>,
    /// Newest edit applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) e: Option<u64>,
    /// The recall that emptied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) v: Option<u64>,
    /// Reactions.
    #[serde(skip_serializing_if = "<[im_protocol::events::Reaction]>::is_empty")]
    pub(super) a: &'a [im_protocol::events::Reaction],
    /// Countable messages up to this one, when not the id (a conversation
    /// with events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) n: Option<u64>,
}

/// A stored message's value, read back.
#[derive(Deserialize)]
pub(super) struct MsgIn {
    pub(super) f: u64,
    pub(super) c: ClientMsgId,
    pub(super) b: String,
    pub(super) t: u64,
    /// Mentions (absent in values stored before they existed, and when none).
    #[serde(default)]
    pub(super) m: Vec<UserId>,
    #[serde(default)]
    pub(super) k: Option<String>,
    #[serde(default)]
    pub(super) x: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) r: Option<u64>,
    #[serde(default)]
    pub(super) g: Option<u64>,
    #[serde(default)]
    pub(super) e: Option<u64>,
    #[serde(default)]
    pub(super) v: Option<u64>,
    #[serde(default)]
    pub(super) a: Vec<im_protocol::events::Reaction>,
    #[serde(default)]
    pub(super) n: Option<u64>,
}

/// The stored value of `m`, with `n` countable messages up to it.
pub(super) fn encode_msg(m: &Message, n: u64) -> Result<Vec<u8>, DbError> {
    Ok(serde_json::to_vec(&MsgOut {
        f: m.from.0,
        c: m.cmid.as_str(),
        b: &m.body,
        t: m.ts,
        m: &m.mentions,
        k: m.kind.as_deref(),
        x: m.content.as_ref(),
        r: m.reply_to,
        g: m.target,
        e: m.edited,
        v: m.recalled,
        a: &m.reactions,
        n: (n != m.id).then_some(n),
    })?)
}

/// A stored message and the countable messages up to it.
pub(super) fn decode_counted(
    conv: ConversationId,
    id: MessageId,
    bytes: &[u8],
) -> Result<(Message, u64), DbError> {
    let m: MsgIn = serde_json::from_slice(bytes)?;
    let n = m.n.unwrap_or(id);
    let message = Message {
        mentions: m.m,
        kind: m.k,
        content: m.x,
        reply_to: m.r,
        target: m.g,
        edited: m.e,
        recalled: m.v,
        reactions: m.a,
        ..Message::new(conv, id, UserId(m.f), m.c, m.b, m.t)
    };
    Ok((message, n))
}

/// A stored message.
pub(super) fn decode_msg(conv: ConversationId, id: MessageId, bytes: &[u8]) -> Result<Message, DbError> {
    decode_counted(conv, id, bytes).map(|(m, _)| m)
}
