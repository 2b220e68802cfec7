//! [`SyncState`] against a model server, over any interleaving of live
//! frames, sync pages, failed syncs and reconnects.
//!
//! The harness feeds `SyncState` exactly the calls the driver makes; it
//! mirrors, call for call:
//!
//! * `driver/mod.rs`, `Driver::run`: `SyncState::new` with the stored cursors;
//! * `driver/connection.rs`, `Driver::run_connection`: `connected()` once
//!   the `hello` is in, `retry_sync()` on each tick;
//! * `driver/connection.rs`, `Driver::pump`: `next_sync(rid, limit)` with a
//!   fresh `rid` whenever the pump runs (it may not run for a while when
//!   the send budget is spent: `Op::Pump` comes when it comes);
//! * `driver/frames.rs`, `Driver::frame`: a `message` (and the message of an
//!   `ack`, same path) goes to `offer`; a `sync_page` is offered message by
//!   message only when `is_sync(rid)`, then `page_done(rid, has_more)`; a
//!   `member` frame adding this user calls `note_gap()`;
//! * `driver/frames.rs`, `Driver::refused`: an `error` for the sync in
//!   flight calls `sync_failed(rid)` (guarded by `is_sync(rid)`);
//! * `driver/frames.rs`, `Driver::offer`: `classify`, then on `Deliver` the
//!   app gets the message, `delivered(conv, id)` and `take_next(conv)` (in a
//!   loop), on `Gap` `hold(m)`, on `Duplicate` nothing;
//! * `driver/mod.rs`, `Driver::disconnected`: `disconnected()`.
//!
//! The server answers a sync the way `im-server`'s `logic/messages.rs`
//! (`Messages::sync`) does: the conversations in id order (groups and direct
//! chats always, rooms only when named), each from the request's cursor, at
//! most `limit` messages in all, `has_more` when it stopped short. Its view
//! of the log may lag behind the store (a page built before the newest
//! messages were stored), but never back past what was stored when the
//! client asked.
//!
//! Checked after every step: what reached the app is each conversation's
//! log from the device's stored cursor (a room without one: from the first
//! message it saw), once each, in order, without a hole, and the cursor is
//! the last of it; one sync at a time; a held message is delivered as soon
//! as the gap before it fills. Whenever `page_done` says "caught up", and
//! after any quiescence of a connection (`Op::Settle`, no reconnect to
//! mask a gap left open), every message the client saw, and everything
//! stored when a sync last became due, has reached the app. At the end
//! the whole log is stored, the client reconnects and syncs until it asks
//! for nothing more: every message of every log reached the app exactly
//! once and in order, and each cursor is its log's last id (except for a
//! room the device never saw, which by design it does not sync, and the
//! group the user may have left).

use std::collections::{BTreeMap, BTreeSet};

use im_protocol::{
    ClientFrame, ClientMsgId, ConversationId, ConversationKind, GroupId, Message, MessageId, RequestId,
    RoomId, UserId,
};
use proptest::prelude::*;

use crate::state::{SyncState, Verdict};

/// The conversations of every run, in `ConversationId` order (the order a
/// server walks them in): a direct chat, a group, a group the user joins
/// during the run, a room the store has a cursor for, a room it has not.
const CONVS: [ConversationId; 5] = [
    ConversationId::Direct(UserId(1), UserId(2)),
    ConversationId::Group(GroupId(1)),
    ConversationId::Group(GroupId(2)),
    ConversationId::Room(RoomId(7)),
    ConversationId::Room(RoomId(8)),
];
/// The index in [`CONVS`] of the group joined (and maybe left) during the run.
const LATE_GROUP: usize = 2;
/// The index in [`CONVS`] of the room with a stored cursor.
const NAMED_ROOM: usize = 3;
/// The index in [`CONVS`] of the room without one.
const UNNAMED_ROOM: usize = 4;
/// Most sync round trips a quiescence may take before it counts as a livelock.
const MAX_ROUNDS: usize = 1_000;

