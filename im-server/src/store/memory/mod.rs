//! In-memory implementation of every storage trait, for tests and embedding.
//!
//! Nothing survives the process. Each call takes a short-lived
//! [`std::sync::Mutex`] (never held across an `.await`) and computes its
//! answer; messages live in one `Vec` per conversation indexed by id, so
//! paging is O(page).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use im_core::{ClientMsgId, ConversationId, GroupId, Message, MessageId, RoomId, UserId};

use super::{
    Appended, DeviceRead, Directory, FeedStore, MessageStore, NewMessage, ReadMark, ReadState, ReadStore,
    SessionStore, StoreError, StoreResult,
};

mod contacts;
mod erasure;
mod feed;
mod moderation;
use crate::model::{Group, Member, Role, Room, Session, User};

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
    /// The sender index: `(from, conv, id)` of every message stored.
    sent: BTreeSet<(UserId, ConversationId, MessageId)>,
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
    contacts: BTreeMap<(UserId, UserId), (im_core::ContactState, u64)>,
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
                    if m.target == Some(target) && m.kind() == im_core::events::EDIT {
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
        m.sent.insert((message.from, message.conv, id));
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
                    if reports.len() >= im_core::limits::MAX_DEVICE_READS {
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
