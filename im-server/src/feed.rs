//! The message feed: every stored message and event handed to the
//! application's [`FeedSink`] **at least once, in each conversation's id
//! order**, also after the sink was down for a day or a node died.
//!
//! Where [`Hooks::after_store`](crate::hooks::Hooks::after_store) is told
//! from memory (and drops what a slow hook cannot take), the feed reads
//! from the store: each conversation has a delivery cursor in the store
//! ([`FeedStore`]), and a conversation is delivered from its cursor in
//! batches of consecutive messages; the cursor moves only after the sink
//! took a batch. A failed batch is retried with backoff, forever, holding
//! up only its own conversation. Message delivery to clients never waits
//! for the feed.
//!
//! **Finding work.** A node hints its feed when it stores a message, and
//! every [`FeedConfig::sweep`] the feed asks the store for conversations
//! past their cursor, which catches what a hint missed (a full hint queue,
//! another node's messages, a node that died mid-delivery).
//!
//! **In a cluster** every node runs a feed over the shared store; a node
//! claims a conversation (a lease of [`FeedConfig::lease`], renewed with
//! every batch) before delivering it, so one node at a time delivers a
//! conversation and its order holds. A node that dies leaves its claims to
//! lapse; another node then delivers from the cursor, repeating the batch
//! that was in flight (hence *at least* once: receivers dedupe by
//! `(conv, id)`, which only ever grows per conversation).
//!
//! **What a batch shows.** Messages as they are when read: a message
//! recalled before its batch went out arrives as a tombstone, followed
//! (in its place in the sequence) by the recall event.
//!
//! **Where it starts.** The first feed to run against a store starts at
//! every conversation's head ([`FeedStore::feed_start`]): history from
//! before is not replayed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use im_protocol::{ConversationId, Message, MessageId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::store::{FeedStore, MessageStore};
use crate::time::now_ms;

/// Hints queued for the feed; beyond this many, hints are dropped and the
/// next sweep finds the work instead.
pub const HINT_QUEUE: usize = 65_536;

/// Conversations one sweep asks the store for.
const SWEEP_LIMIT: usize = 1000;

/// How often conversations whose backoff ended are queued again.
const RETRY_TICK: Duration = Duration::from_millis(100);

/// Why a sink did not take a batch (it is retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FeedError(pub String);

/// Receives the feed. See the module docs for the guarantee.
#[async_trait]
pub trait FeedSink: Send + Sync + 'static {
    /// Takes `messages` of `conv`: consecutive ids, ascending, starting
    /// right after the last batch of `conv` the sink took (or an earlier
    /// one, after a failure or a node's death). `Ok` moves the cursor past
    /// them; `Err` has the batch retried after a backoff.
    async fn deliver(&self, conv: ConversationId, messages: &[Message]) -> Result<(), FeedError>;
}

/// How the feed runs.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Most messages per batch.
    pub batch: usize,
    /// Conversations delivered at once (each in order).
    pub concurrency: usize,
    /// How long a claim on a conversation lasts without renewal; a batch
    /// that takes longer is given up (and retried), so another node never
    /// delivers a conversation while this one still is.
    pub lease: Duration,
    /// How often the store is asked for conversations past their cursor.
    pub sweep: Duration,
    /// The first retry's delay; each further failure doubles it.
    pub retry_first: Duration,
    /// The longest delay between retries.
    pub retry_max: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            batch: 100,
            concurrency: 8,
            lease: Duration::from_secs(60),
            sweep: Duration::from_secs(5),
            retry_first: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Where the logic tells the feed that a conversation has a new message
/// (made by the server with its feed; `None` in [`crate::logic::Services`]
/// runs none).
#[derive(Debug, Clone)]
pub struct FeedHints {
    tx: mpsc::Sender<ConversationId>,
}

impl FeedHints {
    /// Hints that `conv` has something new (never waits; a full queue drops it).
    pub(crate) fn hint(&self, conv: ConversationId) {
        let _ = self.tx.try_send(conv);
    }
}

/// Delivers the feed of one node. Built by the server when it is given a sink.
pub(crate) struct Feed {
    store: Arc<dyn MessageStore>,
    sink: Arc<dyn FeedSink>,
    cfg: FeedConfig,
    /// This process: the node name and a random suffix, the holder of its claims.
    holder: String,
    metrics: Arc<Metrics>,
}

impl Feed {
    /// A feed of `store` into `sink`, and the hints that drive it, or
    /// `None` if the store keeps no feed.
    pub(crate) fn new(
        store: Arc<dyn MessageStore>,
        sink: Arc<dyn FeedSink>,
        cfg: FeedConfig,
        holder: String,
        metrics: Arc<Metrics>,
    ) -> Option<(Arc<Feed>, FeedHints, mpsc::Receiver<ConversationId>)> {
        store.feed()?;
        let (tx, rx) = mpsc::channel(HINT_QUEUE);
        let cfg = FeedConfig {
            batch: cfg.batch.max(1),
            concurrency: cfg.concurrency.max(1),
            lease: cfg.lease.max(Duration::from_secs(1)),
            sweep: cfg.sweep.max(Duration::from_millis(10)),
            retry_first: cfg.retry_first.max(Duration::from_millis(10)),
            retry_max: cfg.retry_max,
        };
        // Unique per process: two processes of one node name (an old one
        // still draining next to its replacement) never share a claim.
        let holder = format!("{holder}/{:08x}", rand::random::<u32>());
        let feed = Arc::new(Feed { store, sink, cfg, holder, metrics });
        Some((feed, FeedHints { tx }, rx))
    }

