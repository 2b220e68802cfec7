//! Embedded persistent implementation of every storage trait, on [`redb`].
//!
//! One file holds messages, read state, the directory and sessions. Writes go through a
//! single writer thread that applies everything queued so far in one write
//! transaction (group commit) of up to [`MAX_BATCH`] requests, and because one thread assigns ids in order, per-conversation
//! ids are gapless and resends are caught even within one batch. Each
//! request is validated before it writes, so a refused request (e.g.
//! `GroupFull`) writes nothing and does not disturb the rest of its batch.
//! Reads run on tokio's blocking pool with their own read transaction.
//!
//! A batch of only appends is made durable by the *message log*
//! (`im.redb.log` and `im.redb.log2` next to `im.redb`, used in turn: one `fdatasync` per batch) and
//! committed to redb without durability; a durable redb commit follows at
//! least every [`CHECKPOINT_COMMITS`] logged batches or
//! [`CHECKPOINT_APPENDS`] logged appends and within [`CHECKPOINT_INTERVAL`],
//! and starts a new epoch of the log. Opening the store replays
//! the log, so an acknowledged message survives `kill -9` either way.
//!
//! A batch of only plain appends does not even touch redb: its messages
//! wait in the *tail* (`tail.rs`), which reads merge in, until the writer
//! applies thousands of them in one transaction ([`TAIL_APPENDS`],
//! [`TAIL_BYTES`], [`TAIL_AGE`]).

use std::ops::Bound;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use im_protocol::{ClientMsgId, ConversationId, GroupId, Message, MessageId, RoomId, UserId};
use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition};
use serde::Deserialize;
use tokio::sync::{oneshot, Semaphore};

use super::{
    Appended, Directory, MessageStore, NewMessage, PendingAppend, ReadMark, SessionStore, StoreError,
    StoreResult,
};
use crate::model::{Group, Member, Role, Room, Session, User};

mod applier;
mod behind;
mod contacts;
mod directory;
mod erasure;
mod feed;
mod log;
mod moderation;
mod ops;
mod reads;
mod record;
mod replay;
mod syncer;
mod tables;
mod tail;
mod writer;

use record::{decode_counted, decode_msg, encode_msg, MsgIn};

use log::MessageLog;
use ops::{Op, Reply};
use syncer::Visibility;
use tables::last_id;
use tail::Tails;
pub use tail::{TAIL_AGE, TAIL_APPENDS, TAIL_BYTES};
use writer::{Job, Writer};
pub use writer::{CHECKPOINT_APPENDS, CHECKPOINT_COMMITS, CHECKPOINT_INTERVAL, MAX_BATCH};

/// Requests that may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

// Keys: conversations by their string form, ids as u64. Values: JSON or unit.
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const MSG_KEYS: TableDefinition<(&str, u64, &str), u64> = TableDefinition::new("message_keys");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const USERNAMES: TableDefinition<&str, u64> = TableDefinition::new("usernames");
const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");
const MEMBERS: TableDefinition<(u64, u64), u8> = TableDefinition::new("group_members");
const USER_GROUPS: TableDefinition<(u64, u64), ()> = TableDefinition::new("user_groups");
const ROOMS: TableDefinition<u64, &[u8]> = TableDefinition::new("rooms");
const ROOM_MEMBERS: TableDefinition<(u64, u64), ()> = TableDefinition::new("room_members");
const USER_ROOMS: TableDefinition<(u64, u64), ()> = TableDefinition::new("user_rooms");
const DIRECTS: TableDefinition<(u64, u64), ()> = TableDefinition::new("directs");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const SESSION_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("session_expiry");
/// Events stored per conversation (absent: none), for countable ordinals.
const EVENT_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("event_counts");
/// Edits per target `(conv, target, edit id)`, for scrubbing on recall.
const EDITS: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("edits");

/// A back-end failure inside this module; becomes [`StoreError::Backend`].
#[derive(Debug)]
struct DbError(String);

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError(e.to_string())
            }
        }
    )*};
}
db_error_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::DatabaseError,
    serde_json::Error,
    std::io::Error
);

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::Backend(e.0)
    }
}

fn role_code(role: Role) -> u8 {
    match role {
        Role::Member => 0,
        Role::Admin => 1,
        Role::Owner => 2,
    }
}

fn role_of(code: u8) -> Result<Role, DbError> {
    match code {
        0 => Ok(Role::Member),
        1 => Ok(Role::Admin),
        2 => Ok(Role::Owner),
        c => Err(DbError(format!("unknown role code {c}"))),
    }
}

