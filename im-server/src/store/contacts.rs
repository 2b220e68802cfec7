//! [`ContactStore`]: contacts (requests, acceptance, removal) and blocks —
//! the design notes' friend service, kept in the store so every node sees
//! the same relations.
//!
//! A relation is stored from both sides (`alice → bob: requested`, `bob →
//! alice: pending`) and changed for both in one atomic step; a block is
//! one-sided (`alice blocks bob`), ends any contact relation between the
//! two, and refuses requests either way while it lasts.

use async_trait::async_trait;
use im_protocol::{ContactState, UserId};

use super::StoreResult;

/// A contact relation, from one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// The other user.
    pub user: UserId,
    /// `Requested`, `Pending` or `Accepted` (never `None`: no row).
    pub state: ContactState,
    /// When it reached this state (ms since the Unix epoch).
    pub since: u64,
}

/// Why a contact change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactRefusal {
    /// One of the two blocks the other.
    Blocked,
    /// There is no request to accept.
    NoRequest,
}

/// Contacts and blocks. Every built-in store implements it; a directory
/// of an embedder's that does not has no contacts
/// ([`Directory::contacts`](super::Directory::contacts) is `None`).
#[async_trait]
pub trait ContactStore: Send + Sync + 'static {
    /// `from` asks `to`. If `to` had asked `from`, both become contacts;
    /// already contacts or already asked: unchanged. Returns the state from
    /// `from`'s side, or `Blocked` if either blocks the other.
    async fn request_contact(
        &self,
        from: UserId,
        to: UserId,
        now: u64,
    ) -> StoreResult<Result<ContactState, ContactRefusal>>;

    /// `user` accepts `from`'s pending request: both become contacts.
    /// `NoRequest` if `from` has not asked (accepting twice is fine).
    async fn accept_contact(
        &self,
        user: UserId,
        from: UserId,
        now: u64,
    ) -> StoreResult<Result<(), ContactRefusal>>;

    /// Ends the relation between `user` and `other` (declines, cancels or
    /// removes), for both; whether there was one.
    async fn remove_contact(&self, user: UserId, other: UserId) -> StoreResult<bool>;

    /// `user`'s relations, by the other's id.
    async fn contacts(&self, user: UserId) -> StoreResult<Vec<Contact>>;

    /// `user`'s relation with `other`, if any.
    async fn contact(&self, user: UserId, other: UserId) -> StoreResult<Option<Contact>>;

    /// `user` blocks `other`, ending any relation between them; whether it
    /// is new.
    async fn block(&self, user: UserId, other: UserId, now: u64) -> StoreResult<bool>;

    /// Lifts `user`'s block of `other`; whether there was one.
    async fn unblock(&self, user: UserId, other: UserId) -> StoreResult<bool>;

    /// The users `user` blocks, by id.
    async fn blocks(&self, user: UserId) -> StoreResult<Vec<UserId>>;

    /// The users `user` blocks or is blocked by, by id (who must not see
    /// each other's presence).
    async fn blocked_either_way(&self, user: UserId) -> StoreResult<Vec<UserId>>;

    /// Whether `a` blocks `b`, and whether `b` blocks `a`.
    async fn block_between(&self, a: UserId, b: UserId) -> StoreResult<(bool, bool)>;
}
