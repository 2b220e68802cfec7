//! Hub: this node's live connections and local fan-out.
//!
//! Indexes connections by user and, for rooms, which local users have
//! joined which room. It is the [`EventSink`] of the broker: an event's
//! frame is encoded **once** and the same shared bytes are queued to every
//! target connection (hot path: no per-recipient serialization, no lock held
//! across `.await` — queues are bounded and written with `try_send`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use axum::extract::ws::Utf8Bytes;
use im_protocol::{codec, CloseCode, RoomId, ServerFrame, UserId};
use tokio::sync::Notify;

use crate::broker::{Audience, ConnRef, Event, EventSink};
use crate::metrics::Metrics;
use crate::send_queue::{PushError, SendQueue};

/// `typing` frames a connection may have forwarded at once.
pub const TYPING_BURST: u64 = 4;
/// `typing` frames forwarded per second and connection after the burst.
pub const TYPING_PER_SEC: u64 = 2;

/// A live connection as the hub sees it: its identity, its send queue
/// (bounded in frames *and* bytes) and a close signal.
pub struct ConnHandle {
    /// Unique within this node.
    pub id: u64,
    /// The authenticated user.
    pub user: UserId,
    /// The session (token) it authenticated with.
    pub session: String,
    /// The device id.
    pub device: String,
    /// The protocol version the connection speaks (1 until set).
    protocol: AtomicU32,
    /// Typing rate limit: the theoretical arrival time (ms) of the next
    /// forwarded `typing` frame (GCRA).
    typing_tat: AtomicU64,
    node: Arc<str>,
    queue: SendQueue,
    close: OnceLock<CloseCode>,
    closed: Notify,
    metrics: Arc<Metrics>,
}

