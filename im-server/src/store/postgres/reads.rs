//! Read state in PostgreSQL: `read_state (user_id, conv, read_id)` and
//! `device_reads (user_id, conv, device, read_id)`. Every write only raises
//! (`GREATEST`), so nodes marking concurrently can never move a read id
//! back. A message's append raises its sender's row in the same statement
//! (see the append in `mod.rs`).

use async_trait::async_trait;
use im_core::{ConversationId, MessageId, UserId};

use super::{bound, col, db_err, key, unkey, PgStore};
use crate::store::{DeviceRead, ReadMark, ReadStore, StoreResult};

#[async_trait]
impl ReadStore for PgStore {
    async fn mark_read(
        &self,
        user: UserId,
        conv: ConversationId,
        device: Option<&str>,
        id: MessageId,
    ) -> StoreResult<ReadMark> {
        let (u, c) = (key(user.0), conv.to_string());
        // An id beyond what this store assigns cannot be a message's.
        let id = bound(id).unwrap_or(i64::MAX);
        let mut client = self.conn().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        // Raises the row (or creates it), locking it: marks of one user in
        // one conversation run one at a time from here, so the device cap
        // below holds under concurrency.
        let raise = tx
            .prepare_cached(&self.sql(
                "INSERT INTO {S}.read_state AS r (user_id, conv, read_id) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, conv) DO UPDATE SET read_id = EXCLUDED.read_id
                 WHERE r.read_id < EXCLUDED.read_id
                 RETURNING read_id",
            ))
            .await
            .map_err(db_err)?;
        let raised = tx.query_opt(&raise, &[&u, &c, &id]).await.map_err(db_err)?.is_some() && id > 0;
        let current = tx
            .prepare_cached(&self.sql("SELECT read_id FROM {S}.read_state WHERE user_id = $1 AND conv = $2"))
            .await
            .map_err(db_err)?;
        let read = unkey(col(&tx.query_one(&current, &[&u, &c]).await.map_err(db_err)?, 0)?);
        if let Some(device) = device {
            let update = tx
                .prepare_cached(&self.sql(
                    "UPDATE {S}.device_reads SET read_id = GREATEST(read_id, $4)
                     WHERE user_id = $1 AND conv = $2 AND device = $3",
                ))
                .await
                .map_err(db_err)?;
            if tx.execute(&update, &[&u, &c, &device, &id]).await.map_err(db_err)? == 0 {
                // A new device: make room by dropping the lowest report
                // (ties: the first device in byte order, as every store).
                let cap = i64::try_from(im_core::limits::MAX_DEVICE_READS).unwrap_or(i64::MAX);
                let evict = tx
                    .prepare_cached(&self.sql(
                        "DELETE FROM {S}.device_reads WHERE user_id = $1 AND conv = $2 AND device = (
                             SELECT device FROM {S}.device_reads WHERE user_id = $1 AND conv = $2
                             ORDER BY read_id, device COLLATE \"C\" LIMIT 1)
                         AND (SELECT count(*) FROM {S}.device_reads WHERE user_id = $1 AND conv = $2) >= $3",
                    ))
                    .await
                    .map_err(db_err)?;
                tx.execute(&evict, &[&u, &c, &cap]).await.map_err(db_err)?;
                let insert = tx
                    .prepare_cached(&self.sql(
                        "INSERT INTO {S}.device_reads (user_id, conv, device, read_id) VALUES ($1, $2, $3, $4)",
                    ))
                    .await
                    .map_err(db_err)?;
                tx.execute(&insert, &[&u, &c, &device, &id]).await.map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(ReadMark { read, raised })
    }

    async fn read_ids(&self, user: UserId, convs: &[ConversationId]) -> StoreResult<Vec<MessageId>> {
        if convs.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = convs.iter().map(ToString::to_string).collect();
        let rows = self
            .rows(
                "SELECT conv, read_id FROM {S}.read_state WHERE user_id = $1 AND conv = ANY($2)",
                &[&key(user.0), &names],
            )
            .await?;
        let found = rows
            .iter()
            .map(|r| Ok((col::<String>(r, 0)?, col::<i64>(r, 1)?)))
            .collect::<StoreResult<std::collections::HashMap<_, _>>>()?;
        Ok(names.iter().map(|c| found.get(c).map_or(0, |&v| unkey(v))).collect())
    }

    async fn device_reads(&self, user: UserId, conv: ConversationId) -> StoreResult<Vec<DeviceRead>> {
        self.rows(
            "SELECT device, read_id FROM {S}.device_reads WHERE user_id = $1 AND conv = $2
             ORDER BY device COLLATE \"C\"",
            &[&key(user.0), &conv.to_string()],
        )
        .await?
        .iter()
        .map(|r| Ok(DeviceRead { device: col(r, 0)?, read: unkey(col(r, 1)?) }))
        .collect()
    }
}
