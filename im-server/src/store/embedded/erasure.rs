//! The embedded store's [`MessageErasure`] and [`DirectoryErasure`]: the
//! sender index `sent_by` (written with every new message, by an append
//! and by the log's replay, and filled once from `messages` for a file
//! written before it existed), and the writer's side of forgetting read
//! state, transferring a group and erasing a user, each in the one
//! transaction of its batch.

use std::collections::BTreeSet;
use std::ops::Bound;

use async_trait::async_trait;
use im_core::{ConversationId, GroupId, UserId};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::Deserialize;

use super::tables::Tables;
use super::{role_code, DbError, EmbeddedStore, Op, Reply, COUNTERS, MESSAGES};
use crate::model::{Group, Role, User};
use crate::store::{DirectoryErasure, MessageErasure, SentCursor, StoreError, StoreResult};

/// `(sender, conv, id)`: every message and event stored, by who sent it.
pub(super) const SENT_BY: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("sent_by");
/// The `counters` key present once `sent_by` holds every stored message
/// (files written before the index existed are indexed once, on open).
const INDEXED: &str = "sent_by_indexed";

/// The one field of a stored message the index needs: its sender.
#[derive(Deserialize)]
struct Sender {
    f: u64,
}

/// Indexes every stored message by sender, unless that was done before
/// (or the file was created with the index); how many it indexed.
pub(super) fn backfill(txn: &WriteTransaction) -> Result<usize, DbError> {
    let mut counters = txn.open_table(COUNTERS)?;
    if counters.get(INDEXED)?.is_some() {
        return Ok(0);
    }
    let mut index = txn.open_table(SENT_BY)?;
    let mut indexed = 0;
    for item in txn.open_table(MESSAGES)?.iter()? {
        let (k, v) = item?;
        let (conv, id) = k.value();
        let sender: Sender = serde_json::from_slice(v.value())?;
        index.insert((sender.f, conv, id), ())?;
        indexed += 1;
    }
    counters.insert(INDEXED, 1)?;
    if indexed > 0 {
        tracing::info!(indexed, "indexed the stored messages by sender");
    }
    Ok(indexed)
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
    convs.extend(forget_pairs(&mut t.reads, user)?);
    convs.extend(forget_pairs(&mut t.delivered, user)?);
    convs.extend(forget_pairs(&mut t.muted, user)?);
    let mut devices = Vec::new();
    for item in
        t.device_reads.range::<(u64, &str, &str)>((Bound::Included((user.0, "", "")), Bound::Unbounded))?
    {
        let (k, _) = item?;
        let (u, c, d) = k.value();
        if u != user.0 {
            break;
        }
        devices.push((c.to_owned(), d.to_owned()));
    }
    for (c, d) in devices {
        t.device_reads.remove((user.0, c.as_str(), d.as_str()))?;
        convs.insert(c);
    }
    t.receipts_off.remove(user.0)?;
    Ok(convs.len())
}

/// The writer's side of [`DirectoryErasure::transfer_ownership`]: the
/// group's record and both roles, in the op's transaction.
pub(super) fn transfer_ownership(
    t: &mut Tables<'_>,
    group: GroupId,
    to: UserId,
) -> Result<StoreResult<bool>, DbError> {
    let Some(stored) = t.groups.get(group.0)?.map(|g| g.value().to_vec()) else {
        return Ok(Err(StoreError::NotFound));
    };
    if t.members.get((group.0, to.0))?.is_none() {
        return Ok(Ok(false));
    }
    let mut found: Group = serde_json::from_slice(&stored)?;
    let old = found.owner;
    if old != to {
        if t.members.get((group.0, old.0))?.is_some() {
            t.members.insert((group.0, old.0), role_code(Role::Admin))?;
        }
        t.members.insert((group.0, to.0), role_code(Role::Owner))?;
        found.owner = to;
        t.groups.insert(group.0, serde_json::to_vec(&found)?.as_slice())?;
    }
    Ok(Ok(true))
}

/// The writer's side of [`DirectoryErasure::erase_user`]: every row of
/// the user's in the directory, in the op's transaction.
pub(super) fn erase_user(t: &mut Tables<'_>, user: UserId) -> Result<bool, DbError> {
    let Some(stored) = t.users.remove(user.0)?.map(|g| g.value().to_vec()) else { return Ok(false) };
    let account: User = serde_json::from_slice(&stored)?;
    if t.usernames.get(account.username.as_str())?.map(|g| g.value()) == Some(user.0) {
        t.usernames.remove(account.username.as_str())?;
    }
    for group in seconds_of(&t.user_groups, user.0)? {
        t.remove_member(GroupId(group), user)?;
    }
    for room in seconds_of(&t.user_rooms, user.0)? {
        t.leave_room(im_core::RoomId(room), user)?;
    }
    for peer in seconds_of(&t.directs, user.0)? {
        t.directs.remove((user.0, peer))?;
        t.directs.remove((peer, user.0))?;
    }
    for other in seconds_of(&t.contacts, user.0)? {
        super::contacts::unrelate(t, user, UserId(other))?;
    }
    for blocked in seconds_of(&t.blocks, user.0)? {
        t.blocks.remove((user.0, blocked))?;
        t.blocked_by.remove((blocked, user.0))?;
    }
    for blocker in seconds_of(&t.blocked_by, user.0)? {
        t.blocked_by.remove((user.0, blocker))?;
        t.blocks.remove((blocker, user.0))?;
    }
    remove_user_rows(&mut t.member_mutes, user)?;
    remove_user_rows(&mut t.bans, user)?;
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
        self.read(move |txn| {
            let index = txn.open_table(SENT_BY)?;
            let after = after.map(|(conv, id)| (conv.to_string(), id));
            let start = match &after {
                Some((c, id)) => Bound::Excluded((user.0, c.as_str(), *id)),
                None => Bound::Included((user.0, "", 0)),
            };
            let mut out = Vec::new();
            for item in index.range::<(u64, &str, u64)>((start, Bound::Unbounded))? {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = item?;
                let (u, c, id) = k.value();
                if u != user.0 {
                    break;
                }
                let conv =
                    c.parse::<ConversationId>().map_err(|_| DbError(format!("bad conversation key {c}")))?;
                out.push((conv, id));
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
