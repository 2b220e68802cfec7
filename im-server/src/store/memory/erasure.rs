//! The in-memory store's [`MessageErasure`] and [`DirectoryErasure`].

use std::collections::BTreeSet;
use std::ops::Bound;

use async_trait::async_trait;
use im_protocol::{ConversationId, GroupId, UserId};

use super::{lock, MemoryStore};
use crate::model::Role;
use crate::store::{DirectoryErasure, MessageErasure, SentCursor, StoreError, StoreResult};

#[async_trait]
impl MessageErasure for MemoryStore {
    async fn sent_by(
        &self,
        user: UserId,
        after: Option<SentCursor>,
        limit: usize,
    ) -> StoreResult<Vec<SentCursor>> {
        let m = lock(&self.messages);
        let Some(convs) = m.senders.get(&user) else { return Ok(Vec::new()) };
        let from = match after {
            Some((conv, _)) => Bound::Included(conv),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for &conv in convs.range((from, Bound::Unbounded)) {
            // Message `id` is at index `id - 1`: start after the cursor's id.
            let skip = match after {
                Some((c, id)) if c == conv => usize::try_from(id).unwrap_or(usize::MAX),
                _ => 0,
            };
            let log = m.convs.get(&conv).map(Vec::as_slice).unwrap_or_default();
            for msg in log.iter().skip(skip).filter(|msg| msg.from == user) {
                if out.len() == limit {
                    return Ok(out);
                }
                out.push((conv, msg.id));
            }
        }
        Ok(out)
    }

    async fn forget_reads(&self, user: UserId) -> StoreResult<usize> {
        let mut m = lock(&self.messages);
        let mut convs = BTreeSet::new();
        let mine = |&(u, c): &(UserId, ConversationId)| (u == user).then_some(c);
        convs.extend(m.reads.keys().filter_map(mine));
        convs.extend(m.delivered.keys().filter_map(mine));
        convs.extend(m.muted.keys().filter_map(mine));
        convs.extend(m.device_reads.keys().filter_map(mine));
        m.reads.retain(|&(u, _), _| u != user);
        m.delivered.retain(|&(u, _), _| u != user);
        m.muted.retain(|&(u, _), _| u != user);
        m.device_reads.retain(|&(u, _), _| u != user);
        m.private.remove(&user);
        Ok(convs.len())
    }
}

#[async_trait]
impl DirectoryErasure for MemoryStore {
    async fn transfer_ownership(&self, group: GroupId, to: UserId) -> StoreResult<bool> {
        let mut d = lock(&self.directory);
        let old = d.groups.get(&group).ok_or(StoreError::NotFound)?.owner;
        let Some(members) = d.members.get_mut(&group) else { return Ok(false) };
        if !members.contains_key(&to) {
            return Ok(false);
        }
        if old != to {
            if let Some(role) = members.get_mut(&old) {
                *role = Role::Admin;
            }
            members.insert(to, Role::Owner);
            if let Some(g) = d.groups.get_mut(&group) {
                g.owner = to;
            }
        }
        Ok(true)
    }

    async fn erase_user(&self, user: UserId) -> StoreResult<bool> {
        let mut d = lock(&self.directory);
        let Some(account) = d.users.remove(&user) else { return Ok(false) };
        d.by_name.remove(&account.username);
        for group in d.user_groups.remove(&user).unwrap_or_default() {
            if let Some(m) = d.members.get_mut(&group) {
                m.remove(&user);
            }
        }
        for room in d.user_rooms.get(&user).cloned().unwrap_or_default() {
            d.leave_room(room, user);
        }
        d.user_rooms.remove(&user);
        d.directs.remove(&user);
        d.contacts.retain(|&(a, b), _| a != user && b != user);
        d.blocks.retain(|&(a, b), _| a != user && b != user);
        d.muted.retain(|&(_, u), _| u != user);
        d.banned.retain(|&(_, u)| u != user);
        Ok(true)
    }
}
