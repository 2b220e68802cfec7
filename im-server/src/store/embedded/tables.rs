//! The tables of the embedded store, opened for writing, and what each
//! writer request does to them.

use im_protocol::{ConversationId, GroupId, Message, RoomId, UserId};
use redb::{Key, ReadableTable, Table, TableDefinition, Value, WriteTransaction};

use super::erasure::SenderConvs;
use super::log::MessageLog;
use super::ops::{Op, Reply};
use super::reads::{self, DELIVERED, DEVICE_READS, MUTED, READS, RECEIPTS_OFF};
use super::tail::Tail;
use super::*;

type Bytes = &'static [u8];

/// A table of a write transaction, opened on first use: a batch of
/// appends touches 4 of the store's 29 tables, and every open table costs
/// its open and its flush at commit (~5.5 k instructions per batch for
/// each one, measured with callgrind).
pub(super) struct Lazy<'t, K: Key + 'static, V: Value + 'static> {
    txn: &'t WriteTransaction,
    definition: TableDefinition<'static, K, V>,
    table: Option<Table<'t, K, V>>,
}

impl<'t, K: Key + 'static, V: Value + 'static> Lazy<'t, K, V> {
    fn new(txn: &'t WriteTransaction, definition: TableDefinition<'static, K, V>) -> Self {
        Self { txn, definition, table: None }
    }

    /// The table, opened (and created if missing) by the first call.
    pub(super) fn open(&mut self) -> Result<&mut Table<'t, K, V>, DbError> {
        let table = match self.table.take() {
            Some(table) => table,
            None => self.txn.open_table(self.definition)?,
        };
        Ok(self.table.insert(table))
    }
}

/// Every table of a write transaction, each opened on first use.
pub(super) struct Tables<'t> {
    messages: Lazy<'t, (&'static str, u64), Bytes>,
    msg_keys: Lazy<'t, (&'static str, u64, &'static str), u64>,
    counters: Lazy<'t, &'static str, u64>,
    pub(super) users: Lazy<'t, u64, Bytes>,
    pub(super) usernames: Lazy<'t, &'static str, u64>,
    pub(super) groups: Lazy<'t, u64, Bytes>,
    pub(super) members: Lazy<'t, (u64, u64), u8>,
    pub(super) user_groups: Lazy<'t, (u64, u64), ()>,
    rooms: Lazy<'t, u64, Bytes>,
    room_members: Lazy<'t, (u64, u64), ()>,
    pub(super) user_rooms: Lazy<'t, (u64, u64), ()>,
    pub(super) directs: Lazy<'t, (u64, u64), ()>,
    sessions: Lazy<'t, &'static str, Bytes>,
    session_expiry: Lazy<'t, (u64, &'static str), ()>,
    pub(super) reads: Lazy<'t, (u64, &'static str), u64>,
    pub(super) device_reads: Lazy<'t, (u64, &'static str, &'static str), u64>,
    pub(super) delivered: Lazy<'t, (u64, &'static str), u64>,
    pub(super) receipts_off: Lazy<'t, u64, ()>,
    pub(super) muted: Lazy<'t, (u64, &'static str), u64>,
    event_counts: Lazy<'t, &'static str, u64>,
    edits: Lazy<'t, (&'static str, u64, u64), ()>,
    feed_cursors: Lazy<'t, &'static str, u64>,
    pub(super) member_mutes: Lazy<'t, (&'static str, u64), u64>,
    pub(super) bans: Lazy<'t, (&'static str, u64), ()>,
    room_moderators: Lazy<'t, (u64, u64), ()>,
    pub(super) contacts: Lazy<'t, (u64, u64), u64>,
    pub(super) blocks: Lazy<'t, (u64, u64), u64>,
    pub(super) blocked_by: Lazy<'t, (u64, u64), ()>,
    sender_convs: Lazy<'t, (u64, &'static str), ()>,
}

