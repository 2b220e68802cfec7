//! Messages: send (store, then fan out), sync by cursors, history pages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use im_protocol::{ClientMsgId, ConversationId, ErrorCode, Message, MessageId, ServerFrame, UserId};

use super::sequencer::Turn;
use super::Logic;
use crate::broker::{Audience, ConnRef, Event};
use crate::error::{Error, Result};
use crate::store::{Appended, NewMessage, ReadStore};
use crate::time::now_ms;

/// A completed send (see [`Logic::submit_send`]). While it is alive, no
/// later message of its conversation is published on this node: answer the
/// sender, then drop it.
pub struct Sent<'a> {
    /// The stored message (the earlier one when a duplicate).
    pub appended: Appended,
    _turn: Turn<'a>,
}

/// What a message to send says: its body (the text, or a fallback text
/// for another kind), kind and content object, the message it replies
/// to, and the users it mentions. `From<String>` makes a plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    /// The text (for a kind other than text: a caption or fallback text).
    pub body: String,
    /// Users mentioned (at most [`im_protocol::limits::MAX_MENTIONS`], each
    /// once, members of the conversation).
    pub mentions: Vec<UserId>,
    /// The kind (`None` or `"text"`: plain text; see [`im_protocol::content`]).
    pub kind: Option<String>,
    /// The content object of that kind.
    pub content: Option<serde_json::Value>,
    /// An earlier message of the same conversation.
    pub reply_to: Option<MessageId>,
    /// For an event kind (`reaction`, `edit`, `recall`): the message it changes.
    pub target: Option<MessageId>,
}

/// What the attachments need once a message is stored.
#[derive(Debug, Default, Clone)]
pub(super) struct Settle {
    /// The attachment the message uses: its reference gets the message id.
    pub reference: Option<String>,
    /// For a recall: the recalled message's attachment and that message's id.
    pub release: Option<(String, MessageId)>,
}

impl From<String> for Draft {
    fn from(body: String) -> Self {
        Draft { body, ..Draft::default() }
    }
}

/// One page of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPage {
    /// Missed messages, grouped by conversation, ascending ids within each.
    pub messages: Vec<Message>,
    /// More messages wait beyond this page.
    pub has_more: bool,
}

/// One page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Ascending ids.
    pub messages: Vec<Message>,
    /// Older messages exist.
    pub has_more: bool,
}

impl Logic {
    /// Stores a message from `from` and delivers it to every connection of
    /// every recipient except `conn` (the sending connection, which gets the
    /// ack). Returns once the message is stored; a resend with the same
    /// `cmid` returns the original (`duplicate: true`) and delivers nothing.
    pub async fn send(
        &self,
        from: UserId,
        conn: Option<u64>,
        conv: ConversationId,
        cmid: ClientMsgId,
        draft: impl Into<Draft>,
    ) -> Result<Appended> {
        Ok(self.submit_send(from, conn, conv, cmid, draft).await?.await?.appended)
    }

