//! [`ContactStore`] for PostgreSQL: `contacts` holds both sides of each
//! relation and `blocks` one row per block. A change locks both users'
//! rows (in id order, so two changes never deadlock) and then reads what
//! it decides on, so concurrent requests, accepts and blocks of one pair
//! apply one after the other on every node.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use im_protocol::{ContactState, UserId};

use super::{col, db_err, first_ids, key, time, unkey, untime, PgStore};
use crate::store::{Contact, ContactRefusal, ContactStore, StoreError, StoreResult};

fn state_of(name: &str) -> StoreResult<ContactState> {
    match name {
        "requested" => Ok(ContactState::Requested),
        "pending" => Ok(ContactState::Pending),
        "accepted" => Ok(ContactState::Accepted),
        other => Err(StoreError::Backend(format!("unknown contact state {other:?}"))),
    }
}

impl PgStore {
    /// Opens a transaction holding both users' row locks.
    async fn lock_pair<'c>(
        &self,
        client: &'c mut deadpool_postgres::Object,
        a: UserId,
        b: UserId,
    ) -> StoreResult<Transaction<'c>> {
        let tx = client.transaction().await.map_err(db_err)?;
        let stmt = tx
            .prepare_cached(&self.sql("SELECT id FROM {S}.users WHERE id = ANY($1) ORDER BY id FOR UPDATE"))
            .await
            .map_err(db_err)?;
        tx.query(&stmt, &[&vec![key(a.0), key(b.0)]]).await.map_err(db_err)?;
        Ok(tx)
    }

    async fn state_in(
        &self,
        tx: &Transaction<'_>,
        a: UserId,
        b: UserId,
    ) -> StoreResult<Option<ContactState>> {
        let stmt = tx
            .prepare_cached(&self.sql("SELECT state FROM {S}.contacts WHERE user_id = $1 AND peer_id = $2"))
            .await
            .map_err(db_err)?;
        let row = tx.query_opt(&stmt, &[&key(a.0), &key(b.0)]).await.map_err(db_err)?;
        row.map(|r| state_of(&r.get::<_, String>(0))).transpose()
    }

    async fn blocked_in(&self, tx: &Transaction<'_>, a: UserId, b: UserId) -> StoreResult<bool> {
        let stmt = tx
            .prepare_cached(&self.sql(
                "SELECT 1 FROM {S}.blocks WHERE (user_id = $1 AND blocked_id = $2) OR (user_id = $2 AND blocked_id = $1)",
            ))
            .await
            .map_err(db_err)?;
        Ok(!tx.query(&stmt, &[&key(a.0), &key(b.0)]).await.map_err(db_err)?.is_empty())
    }

    async fn relate_in(
        &self,
        tx: &Transaction<'_>,
        a: UserId,
        b: UserId,
        state: ContactState,
        now: u64,
    ) -> StoreResult<()> {
        let stmt = tx
            .prepare_cached(&self.sql(
                "INSERT INTO {S}.contacts (user_id, peer_id, state, since) VALUES ($1, $2, $3, $5), ($2, $1, $4, $5)
                 ON CONFLICT (user_id, peer_id) DO UPDATE SET state = EXCLUDED.state, since = EXCLUDED.since",
            ))
            .await
            .map_err(db_err)?;
        tx.execute(&stmt, &[&key(a.0), &key(b.0), &state.as_str(), &state.mirrored().as_str(), &time(now)])
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn unrelate_in(&self, tx: &Transaction<'_>, a: UserId, b: UserId) -> StoreResult<bool> {
        let stmt = tx
            .prepare_cached(&self.sql(
                "DELETE FROM {S}.contacts WHERE (user_id = $1 AND peer_id = $2) OR (user_id = $2 AND peer_id = $1)",
            ))
            .await
            .map_err(db_err)?;
        Ok(tx.execute(&stmt, &[&key(a.0), &key(b.0)]).await.map_err(db_err)? > 0)
    }
}

