//! Storage seams: messages and read state, the directory (users, groups,
//! rooms, membership) and sessions, with an in-memory, an embedded
//! persistent and a PostgreSQL implementation.
//!
//! The logic talks only to these traits, so a deployment can put messages
//! and the directory in PostgreSQL and sessions in Redis without touching it.
//! Every implementation must pass the shared conformance suite
//! (`store::conformance`, run by each back-end's tests).
//!
//! Contract shared by all methods: a failed call changes nothing (each
//! mutation is atomic), and `StoreError::Backend` is the only error that
//! means "try again later".

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use im_protocol::{ClientMsgId, ConversationId, GroupId, Message, MessageId, RoomId, UserId};

use crate::model::{Group, Member, Role, Room, Session, User};

pub mod contacts;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod erasure;
pub mod feed;
pub mod memory;
pub mod moderation;
#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
pub(crate) mod conformance_contacts;
#[cfg(test)]
pub(crate) mod conformance_erasure;
#[cfg(test)]
pub(crate) mod conformance_events;
#[cfg(test)]
pub(crate) mod conformance_feed;
#[cfg(test)]
pub(crate) mod conformance_moderation;

pub use contacts::{Contact, ContactRefusal, ContactStore};
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedStore;
pub use erasure::{DirectoryErasure, MessageErasure, SentCursor};
pub use feed::{FeedPosition, FeedStore};
pub use memory::MemoryStore;
pub use moderation::{Access, ModerationStore, Sanction};
#[cfg(feature = "postgres")]
pub use postgres::PgStore;

/// What a storage call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique name is taken (username).
    #[error("already exists")]
    Conflict,
    /// The group, room or user the call names does not exist.
    #[error("not found")]
    NotFound,
    /// Adding a member would exceed the group's cap.
    #[error("group is full")]
    GroupFull,
    /// The user is banned from the group or room ([`ModerationStore::ban`]).
    #[error("banned")]
    Banned,
    /// The back-end failed (I/O, connection, corruption); retry later.
    #[error("storage back-end: {0}")]
    Backend(String),
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A message to store; the store assigns its id.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The conversation.
    pub conv: ConversationId,
    /// The sender.
    pub from: UserId,
    /// The sender's idempotency key.
    pub cmid: ClientMsgId,
    /// The content.
    pub body: String,
    /// Server time, ms since the Unix epoch.
    pub ts: u64,
    /// Users the message mentions (checked by the logic).
    pub mentions: Vec<UserId>,
    /// The kind when not text (checked by the logic).
    pub kind: Option<String>,
    /// The content object of that kind.
    pub content: Option<serde_json::Value>,
    /// The message it replies to (checked by the logic).
    pub reply_to: Option<MessageId>,
    /// For an event kind (`reaction`, `edit`, `recall`): the message it
    /// changes (checked by the logic; see [`MessageStore::append`]).
    pub target: Option<MessageId>,
}

impl NewMessage {
    /// The message as stored with `id`.
    pub fn into_message(self, id: MessageId) -> Message {
        Message {
            mentions: self.mentions,
            kind: self.kind,
            content: self.content,
            reply_to: self.reply_to,
            target: self.target,
            ..Message::new(self.conv, id, self.from, self.cmid, self.body, self.ts)
        }
    }
}

/// What storing an event did, computed by [`apply_event`] for every store
/// alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventEffect {
    /// The target changed and must be written back.
    pub target_changed: bool,
    /// The event recalled the target: its earlier edits must be scrubbed.
    pub recalled: bool,
}

/// Applies `event` to `target` (see [`im_protocol::events::apply`]) and scrubs
/// an edit of a message that is recalled (one recalled in a race with the
/// edit), so no copy of the recalled content is stored.
pub(crate) fn apply_event(target: &mut Message, event: &mut Message) -> EventEffect {
    let target_changed = im_protocol::events::apply(target, event);
    if let Some(recall) = target.recalled {
        if event.kind() == im_protocol::events::EDIT {
            scrub_edit(event, recall);
        }
    }
    EventEffect { target_changed, recalled: target_changed && target.recalled == Some(event.id) }
}

/// Empties an edit of a recalled message: it keeps its place in the
/// sequence and its target, and `recalled` names the recall.
pub(crate) fn scrub_edit(edit: &mut Message, recall: MessageId) {
    edit.body.clear();
    edit.content = None;
    edit.mentions.clear();
    edit.recalled = Some(recall);
}

