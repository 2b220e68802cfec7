//! The tail: appends that are durable in the message log but not applied
//! to redb yet (write-behind).
//!
//! A batch made only of plain appends does not touch redb at all: the
//! writer gives each message its id, writes its record to the message log
//! and adds it here; the syncer answers it once the log is synced, as
//! before. When the tail holds [`TAIL_APPENDS`] appends or [`TAIL_BYTES`]
//! bytes, or after [`TAIL_AGE`], and with every checkpoint, the writer
//! freezes it ([`Tails::applying`]) and the applier thread applies
//! everything in it to redb in one transaction while a new tail takes
//! the appends; any other kind of batch waits for that and applies what
//! is left itself. Applying thousands of appends in one
//! transaction copies each B-tree leaf once for all of them instead of
//! once per small group commit (redb's inserts and commits were 70 % of
//! the writer's instructions per message; `docs/benchmarks.md` §4).
//!
//! Readers merge the tail with their redb snapshot. The tail only ever
//! holds the newest messages of a conversation (ids right after redb's
//! last one), so a merge takes redb's messages first and the tail's above
//! them. A reader takes its snapshot and its copy of the tails under the
//! tails' read lock; the writer drops a tail under the write lock only
//! after its commit is visible, so a reader that no longer finds a
//! message in a tail finds it in its snapshot. Where both hold a message
//! (a reader between a commit and the drop), redb's copy wins: an event
//! applied in the same transaction may have changed it.
//!
//! What a reader copies from the tail may not be synced yet: readers wait
//! for the log's sync afterwards exactly as for redb snapshots
//! ([`Visibility`](super::syncer::Visibility)), because the writer
//! announces a batch before adding it here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_protocol::UserId;

/// Appends after which the writer drains the tail.
pub const TAIL_APPENDS: usize = 2048;
/// Bytes of stored values after which the writer drains the tail.
pub const TAIL_BYTES: usize = 4 << 20;
/// Longest an append waits in the tail before the writer drains it.
pub const TAIL_AGE: Duration = Duration::from_millis(100);

/// A message's stored value, shared by the tail and the readers' copies.
pub(super) type Value = Arc<[u8]>;

/// The unapplied appends of one conversation: consecutive ids.
#[derive(Default)]
pub(super) struct ConvTail {
    /// The id of `values[0]`.
    first: u64,
    values: Vec<Value>,
    /// Per sender: the newest id they sent here (their read id rises to
    /// it) and their client message ids.
    senders: HashMap<u64, SenderTail>,
    /// Events in the conversation up to its newest message here, when an
    /// event is among them (the `event_counts` entry to write).
    events: Option<u64>,
}

#[derive(Default)]
struct SenderTail {
    newest: u64,
    cmids: HashMap<Box<str>, u64>,
}

impl ConvTail {
    /// The newest id held.
    pub(super) fn head(&self) -> Option<u64> {
        (!self.values.is_empty()).then(|| self.first + self.values.len() as u64 - 1)
    }

    /// The value of message `id`, if held.
    pub(super) fn value(&self, id: u64) -> Option<&Value> {
        id.checked_sub(self.first).and_then(|i| self.values.get(usize::try_from(i).ok()?))
    }

    /// The id the tail gave `(sender, cmid)`, if any.
    pub(super) fn key(&self, sender: u64, cmid: &str) -> Option<u64> {
        self.senders.get(&sender)?.cmids.get(cmid).copied()
    }

    /// The event count written with the newest message here, if an event is held.
    pub(super) fn events(&self) -> Option<u64> {
        self.events
    }

    /// Every held message, ascending.
    pub(super) fn messages(&self) -> impl Iterator<Item = (u64, &Value)> {
        self.values.iter().enumerate().map(|(i, v)| (self.first + i as u64, v))
    }

    /// Every `(sender, cmid, id)` held.
    pub(super) fn keys(&self) -> impl Iterator<Item = (u64, &str, u64)> {
        self.senders.iter().flat_map(|(&s, t)| t.cmids.iter().map(move |(c, &id)| (s, &**c, id)))
    }

