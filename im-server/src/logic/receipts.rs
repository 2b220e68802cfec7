//! Receipts: how far the members of a direct chat or group have read and
//! received it, pushed live (coalesced) and answered on request.
//!
//! A read mark or a `received` report that raises a member's state only
//! *notes* `(conv, member)`; a flush every [`RECEIPT_INTERVAL_MS`] publishes
//! one `receipt` per noted pair with the state read fresh from the store.
//! So a member produces at most one receipt per conversation and second
//! however fast they read, and it always carries the latest ids. Groups
//! above [`ServerConfig::receipts_live_max_members`] are never pushed to
//! (a receipt goes to every member); their members ask with `receipts`.
//!
//! [`ServerConfig::receipts_live_max_members`]: crate::config::ServerConfig::receipts_live_max_members

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use im_protocol::limits::RECEIPT_INTERVAL_MS;
use im_protocol::{ConversationId, ErrorCode, MessageId, Receipt, ServerFrame, UserId};

use super::Logic;
use crate::broker::{Audience, Event};
use crate::error::{Error, Result};

/// Most `(conv, member)` pairs waiting for the next flush; further notes
/// are dropped (counted in the log): receipts are a courtesy, the query
/// always has the truth.
const PENDING_MAX: usize = 100_000;

/// Conversations whose receipts one flush publishes at once.
const FLUSH_CONCURRENCY: usize = 16;

/// The pairs whose receipt is due at the next flush.
#[derive(Default)]
pub(super) struct ReceiptQueue {
    pending: Mutex<HashSet<(ConversationId, UserId)>>,
}

