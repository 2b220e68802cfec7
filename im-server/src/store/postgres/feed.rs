//! [`FeedStore`] for PostgreSQL: cursors and claims in `feed_cursors`, so
//! every node of a cluster shares them and a conversation is delivered by
//! one node at a time.

use async_trait::async_trait;
use im_protocol::{ConversationId, MessageId};

use super::{col, db_err, key, limit, unkey, PgStore};
use crate::store::{FeedPosition, FeedStore, StoreError, StoreResult};

#[async_trait]
impl FeedStore for PgStore {
    async fn feed_start(&self) -> StoreResult<bool> {
        let mut client = self.conn().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let started = tx
            .execute(
                &self.sql(
                    "INSERT INTO {S}.im_counters (name, last_id) VALUES ('feed_started', 1)
                     ON CONFLICT (name) DO NOTHING",
                ),
                &[],
            )
            .await
            .map_err(db_err)?
            == 1;
        if started {
            tx.execute(
                &self.sql(
                    "INSERT INTO {S}.feed_cursors (conv, delivered)
                     SELECT conv, last_id FROM {S}.conversations ON CONFLICT (conv) DO NOTHING",
                ),
                &[],
            )
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(started)
    }

    async fn feed_backlog(&self, n: usize) -> StoreResult<Vec<FeedPosition>> {
        let rows = self
            .rows(
                "SELECT c.conv, COALESCE(f.delivered, 0), c.last_id
                 FROM {S}.conversations c LEFT JOIN {S}.feed_cursors f ON f.conv = c.conv
                 WHERE c.last_id > COALESCE(f.delivered, 0)
                 ORDER BY c.conv LIMIT $1",
                &[&limit(n)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let conv: String = col(r, 0)?;
                let conv = conv
                    .parse()
                    .map_err(|_| StoreError::Backend(format!("invalid conversation {conv:?} stored")))?;
                Ok(FeedPosition { conv, delivered: unkey(col(r, 1)?), head: unkey(col(r, 2)?) })
            })
            .collect()
    }

    async fn feed_claim(
        &self,
        conv: ConversationId,
        holder: &str,
        now: u64,
        until: u64,
    ) -> StoreResult<Option<MessageId>> {
        let rows = self
            .rows(
                "INSERT INTO {S}.feed_cursors AS f (conv, holder, held_until) VALUES ($1, $2, $4)
                 ON CONFLICT (conv) DO UPDATE SET holder = $2, held_until = $4
                 WHERE f.holder = $2 OR f.held_until <= $3
                 RETURNING f.delivered",
                &[&conv.to_string(), &holder, &key(now), &key(until)],
            )
            .await?;
        rows.first().map(|r| col::<i64>(r, 0).map(unkey)).transpose()
    }

    async fn feed_advance(
        &self,
        conv: ConversationId,
        holder: &str,
        delivered: MessageId,
        until: u64,
    ) -> StoreResult<bool> {
        let changed = self
            .exec(
                "UPDATE {S}.feed_cursors SET delivered = GREATEST(delivered, $3), held_until = $4::bigint,
                        holder = CASE WHEN $4::bigint = 0 THEN '' ELSE holder END
                 WHERE conv = $1 AND holder = $2",
                &[&conv.to_string(), &holder, &key(delivered), &key(until)],
            )
            .await?;
        Ok(changed == 1)
    }
}
