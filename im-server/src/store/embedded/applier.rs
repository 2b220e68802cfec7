//! The applier thread: applies a frozen tail to redb (see `tail.rs`) in
//! one transaction, while the writer goes on logging appends into a new
//! tail. The writer sends one job at a time and learns how it went before
//! it forgets the frozen tail (readers find its messages there until the
//! commit is visible).

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use redb::{Database, Durability};

use super::erasure::SenderConvs;
use super::tables::Tables;
use super::tail::Tail;
use super::DbError;

/// A frozen tail to apply, and how durably.
pub(super) struct ApplyJob {
    pub tail: Arc<Tail>,
    /// `Immediate` for a checkpoint: every earlier non-durable commit becomes durable with it.
    pub durability: Durability,
}

/// How a job went.
pub(super) struct Applied {
    pub result: Result<(), String>,
}

/// Runs until the writer is gone, one job at a time.
pub(super) fn run(db: Arc<Database>, jobs: Receiver<ApplyJob>, done: Sender<Applied>) {
    // This thread's own memory of the sender index (pairs are never
    // removed from it, so two memories of it are both right).
    let mut senders = SenderConvs::default();
    while let Ok(job) = jobs.recv() {
        let started = Instant::now();
        let result = apply(&db, &job, &mut senders).map_err(|e| e.0);
        let took = started.elapsed();
        tracing::debug!(
            appends = job.tail.len(),
            durable = ?job.durability,
            ?took,
            ok = result.is_ok(),
            "applied the tail"
        );
        if done.send(Applied { result }).is_err() {
            break;
        }
    }
}

fn apply(db: &Database, job: &ApplyJob, senders: &mut SenderConvs) -> Result<(), DbError> {
    senders.discard();
    let mut txn = db.begin_write()?;
    txn.set_durability(job.durability)?;
    let applied = Tables::open(&txn).drain(&job.tail, senders);
    match applied.and_then(|()| txn.commit().map_err(DbError::from)) {
        Ok(()) => {
            senders.committed();
            Ok(())
        }
        Err(e) => {
            senders.discard();
            Err(e)
        }
    }
}