/// Stores messages, the directory and sessions in one redb file.
///
/// Dropping it stops the writer thread after it has committed every queued
/// request, and closes the file.
pub struct EmbeddedStore {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    /// One permit per request queued for the writer (at most [`QUEUE`]).
    slots: Arc<Semaphore>,
    /// Holds reads back until the logged batches they could see are synced.
    visibility: Arc<Visibility>,
    /// Appends logged but not in redb yet, which reads merge in.
    tail: Arc<RwLock<Tails>>,
    writer: Option<JoinHandle<()>>,
    /// Who is delivering which conversation's feed.
    feed_claims: crate::store::feed::LocalClaims,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store at `path` (e.g. `<data_dir>/im.redb`), creating the
    /// file, its parent directories and its tables if missing, replays the
    /// message logs (`<path>.log`, `<path>.log2`) left by a crash, and starts the writer
    /// thread.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path.as_ref(), TAIL_AGE)
    }

    /// [`open`](Self::open) with appends waiting at most `tail_age` in the
    /// tail (tests hold them there).
    fn open_with(path: &Path, tail_age: std::time::Duration) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(DbError::from)?;
        }
        let db = Database::create(path).map_err(DbError::from)?;
        let had_read_state = {
            use redb::TableHandle as _;
            let txn = db.begin_read().map_err(DbError::from)?;
            let names: Vec<String> =
                txn.list_tables().map_err(DbError::from)?.map(|t| t.name().to_owned()).collect();
            names.iter().any(|n| n == "reads")
        };
        let txn = db.begin_write().map_err(DbError::from)?;
        tables::create_tables(&txn)?;
        erasure::backfill(&txn)?;
        if !had_read_state {
            let set = reads::backfill(&txn)?;
            if set > 0 {
                tracing::info!(set, "read state started at the head of every existing conversation");
            }
        }
        txn.commit().map_err(DbError::from)?;
        let (first, second) = (MessageLog::path_for(path), MessageLog::second_path_for(path));
        let (mut first, first_records) = MessageLog::open(&first).map_err(DbError::from)?;
        let (mut second, second_records) = MessageLog::open(&second).map_err(DbError::from)?;
        // The older epoch's records first: a checkpoint under way at the
        // crash left its file's records older than the other's.
        let records = if first.epoch() <= second.epoch() {
            [first_records, second_records].concat()
        } else {
            [second_records, first_records].concat()
        };
        let restored = replay::replay(&db, &records)?;
        if !records.is_empty() {
            tracing::info!(logged = records.len(), restored, "replayed the message log");
        }
        first.clear().map_err(DbError::from)?;
        second.clear_after(first.epoch()).map_err(DbError::from)?;
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::channel();
        let visibility = Arc::new(Visibility::default());
        let tail = Arc::new(RwLock::new(Tails::default()));
        let state = Writer::new(db.clone(), [first, second], visibility.clone(), tail.clone(), tail_age)
            .map_err(DbError::from)?;
        let writer = std::thread::Builder::new()
            .name("im-store-writer".into())
            .spawn(move || state.run(rx))
            .map_err(DbError::from)?;
        let slots = Arc::new(Semaphore::new(QUEUE));
        Ok(Self {
            db,
            jobs: Some(jobs),
            slots,
            visibility,
            tail,
            writer: Some(writer),
            feed_claims: Default::default(),
        })
    }

    /// How many appends the message log of the store at `path` holds that
    /// an open would replay (the appends acknowledged since the last
    /// durable redb commit). Reads the log without opening the store, so
    /// it can look at a store another process has open.
    pub fn logged_appends(path: impl AsRef<Path>) -> StoreResult<usize> {
        let path = path.as_ref();
        let mut logged = 0;
        for log in [MessageLog::path_for(path), MessageLog::second_path_for(path)] {
            logged += log::read_records(&log).map_err(DbError::from)?.len();
        }
        Ok(logged)
    }

    async fn call(&self, op: Op) -> StoreResult<Reply> {
        self.enqueue(op).await?.await.map_err(|_| writer_stopped())?
    }

    /// Queues `op` for the writer (which applies requests in queue order)
    /// and returns the receiver of its answer.
    async fn enqueue(&self, op: Op) -> StoreResult<oneshot::Receiver<StoreResult<Reply>>> {
        let jobs = self.jobs.as_ref().ok_or_else(writer_stopped)?;
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| writer_stopped())?;
        let (reply, answer) = oneshot::channel();
        jobs.send(Job { op, reply, _slot: Some(slot) }).map_err(|_| writer_stopped())?;
        Ok(answer)
    }

    async fn call_bool(&self, op: Op) -> StoreResult<bool> {
        match self.call(op).await? {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, DbError> + Send + 'static,
    {
        self.read_merged(|_| (), move |txn, ()| f(txn)).await
    }

    /// A read of redb and of the tail: `pick` copies what the read needs
    /// from the tail, taken together with the snapshot `f` then reads
    /// (see `tail.rs` for why that pair is consistent).
    async fn read_merged<P, T, F>(
        &self,
        pick: impl FnOnce(&Tails) -> P + Send + 'static,
        f: F,
    ) -> StoreResult<T>
    where
        P: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&ReadTransaction, P) -> Result<T, DbError> + Send + 'static,
    {
        let (db, visibility, tail) = (self.db.clone(), self.visibility.clone(), self.tail.clone());
        on_blocking_pool(move || {
            let (txn, picked) = {
                let tail = tail.read().unwrap_or_else(|p| p.into_inner());
                (db.begin_read().map_err(DbError::from)?, pick(&tail))
            };
            // The snapshot and the tail may hold logged batches whose sync is under way.
            visibility.wait_until_synced()?;
            f(&txn, picked).map_err(StoreError::from)
        })
        .await
    }

    /// A read of tables that only durable commits write (the directory,
    /// sessions, contacts, moderation): no logged batch changes them, so
    /// whatever a snapshot holds of them is durable, and the read does not
    /// wait for the log's sync (a membership check on the send path would
    /// otherwise wait for the previous message's `fdatasync`).
    async fn read_durable<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, DbError> + Send + 'static,
    {
        if let Some(why) = self.visibility.failure() {
            // A stopped store answers no read (until a restart).
            return Err(StoreError::Backend(why));
        }
        let db = self.db.clone();
        on_blocking_pool(move || f(&db.begin_read().map_err(DbError::from)?).map_err(StoreError::from)).await
    }

    /// A read of redb alone, after the writer has applied the tail (for
    /// rare reads that do not merge it).
    async fn read_drained<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, DbError> + Send + 'static,
    {
        self.call(Op::Drain).await?;
        self.read(f).await
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has drained the queue.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }
}

