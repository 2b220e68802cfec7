//! Erasing a user: [`MessageErasure`] finds what a user sent and forgets
//! their read state; [`DirectoryErasure`] hands their groups on and
//! removes them from the directory.
//!
//! The logic composes the erasure (`Logic::erase_user`): it recalls the
//! user's messages through the ordinary send path when asked (so every
//! device sees the recalls in the conversations' sequences), leaves every
//! group and room with the usual notices, and only then calls
//! [`DirectoryErasure::erase_user`]. These calls are the store's part:
//! each is atomic, and repeating one is harmless.

use async_trait::async_trait;
use im_protocol::{ConversationId, GroupId, MessageId, UserId};

use super::StoreResult;

/// Where a [`MessageErasure::sent_by`] page ends: the next page starts
/// after this message.
pub type SentCursor = (ConversationId, MessageId);

/// The message side of erasing a user. Every built-in store implements it;
/// a message store of an embedder's that does not cannot erase users'
/// messages ([`MessageStore::message_erasure`](super::MessageStore::message_erasure) is
/// `None`, and erasure answers `unavailable`, with either policy).
#[async_trait]
pub trait MessageErasure: Send + Sync + 'static {
    /// Up to `limit` messages and events `user` sent, across every
    /// conversation, in the store's own order of `(conversation, id)`
    /// (ascending ids within a conversation), starting after `after`
    /// (`None`: from the start). The cost is the page, or, for a store that
    /// indexes only the conversations a user wrote in (the embedded and the in-memory store),
    /// reading those conversations' messages from the cursor on.
    async fn sent_by(
        &self,
        user: UserId,
        after: Option<SentCursor>,
        limit: usize,
    ) -> StoreResult<Vec<SentCursor>>;

    /// Forgets `user`'s read state everywhere: read and delivered ids,
    /// device reports, mutes and the receipts setting; how many
    /// conversations had state.
    async fn forget_reads(&self, user: UserId) -> StoreResult<usize>;
}

/// The directory side of erasing a user. Every built-in store implements
/// it; a directory of an embedder's that does not cannot erase users
/// ([`Directory::user_erasure`](super::Directory::user_erasure) is `None`: erasure
/// answers `unavailable`).
#[async_trait]
pub trait DirectoryErasure: Send + Sync + 'static {
    /// Makes member `to` the owner of `group` (the group's `owner` too)
    /// and the owner before an admin, in one atomic step; `false` if `to`
    /// is not a member (nothing changes). Naming the owner changes nothing.
    /// [`StoreError::NotFound`](super::StoreError::NotFound) if there is no
    /// such group.
    async fn transfer_ownership(&self, group: GroupId, to: UserId) -> StoreResult<bool>;

    /// Removes `user` from the directory in one atomic step: the account
    /// (its username becomes free), every group and room membership and
    /// room moderation, the user's own direct-chat records (their peers
    /// keep theirs: the conversation stays in the peer's inbox, with what
    /// is left of it), contacts and blocks on both sides, and mutes and
    /// bans of the user; whether the user existed.
    /// Messages are not touched (see [`MessageErasure`]), nor are groups
    /// the user owned (the logic transfers them first; a group whose owner
    /// was erased keeps `owner` naming the erased id).
    async fn erase_user(&self, user: UserId) -> StoreResult<bool>;
}