    /// [`send`](Self::send) in two steps, for pipelining: returns once the
    /// message is checked and its place in the conversation's order is
    /// fixed (a later `submit_send` to the same conversation gets a larger
    /// id), with a future that completes the send — waits until the
    /// message is durable, publishes it after every earlier message of the
    /// conversation, and resolves to a [`Sent`]: the outcome `send` would
    /// return, holding the conversation's publication turn until dropped, so
    /// the caller can answer the sender before any later message of the
    /// conversation is published.
    /// Several submitted sends of one conversation share a group commit
    /// when the store supports it ([`MessageStore::submit_append`]).
    ///
    /// Dropping the returned future before it completes gives up on live
    /// delivery of that message (it is still stored if the commit happens;
    /// recipients get it by sync) without holding up later messages.
    ///
    /// [`MessageStore::submit_append`]: crate::store::MessageStore::submit_append
    pub async fn submit_send(
        &self,
        from: UserId,
        conn: Option<u64>,
        conv: ConversationId,
        cmid: ClientMsgId,
        draft: impl Into<Draft>,
    ) -> Result<impl std::future::Future<Output = Result<Sent<'_>>> + Send + '_> {
        // A user's own sends (over a connection) count against their rate;
        // the server API's posts do not.
        if conn.is_some() && !self.user_sends.allow(from, std::time::Instant::now()) {
            return Err(Error::new(ErrorCode::RateLimited, "too many messages from this user, slow down"));
        }
        let mut draft = draft.into();
        let access_checked = self.svc.hooks.is_some();
        if let Some(h) = &self.svc.hooks {
            // Members only are asked about (and may learn of) a message.
            self.check_send_access(from, conv).await?;
            match h.hooks.before_send(from, conv, &mut draft).await {
                crate::hooks::Verdict::Allow => {}
                crate::hooks::Verdict::Deny(reason) => return Err(Error::new(ErrorCode::Forbidden, reason)),
                crate::hooks::Verdict::Unavailable(reason) => {
                    return Err(Error::new(ErrorCode::Unavailable, reason))
                }
            }
        }
        let (kind, content, typed) = checked_content(draft.kind.take(), draft.content.take())?;
        (draft.kind, draft.content) = (kind, content);
        let max = self.cfg.limits.max_body_bytes;
        let content_len = draft.content.as_ref().map_or(0, |c| c.to_string().len());
        if draft.body.len() + content_len > max {
            return Err(Error::new(
                ErrorCode::BodyTooLarge,
                format!("body and content are over {max} bytes"),
            ));
        }
        if draft.body.contains('\0') {
            // Not storable everywhere (PostgreSQL text), and never meaningful.
            return Err(Error::new(ErrorCode::InvalidField, "body must not contain NUL characters"));
        }
        if !access_checked {
            self.check_send_access(from, conv).await?;
        }
        self.check_mentions(conv, &draft.mentions).await?;
        let mut settle = Settle::default();
        if let im_protocol::Content::Event(change) = &typed {
            // A resend of a stored event is answered as a duplicate by the
            // store, whatever its target has become since.
            if self.svc.messages.sent(conv, from, &cmid).await?.is_none() {
                let checked = self.check_event(from, conv, change, &draft).await?;
                if matches!(change, im_protocol::events::Change::Recall) {
                    settle.release = checked.attachment().map(|a| (a, checked.target.id));
                }
            }
        } else if draft.target.is_some() {
            return Err(Error::new(
                ErrorCode::InvalidField,
                "target is only for events (reaction, edit, recall)",
            ));
        }
        if let Some(target) = draft.reply_to {
            let head = self.svc.messages.heads(&[conv]).await?.first().copied().unwrap_or(0);
            if target == 0 || target > head {
                return Err(Error::new(
                    ErrorCode::InvalidField,
                    format!("reply_to {target}: no such message in {conv} (its newest is {head})"),
                ));
            }
        }
        // An uploaded attachment: checked, completed from the upload, and
        // referenced by the conversation before the message exists, so its
        // recipients can download it as soon as they see the message.
        let attachment = self.complete_media(from, draft.kind.as_deref(), draft.content.as_mut()).await?;
        if let ConversationId::Direct(a, b) = conv {
            self.remember_direct(a, b).await?;
        }
        if let Some(id) = &attachment {
            self.reference_attachment(id, conv, None).await.map_err(|e| match e.code {
                ErrorCode::NoSuchAttachment => {
                    Error::new(ErrorCode::InvalidField, format!("attachment {id} was removed"))
                }
                _ => e,
            })?;
        }
        settle.reference = attachment;
        self.submit_checked(from, conn, conv, cmid, draft, settle).await
    }

    /// Stores a checked draft and publishes it (the second half of
    /// [`submit_send`](Self::submit_send), also used for system notices).
    pub(super) async fn submit_checked(
        &self,
        from: UserId,
        conn: Option<u64>,
        conv: ConversationId,
        cmid: ClientMsgId,
        draft: Draft,
        settle: Settle,
    ) -> Result<impl std::future::Future<Output = Result<Sent<'_>>> + Send + '_> {
        let Draft { body, mentions, kind, content, reply_to, target } = draft;
        // Events other than the app's ask are never pushed (nor are notices).
        let pushed = !kind.as_deref().is_some_and(im_protocol::events::is_event_kind) || self.cfg.push_events;
        // Submit under the conversation's stripe lock, so the store places
        // messages in the order their publication turns are handed out.
        let (pending, turn, audience) = {
            let submit = self.seq.submit(&conv).await;
            // Read inside the section: a member removed concurrently is not
            // sent a message stored after their removal.
            let audience = match conv {
                ConversationId::Direct(a, b) => Audience::Users(vec![a, b]),
                ConversationId::Group(g) => Audience::Users(
                    self.svc.directory.members(g).await?.into_iter().map(|m| m.user).collect(),
                ),
                ConversationId::Room(r) => Audience::Room(r),
            };
            let message = NewMessage {
                conv,
                from,
                cmid,
                body,
                ts: now_ms(),
                mentions,
                kind,
                content,
                reply_to,
                target,
            };
            let pending = self.svc.messages.submit_append(message).await?;
            (pending, submit.turn(), audience)
        };
        Ok(async move {
            // A failed append drops its turn: later messages do not wait for it.
            let appended = pending.await?;
            if !appended.duplicate {
                self.settle_attachments(conv, appended.message.id, settle).await;
            }
            // Publish after every earlier message of the conversation.
            turn.wait().await;
            if !appended.duplicate {
                let skip = conn.map(|c| ConnRef { node: self.cfg.node_name.clone(), conn: c });
                let frame = ServerFrame::Message(appended.message.clone());
                self.publish(Event::Deliver { to: audience.clone(), frame, skip }).await;
            }
            self.svc.metrics.message_stored(appended.duplicate);
            if !appended.duplicate {
                self.tell_hooks(|| crate::hooks::Notice::Stored(Box::new(appended.message.clone())));
                if let Some(feed) = &self.svc.feed {
                    feed.hint(conv);
                }
            }
            if !appended.duplicate && pushed {
                if let Audience::Users(users) = audience {
                    self.push_to_offline(from, users, appended.message.clone());
                }
            }
            Ok(Sent { appended, _turn: turn })
        })
    }

