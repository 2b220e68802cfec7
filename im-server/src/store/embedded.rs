//! Embedded persistent implementation of every storage trait, on [`redb`].
//!
//! One file holds messages, the directory and sessions. Writes go through a
//! single writer thread that applies everything queued so far in one write
//! transaction and commits it durably (group commit): one fsync serves up to
//! [`MAX_BATCH`] requests, and because one thread assigns ids in order,
//! per-conversation ids are gapless and resends are caught even within one
//! batch. Each request is validated before it writes, so a refused request
//! (e.g. `GroupFull`) writes nothing and does not disturb the rest of its
//! batch. Reads run on tokio's blocking pool with their own read transaction.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use im_core::{ClientMsgId, ConversationId, GroupId, Message, MessageId, RoomId, UserId};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{
    Appended, Directory, MessageStore, NewMessage, PendingAppend, SessionStore, StoreError, StoreResult,
};
use crate::model::{Group, Member, Role, Room, Session, User};

/// Most requests the writer applies in one transaction.
pub const MAX_BATCH: usize = 256;
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
}

#[derive(Deserialize)]
struct MsgIn {
    f: u64,
    c: ClientMsgId,
    b: String,
    t: u64,
}

fn decode_msg(conv: ConversationId, id: MessageId, bytes: &[u8]) -> Result<Message, DbError> {
    let m: MsgIn = serde_json::from_slice(bytes)?;
    Ok(Message { conv, id, from: UserId(m.f), cmid: m.c, body: m.b, ts: m.t })
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

/// What the writer thread is asked to do.
enum Op {
    Append(NewMessage),
    CreateUser { username: String, password_hash: String, now: u64 },
    CreateGroup { name: String, owner: UserId, now: u64 },
    AddMember { group: GroupId, user: UserId, role: Role, cap: usize },
    RemoveMember { group: GroupId, user: UserId },
    CreateRoom { name: String, created_by: UserId, now: u64 },
    JoinRoom { room: RoomId, user: UserId },
    LeaveRoom { room: RoomId, user: UserId },
    AddDirect { a: UserId, b: UserId },
    CreateSession(Session),
    RevokeSession(String),
    PurgeExpired(u64),
    Flush,
}

/// The writer's answer to one [`Op`].
#[derive(Debug)]
enum Reply {
    Appended(Appended),
    User(User),
    Group(Group),
    Room(Room),
    Bool(bool),
    Count(usize),
    Unit,
}

struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<Reply>>,
}

/// Stores messages, the directory and sessions in one redb file.
///
/// Dropping it stops the writer thread after it has committed every queued
/// request, and closes the file.
pub struct EmbeddedStore {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store at `path` (e.g. `<data_dir>/im.redb`), creating the
    /// file, its parent directories and its tables if missing, and starts the
    /// writer thread.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(DbError::from)?;
        }
        let db = Database::create(path).map_err(DbError::from)?;
        let txn = db.begin_write().map_err(DbError::from)?;
        Tables::open(&txn)?;
        txn.commit().map_err(DbError::from)?;
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::channel(QUEUE);
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("im-store-writer".into())
            .spawn(move || writer_loop(&writer_db, rx))
            .map_err(DbError::from)?;
        Ok(Self { db, jobs: Some(jobs), writer: Some(writer) })
    }

    async fn call(&self, op: Op) -> StoreResult<Reply> {
        self.enqueue(op).await?.await.map_err(|_| writer_stopped())?
    }

    /// Queues `op` for the writer (which applies requests in queue order)
    /// and returns the receiver of its answer.
    async fn enqueue(&self, op: Op) -> StoreResult<oneshot::Receiver<StoreResult<Reply>>> {
        let jobs = self.jobs.as_ref().ok_or_else(writer_stopped)?;
        let (reply, answer) = oneshot::channel();
        jobs.send(Job { op, reply }).await.map_err(|_| writer_stopped())?;
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
        let db = self.db.clone();
        let task = tokio::task::spawn_blocking(move || f(&db.begin_read()?));
        match task.await {
            Ok(r) => r.map_err(StoreError::from),
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

fn writer_loop(db: &Database, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(db, batch);
    }
}

/// Applies a batch in one write transaction, commits, then answers each job.
fn run_batch(db: &Database, batch: Vec<Job>) {
    let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|j| (j.op, j.reply)).unzip();
    let outcome = if ops.iter().all(|op| matches!(op, Op::Flush)) {
        Ok(ops.iter().map(|_| Ok(Reply::Unit)).collect())
    } else {
        apply_all(db, ops)
    };
    match outcome {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e.0, requests = replies.len(), "store write batch failed");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Backend(e.0.clone())));
            }
        }
    }
}

