//! Read state in PostgreSQL: `read_state (user_id, conv, read_id,
//! delivered_id)`, `device_reads (user_id, conv, device, read_id)` and
//! `receipts_off (user_id)`. Every write only raises
//! (`GREATEST`), so nodes marking concurrently can never move a read id
//! back. A message's append raises its sender's row in the same statement
//! (see the append in `mod.rs`).

use async_trait::async_trait;
use im_protocol::{ConversationId, MessageId, UserId};

use super::{bound, col, db_err, key, unkey, PgStore};
use crate::store::{DeviceRead, ReadMark, ReadState, ReadStore, StoreResult};

/// A state from the columns `read_id, delivered_id, muted_until` of `row`, starting at column `at`.
fn state(row: &tokio_postgres::Row, at: usize) -> StoreResult<ReadState> {
    Ok(ReadState {
        read: unkey(col(row, at)?),
        delivered: unkey(col(row, at + 1)?),
        // Stored saturated at i64::MAX, which stands for "for good".
        muted_until: match col::<i64>(row, at + 2)? {
            i64::MAX => u64::MAX,
            v => u64::try_from(v).unwrap_or(0),
        },
    })
}

#[async_trait]
impl ReadStore for PgStore {
    async fn countable(&self, at: &[(ConversationId, MessageId)]) -> StoreResult<Vec<u64>> {
        if at.is_empty() {
            return Ok(Vec::new());
        }
        let convs: Vec<String> = at.iter().map(|(c, _)| c.to_string()).collect();
        let ids: Vec<i64> = at.iter().map(|&(_, id)| key(id)).collect();
        let rows = self
            .rows(
                "SELECT q.conv, q.id, COALESCE(m.countable, m.id) FROM unnest($1::text[], $2::bigint[]) AS q(conv, id)
                 JOIN {S}.messages m ON m.conv = q.conv AND m.id = q.id",
                &[&convs, &ids],
            )
            .await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            found.insert((col::<String>(r, 0)?, col::<i64>(r, 1)?), unkey(col::<i64>(r, 2)?));
        }
        Ok(convs.into_iter().zip(ids).map(|k| found.get(&k).copied().unwrap_or(0)).collect())
    }

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
                let cap = i64::try_from(im_protocol::limits::MAX_DEVICE_READS).unwrap_or(i64::MAX);
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

    async fn read_states(&self, user: UserId, convs: &[ConversationId]) -> StoreResult<Vec<ReadState>> {
        if convs.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = convs.iter().map(ToString::to_string).collect();
        let rows = self
            .rows(
                "SELECT conv, read_id, delivered_id, muted_until FROM {S}.read_state
                 WHERE user_id = $1 AND conv = ANY($2)",
                &[&key(user.0), &names],
            )
            .await?;
        let found = rows
            .iter()
            .map(|r| Ok((col::<String>(r, 0)?, state(r, 1)?)))
            .collect::<StoreResult<std::collections::HashMap<_, _>>>()?;
        Ok(names.iter().map(|c| found.get(c).copied().unwrap_or_default()).collect())
    }

    async fn mute(&self, user: UserId, conv: ConversationId, until: u64) -> StoreResult<()> {
        let until = i64::try_from(until).unwrap_or(i64::MAX);
        self.exec(
            "INSERT INTO {S}.read_state AS r (user_id, conv, read_id, muted_until) VALUES ($1, $2, 0, $3)
             ON CONFLICT (user_id, conv) DO UPDATE SET muted_until = EXCLUDED.muted_until",
            &[&key(user.0), &conv.to_string(), &until],
        )
        .await
        .map(drop)
    }

    async fn mark_delivered(
        &self,
        user: UserId,
        items: &[(ConversationId, MessageId)],
    ) -> StoreResult<Vec<bool>> {
        let wanted: Vec<(String, i64)> = items
            .iter()
            .filter(|(_, id)| *id > 0)
            .map(|(c, id)| (c.to_string(), bound(*id).unwrap_or(i64::MAX)))
            .collect();
        if wanted.is_empty() {
            return Ok(vec![false; items.len()]);
        }
        let (convs, ids): (Vec<String>, Vec<i64>) = wanted.into_iter().unzip();
        // One statement for every conversation; returns those that rose.
        let rows = self
            .rows(
                "INSERT INTO {S}.read_state AS r (user_id, conv, read_id, delivered_id)
                 SELECT $1, c, 0, d FROM unnest($2::text[], $3::bigint[]) AS t(c, d)
                 ON CONFLICT (user_id, conv) DO UPDATE SET delivered_id = EXCLUDED.delivered_id
                 WHERE r.delivered_id < EXCLUDED.delivered_id
                 RETURNING conv",
                &[&key(user.0), &convs, &ids],
            )
            .await?;
        let raised = rows
            .iter()
            .map(|r| col::<String>(r, 0))
            .collect::<StoreResult<std::collections::HashSet<_>>>()?;
        Ok(items.iter().map(|(c, id)| *id > 0 && raised.contains(&c.to_string())).collect())
    }

    async fn reads_in(&self, conv: ConversationId, users: &[UserId]) -> StoreResult<Vec<ReadState>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = users.iter().map(|u| key(u.0)).collect();
        let rows = self
            .rows(
                "SELECT user_id, read_id, delivered_id, muted_until FROM {S}.read_state
                 WHERE conv = $1 AND user_id = ANY($2)",
                &[&conv.to_string(), &ids],
            )
            .await?;
        let found = rows
            .iter()
            .map(|r| Ok((col::<i64>(r, 0)?, state(r, 1)?)))
            .collect::<StoreResult<std::collections::HashMap<_, _>>>()?;
        Ok(ids.iter().map(|u| found.get(u).copied().unwrap_or_default()).collect())
    }

    async fn set_receipts_shared(&self, user: UserId, shared: bool) -> StoreResult<()> {
        let sql = if shared {
            "DELETE FROM {S}.receipts_off WHERE user_id = $1"
        } else {
            "INSERT INTO {S}.receipts_off (user_id) VALUES ($1) ON CONFLICT DO NOTHING"
        };
        self.exec(sql, &[&key(user.0)]).await.map(drop)
    }

    async fn receipts_shared(&self, users: &[UserId]) -> StoreResult<Vec<bool>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = users.iter().map(|u| key(u.0)).collect();
        let rows = self.rows("SELECT user_id FROM {S}.receipts_off WHERE user_id = ANY($1)", &[&ids]).await?;
        let off =
            rows.iter().map(|r| col::<i64>(r, 0)).collect::<StoreResult<std::collections::HashSet<_>>>()?;
        Ok(ids.iter().map(|u| !off.contains(u)).collect())
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