    /// After a message is stored: names it in the reference of the
    /// attachment it uses, and for a recall lets go of the recalled
    /// message's attachment (removed when nothing else references it).
    async fn settle_attachments(&self, conv: ConversationId, id: MessageId, settle: Settle) {
        if let Some(att) = &settle.reference {
            // Names the stored message (for recall); access already holds.
            if let Err(e) = self.reference_attachment(att, conv, Some(id)).await {
                tracing::warn!(attachment = %att, error = %e, "recording the attachment's message failed");
            }
        }
        if let Some((att, target)) = &settle.release {
            match self.release_attachment(att, conv, *target).await {
                Ok(true) => tracing::debug!(attachment = %att, "recalled message's attachment removed"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(attachment = %att, error = %e, "releasing a recalled attachment failed")
                }
            }
        }
    }

    /// Mentions must be few, distinct, and members of the conversation
    /// (either party of a direct chat, a group member; in a room, a user
    /// who exists).
    async fn check_mentions(&self, conv: ConversationId, mentions: &[UserId]) -> Result<()> {
        if mentions.is_empty() {
            return Ok(());
        }
        let max = im_protocol::limits::MAX_MENTIONS;
        if mentions.len() > max {
            return Err(Error::new(ErrorCode::InvalidField, format!("at most {max} mentions")));
        }
        let distinct: BTreeSet<UserId> = mentions.iter().copied().collect();
        if distinct.len() != mentions.len() {
            return Err(Error::new(ErrorCode::InvalidField, "a user is mentioned twice"));
        }
        let outsider = match conv {
            ConversationId::Direct(a, b) => mentions.iter().find(|&&u| u != a && u != b).copied(),
            ConversationId::Group(g) => {
                let members: BTreeSet<UserId> =
                    self.svc.directory.members(g).await?.into_iter().map(|m| m.user).collect();
                mentions.iter().find(|u| !members.contains(u)).copied()
            }
            ConversationId::Room(_) => {
                let mut missing = None;
                for &u in mentions {
                    if self.svc.directory.user(u).await?.is_none() {
                        missing = Some(u);
                        break;
                    }
                }
                missing
            }
        };
        match outsider {
            Some(u) => {
                Err(Error::new(ErrorCode::InvalidField, format!("mentioned user {u} is not in {conv}")))
            }
            None => Ok(()),
        }
    }

    /// Hands the message to the push notifier for recipients with no live
    /// connection who have not read it or muted the conversation (off the
    /// ack path, bounded).
    fn push_to_offline(&self, from: UserId, users: Vec<UserId>, message: Message) {
        let recipients: Vec<UserId> = users.into_iter().filter(|&u| u != from).collect();
        let reads: Arc<dyn ReadStore> = self.svc.messages.clone();
        self.svc.push.dispatch_to_offline(recipients, message, self.svc.presence.store().clone(), reads);
    }

