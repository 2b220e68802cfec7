//! The embedded store's [`MessageErasure`] and [`DirectoryErasure`]: the
//! sender index `sender_convs` (which conversations each user has sent
//! in), and the writer's side of forgetting read state, transferring a
//! group and erasing a user, each in the one transaction of its batch.
//!
//! The index holds one row per (sender, conversation), not one per
//! message: an append writes it only the first time its sender sends in
//! its conversation, and the writer remembers which pairs are in the
//! table ([`SenderConvs`]), so the hot path almost never touches it.
//! [`MessageErasure::sent_by`] reads the messages of the user's
//! conversations from the cursor on and keeps the user's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use async_trait::async_trait;
use im_protocol::{ConversationId, GroupId, UserId};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::Deserialize;

use super::tables::Tables;
use super::{role_code, DbError, EmbeddedStore, Op, Reply, COUNTERS, MESSAGES};
use crate::model::{Group, Role, User};
use crate::store::{DirectoryErasure, MessageErasure, SentCursor, StoreError, StoreResult};

/// `(sender, conv)`: the user has sent at least one message or event in
/// the conversation (rows are never removed: messages are not).
pub(super) const SENDER_CONVS: TableDefinition<(u64, &str), ()> = TableDefinition::new("sender_convs");
/// The `counters` key present once `sender_convs` holds every stored
/// message's pair (files written before it are indexed once, on open).
pub(super) const INDEXED: &str = "sender_convs_indexed";
/// The per-message index of an earlier version, `(sender, conv, id)`: its
/// rows were written on every append; dropped on open.
pub(super) const OLD_SENT_BY: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("sent_by");
/// That index's `counters` key, removed with it.
pub(super) const OLD_INDEXED: &str = "sent_by_indexed";
/// Most pairs the writer remembers; past it the memory starts over (a
/// forgotten pair costs one more lookup of the table, no more).
const REMEMBERED: usize = 100_000;

/// The one field of a stored message the index needs: its sender.
#[derive(Deserialize)]
struct Sender {
    f: u64,
}

/// Sets of `(sender, conv)` pairs, looked up without allocating.
#[derive(Default)]
struct Pairs {
    by_sender: HashMap<u64, HashSet<Box<str>>>,
    len: usize,
}

impl Pairs {
    fn contains(&self, sender: u64, conv: &str) -> bool {
        self.by_sender.get(&sender).is_some_and(|convs| convs.contains(conv))
    }

    fn insert(&mut self, sender: u64, conv: &str) {
        if self.by_sender.entry(sender).or_default().insert(conv.into()) {
            self.len += 1;
        }
    }

    fn clear(&mut self) {
        self.by_sender.clear();
        self.len = 0;
    }
}

/// The writer's memory of the pairs `sender_convs` holds, so that an
/// append by someone who has sent in the conversation before writes (and
/// reads) nothing of the index. It never names a pair the table lacks:
/// pairs a batch writes wait in `fresh` until the batch's transaction has
/// committed ([`SenderConvs::committed`]); a failed batch's are dropped
/// ([`SenderConvs::discard`]).
pub(super) struct SenderConvs {
    known: Pairs,
    fresh: Pairs,
    /// Most pairs `known` holds (past it, it starts over).
    bound: usize,
}

impl Default for SenderConvs {
    fn default() -> Self {
        Self::remembering(REMEMBERED)
    }
}

impl SenderConvs {
    /// A memory of at most `bound` pairs.
    pub(super) fn remembering(bound: usize) -> Self {
        Self { known: Pairs::default(), fresh: Pairs::default(), bound }
    }

    /// Makes sure `sender_convs` holds `(sender, conv)`, in the
    /// transaction of the batch being applied.
    pub(super) fn note(
        &mut self,
        index: &mut Table<'_, (u64, &'static str), ()>,
        sender: u64,
        conv: &str,
    ) -> Result<(), DbError> {
        if self.known.contains(sender, conv) || self.fresh.contains(sender, conv) {
            return Ok(());
        }
        if index.get((sender, conv))?.is_none() {
            index.insert((sender, conv), ())?;
        }
        self.fresh.insert(sender, conv);
        Ok(())
    }

    /// The batch's transaction committed: its pairs are in the table.
    pub(super) fn committed(&mut self) {
        if self.known.len + self.fresh.len > self.bound {
            self.known.clear();
        }
        let fresh = std::mem::take(&mut self.fresh);
        if self.known.len == 0 {
            self.known = fresh;
            return;
        }
        for (sender, convs) in fresh.by_sender {
            for conv in convs {
                self.known.insert(sender, &conv);
            }
        }
    }

    /// The batch failed (nothing of it committed): forgets its pairs.
    pub(super) fn discard(&mut self) {
        self.fresh.clear();
    }
}

