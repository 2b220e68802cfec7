//! Per-conversation ordering of "store, then publish", without holding a
//! lock across the durable commit.
//!
//! The store assigns ids; the sequencer makes sure that within one
//! conversation, the message stored first is also published first, so live
//! delivery on a node arrives in id order — while many messages of the same
//! conversation share one group commit.
//!
//! A send goes through two steps:
//! 1. **Submit**, under the conversation's stripe lock: read the audience,
//!    hand the message to the store ([`MessageStore::submit_append`]), which
//!    fixes its place in the conversation's order, and take a [`Turn`]
//!    (a ticket in the stripe's publication order). The lock is released
//!    before the commit completes.
//! 2. **Complete**: wait for the commit, then [`Turn::wait`] until every
//!    earlier ticket of the stripe has published (or given up), publish,
//!    and drop the turn, which lets the next ticket go.
//!
//! Conversations are hashed onto a fixed set of stripes: unrelated
//! conversations rarely share one, and memory stays constant however many
//! conversations exist. A dropped turn (a failed append, a cancelled
//! request) never blocks the tickets after it.
//!
//! [`MessageStore::submit_append`]: crate::store::MessageStore::submit_append

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex as SyncMutex;

use im_protocol::ConversationId;
use tokio::sync::{oneshot, Mutex, MutexGuard};

const STRIPES: usize = 1024;

/// Publication order of one stripe.
#[derive(Default)]
struct Order {
    /// The next ticket to hand out.
    next: u64,
    /// The ticket whose turn it is.
    serving: u64,
    /// Tickets dropped before their turn: skipped when reached.
    abandoned: BTreeSet<u64>,
    /// Tickets waiting for their turn, woken one at a time.
    waiters: HashMap<u64, oneshot::Sender<()>>,
}

impl Order {
    /// Passes the turn on from `serving`, skipping abandoned tickets, and
    /// wakes the ticket whose turn it now is.
    fn advance(&mut self) {
        self.serving += 1;
        while self.abandoned.remove(&self.serving) {
            self.serving += 1;
        }
        if let Some(waiter) = self.waiters.remove(&self.serving) {
            let _ = waiter.send(());
        }
    }
}

struct Stripe {
    submit: Mutex<()>,
    order: SyncMutex<Order>,
}

/// Striped per-conversation submission locks and publication order.
pub(crate) struct Sequencer {
    stripes: Vec<Stripe>,
    hasher: std::collections::hash_map::RandomState,
}

/// Exclusive use of a conversation's stripe for the submit step.
pub(crate) struct Submit<'a> {
    stripe: &'a Stripe,
    _lock: MutexGuard<'a, ()>,
}

impl<'a> Submit<'a> {
    /// Takes the next ticket in the stripe's publication order. Call it
    /// once the store has fixed the message's place, still holding the lock.
    pub(crate) fn turn(&self) -> Turn<'a> {
        let mut order = self.stripe.order.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = order.next;
        order.next += 1;
        Turn { stripe: self.stripe, ticket }
    }
}

/// A place in a stripe's publication order. Dropping it (after or before
/// its turn came) lets the next ticket go.
pub(crate) struct Turn<'a> {
    stripe: &'a Stripe,
    ticket: u64,
}

impl Turn<'_> {
    /// Resolves once every earlier ticket of the stripe is done.
    pub(crate) async fn wait(&self) {
        let waiter = {
            let mut order = self.stripe.order.lock().unwrap_or_else(|p| p.into_inner());
            if order.serving == self.ticket {
                return;
            }
            let (tx, rx) = oneshot::channel();
            order.waiters.insert(self.ticket, tx);
            rx
        };
        // The sender is only dropped by `advance` after sending, or by this
        // turn's own drop; either way the turn has come.
        let _ = waiter.await;
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut order = self.stripe.order.lock().unwrap_or_else(|p| p.into_inner());
        if order.serving == self.ticket {
            order.advance();
        } else {
            order.waiters.remove(&self.ticket);
            order.abandoned.insert(self.ticket);
        }
    }
}

impl Sequencer {
    pub(crate) fn new() -> Self {
        let stripes =
            (0..STRIPES).map(|_| Stripe { submit: Mutex::new(()), order: SyncMutex::default() }).collect();
        Self { stripes, hasher: Default::default() }
    }

    /// Waits for exclusive use of `conv`'s stripe for the submit step.
    pub(crate) async fn submit(&self, conv: &ConversationId) -> Submit<'_> {
        let mut h = self.hasher.build_hasher();
        conv.hash(&mut h);
        let stripe = &self.stripes[(std::hash::Hasher::finish(&h) as usize) % STRIPES];
        Submit { stripe, _lock: stripe.submit.lock().await }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex as StdMutex};

    use im_protocol::RoomId;

    use super::*;

    #[tokio::test]
    async fn turns_publish_in_ticket_order_whatever_order_commits_finish() {
        let seq = Sequencer::new();
        let conv = ConversationId::Room(RoomId(1));
        let published = Arc::new(StdMutex::new(Vec::new()));
        let mut turns = Vec::new();
        for _ in 0..5 {
            let submit = seq.submit(&conv).await;
            turns.push(submit.turn());
        }
        // Tickets 0..5; finish them in a scrambled order, each publishing
        // as soon as its turn comes.
        let finishing = turns.into_iter().enumerate().rev().map(|(i, turn)| {
            let published = published.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(((i * 7) % 5) as u64)).await;
                turn.wait().await;
                published.lock().unwrap().push(i);
                drop(turn);
            }
        });
        futures::future::join_all(finishing).await;
        assert_eq!(*published.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn an_abandoned_turn_does_not_block_later_ones() {
        let seq = Sequencer::new();
        let conv = ConversationId::Room(RoomId(2));
        let first = seq.submit(&conv).await.turn();
        let second = seq.submit(&conv).await.turn();
        let third = seq.submit(&conv).await.turn();
        drop(second); // e.g. its append failed, or its request was cancelled
        first.wait().await;
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(1), third.wait())
            .await
            .expect("the third ticket's turn comes once the first is done");
        // A waiting turn that is dropped does not block the next either.
        let fourth = seq.submit(&conv).await.turn();
        let fifth = seq.submit(&conv).await.turn();
        {
            let waiting = fourth.wait();
            tokio::pin!(waiting);
            assert!(futures::FutureExt::now_or_never(waiting.as_mut()).is_none(), "not its turn yet");
        }
        drop(fourth);
        drop(third);
        tokio::time::timeout(std::time::Duration::from_secs(1), fifth.wait()).await.expect("fifth goes");
    }
}
