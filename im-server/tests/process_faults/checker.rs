//! The checker of the process-fault tests: it records every send with its
//! outcome (the ack's id, or why it failed) and every event of every client
//! device (messages delivered, connects, disconnects, syncs), all with the
//! time they happened, and at the end compares them with the conversations'
//! stored history.
//!
//! The verdict counts, per invariant:
//!
//! * **acked lost**: an acknowledged `(conv, id)` that the history does not
//!   hold with the body and sender of the send that got that ack;
//! * **duplicate acks**: one `(conv, id)` acknowledged to two sends;
//! * **stored twice**: a conversation's history holding one send (its
//!   `(from, cmid)`, or its unique body) more than once;
//! * **history gaps**: ids missing from `1..=n` in a conversation's history;
//! * per device and conversation it belongs to: **deliveries missing** (a
//!   stored id the device never got), **duplicated** (an id delivered twice),
//!   **misordered** (an id delivered after a larger one), **wrong** (an id the
//!   history does not have, another body than the stored one, or a
//!   conversation the device's user is not in).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use im_client::{Event, SendReceipt};

use im_protocol::{ConversationId, Message, MessageId, UserId};

/// The checker shared by the tasks that feed it.
pub type Shared = Arc<Mutex<Checker>>;

/// Most problem descriptions kept (the counts go on).
const PROBLEMS_KEPT: usize = 40;

/// What one client device saw.
#[derive(Debug)]
pub struct DeviceLog {
    /// The device id (also the client's name in reports).
    pub name: String,
    /// Its user.
    pub user: UserId,
    /// Messages handed to the app, per conversation, in arrival order: (id, from, body).
    pub delivered: BTreeMap<ConversationId, Vec<(MessageId, UserId, String)>>,
    /// `Event::Connected`: when, and the node.
    pub connects: Vec<(Instant, String)>,
    /// `Event::Disconnected`: when, and the close code.
    pub disconnects: Vec<(Instant, Option<u16>)>,
    /// `Event::Synced`.
    pub synced: Vec<Instant>,
    /// `Event::Reconnecting`: when, and why the last attempt failed.
    pub retries: Vec<(Instant, String)>,
    /// `Event::Stopped`, if it came.
    pub stopped: Option<String>,
}

impl DeviceLog {
    /// The node of the current connection: the last connect when no
    /// disconnect came after it.
    pub fn connected_to(&self) -> Option<&str> {
        let (at, node) = self.connects.last()?;
        match self.disconnects.last() {
            Some((gone, _)) if gone >= at => None,
            _ => Some(node),
        }
    }

    /// The first connect after `t`.
    pub fn connect_after(&self, t: Instant) -> Option<&(Instant, String)> {
        self.connects.iter().find(|(at, _)| *at > t)
    }

    /// The largest id delivered in `conv` (0: none).
    pub fn head(&self, conv: ConversationId) -> MessageId {
        self.delivered.get(&conv).and_then(|v| v.iter().map(|(id, _, _)| *id).max()).unwrap_or(0)
    }
}

/// One send the test made, and how it ended.
#[derive(Debug)]
pub struct SendLog {
    /// The device that sent it.
    pub device: usize,
    /// Where.
    pub conv: ConversationId,
    /// Its body: unique per send.
    pub body: String,
    /// When `send_detailed` was called.
    pub issued: Instant,
    /// When and how it resolved (`None`: not yet).
    pub outcome: Option<(Instant, Result<Ack, String>)>,
}

/// What an ack said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The id the message is stored under.
    pub id: MessageId,
    /// The server had it already (a resend deduplicated).
    pub duplicate: bool,
}

impl From<SendReceipt> for Ack {
    fn from(r: SendReceipt) -> Self {
        Ack { id: r.id, duplicate: r.duplicate }
    }
}

/// Everything recorded so far.
#[derive(Debug, Default)]
pub struct Checker {
    /// Per device, by index.
    pub devices: Vec<DeviceLog>,
    /// Per send, by index.
    pub sends: Vec<SendLog>,
}

