//! The embedded store's [`FeedStore`]: one cursor per conversation in the
//! `feed_cursors` table (written by the writer; an advance is durable with
//! the next checkpoint, so a crash may deliver a few messages again, which
//! at-least-once allows), claims in memory (one process opens the file).

use std::collections::BTreeSet;

use async_trait::async_trait;
use im_protocol::{ConversationId, GroupId, MessageId, RoomId, UserId};
use redb::{ReadableTable, Table, TableDefinition};

use super::tables::last_id;
use super::{DbError, EmbeddedStore, Op, Reply, DIRECTS, GROUPS, MESSAGES, ROOMS};
use crate::store::{FeedPosition, FeedStore, StoreResult};

/// Conversation (string form) → the newest id the feed delivered.
pub(super) const FEED_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("feed_cursors");

/// The key in `counters` that says the feed has started.
const STARTED: &str = "feed_started";

type Bytes = &'static [u8];

/// Every conversation that can hold messages: groups, rooms and direct
/// pairs (each pair once), from the directory's tables.
fn conversations(
    groups: &impl ReadableTable<u64, Bytes>,
    rooms: &impl ReadableTable<u64, Bytes>,
    directs: &impl ReadableTable<(u64, u64), ()>,
) -> Result<BTreeSet<String>, DbError> {
    let mut out = BTreeSet::new();
    for item in groups.iter()? {
        out.insert(ConversationId::Group(GroupId(item?.0.value())).to_string());
    }
    for item in rooms.iter()? {
        out.insert(ConversationId::Room(RoomId(item?.0.value())).to_string());
    }
    for item in directs.iter()? {
        let (a, b) = item?.0.value();
        if a < b {
            out.insert(ConversationId::direct(UserId(a), UserId(b)).to_string());
        }
    }
    Ok(out)
}

/// The writer's side of [`FeedStore::feed_start`].
pub(super) fn start(
    counters: &mut Table<'_, &'static str, u64>,
    cursors: &mut Table<'_, &'static str, u64>,
    messages: &impl ReadableTable<(&'static str, u64), Bytes>,
    directory: (
        &impl ReadableTable<u64, Bytes>,
        &impl ReadableTable<u64, Bytes>,
        &impl ReadableTable<(u64, u64), ()>,
    ),
) -> Result<bool, DbError> {
    if counters.get(STARTED)?.is_some() {
        return Ok(false);
    }
    for conv in conversations(directory.0, directory.1, directory.2)? {
        let head = last_id(messages, &conv)?;
        if head > 0 && cursors.get(conv.as_str())?.is_none() {
            cursors.insert(conv.as_str(), head)?;
        }
    }
    counters.insert(STARTED, 1)?;
    Ok(true)
}

/// The writer's side of [`FeedStore::feed_advance`]: raises the cursor.
pub(super) fn advance(
    cursors: &mut Table<'_, &'static str, u64>,
    conv: &str,
    delivered: MessageId,
) -> Result<(), DbError> {
    let old = cursors.get(conv)?.map_or(0, |g| g.value());
    if delivered > old {
        cursors.insert(conv, delivered)?;
    }
    Ok(())
}

#[async_trait]
impl FeedStore for EmbeddedStore {
    async fn feed_start(&self) -> StoreResult<bool> {
        self.call_bool(Op::FeedStart).await
    }

    async fn feed_backlog(&self, limit: usize) -> StoreResult<Vec<FeedPosition>> {
        self.read_merged(
            |tail| tail.heads(),
            move |txn, held| {
                let (groups, rooms, directs) =
                    (txn.open_table(GROUPS)?, txn.open_table(ROOMS)?, txn.open_table(DIRECTS)?);
                let (messages, cursors) = (txn.open_table(MESSAGES)?, txn.open_table(FEED_CURSORS)?);
                let mut out = Vec::new();
                for c in conversations(&groups, &rooms, &directs)? {
                    if out.len() == limit {
                        break;
                    }
                    let head = last_id(&messages, &c)?.max(held.get(&c).copied().unwrap_or(0));
                    let delivered = cursors.get(c.as_str())?.map_or(0, |g| g.value());
                    if head > delivered {
                        let conv = c.parse().map_err(|_| DbError(format!("bad conversation key {c}")))?;
                        out.push(FeedPosition { conv, delivered, head });
                    }
                }
                Ok(out)
            },
        )
        .await
    }

    async fn feed_claim(
        &self,
        conv: ConversationId,
        holder: &str,
        now: u64,
        until: u64,
    ) -> StoreResult<Option<MessageId>> {
        if !self.feed_claims.claim(conv, holder, now, until) {
            return Ok(None);
        }
        let c = conv.to_string();
        self.read(move |txn| {
            Ok(Some(txn.open_table(FEED_CURSORS)?.get(c.as_str())?.map_or(0, |g| g.value())))
        })
        .await
    }

    async fn feed_advance(
        &self,
        conv: ConversationId,
        holder: &str,
        delivered: MessageId,
        until: u64,
    ) -> StoreResult<bool> {
        if !self.feed_claims.renew(conv, holder, until) {
            return Ok(false);
        }
        match self.call(Op::FeedAdvance { conv, delivered }).await? {
            Reply::Unit => Ok(true),
            r => Err(super::unexpected(r)),
        }
    }
}
