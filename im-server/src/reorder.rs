//! Per-conversation order for messages that arrive from several nodes.
//!
//! Each node publishes the messages it stores in id order, but when two
//! nodes store in one conversation at once their publications reach a third
//! node interleaved: 6 (from node B) may arrive before 5 (from node A).
//! [`Reorder`] sits between the broker and the hub: a message whose id is
//! ahead of the next one expected for its conversation is held until the
//! missing ids arrive, or until the reorder window passes, and then handed
//! on in id order. So live delivery reaches each connection in id order
//! without a gap sync in the common case; when a missing id never comes
//! (it had no recipient on this node, or its publish was lost), the held
//! messages go out after the window and clients close the gap by sync as
//! before.
//!
//! A node takes its position in a conversation from the first message of
//! it that reaches it (after [`IDLE_FORGET`] without one, again): an
//! earlier id that arrives after that first one passes late, and the
//! client closes the gap as before. Holding every first message for the
//! window instead would delay the first message of every quiet
//! conversation.
//!
//! Only `message` frames are ordered; every other event passes straight
//! through. A message at or below the expected id (a late one, or a
//! duplicate) passes too: clients drop duplicates by id. A conversation
//! nothing was held for is forgotten after [`IDLE_FORGET`], so the table
//! holds only conversations with recent traffic.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use im_protocol::{ConversationId, MessageId, ServerFrame};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::{Event, EventSink};

/// A conversation with nothing held and no message for this long is forgotten.
pub const IDLE_FORGET: Duration = Duration::from_secs(60);
/// Most messages held for one conversation; one more releases them all.
const MAX_HELD: usize = 1024;
/// Lock stripes: one conversation's events always take the same stripe, so
/// they are handed on in order, while other conversations go on in parallel.
const STRIPES: usize = 64;

/// Holds messages that arrive ahead of their conversation's next id (see
/// the module docs) and hands everything to `inner` in order.
pub struct Reorder {
    inner: Arc<dyn EventSink>,
    window: Duration,
    stripes: Vec<Mutex<HashMap<ConversationId, Conv>>>,
    /// Conversations with held messages, across stripes.
    holding: AtomicUsize,
    wake: Arc<Notify>,
}

/// One conversation's position.
struct Conv {
    /// The highest id handed on, in order.
    last: MessageId,
    /// Messages ahead of `last + 1`, by id.
    held: BTreeMap<MessageId, Event>,
    /// When the oldest held message arrived.
    held_since: Option<Instant>,
    /// The last message of this conversation.
    touched: Instant,
}

impl Reorder {
    /// Positions no longer mean anything (events were lost): hands on what
    /// is held and forgets the rest; clients reconnect and sync.
    fn forget_all(&self) {
        for i in 0..STRIPES {
            let mut stripe = self.stripe(i);
            for c in stripe.values_mut() {
                self.release(c);
            }
            stripe.clear();
        }
    }

    /// A reorder step in front of `inner`, holding a message at most
    /// `window`; starts the task that releases held messages when their
    /// window passes (it ends when the step is dropped).
    pub fn new(inner: Arc<dyn EventSink>, window: Duration) -> Arc<Self> {
        let reorder = Arc::new(Self {
            inner,
            window,
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            holding: AtomicUsize::new(0),
            wake: Arc::new(Notify::new()),
        });
        tokio::spawn(release_expired(Arc::downgrade(&reorder)));
        reorder
    }

    /// Messages held right now, over all conversations.
    pub fn held(&self) -> usize {
        (0..STRIPES).map(|i| self.stripe(i).values().map(|c| c.held.len()).sum::<usize>()).sum()
    }

    /// Conversations this step tracks right now.
    pub fn conversations(&self) -> usize {
        (0..STRIPES).map(|i| self.stripe(i).len()).sum()
    }

