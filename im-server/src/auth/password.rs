//! Password hashing with Argon2id on a small pool of dedicated threads.
//!
//! Argon2 is memory-hard on purpose: every hash fills `m_cost` KiB of
//! scratch memory (19 MiB with the recommended parameters). Allocating that
//! per hash on tokio's blocking pool left one freed-but-kept 19 MiB arena per
//! blocking thread in the allocator, so RSS grew by hundreds of MiB after a
//! few hundred logins. Here each of the pool's threads (one per CPU) owns one
//! scratch buffer for the configured parameters and reuses it for every
//! hash: the memory is bounded by `threads × m_cost` and is allocated on the
//! first login, not before.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::AuthError;

/// Longest a login or registration waits for a hashing slot.
pub const HASH_WAIT: Duration = Duration::from_secs(5);

/// Stored hashes whose memory cost exceeds this many KiB are refused rather
/// than computed (a corrupt or hostile row must not allocate gigabytes).
const MAX_VERIFY_M_COST_KIB: u32 = 256 * 1024;

/// Hashes and checks passwords with Argon2id, off the async runtime, at
/// most one per CPU at a time: a flood of logins queues here (and fails with
/// `unavailable` after [`HASH_WAIT`]) instead of filling the blocking pool
/// that storage reads share. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    params: Params,
    pool: Arc<Pool>,
}

/// One unit of work for a hashing thread, with the slot it holds: the slot
/// is released by the thread once the work is done (or skipped), not when
/// the caller stops waiting, so callers that give up (a client that
/// disconnects mid-login) cannot pile up work beyond one job per slot.
struct Job {
    work: Work,
    _slot: OwnedSemaphorePermit,
}

enum Work {
    Hash { password: String, reply: oneshot::Sender<Result<String, AuthError>> },
    Verify { password: String, phc: String, reply: oneshot::Sender<Result<bool, AuthError>> },
}

/// The hashing threads, started on first use, and the slots that bound
/// how many callers hand them work at once.
#[derive(Debug)]
struct Pool {
    slots: Arc<Semaphore>,
    threads: usize,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Pool {
    fn new() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Pool { slots: Arc::new(Semaphore::new(threads)), threads, jobs: Mutex::new(None) }
    }

    /// Queues a job, starting the threads the first time.
    fn submit(&self, params: &Params, job: Job) -> Result<(), AuthError> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..self.threads {
                let (rx, params) = (rx.clone(), params.clone());
                std::thread::Builder::new()
                    .name(format!("im-hash-{i}"))
                    .spawn(move || hash_thread(&params, &rx))
                    .map_err(|e| AuthError::Backend(format!("password hashing thread: {e}")))?;
            }
            *jobs = Some(tx);
        }
        let tx = jobs.as_ref().expect("started above");
        tx.send(job).map_err(|_| AuthError::Backend("password hashing threads stopped".into()))
    }
}

/// Runs jobs until every sender is gone, reusing one scratch buffer.
fn hash_thread(params: &Params, jobs: &Mutex<mpsc::Receiver<Job>>) {
    let mut scratch: Vec<Block> = Vec::new();
    loop {
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A caller that stopped waiting needs no answer: skip the work.
        match job.work {
            Work::Hash { password, reply } if !reply.is_closed() => {
                let _ = reply.send(hash_with(params, &password, &mut scratch));
            }
            Work::Verify { password, phc, reply } if !reply.is_closed() => {
                let _ = reply.send(verify_with(params, &password, &phc, &mut scratch));
            }
            _ => {}
        }
    }
}

/// The scratch blocks for `params`: the thread's own buffer when the
/// parameters are the configured ones, else a temporary one.
fn with_blocks<T>(
    configured: &Params,
    params: &Params,
    scratch: &mut Vec<Block>,
    f: impl FnOnce(&mut [Block]) -> T,
) -> T {
    let n = params.block_count();
    if n == configured.block_count() {
        if scratch.len() != n {
            *scratch = vec![Block::default(); n];
        }
        f(scratch)
    } else {
        f(&mut vec![Block::default(); n])
    }
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn backend(what: &str, e: impl std::fmt::Display) -> AuthError {
    AuthError::Backend(format!("{what}: {e}"))
}

/// A PHC string for `password` with a fresh random salt.
fn hash_with(params: &Params, password: &str, scratch: &mut Vec<Block>) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).map_err(|e| backend("salt", e))?;
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let hasher = argon2(params.clone());
    let output = with_blocks(params, params, scratch, |blocks| {
        Output::init_with(len, |out| {
            hasher
                .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *blocks)
                .map_err(|_| argon2::password_hash::Error::Crypto)
        })
    })
    .map_err(|e| backend("password hashing", e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| backend("password hashing", e))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches `phc`, computed with the parameters stored in
/// `phc` (so raising the cost later keeps old hashes valid). The final
/// comparison is constant-time ([`Output`]'s equality).
fn verify_with(
    configured: &Params,
    password: &str,
    phc: &str,
    scratch: &mut Vec<Block>,
) -> Result<bool, AuthError> {
    let stored = PasswordHash::new(phc).map_err(|e| backend("stored password hash", e))?;
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(|e| backend("stored password hash", e))?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| backend("stored password hash", e))?
        .unwrap_or_default();
    let params = Params::try_from(&stored).map_err(|e| backend("stored password hash", e))?;
    if params.m_cost() > MAX_VERIFY_M_COST_KIB {
        return Err(AuthError::Backend("stored password hash: memory cost too large".into()));
    }
    let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else {
        return Err(AuthError::Backend("stored password hash: no salt or hash".into()));
    };
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| backend("stored password hash", e))?;
    let hasher = Argon2::new(algorithm, version, params.clone());
    let actual = with_blocks(configured, &params, scratch, |blocks| {
        Output::init_with(expected.len(), |out| {
            hasher
                .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *blocks)
                .map_err(|_| argon2::password_hash::Error::Crypto)
        })
    })
    .map_err(|e| backend("password verification", e))?;
    Ok(actual == expected)
}