/// One transaction for all `ops`; an `Err` means nothing was committed.
fn apply_all(db: &Database, ops: Vec<Op>) -> Result<Vec<StoreResult<Reply>>, DbError> {
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(ops.len());
    {
        let mut t = Tables::open(&txn)?;
        for op in ops {
            results.push(t.apply(op)?);
        }
    }
    txn.commit()?;
    Ok(results)
}

type Bytes = &'static [u8];

/// Every table, opened for writing.
struct Tables<'t> {
    messages: Table<'t, (&'static str, u64), Bytes>,
    msg_keys: Table<'t, (&'static str, u64, &'static str), u64>,
    counters: Table<'t, &'static str, u64>,
    users: Table<'t, u64, Bytes>,
    usernames: Table<'t, &'static str, u64>,
    groups: Table<'t, u64, Bytes>,
    members: Table<'t, (u64, u64), u8>,
    user_groups: Table<'t, (u64, u64), ()>,
    rooms: Table<'t, u64, Bytes>,
    room_members: Table<'t, (u64, u64), ()>,
    user_rooms: Table<'t, (u64, u64), ()>,
    directs: Table<'t, (u64, u64), ()>,
    sessions: Table<'t, &'static str, Bytes>,
    session_expiry: Table<'t, (u64, &'static str), ()>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, DbError> {
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            msg_keys: txn.open_table(MSG_KEYS)?,
            counters: txn.open_table(COUNTERS)?,
            users: txn.open_table(USERS)?,
            usernames: txn.open_table(USERNAMES)?,
            groups: txn.open_table(GROUPS)?,
            members: txn.open_table(MEMBERS)?,
            user_groups: txn.open_table(USER_GROUPS)?,
            rooms: txn.open_table(ROOMS)?,
            room_members: txn.open_table(ROOM_MEMBERS)?,
            user_rooms: txn.open_table(USER_ROOMS)?,
            directs: txn.open_table(DIRECTS)?,
            sessions: txn.open_table(SESSIONS)?,
            session_expiry: txn.open_table(SESSION_EXPIRY)?,
        })
    }

    fn next_id(&mut self, counter: &str) -> Result<u64, DbError> {
        let id = self.counters.get(counter)?.map_or(0, |g| g.value()) + 1;
        self.counters.insert(counter, id)?;
        Ok(id)
    }

    /// Applies one op. The inner `Err` is the op's own refusal, checked before
    /// it writes anything; the outer `Err` is fatal for the whole batch.
    fn apply(&mut self, op: Op) -> Result<StoreResult<Reply>, DbError> {
        Ok(Ok(match op {
            Op::Append(m) => return self.append(m),
            Op::CreateUser { username, password_hash, now } => {
                if self.usernames.get(username.as_str())?.is_some() {
                    return Ok(Err(StoreError::Conflict));
                }
                let id = UserId(self.next_id("user")?);
                let user = User { id, username, password_hash, created_at: now };
                self.users.insert(id.0, serde_json::to_vec(&user)?.as_slice())?;
                self.usernames.insert(user.username.as_str(), id.0)?;
                Reply::User(user)
            }
            Op::CreateGroup { name, owner, now } => {
                let id = GroupId(self.next_id("group")?);
                let group = Group { id, name, owner, created_at: now };
                self.groups.insert(id.0, serde_json::to_vec(&group)?.as_slice())?;
                self.members.insert((id.0, owner.0), role_code(Role::Owner))?;
                self.user_groups.insert((owner.0, id.0), ())?;
                Reply::Group(group)
            }
            Op::AddMember { group, user, role, cap } => {
                if self.groups.get(group.0)?.is_none() {
                    return Ok(Err(StoreError::NotFound));
                }
                if self.members.get((group.0, user.0))?.is_some() {
                    self.members.insert((group.0, user.0), role_code(role))?;
                    return Ok(Ok(Reply::Bool(false)));
                }
                let mut count = 0usize;
                for item in self.members.range((group.0, 0)..=(group.0, u64::MAX))? {
                    item?;
                    count += 1;
                }
                if count >= cap {
                    return Ok(Err(StoreError::GroupFull));
                }
                self.members.insert((group.0, user.0), role_code(role))?;
                self.user_groups.insert((user.0, group.0), ())?;
                Reply::Bool(true)
            }
            Op::RemoveMember { group, user } => {
                let was = self.members.remove((group.0, user.0))?.is_some();
                if was {
                    self.user_groups.remove((user.0, group.0))?;
                }
                Reply::Bool(was)
            }
            Op::CreateRoom { name, created_by, now } => {
                let id = RoomId(self.next_id("room")?);
                let room = Room { id, name, created_by, created_at: now };
                self.rooms.insert(id.0, serde_json::to_vec(&room)?.as_slice())?;
                Reply::Room(room)
            }
            Op::JoinRoom { room, user } => {
                if self.rooms.get(room.0)?.is_none() {
                    return Ok(Err(StoreError::NotFound));
                }
                let joined = self.room_members.insert((room.0, user.0), ())?.is_none();
                self.user_rooms.insert((user.0, room.0), ())?;
                Reply::Bool(joined)
            }
            Op::LeaveRoom { room, user } => {
                let was = self.room_members.remove((room.0, user.0))?.is_some();
                self.user_rooms.remove((user.0, room.0))?;
                Reply::Bool(was)
            }
            Op::AddDirect { a, b } => {
                self.directs.insert((a.0, b.0), ())?;
                self.directs.insert((b.0, a.0), ())?;
                Reply::Unit
            }
            Op::CreateSession(s) => {
                self.remove_session(&s.id)?;
                self.sessions.insert(s.id.as_str(), serde_json::to_vec(&s)?.as_slice())?;
                self.session_expiry.insert((s.expires_at, s.id.as_str()), ())?;
                Reply::Unit
            }
            Op::RevokeSession(id) => Reply::Bool(self.remove_session(&id)?),
            Op::PurgeExpired(now) => {
                let mut expired = Vec::new();
                for item in self.session_expiry.range(..(now, ""))? {
                    let (k, _) = item?;
                    let (at, id) = k.value();
                    expired.push((at, id.to_owned()));
                }
                let mut purged = 0;
                for (at, id) in expired {
                    self.session_expiry.remove((at, id.as_str()))?;
                    let stored = self.sessions.get(id.as_str())?.map(|g| g.value().to_vec());
                    // Remove the session only if this entry really is its expiry.
                    let due = stored
                        .map(|b| serde_json::from_slice::<Session>(&b).map_or(true, |s| s.expires_at < now));
                    if due == Some(true) {
                        self.sessions.remove(id.as_str())?;
                        purged += 1;
                    }
                }
                Reply::Count(purged)
            }
            Op::Flush => Reply::Unit,
        }))
    }

    fn append(&mut self, m: NewMessage) -> Result<StoreResult<Reply>, DbError> {
        let c = m.conv.to_string();
        let key = (c.as_str(), m.from.0, m.cmid.as_str());
        if let Some(id) = self.msg_keys.get(key)?.map(|g| g.value()) {
            let stored = self.messages.get((c.as_str(), id))?.map(|g| decode_msg(m.conv, id, g.value()));
            return Ok(match stored {
                Some(Ok(message)) => Ok(Reply::Appended(Appended { message, duplicate: true })),
                Some(Err(e)) => Err(e.into()),
                None => {
                    Err(StoreError::Backend(format!("idempotency key of {c} names missing message {id}")))
                }
            });
        }
        let id = last_id(&self.messages, &c)? + 1;
        let value = serde_json::to_vec(&MsgOut { f: m.from.0, c: m.cmid.as_str(), b: &m.body, t: m.ts })?;
        self.messages.insert((c.as_str(), id), value.as_slice())?;
        self.msg_keys.insert(key, id)?;
        let message = Message { conv: m.conv, id, from: m.from, cmid: m.cmid, body: m.body, ts: m.ts };
        Ok(Ok(Reply::Appended(Appended { message, duplicate: false })))
    }

    /// Removes a session and its expiry entry; whether it existed.
    fn remove_session(&mut self, id: &str) -> Result<bool, DbError> {
        let Some(old) = self.sessions.remove(id)?.map(|g| g.value().to_vec()) else { return Ok(false) };
        // An undecodable record leaves an orphan expiry entry, which purge skips.
        if let Ok(s) = serde_json::from_slice::<Session>(&old) {
            self.session_expiry.remove((s.expires_at, id))?;
        }
        Ok(true)
    }
}