/// Creates every table that does not exist yet.
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), DbError> {
    Tables::open(txn).open_all()
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Self {
        Self {
            messages: Lazy::new(txn, MESSAGES),
            msg_keys: Lazy::new(txn, MSG_KEYS),
            counters: Lazy::new(txn, COUNTERS),
            users: Lazy::new(txn, USERS),
            usernames: Lazy::new(txn, USERNAMES),
            groups: Lazy::new(txn, GROUPS),
            members: Lazy::new(txn, MEMBERS),
            user_groups: Lazy::new(txn, USER_GROUPS),
            rooms: Lazy::new(txn, ROOMS),
            room_members: Lazy::new(txn, ROOM_MEMBERS),
            user_rooms: Lazy::new(txn, USER_ROOMS),
            directs: Lazy::new(txn, DIRECTS),
            sessions: Lazy::new(txn, SESSIONS),
            session_expiry: Lazy::new(txn, SESSION_EXPIRY),
            reads: Lazy::new(txn, READS),
            device_reads: Lazy::new(txn, DEVICE_READS),
            delivered: Lazy::new(txn, DELIVERED),
            receipts_off: Lazy::new(txn, RECEIPTS_OFF),
            muted: Lazy::new(txn, MUTED),
            event_counts: Lazy::new(txn, EVENT_COUNTS),
            edits: Lazy::new(txn, EDITS),
            feed_cursors: Lazy::new(txn, super::feed::FEED_CURSORS),
            member_mutes: Lazy::new(txn, super::moderation::MEMBER_MUTES),
            bans: Lazy::new(txn, super::moderation::BANS),
            room_moderators: Lazy::new(txn, super::moderation::ROOM_MODERATORS),
            contacts: Lazy::new(txn, super::contacts::CONTACTS),
            blocks: Lazy::new(txn, super::contacts::BLOCKS),
            blocked_by: Lazy::new(txn, super::contacts::BLOCKED_BY),
            sender_convs: Lazy::new(txn, super::erasure::SENDER_CONVS),
        }
    }

    /// Opens every table (creating those that do not exist yet).
    fn open_all(&mut self) -> Result<(), DbError> {
        self.messages.open()?;
        self.msg_keys.open()?;
        self.counters.open()?;
        self.users.open()?;
        self.usernames.open()?;
        self.groups.open()?;
        self.members.open()?;
        self.user_groups.open()?;
        self.rooms.open()?;
        self.room_members.open()?;
        self.user_rooms.open()?;
        self.directs.open()?;
        self.sessions.open()?;
        self.session_expiry.open()?;
        self.reads.open()?;
        self.device_reads.open()?;
        self.delivered.open()?;
        self.receipts_off.open()?;
        self.muted.open()?;
        self.event_counts.open()?;
        self.edits.open()?;
        self.feed_cursors.open()?;
        self.member_mutes.open()?;
        self.bans.open()?;
        self.room_moderators.open()?;
        self.contacts.open()?;
        self.blocks.open()?;
        self.blocked_by.open()?;
        self.sender_convs.open()?;
        Ok(())
    }

    fn next_id(&mut self, counter: &str) -> Result<u64, DbError> {
        let id = self.counters.open()?.get(counter)?.map_or(0, |g| g.value()) + 1;
        self.counters.open()?.insert(counter, id)?;
        Ok(id)
    }

    /// Applies one op. The inner `Err` is the op's own refusal, checked before
    /// it writes anything; the outer `Err` is fatal for the whole batch.
    /// `senders` is the writer's memory of the sender index (see
    /// [`SenderConvs`]), whose pairs an append adds to stay fresh until
    /// the batch commits.
    pub(super) fn apply(
        &mut self,
        op: Op,
        log: Option<&mut MessageLog>,
        senders: &mut SenderConvs,
    ) -> Result<StoreResult<Reply>, DbError> {
        Ok(Ok(match op {
            Op::Append(m) => return self.append(m, log, senders),
            Op::CreateUser { username, password_hash, now } => {
                if self.usernames.open()?.get(username.as_str())?.is_some() {
                    return Ok(Err(StoreError::Conflict));
                }
                let id = UserId(self.next_id("user")?);
                let user = User { id, username, password_hash, created_at: now, display_name: None };
                self.users.open()?.insert(id.0, serde_json::to_vec(&user)?.as_slice())?;
                self.usernames.open()?.insert(user.username.as_str(), id.0)?;
                Reply::User(user)
            }
            Op::CreateGroup { name, owner, now } => {
                let id = GroupId(self.next_id("group")?);
                let group = Group { id, name, owner, created_at: now };
                self.groups.open()?.insert(id.0, serde_json::to_vec(&group)?.as_slice())?;
                self.members.open()?.insert((id.0, owner.0), role_code(Role::Owner))?;
                self.user_groups.open()?.insert((owner.0, id.0), ())?;
                Reply::Group(group)
            }
            Op::AddMember { group, user, role, cap } => {
                if self.groups.open()?.get(group.0)?.is_none() {
                    return Ok(Err(StoreError::NotFound));
                }
                let existing = self.members.open()?.get((group.0, user.0))?.map(|g| g.value());
                if let Some(code) = existing {
                    // The owner's role never changes here (ownership moves by transfer).
                    if code != role_code(Role::Owner) {
                        self.members.open()?.insert((group.0, user.0), role_code(role))?;
                    }
                    return Ok(Ok(Reply::Bool(false)));
                }
                if self
                    .bans
                    .open()?
                    .get((ConversationId::Group(group).to_string().as_str(), user.0))?
                    .is_some()
                {
                    return Ok(Err(StoreError::Banned));
                }
                let mut count = 0usize;
                for item in self.members.open()?.range((group.0, 0)..=(group.0, u64::MAX))? {
                    item?;
                    count += 1;
                }
                if count >= cap {
                    return Ok(Err(StoreError::GroupFull));
                }
                self.members.open()?.insert((group.0, user.0), role_code(role))?;
                self.user_groups.open()?.insert((user.0, group.0), ())?;
                Reply::Bool(true)
            }
            Op::RemoveMember { group, user } => {
                let owner = self
                    .members
                    .open()?
                    .get((group.0, user.0))?
                    .is_some_and(|g| g.value() == role_code(Role::Owner));
                Reply::Bool(!owner && self.remove_member(group, user)?)
            }
            Op::CreateRoom { name, created_by, now } => {
                let id = RoomId(self.next_id("room")?);
                let room = Room { id, name, created_by, created_at: now };
                self.rooms.open()?.insert(id.0, serde_json::to_vec(&room)?.as_slice())?;
                Reply::Room(room)
            }
            Op::JoinRoom { room, user } => {
                if self.rooms.open()?.get(room.0)?.is_none() {
                    return Ok(Err(StoreError::NotFound));
                }
                let member = self.room_members.open()?.get((room.0, user.0))?.is_some();
                let conv = ConversationId::Room(room).to_string();
                if !member && self.bans.open()?.get((conv.as_str(), user.0))?.is_some() {
                    return Ok(Err(StoreError::Banned));
                }
                self.room_members.open()?.insert((room.0, user.0), ())?;
                self.user_rooms.open()?.insert((user.0, room.0), ())?;
                Reply::Bool(!member)
            }
            Op::LeaveRoom { room, user } => Reply::Bool(self.leave_room(room, user)?),
            Op::SetMemberMute { conv, user, until } => {
                let c = conv.to_string();
                if until == 0 {
                    self.member_mutes.open()?.remove((c.as_str(), user.0))?;
                } else {
                    self.member_mutes.open()?.insert((c.as_str(), user.0), until)?;
                }
                Reply::Unit
            }
            Op::Ban { conv, user } => {
                self.bans.open()?.insert((conv.to_string().as_str(), user.0), ())?;
                Reply::Bool(match conv {
                    ConversationId::Group(g) => self.remove_member(g, user)?,
                    ConversationId::Room(r) => self.leave_room(r, user)?,
                    ConversationId::Direct(..) => false,
                })
            }
            Op::Unban { conv, user } => {
                Reply::Bool(self.bans.open()?.remove((conv.to_string().as_str(), user.0))?.is_some())
            }
            Op::SetRoomModerator { room, user, on } => {
                if self.room_members.open()?.get((room.0, user.0))?.is_none() {
                    Reply::Bool(false)
                } else {
                    if on {
                        self.room_moderators.open()?.insert((room.0, user.0), ())?;
                    } else {
                        self.room_moderators.open()?.remove((room.0, user.0))?;
                    }
                    Reply::Bool(true)
                }
            }
            Op::AddDirect { a, b } => {
                self.directs.open()?.insert((a.0, b.0), ())?;
                self.directs.open()?.insert((b.0, a.0), ())?;
                Reply::Unit
            }
            Op::CreateSession(s) => {
                self.remove_session(&s.id)?;
                self.sessions.open()?.insert(s.id.as_str(), serde_json::to_vec(&s)?.as_slice())?;
                self.session_expiry.open()?.insert((s.expires_at, s.id.as_str()), ())?;
                Reply::Unit
            }
            Op::RevokeSession(id) => Reply::Bool(self.remove_session(&id)?),
            Op::PurgeExpired(now) => {
                let mut expired = Vec::new();
                for item in self.session_expiry.open()?.range(..(now, ""))? {
                    let (k, _) = item?;
                    let (at, id) = k.value();
                    expired.push((at, id.to_owned()));
                }
                let mut purged = 0;
                for (at, id) in expired {
                    self.session_expiry.open()?.remove((at, id.as_str()))?;
                    let stored = self.sessions.open()?.get(id.as_str())?.map(|g| g.value().to_vec());
                    // Remove the session only if this entry really is its expiry.
                    let due = stored
                        .map(|b| serde_json::from_slice::<Session>(&b).map_or(true, |s| s.expires_at < now));
                    if due == Some(true) {
                        self.sessions.open()?.remove(id.as_str())?;
                        purged += 1;
                    }
                }
                Reply::Count(purged)
            }
            Op::MarkRead { user, conv, device, id } => {
                let c = conv.to_string();
                if let Some(device) = device {
                    reads::raise_device(self.device_reads.open()?, user, &c, &device, id)?;
                }
                Reply::Read(reads::raise(self.reads.open()?, user, &c, id)?)
            }
            Op::MarkDelivered { user, items } => {
                Reply::Flags(reads::raise_delivered(self.delivered.open()?, user, &items)?)
            }
            Op::SetReceiptsShared { user, shared } => {
                if shared {
                    self.receipts_off.open()?.remove(user.0)?;
                } else {
                    self.receipts_off.open()?.insert(user.0, ())?;
                }
                Reply::Unit
            }
            Op::Mute { user, conv, until } => {
                let c = conv.to_string();
                if until == 0 {
                    self.muted.open()?.remove((user.0, c.as_str()))?;
                } else {
                    self.muted.open()?.insert((user.0, c.as_str()), until)?;
                }
                Reply::Unit
            }
            Op::RequestContact { from, to, now } => {
                Reply::Contact(super::contacts::request(self, from, to, now)?)
            }
            Op::AcceptContact { user, from, now } => Reply::Contact(
                super::contacts::accept(self, user, from, now)?.map(|()| im_protocol::ContactState::Accepted),
            ),
            Op::RemoveContact { user, other } => Reply::Bool(super::contacts::unrelate(self, user, other)?),
            Op::Block { user, other, now } => Reply::Bool(super::contacts::block(self, user, other, now)?),
            Op::Unblock { user, other } => {
                self.blocked_by.open()?.remove((other.0, user.0))?;
                Reply::Bool(self.blocks.open()?.remove((user.0, other.0))?.is_some())
            }
            Op::SetDisplayName { user, name } => {
                let Some(old) = self.users.open()?.get(user.0)?.map(|g| g.value().to_vec()) else {
                    return Ok(Ok(Reply::Bool(false)));
                };
                let mut found: User = serde_json::from_slice(&old)?;
                found.display_name = name;
                self.users.open()?.insert(user.0, serde_json::to_vec(&found)?.as_slice())?;
                Reply::Bool(true)
            }
            Op::ForgetReads(user) => Reply::Count(super::erasure::forget_reads(self, user)?),
            Op::TransferOwnership { group, to } => {
                return Ok(super::erasure::transfer_ownership(self, group, to)?.map(Reply::Bool))
            }
            Op::EraseUser(user) => Reply::Bool(super::erasure::erase_user(self, user)?),
            Op::FeedStart => Reply::Bool(super::feed::start(
                self.counters.open()?,
                self.feed_cursors.open()?,
                &*self.messages.open()?,
                (&*self.groups.open()?, &*self.rooms.open()?, &*self.directs.open()?),
            )?),
            Op::FeedAdvance { conv, delivered } => {
                super::feed::advance(self.feed_cursors.open()?, &conv.to_string(), delivered)?;
                Reply::Unit
            }
            Op::Flush | Op::Drain => Reply::Unit,
        }))
    }

    fn append(
        &mut self,
        m: NewMessage,
        log: Option<&mut MessageLog>,
        senders: &mut SenderConvs,
    ) -> Result<StoreResult<Reply>, DbError> {
        let c = m.conv.to_string();
        let key = (c.as_str(), m.from.0, m.cmid.as_str());
        if let Some(id) = self.msg_keys.open()?.get(key)?.map(|g| g.value()) {
            let stored =
                self.messages.open()?.get((c.as_str(), id))?.map(|g| decode_msg(m.conv, id, g.value()));
            return Ok(match stored {
                Some(Ok(message)) => Ok(Reply::Appended(Box::new(Appended { message, duplicate: true }))),
                Some(Err(e)) => Err(e.into()),
                None => {
                    Err(StoreError::Backend(format!("idempotency key of {c} names missing message {id}")))
                }
            });
        }
        let id = last_id(&*self.messages.open()?, &c)? + 1;
        let target = m.target;
        let mut message = m.into_message(id);
        if let Some(target) = target {
            if !self.apply_event(&c, target, &mut message)? {
                return Ok(Err(StoreError::NotFound));
            }
        }
        let events = self.event_counts.open()?.get(c.as_str())?.map_or(0, |g| g.value());
        let events = events + u64::from(message.is_event());
        if message.is_event() {
            self.event_counts.open()?.insert(c.as_str(), events)?;
        }
        let value = encode_msg(&message, id - events)?;
        self.messages.open()?.insert((c.as_str(), id), value.as_slice())?;
        self.msg_keys.open()?.insert((c.as_str(), message.from.0, message.cmid.as_str()), id)?;
        senders.note(self.sender_convs.open()?, message.from.0, &c)?;
        reads::raise(self.reads.open()?, message.from, &c, id)?;
        if let Some(log) = log {
            log.push(&c, id, &value);
        }
        Ok(Ok(Reply::Appended(Box::new(Appended { message, duplicate: false }))))
    }

    /// Applies every unapplied append of `tail` (see [`super::tail`]), as
    /// [`append`](Self::append) would have: values, idempotency keys, the
    /// sender index, each sender's read id and the event counts.
    pub(super) fn drain(&mut self, tail: &Tail, senders: &mut SenderConvs) -> Result<(), DbError> {
        for (c, t) in tail.convs() {
            let messages = self.messages.open()?;
            for (id, value) in t.messages() {
                messages.insert((c, id), &**value)?;
            }
            let keys = self.msg_keys.open()?;
            for (sender, cmid, id) in t.keys() {
                keys.insert((c, sender, cmid), id)?;
            }
            for (sender, newest) in t.senders() {
                senders.note(self.sender_convs.open()?, sender, c)?;
                reads::raise(self.reads.open()?, UserId(sender), c, newest)?;
            }
            if let Some(events) = t.events() {
                self.event_counts.open()?.insert(c, events)?;
            }
        }
        Ok(())
    }

    /// Applies event `event` to its stored `target` in conversation `c`
    /// (writing the target back, and scrubbing its edits on a recall);
    /// `false` if the target is not stored.
    fn apply_event(&mut self, c: &str, target: u64, event: &mut Message) -> Result<bool, DbError> {
        let Some(stored) = self.messages.open()?.get((c, target))?.map(|g| g.value().to_vec()) else {
            return Ok(false);
        };
        let (mut old, n) = decode_counted(event.conv, target, &stored)?;
        let effect = super::super::apply_event(&mut old, event);
        if effect.target_changed {
            self.messages.open()?.insert((c, target), encode_msg(&old, n)?.as_slice())?;
        }
        if event.kind() == im_protocol::events::EDIT {
            self.edits.open()?.insert((c, target, event.id), ())?;
        }
        if effect.recalled {
            let mut edits = Vec::new();
            for item in self.edits.open()?.range((c, target, 0)..=(c, target, u64::MAX))? {
                edits.push(item?.0.value().2);
            }
            for id in edits {
                let Some(v) = self.messages.open()?.get((c, id))?.map(|g| g.value().to_vec()) else {
                    continue;
                };
                let (mut edit, n) = decode_counted(event.conv, id, &v)?;
                super::super::scrub_edit(&mut edit, event.id);
                self.messages.open()?.insert((c, id), encode_msg(&edit, n)?.as_slice())?;
            }
        }
        Ok(true)
    }

    /// Ends `user`'s membership of `group`; whether they were a member.
    pub(super) fn remove_member(&mut self, group: GroupId, user: UserId) -> Result<bool, DbError> {
        let was = self.members.open()?.remove((group.0, user.0))?.is_some();
        if was {
            self.user_groups.open()?.remove((user.0, group.0))?;
        }
        Ok(was)
    }

    /// Ends `user`'s membership (and moderation) of `room`; whether they were in it.
    pub(super) fn leave_room(&mut self, room: RoomId, user: UserId) -> Result<bool, DbError> {
        let was = self.room_members.open()?.remove((room.0, user.0))?.is_some();
        self.user_rooms.open()?.remove((user.0, room.0))?;
        self.room_moderators.open()?.remove((room.0, user.0))?;
        Ok(was)
    }

    /// Removes a session and its expiry entry; whether it existed.
    fn remove_session(&mut self, id: &str) -> Result<bool, DbError> {
        let Some(old) = self.sessions.open()?.remove(id)?.map(|g| g.value().to_vec()) else {
            return Ok(false);
        };
        // An undecodable record leaves an orphan expiry entry, which purge skips.
        if let Ok(s) = serde_json::from_slice::<Session>(&old) {
            self.session_expiry.open()?.remove((s.expires_at, id))?;
        }
        Ok(true)
    }
}

/// The largest message id of conversation `conv` (its string form), 0 for
/// none: the last key of its range. (Files written before this kept a
/// separate `heads` table with the same numbers; it is no longer read or
/// written, which saves one B-tree update per append.)
pub(super) fn last_id(
    messages: &impl ReadableTable<(&'static str, u64), Bytes>,
    conv: &str,
) -> Result<u64, DbError> {
    let last = messages.range((conv, 0)..=(conv, u64::MAX))?.next_back().transpose()?;
    Ok(last.map_or(0, |(k, _)| k.value().1))
}
