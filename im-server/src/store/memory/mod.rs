//! In-memory implementation of every storage trait, for tests and embedding.
//!
//! Nothing survives the process. Each call takes a short-lived
//! [`std::sync::Mutex`] (never held across an `.await`) and computes its
//! answer; messages live in one `Vec` per conversation indexed by id, so
//! paging is O(page).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use im_protocol::{ClientMsgId, ConversationId, GroupId, Message, MessageId, RoomId, UserId};

use super::{
    Appended, DeviceRead, FeedStore, MessageStore, NewMessage, ReadMark, ReadState, ReadStore, SessionStore,
    StoreError, StoreResult,
};

mod contacts;
mod directory;
mod erasure;
mod feed;
mod moderation;
use crate::model::{Group, Role, Room, Session, User};

/// Stores messages, the directory and sessions in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    messages: Mutex<Messages>,
    directory: Mutex<Dir>,
    sessions: Mutex<HashMap<String, Session>>,
    feed: feed::MemoryFeed,
}

#[derive(Debug, Default)]
struct Messages {
    /// Per conversation, message `id` at index `id - 1`.
    convs: HashMap<ConversationId, Vec<Message>>,
    /// Per conversation, at index `id - 1`: countable messages up to `id`.
    counted: HashMap<ConversationId, Vec<u64>>,
    /// Idempotency index `(conv, from, cmid)` → id.
    keys: HashMap<(ConversationId, UserId, ClientMsgId), MessageId>,
    /// Read id per `(user, conv)`.
    reads: HashMap<(UserId, ConversationId), MessageId>,
    /// Device reports per `(user, conv)`.
    device_reads: HashMap<(UserId, ConversationId), BTreeMap<String, MessageId>>,
    /// Delivered id per `(user, conv)`.
    delivered: HashMap<(UserId, ConversationId), MessageId>,
    /// Users who do not share receipts.
    private: BTreeSet<UserId>,
    /// Muted until, per `(user, conv)`.
    muted: HashMap<(UserId, ConversationId), u64>,
    /// The sender index: the conversations each user has sent in (a
    /// lookup per append, an insert only for a new pair).
    senders: HashMap<UserId, BTreeSet<ConversationId>>,
}

impl Messages {
    fn state(&self, user: UserId, conv: ConversationId) -> ReadState {
        let key = (user, conv);
        ReadState {
            read: self.reads.get(&key).copied().unwrap_or(0),
            delivered: self.delivered.get(&key).copied().unwrap_or(0),
            muted_until: self.muted.get(&key).copied().unwrap_or(0),
        }
    }

    /// Raises `user`'s read id in `conv` to at least `id`.
    fn raise_read(&mut self, user: UserId, conv: ConversationId, id: MessageId) -> ReadMark {
        let read = self.reads.entry((user, conv)).or_insert(0);
        let raised = id > *read;
        *read = (*read).max(id);
        ReadMark { read: *read, raised }
    }
}

#[derive(Debug, Default)]
struct Dir {
    users: BTreeMap<UserId, User>,
    /// The last user id handed out (erased users' ids are not reused).
    last_user: u64,
    by_name: HashMap<String, UserId>,
    groups: BTreeMap<GroupId, Group>,
    members: HashMap<GroupId, BTreeMap<UserId, Role>>,
    user_groups: HashMap<UserId, BTreeSet<GroupId>>,
    rooms: BTreeMap<RoomId, Room>,
    room_members: HashMap<RoomId, BTreeSet<UserId>>,
    user_rooms: HashMap<UserId, BTreeSet<RoomId>>,
    directs: HashMap<UserId, BTreeSet<UserId>>,
    /// Muted until, per `(group or room, user)`.
    muted: HashMap<(ConversationId, UserId), u64>,
    /// Bans, per `(group or room, user)`.
    banned: std::collections::HashSet<(ConversationId, UserId)>,
    /// Each room's moderators (members only).
    moderators: HashMap<RoomId, BTreeSet<UserId>>,
    /// Contact relations `(user, other)` → state from `user`'s side, since.
    contacts: BTreeMap<(UserId, UserId), (im_protocol::ContactState, u64)>,
    /// Blocks `(blocker, blocked)` → since.
    blocks: BTreeMap<(UserId, UserId), u64>,
}

