//! [`Outbox`] and [`CmidGen`] against a model queue and an idempotent
//! server, over any interleaving of sends, acks, refusals and reconnects.
//!
//! The harness makes the driver's calls, call for call; it mirrors:
//!
//! * `driver/mod.rs`, `Driver::command` (`Command::Send`): `cmids.next()`,
//!   then `outbox.push(conv, cmid, draft, reply)`, a full outbox giving the
//!   reply back (`SendError::QueueFull`);
//! * `driver/connection.rs`, `Driver::pump`: `frames_to_send(budget, next
//!   rid)` with `budget = send_budget(paced, max_in_flight, unanswered)`,
//!   the outbox's share of `unanswered` being `outbox.unanswered()`;
//! * `driver/frames.rs`, `Driver::frame` (`ack`): `outbox.take(rid)`, and
//!   the app is told `Ok` only when it returns the send;
//! * `driver/frames.rs`, `Driver::refused`: when `is_send(rid)`,
//!   `requeue(rid)` for `rate_limited`, `internal` and `unavailable`, else
//!   `take(rid)` and the app is told `Rejected`;
//! * `driver/connection.rs`, `Driver::run_connection`: `release()` on each tick;
//! * `driver/mod.rs`, `Driver::disconnected`: `disconnected()`;
//! * `driver/mod.rs`, `Driver::run` (stopping): `drain()`, each told `Stopped`.
//!
//! The server stores a `send` once per `cmid` and answers a resend of a
//! stored one with its id (`duplicate`). A connection that drops may have
//! had some of its received sends stored, their acks lost.

use std::collections::{BTreeMap, HashMap, HashSet};

use im_protocol::{
    ClientFrame, ClientMsgId, ConversationId, ErrorCode, GroupId, MessageId, RequestId, UserId,
};
use proptest::prelude::*;

use crate::draft::Draft;
use crate::outbox::{CmidGen, Outbox};

/// The conversations sends go to.
const CONVS: [ConversationId; 3] = [
    ConversationId::Group(GroupId(1)),
    ConversationId::Group(GroupId(2)),
    ConversationId::Direct(UserId(1), UserId(2)),
];
/// The server's `max_in_flight`.
const WINDOW: usize = 4;
/// Most round trips the final flush may take.
const MAX_ROUNDS: usize = 100;

/// How the server handles a `send` it received.
#[derive(Debug, Clone, Copy)]
enum Handling {
    /// Stores it (or finds it stored) and acks.
    Store,
    /// `rate_limited`: not processed.
    RateLimited,
    /// `internal`: maybe stored, maybe not.
    Internal { stored: bool },
    /// `unavailable`: not processed.
    Unavailable,
    /// Refuses it for good (`not_member`), unless it is stored already
    /// (the `cmid` is looked up first, and the resend acked).
    Refuse,
}

/// One step of a run.
#[derive(Debug, Clone)]
enum Op {
    /// The app sends a message to a conversation.
    Push(usize),
    /// The driver's pump runs with what the rate pacer allows now.
    Pump(u8),
    /// The server handles one of the sends it received on this connection.
    Handle(u8, Handling),
    /// One of the server's pending answers reaches the client.
    Answer(u8),
    /// An answer that already arrived arrives again.
    Replay(u8),
    /// An `ack` for a `rid` that is no send of ours.
    Stray(u8),
    /// The driver's periodic tick.
    Tick,
    /// The connection is lost; the server still stored the received sends
    /// whose bit is set (their acks are lost with the connection).
    Disconnect(u8),
    /// A new connection is up.
    Connect,
}

/// An answer from the server to a `send`.
#[derive(Debug, Clone)]
enum Answer {
    Ack { rid: RequestId, id: MessageId },
    Error { rid: RequestId, code: ErrorCode },
}

/// What the app was told about one of its sends.
#[derive(Debug, Clone, PartialEq)]
enum Told {
    Acked(MessageId),
    Rejected(ErrorCode),
    QueueFull,
    Stopped,
}

/// A message the app sent, and what happened to it.
#[derive(Debug)]
struct Msg {
    conv: ConversationId,
    cmid: ClientMsgId,
    body: String,
    /// The `rid`s it was sent with, in order.
    sent: Vec<RequestId>,
    told: Vec<Told>,
}

/// The model of one outbox entry.
#[derive(Debug)]
struct Entry {
    msg: usize,
    rid: Option<RequestId>,
    held: bool,
}

/// A `send` the server received on the current connection.
#[derive(Debug)]
struct Received {
    rid: RequestId,
    msg: usize,
}

