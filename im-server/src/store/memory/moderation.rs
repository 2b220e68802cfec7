//! The in-memory store's [`ModerationStore`], in the directory's maps.

use async_trait::async_trait;
use im_protocol::{ConversationId, RoomId, UserId};

use super::{lock, MemoryStore};
use crate::store::{Access, ModerationStore, Sanction, StoreResult};

#[async_trait]
impl ModerationStore for MemoryStore {
    async fn access(&self, conv: ConversationId, user: UserId) -> StoreResult<Option<Access>> {
        let d = lock(&self.directory);
        let muted_until = d.muted.get(&(conv, user)).copied().unwrap_or(0);
        Ok(match conv {
            ConversationId::Group(g) => d.members.get(&g).and_then(|m| m.get(&user)).map(|&role| Access {
                role: Some(role),
                moderator: false,
                muted_until,
            }),
            ConversationId::Room(r) => d.room_members.get(&r).filter(|m| m.contains(&user)).map(|_| Access {
                role: None,
                moderator: d.moderators.get(&r).is_some_and(|m| m.contains(&user)),
                muted_until,
            }),
            ConversationId::Direct(..) => None,
        })
    }

    async fn set_muted(&self, conv: ConversationId, user: UserId, until: u64) -> StoreResult<()> {
        let mut d = lock(&self.directory);
        if until == 0 {
            d.muted.remove(&(conv, user));
        } else {
            d.muted.insert((conv, user), until);
        }
        Ok(())
    }

    async fn ban(&self, conv: ConversationId, user: UserId) -> StoreResult<bool> {
        let mut d = lock(&self.directory);
        d.banned.insert((conv, user));
        Ok(match conv {
            ConversationId::Group(g) => d.remove_member(g, user),
            ConversationId::Room(r) => d.leave_room(r, user),
            ConversationId::Direct(..) => false,
        })
    }

    async fn unban(&self, conv: ConversationId, user: UserId) -> StoreResult<bool> {
        Ok(lock(&self.directory).banned.remove(&(conv, user)))
    }

    async fn sanctions(&self, conv: ConversationId, now: u64) -> StoreResult<Vec<Sanction>> {
        let d = lock(&self.directory);
        let mut users: Vec<UserId> = d.banned.iter().filter(|(c, _)| *c == conv).map(|&(_, u)| u).collect();
        users.extend(
            d.muted.iter().filter(|((c, _), &until)| *c == conv && until > now).map(|(&(_, u), _)| u),
        );
        users.sort();
        users.dedup();
        Ok(users
            .into_iter()
            .map(|user| {
                let muted_until = d.muted.get(&(conv, user)).copied().filter(|&t| t > now).unwrap_or(0);
                Sanction { user, banned: d.banned.contains(&(conv, user)), muted_until }
            })
            .collect())
    }

    async fn set_room_moderator(&self, room: RoomId, user: UserId, on: bool) -> StoreResult<bool> {
        let mut d = lock(&self.directory);
        if !d.room_members.get(&room).is_some_and(|m| m.contains(&user)) {
            return Ok(false);
        }
        let mods = d.moderators.entry(room).or_default();
        if on {
            mods.insert(user);
        } else {
            mods.remove(&user);
        }
        Ok(true)
    }

    async fn room_moderators(&self, room: RoomId) -> StoreResult<Vec<UserId>> {
        Ok(lock(&self.directory)
            .moderators
            .get(&room)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default())
    }
}