impl Dir {
    /// Ends `user`'s membership of `room` (and moderation of it).
    fn leave_room(&mut self, room: RoomId, user: UserId) -> bool {
        let left = self.room_members.get_mut(&room).is_some_and(|m| m.remove(&user));
        if let Some(rs) = self.user_rooms.get_mut(&user) {
            rs.remove(&room);
        }
        if let Some(ms) = self.moderators.get_mut(&room) {
            ms.remove(&user);
        }
        left
    }

    /// Ends `user`'s membership of `group`.
    fn remove_member(&mut self, group: GroupId, user: UserId) -> bool {
        let removed = self.members.get_mut(&group).is_some_and(|m| m.remove(&user).is_some());
        if removed {
            if let Some(gs) = self.user_groups.get_mut(&user) {
                gs.remove(&group);
            }
        }
        removed
    }
}

/// Locks, ignoring poisoning: every mutation below completes or changes nothing.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn index(id: MessageId) -> usize {
    usize::try_from(id).unwrap_or(usize::MAX)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn append(&self, msg: NewMessage) -> StoreResult<Appended> {
        let mut m = lock(&self.messages);
        let Messages { convs, keys, counted, .. } = &mut *m;
        let key = (msg.conv, msg.from, msg.cmid.clone());
        let log = convs.entry(msg.conv).or_default();
        if let Some(&id) = keys.get(&key) {
            let original = log
                .get(index(id).wrapping_sub(1))
                .cloned()
                .ok_or_else(|| StoreError::Backend(format!("idempotency key names missing message {id}")))?;
            return Ok(Appended { message: original, duplicate: true });
        }
        let id = log.len() as MessageId + 1;
        let target = msg.target;
        let mut message = msg.into_message(id);
        if let Some(target) = target {
            let slot = log.get_mut(index(target).wrapping_sub(1)).ok_or(StoreError::NotFound)?;
            let mut changed = slot.clone();
            let effect = super::apply_event(&mut changed, &mut message);
            *slot = changed;
            if effect.recalled {
                let recall = message.id;
                for m in log.iter_mut().skip(index(target)) {
                    if m.target == Some(target) && m.kind() == im_protocol::events::EDIT {
                        super::scrub_edit(m, recall);
                    }
                }
            }
        }
        let counted = counted.entry(message.conv).or_default();
        let before = counted.last().copied().unwrap_or(0);
        counted.push(before + u64::from(!message.is_event()));
        log.push(message.clone());
        keys.insert(key, id);
        if !m.senders.get(&message.from).is_some_and(|convs| convs.contains(&message.conv)) {
            m.senders.entry(message.from).or_default().insert(message.conv);
        }
        m.raise_read(message.from, message.conv, id);
        Ok(Appended { message, duplicate: false })
    }

    async fn sent(
        &self,
        conv: ConversationId,
        from: UserId,
        cmid: &ClientMsgId,
    ) -> StoreResult<Option<Message>> {
        let m = lock(&self.messages);
        let Some(&id) = m.keys.get(&(conv, from, cmid.clone())) else { return Ok(None) };
        Ok(m.convs.get(&conv).and_then(|log| log.get(index(id).wrapping_sub(1))).cloned())
    }

    async fn after(&self, conv: ConversationId, after: MessageId, limit: usize) -> StoreResult<Vec<Message>> {
        let m = lock(&self.messages);
        let Some(log) = m.convs.get(&conv) else { return Ok(Vec::new()) };
        let start = index(after).min(log.len());
        let end = start.saturating_add(limit).min(log.len());
        Ok(log[start..end].to_vec())
    }

    async fn before(
        &self,
        conv: ConversationId,
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let m = lock(&self.messages);
        let Some(log) = m.convs.get(&conv) else { return Ok(Vec::new()) };
        let end = before.map_or(log.len(), |b| index(b.saturating_sub(1)).min(log.len()));
        let start = end.saturating_sub(limit);
        Ok(log[start..end].to_vec())
    }

    async fn heads(&self, convs: &[ConversationId]) -> StoreResult<Vec<MessageId>> {
        let m = lock(&self.messages);
        Ok(convs.iter().map(|c| m.convs.get(c).map_or(0, |log| log.len() as MessageId)).collect())
    }

    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }

    fn feed(&self) -> Option<&dyn FeedStore> {
        Some(self)
    }

    fn message_erasure(&self) -> Option<&dyn crate::store::MessageErasure> {
        Some(self)
    }
}

