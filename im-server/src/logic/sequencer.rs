//! Per-conversation ordering of "store, then publish".
//!
//! The store assigns ids; the sequencer makes sure that within one
//! conversation, the message stored first is also published first, so live
//! delivery on a node arrives in id order. Conversations are hashed onto a
//! fixed set of async mutexes (stripes): unrelated conversations rarely
//! contend, and memory stays constant however many conversations exist.
//! The lock is an async one on purpose: it is held across the store write.

use std::hash::{BuildHasher, Hash};

use im_core::ConversationId;
use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 1024;

/// Striped per-conversation locks.
pub(crate) struct Sequencer {
    stripes: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Sequencer {
    pub(crate) fn new() -> Self {
        Self { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(), hasher: Default::default() }
    }

    /// Waits for exclusive use of `conv`'s stripe.
    pub(crate) async fn lock(&self, conv: &ConversationId) -> MutexGuard<'_, ()> {
        let mut h = self.hasher.build_hasher();
        conv.hash(&mut h);
        let i = (std::hash::Hasher::finish(&h) as usize) % STRIPES;
        self.stripes[i].lock().await
    }
}
