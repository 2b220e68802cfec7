//! [`Draft`]: a message to send — text, or another kind of content, maybe
//! replying to an earlier message and mentioning users.

use im_core::{ClientFrame, ClientMsgId, Content, ConversationId, Message, MessageId, RequestId, UserId};

/// A message to send with [`Client::send_draft`](crate::Client::send_draft).
///
/// ```
/// use im_client::Draft;
/// use im_client::core::content::{Content, Location};
/// use im_client::UserId;
///
/// let plain = Draft::text("Lunch at noon?");
/// let pin = Draft::content(Content::Location(Location { lat: 52.52, lon: 13.40, name: None }), "📍 Berlin")
///     .reply_to(17)
///     .mention(&[UserId(5)]);
/// # let _ = (plain, pin);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub(crate) body: String,
    pub(crate) content: Content,
    pub(crate) reply_to: Option<MessageId>,
    pub(crate) mentions: Vec<UserId>,
}

impl Draft {
    /// Plain text.
    pub fn text(body: impl Into<String>) -> Self {
        Draft { body: body.into(), content: Content::Text, reply_to: None, mentions: Vec::new() }
    }

    /// Content of another kind, with `fallback`: the text a client shows
    /// when it does not know the kind (a caption, or e.g. `[image]`).
    pub fn content(content: Content, fallback: impl Into<String>) -> Self {
        Draft { body: fallback.into(), content, reply_to: None, mentions: Vec::new() }
    }

    /// Replies to message `id` of the same conversation.
    pub fn reply_to(mut self, id: MessageId) -> Self {
        self.reply_to = Some(id);
        self
    }

    /// Mentions `users` (members of the conversation; they are pushed even
    /// when they muted it).
    pub fn mention(mut self, users: &[UserId]) -> Self {
        self.mentions.extend_from_slice(users);
        self
    }

    /// The `send` frame of this draft.
    pub(crate) fn frame(&self, rid: RequestId, conv: ConversationId, cmid: ClientMsgId) -> ClientFrame {
        let (kind, content) = self.content.to_parts();
        let kind = Some(kind).filter(|k| k != im_core::content::TEXT);
        ClientFrame::Send {
            rid,
            conv,
            cmid,
            body: self.body.clone(),
            mentions: self.mentions.clone(),
            kind,
            content,
            reply_to: self.reply_to,
        }
    }

    /// The message as stored, once acknowledged with `id` at `ts`.
    pub(crate) fn message(
        &self,
        conv: ConversationId,
        id: MessageId,
        from: UserId,
        cmid: ClientMsgId,
        ts: u64,
    ) -> Message {
        let (kind, content) = self.content.to_parts();
        Message {
            conv,
            id,
            from,
            cmid,
            body: self.body.clone(),
            ts,
            mentions: self.mentions.clone(),
            kind: Some(kind).filter(|k| k != im_core::content::TEXT),
            content,
            reply_to: self.reply_to,
        }
    }
}
