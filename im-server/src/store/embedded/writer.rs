//! The writer thread: applies queued requests in batches (group commit).
//!
//! A batch of only plain appends is logged ([`MessageLog`]) and kept in the
//! tail ([`Tails`]) without touching redb. The tail is applied to redb in
//! one transaction for thousands of appends by the applier thread
//! (`applier.rs`) while the writer goes on: it freezes the tail, starts a
//! new one, and forgets the frozen one once its commit is visible. Every
//! other batch waits for the applier and applies both tails in its own
//! transaction first. A batch of only appends and read marks is logged and
//! committed without durability; every other batch commits durably.
//!
//! A checkpoint (a durable commit) follows at least every
//! [`CHECKPOINT_COMMITS`] non-durable commits, [`CHECKPOINT_APPENDS`]
//! logged appends or [`CHECKPOINT_INTERVAL`]. It runs on the applier too:
//! the writer switches to the other of the two log files (`<db>.log`,
//! `<db>.log2`), whose epoch it makes the newer, freezes the tail, and the
//! applier commits it durably; only then is the first file cleared. So a
//! crash replays the older file, then the newer. Either way a request is
//! answered only after it is on disk — except a read mark, which is not
//! logged: it becomes durable with the next checkpoint, so a crash may
//! lose the last `CHECKPOINT_INTERVAL` of read marks (never a message, nor
//! the read id an append raises, which replay restores).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::applier::{self, Applied, ApplyJob};
use super::behind::{append_behind, Snapshot};
use super::erasure::SenderConvs;
use super::log::MessageLog;
use super::ops::{Op, Reply};
use super::syncer::{self, SyncJob, Visibility};
use super::tables::Tables;
use super::tail::{Tail, Tails};
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
/// How often the writer looks whether the applier is done while it works
/// and no request comes.
const APPLIER_POLL: Duration = Duration::from_millis(2);

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
    /// The two log files; appends go to `logs[active]`.
    logs: [MessageLog; 2],
    active: usize,
    /// The other log holds records not durable in redb yet (a background
    /// checkpoint is under way, or failed).
    retired_live: bool,
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
    tail: Arc<RwLock<Tails>>,
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
    /// The applier thread (taken at shutdown).
    applier: Option<Background>,
}

/// The applier thread, its queues, and what it is doing.
struct Background {
    jobs: mpsc::Sender<ApplyJob>,
    done: Receiver<Applied>,
    thread: JoinHandle<()>,
    in_flight: Option<Kind>,
}

/// What the applier was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Apply the frozen tail without durability.
    Drain,
    /// Apply it durably, after which the retired log is cleared.
    Checkpoint,
}