    fn cursors(&self) -> &dyn FeedStore {
        self.store.feed().expect("checked by Feed::new")
    }

    /// Starts the feed in the store if it never ran there (before the
    /// server accepts anything, so nothing stored from now on is missed).
    pub(crate) async fn start(&self) -> crate::store::StoreResult<()> {
        if self.cursors().feed_start().await? {
            tracing::info!("message feed started: it delivers what is stored from now on");
        }
        Ok(())
    }

    /// Runs until the hints' senders are gone (the server stopped).
    pub(crate) async fn run(self: Arc<Self>, mut hints: mpsc::Receiver<ConversationId>) {
        use futures::FutureExt;
        let mut queue = WorkQueue::default();
        // Conversations whose last delivery failed: their backoff, and when
        // they may be tried again. A failing conversation gives its task
        // slot back while it waits, so it never holds up the others.
        let mut failing: HashMap<ConversationId, (Backoff, Instant)> = HashMap::new();
        let mut tasks: JoinSet<(ConversationId, bool)> = JoinSet::new();
        let mut sweep = tokio::time::interval(self.cfg.sweep);
        let mut retries = tokio::time::interval(RETRY_TICK.min(self.cfg.sweep));
        loop {
            while tasks.len() < self.cfg.concurrency {
                let Some(conv) = queue.next() else { break };
                let feed = self.clone();
                tasks.spawn(async move {
                    // A panicking sink counts as a failed delivery.
                    let failed = std::panic::AssertUnwindSafe(feed.deliver(conv)).catch_unwind().await;
                    (conv, failed.unwrap_or(true))
                });
            }
            let due = |failing: &HashMap<ConversationId, (Backoff, Instant)>, conv: &ConversationId| {
                failing.get(conv).is_none_or(|(_, at)| *at <= Instant::now())
            };
            tokio::select! {
                hint = hints.recv() => match hint {
                    Some(conv) if due(&failing, &conv) => queue.add(conv),
                    Some(_) => {}
                    None => break,
                },
                _ = sweep.tick() => match self.cursors().feed_backlog(SWEEP_LIMIT).await {
                    Ok(behind) => behind.into_iter().filter(|p| due(&failing, &p.conv)).for_each(|p| queue.add(p.conv)),
                    Err(e) => tracing::warn!(error = %e, "message feed: sweep failed"),
                },
                _ = retries.tick(), if !failing.is_empty() => {
                    let now = Instant::now();
                    for (conv, (_, at)) in &failing {
                        if *at <= now {
                            queue.add(*conv);
                        }
                    }
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let Ok((conv, failed)) = done else { continue };
                    queue.finished(conv);
                    if failed {
                        let (backoff, at) = failing.entry(conv).or_insert_with(|| (Backoff::new(&self.cfg), Instant::now()));
                        *at = Instant::now() + backoff.next();
                    } else {
                        failing.remove(&conv);
                    }
                }
            }
        }
        tasks.shutdown().await;
    }

    /// Delivers `conv` from its cursor to its head, if this node can claim
    /// it; `true` if a delivery failed (the claim is kept for the retry).
    async fn deliver(&self, conv: ConversationId) -> bool {
        let lease = self.cfg.lease.as_millis() as u64;
        let now = now_ms();
        let mut cursor = match self.cursors().feed_claim(conv, &self.holder, now, now + lease).await {
            Ok(Some(cursor)) => cursor,
            Ok(None) => return false, // another node delivers it
            Err(e) => {
                tracing::warn!(%conv, error = %e, "message feed: claim failed");
                return true;
            }
        };
        loop {
            let delivered = match self.store.after(conv, cursor, self.cfg.batch).await {
                Ok(batch) if batch.is_empty() => {
                    let _ = self.cursors().feed_advance(conv, &self.holder, cursor, 0).await;
                    return false;
                }
                Ok(batch) => self.offer(conv, &batch).await,
                Err(e) => Err(FeedError(format!("reading the conversation: {e}"))),
            };
            let last = match delivered {
                Ok(last) => last,
                Err(e) => {
                    self.metrics.feed_failure();
                    tracing::warn!(%conv, error = %e, "message feed: delivery failed; retried after a backoff");
                    return true;
                }
            };
            cursor = last;
            match self.cursors().feed_advance(conv, &self.holder, cursor, now_ms() + lease).await {
                Ok(true) => {}
                Ok(false) => return false, // the claim lapsed and another node took it
                Err(e) => {
                    // Without a confirmed claim, stop: another node may take over.
                    tracing::warn!(%conv, error = %e, "message feed: cursor not saved; the batch may repeat");
                    return true;
                }
            }
        }
    }

