//! The syncer thread: makes logged batches durable while the writer goes on.
//!
//! The writer writes a batch's records to the message log, commits its redb
//! transaction without durability and hands the batch's answers here; this
//! thread calls `fdatasync` once for every batch queued meanwhile and then
//! answers them. So the writer applies the next batch during the sync, and
//! one sync serves several batches.
//!
//! A batch is visible to redb readers from its commit on, before it is
//! synced: [`Visibility`] holds readers back. The writer announces a
//! batch's sequence number *before* committing it; a reader takes its redb
//! snapshot first, then waits until every announced batch is synced, so it
//! never returns what a crash could still take back (and whose id would be
//! given to another message). Reads of tables no logged batch writes (the
//! directory, sessions, contacts, moderation) cannot see such data and do
//! not wait (`EmbeddedStore::read_durable`).

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Condvar, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::ops::Reply;
use crate::store::{StoreError, StoreResult};

/// An answer to send once its batch is synced.
pub(super) type Answer =
    (oneshot::Sender<StoreResult<Reply>>, Option<OwnedSemaphorePermit>, StoreResult<Reply>);

/// A committed, logged batch waiting for its sync.
pub(super) struct SyncJob {
    /// The batch's announced sequence number.
    pub seq: u64,
    /// Which of the two log files its records went to.
    pub file: usize,
    /// Its answers (none for a batch that failed and was rolled back).
    pub answers: Vec<Answer>,
}

/// Which logged batches readers may see.
#[derive(Default)]
pub(super) struct Visibility {
    announced: AtomicU64,
    synced: Mutex<Synced>,
    changed: Condvar,
}

#[derive(Default)]
struct Synced {
    seq: u64,
    failed: Option<String>,
}

impl Visibility {
    /// Called by the writer just before committing a logged batch: its
    /// sequence number.
    pub fn announce(&self) -> u64 {
        self.announced.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Blocks until every batch announced so far is synced. Call after
    /// taking a read snapshot. `Err` once a sync has failed.
    pub fn wait_until_synced(&self) -> StoreResult<()> {
        let want = self.announced.load(Ordering::SeqCst);
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(why) = &synced.failed {
                return Err(StoreError::Backend(why.clone()));
            }
            if synced.seq >= want {
                return Ok(());
            }
            synced = self.changed.wait(synced).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Why the store stopped, if a sync failed.
    pub fn failure(&self) -> Option<String> {
        self.synced.lock().unwrap_or_else(|p| p.into_inner()).failed.clone()
    }

    /// Stops the store: every waiting and later reader gets `why`.
    pub fn fail(&self, why: String) {
        self.set(u64::MAX, Some(why));
    }

    fn set(&self, seq: u64, failed: Option<String>) {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        synced.seq = synced.seq.max(seq);
        if failed.is_some() && synced.failed.is_none() {
            synced.failed = failed;
        }
        self.changed.notify_all();
    }
}

/// Runs until the writer is gone: one `fdatasync` of each log file the
/// jobs queued wrote to, then their answers. A failed sync stops the
/// store: what it held may be lost, and later batches were built on it.
pub(super) fn run(files: [File; 2], jobs: Receiver<SyncJob>, visibility: &Visibility) {
    /// Wakes every reader when this thread ends, however it ends (the
    /// writer stopped or panicked, or this thread panicked): nothing will
    /// be synced any more.
    struct Stopped<'a>(&'a Visibility);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.fail("store stopped".into());
        }
    }
    let _stopped = Stopped(visibility);
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        let seq = batch.iter().map(|j| j.seq).max().unwrap_or(0);
        let failed = match visibility.failure() {
            Some(why) => Some(why),
            None => files
                .iter()
                .enumerate()
                .filter(|(i, _)| batch.iter().any(|j| j.file == *i))
                .find_map(|(_, file)| file.sync_data().err())
                .map(|e| {
                    let why = format!("message log sync failed ({e}); restart the server");
                    tracing::error!("{why}");
                    why
                }),
        };
        visibility.set(seq, failed.clone());
        for job in batch {
            for (reply, _slot, result) in job.answers {
                let result = match &failed {
                    Some(why) => Err(StoreError::Backend(why.clone())),
                    None => result,
                };
                let _ = reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn readers_wait_for_every_announced_batch() {
        let v = Arc::new(Visibility::default());
        v.wait_until_synced().unwrap();
        let (a, b) = (v.announce(), v.announce());
        assert_eq!((a, b), (1, 2));
        let reader = {
            let v = v.clone();
            std::thread::spawn(move || v.wait_until_synced())
        };
        v.set(1, None);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "batch 2 is not synced yet");
        v.set(2, None);
        reader.join().unwrap().unwrap();
        // A failed sync wakes waiters with the error and stays.
        v.announce();
        let reader = {
            let v = v.clone();
            std::thread::spawn(move || v.wait_until_synced())
        };
        v.set(3, Some("disk gone".into()));
        assert!(matches!(reader.join().unwrap(), Err(StoreError::Backend(m)) if m == "disk gone"));
        assert!(v.wait_until_synced().is_err());
    }
}