/// How one conversation starts, as generated.
#[derive(Debug, Clone)]
struct ConvSetup {
    /// Length of its whole log (ids `1..=len`).
    len: MessageId,
    /// Picks the cursor the store loaded.
    cursor_pick: u8,
    /// Picks how much of the log is stored when the run starts.
    stored_pick: u8,
    /// Whether the store has a cursor (for the direct chat and the group;
    /// fixed for the other three).
    has_cursor: bool,
}

/// One step of a run.
#[derive(Debug, Clone)]
enum Op {
    /// The server stores the next `n` messages of a conversation.
    Store(usize, u8),
    /// The oldest stored message not yet pushed live arrives live (or as
    /// the `ack` of this device's own send).
    LiveNext(usize),
    /// One of the newest stored messages arrives live (`back` from the
    /// newest): with several stored in a row, some arrive twice, out of
    /// order, or never.
    LiveRecent(usize, u8),
    /// Any stored message arrives live: again, late, or out of order
    /// (fan-out across nodes).
    LiveAny(usize, u8),
    /// The driver's pump runs and may ask for a sync with this `limit`.
    Pump(Option<u32>),
    /// The server answers the sync in flight with a page: at most `cap`
    /// messages (its `sync_page_max`), built `lag` messages behind the
    /// store, and maybe claiming more when there is none.
    Page { cap: usize, lag: u8, spurious_more: bool },
    /// An earlier page (of this connection or an older one) arrives again.
    DupPage(u8),
    /// The server answers the sync in flight with an `error`.
    FailSync,
    /// The driver's periodic tick.
    Tick,
    /// The connection is lost.
    Disconnect,
    /// The connection is lost and a new one is up at once.
    Reconnect,
    /// A new connection is up.
    Connect,
    /// The user is added to the late group (a `member` frame when online).
    Join,
    /// The user is removed from the late group: no more of its messages,
    /// live or by sync (the driver does nothing to `SyncState` then).
    Leave,
    /// Nothing more arrives live for a while: the connection quiesces and
    /// the client must have closed every gap it knows of.
    Settle,
}

/// One conversation of the world: the server's log and what the app got.
#[derive(Debug)]
struct Conv {
    id: ConversationId,
    /// Length of the whole log.
    len: MessageId,
    /// How much of it the server has stored.
    stored: MessageId,
    /// The cursor the store loaded.
    start: Option<MessageId>,
    /// What reached the app, in order.
    app: Vec<Message>,
    /// The next id [`Op::LiveNext`] pushes.
    live_next: MessageId,
    /// For a room without a cursor: the first of its messages the client was fed.
    first_fed: Option<MessageId>,
    /// The ids the client held back (classified `Gap`) on this connection.
    held: BTreeSet<MessageId>,
    /// A lower bound of the cursor after the current connection quiesces:
    /// the highest id the client has seen, and whatever the server had
    /// stored when the client last had reason to sync the conversation.
    owed: MessageId,
}

/// The sync the client has in flight, as the server received it.
#[derive(Debug)]
struct Request {
    rid: RequestId,
    cursors: BTreeMap<ConversationId, MessageId>,
    limit: Option<u32>,
    /// What was stored when it was sent: the server's view is at least this.
    floor: [MessageId; 5],
}

/// A `sync_page` frame.
#[derive(Debug, Clone)]
struct Page {
    rid: RequestId,
    messages: Vec<Message>,
    has_more: bool,
}

/// The client's `SyncState`, the driver's calls on it, and a model server.
struct World {
    convs: Vec<Conv>,
    sync: SyncState,
    connected: bool,
    next_rid: RequestId,
    pending: Option<Request>,
    pages: Vec<Page>,
    joined: bool,
    /// The user was removed from the late group (after joining it).
    left: bool,
    /// How many times `page_done` said "caught up" (the driver's `Event::Synced`).
    synced: usize,
}

/// The body of message `id` of `conv`, to tell messages apart.
fn body(conv: ConversationId, id: MessageId) -> String {
    format!("{conv} #{id}")
}

