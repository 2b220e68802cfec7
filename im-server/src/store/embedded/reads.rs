//! Read state in the embedded store: the user's read id per conversation
//! and each device's own report, in two tables the writer updates (a
//! message's append raises its sender's read id in the same transaction).

use std::ops::Bound;

use async_trait::async_trait;
use im_protocol::{ConversationId, MessageId, UserId};
use redb::{ReadableTable, Table, TableDefinition};

use super::tail::Tails;
use super::{DbError, EmbeddedStore, Op, Reply};
use crate::store::{DeviceRead, ReadMark, ReadState, ReadStore, StoreResult};

/// `(user, conv)` → the user's read id.
pub(super) const READS: TableDefinition<(u64, &str), u64> = TableDefinition::new("reads");
/// `(user, conv, device)` → that device's read id.
pub(super) const DEVICE_READS: TableDefinition<(u64, &str, &str), u64> = TableDefinition::new("device_reads");
/// `(user, conv)` → the user's delivered id.
pub(super) const DELIVERED: TableDefinition<(u64, &str), u64> = TableDefinition::new("delivered");
/// Users who do not share receipts.
pub(super) const RECEIPTS_OFF: TableDefinition<u64, ()> = TableDefinition::new("receipts_off");
/// `(user, conv)` → muted until (ms).
pub(super) const MUTED: TableDefinition<(u64, &str), u64> = TableDefinition::new("muted");

/// The state of `users` × `convs` pairs, read from the three tables; a
/// pair's read id is at least `sent[i]`, the newest message its user sent
/// there that is still in the tail.
fn states<'a>(
    txn: &redb::ReadTransaction,
    pairs: impl Iterator<Item = (UserId, &'a str)>,
    sent: &[Option<MessageId>],
) -> Result<Vec<ReadState>, DbError> {
    let (reads, delivered, muted) =
        (txn.open_table(READS)?, txn.open_table(DELIVERED)?, txn.open_table(MUTED)?);
    pairs
        .zip(sent)
        .map(|((u, c), sent)| {
            Ok(ReadState {
                read: reads.get((u.0, c))?.map_or(0, |g| g.value()).max(sent.unwrap_or(0)),
                delivered: delivered.get((u.0, c))?.map_or(0, |g| g.value()),
                muted_until: muted.get((u.0, c))?.map_or(0, |g| g.value()),
            })
        })
        .collect()
}

/// What the tail adds to the pairs' read ids (see [`states`]).
fn sent_in_tail(tail: &Tails, pairs: &[(UserId, String)]) -> Vec<Option<MessageId>> {
    pairs.iter().map(|(u, c)| tail.read_of(*u, c)).collect()
}

/// Gives every member of every existing conversation a read id at its
/// head, when the store was written before read state existed (everything
/// up to the upgrade counts as read, not as a sudden backlog).
pub(super) fn backfill(txn: &redb::WriteTransaction) -> Result<usize, DbError> {
    use super::{DIRECTS, MEMBERS, MESSAGES, ROOM_MEMBERS};
    let messages = txn.open_table(MESSAGES)?;
    let mut pairs: Vec<(UserId, ConversationId)> = Vec::new();
    for item in txn.open_table(MEMBERS)?.iter()? {
        let (g, u) = item?.0.value();
        pairs.push((UserId(u), ConversationId::Group(im_protocol::GroupId(g))));
    }
    for item in txn.open_table(ROOM_MEMBERS)?.iter()? {
        let (r, u) = item?.0.value();
        pairs.push((UserId(u), ConversationId::Room(im_protocol::RoomId(r))));
    }
    for item in txn.open_table(DIRECTS)?.iter()? {
        let (a, b) = item?.0.value();
        pairs.push((UserId(a), ConversationId::direct(UserId(a), UserId(b))));
    }
    let mut reads = txn.open_table(READS)?;
    let mut set = 0;
    for (user, conv) in pairs {
        let c = conv.to_string();
        let head = super::tables::last_id(&messages, &c)?;
        if head > 0 && raise(&mut reads, user, &c, head)?.raised {
            set += 1;
        }
    }
    Ok(set)
}

/// Raises `user`'s read id in `conv` (its string form) to at least `id`.
pub(super) fn raise(
    reads: &mut Table<'_, (u64, &'static str), u64>,
    user: UserId,
    conv: &str,
    id: MessageId,
) -> Result<ReadMark, DbError> {
    let old = reads.get((user.0, conv))?.map(|g| g.value()).unwrap_or(0);
    if id <= old {
        return Ok(ReadMark { read: old, raised: false });
    }
    reads.insert((user.0, conv), id)?;
    Ok(ReadMark { read: id, raised: true })
}

/// Raises `user`'s delivered id in each conversation; whether each rose.
pub(super) fn raise_delivered(
    delivered: &mut Table<'_, (u64, &'static str), u64>,
    user: UserId,
    items: &[(ConversationId, MessageId)],
) -> Result<Vec<bool>, DbError> {
    let mut raised = Vec::with_capacity(items.len());
    for &(conv, id) in items {
        let c = conv.to_string();
        let old = delivered.get((user.0, c.as_str()))?.map(|g| g.value()).unwrap_or(0);
        if id > old {
            delivered.insert((user.0, c.as_str()), id)?;
        }
        raised.push(id > old);
    }
    Ok(raised)
}