/// Outcome of [`MessageStore::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored message (the earlier one when `duplicate`).
    pub message: Message,
    /// `true` when `(conv, from, cmid)` had been stored before: nothing new
    /// was stored and `message` is the original.
    pub duplicate: bool,
}

/// An append the store has accepted and placed in its conversation's
/// order, completing (durably) later; see [`MessageStore::submit_append`].
pub type PendingAppend = Pin<Box<dyn Future<Output = StoreResult<Appended>> + Send + 'static>>;

/// What [`ReadStore::mark_read`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMark {
    /// The user's read id in the conversation after the call.
    pub read: MessageId,
    /// Whether the call raised it.
    pub raised: bool,
}

/// One user's state in one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadState {
    /// The read id (0: never marked).
    pub read: MessageId,
    /// The delivered id as stored (callers show the larger of it and `read`).
    pub delivered: MessageId,
    /// Pushes for this conversation are muted until this time (ms since
    /// the Unix epoch; `u64::MAX`: for good; 0: not muted).
    pub muted_until: u64,
}

/// One device's own read report in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRead {
    /// The device id.
    pub device: String,
    /// The highest id that device marked read.
    pub read: MessageId,
}

/// How far each user has read each conversation.
///
/// A message store keeps it too (see [`MessageStore`]): storing a message
/// raises its sender's read id in the same atomic step, so a user's own
/// messages are never above their read id, and unread is the number of
/// countable messages above it ([`ReadStore::countable`]).
#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// Raises `user`'s read id in `conv` to at least `id`, and, when
    /// `device` is given, that device's own report likewise; one atomic
    /// step that never lowers either. Per user and conversation at most
    /// [`im_protocol::limits::MAX_DEVICE_READS`] device reports are kept: a
    /// further device replaces the report with the lowest id. The caller
    /// checks that `id` is at most the conversation's head.
    async fn mark_read(
        &self,
        user: UserId,
        conv: ConversationId,
        device: Option<&str>,
        id: MessageId,
    ) -> StoreResult<ReadMark>;

    /// `user`'s state in each conversation (zeros where never marked), in the order given.
    async fn read_states(&self, user: UserId, convs: &[ConversationId]) -> StoreResult<Vec<ReadState>>;

    /// `user`'s read id in each conversation (0 where never marked), in the order given.
    async fn read_ids(&self, user: UserId, convs: &[ConversationId]) -> StoreResult<Vec<MessageId>> {
        Ok(self.read_states(user, convs).await?.into_iter().map(|s| s.read).collect())
    }

    /// Mutes pushes of `conv` for `user` until `until` (ms since the Unix
    /// epoch; `u64::MAX`: for good; 0: unmutes).
    async fn mute(&self, user: UserId, conv: ConversationId, until: u64) -> StoreResult<()>;

    /// The device reports of `user` in `conv`, ordered by device id.
    async fn device_reads(&self, user: UserId, conv: ConversationId) -> StoreResult<Vec<DeviceRead>>;

    /// Raises `user`'s delivered id in each conversation to at least the
    /// id given; returns, per item in order, whether it rose. The
    /// conversations are distinct; the caller checks the ids against the
    /// heads.
    async fn mark_delivered(
        &self,
        user: UserId,
        items: &[(ConversationId, MessageId)],
    ) -> StoreResult<Vec<bool>>;

    /// The state of each user in `conv` (zeros where never marked), in
    /// the order given.
    async fn reads_in(&self, conv: ConversationId, users: &[UserId]) -> StoreResult<Vec<ReadState>>;

    /// Whether `user` shows their read and delivered ids to others (the
    /// default is `true`).
    async fn set_receipts_shared(&self, user: UserId, shared: bool) -> StoreResult<()>;

    /// Whether each user shares receipts, in the order given.
    async fn receipts_shared(&self, users: &[UserId]) -> StoreResult<Vec<bool>>;

    /// For each `(conv, id)`: how many messages of `conv` up to and
    /// including `id` count as unread — every kind but the events
    /// ([`im_protocol::events::is_countable`]) — in the order given; 0 for id 0.
    /// Unread is then `countable(head) - countable(read id)`. The caller
    /// names ids that are stored (at most the head).
    async fn countable(&self, at: &[(ConversationId, MessageId)]) -> StoreResult<Vec<u64>>;
}

