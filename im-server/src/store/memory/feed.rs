//! The in-memory store's [`FeedStore`]: cursors in a map, claims in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use im_protocol::{ConversationId, MessageId};

use super::{lock, MemoryStore};
use crate::store::feed::LocalClaims;
use crate::store::{FeedPosition, FeedStore, StoreResult};

/// Cursors and claims of the feed.
#[derive(Debug, Default)]
pub(super) struct MemoryFeed {
    /// `None` until the feed first starts.
    cursors: Mutex<Option<HashMap<ConversationId, MessageId>>>,
    claims: LocalClaims,
}

#[async_trait]
impl FeedStore for MemoryStore {
    async fn feed_start(&self) -> StoreResult<bool> {
        let heads: HashMap<ConversationId, MessageId> =
            lock(&self.messages).convs.iter().map(|(c, v)| (*c, v.len() as MessageId)).collect();
        let mut cursors = lock(&self.feed.cursors);
        if cursors.is_some() {
            return Ok(false);
        }
        *cursors = Some(heads);
        Ok(true)
    }

    async fn feed_backlog(&self, limit: usize) -> StoreResult<Vec<FeedPosition>> {
        let heads: Vec<(ConversationId, MessageId)> =
            lock(&self.messages).convs.iter().map(|(c, v)| (*c, v.len() as MessageId)).collect();
        let cursors = lock(&self.feed.cursors);
        let mut behind: Vec<FeedPosition> = heads
            .into_iter()
            .filter_map(|(conv, head)| {
                let delivered = cursors.as_ref().and_then(|c| c.get(&conv)).copied().unwrap_or(0);
                (head > delivered).then_some(FeedPosition { conv, delivered, head })
            })
            .collect();
        behind.sort_by_key(|p| p.conv.to_string());
        behind.truncate(limit);
        Ok(behind)
    }

    async fn feed_claim(
        &self,
        conv: ConversationId,
        holder: &str,
        now: u64,
        until: u64,
    ) -> StoreResult<Option<MessageId>> {
        if !self.feed.claims.claim(conv, holder, now, until) {
            return Ok(None);
        }
        let cursors = lock(&self.feed.cursors);
        Ok(Some(cursors.as_ref().and_then(|c| c.get(&conv)).copied().unwrap_or(0)))
    }

    async fn feed_advance(
        &self,
        conv: ConversationId,
        holder: &str,
        delivered: MessageId,
        until: u64,
    ) -> StoreResult<bool> {
        let mut cursors = lock(&self.feed.cursors);
        if !self.feed.claims.renew(conv, holder, until) {
            return Ok(false);
        }
        let cursor = cursors.get_or_insert_with(HashMap::new).entry(conv).or_insert(0);
        *cursor = (*cursor).max(delivered);
        Ok(true)
    }
}