    /// Every sender with the newest id they sent here.
    pub(super) fn senders(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.senders.iter().map(|(&s, t)| (s, t.newest))
    }
}

/// One message for the tail, as the writer built it.
pub(super) struct Entry {
    /// The conversation's string form.
    pub conv: String,
    pub id: u64,
    pub from: UserId,
    pub cmid: String,
    pub value: Vec<u8>,
    /// The conversation's event count up to this message, when it is an event.
    pub events: Option<u64>,
}

/// Unapplied appends of every conversation.
#[derive(Default)]
pub(super) struct Tail {
    convs: HashMap<Box<str>, ConvTail>,
    appends: usize,
    bytes: usize,
    since: Option<Instant>,
}

impl Tail {
    /// The conversation's unapplied appends, if it has any.
    pub(super) fn conv(&self, conv: &str) -> Option<&ConvTail> {
        self.convs.get(conv)
    }

    /// Every conversation with unapplied appends.
    pub(super) fn convs(&self) -> impl Iterator<Item = (&str, &ConvTail)> {
        self.convs.iter().map(|(c, t)| (&**c, t))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.appends == 0
    }

    /// Appends held.
    pub(super) fn len(&self) -> usize {
        self.appends
    }

    /// Holds twice what makes it due: draining has been failing, and no
    /// more appends may wait here (memory stays bounded).
    pub(super) fn full(&self) -> bool {
        self.appends >= 2 * TAIL_APPENDS || self.bytes >= 2 * TAIL_BYTES
    }

    /// Whether the writer should drain now, when appends may wait `max_age`.
    pub(super) fn due(&self, max_age: Duration) -> bool {
        self.appends >= TAIL_APPENDS || self.bytes >= TAIL_BYTES || self.age().is_some_and(|a| a >= max_age)
    }

    /// How long until the tail is due by age (`None`: it is empty).
    pub(super) fn due_in(&self, max_age: Duration) -> Option<Duration> {
        self.age().map(|a| max_age.saturating_sub(a))
    }

    fn age(&self) -> Option<Duration> {
        self.since.map(|s| s.elapsed())
    }

    /// Adds the next message of its conversation.
    pub(super) fn push(&mut self, e: Entry) {
        let t = self.convs.entry(e.conv.into_boxed_str()).or_default();
        if t.values.is_empty() {
            t.first = e.id;
        }
        debug_assert_eq!(t.first + t.values.len() as u64, e.id, "tail ids must be consecutive");
        self.bytes += e.value.len();
        t.values.push(e.value.into());
        let s = t.senders.entry(e.from.0).or_default();
        s.newest = s.newest.max(e.id);
        s.cmids.insert(e.cmid.into_boxed_str(), e.id);
        if e.events.is_some() {
            t.events = e.events;
        }
        self.appends += 1;
        self.since.get_or_insert_with(Instant::now);
    }

    /// Moves everything of `staged` (later messages) in.
    pub(super) fn absorb(&mut self, staged: Tail) {
        if self.is_empty() {
            *self = Tail { since: Some(Instant::now()), ..staged };
            return;
        }
        for (conv, t) in staged.convs {
            let into = self.convs.entry(conv).or_default();
            if into.values.is_empty() {
                *into = t;
                continue;
            }
            into.values.extend(t.values);
            for (sender, s) in t.senders {
                let to = into.senders.entry(sender).or_default();
                to.newest = to.newest.max(s.newest);
                to.cmids.extend(s.cmids);
            }
            if t.events.is_some() {
                into.events = t.events;
            }
        }
        self.appends += staged.appends;
        self.bytes += staged.bytes;
    }

    /// Up to `limit` held messages of `conv` above `after`, ascending.
    pub(super) fn after(&self, conv: &str, after: u64, limit: usize) -> Vec<(u64, Value)> {
        let Some(t) = self.conv(conv) else { return Vec::new() };
        t.messages().filter(|&(id, _)| id > after).take(limit).map(|(id, v)| (id, v.clone())).collect()
    }