/// Message `id` of `conv`, as the server has it.
fn message(conv: ConversationId, id: MessageId) -> Message {
    let cmid = ClientMsgId::new(format!("c{id}")).expect("valid cmid");
    Message::new(conv, id, UserId(9), cmid, body(conv, id), id)
}

impl World {
    /// The world at the driver's start (`Driver::run`): the store's cursors, no connection yet.
    fn new(setup: &[ConvSetup; 5]) -> Self {
        let mut cursors = BTreeMap::new();
        let convs = CONVS
            .iter()
            .zip(setup)
            .enumerate()
            .map(|(i, (&id, s))| {
                let has_cursor = match i {
                    LATE_GROUP | UNNAMED_ROOM => false,
                    NAMED_ROOM => true,
                    _ => s.has_cursor,
                };
                let cursor = MessageId::from(s.cursor_pick) % (s.len + 1);
                let start = has_cursor.then_some(cursor);
                let floor = start.unwrap_or(0);
                let stored = floor + MessageId::from(s.stored_pick) % (s.len - floor + 1);
                if let Some(c) = start {
                    cursors.insert(id, c);
                }
                Conv {
                    id,
                    len: s.len,
                    stored,
                    start,
                    app: Vec::new(),
                    live_next: floor + 1,
                    first_fed: None,
                    held: BTreeSet::new(),
                    owed: 0,
                }
            })
            .collect();
        Self {
            convs,
            sync: SyncState::new(cursors),
            connected: false,
            next_rid: 0,
            pending: None,
            pages: Vec::new(),
            joined: false,
            left: false,
            synced: 0,
        }
    }

    /// The conversation `conv` of the world.
    fn conv_mut(&mut self, conv: ConversationId) -> &mut Conv {
        self.convs.iter_mut().find(|c| c.id == conv).expect("a conversation of the run")
    }

    /// Whether the server sends this user live messages of conversation `i`.
    fn member(&self, i: usize) -> bool {
        i != LATE_GROUP || (self.joined && !self.left)
    }

    /// `Driver::run_connection` after `hello`.
    fn connect(&mut self) {
        self.sync.connected();
        self.connected = true;
        for c in &mut self.convs {
            // `connected` forgets what was held: the sync brings it again.
            c.held.clear();
        }
        // A sync is due: it reaches every conversation it covers.
        for i in 0..self.convs.len() {
            let covered = match self.convs[i].id.kind() {
                ConversationKind::Room => self.sync.cursors().contains_key(&self.convs[i].id),
                _ => self.member(i),
            };
            if covered {
                let c = &mut self.convs[i];
                c.owed = c.owed.max(c.stored);
            }
        }
    }

    /// `Driver::disconnected`.
    fn disconnect(&mut self) {
        self.sync.disconnected();
        self.connected = false;
        self.pending = None;
    }

    /// `Driver::offer`, the app being `Conv::app`.
    fn offer(&mut self, m: Message) {
        let fed = self.conv_mut(m.conv);
        fed.owed = fed.owed.max(m.id);
        if fed.start.is_none() && fed.id.kind() == ConversationKind::Room && fed.first_fed.is_none() {
            fed.first_fed = Some(m.id);
        }
        let mut next = Some(m);
        while let Some(m) = next.take() {
            match self.sync.classify(m.conv, m.id) {
                Verdict::Deliver => {
                    let (conv, id) = (m.conv, m.id);
                    self.conv_mut(conv).app.push(m);
                    self.sync.delivered(conv, id);
                    next = self.sync.take_next(conv);
                }
                Verdict::Duplicate => {}
                Verdict::Gap => {
                    self.conv_mut(m.conv).held.insert(m.id);
                    self.sync.hold(m);
                }
            }
        }
    }