/// The outcome of [`Checker::verify`]: counts, and the first problems described.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Messages in the histories.
    pub stored: usize,
    /// Sends acknowledged.
    pub acked: usize,
    /// Acknowledged sends the server had stored already (`duplicate: true`):
    /// resends after a lost ack.
    pub deduplicated_resends: usize,
    /// Sends that failed (`SendError`).
    pub failed: usize,
    /// Sends not resolved when the test stopped waiting.
    pub unresolved: usize,
    /// Stored messages of sends that were never acknowledged to the test.
    pub stored_unacked: usize,
    /// See the module docs.
    pub acked_lost: usize,
    /// See the module docs.
    pub duplicate_acks: usize,
    /// See the module docs.
    pub stored_twice: usize,
    /// See the module docs.
    pub history_gaps: usize,
    /// Messages handed to apps, all devices together.
    pub deliveries: usize,
    /// See the module docs.
    pub deliveries_missing: usize,
    /// See the module docs.
    pub deliveries_duplicated: usize,
    /// See the module docs.
    pub deliveries_misordered: usize,
    /// See the module docs.
    pub deliveries_wrong: usize,
    /// Descriptions of the first problems.
    pub problems: Vec<String>,
}

impl Verdict {
    fn problem(&mut self, what: String) {
        if self.problems.len() < PROBLEMS_KEPT {
            self.problems.push(what);
        }
    }

    /// Every invariant held.
    pub fn clean(&self) -> bool {
        self.acked_lost == 0
            && self.duplicate_acks == 0
            && self.stored_twice == 0
            && self.history_gaps == 0
            && self.deliveries_missing == 0
            && self.deliveries_duplicated == 0
            && self.deliveries_misordered == 0
            && self.deliveries_wrong == 0
            && self.failed == 0
            && self.unresolved == 0
    }

    /// A multi-line report of the counts and the problems found.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "stored {} | acked {} (deduplicated resends {}, stored but never acked {}) | failed {} | \
             unresolved {}",
            self.stored,
            self.acked,
            self.deduplicated_resends,
            self.stored_unacked,
            self.failed,
            self.unresolved
        );
        let _ = writeln!(
            s,
            "acked lost {} | duplicate acks {} | stored twice {} | history gaps {}",
            self.acked_lost, self.duplicate_acks, self.stored_twice, self.history_gaps
        );
        let _ = write!(
            s,
            "deliveries {} | missing {} | duplicated {} | misordered {} | wrong {}",
            self.deliveries,
            self.deliveries_missing,
            self.deliveries_duplicated,
            self.deliveries_misordered,
            self.deliveries_wrong
        );
        for p in &self.problems {
            let _ = write!(s, "\n  - {p}");
        }
        s
    }
}

impl Checker {
    /// A new checker, to share between the tasks.
    pub fn shared() -> Shared {
        Arc::new(Mutex::new(Checker::default()))
    }

    /// Registers a device; returns its index.
    pub fn add_device(&mut self, name: &str, user: UserId) -> usize {
        self.devices.push(DeviceLog {
            name: name.into(),
            user,
            delivered: BTreeMap::new(),
            connects: Vec::new(),
            disconnects: Vec::new(),
            synced: Vec::new(),
            retries: Vec::new(),
            stopped: None,
        });
        self.devices.len() - 1
    }

    /// Records one client event of device `dev`.
    pub fn on_event(&mut self, dev: usize, event: Event, at: Instant) {
        let d = &mut self.devices[dev];
        match event {
            Event::Message(m) => d.delivered.entry(m.conv).or_default().push((m.id, m.from, m.body)),
            Event::Connected { node, .. } => d.connects.push((at, node)),
            Event::Disconnected { code, .. } => d.disconnects.push((at, code.map(|c| c.0))),
            Event::Synced => d.synced.push(at),
            Event::Reconnecting { reason, .. } => d.retries.push((at, reason)),
            Event::Stopped { reason } => d.stopped = Some(reason.to_string()),
            _ => {}
        }
    }

    /// Records a send being made; returns its index.
    pub fn send_issued(&mut self, device: usize, conv: ConversationId, body: String, at: Instant) -> usize {
        self.sends.push(SendLog { device, conv, body, issued: at, outcome: None });
        self.sends.len() - 1
    }

    /// Records how send `idx` resolved.
    pub fn send_done(&mut self, idx: usize, outcome: Result<Ack, String>, at: Instant) {
        self.sends[idx].outcome = Some((at, outcome));
    }

    /// Sends acknowledged after `t`.
    pub fn acks_after(&self, t: Instant) -> usize {
        self.sends.iter().filter(|s| matches!(&s.outcome, Some((at, Ok(_))) if *at > t)).count()
    }