    /// Up to `limit` held messages of `conv` below `before` (all, for
    /// `None`), the newest ones, ascending.
    pub(super) fn before(&self, conv: &str, before: Option<u64>, limit: usize) -> Vec<(u64, Value)> {
        let Some(t) = self.conv(conv) else { return Vec::new() };
        let below: Vec<_> = t.messages().filter(|&(id, _)| before.is_none_or(|b| id < b)).collect();
        let skip = below.len().saturating_sub(limit);
        below.into_iter().skip(skip).map(|(id, v)| (id, v.clone())).collect()
    }

    /// The newest held message of `conv`.
    pub(super) fn last(&self, conv: &str) -> Option<(u64, Value)> {
        let t = self.conv(conv)?;
        let id = t.head()?;
        Some((id, t.value(id)?.clone()))
    }

    /// The message `(sender, cmid)` of `conv`, if held.
    pub(super) fn sent(&self, conv: &str, sender: u64, cmid: &str) -> Option<(u64, Value)> {
        let t = self.conv(conv)?;
        let id = t.key(sender, cmid)?;
        Some((id, t.value(id)?.clone()))
    }

    /// The newest id `user` sent in `conv`, if held (their read id is at
    /// least that).
    pub(super) fn read_of(&self, user: UserId, conv: &str) -> Option<u64> {
        Some(self.conv(conv)?.senders.get(&user.0)?.newest)
    }

    /// The newest held id of every conversation.
    pub(super) fn heads(&self) -> HashMap<String, u64> {
        self.convs.iter().filter_map(|(c, t)| Some((c.to_string(), t.head()?))).collect()
    }
}

/// The tail appends go to, and the older one the applier thread is
/// applying to redb meanwhile (see `writer.rs`): what readers and the
/// writer look messages up in, oldest first.
#[derive(Default)]
pub(super) struct Tails {
    /// Where appends go.
    pub current: Tail,
    /// Frozen, older than `current`, being applied (or to be applied again).
    pub applying: Option<Arc<Tail>>,
}

impl Tails {
    /// Whether neither part holds anything.
    pub(super) fn is_empty(&self) -> bool {
        self.current.is_empty() && self.applying.is_none()
    }

    /// Up to `limit` held messages of `conv` above `after`, ascending.
    pub(super) fn after(&self, conv: &str, after: u64, limit: usize) -> Vec<(u64, Value)> {
        let mut out = self.applying.as_ref().map_or_else(Vec::new, |a| a.after(conv, after, limit));
        if out.len() < limit {
            out.extend(self.current.after(conv, after, limit - out.len()));
        }
        out
    }

    /// Up to `limit` held messages of `conv` below `before`, the newest, ascending.
    pub(super) fn before(&self, conv: &str, before: Option<u64>, limit: usize) -> Vec<(u64, Value)> {
        let newer = self.current.before(conv, before, limit);
        match &self.applying {
            Some(a) if newer.len() < limit => {
                let mut out = a.before(conv, before, limit - newer.len());
                out.extend(newer);
                out
            }
            _ => newer,
        }
    }

    /// The newest held message of `conv`.
    pub(super) fn last(&self, conv: &str) -> Option<(u64, Value)> {
        self.current.last(conv).or_else(|| self.applying.as_ref()?.last(conv))
    }

    /// The message `(sender, cmid)` of `conv`, if held.
    pub(super) fn sent(&self, conv: &str, sender: u64, cmid: &str) -> Option<(u64, Value)> {
        self.current.sent(conv, sender, cmid).or_else(|| self.applying.as_ref()?.sent(conv, sender, cmid))
    }

    /// The newest id `user` sent in `conv`, if held.
    pub(super) fn read_of(&self, user: UserId, conv: &str) -> Option<u64> {
        self.current.read_of(user, conv).or_else(|| self.applying.as_ref()?.read_of(user, conv))
    }