/// Durable, ordered message storage keyed `(conversation, message_id)`,
/// with the read state that storing a message changes.
#[async_trait]
pub trait MessageStore: ReadStore {
    /// Stores `msg` with its conversation's next id (last id + 1, starting at
    /// 1), atomically with its idempotency key `(conv, from, cmid)` and with
    /// raising the sender's read id in `conv` to the new id. If that
    /// key was stored before, returns the original message with
    /// `duplicate: true` and stores nothing. Concurrent appends to one
    /// conversation get distinct, gapless ids. Returns only once the message
    /// is durable (as durable as the back-end is).
    ///
    /// An event (`msg.target` set) changes its target in the same atomic
    /// step, as [`im_protocol::events::apply`] says, so `before` and `after`
    /// return every message in its current state; a recall also empties
    /// the target's earlier edits. `NotFound` if the target is not stored.
    async fn append(&self, msg: NewMessage) -> StoreResult<Appended>;

    /// Starts [`append`](Self::append) and returns once the message's place
    /// in its conversation is fixed: of two appends to one conversation
    /// where the second is submitted after the first's `submit_append`
    /// returned, the first gets the smaller id. The returned future
    /// resolves once the append is durable, as `append` would; a store
    /// that group-commits lets many submitted appends of one conversation
    /// share a commit.
    ///
    /// The default runs the whole append before returning, which meets the
    /// contract for any store (callers then serialize on the commit).
    async fn submit_append(&self, msg: NewMessage) -> StoreResult<PendingAppend> {
        let result = self.append(msg).await;
        Ok(Box::pin(std::future::ready(result)))
    }

    /// The message `from` stored in `conv` under `cmid`, if any (what a
    /// resend of it would return).
    async fn sent(
        &self,
        conv: ConversationId,
        from: UserId,
        cmid: &ClientMsgId,
    ) -> StoreResult<Option<Message>>;

    /// Up to `limit` messages of `conv` with ids above `after`, ascending.
    async fn after(&self, conv: ConversationId, after: MessageId, limit: usize) -> StoreResult<Vec<Message>>;

    /// Up to `limit` of the newest messages of `conv` with ids below `before`
    /// (all ids when `None`), returned in ascending order.
    async fn before(
        &self,
        conv: ConversationId,
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Vec<Message>>;

    /// The largest id stored in each conversation (0 for none), in the order given.
    async fn heads(&self, convs: &[ConversationId]) -> StoreResult<Vec<MessageId>>;

    /// The newest message of each conversation (`None` for none), in the
    /// order given. The default asks [`before`](Self::before) once per
    /// conversation; a store with round trips answers in one.
    async fn latest(&self, convs: &[ConversationId]) -> StoreResult<Vec<Option<Message>>> {
        let mut out = Vec::with_capacity(convs.len());
        for &conv in convs {
            out.push(self.before(conv, None, 1).await?.pop());
        }
        Ok(out)
    }

    /// Makes everything stored so far durable (called at shutdown).
    async fn flush(&self) -> StoreResult<()>;

    /// Where the durable message feed keeps its place, if this store keeps
    /// one (every built-in store does; the default: none, and a server
    /// asked to run a feed over it refuses to start).
    fn feed(&self) -> Option<&dyn FeedStore> {
        None
    }

    /// Finding what a user sent and forgetting their read state, for
    /// erasing users (every built-in store can; the default: no).
    fn message_erasure(&self) -> Option<&dyn MessageErasure> {
        None
    }
}

/// Users, groups, rooms and who belongs where.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Creates a user with the next id. `Conflict` if the username is taken.
    async fn create_user(&self, username: &str, password_hash: &str, now: u64) -> StoreResult<User>;
    /// A user by id.
    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// A user by username.
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;