    /// Sends made at or before `t` and not resolved by then.
    pub fn outstanding_at(&self, t: Instant) -> usize {
        self.sends
            .iter()
            .filter(|s| s.issued <= t && s.outcome.as_ref().is_none_or(|(at, _)| *at > t))
            .count()
    }

    /// A short account of the state, for failure messages.
    pub fn summary(&self) -> String {
        let acked = self.sends.iter().filter(|s| matches!(&s.outcome, Some((_, Ok(_))))).count();
        let pending = self.sends.iter().filter(|s| s.outcome.is_none()).count();
        let mut out = format!("{} sends: {acked} acked, {pending} pending", self.sends.len());
        for d in &self.devices {
            let got: usize = d.delivered.values().map(Vec::len).sum();
            let _ = write!(
                out,
                "\n  {}: on {:?}, {got} delivered, {} connects, {} failed attempts (last {:?}), stopped {:?}",
                d.name,
                d.connected_to(),
                d.connects.len(),
                d.retries.len(),
                d.retries.last().map(|(_, why)| why),
                d.stopped
            );
        }
        out
    }

    /// Whether every device of a member of each conversation has been
    /// handed messages up to the conversation's head.
    pub fn caught_up(&self, heads: &BTreeMap<ConversationId, MessageId>, members: &Members) -> bool {
        self.devices.iter().all(|d| {
            heads
                .iter()
                .filter(|(conv, _)| members.get(conv).is_some_and(|m| m.contains(&d.user)))
                .all(|(conv, head)| d.head(*conv) >= *head)
        })
    }

    /// The assertions every fault test ends with: no client stopped, every
    /// device caught up with `heads`, the verdict clean (else the report
    /// and the servers' `errors`), every send acknowledged.
    pub fn assert_clean_end(
        &self,
        verdict: &Verdict,
        caught_up: bool,
        heads: &BTreeMap<ConversationId, u64>,
        seed: u64,
        errors: &[String],
    ) {
        for d in &self.devices {
            assert!(d.stopped.is_none(), "{} stopped: {:?}", d.name, d.stopped);
        }
        assert!(
            caught_up,
            "not every device caught up with the heads {heads:?} within 20 s:\n{}",
            verdict.report()
        );
        assert!(
            verdict.clean(),
            "seed {seed}: invariants violated:\n{}\nserver errors:\n{}",
            verdict.report(),
            errors.join("\n")
        );
        assert_eq!(verdict.acked, self.sends.len(), "every send acknowledged");
    }