/// The real outbox, the model, and the server.
struct World {
    outbox: Outbox<usize>,
    cmids: CmidGen,
    cap: usize,
    next_rid: RequestId,
    connected: bool,
    msgs: Vec<Msg>,
    /// The model of the outbox: unanswered sends in push order.
    queue: Vec<Entry>,
    /// Per conversation, the messages in the order of their first transmission.
    first_sent: BTreeMap<ConversationId, Vec<usize>>,
    received: Vec<Received>,
    answers: Vec<Answer>,
    delivered: Vec<Answer>,
    /// The server's store: the id of each stored `cmid`.
    stored: HashMap<ClientMsgId, MessageId>,
    next_id: BTreeMap<ConversationId, MessageId>,
}

impl World {
    /// An empty outbox of `cap` (as `Outbox::new` takes it), connected.
    fn new(cap: usize) -> Self {
        Self {
            outbox: Outbox::new(cap),
            cmids: CmidGen::new(),
            cap: cap.max(1),
            next_rid: 0,
            connected: true,
            msgs: Vec::new(),
            queue: Vec::new(),
            first_sent: BTreeMap::new(),
            received: Vec::new(),
            answers: Vec::new(),
            delivered: Vec::new(),
            stored: HashMap::new(),
            next_id: BTreeMap::new(),
        }
    }

    /// `Command::Send` in `Driver::command`.
    fn push(&mut self, conv: ConversationId) -> Result<(), TestCaseError> {
        let msg = self.msgs.len();
        let cmid = self.cmids.next();
        prop_assert!(self.msgs.iter().all(|m| m.cmid != cmid), "cmid {} given twice", cmid.as_str());
        let body = format!("m{msg}");
        let fits = self.queue.len() < self.cap;
        let mut told = Vec::new();
        match self.outbox.push(conv, cmid.clone(), Draft::text(body.clone()), msg) {
            Ok(()) => {
                prop_assert!(fits, "accepted beyond the cap {}", self.cap);
                self.queue.push(Entry { msg, rid: None, held: false });
            }
            Err(reply) => {
                prop_assert!(!fits, "refused below the cap {}", self.cap);
                prop_assert_eq!(reply, msg, "the reply given back is this send's");
                told.push(Told::QueueFull);
            }
        }
        self.msgs.push(Msg { conv, cmid, body, sent: Vec::new(), told });
        Ok(())
    }

    /// The outbox part of `Driver::pump`.
    fn pump(&mut self, paced: usize) -> Result<(), TestCaseError> {
        let budget = paced.min(WINDOW.saturating_sub(self.outbox.unanswered()));
        let expected: Vec<usize> = (0..self.queue.len())
            .filter(|&k| self.queue[k].rid.is_none() && !self.queue[k].held)
            .take(budget)
            .collect();
        let mut rid = self.next_rid;
        let frames = self.outbox.frames_to_send(budget, || {
            rid += 1;
            rid
        });
        self.next_rid = rid;
        prop_assert_eq!(frames.len(), expected.len(), "the first unsent, not held, within the budget");
        for (frame, k) in frames.into_iter().zip(expected) {
            let ClientFrame::Send { rid, conv, cmid, body, .. } = frame else {
                return Err(TestCaseError::fail(format!("not a send: {frame:?}")));
            };
            let entry = &mut self.queue[k];
            let m = &mut self.msgs[entry.msg];
            prop_assert_eq!(conv, m.conv);
            prop_assert_eq!(&body, &m.body, "the draft of the message at its place");
            prop_assert_eq!(&cmid, &m.cmid, "every transmission of a message carries its cmid");
            if m.sent.is_empty() {
                let order = self.first_sent.entry(conv).or_default();
                prop_assert!(
                    order.last().is_none_or(|&last| last < entry.msg),
                    "{}: message {} first sent after {:?}",
                    conv,
                    entry.msg,
                    order
                );
                order.push(entry.msg);
            }
            m.sent.push(rid);
            entry.rid = Some(rid);
            self.received.push(Received { rid, msg: entry.msg });
        }
        Ok(())
    }

    /// The server stores the message with `cmid` (once): its id.
    fn store(&mut self, msg: usize) -> MessageId {
        let m = &self.msgs[msg];
        if let Some(&id) = self.stored.get(&m.cmid) {
            return id;
        }
        let id = self.next_id.entry(m.conv).or_default();
        *id += 1;
        self.stored.insert(m.cmid.clone(), *id);
        *id
    }