/// Indexes every stored message's (sender, conversation), unless that was
/// done before (or the file was created with the index), and drops the
/// per-message index of an earlier version; how many messages it read.
pub(super) fn backfill(txn: &WriteTransaction) -> Result<usize, DbError> {
    let mut counters = txn.open_table(COUNTERS)?;
    if counters.get(INDEXED)?.is_some() {
        return Ok(0);
    }
    if txn.delete_table(OLD_SENT_BY)? {
        tracing::info!("dropped the per-message sender index of an earlier version");
    }
    counters.remove(OLD_INDEXED)?;
    let mut index = txn.open_table(SENDER_CONVS)?;
    let (mut read, mut pairs) = (0, 0);
    // Messages come conversation by conversation: the senders seen in this one.
    let (mut current, mut senders) = (String::new(), HashSet::new());
    for item in txn.open_table(MESSAGES)?.iter()? {
        let (k, v) = item?;
        let (conv, _) = k.value();
        if conv != current {
            current = conv.to_owned();
            senders.clear();
        }
        let sender: Sender = serde_json::from_slice(v.value())?;
        if senders.insert(sender.f) {
            index.insert((sender.f, conv), ())?;
            pairs += 1;
        }
        read += 1;
    }
    counters.insert(INDEXED, 1)?;
    if read > 0 {
        tracing::info!(messages = read, pairs, "indexed the stored messages' senders");
    }
    Ok(read)
}

/// The second components of the `(first, _)` keys of `table`, ascending.
fn seconds_of<V: redb::Value + 'static>(
    table: &impl ReadableTable<(u64, u64), V>,
    first: u64,
) -> Result<Vec<u64>, DbError> {
    let mut out = Vec::new();
    for item in table.range((first, 0)..=(first, u64::MAX))? {
        out.push(item?.0.value().1);
    }
    Ok(out)
}

/// Removes the `(conv, user)` rows of `user` from `table` (keyed by
/// conversation first: a scan of the whole table).
fn remove_user_rows<V: redb::Value + 'static>(
    table: &mut Table<'_, (&'static str, u64), V>,
    user: UserId,
) -> Result<(), DbError> {
    let mut convs = Vec::new();
    for item in table.iter()? {
        let (k, _) = item?;
        let (c, u) = k.value();
        if u == user.0 {
            convs.push(c.to_owned());
        }
    }
    for c in convs {
        table.remove((c.as_str(), user.0))?;
    }
    Ok(())
}

/// The conversations (string form) of `user`'s rows in a `(user, conv)`
/// table, removed.
fn forget_pairs(
    table: &mut Table<'_, (u64, &'static str), u64>,
    user: UserId,
) -> Result<Vec<String>, DbError> {
    let mut convs = Vec::new();
    for item in table.range::<(u64, &str)>((Bound::Included((user.0, "")), Bound::Unbounded))? {
        let (k, _) = item?;
        let (u, c) = k.value();
        if u != user.0 {
            break;
        }
        convs.push(c.to_owned());
    }
    for c in &convs {
        table.remove((user.0, c.as_str()))?;
    }
    Ok(convs)
}

/// The writer's side of [`MessageErasure::forget_reads`].
pub(super) fn forget_reads(t: &mut Tables<'_>, user: UserId) -> Result<usize, DbError> {
    let mut convs: BTreeSet<String> = BTreeSet::new();
    convs.extend(forget_pairs(t.reads.open()?, user)?);
    convs.extend(forget_pairs(t.delivered.open()?, user)?);
    convs.extend(forget_pairs(t.muted.open()?, user)?);
    let mut devices = Vec::new();
    for item in t
        .device_reads
        .open()?
        .range::<(u64, &str, &str)>((Bound::Included((user.0, "", "")), Bound::Unbounded))?
    {
        let (k, _) = item?;
        let (u, c, d) = k.value();
        if u != user.0 {
            break;
        }
        devices.push((c.to_owned(), d.to_owned()));
    }
    for (c, d) in devices {
        t.device_reads.open()?.remove((user.0, c.as_str(), d.as_str()))?;
        convs.insert(c);
    }
    t.receipts_off.open()?.remove(user.0)?;
    Ok(convs.len())
}