impl ReceiptQueue {
    fn note(&self, conv: ConversationId, user: UserId) {
        if matches!(conv, ConversationId::Room(_)) {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < PENDING_MAX {
            pending.insert((conv, user));
        } else {
            tracing::debug!(%conv, %user, "receipt queue full; receipt dropped");
        }
    }

    fn take(&self) -> HashSet<(ConversationId, UserId)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Logic {
    /// A member's read or delivered id in `conv` rose: their receipt goes
    /// out with the next flush.
    pub(super) fn note_receipt(&self, conv: ConversationId, user: UserId) {
        self.receipts.note(conv, user);
    }

    /// `user`'s device has received every message up to `cursors` (direct
    /// chats and groups of the user; other conversations are skipped, ids
    /// above a head count as the head). Raises the user's delivered ids.
    pub async fn received(&self, user: UserId, cursors: &BTreeMap<ConversationId, MessageId>) -> Result<()> {
        if cursors.len() > im_protocol::limits::DEFAULT_MAX_SYNC_CURSORS {
            return Err(Error::new(ErrorCode::InvalidField, "too many cursors"));
        }
        let dir = &self.svc.directory;
        let mut mine: BTreeSet<ConversationId> = BTreeSet::new();
        if cursors.keys().any(|c| matches!(c, ConversationId::Group(_))) {
            mine.extend(dir.groups_of(user).await?.into_iter().map(ConversationId::Group));
        }
        if cursors.keys().any(|c| matches!(c, ConversationId::Direct(..))) {
            mine.extend(dir.directs_of(user).await?.into_iter().map(|p| ConversationId::direct(user, p)));
        }
        let convs: Vec<ConversationId> =
            cursors.iter().filter(|(c, &id)| id > 0 && mine.contains(c)).map(|(c, _)| *c).collect();
        if convs.is_empty() {
            return Ok(());
        }
        let heads = self.svc.messages.heads(&convs).await?;
        let items: Vec<(ConversationId, MessageId)> =
            convs.iter().zip(heads).map(|(&c, head)| (c, cursors[&c].min(head))).collect();
        let raised = self.svc.messages.mark_delivered(user, &items).await?;
        for ((conv, _), up) in items.into_iter().zip(raised) {
            if up {
                self.note_receipt(conv, user);
            }
        }
        Ok(())
    }

    /// Every member of `conv` (a direct chat or group `user` belongs to)
    /// who shares receipts, with their read and delivered ids, by user id.
    pub async fn receipt_list(&self, user: UserId, conv: ConversationId) -> Result<Vec<Receipt>> {
        if matches!(conv, ConversationId::Room(_)) {
            return Err(Error::new(ErrorCode::Forbidden, "rooms have no receipts"));
        }
        self.check_access(user, conv).await?;
        let members = self.members_of(conv).await?;
        self.receipts_of(conv, &members).await
    }

    /// The receipts of those of `users` who share them, in the order given.
    async fn receipts_of(&self, conv: ConversationId, users: &[UserId]) -> Result<Vec<Receipt>> {
        let shared = self.svc.messages.receipts_shared(users).await?;
        let users: Vec<UserId> = users.iter().zip(shared).filter(|(_, s)| *s).map(|(u, _)| *u).collect();
        let states = self.svc.messages.reads_in(conv, &users).await?;
        Ok(users
            .into_iter()
            .zip(states)
            .map(|(user, s)| Receipt { user, read: s.read, delivered: s.delivered.max(s.read) })
            .collect())
    }

    /// The users of a direct chat or group, ascending.
    async fn members_of(&self, conv: ConversationId) -> Result<Vec<UserId>> {
        Ok(match conv {
            ConversationId::Direct(a, b) => {
                let mut both = vec![a, b];
                both.dedup();
                both
            }
            ConversationId::Group(g) => {
                self.svc.directory.members(g).await?.into_iter().map(|m| m.user).collect()
            }
            ConversationId::Room(_) => Vec::new(),
        })
    }

    /// Whether `user` shows their read and delivered ids to the other
    /// members (on by default). Turning it off stops their receipts at
    /// once; their read state still syncs to their own devices.
    pub async fn set_receipts_shared(&self, user: UserId, shared: bool) -> Result<()> {
        Ok(self.svc.messages.set_receipts_shared(user, shared).await?)
    }

    /// Whether `user` shares receipts.
    pub async fn receipts_shared(&self, user: UserId) -> Result<bool> {
        Ok(self.svc.messages.receipts_shared(&[user]).await?.first().copied().unwrap_or(true))
    }

    /// Publishes the noted receipts every [`RECEIPT_INTERVAL_MS`], forever:
    /// grouped by conversation (one member list and one state lookup per
    /// conversation, however many of its members read), up to
    /// 16 conversations at a time.
    pub async fn run_receipts(&self) {
        use futures::StreamExt;
        let mut every = tokio::time::interval(Duration::from_millis(RECEIPT_INTERVAL_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let mut by_conv: BTreeMap<ConversationId, Vec<UserId>> = BTreeMap::new();
            for (conv, user) in self.receipts.take() {
                by_conv.entry(conv).or_default().push(user);
            }
            futures::stream::iter(by_conv)
                .for_each_concurrent(FLUSH_CONCURRENCY, |(conv, users)| async move {
                    if let Err(e) = self.publish_receipts(conv, users).await {
                        tracing::debug!(%conv, error = %e.message, "receipts not published");
                    }
                })
                .await;
        }
    }

    /// One `receipt` per member of `readers` to the other members of `conv`.
    async fn publish_receipts(&self, conv: ConversationId, mut readers: Vec<UserId>) -> Result<()> {
        let members = self.members_of(conv).await?;
        if members.len() > self.cfg.receipts_live_max_members.max(2) {
            return Ok(());
        }
        readers.retain(|u| members.contains(u));
        readers.sort_unstable();
        for r in self.receipts_of(conv, &readers).await? {
            let others: Vec<UserId> = members.iter().copied().filter(|&m| m != r.user).collect();
            if others.is_empty() {
                continue;
            }
            let frame = ServerFrame::Receipt { conv, user: r.user, read: r.read, delivered: r.delivered };
            self.publish(Event::Deliver { to: Audience::Users(others), frame, skip: None }).await;
        }
        Ok(())
    }
}