    /// The sync part of `Driver::pump`.
    fn pump(&mut self, limit: Option<u32>) -> Result<(), TestCaseError> {
        self.next_rid += 1;
        if let Some(frame) = self.sync.next_sync(self.next_rid, limit) {
            let ClientFrame::Sync { rid, cursors, limit } = frame else {
                return Err(TestCaseError::fail(format!("not a sync: {frame:?}")));
            };
            prop_assert!(self.pending.is_none(), "a second sync while one is in flight");
            prop_assert_eq!(rid, self.next_rid);
            prop_assert_eq!(&cursors, self.sync.cursors(), "the sync names the current cursors");
            let mut floor = [0; 5];
            for (f, c) in floor.iter_mut().zip(&self.convs) {
                *f = c.stored;
            }
            self.pending = Some(Request { rid, cursors, limit, floor });
        }
        Ok(())
    }

    /// The server's page for `req` (as `Messages::sync` builds it), from a
    /// view of the log `lag` messages behind the store.
    fn serve(&self, req: &Request, cap: usize, lag: u8, spurious_more: bool) -> Page {
        let page = req.limit.map_or(usize::MAX, |l| l as usize).min(cap).max(1);
        let mut messages = Vec::new();
        let mut has_more = false;
        for (i, c) in self.convs.iter().enumerate() {
            let covered = match c.id.kind() {
                ConversationKind::Room => req.cursors.contains_key(&c.id),
                _ => self.member(i),
            };
            let head = c.stored.saturating_sub(MessageId::from(lag)).max(req.floor[i]);
            let cursor = req.cursors.get(&c.id).copied().unwrap_or(0);
            if !covered || head <= cursor {
                continue;
            }
            let room = page - messages.len();
            if room == 0 {
                has_more = true;
                break;
            }
            let last = head.min(cursor.saturating_add(room as MessageId));
            messages.extend((cursor + 1..=last).map(|id| message(c.id, id)));
            if last < head {
                has_more = true;
                break;
            }
        }
        Page { rid: req.rid, messages, has_more: has_more || spurious_more }
    }

    /// The `sync_page` branch of `Driver::frame`. When the client says it
    /// is caught up, it is: every page of this connection's sync came from
    /// a view of the log at least as new as when the sync became due, and a
    /// message it saw and could not deliver yet would still be held.
    fn sync_page(&mut self, page: Page) -> Result<(), TestCaseError> {
        if self.sync.is_sync(page.rid) {
            for m in page.messages {
                self.offer(m);
            }
            if self.sync.page_done(page.rid, page.has_more) {
                self.synced += 1;
                self.check_owed("caught up")?;
            }
        }
        Ok(())
    }

    /// Every conversation's cursor has reached what the client owes the app
    /// (but that of a group the user left).
    fn check_owed(&self, when: &str) -> Result<(), TestCaseError> {
        for (i, c) in self.convs.iter().enumerate() {
            if i == LATE_GROUP && self.left {
                // Nothing more of it comes; what came is checked by `check`.
                continue;
            }
            let cursor = self.sync.cursor(c.id);
            prop_assert!(
                cursor >= c.owed,
                "{}: {} with cursor {} below {}; delivered {:?}",
                when,
                c.id,
                cursor,
                c.owed,
                ids(&c.app)
            );
        }
        Ok(())
    }