/// The writer's side of [`DirectoryErasure::transfer_ownership`]: the
/// group's record and both roles, in the op's transaction.
pub(super) fn transfer_ownership(
    t: &mut Tables<'_>,
    group: GroupId,
    to: UserId,
) -> Result<StoreResult<bool>, DbError> {
    let Some(stored) = t.groups.open()?.get(group.0)?.map(|g| g.value().to_vec()) else {
        return Ok(Err(StoreError::NotFound));
    };
    if t.members.open()?.get((group.0, to.0))?.is_none() {
        return Ok(Ok(false));
    }
    let mut found: Group = serde_json::from_slice(&stored)?;
    let old = found.owner;
    if old != to {
        if t.members.open()?.get((group.0, old.0))?.is_some() {
            t.members.open()?.insert((group.0, old.0), role_code(Role::Admin))?;
        }
        t.members.open()?.insert((group.0, to.0), role_code(Role::Owner))?;
        found.owner = to;
        t.groups.open()?.insert(group.0, serde_json::to_vec(&found)?.as_slice())?;
    }
    Ok(Ok(true))
}

/// The writer's side of [`DirectoryErasure::erase_user`]: every row of
/// the user's in the directory (of direct chats, the user's own side
/// only), in the op's transaction.
pub(super) fn erase_user(t: &mut Tables<'_>, user: UserId) -> Result<bool, DbError> {
    let Some(stored) = t.users.open()?.remove(user.0)?.map(|g| g.value().to_vec()) else { return Ok(false) };
    let account: User = serde_json::from_slice(&stored)?;
    if t.usernames.open()?.get(account.username.as_str())?.map(|g| g.value()) == Some(user.0) {
        t.usernames.open()?.remove(account.username.as_str())?;
    }
    for group in seconds_of(&*t.user_groups.open()?, user.0)? {
        t.remove_member(GroupId(group), user)?;
    }
    for room in seconds_of(&*t.user_rooms.open()?, user.0)? {
        t.leave_room(im_protocol::RoomId(room), user)?;
    }
    // Only the user's own side: the peer keeps the conversation in their inbox.
    for peer in seconds_of(&*t.directs.open()?, user.0)? {
        t.directs.open()?.remove((user.0, peer))?;
    }
    for other in seconds_of(&*t.contacts.open()?, user.0)? {
        super::contacts::unrelate(t, user, UserId(other))?;
    }
    for blocked in seconds_of(&*t.blocks.open()?, user.0)? {
        t.blocks.open()?.remove((user.0, blocked))?;
        t.blocked_by.open()?.remove((blocked, user.0))?;
    }
    for blocker in seconds_of(&*t.blocked_by.open()?, user.0)? {
        t.blocked_by.open()?.remove((user.0, blocker))?;
        t.blocks.open()?.remove((blocker, user.0))?;
    }
    remove_user_rows(t.member_mutes.open()?, user)?;
    remove_user_rows(t.bans.open()?, user)?;
    Ok(true)
}

#[async_trait]
impl MessageErasure for EmbeddedStore {
    async fn sent_by(
        &self,
        user: UserId,
        after: Option<SentCursor>,
        limit: usize,
    ) -> StoreResult<Vec<SentCursor>> {
        // Rare (erasing a user): the sender index is read from redb alone.
        self.read_drained(move |txn| {
            let index = txn.open_table(SENDER_CONVS)?;
            let messages = txn.open_table(MESSAGES)?;
            let after = after.map(|(conv, id)| (conv.to_string(), id));
            let first = after.as_ref().map_or("", |(c, _)| c.as_str());
            let mut out = Vec::new();
            for item in index.range::<(u64, &str)>((Bound::Included((user.0, first)), Bound::Unbounded))? {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = item?;
                let (u, c) = k.value();
                if u != user.0 {
                    break;
                }
                // The cursor's conversation goes on after its id; later ones start over.
                let from = match &after {
                    Some((ac, id)) if ac == c => match id.checked_add(1) {
                        Some(next) => next,
                        None => continue,
                    },
                    _ => 0,
                };
                let conv =
                    c.parse::<ConversationId>().map_err(|_| DbError(format!("bad conversation key {c}")))?;
                for item in messages.range((c, from)..=(c, u64::MAX))? {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = item?;
                    let sender: Sender = serde_json::from_slice(v.value())?;
                    if sender.f == user.0 {
                        out.push((conv, k.value().1));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn forget_reads(&self, user: UserId) -> StoreResult<usize> {
        match self.call(Op::ForgetReads(user)).await? {
            Reply::Count(n) => Ok(n),
            r => Err(super::unexpected(r)),
        }
    }
}

#[async_trait]
impl DirectoryErasure for EmbeddedStore {
    async fn transfer_ownership(&self, group: GroupId, to: UserId) -> StoreResult<bool> {
        self.call_bool(Op::TransferOwnership { group, to }).await
    }

    async fn erase_user(&self, user: UserId) -> StoreResult<bool> {
        self.call_bool(Op::EraseUser(user)).await
    }
}
