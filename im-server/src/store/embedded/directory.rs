//! The directory (users, groups, rooms, direct pairs) and sessions of the
//! embedded store: reads in their own read transaction, writes through
//! the writer thread like every other request.

use super::*;

#[async_trait]
impl Directory for EmbeddedStore {
    async fn create_user(&self, username: &str, password_hash: &str, now: u64) -> StoreResult<User> {
        let op = Op::CreateUser { username: username.into(), password_hash: password_hash.into(), now };
        match self.call(op).await? {
            Reply::User(u) => Ok(u),
            r => Err(unexpected(r)),
        }
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read_durable(move |txn| get_json(txn, USERS, id.0)).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let username = username.to_owned();
        self.read_durable(move |txn| {
            let id = txn.open_table(USERNAMES)?.get(username.as_str())?.map(|g| g.value());
            id.map_or(Ok(None), |id| get_json(txn, USERS, id))
        })
        .await
    }

    async fn create_group(&self, name: &str, owner: UserId, now: u64) -> StoreResult<Group> {
        match self.call(Op::CreateGroup { name: name.into(), owner, now }).await? {
            Reply::Group(g) => Ok(g),
            r => Err(unexpected(r)),
        }
    }

    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        self.read_durable(move |txn| get_json(txn, GROUPS, id.0)).await
    }

    async fn add_member(&self, group: GroupId, user: UserId, role: Role, cap: usize) -> StoreResult<bool> {
        self.call_bool(Op::AddMember { group, user, role, cap }).await
    }

    async fn remove_member(&self, group: GroupId, user: UserId) -> StoreResult<bool> {
        self.call_bool(Op::RemoveMember { group, user }).await
    }

    async fn member_role(&self, group: GroupId, user: UserId) -> StoreResult<Option<Role>> {
        self.read_durable(move |txn| {
            let code = txn.open_table(MEMBERS)?.get((group.0, user.0))?.map(|g| g.value());
            code.map(role_of).transpose()
        })
        .await
    }

    async fn members(&self, group: GroupId) -> StoreResult<Vec<Member>> {
        self.read_durable(move |txn| {
            let t = txn.open_table(MEMBERS)?;
            let mut out = Vec::new();
            for item in t.range((group.0, 0)..=(group.0, u64::MAX))? {
                let (k, v) = item?;
                out.push(Member { user: UserId(k.value().1), role: role_of(v.value())? });
            }
            Ok(out)
        })
        .await
    }

    async fn groups_of(&self, user: UserId) -> StoreResult<Vec<GroupId>> {
        self.read_durable(move |txn| {
            Ok(seconds(txn, USER_GROUPS, user.0)?.into_iter().map(GroupId).collect())
        })
        .await
    }

    async fn create_room(&self, name: &str, created_by: UserId, now: u64) -> StoreResult<Room> {
        match self.call(Op::CreateRoom { name: name.into(), created_by, now }).await? {
            Reply::Room(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    async fn room(&self, id: RoomId) -> StoreResult<Option<Room>> {
        self.read_durable(move |txn| get_json(txn, ROOMS, id.0)).await
    }

    async fn rooms(&self, after: RoomId, limit: usize) -> StoreResult<Vec<Room>> {
        self.read_durable(move |txn| {
            let t = txn.open_table(ROOMS)?;
            let mut out = Vec::new();
            for item in t.range((Bound::Excluded(after.0), Bound::Unbounded))?.take(limit) {
                out.push(serde_json::from_slice(item?.1.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn join_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        self.call_bool(Op::JoinRoom { room, user }).await
    }

    async fn leave_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        self.call_bool(Op::LeaveRoom { room, user }).await
    }

    async fn in_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        self.read_durable(move |txn| Ok(txn.open_table(ROOM_MEMBERS)?.get((room.0, user.0))?.is_some())).await
    }

    async fn rooms_of(&self, user: UserId) -> StoreResult<Vec<RoomId>> {
        self.read_durable(move |txn| Ok(seconds(txn, USER_ROOMS, user.0)?.into_iter().map(RoomId).collect()))
            .await
    }

    async fn add_direct(&self, a: UserId, b: UserId) -> StoreResult<()> {
        self.call(Op::AddDirect { a, b }).await.map(drop)
    }

    async fn directs_of(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        self.read_durable(move |txn| Ok(seconds(txn, DIRECTS, user.0)?.into_iter().map(UserId).collect()))
            .await
    }

    async fn set_display_name(&self, user: UserId, name: Option<&str>) -> StoreResult<bool> {
        self.call_bool(Op::SetDisplayName { user, name: name.map(str::to_owned) }).await
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

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn create(&self, session: &Session) -> StoreResult<()> {
        self.call(Op::CreateSession(session.clone())).await.map(drop)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        let id = id.to_owned();
        self.read_durable(move |txn| {
            let t = txn.open_table(SESSIONS)?;
            let found = t.get(id.as_str())?;
            Ok(match found {
                Some(g) => Some(serde_json::from_slice(g.value())?),
                None => None,
            })
        })
        .await
    }

    async fn revoke(&self, id: &str) -> StoreResult<bool> {
        self.call_bool(Op::RevokeSession(id.to_owned())).await
    }

    async fn purge_expired(&self, now: u64) -> StoreResult<usize> {
        match self.call(Op::PurgeExpired(now)).await? {
            Reply::Count(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }
}