    /// Runs one step (a no-op where it cannot happen, e.g. a frame without a
    /// connection), then checks the invariants.
    fn apply(&mut self, op: &Op, caps: &[u32]) -> Result<(), TestCaseError> {
        match *op {
            Op::Store(i, n) => {
                let c = &mut self.convs[i];
                c.stored = (c.stored + MessageId::from(n)).min(c.len);
            }
            Op::LiveNext(i) if self.connected && self.member(i) => {
                let c = &mut self.convs[i];
                if c.live_next <= c.stored {
                    let m = message(c.id, c.live_next);
                    c.live_next += 1;
                    self.offer(m);
                }
            }
            Op::LiveRecent(i, back) if self.connected && self.member(i) => {
                let c = &self.convs[i];
                if c.stored > MessageId::from(back) {
                    self.offer(message(c.id, c.stored - MessageId::from(back)));
                }
            }
            Op::LiveAny(i, pick) if self.connected && self.member(i) => {
                let c = &self.convs[i];
                if c.stored > 0 {
                    self.offer(message(c.id, 1 + MessageId::from(pick) % c.stored));
                }
            }
            Op::Pump(limit) if self.connected => self.pump(limit)?,
            Op::Page { cap, lag, spurious_more } if self.connected => {
                if let Some(req) = self.pending.take() {
                    let page = self.serve(&req, cap, lag, spurious_more);
                    self.pages.push(page.clone());
                    self.sync_page(page)?;
                }
            }
            Op::DupPage(pick) if self.connected && !self.pages.is_empty() => {
                let page = self.pages[usize::from(pick) % self.pages.len()].clone();
                self.sync_page(page)?;
            }
            Op::FailSync if self.connected => {
                if let Some(req) = self.pending.take() {
                    // `Driver::refused`: an error for a rid that is no send.
                    if self.sync.is_sync(req.rid) {
                        self.sync.sync_failed(req.rid);
                    }
                }
            }
            Op::Tick if self.connected => self.sync.retry_sync(),
            Op::Disconnect if self.connected => self.disconnect(),
            Op::Connect if !self.connected => self.connect(),
            Op::Reconnect => {
                if self.connected {
                    self.disconnect();
                }
                self.connect();
            }
            Op::Settle if self.connected => self.settle(caps)?,
            Op::Leave if self.joined => self.left = true,
            Op::Join if !self.joined => {
                self.joined = true;
                if self.connected {
                    // `Driver::frame`, `member` added about this user.
                    self.sync.note_gap();
                    let c = &mut self.convs[LATE_GROUP];
                    c.owed = c.owed.max(c.stored);
                }
            }
            // Nothing arrives and nothing runs without a connection.
            _ => {}
        }
        self.check()
    }

    /// What reached the app so far is each conversation's log from where
    /// the device stood, once each, in order, with no hole; the cursor is
    /// the last of it; one sync at a time.
    fn check(&self) -> Result<(), TestCaseError> {
        for c in &self.convs {
            let base = match (c.start, c.first_fed) {
                (Some(s), _) => Some(s),
                (None, _) if c.id.kind() != ConversationKind::Room => Some(0),
                (None, Some(first)) => Some(first - 1),
                (None, None) => None,
            };
            let Some(base) = base else {
                prop_assert!(c.app.is_empty());
                prop_assert!(!self.sync.cursors().contains_key(&c.id), "a room never seen has no cursor");
                continue;
            };
            for (k, m) in c.app.iter().enumerate() {
                prop_assert_eq!(m.id, base + 1 + k as MessageId, "{}: delivered {:?}", c.id, ids(&c.app));
                prop_assert_eq!(&m.body, &body(c.id, m.id), "the right message");
            }
            let cursor = self.sync.cursor(c.id);
            prop_assert_eq!(
                cursor,
                base + c.app.len() as MessageId,
                "{}: the cursor is the last delivered",
                c.id
            );
            prop_assert!(cursor <= c.stored, "{}: cursor {} past the stored {}", c.id, cursor, c.stored);
            // A held message goes to the app as soon as the gap before it
            // fills, not after another round trip (`SyncState::hold`).
            prop_assert!(
                !c.held.contains(&(cursor + 1)),
                "{}: held message {} not delivered after {}",
                c.id,
                cursor + 1,
                cursor
            );
        }
        if self.connected {
            prop_assert_eq!(self.sync.sync_in_flight(), self.pending.is_some());
            if let Some(req) = &self.pending {
                prop_assert!(self.sync.is_sync(req.rid));
            }
        }
        Ok(())
    }

    /// Runs the connection until the client asks for nothing more: ticks,
    /// pumps, and fresh pages of `caps[k]` messages, no live frames.
    fn quiesce(&mut self, caps: &[u32]) -> Result<(), TestCaseError> {
        for round in 0..MAX_ROUNDS {
            self.sync.retry_sync();
            self.pump(Some(caps[round % caps.len()]))?;
            let Some(req) = self.pending.take() else {
                return Ok(());
            };
            let page = self.serve(&req, usize::MAX, 0, false);
            self.sync_page(page)?;
            self.check()?;
        }
        Err(TestCaseError::fail(format!("still syncing after {MAX_ROUNDS} rounds")))
    }

