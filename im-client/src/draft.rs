//! [`Draft`]: a message to send — text, or another kind of content, maybe
//! replying to an earlier message and mentioning users.

use im_protocol::events::{Change, Edit, ReactionChange};
use im_protocol::{ClientFrame, ClientMsgId, Content, ConversationId, Message, MessageId, RequestId, UserId};

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
///
/// // Events change message 17 in place on every device (see `im_protocol::events`).
/// let thumbs = Draft::react(17, "👍");
/// let fix = Draft::edit(17, "Lunch at 12:30?");
/// let gone = Draft::recall(17);
/// # let _ = (plain, pin, thumbs, fix, gone);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub(crate) body: String,
    pub(crate) content: Content,
    pub(crate) reply_to: Option<MessageId>,
    pub(crate) mentions: Vec<UserId>,
    pub(crate) target: Option<MessageId>,
}

impl Draft {
    /// Plain text.
    pub fn text(body: impl Into<String>) -> Self {
        Draft {
            body: body.into(),
            content: Content::Text,
            reply_to: None,
            mentions: Vec::new(),
            target: None,
        }
    }

    /// Content of another kind, with `fallback`: the text a client shows
    /// when it does not know the kind (a caption, or e.g. `[image]`).
    pub fn content(content: Content, fallback: impl Into<String>) -> Self {
        Draft { body: fallback.into(), content, reply_to: None, mentions: Vec::new(), target: None }
    }

    /// Reacts to message `target` with `emoji` (an event: the target's
    /// reaction summary changes on every device).
    pub fn react(target: MessageId, emoji: impl Into<String>) -> Self {
        Self::event(target, Change::Reaction(ReactionChange { emoji: emoji.into(), remove: false }), "")
    }

    /// Takes back this user's `emoji` reaction to message `target`.
    pub fn unreact(target: MessageId, emoji: impl Into<String>) -> Self {
        Self::event(target, Change::Reaction(ReactionChange { emoji: emoji.into(), remove: true }), "")
    }

    /// Replaces the body of this user's message `target` with `body` (its
    /// mentions with those added by [`mention`](Self::mention)); within the
    /// server's edit window.
    pub fn edit(target: MessageId, body: impl Into<String>) -> Self {
        Self::event(target, Change::Edit(Edit::default()), body)
    }

    /// Replaces the body and the content object of message `target` (a
    /// `location` or an app kind; media content cannot be edited).
    pub fn edit_content(target: MessageId, content: Content, body: impl Into<String>) -> Self {
        let (_, value) = content.to_parts();
        Self::event(target, Change::Edit(Edit { content: value }), body)
    }

    /// Recalls message `target`: it becomes an empty tombstone everywhere,
    /// its content erased from storage. The sender may recall within the
    /// server's recall window, group owners and admins any message.
    pub fn recall(target: MessageId) -> Self {
        Self::event(target, Change::Recall, "")
    }

    fn event(target: MessageId, change: Change, body: impl Into<String>) -> Self {
        Draft {
            body: body.into(),
            content: Content::Event(change),
            reply_to: None,
            mentions: Vec::new(),
            target: Some(target),
        }
    }

    /// The message this draft changes, for an event.
    pub fn target(&self) -> Option<MessageId> {
        self.target
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
        let kind = Some(kind).filter(|k| k != im_protocol::content::TEXT);
        ClientFrame::Send {
            rid,
            conv,
            cmid,
            body: self.body.clone(),
            mentions: self.mentions.clone(),
            kind,
            content,
            reply_to: self.reply_to,
            target: self.target,
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
            mentions: self.mentions.clone(),
            kind: Some(kind).filter(|k| k != im_protocol::content::TEXT),
            content,
            reply_to: self.reply_to,
            target: self.target,
            ..Message::new(conv, id, from, cmid, self.body.clone(), ts)
        }
    }
}
