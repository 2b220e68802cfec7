//! [`ModerationStore`]: mutes, bans and room moderators — what a group's
//! owner and admins, or a room's creator and moderators, decide about a
//! member, kept in the store so every node enforces it.
//!
//! Sanctions are keyed `(conversation, user)` and outlive membership: a
//! muted user who leaves and rejoins a room is still muted, and a banned
//! user cannot rejoin a room or be added to a group again
//! ([`Directory::join_room`](super::Directory::join_room) and
//! [`Directory::add_member`](super::Directory::add_member) refuse with
//! [`StoreError::Banned`](super::StoreError::Banned)) until unbanned.

use async_trait::async_trait;
use im_protocol::{ConversationId, RoomId, UserId};

use super::StoreResult;
use crate::model::Role;

/// A member's standing in a group or room, read in one step on the send path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    /// In a group: the member's role.
    pub role: Option<Role>,
    /// In a room: whether the member moderates it.
    pub moderator: bool,
    /// Muted until (ms since the Unix epoch; 0 or past: not muted).
    pub muted_until: u64,
}

/// A sanctioned user of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sanction {
    /// Who.
    pub user: UserId,
    /// Banned (until unbanned).
    pub banned: bool,
    /// Muted until (ms; 0: not muted).
    pub muted_until: u64,
}

/// Mutes, bans and room moderators. Every built-in store implements it; a
/// directory of an embedder's that does not has no moderation
/// ([`Directory::moderation`](super::Directory::moderation) is `None`).
/// `conv` is always a group or a room.
#[async_trait]
pub trait ModerationStore: Send + Sync + 'static {
    /// `user`'s standing in `conv`; `None` if not a member.
    async fn access(&self, conv: ConversationId, user: UserId) -> StoreResult<Option<Access>>;

    /// Mutes `user` in `conv` until `until` (ms; 0 lifts the mute).
    async fn set_muted(&self, conv: ConversationId, user: UserId, until: u64) -> StoreResult<()>;

    /// Bans `user` from `conv` and ends their membership, in one atomic
    /// step (a room moderator also stops moderating); whether they were a
    /// member.
    async fn ban(&self, conv: ConversationId, user: UserId) -> StoreResult<bool>;

    /// Lifts a ban; whether there was one. The user is not re-added.
    async fn unban(&self, conv: ConversationId, user: UserId) -> StoreResult<bool>;

    /// Users banned from `conv` or muted in it with `muted_until > now`,
    /// by user id.
    async fn sanctions(&self, conv: ConversationId, now: u64) -> StoreResult<Vec<Sanction>>;

    /// Makes a member of `room` a moderator, or not; `false` if they are
    /// not a member. Leaving the room ends it.
    async fn set_room_moderator(&self, room: RoomId, user: UserId, on: bool) -> StoreResult<bool>;

    /// The moderators of `room`, by user id.
    async fn room_moderators(&self, room: RoomId) -> StoreResult<Vec<UserId>>;
}
