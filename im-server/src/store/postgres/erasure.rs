//! [`MessageErasure`] and [`DirectoryErasure`] for PostgreSQL. What a user
//! sent is paged through `messages_by_sender (sender_id, conv, id)`;
//! forgetting reads is one statement. Moving a group's ownership holds the
//! group's row lock, as adding a member and banning do; erasing a user
//! holds the user's row lock (as contact changes do) and the rows of every
//! group and room they belong to (as bans do), so it applies before or
//! after each of those changes to those rows. (A membership or contact
//! made for the user in a group they were not in yet, racing the erasure,
//! can outlive it: the stores do not check that a user row exists.)

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use im_protocol::{ConversationId, GroupId, UserId};

use super::{bound, col, db_err, key, limit, unkey, PgStore};
use crate::store::{DirectoryErasure, MessageErasure, SentCursor, StoreError, StoreResult};

/// Every deletion of an erased user (`$1`) from the directory except the
/// account, in one statement. The peers keep their side of direct chats
/// (the conversation stays in their inbox). Contacts are stored from both
/// sides, so the mirrored rows are found through the user's own (by
/// primary key) rather than by scanning `peer_id`.
const ERASE: &str = "WITH gm AS (DELETE FROM {S}.group_members WHERE user_id = $1)
     , rm AS (DELETE FROM {S}.room_members WHERE user_id = $1)
     , di AS (DELETE FROM {S}.directs WHERE user_id = $1)
     , co AS (DELETE FROM {S}.contacts WHERE user_id = $1 RETURNING peer_id)
     , cm AS (DELETE FROM {S}.contacts WHERE (user_id, peer_id) IN (SELECT peer_id, $1 FROM co))
     , bl AS (DELETE FROM {S}.blocks WHERE user_id = $1 OR blocked_id = $1)
     , sa AS (DELETE FROM {S}.sanctions WHERE user_id = $1)
     DELETE FROM {S}.users WHERE id = $1";

/// A `(conv, id)` row back as a cursor.
fn cursor(row: &tokio_postgres::Row) -> StoreResult<SentCursor> {
    let conv: String = col(row, 0)?;
    let parsed: ConversationId =
        conv.parse().map_err(|_| StoreError::Backend(format!("invalid conversation {conv:?} stored")))?;
    Ok((parsed, unkey(col(row, 1)?)))
}

#[async_trait]
impl MessageErasure for PgStore {
    async fn sent_by(
        &self,
        user: UserId,
        after: Option<SentCursor>,
        n: usize,
    ) -> StoreResult<Vec<SentCursor>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // Both run as an index range scan of messages_by_sender.
        let rows = match after {
            None => {
                self.rows(
                    "SELECT conv, id FROM {S}.messages WHERE sender_id = $1 ORDER BY conv, id LIMIT $2",
                    &[&key(user.0), &limit(n)],
                )
                .await?
            }
            Some((conv, id)) => {
                // An id beyond what this store assigns: nothing of `conv` is after it.
                let id = bound(id).unwrap_or(i64::MAX);
                self.rows(
                    "SELECT conv, id FROM {S}.messages WHERE sender_id = $1 AND (conv, id) > ($2, $3)
                     ORDER BY conv, id LIMIT $4",
                    &[&key(user.0), &conv.to_string(), &id, &limit(n)],
                )
                .await?
            }
        };
        rows.iter().map(cursor).collect()
    }

    async fn forget_reads(&self, user: UserId) -> StoreResult<usize> {
        // One statement: every part is gone, or (on failure) none.
        let rows = self
            .rows(
                "WITH r AS (DELETE FROM {S}.read_state WHERE user_id = $1 RETURNING conv)
                 , d AS (DELETE FROM {S}.device_reads WHERE user_id = $1 RETURNING conv)
                 , o AS (DELETE FROM {S}.receipts_off WHERE user_id = $1)
                 SELECT count(*) FROM (SELECT conv FROM r UNION SELECT conv FROM d) AS c",
                &[&key(user.0)],
            )
            .await?;
        let n: i64 = rows.first().map(|r| col(r, 0)).transpose()?.unwrap_or(0);
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

#[async_trait]
impl DirectoryErasure for PgStore {
    async fn transfer_ownership(&self, group: GroupId, to: UserId) -> StoreResult<bool> {
        let (g, to) = (key(group.0), key(to.0));
        let mut client = self.conn().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        // The row lock adding a member and banning take: the new owner is
        // not banned or added between the check and the change (and a
        // removal never removes an owner: Directory::remove_member).
        let lock = tx
            .prepare_cached(&self.sql("SELECT owner_id FROM {S}.groups WHERE id = $1 FOR UPDATE"))
            .await
            .map_err(db_err)?;
        let Some(row) = tx.query_opt(&lock, &[&g]).await.map_err(db_err)? else {
            tx.rollback().await.map_err(db_err)?;
            return Err(StoreError::NotFound);
        };
        let old: i64 = col(&row, 0)?;
        let member = tx
            .prepare_cached(&self.sql("SELECT 1 FROM {S}.group_members WHERE group_id = $1 AND user_id = $2"))
            .await
            .map_err(db_err)?;
        if tx.query_opt(&member, &[&g, &to]).await.map_err(db_err)?.is_none() {
            tx.rollback().await.map_err(db_err)?;
            return Ok(false);
        }
        if old != to {
            // The owner before may have left (or been erased): then only `to` changes.
            let change = tx
                .prepare_cached(&self.sql(
                    "WITH roles AS (
                         UPDATE {S}.group_members SET role = CASE WHEN user_id = $2 THEN 'owner' ELSE 'admin' END
                         WHERE group_id = $1 AND user_id IN ($2, $3))
                     UPDATE {S}.groups SET owner_id = $2 WHERE id = $1",
                ))
                .await
                .map_err(db_err)?;
            tx.execute(&change, &[&g, &to, &old]).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn erase_user(&self, user: UserId) -> StoreResult<bool> {
        let u = key(user.0);
        let mut client = self.conn().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        // First the user's row, as contact and block changes lock it...
        let account = tx
            .prepare_cached(&self.sql("SELECT 1 FROM {S}.users WHERE id = $1 FOR UPDATE"))
            .await
            .map_err(db_err)?;
        if tx.query_opt(&account, &[&u]).await.map_err(db_err)?.is_none() {
            tx.rollback().await.map_err(db_err)?;
            return Ok(false);
        }
        // ...then their groups' and rooms' rows, as a ban does (in id
        // order, so two erasures never deadlock): adds, joins and bans
        // there wait for this to commit, or this for them.
        for lock in [
            "SELECT 1 FROM {S}.groups WHERE id IN (SELECT group_id FROM {S}.group_members WHERE user_id = $1)
             ORDER BY id FOR UPDATE",
            "SELECT 1 FROM {S}.rooms WHERE id IN (SELECT room_id FROM {S}.room_members WHERE user_id = $1)
             ORDER BY id FOR UPDATE",
        ] {
            let stmt = tx.prepare_cached(&self.sql(lock)).await.map_err(db_err)?;
            tx.query(&stmt, &[&u]).await.map_err(db_err)?;
        }
        let erase = tx.prepare_cached(&self.sql(ERASE)).await.map_err(db_err)?;
        tx.execute(&erase, &[&u]).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}