    fn stripe(&self, i: usize) -> MutexGuard<'_, HashMap<ConversationId, Conv>> {
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stripe_of(conv: ConversationId) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conv.hash(&mut h);
        (h.finish() as usize) % STRIPES
    }

    /// Hands on every held message of `c`, in id order.
    fn release(&self, c: &mut Conv) {
        for (id, event) in std::mem::take(&mut c.held) {
            c.last = c.last.max(id);
            self.inner.handle(event);
        }
        if c.held_since.take().is_some() {
            self.holding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The conversation and id of a `message` delivery.
fn message_of(event: &Event) -> Option<(ConversationId, MessageId)> {
    match event {
        Event::Deliver { frame: ServerFrame::Message(m), .. } => Some((m.conv, m.id)),
        _ => None,
    }
}

impl EventSink for Reorder {
    fn handle(&self, event: Event) {
        let Some((conv, id)) = message_of(&event) else {
            return self.inner.handle(event);
        };
        // Handing on under the stripe's lock keeps one conversation's order
        // even when two tasks hand events in at once.
        let mut stripe = self.stripe(Self::stripe_of(conv));
        let now = Instant::now();
        let c = stripe.entry(conv).or_insert_with(|| Conv {
            last: id.saturating_sub(1),
            held: BTreeMap::new(),
            held_since: None,
            touched: now,
        });
        c.touched = now;
        if id > c.last + 1 {
            c.held.insert(id, event);
            if c.held_since.is_none() {
                c.held_since = Some(now);
                if self.holding.fetch_add(1, Ordering::Relaxed) == 0 {
                    self.wake.notify_one();
                }
            }
            if c.held.len() > MAX_HELD {
                self.release(c);
            }
            return;
        }
        c.last = c.last.max(id);
        self.inner.handle(event);
        // The next ids may be waiting.
        while let Some(entry) = c.held.first_entry() {
            if *entry.key() != c.last + 1 {
                break;
            }
            c.last += 1;
            self.inner.handle(entry.remove());
        }
        if c.held.is_empty() && c.held_since.take().is_some() {
            self.holding.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn events_lost(&self) {
        self.forget_all();
        self.inner.events_lost();
    }

    fn isolated(&self) {
        self.forget_all();
        self.inner.isolated();
    }
}

/// Releases held messages whose window has passed and forgets idle
/// conversations; sleeps while nothing is held.
async fn release_expired(reorder: Weak<Reorder>) {
    let mut last_sweep = Instant::now();
    loop {
        let Some(r) = reorder.upgrade() else { return };
        let tick = (r.window / 4).max(Duration::from_millis(5));
        if r.holding.load(Ordering::Relaxed) == 0 {
            // Wake for a first held message (`notify_one` keeps a permit if
            // it comes before this waits), or once per idle period to forget
            // idle conversations. The wait holds no reference to the step.
            let wake = r.wake.clone();
            drop(r);
            let _ = tokio::time::timeout(IDLE_FORGET, wake.notified()).await;
        } else {
            drop(r);
            tokio::time::sleep(tick).await;
        }
        let Some(r) = reorder.upgrade() else { return };
        let now = Instant::now();
        let sweep = now.duration_since(last_sweep) >= IDLE_FORGET;
        for i in 0..STRIPES {
            let mut stripe = r.stripe(i);
            for c in stripe.values_mut() {
                if c.held_since.is_some_and(|t| now.duration_since(t) >= r.window) {
                    r.release(c);
                }
            }
            if sweep {
                stripe.retain(|_, c| !c.held.is_empty() || now.duration_since(c.touched) < IDLE_FORGET);
            }
        }
        if sweep {
            last_sweep = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use im_protocol::{ClientMsgId, GroupId, Message, UserId};

    use super::*;
    use crate::broker::Audience;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(ConversationId, MessageId)>>);

    impl EventSink for Recorder {
        fn handle(&self, event: Event) {
            if let Some(m) = message_of(&event) {
                self.0.lock().unwrap().push(m);
            }
        }
    }

    impl Recorder {
        fn ids(&self, conv: ConversationId) -> Vec<MessageId> {
            self.0.lock().unwrap().iter().filter(|(c, _)| *c == conv).map(|(_, id)| *id).collect()
        }
    }

    const G1: ConversationId = ConversationId::Group(GroupId(1));
    const G2: ConversationId = ConversationId::Group(GroupId(2));

    fn msg(conv: ConversationId, id: MessageId) -> Event {
        let message = Message::new(conv, id, UserId(1), ClientMsgId::new(format!("c{id}")).unwrap(), "", 0);
        Event::Deliver {
            to: Audience::Users(vec![UserId(2)]),
            frame: ServerFrame::Message(message),
            skip: None,
        }
    }

    fn step(window: Duration) -> (Arc<Reorder>, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (Reorder::new(rec.clone(), window), rec)
    }

    #[tokio::test]
    async fn messages_ahead_of_a_gap_wait_for_it_and_go_on_in_order() {
        let (r, rec) = step(Duration::from_secs(60));
        for id in [1, 3, 4, 2, 6, 5] {
            r.handle(msg(G1, id));
        }
        assert_eq!(rec.ids(G1), [1, 2, 3, 4, 5, 6]);
        assert_eq!(r.held(), 0);
        // Another conversation has its own position.
        r.handle(msg(G2, 10));
        r.handle(msg(G2, 12));
        assert_eq!(rec.ids(G2), [10]);
        assert_eq!(r.held(), 1);
        r.handle(msg(G2, 11));
        assert_eq!(rec.ids(G2), [10, 11, 12]);
    }

    #[tokio::test]
    async fn late_and_duplicate_messages_pass_and_other_events_are_not_held() {
        let (r, rec) = step(Duration::from_secs(60));
        r.handle(msg(G1, 5));
        r.handle(msg(G1, 3));
        r.handle(msg(G1, 5));
        assert_eq!(rec.ids(G1), [5, 3, 5]);
        r.handle(msg(G1, 7));
        let revoked = Event::SessionRevoked { user: UserId(1), session: "s".into() };
        r.handle(revoked);
        assert_eq!(rec.ids(G1), [5, 3, 5], "7 waits for 6");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_that_never_fills_is_given_up_after_the_window() {
        let (r, rec) = step(Duration::from_millis(300));
        r.handle(msg(G1, 1));
        r.handle(msg(G1, 3));
        r.handle(msg(G1, 4));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rec.ids(G1), [1], "still within the window");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rec.ids(G1), [1, 3, 4], "released in order after the window");
        // The missing one, late, still passes; the next goes straight on.
        r.handle(msg(G1, 2));
        r.handle(msg(G1, 5));
        assert_eq!(rec.ids(G1), [1, 3, 4, 2, 5]);
        assert_eq!(r.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_conversations_are_forgotten() {
        let (r, _rec) = step(Duration::from_millis(300));
        r.handle(msg(G1, 1));
        r.handle(msg(G2, 1));
        assert_eq!(r.conversations(), 2);
        tokio::time::sleep(IDLE_FORGET * 2 + Duration::from_secs(1)).await;
        assert_eq!(r.conversations(), 0);
    }

    #[tokio::test]
    async fn too_many_held_messages_are_released() {
        let (r, rec) = step(Duration::from_secs(60));
        r.handle(msg(G1, 1));
        for id in 3..=(MAX_HELD as u64 + 3) {
            r.handle(msg(G1, id));
        }
        assert_eq!(rec.ids(G1).len(), MAX_HELD + 2, "released once over the bound");
        assert_eq!(r.held(), 0);
    }
}