#[async_trait]
impl ContactStore for PgStore {
    async fn request_contact(
        &self,
        from: UserId,
        to: UserId,
        now: u64,
    ) -> StoreResult<Result<ContactState, ContactRefusal>> {
        let mut client = self.conn().await?;
        let tx = self.lock_pair(&mut client, from, to).await?;
        if self.blocked_in(&tx, from, to).await? {
            tx.rollback().await.map_err(db_err)?;
            return Ok(Err(ContactRefusal::Blocked));
        }
        let state = match self.state_in(&tx, from, to).await? {
            Some(ContactState::Pending) => {
                self.relate_in(&tx, from, to, ContactState::Accepted, now).await?;
                ContactState::Accepted
            }
            Some(state) => state,
            None => {
                self.relate_in(&tx, from, to, ContactState::Requested, now).await?;
                ContactState::Requested
            }
        };
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(state))
    }

    async fn accept_contact(
        &self,
        user: UserId,
        from: UserId,
        now: u64,
    ) -> StoreResult<Result<(), ContactRefusal>> {
        let mut client = self.conn().await?;
        let tx = self.lock_pair(&mut client, user, from).await?;
        let answer = match self.state_in(&tx, user, from).await? {
            Some(ContactState::Pending) => {
                self.relate_in(&tx, user, from, ContactState::Accepted, now).await?;
                Ok(())
            }
            Some(ContactState::Accepted) => Ok(()),
            _ => Err(ContactRefusal::NoRequest),
        };
        tx.commit().await.map_err(db_err)?;
        Ok(answer)
    }

    async fn remove_contact(&self, user: UserId, other: UserId) -> StoreResult<bool> {
        let mut client = self.conn().await?;
        let tx = self.lock_pair(&mut client, user, other).await?;
        let was = self.unrelate_in(&tx, user, other).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(was)
    }

    async fn contacts(&self, user: UserId) -> StoreResult<Vec<Contact>> {
        let rows = self
            .rows(
                "SELECT peer_id, state, since FROM {S}.contacts WHERE user_id = $1 ORDER BY peer_id",
                &[&key(user.0)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Contact {
                    user: UserId(unkey(col(r, 0)?)),
                    state: state_of(&col::<String>(r, 1)?)?,
                    since: untime(col(r, 2)?),
                })
            })
            .collect()
    }

    async fn contact(&self, user: UserId, other: UserId) -> StoreResult<Option<Contact>> {
        let rows = self
            .rows(
                "SELECT state, since FROM {S}.contacts WHERE user_id = $1 AND peer_id = $2",
                &[&key(user.0), &key(other.0)],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(Contact {
                    user: other,
                    state: state_of(&col::<String>(r, 0)?)?,
                    since: untime(col(r, 1)?),
                })
            })
            .transpose()
    }

    async fn block(&self, user: UserId, other: UserId, now: u64) -> StoreResult<bool> {
        let mut client = self.conn().await?;
        let tx = self.lock_pair(&mut client, user, other).await?;
        self.unrelate_in(&tx, user, other).await?;
        let stmt = tx
            .prepare_cached(&self.sql(
                "INSERT INTO {S}.blocks (user_id, blocked_id, since) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            ))
            .await
            .map_err(db_err)?;
        let new = tx.execute(&stmt, &[&key(user.0), &key(other.0), &time(now)]).await.map_err(db_err)? == 1;
        tx.commit().await.map_err(db_err)?;
        Ok(new)
    }

    async fn unblock(&self, user: UserId, other: UserId) -> StoreResult<bool> {
        let n = self
            .exec(
                "DELETE FROM {S}.blocks WHERE user_id = $1 AND blocked_id = $2",
                &[&key(user.0), &key(other.0)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn blocks(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let rows = self
            .rows("SELECT blocked_id FROM {S}.blocks WHERE user_id = $1 ORDER BY blocked_id", &[&key(user.0)])
            .await?;
        first_ids(&rows, UserId)
    }

    async fn blocked_either_way(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let rows = self
            .rows(
                "SELECT blocked_id FROM {S}.blocks WHERE user_id = $1
                 UNION SELECT user_id FROM {S}.blocks WHERE blocked_id = $1 ORDER BY 1",
                &[&key(user.0)],
            )
            .await?;
        first_ids(&rows, UserId)
    }

    async fn block_between(&self, a: UserId, b: UserId) -> StoreResult<(bool, bool)> {
        let rows = self
            .rows(
                "SELECT user_id FROM {S}.blocks WHERE (user_id = $1 AND blocked_id = $2) OR (user_id = $2 AND blocked_id = $1)",
                &[&key(a.0), &key(b.0)],
            )
            .await?;
        let blockers: Vec<u64> =
            rows.iter().map(|r| col::<i64>(r, 0).map(unkey)).collect::<StoreResult<_>>()?;
        Ok((blockers.contains(&a.0), blockers.contains(&b.0)))
    }
}
