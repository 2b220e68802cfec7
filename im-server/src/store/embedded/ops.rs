//! What the writer thread is asked to do ([`Op`]) and what it answers
//! ([`Reply`]): every mutation of the embedded store is one of these.

use im_protocol::{ConversationId, GroupId, MessageId, RoomId, UserId};

use super::*;

/// What the writer thread is asked to do.
pub(super) enum Op {
    Append(NewMessage),
    CreateUser {
        username: String,
        password_hash: String,
        now: u64,
    },
    CreateGroup {
        name: String,
        owner: UserId,
        now: u64,
    },
    AddMember {
        group: GroupId,
        user: UserId,
        role: Role,
        cap: usize,
    },
    RemoveMember {
        group: GroupId,
        user: UserId,
    },
    CreateRoom {
        name: String,
        created_by: UserId,
        now: u64,
    },
    JoinRoom {
        room: RoomId,
        user: UserId,
    },
    LeaveRoom {
        room: RoomId,
        user: UserId,
    },
    AddDirect {
        a: UserId,
        b: UserId,
    },
    CreateSession(Session),
    RevokeSession(String),
    PurgeExpired(u64),
    /// With a device, not logged: durable with the next checkpoint (see
    /// [`Writer::apply_all`]); without one, durable before the answer.
    MarkRead {
        user: UserId,
        conv: ConversationId,
        device: Option<String>,
        id: MessageId,
    },
    /// Not logged, like `MarkRead`.
    MarkDelivered {
        user: UserId,
        items: Vec<(ConversationId, MessageId)>,
    },
    SetReceiptsShared {
        user: UserId,
        shared: bool,
    },
    Mute {
        user: UserId,
        conv: ConversationId,
        until: u64,
    },
    /// See [`crate::store::ModerationStore::set_muted`].
    SetMemberMute {
        conv: ConversationId,
        user: UserId,
        until: u64,
    },
    Ban {
        conv: ConversationId,
        user: UserId,
    },
    Unban {
        conv: ConversationId,
        user: UserId,
    },
    SetRoomModerator {
        room: RoomId,
        user: UserId,
        on: bool,
    },
    RequestContact {
        from: UserId,
        to: UserId,
        now: u64,
    },
    AcceptContact {
        user: UserId,
        from: UserId,
        now: u64,
    },
    RemoveContact {
        user: UserId,
        other: UserId,
    },
    Block {
        user: UserId,
        other: UserId,
        now: u64,
    },
    Unblock {
        user: UserId,
        other: UserId,
    },
    SetDisplayName {
        user: UserId,
        name: Option<String>,
    },
    /// See [`crate::store::MessageErasure::forget_reads`].
    ForgetReads(UserId),
    /// See [`crate::store::DirectoryErasure::transfer_ownership`].
    TransferOwnership {
        group: GroupId,
        to: UserId,
    },
    /// See [`crate::store::DirectoryErasure::erase_user`].
    EraseUser(UserId),
    /// See [`crate::store::FeedStore::feed_start`].
    FeedStart,
    /// Not logged, like `MarkRead` (a lost advance delivers again).
    FeedAdvance {
        conv: ConversationId,
        delivered: MessageId,
    },
    /// Makes everything durable in redb (a checkpoint).
    Flush,
    /// Applies the tail to redb (not durably: the log holds it), for a
    /// read that does not merge the tail.
    Drain,
}

/// The writer's answer to one [`Op`].
#[derive(Debug)]
pub(super) enum Reply {
    Appended(Box<Appended>),
    User(User),
    Group(Group),
    Room(Room),
    Bool(bool),
    Count(usize),
    Read(ReadMark),
    Flags(Vec<bool>),
    Contact(Result<im_protocol::ContactState, crate::store::ContactRefusal>),
    Unit,
}
