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
//! (`im.redb.log` next to `im.redb`: one `fdatasync` per batch) and
//! committed to redb without durability; a durable redb commit follows at
//! least every [`CHECKPOINT_COMMITS`] logged batches or
//! [`CHECKPOINT_APPENDS`] logged appends and within [`CHECKPOINT_INTERVAL`],
//! and starts a new epoch of the log. Opening the store replays
//! the log, so an acknowledged message survives `kill -9` either way.

use std::ops::Bound;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use im_core::{ClientMsgId, ConversationId, GroupId, Message, MessageId, RoomId, UserId};
use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Semaphore};

use super::{
    Appended, Directory, MessageStore, NewMessage, PendingAppend, ReadMark, SessionStore, StoreError,
    StoreResult,
};
use crate::model::{Group, Member, Role, Room, Session, User};

mod log;
mod reads;
mod syncer;
mod tables;
mod writer;

use log::MessageLog;
use syncer::Visibility;
use tables::last_id;
use writer::{Job, Op, Reply, Writer};
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

/// A message's stored value; `conv` and `id` are its key.
#[derive(Serialize)]
struct MsgOut<'a> {
    f: u64,
    c: &'a str,
    b: &'a str,
    t: u64,
    #[serde(skip_serializing_if = "<[UserId]>::is_empty")]
    m: &'a [UserId],
}

#[derive(Deserialize)]
struct MsgIn {
    f: u64,
    c: ClientMsgId,
    b: String,
    t: u64,
    /// Mentions (absent in values stored before they existed, and when none).
    #[serde(default)]
    m: Vec<UserId>,
}

