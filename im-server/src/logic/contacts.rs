//! Contacts and blocks: friend requests (send, accept, decline, remove), a
//! contact list with presence, and blocks — no direct messages, no contact
//! requests and no presence between two users while either blocks the
//! other. Each change of a relation is told to both users' connections
//! with a `contact` frame (protocol version 2).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use im_protocol::{ContactState, ConversationId, ErrorCode, Presence, ServerFrame, UserId};

use super::Logic;
use crate::broker::{Audience, Event};
use crate::error::{Error, Result};
use crate::store::{ContactRefusal, ContactStore};
use crate::time::now_ms;

/// A contact as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContactEntry {
    /// The other user.
    pub user_id: UserId,
    /// `requested`, `pending` or `accepted`.
    pub state: ContactState,
    /// Since when (ms).
    pub since: u64,
    /// For an accepted contact: their presence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<Presence>,
}

/// How long a node trusts what it read about a block between two users
/// before reading it again: a block made on this node applies at once, one
/// made on another node within this long.
pub const BLOCK_CACHE_TTL: Duration = Duration::from_secs(1);

/// Most unanswered contact requests one user may have out at once.
pub const MAX_OPEN_REQUESTS: usize = 500;

/// Most pairs remembered before the cache is emptied.
const BLOCK_CACHE_CAP: usize = 100_000;

/// Whether either of two users blocks the other, as read recently: keeps a
/// store read (on the embedded store, one that waits for the log's sync)
/// off every direct message.
#[derive(Debug, Default)]
pub(crate) struct BlockCache {
    pairs: Mutex<HashMap<(UserId, UserId), (bool, Instant)>>,
    /// Bumped by every local block or unblock: a read that began before
    /// one is not cached (it may predate the change).
    changes: std::sync::atomic::AtomicU64,
}

impl BlockCache {
    fn key(a: UserId, b: UserId) -> (UserId, UserId) {
        (a.min(b), a.max(b))
    }

    fn get(&self, a: UserId, b: UserId) -> Option<bool> {
        let pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        pairs.get(&Self::key(a, b)).filter(|(_, at)| at.elapsed() < BLOCK_CACHE_TTL).map(|(v, _)| *v)
    }

    /// The change count, to pass to [`put`](Self::put) after a store read.
    fn generation(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Acquire)
    }

    fn put(&self, a: UserId, b: UserId, blocked: bool, read_at: u64) {
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation() != read_at {
            return;
        }
        if pairs.len() >= BLOCK_CACHE_CAP {
            pairs.clear();
        }
        pairs.insert(Self::key(a, b), (blocked, Instant::now()));
    }

    pub(super) fn forget(&self, a: UserId, b: UserId) {
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        self.changes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        pairs.remove(&Self::key(a, b));
    }
}

impl Logic {
    fn contact_store(&self) -> Result<&dyn ContactStore> {
        self.svc
            .directory
            .contacts()
            .ok_or_else(|| Error::new(ErrorCode::Unavailable, "this server's directory keeps no contacts"))
    }

    /// Checks that `other` is someone else who exists.
    async fn check_other(&self, user: UserId, other: UserId) -> Result<()> {
        if user == other {
            return Err(Error::new(ErrorCode::InvalidField, "that is yourself"));
        }
        if self.svc.directory.user(other).await?.is_none() {
            return Err(Error::new(ErrorCode::NoSuchUser, format!("no user {other}")));
        }
        Ok(())
    }

    /// The refusal of something `from` tried towards `to` that a block forbids.
    async fn blocked_error(&self, from: UserId, to: UserId, what: &str) -> Error {
        if !self.cfg.reveal_blocks {
            return Error::new(ErrorCode::Forbidden, format!("cannot {what} this user"));
        }
        let by_me = match self.contact_store() {
            Ok(c) => c.block_between(from, to).await.map(|(mine, _)| mine).unwrap_or(false),
            Err(_) => false,
        };
        if by_me {
            Error::new(ErrorCode::Forbidden, format!("you have blocked user {to}: unblock them first"))
        } else {
            Error::new(ErrorCode::Forbidden, format!("user {to} has blocked you"))
        }
    }

    /// Tells both users' connections where they stand.
    pub(super) async fn tell_contact(&self, a: UserId, b: UserId, state_for_a: ContactState) {
        for (to, user, state) in [(a, b, state_for_a), (b, a, state_for_a.mirrored())] {
            let frame = ServerFrame::Contact { user, state };
            self.publish(Event::Deliver { to: Audience::Users(vec![to]), frame, skip: None }).await;
        }
    }

    /// `from` asks `to` to be contacts (or accepts, if `to` had asked):
    /// the state from `from`'s side. A block either way refuses it.
    pub async fn request_contact(&self, from: UserId, to: UserId) -> Result<ContactState> {
        let store = self.contact_store()?;
        self.check_other(from, to).await?;
        let mine = store.contacts(from).await?;
        let open = mine.iter().filter(|c| c.state == ContactState::Requested).count();
        let new = !mine.iter().any(|c| c.user == to);
        if new && open >= MAX_OPEN_REQUESTS {
            return Err(Error::new(
                ErrorCode::Forbidden,
                format!(
                    "{MAX_OPEN_REQUESTS} contact requests are unanswered: wait for answers or cancel some"
                ),
            ));
        }
        match store.request_contact(from, to, now_ms()).await? {
            Ok(state) => {
                self.tell_contact(from, to, state).await;
                Ok(state)
            }
            Err(_) => Err(self.blocked_error(from, to, "send a contact request to").await),
        }
    }

