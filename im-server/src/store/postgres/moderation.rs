//! [`ModerationStore`] for PostgreSQL: `sanctions` rows per (conversation,
//! user) and `room_members.moderator`. A ban locks the group's or room's
//! row, as adding a member and joining a room do, so no one slips in
//! between a ban's check and its removal.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use im_protocol::{ConversationId, RoomId, UserId};

use super::{col, db_err, first_ids, key, role_of, unkey, PgStore};
use crate::store::{Access, ModerationStore, Sanction, StoreError, StoreResult};

impl PgStore {
    /// Whether `user` is banned from `conv`, read by `client` (inside the
    /// caller's transaction).
    pub(super) async fn banned_in(
        &self,
        client: &impl GenericClient,
        conv: ConversationId,
        user: UserId,
    ) -> StoreResult<bool> {
        let stmt = client
            .prepare_cached(&self.sql("SELECT banned FROM {S}.sanctions WHERE conv = $1 AND user_id = $2"))
            .await
            .map_err(db_err)?;
        let row = client.query_opt(&stmt, &[&conv.to_string(), &key(user.0)]).await.map_err(db_err)?;
        Ok(row.map(|r| r.get::<_, bool>(0)).unwrap_or(false))
    }
}

#[async_trait]
impl ModerationStore for PgStore {
    async fn access(&self, conv: ConversationId, user: UserId) -> StoreResult<Option<Access>> {
        let (c, u) = (conv.to_string(), key(user.0));
        let rows = match conv {
            ConversationId::Group(g) => {
                self.rows(
                    "SELECT m.role, false, COALESCE(s.muted_until, 0) FROM {S}.group_members m
                     LEFT JOIN {S}.sanctions s ON s.conv = $3 AND s.user_id = m.user_id
                     WHERE m.group_id = $1 AND m.user_id = $2",
                    &[&key(g.0), &u, &c],
                )
                .await?
            }
            ConversationId::Room(r) => {
                self.rows(
                    "SELECT NULL::text, m.moderator, COALESCE(s.muted_until, 0) FROM {S}.room_members m
                     LEFT JOIN {S}.sanctions s ON s.conv = $3 AND s.user_id = m.user_id
                     WHERE m.room_id = $1 AND m.user_id = $2",
                    &[&key(r.0), &u, &c],
                )
                .await?
            }
            ConversationId::Direct(..) => return Ok(None),
        };
        rows.first()
            .map(|r| {
                let role = col::<Option<String>>(r, 0)?.map(|n| role_of(&n)).transpose()?;
                Ok(Access { role, moderator: col(r, 1)?, muted_until: unkey(col(r, 2)?) })
            })
            .transpose()
    }

    async fn set_muted(&self, conv: ConversationId, user: UserId, until: u64) -> StoreResult<()> {
        self.exec(
            "INSERT INTO {S}.sanctions (conv, user_id, muted_until) VALUES ($1, $2, $3)
             ON CONFLICT (conv, user_id) DO UPDATE SET muted_until = $3",
            &[&conv.to_string(), &key(user.0), &key(until)],
        )
        .await?;
        Ok(())
    }

    async fn ban(&self, conv: ConversationId, user: UserId) -> StoreResult<bool> {
        let (lock, remove, id) = match conv {
            ConversationId::Group(g) => (
                "SELECT 1 FROM {S}.groups WHERE id = $1 FOR UPDATE",
                "DELETE FROM {S}.group_members WHERE group_id = $1 AND user_id = $2",
                g.0,
            ),
            ConversationId::Room(r) => (
                "SELECT 1 FROM {S}.rooms WHERE id = $1 FOR UPDATE",
                "DELETE FROM {S}.room_members WHERE room_id = $1 AND user_id = $2",
                r.0,
            ),
            ConversationId::Direct(..) => return Err(StoreError::NotFound),
        };
        let mut client = self.conn().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let stmt = tx.prepare_cached(&self.sql(lock)).await.map_err(db_err)?;
        if tx.query_opt(&stmt, &[&key(id)]).await.map_err(db_err)?.is_none() {
            tx.rollback().await.map_err(db_err)?;
            return Err(StoreError::NotFound);
        }
        let stmt = tx
            .prepare_cached(&self.sql(
                "INSERT INTO {S}.sanctions (conv, user_id, banned) VALUES ($1, $2, true)
                 ON CONFLICT (conv, user_id) DO UPDATE SET banned = true",
            ))
            .await
            .map_err(db_err)?;
        tx.execute(&stmt, &[&conv.to_string(), &key(user.0)]).await.map_err(db_err)?;
        let stmt = tx.prepare_cached(&self.sql(remove)).await.map_err(db_err)?;
        let was = tx.execute(&stmt, &[&key(id), &key(user.0)]).await.map_err(db_err)? > 0;
        tx.commit().await.map_err(db_err)?;
        Ok(was)
    }

    async fn unban(&self, conv: ConversationId, user: UserId) -> StoreResult<bool> {
        let n = self
            .exec(
                "UPDATE {S}.sanctions SET banned = false WHERE conv = $1 AND user_id = $2 AND banned",
                &[&conv.to_string(), &key(user.0)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn sanctions(&self, conv: ConversationId, now: u64) -> StoreResult<Vec<Sanction>> {
        let rows = self
            .rows(
                "SELECT user_id, banned, CASE WHEN muted_until > $2 THEN muted_until ELSE 0 END
                 FROM {S}.sanctions WHERE conv = $1 AND (banned OR muted_until > $2) ORDER BY user_id",
                &[&conv.to_string(), &key(now)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Sanction {
                    user: UserId(unkey(col(r, 0)?)),
                    banned: col(r, 1)?,
                    muted_until: unkey(col(r, 2)?),
                })
            })
            .collect()
    }

    async fn set_room_moderator(&self, room: RoomId, user: UserId, on: bool) -> StoreResult<bool> {
        let n = self
            .exec(
                "UPDATE {S}.room_members SET moderator = $3 WHERE room_id = $1 AND user_id = $2",
                &[&key(room.0), &key(user.0), &on],
            )
            .await?;
        Ok(n > 0)
    }

    async fn room_moderators(&self, room: RoomId) -> StoreResult<Vec<UserId>> {
        let rows = self
            .rows(
                "SELECT user_id FROM {S}.room_members WHERE room_id = $1 AND moderator ORDER BY user_id",
                &[&key(room.0)],
            )
            .await?;
        first_ids(&rows, UserId)
    }
}