    /// Quiesces the connection that is up (no reconnect to mask a gap left
    /// open): everything the client has seen, and everything stored when
    /// a sync last became due, has reached the app.
    fn settle(&mut self, caps: &[u32]) -> Result<(), TestCaseError> {
        self.quiesce(caps)?;
        self.check_owed("quiescent")
    }
}

/// The ids of `ms`.
fn ids(ms: &[Message]) -> Vec<MessageId> {
    ms.iter().map(|m| m.id).collect()
}

/// A conversation of up to 10 messages (at most 50 in a run, so
/// `SyncState`'s bound of held messages is never reached).
fn conv_setup() -> impl Strategy<Value = ConvSetup> {
    (0..=10u64, any::<u8>(), any::<u8>(), any::<bool>()).prop_map(
        |(len, cursor_pick, stored_pick, has_cursor)| ConvSetup { len, cursor_pick, stored_pick, has_cursor },
    )
}

/// One step, weighted towards the frequent events.
fn op() -> impl Strategy<Value = Op> {
    // Most steps go to one conversation, so that they meet.
    let conv = prop_oneof![2 => Just(1), 1 => 0..CONVS.len()];
    prop_oneof![
        4 => (conv.clone(), 1..=4u8).prop_map(|(i, n)| Op::Store(i, n)),
        3 => conv.clone().prop_map(Op::LiveNext),
        4 => (conv.clone(), 0..=2u8).prop_map(|(i, back)| Op::LiveRecent(i, back)),
        1 => (conv, any::<u8>()).prop_map(|(i, pick)| Op::LiveAny(i, pick)),
        5 => prop::option::of(1..=4u32).prop_map(Op::Pump),
        5 => (prop_oneof![1..=4usize, Just(usize::MAX)], 0..=5u8, prop::bool::weighted(0.1))
            .prop_map(|(cap, lag, spurious_more)| Op::Page { cap, lag, spurious_more }),
        1 => any::<u8>().prop_map(Op::DupPage),
        1 => Just(Op::FailSync),
        1 => Just(Op::Tick),
        1 => Just(Op::Disconnect),
        3 => Just(Op::Connect),
        1 => Just(Op::Reconnect),
        1 => Just(Op::Join),
        1 => Just(Op::Leave),
        1 => Just(Op::Settle),
    ]
}

proptest! {
    /// Whatever the server and the network do, after quiescence every
    /// message of every log reached the app exactly once, in id order,
    /// and each cursor is its log's last id.
    #[test]
    fn every_message_reaches_the_app_once_in_order(
        setup in prop::array::uniform5(conv_setup()),
        ops in prop::collection::vec(op(), 0..100),
        caps in prop::collection::vec(1..=4u32, 1..4),
    ) {
        let mut w = World::new(&setup);
        w.connect();
        w.check()?;
        for op in &ops {
            w.apply(op, &caps)?;
        }
        w.apply(&Op::Settle, &caps)?;

        // Then the whole log is stored and a final reconnect syncs it all.
        for c in &mut w.convs {
            c.stored = c.len;
        }
        w.joined = true;
        if w.connected {
            w.disconnect();
        }
        w.connect();
        let synced = w.synced;
        w.quiesce(&caps)?;
        prop_assert!(w.synced > synced, "the final sync ended caught up");
        for (i, c) in w.convs.iter().enumerate() {
            if i == LATE_GROUP && w.left {
                continue;
            }
            let base = match (c.start, c.first_fed) {
                (Some(s), _) => s,
                (None, _) if c.id.kind() != ConversationKind::Room => 0,
                (None, Some(first)) => first - 1,
                // A room the device never saw live is never synced (by design).
                (None, None) => {
                    prop_assert!(c.app.is_empty());
                    continue;
                }
            };
            prop_assert_eq!(ids(&c.app), (base + 1..=c.len).collect::<Vec<_>>(), "{}", c.id);
            prop_assert_eq!(w.sync.cursor(c.id), c.len);
        }
    }
}