/// The largest message id of conversation `conv` (its string form), 0 for
/// none: the last key of its range. (Files written before this kept a
/// separate `heads` table with the same numbers; it is no longer read or
/// written, which saves one B-tree update per append.)
fn last_id(messages: &impl ReadableTable<(&'static str, u64), Bytes>, conv: &str) -> Result<u64, DbError> {
    let last = messages.range((conv, 0)..=(conv, u64::MAX))?.next_back().transpose()?;
    Ok(last.map_or(0, |(k, _)| k.value().1))
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
mod tests {
    use super::*;
    use crate::store::conformance;

    fn temp_store() -> (tempfile::TempDir, Arc<EmbeddedStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("im.redb")).unwrap();
        (dir, Arc::new(store))
    }

    fn new_msg(conv: ConversationId, from: u64, cmid: &str) -> NewMessage {
        NewMessage {
            conv,
            from: UserId(from),
            cmid: ClientMsgId::new(cmid).unwrap(),
            body: cmid.into(),
            ts: 7,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn messages() {
        let (_dir, store) = temp_store();
        conformance::messages(store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_appends() {
        let (_dir, store) = temp_store();
        conformance::concurrent_appends(store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn directory() {
        let (_dir, store) = temp_store();
        conformance::directory(store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sessions() {
        let (_dir, store) = temp_store();
        conformance::sessions(store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn reopen_keeps_everything_and_ids_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("im.redb");
        let conv = ConversationId::Group(GroupId(1));
        let session = Session { id: "5e55".into(), user: UserId(1), created_at: 1, expires_at: 1000 };
        let (alice, bob, group, room);
        {
            let s = EmbeddedStore::open(&path).unwrap();
            alice = s.create_user("alice", "ha", 1).await.unwrap();
            bob = s.create_user("bob", "hb", 2).await.unwrap();
            group = s.create_group("team", alice.id, 3).await.unwrap();
            assert!(s.add_member(group.id, bob.id, Role::Admin, 10).await.unwrap());
            room = s.create_room("lobby", bob.id, 4).await.unwrap();
            assert!(s.join_room(room.id, alice.id).await.unwrap());
            s.add_direct(alice.id, bob.id).await.unwrap();
            s.create(&session).await.unwrap();
            for i in 1..=3 {
                s.append(new_msg(conv, 1, &format!("m{i}"))).await.unwrap();
            }
            s.flush().await.unwrap();
        }
        let s = EmbeddedStore::open(&path).unwrap();
        assert_eq!(s.user(alice.id).await.unwrap(), Some(alice.clone()));
        assert_eq!(s.user_by_name("bob").await.unwrap(), Some(bob.clone()));
        assert_eq!(s.group(group.id).await.unwrap(), Some(group.clone()));
        let members =
            vec![Member { user: alice.id, role: Role::Owner }, Member { user: bob.id, role: Role::Admin }];
        assert_eq!(s.members(group.id).await.unwrap(), members);
        assert_eq!(s.groups_of(bob.id).await.unwrap(), vec![group.id]);
        assert_eq!(s.room(room.id).await.unwrap(), Some(room.clone()));
        assert_eq!(s.rooms_of(alice.id).await.unwrap(), vec![room.id]);
        assert!(s.in_room(room.id, alice.id).await.unwrap());
        assert_eq!(s.directs_of(bob.id).await.unwrap(), vec![alice.id]);
        assert_eq!(s.get("5e55").await.unwrap(), Some(session));
        assert_eq!(s.heads(&[conv]).await.unwrap(), vec![3]);
        let stored = s.after(conv, 0, 10).await.unwrap();
        assert_eq!(stored.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["m1", "m2", "m3"]);
        // Idempotency keys survived; ids and counters continue without reuse.
        let dup = s.append(new_msg(conv, 1, "m2")).await.unwrap();
        assert_eq!((dup.message.id, dup.duplicate), (2, true));
        assert_eq!(s.append(new_msg(conv, 1, "m4")).await.unwrap().message.id, 4);
        assert_eq!(s.create_user("carol", "hc", 5).await.unwrap().id, UserId(3));
        assert!(matches!(s.create_user("alice", "x", 5).await, Err(StoreError::Conflict)));
        assert_eq!(s.create_group("two", bob.id, 6).await.unwrap().id, GroupId(2));
        assert_eq!(s.create_room("two", bob.id, 7).await.unwrap().id, RoomId(2));
        assert_eq!(s.purge_expired(2000).await.unwrap(), 1);
        drop(s);
        let s = EmbeddedStore::open(&path).unwrap();
        assert_eq!(s.heads(&[conv]).await.unwrap(), vec![4]);
        assert_eq!(s.get("5e55").await.unwrap(), None);
    }

    fn job(op: Op) -> (Job, oneshot::Receiver<StoreResult<Reply>>) {
        let (reply, answer) = oneshot::channel();
        (Job { op, reply }, answer)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn failing_request_does_not_disturb_its_batch() {
        let (_dir, s) = temp_store();
        let g = s.create_group("g", UserId(1), 0).await.unwrap();
        let conv = ConversationId::Group(g.id);
        let user = |name: &str| Op::CreateUser { username: name.into(), password_hash: "h".into(), now: 0 };
        let (jobs, answers): (Vec<_>, Vec<_>) = [
            Op::Append(new_msg(conv, 1, "x1")),
            Op::AddMember { group: g.id, user: UserId(2), role: Role::Member, cap: 1 },
            Op::Append(new_msg(conv, 1, "x2")),
            Op::Append(new_msg(conv, 1, "x1")),
            user("alice"),
            user("alice"),
            Op::JoinRoom { room: RoomId(9), user: UserId(1) },
            Op::AddMember { group: GroupId(9), user: UserId(2), role: Role::Member, cap: 9 },
            Op::AddMember { group: g.id, user: UserId(3), role: Role::Member, cap: 2 },
            Op::Flush,
        ]
        .into_iter()
        .map(job)
        .unzip();
        // Exactly one transaction for all of them, as the writer would run it.
        run_batch(&s.db, jobs);
        let mut got = Vec::new();
        for a in answers {
            got.push(a.await.unwrap());
        }
        let appended = |r: &StoreResult<Reply>| match r {
            Ok(Reply::Appended(a)) => (a.message.id, a.duplicate),
            other => panic!("not appended: {other:?}"),
        };
        assert_eq!(appended(&got[0]), (1, false));
        assert!(matches!(got[1], Err(StoreError::GroupFull)));
        assert_eq!(appended(&got[2]), (2, false));
        assert_eq!(appended(&got[3]), (1, true), "duplicate within one batch");
        assert!(matches!(&got[4], Ok(Reply::User(u)) if u.id == UserId(1)));
        assert!(matches!(got[5], Err(StoreError::Conflict)));
        assert!(matches!(got[6], Err(StoreError::NotFound)));
        assert!(matches!(got[7], Err(StoreError::NotFound)));
        assert!(matches!(got[8], Ok(Reply::Bool(true))));
        assert!(matches!(got[9], Ok(Reply::Unit)));
        // Committed: everything but the refused requests.
        assert_eq!(s.heads(&[conv]).await.unwrap(), vec![2]);
        let ids: Vec<_> = s.members(g.id).await.unwrap().iter().map(|m| m.user.0).collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(s.user_by_name("alice").await.unwrap().map(|u| u.id), Some(UserId(1)));
        assert_eq!(s.create_user("bob", "h", 0).await.unwrap().id, UserId(2));
    }

    /// `cargo test -p im-server --release --lib append_throughput -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "measurement, not a check"]
    async fn append_throughput() {
        const TASKS: u64 = 64;
        const EACH: u64 = 500;
        let (_dir, s) = temp_store();
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let s = s.clone();
                tokio::spawn(async move {
                    let conv = ConversationId::Room(RoomId(t + 1));
                    for i in 0..EACH {
                        s.append(new_msg(conv, t + 1, &format!("m{i}"))).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!("{} appends in {secs:.2}s: {:.0}/s", TASKS * EACH, (TASKS * EACH) as f64 / secs);
    }
}
