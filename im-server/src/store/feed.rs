//! [`FeedStore`]: where the durable message feed ([`crate::feed`]) keeps
//! its place — one delivery cursor per conversation, and a lease that lets
//! one node at a time deliver a conversation, so a cluster delivers each
//! conversation in id order.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use im_protocol::{ConversationId, MessageId};

use super::StoreResult;

/// A conversation the feed has not delivered up to its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPosition {
    /// The conversation.
    pub conv: ConversationId,
    /// The newest id delivered (0: none).
    pub delivered: MessageId,
    /// The newest id stored.
    pub head: MessageId,
}

/// The feed's durable state. Every built-in store implements it; a store
/// of an embedder's that does not cannot run a feed
/// ([`MessageStore::feed`](super::MessageStore::feed) is `None`).
///
/// Times are milliseconds since the Unix epoch. A claim is held by
/// `holder` (a node's name) until `until`; once that has passed, another
/// holder may take it, so a node that died hands its conversations on.
#[async_trait]
pub trait FeedStore: Send + Sync + 'static {
    /// Starts the feed the first time it runs against this store: every
    /// conversation that exists gets a cursor at its head, so the feed
    /// delivers what is stored from now on, not the whole history (a
    /// conversation without a cursor starts from its first message).
    /// Later calls change nothing. Whether this call started it.
    async fn feed_start(&self) -> StoreResult<bool>;

    /// Up to `limit` conversations whose head is past their cursor.
    async fn feed_backlog(&self, limit: usize) -> StoreResult<Vec<FeedPosition>>;

    /// Claims `conv` for `holder` until `until`, unless another holder's
    /// claim lasts past `now`; the cursor if claimed (renewing one's own
    /// claim is a claim).
    async fn feed_claim(
        &self,
        conv: ConversationId,
        holder: &str,
        now: u64,
        until: u64,
    ) -> StoreResult<Option<MessageId>>;

    /// Moves `conv`'s cursor up to `delivered` (never down) and sets the
    /// claim to last until `until` (0 releases it), if `holder` still holds
    /// it; `false` (nothing changed) if another holder has taken it.
    async fn feed_advance(
        &self,
        conv: ConversationId,
        holder: &str,
        delivered: MessageId,
        until: u64,
    ) -> StoreResult<bool>;
}

/// Claims kept in memory: enough for a store only one process opens.
#[derive(Debug, Default)]
pub(crate) struct LocalClaims {
    held: Mutex<HashMap<ConversationId, (String, u64)>>,
}

impl LocalClaims {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, (String, u64)>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes or renews the claim; `false` if another holder's lasts past `now`.
    pub(crate) fn claim(&self, conv: ConversationId, holder: &str, now: u64, until: u64) -> bool {
        let mut held = self.held();
        if let Some((other, other_until)) = held.get(&conv) {
            if other != holder && *other_until > now {
                return false;
            }
        }
        held.insert(conv, (holder.to_owned(), until));
        true
    }

    /// Whether `holder` holds `conv`; sets its end to `until` (0 releases).
    pub(crate) fn renew(&self, conv: ConversationId, holder: &str, until: u64) -> bool {
        let mut held = self.held();
        match held.get_mut(&conv) {
            Some((h, end)) if h == holder => {
                if until == 0 {
                    held.remove(&conv);
                } else {
                    *end = until;
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_exclusive_until_it_lapses_or_is_released() {
        let claims = LocalClaims::default();
        let c = ConversationId::Group(im_protocol::GroupId(1));
        assert!(claims.claim(c, "a", 0, 100));
        assert!(!claims.claim(c, "b", 50, 150), "a's claim lasts");
        assert!(claims.claim(c, "a", 50, 150), "a renews its own");
        assert!(!claims.renew(c, "b", 200), "b holds nothing");
        assert!(claims.claim(c, "b", 151, 300), "a's claim lapsed");
        assert!(!claims.renew(c, "a", 400), "a lost it");
        assert!(claims.renew(c, "b", 0));
        assert!(claims.claim(c, "a", 152, 200), "released");
    }
}
