//! [`Directory`] for PostgreSQL: users, groups and members (changes
//! that count against a group's cap, or race a ban, under the group's row
//! lock), rooms (a join shares the room's row lock that a ban takes), and
//! direct pairs.

use async_trait::async_trait;
use im_protocol::{ConversationId, GroupId, RoomId, UserId};
use tokio_postgres::Row;

use deadpool_postgres::GenericClient;

use super::{
    bound, col, db_err, first_ids, key, limit, role_name, role_of, time, unkey, untime, violates, PgStore,
};
use crate::model::{Group, Member, Role, Room, User};
use crate::store::{Directory, StoreError, StoreResult};

fn user(row: &Row) -> StoreResult<User> {
    Ok(User {
        id: UserId(unkey(col(row, 0)?)),
        username: col(row, 1)?,
        password_hash: col(row, 2)?,
        created_at: untime(col(row, 3)?),
        display_name: col(row, 4)?,
    })
}

fn group(row: &Row) -> StoreResult<Group> {
    Ok(Group {
        id: GroupId(unkey(col(row, 0)?)),
        name: col(row, 1)?,
        owner: UserId(unkey(col(row, 2)?)),
        created_at: untime(col(row, 3)?),
    })
}

fn room(row: &Row) -> StoreResult<Room> {
    Ok(Room {
        id: RoomId(unkey(col(row, 0)?)),
        name: col(row, 1)?,
        created_by: UserId(unkey(col(row, 2)?)),
        created_at: untime(col(row, 3)?),
    })
}

#[async_trait]
impl Directory for PgStore {
    async fn create_user(&self, username: &str, password_hash: &str, now: u64) -> StoreResult<User> {
        // One statement: a taken name fails it whole, so the counter bump is undone.
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(&self.sql(
                "WITH n AS (UPDATE {S}.im_counters SET last_id = last_id + 1 WHERE name = 'users' RETURNING last_id)
                 INSERT INTO {S}.users (id, username, password_hash, created_at)
                 SELECT last_id, $1, $2, $3 FROM n
                 RETURNING id, username, password_hash, created_at, display_name",
            ))
            .await
            .map_err(db_err)?;
        match client.query_opt(&stmt, &[&username, &password_hash, &time(now)]).await {
            Ok(Some(row)) => user(&row),
            Ok(None) => Err(StoreError::Backend("user counter is missing".into())),
            Err(e) if violates(&e, "users_username_key") => Err(StoreError::Conflict),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        let rows = self
            .rows(
                "SELECT id, username, password_hash, created_at, display_name FROM {S}.users WHERE id = $1",
                &[&key(id.0)],
            )
            .await?;
        rows.first().map(user).transpose()
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let rows = self
            .rows(
                "SELECT id, username, password_hash, created_at, display_name FROM {S}.users WHERE username = $1",
                &[&username],
            )
            .await?;
        rows.first().map(user).transpose()
    }

    async fn create_group(&self, name: &str, owner: UserId, now: u64) -> StoreResult<Group> {
        // One statement, so one implicit transaction: the group and its owner or nothing.
        let rows = self
            .rows(
                "WITH n AS (UPDATE {S}.im_counters SET last_id = last_id + 1 WHERE name = 'groups' RETURNING last_id),
                 g AS (INSERT INTO {S}.groups (id, name, owner_id, created_at)
                       SELECT last_id, $1, $2, $3 FROM n
                       RETURNING id, name, owner_id, created_at),
                 m AS (INSERT INTO {S}.group_members (group_id, user_id, role)
                       SELECT id, owner_id, 'owner' FROM g)
                 SELECT id, name, owner_id, created_at FROM g",
                &[&name, &key(owner.0), &time(now)],
            )
            .await?;
        rows.first().map(group).ok_or_else(|| StoreError::Backend("group counter is missing".into()))?
    }

    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        let rows = self
            .rows("SELECT id, name, owner_id, created_at FROM {S}.groups WHERE id = $1", &[&key(id.0)])
            .await?;
        rows.first().map(group).transpose()
    }

