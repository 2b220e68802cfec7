//! The writer thread: applies queued requests in batches (group commit).
//!
//! A batch of only plain appends is logged ([`MessageLog`]) and kept in the
//! [`Tail`] without touching redb; the tail is applied to redb later, in
//! one transaction for thousands of appends (see `tail.rs`). Every other
//! batch first applies the tail in its own redb write transaction. A batch
//! of only appends and read marks is logged and committed without
//! durability; every other batch, and a checkpoint at
//! least every [`CHECKPOINT_COMMITS`] logged batches, [`CHECKPOINT_APPENDS`]
//! logged appends or [`CHECKPOINT_INTERVAL`], commits durably and starts a
//! new epoch of the log. Either way a request is answered only after it is
//! on disk — except a read mark, which is not logged: it becomes durable
//! with the next checkpoint, so a crash may lose the last
//! `CHECKPOINT_INTERVAL` of read marks (never a message, nor the read id an
//! append raises, which replay restores).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use im_protocol::UserId;
use redb::{Database, Durability, ReadOnlyTable, ReadableTable};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::erasure::SenderConvs;
use super::log::{MessageLog, Record};
use super::ops::{Op, Reply};
use super::reads::{self, READS};
use super::syncer::{self, SyncJob, Visibility};
use super::tables::{last_id, Tables};
use super::tail::{Entry, Tail};
use super::*;

/// Most requests the writer applies in one transaction.
pub const MAX_BATCH: usize = 256;
/// Logged appends after which the next batch commits durably.
pub const CHECKPOINT_APPENDS: usize = 8192;
/// Non-durable commits after which the next batch commits durably: redb's
/// reads and writes get dearer the more non-durable commits wait for a
/// durable one (measured: group fan-out, which reads the member list per
/// send, lost half its rate with hundreds of them).
pub const CHECKPOINT_COMMITS: usize = 32;
/// Longest an append stays durable only in the log: a durable commit
/// follows within this time, also when no more requests come.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// A queued request: the op, where to answer, and the queue slot it holds.
pub(super) struct Job {
    pub op: Op,
    pub reply: oneshot::Sender<StoreResult<Reply>>,
    /// Released once the job is answered (bounds the queue).
    pub _slot: Option<OwnedSemaphorePermit>,
}

/// The writer thread's state.
pub(super) struct Writer {
    db: Arc<Database>,
    log: MessageLog,
    /// Appends committed non-durably (only in the log) since the last
    /// durable commit, and when the first of them was.
    logged: usize,
    logged_commits: usize,
    logged_since: Option<Instant>,
    /// A log write could not be undone: the log may hold records whose ids
    /// were not committed, so nothing more may be written until a restart.
    broken: Option<String>,
    visibility: Arc<Visibility>,
    /// Appends logged but not applied to redb yet; shared with readers.
    tail: Arc<RwLock<Tail>>,
    /// Longest an append waits in the tail ([`super::TAIL_AGE`]).
    tail_age: Duration,
    /// Applying the tail failed: not tried again before this.
    tail_retry_at: Option<Instant>,
    /// A read snapshot of redb as the writer last committed it, for the
    /// lookups of appends that go to the tail (dropped at every commit).
    snapshot: Option<Snapshot>,
    /// Which (sender, conversation) pairs the sender index is known to
    /// hold: an append of a known pair writes nothing of the index.
    senders: SenderConvs,
    /// The syncer thread and its queue (taken at shutdown).
    syncer: Option<(mpsc::Sender<SyncJob>, JoinHandle<()>)>,
}

/// How a batch's answers go out.
enum Answered {
    /// Now: the batch is durable (or failed).
    Now(Vec<StoreResult<Reply>>),
    /// By the syncer, once the log is synced past this sequence number.
    AfterSync(u64, Vec<StoreResult<Reply>>),
}

impl Writer {
    /// A writer on `db` whose log has been replayed into it (see
    /// [`replay`]), with its syncer thread; readers consult `visibility`.
    pub fn new(
        db: Arc<Database>,
        log: MessageLog,
        visibility: Arc<Visibility>,
        tail: Arc<RwLock<Tail>>,
        tail_age: Duration,
    ) -> std::io::Result<Self> {
        let file = log.sync_handle()?;
        let (jobs, rx) = mpsc::channel();
        let shared = visibility.clone();
        let thread = std::thread::Builder::new()
            .name("im-store-sync".into())
            .spawn(move || syncer::run(file, rx, &shared))?;
        Ok(Self {
            db,
            log,
            logged: 0,
            logged_commits: 0,
            logged_since: None,
            broken: None,
            visibility,
            tail,
            tail_age,
            tail_retry_at: None,
            snapshot: None,
            senders: SenderConvs::default(),
            syncer: Some((jobs, thread)),
        })
    }