impl ConnHandle {
    /// A handle with an empty send queue (`limits`: most frames, most bytes).
    pub fn new(
        node: Arc<str>,
        id: u64,
        user: UserId,
        session: String,
        device: String,
        limits: (usize, usize),
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            user,
            session,
            device,
            protocol: AtomicU32::new(1),
            typing_tat: AtomicU64::new(0),
            node,
            queue: SendQueue::new(limits.0, limits.1),
            close: OnceLock::new(),
            closed: Notify::new(),
            metrics,
        })
    }

    /// The protocol version the connection speaks.
    pub fn protocol(&self) -> u32 {
        self.protocol.load(Ordering::Relaxed)
    }

    /// Sets the protocol version (at the handshake, before registering).
    pub fn set_protocol(&self, version: u32) {
        self.protocol.store(version, Ordering::Relaxed);
    }

    /// Whether a `typing` frame sent at `now_ms` may be forwarded: at most
    /// [`TYPING_BURST`] at once and [`TYPING_PER_SEC`] per second after that.
    /// (Called by the connection's worker only.)
    pub fn typing_allowed(&self, now_ms: u64) -> bool {
        let interval = 1000 / TYPING_PER_SEC;
        let tolerance = interval * (TYPING_BURST - 1);
        let tat = self.typing_tat.load(Ordering::Relaxed).max(now_ms);
        if tat - now_ms > tolerance {
            return false;
        }
        self.typing_tat.store(tat + interval, Ordering::Relaxed);
        true
    }

    /// Queues a frame that may be dropped (see [`SendQueue::push_optional`]).
    pub fn push_optional(&self, frame: &Utf8Bytes) -> bool {
        matches!(self.queue.push_optional(frame), Ok(true))
    }

    /// This connection as the cluster names it.
    pub fn conn_ref(&self) -> ConnRef {
        ConnRef { node: self.node.to_string(), conn: self.id }
    }

    /// Queues an encoded frame. A full queue means a slow reader: the
    /// connection is closed with 3001 (it will reconnect and sync, so nothing
    /// is lost). Returns whether the frame was queued.
    pub fn push(&self, frame: &Utf8Bytes) -> bool {
        match self.queue.push(frame) {
            Ok(()) => true,
            Err(PushError::Closed) => false,
            Err(PushError::Full) => {
                if self.close.get().is_none() {
                    self.metrics.queue_overflow();
                    tracing::info!(conn = self.id, user = %self.user, "send queue full: closing slow consumer");
                }
                self.close(CloseCode::SLOW_CONSUMER);
                false
            }
        }
    }

    /// The send queue, for the connection's writer.
    pub fn queue(&self) -> &SendQueue {
        &self.queue
    }

    /// Encodes and queues one frame.
    pub fn send(&self, frame: &ServerFrame) -> bool {
        self.push(&Utf8Bytes::from(codec::encode_server(frame)))
    }

    /// Asks the connection to close with `code`. The first code wins.
    pub fn close(&self, code: CloseCode) {
        if self.close.set(code).is_ok() {
            self.closed.notify_waiters();
            self.closed.notify_one();
        }
    }

    /// The close code requested, if any.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.close.get().copied()
    }

    /// Resolves once [`close`](Self::close) has been called.
    pub async fn closed(&self) {
        loop {
            let notified = self.closed.notified();
            if self.close.get().is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// Told when this node gains its first or loses its last local member of a room.
pub type RoomListener = Box<dyn Fn(RoomId, bool) + Send + Sync>;

#[derive(Default)]
struct Index {
    users: HashMap<UserId, Vec<Arc<ConnHandle>>>,
    /// Local users (with at least one connection here) who joined each room.
    rooms: HashMap<RoomId, HashSet<UserId>>,
    /// The rooms each local user has joined (to clean `rooms` up).
    user_rooms: HashMap<UserId, HashSet<RoomId>>,
}

/// Entry counts of the hub's indexes ([`Hub::index_sizes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubIndexSizes {
    /// Users with a connection here.
    pub users: usize,
    /// Connections registered here.
    pub connections: usize,
    /// Rooms with a local member.
    pub rooms: usize,
    /// Local (room, member) pairs.
    pub room_members: usize,
    /// Local users with a joined room.
    pub user_rooms: usize,
}

/// This node's connections and local fan-out.
pub struct Hub {
    node: Arc<str>,
    index: RwLock<Index>,
    room_listener: OnceLock<RoomListener>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// An empty hub for node `node`.
    pub fn new(node: impl Into<String>, metrics: Arc<Metrics>) -> Self {
        Self {
            node: Arc::from(node.into()),
            index: RwLock::default(),
            room_listener: OnceLock::new(),
            next_id: AtomicU64::new(1),
            metrics,
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A handle for a new connection of this node (not registered yet)
    /// with an empty send queue (`limits`: most frames, most bytes).
    pub fn new_conn(
        &self,
        user: UserId,
        session: String,
        device: String,
        limits: (usize, usize),
    ) -> Arc<ConnHandle> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        ConnHandle::new(self.node.clone(), id, user, session, device, limits, self.metrics.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the room listener (once; the broker's per-room subscriptions).
    pub fn set_room_listener(&self, listener: RoomListener) {
        let _ = self.room_listener.set(listener);
    }

    /// Must be called with the index write lock held (the listener does not block).
    fn room_interest(&self, room: RoomId, on: bool) {
        if let Some(listen) = self.room_listener.get() {
            listen(room, on);
        }
    }

    /// Adds a connection; `rooms` are the rooms its user has joined.
    pub fn register(&self, conn: Arc<ConnHandle>, rooms: &[RoomId]) {
        let mut idx = self.write();
        let user = conn.user;
        idx.users.entry(user).or_default().push(conn);
        self.join_locked(&mut idx, user, rooms);
    }

    /// Adds rooms to a registered user's local room index (rooms read after
    /// registering, so a join that raced the connection is not missed).
    pub fn add_rooms(&self, user: UserId, rooms: &[RoomId]) {
        let mut idx = self.write();
        if idx.users.contains_key(&user) {
            self.join_locked(&mut idx, user, rooms);
        }
    }

    /// Indexes `user` as a member of `rooms`, telling the room listener —
    /// under the lock, so first/last transitions reach it in order.
    fn join_locked(&self, idx: &mut Index, user: UserId, rooms: &[RoomId]) {
        for &room in rooms {
            let members = idx.rooms.entry(room).or_default();
            let first = members.is_empty();
            members.insert(user);
            idx.user_rooms.entry(user).or_default().insert(room);
            if first {
                self.room_interest(room, true);
            }
        }
    }

    /// Removes a connection (and its user from the room index when it was
    /// their last connection here).
    pub fn unregister(&self, conn: &ConnHandle) {
        let mut idx = self.write();
        let user = conn.user;
        let last = match idx.users.get_mut(&user) {
            Some(conns) => {
                conns.retain(|c| c.id != conn.id);
                conns.is_empty()
            }
            None => false,
        };
        if last {
            idx.users.remove(&user);
            for room in idx.user_rooms.remove(&user).unwrap_or_default() {
                if remove_room_member(&mut idx, room, user) {
                    self.room_interest(room, false);
                }
            }
        }
    }

    /// Live connections on this node.
    pub fn connection_count(&self) -> usize {
        self.read().users.values().map(Vec::len).sum()
    }

    /// How many entries each of the hub's indexes holds, for leak checks
    /// and diagnostics: all zero on a node with no connection.
    pub fn index_sizes(&self) -> HubIndexSizes {
        let idx = self.read();
        HubIndexSizes {
            users: idx.users.len(),
            connections: idx.users.values().map(Vec::len).sum(),
            rooms: idx.rooms.len(),
            room_members: idx.rooms.values().map(HashSet::len).sum(),
            user_rooms: idx.user_rooms.len(),
        }
    }

    /// Whether `user` has a connection on this node.
    pub fn is_local(&self, user: UserId) -> bool {
        self.read().users.contains_key(&user)
    }

    /// Asks every connection to close with `code` (shutdown, drain).
    pub fn close_all(&self, code: CloseCode) -> usize {
        let idx = self.read();
        let mut n = 0;
        for conn in idx.users.values().flatten() {
            conn.close(code);
            n += 1;
        }
        n
    }

    /// Asks the connections of `user` that authenticated with `session`
    /// to close with `code`.
    fn close_session(&self, user: UserId, session: &str, code: CloseCode) {
        let idx = self.read();
        for c in idx.users.get(&user).into_iter().flatten() {
            if c.session == session {
                c.close(code);
            }
        }
    }

    /// Every connection, for spreading a drain over time.
    pub fn connections(&self) -> Vec<Arc<ConnHandle>> {
        self.read().users.values().flatten().cloned().collect()
    }

    fn deliver(&self, to: &Audience, frame: &ServerFrame, skip: Option<u64>) {
        // Hot path: encode once, share the bytes.
        let bytes = Utf8Bytes::from(codec::encode_server(frame));
        // Frames of a later protocol version skip older connections; typing
        // is dropped rather than queued behind a backlog.
        let since = frame.since_version();
        let optional = matches!(frame, ServerFrame::UserTyping { .. });
        let idx = self.read();
        let mut delivered = 0u64;
        let mut push_user = |user: &UserId| {
            if let Some(conns) = idx.users.get(user) {
                for c in conns {
                    if Some(c.id) == skip || (since > 1 && c.protocol() < since) {
                        continue;
                    }
                    let queued = if optional { c.push_optional(&bytes) } else { c.push(&bytes) };
                    if queued {
                        delivered += 1;
                    }
                }
            }
        };
        match to {
            Audience::Users(users) => users.iter().for_each(&mut push_user),
            Audience::Room(room) => {
                if let Some(members) = idx.rooms.get(room) {
                    members.iter().for_each(&mut push_user);
                }
            }
        }
        self.metrics.deliveries(delivered);
    }
}

/// Removes `user` from `room`'s local members; `true` when that emptied it.
fn remove_room_member(idx: &mut Index, room: RoomId, user: UserId) -> bool {
    match idx.rooms.get_mut(&room) {
        Some(members) => {
            let removed = members.remove(&user);
            if members.is_empty() {
                idx.rooms.remove(&room);
                return removed;
            }
            false
        }
        None => false,
    }
}

impl EventSink for Hub {
    fn events_lost(&self) {
        let n = self.close_all(CloseCode::RECONNECT);
        tracing::warn!(connections = n, "broker lost events: connections told to reconnect and sync");
    }

    fn isolated(&self) {
        let n = self.close_all(CloseCode::NODE_ISOLATED);
        tracing::warn!(connections = n, "broker out of reach: connections told to move to another node");
    }

    fn handle(&self, event: Event) {
        match event {
            Event::Deliver { to, frame, skip } => {
                let skip = skip.filter(|s| *s.node == *self.node).map(|s| s.conn);
                self.deliver(&to, &frame, skip);
            }
            Event::RoomMembership { room, user, joined } => {
                let mut idx = self.write();
                if !idx.users.contains_key(&user) {
                    return;
                }
                if joined {
                    self.join_locked(&mut idx, user, &[room]);
                } else {
                    if remove_room_member(&mut idx, room, user) {
                        self.room_interest(room, false);
                    }
                    if let Some(r) = idx.user_rooms.get_mut(&user) {
                        r.remove(&room);
                        // A user who left their last room has no entry.
                        if r.is_empty() {
                            idx.user_rooms.remove(&user);
                        }
                    }
                }
            }
            Event::SessionRevoked { user, session } => {
                self.close_session(user, &session, CloseCode::SESSION_REVOKED)
            }
            Event::SessionDisconnected { user, session } => {
                self.close_session(user, &session, CloseCode::RECONNECT)
            }
            Event::UserDisconnected { user } => {
                let idx = self.read();
                for c in idx.users.get(&user).into_iter().flatten() {
                    c.close(CloseCode::RECONNECT);
                }
            }
        }
    }
}