/// Raises `device`'s report, replacing the lowest report when the device is
/// new and the user already has `MAX_DEVICE_READS` in `conv`.
pub(super) fn raise_device(
    devices: &mut Table<'_, (u64, &'static str, &'static str), u64>,
    user: UserId,
    conv: &str,
    device: &str,
    id: MessageId,
) -> Result<(), DbError> {
    let old = devices.get((user.0, conv, device))?.map(|g| g.value());
    if let Some(old) = old {
        if id > old {
            devices.insert((user.0, conv, device), id)?;
        }
        return Ok(());
    }
    let reports = device_reports(devices, user, conv)?;
    if reports.len() >= im_protocol::limits::MAX_DEVICE_READS {
        // The first lowest in device order, as every store picks it.
        if let Some(lowest) = reports.iter().min_by_key(|r| r.read) {
            devices.remove((user.0, conv, lowest.device.as_str()))?;
        }
    }
    devices.insert((user.0, conv, device), id)?;
    Ok(())
}

/// Every device report of `user` in `conv`, ordered by device id.
fn device_reports(
    devices: &impl ReadableTable<(u64, &'static str, &'static str), u64>,
    user: UserId,
    conv: &str,
) -> Result<Vec<DeviceRead>, DbError> {
    let mut out = Vec::new();
    let range = (Bound::Included((user.0, conv, "")), Bound::Unbounded);
    for item in devices.range::<(u64, &str, &str)>(range)? {
        let (k, v) = item?;
        let (u, c, device) = k.value();
        if u != user.0 || c != conv {
            break;
        }
        out.push(DeviceRead { device: device.to_owned(), read: v.value() });
    }
    Ok(out)
}

impl EmbeddedStore {
    /// The read state of each `(user, conversation)` pair.
    async fn read_pairs(&self, pairs: Vec<(UserId, String)>) -> StoreResult<Vec<ReadState>> {
        let keys = pairs.clone();
        self.read_merged(
            move |tail| sent_in_tail(tail, &keys),
            move |txn, sent| states(txn, pairs.iter().map(|(u, c)| (*u, c.as_str())), &sent),
        )
        .await
    }
}

#[async_trait]
impl ReadStore for EmbeddedStore {
    async fn mark_read(
        &self,
        user: UserId,
        conv: ConversationId,
        device: Option<&str>,
        id: MessageId,
    ) -> StoreResult<ReadMark> {
        let op = Op::MarkRead { user, conv, device: device.map(str::to_owned), id };
        match self.call(op).await? {
            Reply::Read(mark) => Ok(mark),
            r => Err(super::unexpected(r)),
        }
    }

    async fn read_states(&self, user: UserId, convs: &[ConversationId]) -> StoreResult<Vec<ReadState>> {
        let pairs: Vec<(UserId, String)> = convs.iter().map(|c| (user, c.to_string())).collect();
        self.read_pairs(pairs).await
    }

    async fn mute(&self, user: UserId, conv: ConversationId, until: u64) -> StoreResult<()> {
        self.call(Op::Mute { user, conv, until }).await.map(drop)
    }

    async fn device_reads(&self, user: UserId, conv: ConversationId) -> StoreResult<Vec<DeviceRead>> {
        let c = conv.to_string();
        self.read(move |txn| device_reports(&txn.open_table(DEVICE_READS)?, user, &c)).await
    }

    async fn mark_delivered(
        &self,
        user: UserId,
        items: &[(ConversationId, MessageId)],
    ) -> StoreResult<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match self.call(Op::MarkDelivered { user, items: items.to_vec() }).await? {
            Reply::Flags(raised) => Ok(raised),
            r => Err(super::unexpected(r)),
        }
    }

    async fn reads_in(&self, conv: ConversationId, users: &[UserId]) -> StoreResult<Vec<ReadState>> {
        let c = conv.to_string();
        self.read_pairs(users.iter().map(|&u| (u, c.clone())).collect()).await
    }

    async fn set_receipts_shared(&self, user: UserId, shared: bool) -> StoreResult<()> {
        self.call(Op::SetReceiptsShared { user, shared }).await.map(drop)
    }

    async fn countable(&self, at: &[(ConversationId, MessageId)]) -> StoreResult<Vec<u64>> {
        let at: Vec<(ConversationId, String, MessageId)> =
            at.iter().map(|&(conv, id)| (conv, conv.to_string(), id)).collect();
        let keys: Vec<(String, MessageId)> = at.iter().map(|(_, c, id)| (c.clone(), *id)).collect();
        self.read_merged(
            // The message at `id` if the tail holds it, else the tail's
            // newest when `id` is above it (counting stops at the head).
            move |tail| {
                keys.iter()
                    .map(|(c, id)| {
                        let at = (*id).min(tail.head(c)?);
                        Some((at, tail.value(c, at)?))
                    })
                    .collect::<Vec<_>>()
            },
            move |txn, held| {
                let t = txn.open_table(super::MESSAGES)?;
                let mut out = Vec::with_capacity(at.len());
                for ((conv, c, id), held) in at.into_iter().zip(held) {
                    out.push(match (t.get((c.as_str(), id))?, held) {
                        _ if id == 0 => 0,
                        (Some(v), _) => super::decode_counted(conv, id, v.value())?.1,
                        (None, Some((at, v))) => super::decode_counted(conv, at, &v)?.1,
                        // Not stored (above the head): count up to the head.
                        (None, None) => {
                            match t.range((c.as_str(), 0)..=(c.as_str(), id))?.next_back().transpose()? {
                                Some((k, v)) => super::decode_counted(conv, k.value().1, v.value())?.1,
                                None => 0,
                            }
                        }
                    });
                }
                Ok(out)
            },
        )
        .await
    }

    async fn receipts_shared(&self, users: &[UserId]) -> StoreResult<Vec<bool>> {
        let users = users.to_vec();
        // Written by durable commits only.
        self.read_durable(move |txn| {
            let off = txn.open_table(RECEIPTS_OFF)?;
            users.iter().map(|u| Ok(off.get(u.0)?.is_none())).collect()
        })
        .await
    }
}