    /// Runs until every sender of `rx` is gone, then checkpoints.
    pub fn run(mut self, rx: Receiver<Job>) {
        loop {
            let first = match self.next_due() {
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
                Some(due) => match rx.recv_timeout(due) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.maintain();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut batch = Vec::with_capacity(16);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
            self.maintain();
        }
        self.checkpoint_logged("shutdown");
        if let Some((jobs, thread)) = self.syncer.take() {
            drop(jobs);
            if thread.join().is_err() {
                tracing::error!("store sync thread panicked");
            }
        }
    }

    /// How long until a checkpoint or a drain of the tail is due, if one will be.
    fn next_due(&self) -> Option<Duration> {
        let checkpoint = self.logged_since.map(|since| CHECKPOINT_INTERVAL.saturating_sub(since.elapsed()));
        let retry = self.tail_retry_at.map(|at| at.saturating_duration_since(Instant::now()));
        let drain = self.tail_read().due_in(self.tail_age).map(|d| d.max(retry.unwrap_or_default()));
        match (checkpoint, drain) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Checkpoints when one is due, else drains the tail when it is due.
    fn maintain(&mut self) {
        let checkpoint_due = self.logged_commits >= CHECKPOINT_COMMITS
            || self.logged >= CHECKPOINT_APPENDS
            || self.logged_since.is_some_and(|since| since.elapsed() >= CHECKPOINT_INTERVAL);
        if checkpoint_due {
            self.checkpoint_logged("due");
        } else if self.tail_retry_at.is_none_or(|at| Instant::now() >= at)
            && self.tail_read().due(self.tail_age)
        {
            self.tail_retry_at = None;
            if let Err(e) = self.drain() {
                tracing::error!(error = %e.0, "applying the store's tail failed; the message log keeps the appends");
                // Not again in a busy loop (e.g. disk full): an interval later.
                self.tail_retry_at = Some(Instant::now() + CHECKPOINT_INTERVAL);
            }
        }
    }

    fn tail_read(&self) -> std::sync::RwLockReadGuard<'_, Tail> {
        self.tail.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tail_write(&self) -> std::sync::RwLockWriteGuard<'_, Tail> {
        self.tail.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a batch in one write transaction and commits it; answers
    /// each job once the batch is durable (here, or by the syncer).
    pub fn run_batch(&mut self, batch: Vec<Job>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|j| (j.op, (j.reply, j._slot))).unzip();
        let outcome = if ops.iter().all(|op| matches!(op, Op::Flush)) {
            self.checkpoint().map(|()| Answered::Now(ops.iter().map(|_| Ok(Reply::Unit)).collect()))
        } else if ops.iter().all(|op| matches!(op, Op::Drain)) {
            self.drain().map(|()| Answered::Now(ops.iter().map(|_| Ok(Reply::Unit)).collect()))
        } else if ops.iter().all(|op| matches!(op, Op::Append(NewMessage { target: None, .. })))
            // A tail that could not be drained takes no more: such a batch
            // goes the other way, which drains first (or fails).
            && !self.tail_read().full()
        {
            self.apply_behind(ops)
        } else {
            self.apply_all(ops)
        };
        match outcome {
            Ok(Answered::Now(results)) => {
                for ((reply, _slot), result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Ok(Answered::AfterSync(seq, results)) => {
                let answers = replies.into_iter().zip(results).map(|((r, s), res)| (r, s, res)).collect();
                self.hand_to_syncer(SyncJob { seq, answers });
            }
            Err(e) => {
                tracing::error!(error = %e.0, requests = replies.len(), "store write batch failed");
                for (reply, _slot) in replies {
                    let _ = reply.send(Err(StoreError::Backend(e.0.clone())));
                }
            }
        }
    }

    fn hand_to_syncer(&mut self, job: SyncJob) {
        let sent = match &self.syncer {
            Some((jobs, _)) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            // Its answers are dropped (callers see "writer stopped").
            self.fail("store sync thread stopped; restart the server".into());
        }
    }

    /// One transaction for all `ops`; an `Err` means nothing was committed.
    fn apply_all(&mut self, ops: Vec<Op>) -> Result<Answered, DbError> {
        if let Some(why) = self.stopped() {
            return Err(DbError(why));
        }
        // Read and delivered marks ride along non-durably: the next checkpoint (within
        // CHECKPOINT_INTERVAL) makes them durable, so a crash loses at most
        // that much of read state and never a message.
        // A mark without a device (a join starting at the head, the HTTP
        // API) is rare and must not be lost: it commits durably.
        // An event changes its target too, which a log record cannot
        // replay: such a batch commits durably.
        let loggable = ops.iter().all(|op| {
            matches!(
                op,
                Op::Append(NewMessage { target: None, .. })
                    | Op::MarkRead { device: Some(_), .. }
                    | Op::MarkDelivered { .. }
                    | Op::FeedAdvance { .. }
                    | Op::Drain
            )
        });
        // A recall erases content, which must not stay in the log's bytes either.
        let erases = ops
            .iter()
            .any(|op| matches!(op, Op::Append(m) if m.kind.as_deref() == Some(im_protocol::events::RECALL)));
        let logged = loggable
            && self.logged + ops.len() <= CHECKPOINT_APPENDS
            && self.logged_commits < CHECKPOINT_COMMITS
            && self.logged_since.is_none_or(|since| since.elapsed() < CHECKPOINT_INTERVAL);
        // The memory of the sender index takes in a batch's pairs only once
        // its transaction has committed (below); every failure drops them
        // (and, to be sure, so does the start of the next batch).
        self.senders.discard();
        let mut txn = self.db.begin_write()?;
        if logged {
            txn.set_durability(Durability::None)?;
        }
        let mut results = Vec::with_capacity(ops.len());
        let tail = self.tail.clone();
        let tail = tail.read().unwrap_or_else(|p| p.into_inner());
        let drained = !tail.is_empty();
        let applied = (|| {
            let mut t = Tables::open(&txn);
            // Everything the tail holds comes first, so the batch sees it.
            t.drain(&tail, &mut self.senders)?;
            let mut log = logged.then_some(&mut self.log);
            for op in ops {
                results.push(t.apply(op, log.as_deref_mut(), &mut self.senders)?);
            }
            Ok::<(), DbError>(())
        })();
        drop(tail);
        if let Err(e) = applied {
            self.log.discard();
            self.senders.discard();
            return Err(e);
        }
        if !logged {
            self.log.discard();
            self.snapshot = None;
            if let Err(e) = txn.commit() {
                self.senders.discard();
                return Err(e.into());
            }
            self.senders.committed();
            if drained {
                self.tail_write().clear();
            }
            self.after_durable_commit();
            if erases {
                if let Err(e) = self.log.erase() {
                    self.fail(format!(
                        "message log cannot be erased after a recall ({e}); restart the server"
                    ));
                }
            }
            return Ok(Answered::Now(results));
        }
        let (fresh, mark) = match self.write_log() {
            Ok(written) => written,
            Err(e) => {
                self.senders.discard();
                return Err(e);
            }
        };
        // Announced before the commit makes the batch visible: readers
        // that see it wait for its sync.
        let seq = self.visibility.announce();
        self.snapshot = None;
        if let Err(e) = txn.commit() {
            self.senders.discard();
            self.undo_log_write(mark);
            self.hand_to_syncer(SyncJob { seq, answers: Vec::new() });
            return Err(e.into());
        }
        self.senders.committed();
        if drained {
            self.tail_write().clear();
        }
        self.logged += fresh;
        self.logged_commits += 1;
        self.logged_since.get_or_insert_with(Instant::now);
        Ok(Answered::AfterSync(seq, results))
    }

    /// Writes the batch's pending records to the log (not synced yet):
    /// how many, and where they start (for an undo). A failed write is
    /// undone, or stops the store when it cannot be.
    fn write_log(&mut self) -> Result<(usize, u64), DbError> {
        let fresh = self.log.pending_records();
        let mark = self.log.end();
        if let Err(e) = self.log.write_unsynced() {
            if self.log.sync_failed() {
                self.fail(format!("message log sync failed ({e}); restart the server"));
            } else {
                self.undo_log_write(mark);
            }
            return Err(e.into());
        }
        Ok((fresh, mark))
    }

    /// Stops the store after a message log I/O error whose effect on disk is
    /// unknown (a failed sync may have lost synced-looking pages, a header
    /// may or may not have reached the disk): refuses every later write and
    /// fails every read, until a restart replays what is really there.
    fn fail(&mut self, why: String) {
        tracing::error!("{why}");
        self.visibility.fail(why.clone());
        self.broken = Some(why);
    }

    /// Why the store refuses writes, if it does.
    fn stopped(&self) -> Option<String> {
        self.broken.clone().or_else(|| self.visibility.failure())
    }

    /// Cuts the log back to `mark` after its batch failed; if even that
    /// fails, stops the store (see [`Writer::fail`]).
    fn undo_log_write(&mut self, mark: u64) {
        if let Err(e) = self.log.rollback(mark) {
            self.fail(format!("message log cannot be rolled back ({e}); restart the server"));
        }
    }

    /// Makes everything committed so far, and the tail, durable in redb
    /// and empties the log.
    fn checkpoint(&mut self) -> Result<(), DbError> {
        if let Some(why) = self.stopped() {
            // What was answered with an error must not become durable now.
            return Err(DbError(why));
        }
        if self.logged_since.is_none() {
            return Ok(());
        }
        self.commit_tail(Durability::Immediate)?;
        self.after_durable_commit();
        Ok(())
    }

    /// Applies the tail to redb without durability (the log holds it).
    fn drain(&mut self) -> Result<(), DbError> {
        if let Some(why) = self.stopped() {
            return Err(DbError(why));
        }
        if self.tail_read().is_empty() {
            return Ok(());
        }
        self.commit_tail(Durability::None)?;
        self.logged_commits += 1;
        Ok(())
    }

    /// One transaction applying the tail (possibly empty), committed with
    /// `durability`; the tail is cleared once the commit is visible.
    fn commit_tail(&mut self, durability: Durability) -> Result<(), DbError> {
        let started = Instant::now();
        self.senders.discard();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        let tail = self.tail.clone();
        let held = tail.read().unwrap_or_else(|p| p.into_inner());
        let drained = !held.is_empty();
        let applied = Tables::open(&txn).drain(&held, &mut self.senders);
        drop(held);
        self.snapshot = None;
        if let Err(e) = applied.and_then(|()| txn.commit().map_err(DbError::from)) {
            self.senders.discard();
            return Err(e);
        }
        self.senders.committed();
        if drained {
            let appends = std::mem::take(&mut *self.tail_write()).len();
            tracing::debug!(appends, durable = ?durability, took = ?started.elapsed(), "applied the tail");
        }
        Ok(())
    }

    /// A batch of plain appends: ids given, records logged and the
    /// messages put in the tail; redb is not touched (see `tail.rs`).
    fn apply_behind(&mut self, ops: Vec<Op>) -> Result<Answered, DbError> {
        if let Some(why) = self.stopped() {
            return Err(DbError(why));
        }
        let snapshot = match self.snapshot.take() {
            Some(s) => s,
            None => Snapshot::open(&self.db)?,
        };
        let mut staged = Tail::default();
        let mut results = Vec::with_capacity(ops.len());
        let mut built = Ok(());
        {
            let tail = self.tail.read().unwrap_or_else(|p| p.into_inner());
            for op in ops {
                let Op::Append(m) = op else {
                    built = Err(DbError("only appends go to the tail".into()));
                    break;
                };
                match append_behind(&snapshot, &tail, &mut staged, &mut self.log, m) {
                    Ok(result) => results.push(result),
                    Err(e) => {
                        built = Err(e);
                        break;
                    }
                }
            }
        }
        self.snapshot = Some(snapshot);
        if let Err(e) = built {
            self.log.discard();
            return Err(e);
        }
        let (fresh, _) = self.write_log()?;
        // Announced before readers can find the messages in the tail: those
        // that do wait for its sync.
        let seq = self.visibility.announce();
        self.tail_write().absorb(staged);
        self.logged += fresh;
        self.logged_since.get_or_insert_with(Instant::now);
        Ok(Answered::AfterSync(seq, results))
    }

    fn checkpoint_logged(&mut self, why: &str) {
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e.0, why, "store checkpoint failed; the message log keeps the appends");
            // Try again an interval later, not in a busy loop (e.g. disk full).
            self.logged_since = Some(Instant::now());
        }
    }

    fn after_durable_commit(&mut self) {
        self.logged = 0;
        self.logged_commits = 0;
        self.logged_since = None;
        if let Err(e) = self.log.clear() {
            // The new epoch's header may or may not be on disk: records
            // written after it could be skipped by a replay.
            self.fail(format!("message log epoch cannot be started ({e}); restart the server"));
        }
    }
}

/// The tables an append to the tail looks up, in a read snapshot of redb.
pub(super) struct Snapshot {
    messages: ReadOnlyTable<(&'static str, u64), &'static [u8]>,
    keys: ReadOnlyTable<(&'static str, u64, &'static str), u64>,
    event_counts: ReadOnlyTable<&'static str, u64>,
}

impl Snapshot {
    fn open(db: &Database) -> Result<Self, DbError> {
        use redb::ReadableDatabase as _;
        let txn = db.begin_read()?;
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            keys: txn.open_table(MSG_KEYS)?,
            event_counts: txn.open_table(EVENT_COUNTS)?,
        })
    }
}