    /// Compares everything recorded with `history` (every stored message
    /// of each conversation, ascending) and the conversations' `members`.
    pub fn verify(&self, history: &BTreeMap<ConversationId, Vec<Message>>, members: &Members) -> Verdict {
        let mut v = Verdict::default();

        // The histories: ids 1..=n, each send stored once.
        let mut stored: HashMap<(ConversationId, MessageId), &Message> = HashMap::new();
        let mut stored_bodies: BTreeSet<(ConversationId, &str)> = BTreeSet::new();
        for (conv, msgs) in history {
            v.stored += msgs.len();
            let mut keys = BTreeSet::new();
            for m in msgs {
                if stored.insert((*conv, m.id), m).is_some() {
                    v.stored_twice += 1;
                    v.problem(format!("{conv}: id {} appears twice in the history", m.id));
                }
                if !keys.insert((m.from, m.cmid.as_str())) || !stored_bodies.insert((*conv, m.body.as_str()))
                {
                    v.stored_twice += 1;
                    v.problem(format!(
                        "{conv}: the send of {} with cmid {} (body {:?}) is stored more than once \
                         (again as id {})",
                        m.from, m.cmid, m.body, m.id
                    ));
                }
            }
            let ids: BTreeSet<MessageId> = msgs.iter().map(|m| m.id).collect();
            let top = ids.last().copied().unwrap_or(0);
            let missing: Vec<MessageId> = (1..=top).filter(|i| !ids.contains(i)).collect();
            if !missing.is_empty() {
                v.history_gaps += missing.len();
                v.problem(format!(
                    "{conv}: {} ids missing from the history 1..={top}, first {:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                ));
            }
        }

        // The sends: each ack names the stored message it was for, once.
        let mut acked_ids: HashMap<(ConversationId, MessageId), usize> = HashMap::new();
        let mut acked_bodies: BTreeSet<(ConversationId, &str)> = BTreeSet::new();
        for (i, s) in self.sends.iter().enumerate() {
            let user = self.devices[s.device].user;
            match &s.outcome {
                None => v.unresolved += 1,
                Some((_, Err(e))) => {
                    v.failed += 1;
                    v.problem(format!(
                        "send {i} ({} to {}, {:?}) failed: {e}",
                        self.devices[s.device].name, s.conv, s.body
                    ));
                }
                Some((_, Ok(r))) => {
                    v.acked += 1;
                    acked_bodies.insert((s.conv, s.body.as_str()));
                    if r.duplicate {
                        v.deduplicated_resends += 1;
                    }
                    if let Some(other) = acked_ids.insert((s.conv, r.id), i) {
                        v.duplicate_acks += 1;
                        v.problem(format!(
                            "{} id {} acked to two sends: {:?} and {:?}",
                            s.conv, r.id, self.sends[other].body, s.body
                        ));
                    }
                    match stored.get(&(s.conv, r.id)) {
                        Some(m) if m.body == s.body && m.from == user => {}
                        Some(m) => {
                            v.acked_lost += 1;
                            v.problem(format!(
                                "acked {} #{} ({:?} from {user}) is stored as {:?} from {}",
                                s.conv, r.id, s.body, m.body, m.from
                            ));
                        }
                        None => {
                            v.acked_lost += 1;
                            v.problem(format!(
                                "acked {} #{} ({:?} from {user}) is not stored",
                                s.conv, r.id, s.body
                            ));
                        }
                    }
                }
            }
        }
        v.stored_unacked = stored_bodies.iter().filter(|k| !acked_bodies.contains(*k)).count();

        // The deliveries: every stored message to every member device, once, in order.
        for d in &self.devices {
            for (conv, got) in &d.delivered {
                if !members.get(conv).is_some_and(|m| m.contains(&d.user)) {
                    v.deliveries_wrong += got.len();
                    v.problem(format!("{}: {} messages of {conv}, not a member", d.name, got.len()));
                }
            }
            for (conv, msgs) in history {
                if !members.get(conv).is_some_and(|m| m.contains(&d.user)) {
                    continue;
                }
                let empty = Vec::new();
                let got = d.delivered.get(conv).unwrap_or(&empty);
                v.deliveries += got.len();
                let mut seen = BTreeSet::new();
                let mut prev: MessageId = 0;
                for (id, from, body) in got {
                    if !seen.insert(*id) {
                        v.deliveries_duplicated += 1;
                        v.problem(format!("{}: {conv} #{id} delivered twice", d.name));
                    } else if *id < prev {
                        v.deliveries_misordered += 1;
                        v.problem(format!("{}: {conv} #{id} delivered after #{prev}", d.name));
                    }
                    prev = prev.max(*id);
                    match stored.get(&(*conv, *id)) {
                        Some(m) if m.body == *body && m.from == *from => {}
                        Some(m) => {
                            v.deliveries_wrong += 1;
                            v.problem(format!(
                                "{}: {conv} #{id} delivered as {body:?} from {from}, stored as {:?} from {}",
                                d.name, m.body, m.from
                            ));
                        }
                        None => {
                            v.deliveries_wrong += 1;
                            v.problem(format!(
                                "{}: {conv} #{id} delivered ({body:?}) but not stored",
                                d.name
                            ));
                        }
                    }
                }
                let missing: Vec<MessageId> =
                    msgs.iter().map(|m| m.id).filter(|id| !seen.contains(id)).collect();
                if !missing.is_empty() {
                    v.deliveries_missing += missing.len();
                    v.problem(format!(
                        "{}: {} messages of {conv} never delivered, first {:?}",
                        d.name,
                        missing.len(),
                        &missing[..missing.len().min(10)]
                    ));
                }
            }
        }
        v
    }
}

/// The members of each conversation.
pub type Members = BTreeMap<ConversationId, BTreeSet<UserId>>;

/// Median and maximum of `samples` in milliseconds (`None` if empty).
pub fn median_max_ms(samples: &[std::time::Duration]) -> Option<(u128, u128)> {
    let mut ms: Vec<u128> = samples.iter().map(|d| d.as_millis()).collect();
    ms.sort_unstable();
    Some((*ms.get(ms.len() / 2)?, *ms.last()?))
}