/// Runs a read on tokio's blocking pool.
async fn on_blocking_pool<T: Send + 'static>(
    read: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    match tokio::task::spawn_blocking(read).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Backend(format!("read task failed: {e}"))),
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Backend("store writer stopped".into())
}

fn unexpected(r: Reply) -> StoreError {
    StoreError::Backend(format!("store writer answered {r:?}"))
}

/// Ids of the second key component of `(first, _)` entries, ascending.
fn seconds<V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<(u64, u64), V>,
    first: u64,
) -> Result<Vec<u64>, DbError> {
    let t = txn.open_table(table)?;
    let mut out = Vec::new();
    for item in t.range((first, 0)..=(first, u64::MAX))? {
        out.push(item?.0.value().1);
    }
    Ok(out)
}

fn get_json<T: for<'de> Deserialize<'de>>(
    txn: &ReadTransaction,
    table: TableDefinition<u64, &[u8]>,
    id: u64,
) -> Result<Option<T>, DbError> {
    let t = txn.open_table(table)?;
    let found = t.get(id)?;
    Ok(match found {
        Some(g) => Some(serde_json::from_slice(g.value())?),
        None => None,
    })
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn append(&self, msg: NewMessage) -> StoreResult<Appended> {
        match self.call(Op::Append(msg)).await? {
            Reply::Appended(a) => Ok(*a),
            r => Err(unexpected(r)),
        }
    }

    /// Queued appends are applied in queue order by the one writer thread,
    /// so the place is fixed once the request is queued; the commit it
    /// then waits for is shared with everything queued meanwhile.
    async fn submit_append(&self, msg: NewMessage) -> StoreResult<PendingAppend> {
        let answer = self.enqueue(Op::Append(msg)).await?;
        Ok(Box::pin(async move {
            match answer.await.map_err(|_| writer_stopped())?? {
                Reply::Appended(a) => Ok(*a),
                r => Err(unexpected(r)),
            }
        }))
    }

    async fn sent(
        &self,
        conv: ConversationId,
        from: UserId,
        cmid: &ClientMsgId,
    ) -> StoreResult<Option<Message>> {
        let (c, cmid) = (conv.to_string(), cmid.clone());
        let key = (c.clone(), cmid.clone());
        self.read_merged(
            move |tail| tail.sent(&key.0, from.0, key.1.as_str()),
            move |txn, held| {
                let keys = txn.open_table(MSG_KEYS)?;
                let Some(id) = keys.get((c.as_str(), from.0, cmid.as_str()))?.map(|g| g.value()) else {
                    return held.map(|(id, v)| decode_msg(conv, id, &v)).transpose();
                };
                let t = txn.open_table(MESSAGES)?;
                let value = t.get((c.as_str(), id))?;
                value.map(|v| decode_msg(conv, id, v.value())).transpose()
            },
        )
        .await
    }

    async fn after(&self, conv: ConversationId, after: MessageId, limit: usize) -> StoreResult<Vec<Message>> {
        let c = conv.to_string();
        let key = c.clone();
        self.read_merged(
            move |tail| tail.after(&key, after, limit),
            move |txn, held| {
                let t = txn.open_table(MESSAGES)?;
                let range = (Bound::Excluded((c.as_str(), after)), Bound::Included((c.as_str(), u64::MAX)));
                let mut out = Vec::new();
                for item in t.range(range)?.take(limit) {
                    let (k, v) = item?;
                    out.push(decode_msg(conv, k.value().1, v.value())?);
                }
                // Not cut by the limit: redb had nothing newer, the tail may.
                let newest = out.last().map_or(after, |m: &Message| m.id);
                for (id, v) in held.into_iter().filter(|&(id, _)| id > newest) {
                    if out.len() == limit {
                        break;
                    }
                    out.push(decode_msg(conv, id, &v)?);
                }
                Ok(out)
            },
        )
        .await
    }

    async fn before(
        &self,
        conv: ConversationId,
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let c = conv.to_string();
        let key = c.clone();
        self.read_merged(
            move |tail| tail.before(&key, before, limit),
            move |txn, held| {
                let t = txn.open_table(MESSAGES)?;
                // Newest first: the tail's above redb's last id, then redb's.
                let stored_head = last_id(&t, &c)?;
                let newer: Vec<_> = held.into_iter().filter(|&(id, _)| id > stored_head).collect();
                let upper = match before {
                    Some(b) => Bound::Excluded((c.as_str(), b)),
                    None => Bound::Included((c.as_str(), u64::MAX)),
                };
                let mut out = Vec::new();
                let want = limit.saturating_sub(newer.len());
                for item in t.range((Bound::Included((c.as_str(), 0)), upper))?.rev().take(want) {
                    let (k, v) = item?;
                    out.push(decode_msg(conv, k.value().1, v.value())?);
                }
                out.reverse();
                for (id, v) in newer {
                    out.push(decode_msg(conv, id, &v)?);
                }
                Ok(out)
            },
        )
        .await
    }

    async fn heads(&self, convs: &[ConversationId]) -> StoreResult<Vec<MessageId>> {
        let convs: Vec<String> = convs.iter().map(ToString::to_string).collect();
        let keys = convs.clone();
        self.read_merged(
            move |tail| keys.iter().map(|c| tail.head(c)).collect::<Vec<_>>(),
            move |txn, held| {
                let t = txn.open_table(MESSAGES)?;
                convs.iter().zip(held).map(|(c, h)| Ok(last_id(&t, c)?.max(h.unwrap_or(0)))).collect()
            },
        )
        .await
    }

    /// One read transaction for every conversation.
    async fn latest(&self, convs: &[ConversationId]) -> StoreResult<Vec<Option<Message>>> {
        let convs = convs.to_vec();
        let keys: Vec<String> = convs.iter().map(ToString::to_string).collect();
        self.read_merged(
            move |tail| keys.iter().map(|c| tail.last(c)).collect::<Vec<_>>(),
            move |txn, held| {
                let t = txn.open_table(MESSAGES)?;
                let mut out = Vec::with_capacity(convs.len());
                for (conv, held) in convs.into_iter().zip(held) {
                    let c = conv.to_string();
                    let last = t.range((c.as_str(), 0)..=(c.as_str(), u64::MAX))?.next_back().transpose()?;
                    out.push(match (last, held) {
                        (Some((k, _)), Some((id, v))) if id > k.value().1 => Some(decode_msg(conv, id, &v)?),
                        (Some((k, v)), _) => Some(decode_msg(conv, k.value().1, v.value())?),
                        (None, Some((id, v))) => Some(decode_msg(conv, id, &v)?),
                        (None, None) => None,
                    });
                }
                Ok(out)
            },
        )
        .await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.call(Op::Flush).await.map(drop)
    }

    fn feed(&self) -> Option<&dyn crate::store::FeedStore> {
        Some(self)
    }

    fn message_erasure(&self) -> Option<&dyn crate::store::MessageErasure> {
        Some(self)
    }
}

#[cfg(test)]
mod tail_tests;
#[cfg(test)]
mod tests;