    async fn add_member(&self, group: GroupId, user: UserId, role: Role, cap: usize) -> StoreResult<bool> {
        let (g, u, role) = (key(group.0), key(user.0), role_name(role));
        let mut client = self.conn().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        // The group's row lock serializes membership changes that count against
        // the cap; each later statement takes a fresh snapshot, so the count
        // below includes every add committed before we got the lock.
        let lock = tx
            .prepare_cached(&self.sql("SELECT 1 FROM {S}.groups WHERE id = $1 FOR UPDATE"))
            .await
            .map_err(db_err)?;
        if tx.query_opt(&lock, &[&g]).await.map_err(db_err)?.is_none() {
            tx.rollback().await.map_err(db_err)?;
            return Err(StoreError::NotFound);
        }
        let update = tx
            .prepare_cached(&self.sql(
                "UPDATE {S}.group_members SET role = CASE WHEN role = 'owner' THEN role ELSE $3 END
                     WHERE group_id = $1 AND user_id = $2",
            ))
            .await
            .map_err(db_err)?;
        if tx.execute(&update, &[&g, &u, &role]).await.map_err(db_err)? > 0 {
            tx.commit().await.map_err(db_err)?;
            return Ok(false);
        }
        // A ban takes the same row lock, so this sees every ban committed before.
        if self.banned_in(&tx, ConversationId::Group(group), user).await? {
            tx.rollback().await.map_err(db_err)?;
            return Err(StoreError::Banned);
        }
        let insert = tx
            .prepare_cached(&self.sql(
                "INSERT INTO {S}.group_members (group_id, user_id, role)
                 SELECT $1, $2, $3
                 WHERE (SELECT count(*) FROM {S}.group_members WHERE group_id = $1) < $4",
            ))
            .await
            .map_err(db_err)?;
        if tx.execute(&insert, &[&g, &u, &role, &limit(cap)]).await.map_err(db_err)? == 0 {
            tx.rollback().await.map_err(db_err)?;
            return Err(StoreError::GroupFull);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn remove_member(&self, group: GroupId, user: UserId) -> StoreResult<bool> {
        let n = self
            .exec(
                "DELETE FROM {S}.group_members WHERE group_id = $1 AND user_id = $2 AND role <> 'owner'",
                &[&key(group.0), &key(user.0)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn member_role(&self, group: GroupId, user: UserId) -> StoreResult<Option<Role>> {
        let rows = self
            .rows(
                "SELECT role FROM {S}.group_members WHERE group_id = $1 AND user_id = $2",
                &[&key(group.0), &key(user.0)],
            )
            .await?;
        rows.first().map(|r| role_of(col(r, 0)?)).transpose()
    }

    async fn members(&self, group: GroupId) -> StoreResult<Vec<Member>> {
        self.rows(
            "SELECT user_id, role FROM {S}.group_members WHERE group_id = $1 ORDER BY user_id",
            &[&key(group.0)],
        )
        .await?
        .iter()
        .map(|r| Ok(Member { user: UserId(unkey(col(r, 0)?)), role: role_of(col(r, 1)?)? }))
        .collect()
    }

    async fn groups_of(&self, user: UserId) -> StoreResult<Vec<GroupId>> {
        let rows = self
            .rows(
                "SELECT group_id FROM {S}.group_members WHERE user_id = $1 ORDER BY group_id",
                &[&key(user.0)],
            )
            .await?;
        first_ids(&rows, GroupId)
    }

    async fn create_room(&self, name: &str, created_by: UserId, now: u64) -> StoreResult<Room> {
        let rows = self
            .rows(
                "WITH n AS (UPDATE {S}.im_counters SET last_id = last_id + 1 WHERE name = 'rooms' RETURNING last_id)
                 INSERT INTO {S}.rooms (id, name, created_by, created_at)
                 SELECT last_id, $1, $2, $3 FROM n
                 RETURNING id, name, created_by, created_at",
                &[&name, &key(created_by.0), &time(now)],
            )
            .await?;
        rows.first().map(room).ok_or_else(|| StoreError::Backend("room counter is missing".into()))?
    }

    async fn room(&self, id: RoomId) -> StoreResult<Option<Room>> {
        let rows = self
            .rows("SELECT id, name, created_by, created_at FROM {S}.rooms WHERE id = $1", &[&key(id.0)])
            .await?;
        rows.first().map(room).transpose()
    }

    async fn rooms(&self, after: RoomId, n: usize) -> StoreResult<Vec<Room>> {
        let Some(after) = bound(after.0).filter(|_| n > 0) else { return Ok(Vec::new()) };
        let rows = self
            .rows(
                "SELECT id, name, created_by, created_at FROM {S}.rooms WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit(n)],
            )
            .await?;
        rows.iter().map(room).collect()
    }

    async fn join_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        let (r, u) = (key(room.0), key(user.0));
        let mut client = self.conn().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        // Shares the room's row with other joins; a ban locks it exclusively,
        // so the ban check below sees every ban committed before.
        let lock = tx
            .prepare_cached(&self.sql("SELECT 1 FROM {S}.rooms WHERE id = $1 FOR SHARE"))
            .await
            .map_err(db_err)?;
        if tx.query_opt(&lock, &[&r]).await.map_err(db_err)?.is_none() {
            tx.rollback().await.map_err(db_err)?;
            return Err(StoreError::NotFound);
        }
        let insert = tx
            .prepare_cached(&self.sql(
                "INSERT INTO {S}.room_members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            ))
            .await
            .map_err(db_err)?;
        let joined = tx.execute(&insert, &[&r, &u]).await.map_err(db_err)? == 1;
        if joined && self.banned_in(&tx, ConversationId::Room(room), user).await? {
            tx.rollback().await.map_err(db_err)?;
            return Err(StoreError::Banned);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(joined)
    }

    async fn leave_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        let n = self
            .exec(
                "DELETE FROM {S}.room_members WHERE room_id = $1 AND user_id = $2",
                &[&key(room.0), &key(user.0)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn in_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        let rows = self
            .rows(
                "SELECT 1 FROM {S}.room_members WHERE room_id = $1 AND user_id = $2",
                &[&key(room.0), &key(user.0)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn rooms_of(&self, user: UserId) -> StoreResult<Vec<RoomId>> {
        let rows = self
            .rows("SELECT room_id FROM {S}.room_members WHERE user_id = $1 ORDER BY room_id", &[&key(user.0)])
            .await?;
        first_ids(&rows, RoomId)
    }

    async fn add_direct(&self, a: UserId, b: UserId) -> StoreResult<()> {
        self.exec(
            "INSERT INTO {S}.directs (user_id, peer_id) VALUES ($1, $2), ($2, $1) ON CONFLICT DO NOTHING",
            &[&key(a.0), &key(b.0)],
        )
        .await?;
        Ok(())
    }

    async fn directs_of(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let rows = self
            .rows("SELECT peer_id FROM {S}.directs WHERE user_id = $1 ORDER BY peer_id", &[&key(user.0)])
            .await?;
        first_ids(&rows, UserId)
    }
    async fn set_display_name(&self, user: UserId, name: Option<&str>) -> StoreResult<bool> {
        let n =
            self.exec("UPDATE {S}.users SET display_name = $2 WHERE id = $1", &[&key(user.0), &name]).await?;
        Ok(n > 0)
    }

    fn moderation(&self) -> Option<&dyn crate::store::ModerationStore> {
        Some(self)
    }

    fn contacts(&self) -> Option<&dyn crate::store::ContactStore> {
        Some(self)
    }

    fn user_erasure(&self) -> Option<&dyn crate::store::DirectoryErasure> {
        Some(self)
    }
}