/// What [`Tables`]'s append does, for the tail: a resend is answered with
/// the stored message (looked for in this batch, the tail, then redb);
/// anything else gets the conversation's next id, its record in the log
/// and its place in `staged`.
fn append_behind(
    redb: &Snapshot,
    tail: &Tail,
    staged: &mut Tail,
    log: &mut MessageLog,
    m: NewMessage,
) -> Result<StoreResult<Reply>, DbError> {
    let c = m.conv.to_string();
    let held =
        staged.sent(&c, m.from.0, m.cmid.as_str()).or_else(|| tail.sent(&c, m.from.0, m.cmid.as_str()));
    if let Some((id, value)) = held {
        let message = decode_msg(m.conv, id, &value)?;
        return Ok(Ok(Reply::Appended(Box::new(Appended { message, duplicate: true }))));
    }
    if let Some(id) = redb.keys.get((c.as_str(), m.from.0, m.cmid.as_str()))?.map(|g| g.value()) {
        let stored = redb.messages.get((c.as_str(), id))?;
        return Ok(match stored.map(|g| decode_msg(m.conv, id, g.value())) {
            Some(Ok(message)) => Ok(Reply::Appended(Box::new(Appended { message, duplicate: true }))),
            Some(Err(e)) => Err(e.into()),
            None => Err(StoreError::Backend(format!("idempotency key of {c} names missing message {id}"))),
        });
    }
    let (newer, older) = (staged.conv(&c), tail.conv(&c));
    let head = match newer.and_then(|t| t.head()).or_else(|| older.and_then(|t| t.head())) {
        Some(head) => head,
        None => last_id(&redb.messages, &c)?,
    };
    let events = match newer.and_then(|t| t.events()).or_else(|| older.and_then(|t| t.events())) {
        Some(events) => events,
        None => redb.event_counts.get(c.as_str())?.map_or(0, |g| g.value()),
    };
    let id = head + 1;
    let message = m.into_message(id);
    let event = message.is_event();
    let events = events + u64::from(event);
    let value = encode_msg(&message, id - events)?;
    log.push(&c, id, &value);
    let cmid = message.cmid.as_str().to_owned();
    staged.push(Entry { conv: c, id, from: message.from, cmid, value, events: event.then_some(events) });
    Ok(Ok(Reply::Appended(Box::new(Appended { message, duplicate: false }))))
}