    /// `user` accepts `from`'s request.
    pub async fn accept_contact(&self, user: UserId, from: UserId) -> Result<()> {
        let store = self.contact_store()?;
        self.check_other(user, from).await?;
        match store.accept_contact(user, from, now_ms()).await? {
            Ok(()) => {
                self.tell_contact(user, from, ContactState::Accepted).await;
                Ok(())
            }
            Err(ContactRefusal::NoRequest | ContactRefusal::Blocked) => {
                Err(Error::new(ErrorCode::InvalidField, format!("user {from} has not asked you")))
            }
        }
    }

    /// Ends `user`'s relation with `other` (declines, cancels or removes);
    /// nothing to end is fine.
    pub async fn remove_contact(&self, user: UserId, other: UserId) -> Result<()> {
        let store = self.contact_store()?;
        self.check_other(user, other).await?;
        if store.remove_contact(user, other).await? {
            self.tell_contact(user, other, ContactState::None).await;
        }
        Ok(())
    }

    /// `user`'s contacts and requests, accepted ones with their presence.
    pub async fn contact_list(&self, user: UserId) -> Result<Vec<ContactEntry>> {
        let contacts = self.contact_store()?.contacts(user).await?;
        let accepted: Vec<UserId> =
            contacts.iter().filter(|c| c.state == ContactState::Accepted).map(|c| c.user).collect();
        let presence = self.svc.presence.store().query(&accepted).await?;
        Ok(contacts
            .into_iter()
            .map(|c| ContactEntry {
                user_id: c.user,
                state: c.state,
                since: c.since,
                presence: presence.iter().find(|p| p.presence.user == c.user).map(|p| p.presence),
            })
            .collect())
    }

    /// Makes `a` and `b` contacts at once, without a request (for the
    /// application's backend mirroring its own graph); already contacts is
    /// fine. A block either way refuses it (`forbidden`).
    pub async fn befriend(&self, a: UserId, b: UserId) -> Result<()> {
        let store = self.contact_store()?;
        if self.svc.directory.user(a).await?.is_none() {
            return Err(Error::new(ErrorCode::NoSuchUser, format!("no user {a}")));
        }
        self.check_other(a, b).await?;
        let blocked =
            || Error::new(ErrorCode::Forbidden, format!("a block between users {a} and {b}: lift it first"));
        let now = now_ms();
        match store.request_contact(a, b, now).await? {
            Err(_) => return Err(blocked()),
            Ok(ContactState::Accepted) => {}
            Ok(_) => {
                if store.accept_contact(b, a, now).await?.is_err() {
                    return Err(blocked()); // blocked between the two steps
                }
            }
        }
        self.tell_contact(a, b, ContactState::Accepted).await;
        Ok(())
    }

    /// `user` blocks `other` (ending any relation between them).
    pub async fn block(&self, user: UserId, other: UserId) -> Result<()> {
        let store = self.contact_store()?;
        self.check_other(user, other).await?;
        let related = store.contact(user, other).await?.is_some();
        store.block(user, other, now_ms()).await?;
        self.block_cache.forget(user, other);
        if related {
            self.tell_contact(user, other, ContactState::None).await;
        }
        Ok(())
    }

    /// `user` lifts their block of `other` (nothing to lift is fine).
    pub async fn unblock(&self, user: UserId, other: UserId) -> Result<()> {
        self.contact_store()?.unblock(user, other).await?;
        self.block_cache.forget(user, other);
        Ok(())
    }

    /// The users `user` blocks.
    pub async fn blocks_of(&self, user: UserId) -> Result<Vec<UserId>> {
        Ok(self.contact_store()?.blocks(user).await?)
    }

    /// Refuses a direct message between users of whom either blocks the other.
    pub(crate) async fn check_direct_block(&self, from: UserId, conv: ConversationId) -> Result<()> {
        let (Some(store), Some(peer)) = (self.svc.directory.contacts(), conv.peer_of(from)) else {
            return Ok(());
        };
        if peer == from {
            return Ok(());
        }
        let blocked = match self.block_cache.get(from, peer) {
            Some(blocked) => blocked,
            None => {
                let read_at = self.block_cache.generation();
                let (mine, theirs) = store.block_between(from, peer).await?;
                self.block_cache.put(from, peer, mine || theirs, read_at);
                mine || theirs
            }
        };
        if blocked {
            return Err(self.blocked_error(from, peer, "message").await);
        }
        Ok(())
    }

    /// The users whose presence `user` may see and who hear of `user`'s:
    /// accepted contacts (the rest of the relation — shared groups, direct
    /// chats — is found by the callers), and who must be left out: users
    /// blocked either way.
    pub(crate) async fn contact_circle(&self, user: UserId) -> Result<(Vec<UserId>, Vec<UserId>)> {
        let Some(store) = self.svc.directory.contacts() else { return Ok((Vec::new(), Vec::new())) };
        let contacts = store.contacts(user).await?;
        let accepted =
            contacts.into_iter().filter(|c| c.state == ContactState::Accepted).map(|c| c.user).collect();
        Ok((accepted, store.blocked_either_way(user).await?))
    }
}