impl Default for PasswordHasher {
    /// Argon2's recommended defaults (19 MiB, 2 passes, 1 lane).
    fn default() -> Self {
        Self::from_params(Params::default())
    }
}

impl PasswordHasher {
    /// A hasher with explicit cost: memory in KiB, passes and lanes. Small
    /// values make tests fast; production should keep the defaults or more.
    pub fn with_params(m_cost_kib: u32, t_cost: u32, p: u32) -> Result<Self, argon2::Error> {
        Ok(Self::from_params(Params::new(m_cost_kib, t_cost, p, None)?))
    }

    fn from_params(params: Params) -> Self {
        let pool = Arc::new(Pool::new());
        PasswordHasher { params, pool }
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, AuthError> {
        match tokio::time::timeout(HASH_WAIT, self.pool.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(AuthError::Backend("password hashing is saturated, retry later".into())),
        }
    }

    async fn run<T>(
        &self,
        work: impl FnOnce(oneshot::Sender<Result<T, AuthError>>) -> Work,
    ) -> Result<T, AuthError> {
        let slot = self.slot().await?;
        let (reply, answer) = oneshot::channel();
        self.pool.submit(&self.params, Job { work: work(reply), _slot: slot })?;
        answer.await.map_err(|_| AuthError::Backend("password hashing thread failed".into()))?
    }

    /// Hashes `password` with a fresh random salt into a PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let password = password.to_owned();
        self.run(|reply| Work::Hash { password, reply }).await
    }

    /// Whether `password` matches the PHC string `phc` (with the parameters
    /// stored in `phc`). A malformed `phc` is a back-end error, not a mismatch.
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, AuthError> {
        let (password, phc) = (password.to_owned(), phc.to_owned());
        self.run(|reply| Work::Verify { password, phc, reply }).await
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    #[tokio::test]
    async fn password_hash_and_verify() {
        let hasher = PasswordHasher::with_params(64, 1, 1).unwrap();
        let phc = hasher.hash("correct horse").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(hasher.verify("correct horse", &phc).await.unwrap());
        assert!(!hasher.verify("wrong horse", &phc).await.unwrap());
        assert_ne!(hasher.hash("correct horse").await.unwrap(), phc, "salts differ");
        assert!(matches!(hasher.verify("x", "not a phc").await, Err(AuthError::Backend(_))));
    }

    #[tokio::test]
    async fn interoperates_with_the_argon2_crate_both_ways() {
        // Hashes made by the crate's own PHC API (as earlier versions stored
        // them), with other parameters than the hasher's, still verify…
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(128, 2, 1, None).unwrap())
            .hash_password(b"pw-1", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        let hasher = PasswordHasher::with_params(64, 1, 1).unwrap();
        assert!(hasher.verify("pw-1", &theirs).await.unwrap());
        assert!(!hasher.verify("pw-2", &theirs).await.unwrap());
        // …and ours verify with the crate.
        let ours = hasher.hash("pw-3").await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw-3", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"pw-4", &parsed).is_err());
    }

    #[tokio::test]
    async fn abandoned_hashes_give_their_slots_back_once_skipped_or_done() {
        let hasher = PasswordHasher::with_params(64, 1, 1).unwrap();
        // Callers that give up at once (a client gone mid-login).
        for _ in 0..50 {
            let h = hasher.clone();
            tokio::spawn(async move { h.hash("pw").await }).abort();
        }
        // Every slot comes back: nothing queued is left holding one.
        let threads = hasher.pool.threads as u32;
        let all =
            tokio::time::timeout(Duration::from_secs(10), hasher.pool.slots.acquire_many(threads)).await;
        assert!(all.is_ok(), "every slot is released");
        drop(all);
        assert!(hasher.verify("pw", &hasher.hash("pw").await.unwrap()).await.unwrap());
    }

    #[tokio::test]
    async fn refuses_absurd_stored_costs() {
        let hasher = PasswordHasher::with_params(64, 1, 1).unwrap();
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(matches!(hasher.verify("x", huge).await, Err(AuthError::Backend(_))));
    }
}