fn decode_msg(conv: ConversationId, id: MessageId, bytes: &[u8]) -> Result<Message, DbError> {
    let m: MsgIn = serde_json::from_slice(bytes)?;
    Ok(Message { conv, id, from: UserId(m.f), cmid: m.c, body: m.b, ts: m.t, mentions: m.m })
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
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store at `path` (e.g. `<data_dir>/im.redb`), creating the
    /// file, its parent directories and its tables if missing, replays the
    /// message log (`<path>.log`) left by a crash, and starts the writer
    /// thread.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(DbError::from)?;
        }
        let db = Database::create(path).map_err(DbError::from)?;
        let txn = db.begin_write().map_err(DbError::from)?;
        tables::create_tables(&txn)?;
        txn.commit().map_err(DbError::from)?;
        let (mut log, records) = MessageLog::open(&MessageLog::path_for(path)).map_err(DbError::from)?;
        let restored = writer::replay(&db, &records)?;
        if !records.is_empty() {
            tracing::info!(logged = records.len(), restored, "replayed the message log");
        }
        log.clear().map_err(DbError::from)?;
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::channel();
        let visibility = Arc::new(Visibility::default());
        let state = Writer::new(db.clone(), log, visibility.clone()).map_err(DbError::from)?;
        let writer = std::thread::Builder::new()
            .name("im-store-writer".into())
            .spawn(move || state.run(rx))
            .map_err(DbError::from)?;
        let slots = Arc::new(Semaphore::new(QUEUE));
        Ok(Self { db, jobs: Some(jobs), slots, visibility, writer: Some(writer) })
    }

    /// How many appends the message log of the store at `path` holds that
    /// an open would replay (the appends acknowledged since the last
    /// durable redb commit). Reads the log without opening the store, so
    /// it can look at a store another process has open.
    pub fn logged_appends(path: impl AsRef<Path>) -> StoreResult<usize> {
        let records = log::read_records(&MessageLog::path_for(path.as_ref())).map_err(DbError::from)?;
        Ok(records.len())
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
        let (db, visibility) = (self.db.clone(), self.visibility.clone());
        let task = tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(DbError::from)?;
            // The snapshot may hold logged batches whose sync is under way.
            visibility.wait_until_synced()?;
            f(&txn).map_err(StoreError::from)
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Backend(format!("read task failed: {e}"))),
        }
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
            Reply::Appended(a) => Ok(a),
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
                Reply::Appended(a) => Ok(a),
                r => Err(unexpected(r)),
            }
        }))
    }

    async fn after(&self, conv: ConversationId, after: MessageId, limit: usize) -> StoreResult<Vec<Message>> {
        self.read(move |txn| {
            let c = conv.to_string();
            let t = txn.open_table(MESSAGES)?;
            let range = (Bound::Excluded((c.as_str(), after)), Bound::Included((c.as_str(), u64::MAX)));
            let mut out = Vec::new();
            for item in t.range(range)?.take(limit) {
                let (k, v) = item?;
                out.push(decode_msg(conv, k.value().1, v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn before(
        &self,
        conv: ConversationId,
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        self.read(move |txn| {
            let c = conv.to_string();
            let t = txn.open_table(MESSAGES)?;
            let upper = match before {
                Some(b) => Bound::Excluded((c.as_str(), b)),
                None => Bound::Included((c.as_str(), u64::MAX)),
            };
            let mut out = Vec::new();
            for item in t.range((Bound::Included((c.as_str(), 0)), upper))?.rev().take(limit) {
                let (k, v) = item?;
                out.push(decode_msg(conv, k.value().1, v.value())?);
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn heads(&self, convs: &[ConversationId]) -> StoreResult<Vec<MessageId>> {
        let convs: Vec<String> = convs.iter().map(ToString::to_string).collect();
        self.read(move |txn| {
            let t = txn.open_table(MESSAGES)?;
            convs.iter().map(|c| last_id(&t, c)).collect()
        })
        .await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.call(Op::Flush).await.map(drop)
    }
}

#[async_trait]
impl Directory for EmbeddedStore {
    async fn create_user(&self, username: &str, password_hash: &str, now: u64) -> StoreResult<User> {
        let op = Op::CreateUser { username: username.into(), password_hash: password_hash.into(), now };
        match self.call(op).await? {
            Reply::User(u) => Ok(u),
            r => Err(unexpected(r)),
        }
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read(move |txn| get_json(txn, USERS, id.0)).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let username = username.to_owned();
        self.read(move |txn| {
            let id = txn.open_table(USERNAMES)?.get(username.as_str())?.map(|g| g.value());
            id.map_or(Ok(None), |id| get_json(txn, USERS, id))
        })
        .await
    }

    async fn create_group(&self, name: &str, owner: UserId, now: u64) -> StoreResult<Group> {
        match self.call(Op::CreateGroup { name: name.into(), owner, now }).await? {
            Reply::Group(g) => Ok(g),
            r => Err(unexpected(r)),
        }
    }

    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        self.read(move |txn| get_json(txn, GROUPS, id.0)).await
    }

    async fn add_member(&self, group: GroupId, user: UserId, role: Role, cap: usize) -> StoreResult<bool> {
        self.call_bool(Op::AddMember { group, user, role, cap }).await
    }

    async fn remove_member(&self, group: GroupId, user: UserId) -> StoreResult<bool> {
        self.call_bool(Op::RemoveMember { group, user }).await
    }

    async fn member_role(&self, group: GroupId, user: UserId) -> StoreResult<Option<Role>> {
        self.read(move |txn| {
            let code = txn.open_table(MEMBERS)?.get((group.0, user.0))?.map(|g| g.value());
            code.map(role_of).transpose()
        })
        .await
    }

    async fn members(&self, group: GroupId) -> StoreResult<Vec<Member>> {
        self.read(move |txn| {
            let t = txn.open_table(MEMBERS)?;
            let mut out = Vec::new();
            for item in t.range((group.0, 0)..=(group.0, u64::MAX))? {
                let (k, v) = item?;
                out.push(Member { user: UserId(k.value().1), role: role_of(v.value())? });
            }
            Ok(out)
        })
        .await
    }

    async fn groups_of(&self, user: UserId) -> StoreResult<Vec<GroupId>> {
        self.read(move |txn| Ok(seconds(txn, USER_GROUPS, user.0)?.into_iter().map(GroupId).collect())).await
    }

    async fn create_room(&self, name: &str, created_by: UserId, now: u64) -> StoreResult<Room> {
        match self.call(Op::CreateRoom { name: name.into(), created_by, now }).await? {
            Reply::Room(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    async fn room(&self, id: RoomId) -> StoreResult<Option<Room>> {
        self.read(move |txn| get_json(txn, ROOMS, id.0)).await
    }

    async fn rooms(&self, after: RoomId, limit: usize) -> StoreResult<Vec<Room>> {
        self.read(move |txn| {
            let t = txn.open_table(ROOMS)?;
            let mut out = Vec::new();
            for item in t.range((Bound::Excluded(after.0), Bound::Unbounded))?.take(limit) {
                out.push(serde_json::from_slice(item?.1.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn join_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        self.call_bool(Op::JoinRoom { room, user }).await
    }

    async fn leave_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        self.call_bool(Op::LeaveRoom { room, user }).await
    }

    async fn in_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        self.read(move |txn| Ok(txn.open_table(ROOM_MEMBERS)?.get((room.0, user.0))?.is_some())).await
    }

    async fn rooms_of(&self, user: UserId) -> StoreResult<Vec<RoomId>> {
        self.read(move |txn| Ok(seconds(txn, USER_ROOMS, user.0)?.into_iter().map(RoomId).collect())).await
    }

    async fn add_direct(&self, a: UserId, b: UserId) -> StoreResult<()> {
        self.call(Op::AddDirect { a, b }).await.map(drop)
    }

    async fn directs_of(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        self.read(move |txn| Ok(seconds(txn, DIRECTS, user.0)?.into_iter().map(UserId).collect())).await
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn create(&self, session: &Session) -> StoreResult<()> {
        self.call(Op::CreateSession(session.clone())).await.map(drop)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        let id = id.to_owned();
        self.read(move |txn| {
            let t = txn.open_table(SESSIONS)?;
            let found = t.get(id.as_str())?;
            Ok(match found {
                Some(g) => Some(serde_json::from_slice(g.value())?),
                None => None,
            })
        })
        .await
    }

    async fn revoke(&self, id: &str) -> StoreResult<bool> {
        self.call_bool(Op::RevokeSession(id.to_owned())).await
    }

    async fn purge_expired(&self, now: u64) -> StoreResult<usize> {
        match self.call(Op::PurgeExpired(now)).await? {
            Reply::Count(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }
}

#[cfg(test)]
mod tests;