    /// The server handles a received send and queues its answer.
    fn handle(&mut self, r: Received, how: Handling) {
        let answer = match how {
            Handling::Store => Answer::Ack { rid: r.rid, id: self.store(r.msg) },
            Handling::RateLimited => Answer::Error { rid: r.rid, code: ErrorCode::RateLimited },
            Handling::Unavailable => Answer::Error { rid: r.rid, code: ErrorCode::Unavailable },
            Handling::Internal { stored } => {
                if stored {
                    self.store(r.msg);
                }
                Answer::Error { rid: r.rid, code: ErrorCode::Internal }
            }
            Handling::Refuse => match self.stored.get(&self.msgs[r.msg].cmid) {
                Some(&id) => Answer::Ack { rid: r.rid, id },
                None => Answer::Error { rid: r.rid, code: ErrorCode::NotMember },
            },
        };
        self.answers.push(answer);
    }

    /// An answer reaches the driver: the `ack` branch of `Driver::frame`,
    /// or the outbox branch of `Driver::refused`.
    fn answer(&mut self, answer: &Answer) -> Result<(), TestCaseError> {
        let (rid, retry) = match *answer {
            Answer::Ack { rid, .. } => (rid, false),
            Answer::Error { rid, code } => {
                (rid, matches!(code, ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::Unavailable))
            }
        };
        let pos = self.queue.iter().position(|e| e.rid == Some(rid));
        prop_assert_eq!(self.outbox.is_send(rid), pos.is_some(), "is_send({})", rid);
        if let Answer::Error { .. } = answer {
            if !self.outbox.is_send(rid) {
                return Ok(());
            }
        }
        if retry {
            self.outbox.requeue(rid);
            let e = &mut self.queue[pos.expect("checked")];
            e.rid = None;
            e.held = true;
            return Ok(());
        }
        match (self.outbox.take(rid), pos) {
            (Some(sent), Some(pos)) => {
                let e = self.queue.remove(pos);
                prop_assert_eq!(sent.reply, e.msg, "take({}) returns the send of that rid", rid);
                let m = &mut self.msgs[e.msg];
                prop_assert_eq!(&sent.cmid, &m.cmid);
                m.told.push(match *answer {
                    Answer::Ack { id, .. } => Told::Acked(id),
                    Answer::Error { code, .. } => Told::Rejected(code),
                });
            }
            (None, None) => {}
            (got, want) => {
                let got = got.map(|s| s.reply);
                return Err(TestCaseError::fail(format!("take({rid}) gave {got:?}, the model {want:?}")));
            }
        }
        Ok(())
    }

    /// Runs one step (a no-op where it cannot happen), then checks the invariants.
    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Push(i) => self.push(CONVS[i])?,
            Op::Pump(paced) if self.connected => self.pump(usize::from(paced))?,
            Op::Handle(pick, how) if !self.received.is_empty() => {
                let r = self.received.remove(usize::from(pick) % self.received.len());
                self.handle(r, how);
            }
            Op::Answer(pick) if !self.answers.is_empty() => {
                let a = self.answers.remove(usize::from(pick) % self.answers.len());
                self.answer(&a)?;
                self.delivered.push(a);
            }
            Op::Replay(pick) if self.connected && !self.delivered.is_empty() => {
                let a = self.delivered[usize::from(pick) % self.delivered.len()].clone();
                self.answer(&a)?;
            }
            Op::Stray(k) if self.connected => {
                let rid = self.next_rid + 1 + RequestId::from(k);
                self.answer(&Answer::Ack { rid, id: 1 })?;
            }
            Op::Tick if self.connected => {
                self.outbox.release();
                for e in &mut self.queue {
                    e.held = false;
                }
            }
            Op::Disconnect(mask) if self.connected => {
                for (k, r) in std::mem::take(&mut self.received).into_iter().enumerate() {
                    if mask & (1 << (k % 8)) != 0 {
                        self.store(r.msg);
                    }
                }
                self.answers.clear();
                self.outbox.disconnected();
                for e in &mut self.queue {
                    e.rid = None;
                }
                self.connected = false;
            }
            Op::Connect => self.connected = true,
            _ => {}
        }
        self.check()
    }

    /// The outbox agrees with the model, and nobody was told twice.
    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.outbox.len(), self.queue.len());
        prop_assert!(self.outbox.len() <= self.cap);
        let unanswered = self.queue.iter().filter(|e| e.rid.is_some()).count();
        prop_assert_eq!(self.outbox.unanswered(), unanswered);
        for rid in self.queue.iter().filter_map(|e| e.rid) {
            prop_assert!(self.outbox.is_send(rid));
        }
        for (k, m) in self.msgs.iter().enumerate() {
            prop_assert!(m.told.len() <= 1, "message {} told {:?}", k, m.told);
        }
        Ok(())
    }

    /// Reconnects and lets the server store and ack everything, a window
    /// at a time, until the outbox is empty.
    fn flush(&mut self) -> Result<(), TestCaseError> {
        if !self.connected {
            self.apply(&Op::Connect)?;
        }
        for _ in 0..MAX_ROUNDS {
            if self.queue.is_empty() {
                return Ok(());
            }
            self.apply(&Op::Tick)?;
            self.pump(usize::MAX)?;
            for r in std::mem::take(&mut self.received) {
                self.handle(r, Handling::Store);
            }
            for a in std::mem::take(&mut self.answers) {
                self.answer(&a)?;
            }
            self.check()?;
        }
        Err(TestCaseError::fail(format!("{} sends still queued after {MAX_ROUNDS} rounds", self.queue.len())))
    }
}