#[async_trait]
impl ReadStore for MemoryStore {
    async fn mark_read(
        &self,
        user: UserId,
        conv: ConversationId,
        device: Option<&str>,
        id: MessageId,
    ) -> StoreResult<ReadMark> {
        let mut m = lock(&self.messages);
        if let Some(device) = device {
            let reports = m.device_reads.entry((user, conv)).or_default();
            match reports.get_mut(device) {
                Some(read) => *read = (*read).max(id),
                None => {
                    if reports.len() >= im_protocol::limits::MAX_DEVICE_READS {
                        let lowest = reports.iter().min_by_key(|(_, &read)| read).map(|(d, _)| d.clone());
                        if let Some(lowest) = lowest {
                            reports.remove(&lowest);
                        }
                    }
                    reports.insert(device.to_owned(), id);
                }
            }
        }
        Ok(m.raise_read(user, conv, id))
    }

    async fn countable(&self, at: &[(ConversationId, MessageId)]) -> StoreResult<Vec<u64>> {
        let m = lock(&self.messages);
        Ok(at
            .iter()
            .map(|(conv, id)| {
                let counted = m.counted.get(conv).map_or(&[][..], Vec::as_slice);
                match index(*id) {
                    0 => 0,
                    i => counted.get(i - 1).or(counted.last()).copied().unwrap_or(0),
                }
            })
            .collect())
    }

    async fn read_states(&self, user: UserId, convs: &[ConversationId]) -> StoreResult<Vec<ReadState>> {
        let m = lock(&self.messages);
        Ok(convs.iter().map(|&c| m.state(user, c)).collect())
    }

    async fn mute(&self, user: UserId, conv: ConversationId, until: u64) -> StoreResult<()> {
        let mut m = lock(&self.messages);
        if until == 0 {
            m.muted.remove(&(user, conv));
        } else {
            m.muted.insert((user, conv), until);
        }
        Ok(())
    }

    async fn device_reads(&self, user: UserId, conv: ConversationId) -> StoreResult<Vec<DeviceRead>> {
        let m = lock(&self.messages);
        let Some(reports) = m.device_reads.get(&(user, conv)) else { return Ok(Vec::new()) };
        Ok(reports.iter().map(|(device, &read)| DeviceRead { device: device.clone(), read }).collect())
    }

    async fn mark_delivered(
        &self,
        user: UserId,
        items: &[(ConversationId, MessageId)],
    ) -> StoreResult<Vec<bool>> {
        let mut m = lock(&self.messages);
        Ok(items
            .iter()
            .map(|&(conv, id)| {
                let delivered = m.delivered.entry((user, conv)).or_insert(0);
                let raised = id > *delivered;
                *delivered = (*delivered).max(id);
                raised
            })
            .collect())
    }

    async fn reads_in(&self, conv: ConversationId, users: &[UserId]) -> StoreResult<Vec<ReadState>> {
        let m = lock(&self.messages);
        Ok(users.iter().map(|&u| m.state(u, conv)).collect())
    }

    async fn set_receipts_shared(&self, user: UserId, shared: bool) -> StoreResult<()> {
        let mut m = lock(&self.messages);
        if shared {
            m.private.remove(&user);
        } else {
            m.private.insert(user);
        }
        Ok(())
    }

    async fn receipts_shared(&self, users: &[UserId]) -> StoreResult<Vec<bool>> {
        let m = lock(&self.messages);
        Ok(users.iter().map(|u| !m.private.contains(u)).collect())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, session: &Session) -> StoreResult<()> {
        lock(&self.sessions).insert(session.id.clone(), session.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        Ok(lock(&self.sessions).get(id).cloned())
    }

    async fn revoke(&self, id: &str) -> StoreResult<bool> {
        Ok(lock(&self.sessions).remove(id).is_some())
    }

    async fn purge_expired(&self, now: u64) -> StoreResult<usize> {
        let mut s = lock(&self.sessions);
        let before = s.len();
        s.retain(|_, session| session.expires_at >= now);
        Ok(before - s.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryStore;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread")]
    async fn messages() {
        conformance::messages(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn reads() {
        conformance::reads(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn events() {
        crate::store::conformance_events::events(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn contacts() {
        crate::store::conformance_contacts::contacts(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn moderation() {
        crate::store::conformance_moderation::moderation(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn erasure() {
        crate::store::conformance_erasure::erasure(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn feed() {
        crate::store::conformance_feed::feed(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_appends() {
        conformance::concurrent_appends(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn directory() {
        conformance::directory(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sessions() {
        conformance::sessions(Arc::new(MemoryStore::new())).await;
    }
}