    /// Hands `batch` to the sink within half the lease; the last id on success.
    async fn offer(&self, conv: ConversationId, batch: &[Message]) -> Result<MessageId, FeedError> {
        let within = self.cfg.lease / 2;
        match tokio::time::timeout(within, self.sink.deliver(conv, batch)).await {
            Ok(Ok(())) => {
                self.metrics.feed_delivered(batch.len() as u64);
                Ok(batch.last().map_or(0, |m| m.id))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FeedError(format!("the sink took longer than {within:?}"))),
        }
    }
}

/// Conversations waiting for delivery, each at most once, and each
/// delivered by one task at a time (news of one being delivered queues it
/// again once that task ends).
#[derive(Debug, Default)]
struct WorkQueue {
    waiting: VecDeque<ConversationId>,
    queued: HashSet<ConversationId>,
    active: HashSet<ConversationId>,
    again: HashSet<ConversationId>,
}

impl WorkQueue {
    fn add(&mut self, conv: ConversationId) {
        if self.active.contains(&conv) {
            self.again.insert(conv);
        } else if self.queued.insert(conv) {
            self.waiting.push_back(conv);
        }
    }

    /// The next conversation to deliver, now marked active.
    fn next(&mut self) -> Option<ConversationId> {
        let conv = self.waiting.pop_front()?;
        self.queued.remove(&conv);
        self.active.insert(conv);
        Some(conv)
    }

    fn finished(&mut self, conv: ConversationId) {
        self.active.remove(&conv);
        if self.again.remove(&conv) {
            self.add(conv);
        }
    }
}

/// Doubling delays with jitter, from `retry_first` up to `retry_max`.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(cfg: &FeedConfig) -> Self {
        Backoff { next: cfg.retry_first, max: cfg.retry_max.max(cfg.retry_first) }
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // ±20 %, so nodes that failed together do not retry together.
        base.mul_f64(rand::random_range(0.8..1.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_being_delivered_is_queued_again_not_twice() {
        let (a, b) =
            (ConversationId::Group(im_protocol::GroupId(1)), ConversationId::Group(im_protocol::GroupId(2)));
        let mut q = WorkQueue::default();
        q.add(a);
        q.add(a);
        q.add(b);
        assert_eq!(q.next(), Some(a));
        q.add(a); // news while a is delivered
        assert_eq!(q.next(), Some(b));
        assert_eq!(q.next(), None, "a is active, not waiting");
        q.finished(a);
        assert_eq!(q.next(), Some(a), "queued again once its task ended");
        q.finished(a);
        q.finished(b);
        assert_eq!(q.next(), None);
    }

    /// Fails every batch of one conversation (and panics on another).
    struct Picky {
        got: std::sync::Mutex<Vec<(ConversationId, MessageId)>>,
        bad: ConversationId,
        panics: ConversationId,
    }

    #[async_trait]
    impl FeedSink for Picky {
        async fn deliver(&self, conv: ConversationId, messages: &[Message]) -> Result<(), FeedError> {
            if conv == self.panics {
                panic!("a buggy sink");
            }
            if conv == self.bad {
                return Err(FeedError("always refused".into()));
            }
            self.got.lock().unwrap().extend(messages.iter().map(|m| (conv, m.id)));
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_conversation_does_not_hold_up_the_others() {
        use crate::store::MemoryStore;
        let store = Arc::new(MemoryStore::new());
        let g = |n| ConversationId::Group(im_protocol::GroupId(n));
        let (bad, panics, good) = (g(1), g(2), g(3));
        let sink = Arc::new(Picky { got: Default::default(), bad, panics });
        let cfg = FeedConfig {
            concurrency: 1,
            sweep: Duration::from_millis(20),
            retry_first: Duration::from_millis(10),
            retry_max: Duration::from_millis(40),
            ..FeedConfig::default()
        };
        let (feed, hints, rx) =
            Feed::new(store.clone(), sink.clone(), cfg, "n".into(), Arc::new(Metrics::new())).unwrap();
        feed.start().await.unwrap();
        let task = tokio::spawn(feed.run(rx));
        for (i, conv) in [bad, panics, good, good].into_iter().enumerate() {
            let msg = crate::store::conformance::new_msg(conv, 1, &format!("m{i}"), "x");
            store.append(msg).await.unwrap();
            hints.hint(conv);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.got.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "the good conversation was held up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*sink.got.lock().unwrap(), vec![(good, 1), (good, 2)]);
        task.abort();
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let cfg = FeedConfig {
            retry_first: Duration::from_millis(100),
            retry_max: Duration::from_millis(350),
            ..FeedConfig::default()
        };
        let mut b = Backoff::new(&cfg);
        let waits: Vec<u128> = (0..4).map(|_| b.next().as_millis()).collect();
        for (w, base) in waits.iter().zip([100u128, 200, 350, 350]) {
            assert!(*w >= base * 8 / 10 && *w <= base * 12 / 10, "{waits:?}");
        }
    }
}
