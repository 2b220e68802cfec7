//! The in-memory store's [`Directory`]: users, groups, rooms and who
//! belongs where, in the directory's maps.

use async_trait::async_trait;
use im_protocol::{ConversationId, GroupId, RoomId, UserId};

use super::{lock, MemoryStore};
use crate::model::{Group, Member, Role, Room, User};
use crate::store::{Directory, StoreError, StoreResult};

#[async_trait]
impl Directory for MemoryStore {
    async fn create_user(&self, username: &str, password_hash: &str, now: u64) -> StoreResult<User> {
        let mut d = lock(&self.directory);
        if d.by_name.contains_key(username) {
            return Err(StoreError::Conflict);
        }
        d.last_user += 1;
        let id = UserId(d.last_user);
        let user = User {
            id,
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            created_at: now,
            display_name: None,
        };
        d.by_name.insert(username.to_owned(), id);
        d.users.insert(id, user.clone());
        Ok(user)
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        Ok(lock(&self.directory).users.get(&id).cloned())
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let d = lock(&self.directory);
        Ok(d.by_name.get(username).and_then(|id| d.users.get(id)).cloned())
    }

    async fn create_group(&self, name: &str, owner: UserId, now: u64) -> StoreResult<Group> {
        let mut d = lock(&self.directory);
        let id = GroupId(d.groups.last_key_value().map_or(0, |(k, _)| k.0) + 1);
        let group = Group { id, name: name.to_owned(), owner, created_at: now };
        d.groups.insert(id, group.clone());
        d.members.entry(id).or_default().insert(owner, Role::Owner);
        d.user_groups.entry(owner).or_default().insert(id);
        Ok(group)
    }

    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        Ok(lock(&self.directory).groups.get(&id).cloned())
    }

    async fn add_member(&self, group: GroupId, user: UserId, role: Role, cap: usize) -> StoreResult<bool> {
        let mut d = lock(&self.directory);
        if !d.groups.contains_key(&group) {
            return Err(StoreError::NotFound);
        }
        let banned = d.banned.contains(&(ConversationId::Group(group), user));
        let members = d.members.entry(group).or_default();
        if let Some(r) = members.get_mut(&user) {
            if *r != Role::Owner {
                *r = role;
            }
            return Ok(false);
        }
        if banned {
            return Err(StoreError::Banned);
        }
        if members.len() >= cap {
            return Err(StoreError::GroupFull);
        }
        members.insert(user, role);
        d.user_groups.entry(user).or_default().insert(group);
        Ok(true)
    }

    async fn remove_member(&self, group: GroupId, user: UserId) -> StoreResult<bool> {
        let mut d = lock(&self.directory);
        if d.members.get(&group).and_then(|m| m.get(&user)) == Some(&Role::Owner) {
            return Ok(false);
        }
        Ok(d.remove_member(group, user))
    }

    async fn member_role(&self, group: GroupId, user: UserId) -> StoreResult<Option<Role>> {
        Ok(lock(&self.directory).members.get(&group).and_then(|m| m.get(&user)).copied())
    }

    async fn members(&self, group: GroupId) -> StoreResult<Vec<Member>> {
        let d = lock(&self.directory);
        Ok(d.members
            .get(&group)
            .map(|m| m.iter().map(|(&user, &role)| Member { user, role }).collect())
            .unwrap_or_default())
    }

    async fn groups_of(&self, user: UserId) -> StoreResult<Vec<GroupId>> {
        let d = lock(&self.directory);
        Ok(d.user_groups.get(&user).map(|s| s.iter().copied().collect()).unwrap_or_default())
    }

    async fn create_room(&self, name: &str, created_by: UserId, now: u64) -> StoreResult<Room> {
        let mut d = lock(&self.directory);
        let id = RoomId(d.rooms.last_key_value().map_or(0, |(k, _)| k.0) + 1);
        let room = Room { id, name: name.to_owned(), created_by, created_at: now };
        d.rooms.insert(id, room.clone());
        Ok(room)
    }

    async fn room(&self, id: RoomId) -> StoreResult<Option<Room>> {
        Ok(lock(&self.directory).rooms.get(&id).cloned())
    }

    async fn rooms(&self, after: RoomId, limit: usize) -> StoreResult<Vec<Room>> {
        let d = lock(&self.directory);
        Ok(d.rooms.range(RoomId(after.0.saturating_add(1))..).take(limit).map(|(_, r)| r.clone()).collect())
    }

    async fn join_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        let mut d = lock(&self.directory);
        if !d.rooms.contains_key(&room) {
            return Err(StoreError::NotFound);
        }
        let banned = d.banned.contains(&(ConversationId::Room(room), user));
        if banned && !d.room_members.get(&room).is_some_and(|m| m.contains(&user)) {
            return Err(StoreError::Banned);
        }
        let joined = d.room_members.entry(room).or_default().insert(user);
        d.user_rooms.entry(user).or_default().insert(room);
        Ok(joined)
    }

    async fn leave_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        Ok(lock(&self.directory).leave_room(room, user))
    }

    async fn in_room(&self, room: RoomId, user: UserId) -> StoreResult<bool> {
        Ok(lock(&self.directory).room_members.get(&room).is_some_and(|m| m.contains(&user)))
    }

    async fn rooms_of(&self, user: UserId) -> StoreResult<Vec<RoomId>> {
        let d = lock(&self.directory);
        Ok(d.user_rooms.get(&user).map(|s| s.iter().copied().collect()).unwrap_or_default())
    }

    async fn add_direct(&self, a: UserId, b: UserId) -> StoreResult<()> {
        let mut d = lock(&self.directory);
        d.directs.entry(a).or_default().insert(b);
        d.directs.entry(b).or_default().insert(a);
        Ok(())
    }

    async fn directs_of(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let d = lock(&self.directory);
        Ok(d.directs.get(&user).map(|s| s.iter().copied().collect()).unwrap_or_default())
    }

    async fn set_display_name(&self, user: UserId, name: Option<&str>) -> StoreResult<bool> {
        let mut d = lock(&self.directory);
        Ok(match d.users.get_mut(&user) {
            Some(u) => {
                u.display_name = name.map(str::to_owned);
                true
            }
            None => false,
        })
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