    /// Creates a group with the next id; `owner` becomes its [`Role::Owner`] member.
    async fn create_group(&self, name: &str, owner: UserId, now: u64) -> StoreResult<Group>;
    /// A group by id.
    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>>;
    /// Adds `user` (or changes their role if already a member, without
    /// counting against the cap; the owner's role never changes here, so
    /// a role change racing an ownership transfer cannot demote the new
    /// owner). Returns `true` if the user was not a member
    /// before. `GroupFull` if that would make more than `cap` members,
    /// `NotFound` if the group does not exist, `Banned` if a new member
    /// is banned from it.
    async fn add_member(&self, group: GroupId, user: UserId, role: Role, cap: usize) -> StoreResult<bool>;
    /// Removes `user`; returns whether they were a member. The owner is
    /// never removed (`false`): ownership moves first
    /// ([`DirectoryErasure::transfer_ownership`]), so a removal racing a
    /// transfer cannot leave the group without its owner.
    async fn remove_member(&self, group: GroupId, user: UserId) -> StoreResult<bool>;
    /// The user's role in the group, if a member.
    async fn member_role(&self, group: GroupId, user: UserId) -> StoreResult<Option<Role>>;
    /// All members of a group, ordered by user id.
    async fn members(&self, group: GroupId) -> StoreResult<Vec<Member>>;
    /// The groups a user belongs to, ordered by id.
    async fn groups_of(&self, user: UserId) -> StoreResult<Vec<GroupId>>;

    /// Creates a room with the next id (the creator does not join by this).
    async fn create_room(&self, name: &str, created_by: UserId, now: u64) -> StoreResult<Room>;
    /// A room by id.
    async fn room(&self, id: RoomId) -> StoreResult<Option<Room>>;
    /// Up to `limit` rooms with ids above `after`, ascending.
    async fn rooms(&self, after: RoomId, limit: usize) -> StoreResult<Vec<Room>>;
    /// Joins a room; returns `true` if newly joined. `NotFound` for a
    /// missing room, `Banned` for a user banned from it.
    async fn join_room(&self, room: RoomId, user: UserId) -> StoreResult<bool>;
    /// Leaves a room; returns whether the user was in it.
    async fn leave_room(&self, room: RoomId, user: UserId) -> StoreResult<bool>;
    /// Whether the user has joined the room.
    async fn in_room(&self, room: RoomId, user: UserId) -> StoreResult<bool>;
    /// The rooms a user has joined, ordered by id.
    async fn rooms_of(&self, user: UserId) -> StoreResult<Vec<RoomId>>;

    /// Records that `a` and `b` have a direct conversation (idempotent).
    async fn add_direct(&self, a: UserId, b: UserId) -> StoreResult<()>;
    /// The users `user` has a direct conversation with, ordered by id.
    async fn directs_of(&self, user: UserId) -> StoreResult<Vec<UserId>>;

    /// Sets (or, with `None`, clears) a user's display name; whether the
    /// user exists. The default keeps no display names (`Ok(false)`).
    async fn set_display_name(&self, _user: UserId, _name: Option<&str>) -> StoreResult<bool> {
        Ok(false)
    }

    /// Mutes, bans and room moderators, if this directory keeps them
    /// (every built-in store does; the default: none, so nobody is ever
    /// muted or banned and moderation requests answer `unavailable`).
    fn moderation(&self) -> Option<&dyn ModerationStore> {
        None
    }

    /// Contacts and blocks, if this directory keeps them (every built-in
    /// store does; the default: none — contact requests answer
    /// `unavailable`, nobody is blocked, and presence goes to fellow
    /// members and direct peers only).
    fn contacts(&self) -> Option<&dyn ContactStore> {
        None
    }

    /// Erasing users, if this directory can (every built-in store can;
    /// the default: no — erasure answers `unavailable`).
    fn user_erasure(&self) -> Option<&dyn DirectoryErasure> {
        None
    }
}

/// Login sessions: a token is valid only while its session exists.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session.
    async fn create(&self, session: &Session) -> StoreResult<()>;
    /// A session by id (`None` if unknown or revoked; expired ones may be returned).
    async fn get(&self, id: &str) -> StoreResult<Option<Session>>;
    /// Revokes a session; returns whether it existed.
    async fn revoke(&self, id: &str) -> StoreResult<bool>;
    /// Deletes sessions that expired before `now`; returns how many.
    async fn purge_expired(&self, now: u64) -> StoreResult<usize>;

    /// Adds one to the shared counter `key` and returns its count, for
    /// limits counted across every node sharing this store (failed logins):
    /// a counter that does not exist, or whose window ended, starts again
    /// at 1 and lasts until `expires_at` (ms). `None`: this store keeps no
    /// shared counters, and each node counts alone — exact when only one
    /// node uses the store (the default; the embedded and in-memory stores).
    async fn bump(&self, _key: &str, _expires_at: u64, _now: u64) -> StoreResult<Option<u64>> {
        Ok(None)
    }

    /// Removes the shared counter `key` (none is fine).
    async fn reset(&self, _key: &str) -> StoreResult<()> {
        Ok(())
    }
}