/// How the server handles a send, mostly by storing it.
fn handling() -> impl Strategy<Value = Handling> {
    prop_oneof![
        6 => Just(Handling::Store),
        1 => Just(Handling::RateLimited),
        1 => any::<bool>().prop_map(|stored| Handling::Internal { stored }),
        1 => Just(Handling::Unavailable),
        1 => Just(Handling::Refuse),
    ]
}

/// One step, weighted towards the frequent events.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..CONVS.len()).prop_map(Op::Push),
        4 => (0..=5u8).prop_map(Op::Pump),
        4 => (any::<u8>(), handling()).prop_map(|(pick, how)| Op::Handle(pick, how)),
        4 => any::<u8>().prop_map(Op::Answer),
        1 => any::<u8>().prop_map(Op::Replay),
        1 => any::<u8>().prop_map(Op::Stray),
        2 => Just(Op::Tick),
        1 => any::<u8>().prop_map(Op::Disconnect),
        3 => Just(Op::Connect),
    ]
}

proptest! {
    /// Whatever the server and the network do, every send the outbox took
    /// ends exactly once for the app: acked with the id the server stored
    /// it under (once, whatever the resends), or refused for good when it
    /// was never stored; or, when the client stops, handed back in order.
    /// All along the outbox agrees with the model and stays within its cap.
    #[test]
    fn every_send_ends_once_with_one_cmid(
        cap in 0..=6usize,
        ops in prop::collection::vec(op(), 0..100),
        stop in prop::bool::weighted(0.2),
    ) {
        let mut w = World::new(cap);
        for op in &ops {
            w.apply(op)?;
        }
        if stop {
            let drained: Vec<usize> = w.outbox.drain().into_iter().map(|e| e.reply).collect();
            let queued: Vec<usize> = w.queue.drain(..).map(|e| e.msg).collect();
            prop_assert_eq!(&drained, &queued, "drained in push order");
            for k in drained {
                w.msgs[k].told.push(Told::Stopped);
            }
            prop_assert_eq!(w.outbox.unanswered(), 0);
        } else {
            w.flush()?;
            prop_assert!(w.outbox.drain().is_empty());
        }
        prop_assert_eq!(w.outbox.len(), 0);

        let mut stored_ids = HashSet::new();
        for (k, m) in w.msgs.iter().enumerate() {
            prop_assert_eq!(m.told.len(), 1, "message {} told {:?}", k, &m.told);
            match &m.told[0] {
                Told::Acked(id) => {
                    prop_assert_eq!(w.stored.get(&m.cmid), Some(id), "message {} acked with its stored id", k);
                }
                Told::Rejected(_) => prop_assert!(!w.stored.contains_key(&m.cmid), "message {} stored yet refused", k),
                Told::QueueFull => prop_assert!(m.sent.is_empty()),
                Told::Stopped => prop_assert!(stop),
            }
            if let Some(&id) = w.stored.get(&m.cmid) {
                prop_assert!(stored_ids.insert((m.conv, id)), "two messages stored as {} #{}", m.conv, id);
            }
        }
    }

    /// Client message ids are valid, never repeat within a client, and
    /// differ between clients.
    #[test]
    fn cmids_are_valid_and_unique(n in 1..300usize) {
        let (mut a, mut b) = (CmidGen::new(), CmidGen::new());
        let mut seen = HashSet::new();
        for _ in 0..n {
            for cmid in [a.next(), b.next()] {
                prop_assert!(ClientMsgId::new(cmid.as_str()).is_ok());
                prop_assert!(seen.insert(cmid.clone()), "{} twice", cmid.as_str());
            }
        }
    }
}