    /// One page of what `user` missed since `cursors`. Groups and direct
    /// chats of the user are included from 0 when not named; rooms only when
    /// named and joined. Named conversations the user cannot read are
    /// skipped.
    pub async fn sync(
        &self,
        user: UserId,
        cursors: &BTreeMap<ConversationId, MessageId>,
        limit: Option<u32>,
    ) -> Result<SyncPage> {
        if cursors.len() > im_protocol::limits::DEFAULT_MAX_SYNC_CURSORS {
            return Err(Error::new(ErrorCode::InvalidField, "too many cursors"));
        }
        let page = page_size(limit, self.cfg.limits.sync_page_max)?;
        let dir = &self.svc.directory;

        let mut convs: BTreeSet<ConversationId> = BTreeSet::new();
        for g in dir.groups_of(user).await? {
            convs.insert(ConversationId::Group(g));
        }
        for peer in dir.directs_of(user).await? {
            convs.insert(ConversationId::direct(user, peer));
        }
        // Named rooms count only when joined; named groups or direct chats
        // the user does not (or no longer) belong to add nothing. Checked
        // against sets, not per cursor, so a sync costs a few reads however
        // many conversations it names.
        if cursors.keys().any(|c| matches!(c, ConversationId::Room(_))) {
            let joined: BTreeSet<_> = dir.rooms_of(user).await?.into_iter().collect();
            convs.extend(
                cursors.keys().filter(|c| matches!(c, ConversationId::Room(r) if joined.contains(r))),
            );
        }

        let convs: Vec<ConversationId> = convs.into_iter().collect();
        let heads = self.svc.messages.heads(&convs).await?;
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        let mut has_more = false;
        for (conv, head) in convs.into_iter().zip(heads) {
            let cursor = cursors.get(&conv).copied().unwrap_or(0);
            if head <= cursor {
                continue;
            }
            let room = page - messages.len();
            if room == 0 || bytes >= PAGE_BYTES {
                has_more = true;
                break;
            }
            let batch = self.svc.messages.after(conv, cursor, room).await?;
            let mut last = cursor;
            for m in batch {
                if bytes >= PAGE_BYTES {
                    break;
                }
                bytes += page_cost(&m);
                last = m.id;
                messages.push(m);
            }
            if last < head {
                has_more = true;
                break;
            }
        }
        Ok(SyncPage { messages, has_more })
    }

    /// A page of `conv`'s history below `before` (the newest when `None`).
    pub async fn history(
        &self,
        user: UserId,
        conv: ConversationId,
        before: Option<MessageId>,
        limit: Option<u32>,
    ) -> Result<HistoryPage> {
        self.check_access(user, conv).await?;
        self.history_page(conv, before, limit).await
    }

    /// [`history`](Self::history) without a membership check, for the
    /// server API (the application's backend may read any conversation).
    pub async fn history_page(
        &self,
        conv: ConversationId,
        before: Option<MessageId>,
        limit: Option<u32>,
    ) -> Result<HistoryPage> {
        let page = page_size(limit, self.cfg.limits.history_page_max)?;
        let mut messages = self.svc.messages.before(conv, before, page + 1).await?;
        let mut has_more = messages.len() > page;
        if has_more {
            messages.remove(0);
        }
        // Keep the newest messages that fit the byte budget (at least one).
        let mut bytes = 0usize;
        let keep = messages
            .iter()
            .rev()
            .take_while(|m| {
                let fits = bytes < PAGE_BYTES;
                bytes += page_cost(m);
                fits
            })
            .count();
        if keep < messages.len() {
            messages.drain(..messages.len() - keep);
            has_more = true;
        }
        Ok(HistoryPage { messages, has_more })
    }
}

/// The kind and content as stored: `text` becomes `None`; anything else
/// must be a valid kind with a content object of its shape.
/// Also returns the typed content, read once.
fn checked_content(
    kind: Option<String>,
    content: Option<serde_json::Value>,
) -> Result<(Option<String>, Option<serde_json::Value>, im_protocol::Content)> {
    let kind = kind.filter(|k| k != im_protocol::content::TEXT);
    let name = kind.as_deref().unwrap_or(im_protocol::content::TEXT);
    let typed = im_protocol::Content::from_parts(name, content.as_ref())
        .map_err(|e| Error::new(ErrorCode::InvalidField, e.0))?;
    Ok((kind, content, typed))
}

/// A page stops growing once its bodies reach about this many bytes (it
/// always holds at least one message), so one reply cannot pin megabytes.
const PAGE_BYTES: usize = 1024 * 1024;
/// Rough encoded size of a message beside its body, content and mentions.
const MESSAGE_OVERHEAD: usize = 128;

/// What a message counts against a page's byte budget: its body, its
/// content object (encoded) and mentions, and the fixed fields.
pub(crate) fn page_cost(m: &Message) -> usize {
    let content = m.content.as_ref().map_or(0, |c| c.to_string().len());
    m.body.len() + content + 12 * m.mentions.len() + MESSAGE_OVERHEAD
}

/// The page size for a request: absent or above `max` means `max`; 0 is invalid.
fn page_size(limit: Option<u32>, max: u32) -> Result<usize> {
    match limit {
        Some(0) => Err(Error::new(ErrorCode::InvalidField, "limit must be at least 1")),
        Some(n) => Ok(n.min(max) as usize),
        None => Ok(max as usize),
    }
}
