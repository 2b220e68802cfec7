//! The in-memory store's [`ContactStore`], in the directory's maps.

use async_trait::async_trait;
use im_protocol::{ContactState, UserId};

use super::{lock, Dir, MemoryStore};
use crate::store::{Contact, ContactRefusal, ContactStore, StoreResult};

impl Dir {
    fn blocked(&self, a: UserId, b: UserId) -> bool {
        self.blocks.contains_key(&(a, b)) || self.blocks.contains_key(&(b, a))
    }

    fn relate(&mut self, a: UserId, b: UserId, state: ContactState, now: u64) {
        self.contacts.insert((a, b), (state, now));
        self.contacts.insert((b, a), (state.mirrored(), now));
    }

    fn unrelate(&mut self, a: UserId, b: UserId) -> bool {
        let was = self.contacts.remove(&(a, b)).is_some();
        self.contacts.remove(&(b, a));
        was
    }
}

#[async_trait]
impl ContactStore for MemoryStore {
    async fn request_contact(
        &self,
        from: UserId,
        to: UserId,
        now: u64,
    ) -> StoreResult<Result<ContactState, ContactRefusal>> {
        let mut d = lock(&self.directory);
        if d.blocked(from, to) {
            return Ok(Err(ContactRefusal::Blocked));
        }
        Ok(Ok(match d.contacts.get(&(from, to)).map(|c| c.0) {
            Some(ContactState::Pending) => {
                d.relate(from, to, ContactState::Accepted, now);
                ContactState::Accepted
            }
            Some(state) => state,
            None => {
                d.relate(from, to, ContactState::Requested, now);
                ContactState::Requested
            }
        }))
    }

    async fn accept_contact(
        &self,
        user: UserId,
        from: UserId,
        now: u64,
    ) -> StoreResult<Result<(), ContactRefusal>> {
        let mut d = lock(&self.directory);
        Ok(match d.contacts.get(&(user, from)).map(|c| c.0) {
            Some(ContactState::Pending) => {
                d.relate(user, from, ContactState::Accepted, now);
                Ok(())
            }
            Some(ContactState::Accepted) => Ok(()),
            _ => Err(ContactRefusal::NoRequest),
        })
    }

    async fn remove_contact(&self, user: UserId, other: UserId) -> StoreResult<bool> {
        Ok(lock(&self.directory).unrelate(user, other))
    }

    async fn contacts(&self, user: UserId) -> StoreResult<Vec<Contact>> {
        let d = lock(&self.directory);
        Ok(d.contacts
            .range((user, UserId(0))..=(user, UserId(u64::MAX)))
            .map(|(&(_, other), &(state, since))| Contact { user: other, state, since })
            .collect())
    }

    async fn contact(&self, user: UserId, other: UserId) -> StoreResult<Option<Contact>> {
        let d = lock(&self.directory);
        Ok(d.contacts.get(&(user, other)).map(|&(state, since)| Contact { user: other, state, since }))
    }

    async fn block(&self, user: UserId, other: UserId, now: u64) -> StoreResult<bool> {
        let mut d = lock(&self.directory);
        d.unrelate(user, other);
        Ok(d.blocks.insert((user, other), now).is_none())
    }

    async fn unblock(&self, user: UserId, other: UserId) -> StoreResult<bool> {
        Ok(lock(&self.directory).blocks.remove(&(user, other)).is_some())
    }

    async fn blocks(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let d = lock(&self.directory);
        Ok(d.blocks.range((user, UserId(0))..=(user, UserId(u64::MAX))).map(|(&(_, b), _)| b).collect())
    }

    async fn blocked_either_way(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let d = lock(&self.directory);
        let mut out: Vec<UserId> = d
            .blocks
            .keys()
            .filter_map(|&(a, b)| (a == user).then_some(b).or((b == user).then_some(a)))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn block_between(&self, a: UserId, b: UserId) -> StoreResult<(bool, bool)> {
        let d = lock(&self.directory);
        Ok((d.blocks.contains_key(&(a, b)), d.blocks.contains_key(&(b, a))))
    }
}