impl Drop for Writer {
    /// A writer dropped without [`run`](Writer::run) (tests) still ends its
    /// threads, which hold the database.
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// How a batch's answers go out.
enum Answered {
    /// Now: the batch is durable (or failed).
    Now(Vec<StoreResult<Reply>>),
    /// By the syncer, once the log is synced past this sequence number.
    AfterSync(u64, Vec<StoreResult<Reply>>),
}

impl Writer {
    /// A writer on `db` whose logs have been replayed into it (see
    /// [`super::replay`]; `logs[0]` is written first, and `logs[1]`'s epoch
    /// is above it), with its syncer and applier threads; readers consult
    /// `visibility` and `tail`.
    pub fn new(
        db: Arc<Database>,
        logs: [MessageLog; 2],
        visibility: Arc<Visibility>,
        tail: Arc<RwLock<Tails>>,
        tail_age: Duration,
    ) -> std::io::Result<Self> {
        let files = [logs[0].sync_handle()?, logs[1].sync_handle()?];
        let (jobs, rx) = mpsc::channel();
        let shared = visibility.clone();
        let thread = std::thread::Builder::new()
            .name("im-store-sync".into())
            .spawn(move || syncer::run(files, rx, &shared))?;
        let (apply_jobs, apply_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let applier_db = db.clone();
        let applier_thread = std::thread::Builder::new()
            .name("im-store-apply".into())
            .spawn(move || applier::run(applier_db, apply_rx, done_tx))?;
        Ok(Self {
            db,
            logs,
            active: 0,
            retired_live: false,
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
            applier: Some(Background { jobs: apply_jobs, done, thread: applier_thread, in_flight: None }),
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
        self.stop_threads();
    }

    /// Ends the applier and syncer threads (each after its queue).
    fn stop_threads(&mut self) {
        if let Some(applier) = self.applier.take() {
            drop(applier.jobs);
            if applier.thread.join().is_err() {
                tracing::error!("store apply thread panicked");
            }
        }
        if let Some((jobs, thread)) = self.syncer.take() {
            drop(jobs);
            if thread.join().is_err() {
                tracing::error!("store sync thread panicked");
            }
        }
    }

    /// How long until a checkpoint or a drain of the tail is due, if one
    /// will be (or until the applier is looked at again, while it works).
    fn next_due(&self) -> Option<Duration> {
        if self.applying() {
            return Some(APPLIER_POLL);
        }
        let checkpoint = self.logged_since.map(|since| CHECKPOINT_INTERVAL.saturating_sub(since.elapsed()));
        let retry = self.tail_retry_at.map(|at| at.saturating_duration_since(Instant::now()));
        let tails = self.tail_read();
        let drain = match &tails.applying {
            Some(_) => Some(Duration::ZERO),
            None => tails.current.due_in(self.tail_age),
        };
        let drain = drain.map(|d| d.max(retry.unwrap_or_default()));
        match (checkpoint, drain) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hears from the applier; then starts a checkpoint when one is due,
    /// else a drain of the tail when it is due (one job at a time).
    fn maintain(&mut self) {
        self.hear_applier(false);
        if self.applying() {
            return;
        }
        let checkpoint_due = self.logged_commits >= CHECKPOINT_COMMITS
            || self.logged >= CHECKPOINT_APPENDS
            || self.logged_since.is_some_and(|since| since.elapsed() >= CHECKPOINT_INTERVAL);
        let retry_due = self.tail_retry_at.is_none_or(|at| Instant::now() >= at);
        let (frozen, drain_due) = {
            let tails = self.tail_read();
            (tails.applying.is_some(), tails.current.due(self.tail_age))
        };
        if checkpoint_due {
            if self.retired_live || frozen {
                // Something failed before: everything at once, here.
                self.checkpoint_logged("due");
            } else {
                self.start(Kind::Checkpoint);
            }
        } else if retry_due && (frozen || drain_due) {
            self.start(Kind::Drain);
        }
    }

    /// Whether the applier is working on a job.
    fn applying(&self) -> bool {
        self.applier.as_ref().is_some_and(|a| a.in_flight.is_some())
    }

    /// Freezes the tail (a checkpoint also switches log files) and hands
    /// it to the applier. A frozen tail left by a failed drain is handed
    /// over again as it is.
    fn start(&mut self, kind: Kind) {
        if let Some(why) = self.stopped() {
            tracing::debug!(why, "store stopped: the tail is not applied");
            // Asked again an interval later, not in a busy loop.
            self.tail_retry_at = Some(Instant::now() + CHECKPOINT_INTERVAL);
            return;
        }
        if kind == Kind::Checkpoint {
            let (old, new) = (self.active, 1 - self.active);
            if self.logs[new].epoch() <= self.logs[old].epoch() {
                if let Err(e) = self.logs[new].clear_after(self.logs[old].epoch()) {
                    self.fail(format!("message log epoch cannot be started ({e}); restart the server"));
                    return;
                }
            }
            self.active = new;
            self.retired_live = true;
            self.logged = 0;
            self.logged_commits = 0;
            self.logged_since = None;
        }
        let frozen = {
            let mut tails = self.tail_write();
            match &tails.applying {
                Some(frozen) => frozen.clone(),
                None => {
                    let frozen = Arc::new(std::mem::take(&mut tails.current));
                    tails.applying = Some(frozen.clone());
                    frozen
                }
            }
        };
        let durability = if kind == Kind::Checkpoint { Durability::Immediate } else { Durability::None };
        let sent = match &mut self.applier {
            Some(a) => {
                let sent = a.jobs.send(ApplyJob { tail: frozen, durability }).is_ok();
                if sent {
                    a.in_flight = Some(kind);
                }
                sent
            }
            None => false,
        };
        if !sent {
            self.fail("store apply thread stopped; restart the server".into());
        }
    }

    /// Takes the applier's answer, if there is one (waiting for it when
    /// `wait`): a frozen tail that is in redb now is forgotten, a
    /// checkpoint's retired log is cleared.
    fn hear_applier(&mut self, wait: bool) {
        let Some(a) = &mut self.applier else { return };
        let Some(kind) = a.in_flight else { return };
        let applied = if wait {
            match a.done.recv() {
                Ok(applied) => applied,
                Err(_) => Applied { result: Err("store apply thread stopped".into()) },
            }
        } else {
            match a.done.try_recv() {
                Ok(applied) => applied,
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    Applied { result: Err("store apply thread stopped".into()) }
                }
            }
        };
        a.in_flight = None;
        if let Err(e) = applied.result {
            tracing::error!(error = %e, ?kind, "applying the store's tail failed; the message log keeps the appends");
            // Not again in a busy loop (e.g. disk full): an interval later.
            self.tail_retry_at = Some(Instant::now() + CHECKPOINT_INTERVAL);
            if kind == Kind::Checkpoint {
                // A checkpoint is still owed, also when no append comes.
                self.logged_since = Some(Instant::now());
            }
            return;
        }
        self.tail_retry_at = None;
        self.snapshot = None;
        self.tail_write().applying = None;
        match kind {
            Kind::Drain => self.logged_commits += 1,
            Kind::Checkpoint => self.retire(),
        }
    }

    /// The records of the log that is not active are durable in redb
    /// now: its epoch is cleared (above the active one's).
    fn retire(&mut self) {
        let (retired, active) = (1 - self.active, self.active);
        let above = self.logs[active].epoch();
        if let Err(e) = self.logs[retired].clear_after(above) {
            self.fail(format!("message log epoch cannot be started ({e}); restart the server"));
            return;
        }
        self.retired_live = false;
    }

    /// Waits until the applier is idle (before a transaction of the
    /// writer's own: redb has one writer at a time, and the writer's
    /// transaction takes over a frozen tail the applier failed to apply).
    fn settle(&mut self) {
        self.hear_applier(true);
    }

    fn tail_read(&self) -> std::sync::RwLockReadGuard<'_, Tails> {
        self.tail.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tail_write(&self) -> std::sync::RwLockWriteGuard<'_, Tails> {
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
            && !self.tail_read().current.full()
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
                self.hand_to_syncer(SyncJob { seq, file: self.active, answers });
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
        self.settle();
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
            // Everything the tails hold comes first, so the batch sees it.
            if let Some(frozen) = &tail.applying {
                t.drain(frozen, &mut self.senders)?;
            }
            t.drain(&tail.current, &mut self.senders)?;
            let mut log = logged.then_some(&mut self.logs[self.active]);
            for op in ops {
                results.push(t.apply(op, log.as_deref_mut(), &mut self.senders)?);
            }
            Ok::<(), DbError>(())
        })();
        drop(tail);
        if let Err(e) = applied {
            self.logs[self.active].discard();
            self.senders.discard();
            return Err(e);
        }
        if !logged {
            self.logs[self.active].discard();
            self.snapshot = None;
            if let Err(e) = txn.commit() {
                self.senders.discard();
                return Err(e.into());
            }
            self.senders.committed();
            if drained {
                *self.tail_write() = Tails::default();
            }
            self.after_durable_commit();
            if erases {
                for i in 0..2 {
                    if let Err(e) = self.logs[i].erase() {
                        self.fail(format!(
                            "message log cannot be erased after a recall ({e}); restart the server"
                        ));
                    }
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
            self.hand_to_syncer(SyncJob { seq, file: self.active, answers: Vec::new() });
            return Err(e.into());
        }
        self.senders.committed();
        if drained {
            *self.tail_write() = Tails::default();
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
        let log = &mut self.logs[self.active];
        let fresh = log.pending_records();
        let mark = log.end();
        if let Err(e) = log.write_unsynced() {
            if log.sync_failed() {
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
        if let Err(e) = self.logs[self.active].rollback(mark) {
            self.fail(format!("message log cannot be rolled back ({e}); restart the server"));
        }
    }

    /// Makes everything committed so far, and the tails, durable in redb
    /// here and now, and empties both logs.
    fn checkpoint(&mut self) -> Result<(), DbError> {
        if let Some(why) = self.stopped() {
            // What was answered with an error must not become durable now.
            return Err(DbError(why));
        }
        self.settle();
        if self.logged_since.is_none() && !self.retired_live && self.tail_read().is_empty() {
            return Ok(());
        }
        self.commit_tails(Durability::Immediate)?;
        self.after_durable_commit();
        Ok(())
    }

    /// Applies the tails to redb here, without durability (the logs hold
    /// them), for a read that does not merge them.
    fn drain(&mut self) -> Result<(), DbError> {
        if let Some(why) = self.stopped() {
            return Err(DbError(why));
        }
        self.settle();
        if self.tail_read().is_empty() {
            return Ok(());
        }
        self.commit_tails(Durability::None)?;
        self.logged_commits += 1;
        Ok(())
    }

    /// One transaction applying both tails (possibly empty), committed
    /// with `durability`; they are forgotten once the commit is visible.
    /// The applier must be idle ([`settle`](Self::settle)).
    fn commit_tails(&mut self, durability: Durability) -> Result<(), DbError> {
        let started = Instant::now();
        self.senders.discard();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        let tail = self.tail.clone();
        let held = tail.read().unwrap_or_else(|p| p.into_inner());
        let appends = held.current.len() + held.applying.as_ref().map_or(0, |a| a.len());
        let applied = (|| {
            let mut t = Tables::open(&txn);
            if let Some(frozen) = &held.applying {
                t.drain(frozen, &mut self.senders)?;
            }
            t.drain(&held.current, &mut self.senders)
        })();
        drop(held);
        self.snapshot = None;
        if let Err(e) = applied.and_then(|()| txn.commit().map_err(DbError::from)) {
            self.senders.discard();
            return Err(e);
        }
        self.senders.committed();
        if appends > 0 {
            *self.tail_write() = Tails::default();
            tracing::debug!(appends, durable = ?durability, took = ?started.elapsed(), "applied the tail here");
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
            let log = &mut self.logs[self.active];
            for op in ops {
                let Op::Append(m) = op else {
                    built = Err(DbError("only appends go to the tail".into()));
                    break;
                };
                match append_behind(&snapshot, &tail, &mut staged, log, m) {
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
            self.logs[self.active].discard();
            return Err(e);
        }
        let (fresh, _) = self.write_log()?;
        // Announced before readers can find the messages in the tail: those
        // that do wait for its sync.
        let seq = self.visibility.announce();
        self.tail_write().current.absorb(staged);
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

    /// After a durable commit of everything (the applier idle): both
    /// logs start new epochs, the other one's above the active one's.
    fn after_durable_commit(&mut self) {
        self.logged = 0;
        self.logged_commits = 0;
        self.logged_since = None;
        if let Err(e) = self.logs[self.active].clear() {
            // The new epoch's header may or may not be on disk: records
            // written after it could be skipped by a replay.
            self.fail(format!("message log epoch cannot be started ({e}); restart the server"));
            return;
        }
        if self.retired_live {
            self.retire();
        }
    }
}
