//! Read state: marking conversations read, and the inbox (every
//! conversation with its head, read id, unread count and last message).
//!
//! Storing a message raises its sender's read id (see
//! [`crate::store::MessageStore::append`]), so a user's own messages never
//! count, and events (reactions, edits, recalls, notices) do not count
//! either: unread is `countable(head) - countable(read)`
//! ([`crate::store::ReadStore::countable`]), exact and O(1) per conversation.

use std::collections::BTreeSet;

use im_protocol::{ConversationId, ErrorCode, InboxEntry, Message, MessageId, ServerFrame, UserId};

use super::Logic;
use crate::broker::{Audience, ConnRef, Event};
use crate::error::{Error, Result};

/// One page of the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxPage {
    /// Conversations in ascending id order.
    pub entries: Vec<InboxEntry>,
    /// More conversations follow the last one here.
    pub has_more: bool,
}

/// Messages looked at below an event for an inbox's last message.
const LAST_SAID_SCAN: usize = 20;

/// An inbox page stops growing once its last messages reach about this
/// many bytes (it always holds at least one entry).
const INBOX_PAGE_BYTES: usize = 1024 * 1024;

impl Logic {
    /// Marks `conv` read up to `id` for `user` and, when given, `device`.
    /// When that raises the user's read id, their other connections (on
    /// every node, except `from`) get `read_up_to`. Returns the user's read
    /// id after the call. `id` above the conversation's head is refused
    /// with `invalid_field` and changes nothing; so does any request from a
    /// non-member.
    pub async fn mark_read(
        &self,
        user: UserId,
        device: Option<&str>,
        from: Option<ConnRef>,
        conv: ConversationId,
        id: MessageId,
    ) -> Result<MessageId> {
        self.check_access(user, conv).await?;
        let head = self.svc.messages.heads(&[conv]).await?.first().copied().unwrap_or(0);
        if id > head {
            return Err(Error::new(
                ErrorCode::InvalidField,
                format!("id {id} is above the conversation's newest message {head}"),
            ));
        }
        if id == 0 {
            return Ok(self.svc.messages.read_ids(user, &[conv]).await?.first().copied().unwrap_or(0));
        }
        let mark = self.svc.messages.mark_read(user, conv, device, id).await?;
        if mark.raised {
            let frame = ServerFrame::ReadUpTo { conv, id: mark.read };
            self.publish(Event::Deliver { to: Audience::Users(vec![user]), frame, skip: from }).await;
            self.note_receipt(conv, user);
            self.svc.push.dispatch_read(user, conv, mark.read);
        }
        Ok(mark.read)
    }

    /// What an inbox shows as a conversation's last message: the newest
    /// that is not an event (a reaction or an edit says little alone),
    /// looked for among the [`LAST_SAID_SCAN`] before an event; the event
    /// itself when there is none.
    async fn last_said(&self, conv: ConversationId, last: Option<Message>) -> Result<Option<Message>> {
        let event = match last {
            Some(m) if m.is_event() => m,
            other => return Ok(other),
        };
        let earlier = self.svc.messages.before(conv, Some(event.id), LAST_SAID_SCAN).await?;
        Ok(Some(earlier.into_iter().rev().find(|m| !m.is_event()).unwrap_or(event)))
    }

    /// `user`'s read id in `conv` and each device's own report (the caller
    /// has checked access).
    pub async fn read_state(
        &self,
        user: UserId,
        conv: ConversationId,
    ) -> Result<(MessageId, Vec<crate::store::DeviceRead>)> {
        let read = self.svc.messages.read_ids(user, &[conv]).await?.first().copied().unwrap_or(0);
        Ok((read, self.svc.messages.device_reads(user, conv).await?))
    }

    /// Mutes pushes of `conv` for `user` until `until` (ms since the Unix
    /// epoch; `None`: for good), or unmutes it (`Some(0)`). Unread counts
    /// are not affected. A time in the past unmutes too.
    pub async fn mute(&self, user: UserId, conv: ConversationId, until: Option<u64>) -> Result<()> {
        self.check_access(user, conv).await?;
        Ok(self.svc.messages.mute(user, conv, until.unwrap_or(u64::MAX)).await?)
    }

    /// Starts `user`'s read id in `conv` at its head (a new member does not
    /// inherit the history as unread). A failure is logged, not returned:
    /// the membership change it follows has happened.
    pub(super) async fn read_from_head(&self, user: UserId, conv: ConversationId) {
        let result = async {
            let head = self.svc.messages.heads(&[conv]).await?.first().copied().unwrap_or(0);
            if head > 0 {
                self.svc.messages.mark_read(user, conv, None, head).await?;
            }
            Ok::<(), crate::store::StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(%user, %conv, error = %e, "could not start the read id at the head");
        }
    }

    /// One page of `user`'s conversations (direct chats, groups, joined
    /// rooms) after `after`, in ascending conversation id order, at most
    /// `limit` (capped at [`im_protocol::limits::INBOX_PAGE_MAX`]).
    pub async fn inbox(
        &self,
        user: UserId,
        after: Option<ConversationId>,
        limit: Option<u32>,
    ) -> Result<InboxPage> {
        let page = match limit {
            Some(0) => return Err(Error::new(ErrorCode::InvalidField, "limit must be at least 1")),
            Some(n) => n.min(im_protocol::limits::INBOX_PAGE_MAX) as usize,
            None => im_protocol::limits::INBOX_PAGE_MAX as usize,
        };
        let dir = &self.svc.directory;
        let mut convs: BTreeSet<ConversationId> = BTreeSet::new();
        convs.extend(dir.directs_of(user).await?.into_iter().map(|peer| ConversationId::direct(user, peer)));
        convs.extend(dir.groups_of(user).await?.into_iter().map(ConversationId::Group));
        convs.extend(dir.rooms_of(user).await?.into_iter().map(ConversationId::Room));
        let mut chosen: Vec<ConversationId> = match after {
            Some(a) => {
                convs.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)).copied().collect()
            }
            None => convs.into_iter().collect(),
        };
        let mut has_more = chosen.len() > page;
        chosen.truncate(page);
        let latest = self.svc.messages.latest(&chosen).await?;
        let states = self.svc.messages.read_states(user, &chosen).await?;
        // Events do not count: unread = countable(head) - countable(read).
        let mut at = Vec::with_capacity(2 * chosen.len());
        for ((conv, last), state) in chosen.iter().zip(&latest).zip(&states) {
            let head = last.as_ref().map_or(0, |m| m.id);
            at.extend([(*conv, head), (*conv, state.read.min(head))]);
        }
        let counted = self.svc.messages.countable(&at).await?;
        let now = crate::time::now_ms();
        let mut entries = Vec::with_capacity(chosen.len());
        let mut bytes = 0usize;
        for (((conv, last), state), counts) in
            chosen.into_iter().zip(latest).zip(states).zip(counted.chunks(2))
        {
            if bytes >= INBOX_PAGE_BYTES {
                has_more = true;
                break;
            }
            let head = last.as_ref().map_or(0, |m| m.id);
            let last = self.last_said(conv, last).await?;
            bytes += last.as_ref().map_or(128, super::messages::page_cost);
            let read = state.read.min(head);
            let unread = counts[0].saturating_sub(counts[1]);
            let muted_until = Some(state.muted_until).filter(|&t| t > now);
            entries.push(InboxEntry { conv, head, read, unread, last, muted_until });
        }
        Ok(InboxPage { entries, has_more })
    }
}
