//! Messages: send (store, then fan out), sync by cursors, history pages.

use std::collections::{BTreeMap, BTreeSet};

use im_core::{ClientMsgId, ConversationId, ErrorCode, Message, MessageId, ServerFrame, UserId};

use super::Logic;
use crate::broker::{Audience, ConnRef, Event};
use crate::error::{Error, Result};
use crate::store::{Appended, NewMessage};
use crate::time::now_ms;

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
        body: String,
    ) -> Result<Appended> {
        let max = self.cfg.limits.max_body_bytes;
        if body.len() > max {
            return Err(Error::new(ErrorCode::BodyTooLarge, format!("body is over {max} bytes")));
        }
        self.check_access(from, conv).await?;
        if let ConversationId::Direct(a, b) = conv {
            self.remember_direct(a, b).await?;
        }
        let audience = match conv {
            ConversationId::Direct(a, b) => Audience::Users(vec![a, b]),
            ConversationId::Group(g) => {
                Audience::Users(self.svc.directory.members(g).await?.into_iter().map(|m| m.user).collect())
            }
            ConversationId::Room(r) => Audience::Room(r),
        };

        // Store, then publish, in one critical section per conversation so
        // live delivery follows id order.
        let appended = {
            let _turn = self.seq.lock(&conv).await;
            let appended =
                self.svc.messages.append(NewMessage { conv, from, cmid, body, ts: now_ms() }).await?;
            if !appended.duplicate {
                let skip = conn.map(|c| ConnRef { node: self.cfg.node_name.clone(), conn: c });
                let frame = ServerFrame::Message(appended.message.clone());
                self.publish(Event::Deliver { to: audience.clone(), frame, skip }).await;
            }
            appended
        };
        self.svc.metrics.message_stored(appended.duplicate);

        if !appended.duplicate {
            if let Audience::Users(users) = audience {
                self.push_to_offline(from, users, appended.message.clone());
            }
        }
        Ok(appended)
    }

    /// Hands the message to the push notifier for recipients with no live
    /// connection (off the ack path).
    fn push_to_offline(&self, from: UserId, users: Vec<UserId>, message: Message) {
        let recipients: Vec<UserId> = users.into_iter().filter(|&u| u != from).collect();
        if recipients.is_empty() {
            return;
        }
        let presence = self.svc.presence.store().clone();
        let push = self.svc.push.clone();
        tokio::spawn(async move {
            match presence.query(&recipients).await {
                Ok(records) => {
                    let offline: Vec<UserId> =
                        records.iter().filter(|r| r.connections == 0).map(|r| r.presence.user).collect();
                    if !offline.is_empty() {
                        push.dispatch(offline, message);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "push: presence lookup failed"),
            }
        });
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
        if cursors.len() > im_core::limits::DEFAULT_MAX_SYNC_CURSORS {
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
        for &conv in cursors.keys() {
            if convs.contains(&conv) {
                continue;
            }
            match self.check_access(user, conv).await {
                Ok(()) => {
                    convs.insert(conv);
                }
                Err(e) if e.code == ErrorCode::Unavailable => return Err(e),
                Err(_) => {} // no longer readable (left, removed, missing): skipped
            }
        }

        let convs: Vec<ConversationId> = convs.into_iter().collect();
        let heads = self.svc.messages.heads(&convs).await?;
        let mut messages = Vec::new();
        let mut has_more = false;
        for (conv, head) in convs.into_iter().zip(heads) {
            let cursor = cursors.get(&conv).copied().unwrap_or(0);
            if head <= cursor {
                continue;
            }
            let room = page - messages.len();
            if room == 0 {
                has_more = true;
                break;
            }
            let batch = self.svc.messages.after(conv, cursor, room).await?;
            let last = batch.last().map(|m| m.id).unwrap_or(cursor);
            messages.extend(batch);
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
        let page = page_size(limit, self.cfg.limits.history_page_max)?;
        self.check_access(user, conv).await?;
        let mut messages = self.svc.messages.before(conv, before, page + 1).await?;
        let has_more = messages.len() > page;
        if has_more {
            messages.remove(0);
        }
        Ok(HistoryPage { messages, has_more })
    }
}

/// The page size for a request: absent or above `max` means `max`; 0 is invalid.
fn page_size(limit: Option<u32>, max: u32) -> Result<usize> {
    match limit {
        Some(0) => Err(Error::new(ErrorCode::InvalidField, "limit must be at least 1")),
        Some(n) => Ok(n.min(max) as usize),
        None => Ok(max as usize),
    }
}