    /// The newest held id of `conv`.
    pub(super) fn head(&self, conv: &str) -> Option<u64> {
        self.current
            .conv(conv)
            .and_then(ConvTail::head)
            .or_else(|| self.applying.as_ref()?.conv(conv)?.head())
    }

    /// The value of message `id` of `conv`, if held.
    pub(super) fn value(&self, conv: &str, id: u64) -> Option<Value> {
        let held = |t: &Tail| t.conv(conv).and_then(|c| c.value(id)).cloned();
        held(&self.current).or_else(|| held(self.applying.as_ref()?))
    }

    /// The event count written with the newest held event of `conv`.
    pub(super) fn events(&self, conv: &str) -> Option<u64> {
        self.current
            .conv(conv)
            .and_then(ConvTail::events)
            .or_else(|| self.applying.as_ref()?.conv(conv)?.events())
    }

    /// The newest held id of every conversation.
    pub(super) fn heads(&self) -> HashMap<String, u64> {
        let mut heads = self.applying.as_ref().map(|a| a.heads()).unwrap_or_default();
        heads.extend(self.current.heads());
        heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(conv: &str, id: u64, from: u64, cmid: &str) -> Entry {
        Entry {
            conv: conv.into(),
            id,
            from: UserId(from),
            cmid: cmid.into(),
            value: format!("v{id}").into_bytes(),
            events: None,
        }
    }

    fn ids(v: &[(u64, Value)]) -> Vec<u64> {
        v.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn pages_keys_and_heads_of_the_held_messages() {
        let mut tail = Tail::default();
        for id in 5..=9 {
            tail.push(entry("g:1", id, id % 2, &format!("c{id}")));
        }
        assert_eq!(tail.len(), 5);
        assert_eq!(ids(&tail.after("g:1", 6, 2)), [7, 8]);
        assert_eq!(ids(&tail.after("g:1", 0, 10)), [5, 6, 7, 8, 9]);
        assert_eq!(ids(&tail.before("g:1", Some(8), 2)), [6, 7]);
        assert_eq!(ids(&tail.before("g:1", None, 3)), [7, 8, 9]);
        assert_eq!(tail.last("g:1").map(|(id, _)| id), Some(9));
        assert_eq!(tail.sent("g:1", 1, "c7").map(|(id, v)| (id, v.to_vec())), Some((7, b"v7".to_vec())));
        assert_eq!(tail.sent("g:1", 0, "c7"), None, "a cmid is the sender's own");
        assert_eq!(tail.read_of(UserId(1), "g:1"), Some(9));
        assert_eq!(tail.read_of(UserId(0), "g:1"), Some(8));
        assert!(tail.after("g:2", 0, 10).is_empty());
        assert_eq!(tail.heads().get("g:1"), Some(&9));
    }

    #[test]
    fn absorbing_a_staged_batch_continues_each_conversation() {
        let mut tail = Tail::default();
        tail.push(entry("d:1:2", 1, 1, "a"));
        let mut staged = Tail::default();
        staged.push(entry("d:1:2", 2, 2, "b"));
        staged.push(entry("r:3", 40, 1, "c"));
        staged.push(Entry { events: Some(4), ..entry("r:3", 41, 1, "d") });
        tail.absorb(staged);
        assert_eq!(tail.len(), 4);
        assert_eq!(ids(&tail.after("d:1:2", 0, 10)), [1, 2]);
        assert_eq!(tail.conv("r:3").and_then(ConvTail::events), Some(4));
        assert_eq!(tail.conv("d:1:2").and_then(ConvTail::events), None);
        let mut keys: Vec<_> = tail
            .conv("r:3")
            .map(|t| t.keys().map(|(s, c, id)| (s, c.to_owned(), id)).collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(keys, [(1, "c".to_owned(), 40), (1, "d".to_owned(), 41)]);
        assert!(!tail.due(TAIL_AGE));
        assert!(tail.due(Duration::ZERO), "due by age");
        let tail = Tail::default();
        assert!(tail.is_empty() && tail.due_in(TAIL_AGE).is_none());
    }
}