/// A log that does not belong to this database (e.g. an older backup of
/// `im.redb` restored next to a newer log): refuse to open rather than
/// mix histories or leave gaps.
fn mismatch(r: &Record, why: &str) -> DbError {
    DbError(format!(
        "message log does not match the database: record {}#{}: {why}; move the .log file away to open without it",
        r.conv, r.id
    ))
}

/// Puts the log's records that redb does not have yet into it, durably.
/// Returns how many were missing.
pub(super) fn replay(db: &Database, records: &[Record]) -> Result<usize, DbError> {
    if records.is_empty() {
        return Ok(0);
    }
    let txn = db.begin_write()?;
    let mut restored = 0;
    {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut keys = txn.open_table(MSG_KEYS)?;
        let mut read = txn.open_table(READS)?;
        let mut sender_convs = txn.open_table(super::erasure::SENDER_CONVS)?;
        let mut event_counts = txn.open_table(EVENT_COUNTS)?;
        // The pairs this replay has made sure of (each is written once).
        let mut seen = std::collections::HashSet::new();
        for r in records {
            if let Some(stored) = messages.get((r.conv.as_str(), r.id))? {
                if stored.value() != r.value.as_slice() {
                    return Err(mismatch(r, "the database holds another message under its id"));
                }
                continue;
            }
            if last_id(&messages, &r.conv)? + 1 != r.id {
                return Err(mismatch(r, "it does not follow the conversation's last message"));
            }
            let m: MsgIn = serde_json::from_slice(&r.value)?;
            messages.insert((r.conv.as_str(), r.id), r.value.as_slice())?;
            keys.insert((r.conv.as_str(), m.f, m.c.as_str()), r.id)?;
            if seen.insert((m.f, r.conv.as_str())) {
                sender_convs.insert((m.f, r.conv.as_str()), ())?;
            }
            reads::raise(&mut read, UserId(m.f), &r.conv, r.id)?;
            // The value counts the countable messages up to it; the rest are events.
            let events = r.id.saturating_sub(m.n.unwrap_or(r.id));
            if events > 0 {
                event_counts.insert(r.conv.as_str(), events)?;
            }
            restored += 1;
        }
    }
    txn.commit()?;
    Ok(restored)
}
