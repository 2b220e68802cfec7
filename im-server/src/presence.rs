//! Presence: who is online, since when, and the grace period that keeps a
//! reconnecting user from flapping.
//!
//! [`PresenceStore`] is the seam (in memory here; Redis with TTLs in a
//! cluster). [`PresenceTracker`] holds the policy: a user goes online with
//! their first connection and offline only after their last connection has
//! been gone for the grace period; each real transition is reported once on
//! a channel that the logic fans out to the people who care.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use im_protocol::{Presence, PresenceStatus, UserId};
use tokio::sync::mpsc;

use crate::broker::ConnRef;
use crate::store::StoreResult;
use crate::time::now_ms;

/// A user's presence plus their live connection count (over all nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceRecord {
    /// What clients see.
    pub presence: Presence,
    /// Live connections; 0 while within the grace period after the last one.
    pub connections: u32,
}

/// Where presence lives.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Connection `conn` of `user` opened. Returns `true` if the user was
    /// offline (this is a transition to online).
    async fn connected(&self, user: UserId, conn: &ConnRef, now: u64) -> StoreResult<bool>;
    /// A connection of `user` closed. When it was the last one, returns
    /// `Some(epoch)`: the grace period starts, and [`settle`](Self::settle)
    /// with that epoch ends it. Each last-disconnect gets a new epoch, so a
    /// stale grace timer (the user came back and left again) settles nothing.
    async fn disconnected(&self, user: UserId, conn: &ConnRef, now: u64) -> StoreResult<Option<u64>>;
    /// Called when the grace period of `epoch` ends: if the user still has
    /// no connection, is online, and `epoch` is their latest, marks them
    /// offline and returns `true`.
    async fn settle(&self, user: UserId, epoch: u64) -> StoreResult<bool>;
    /// Records activity (a frame or heartbeat) of `conn` at `now`. A shared
    /// store also uses it to keep the connection counted as alive: a node
    /// that dies stops touching, and its connections expire.
    async fn touch(&self, user: UserId, conn: &ConnRef, now: u64) -> StoreResult<()>;
    /// Presence of each user, in the order given; unknown users are offline
    /// with `last_active_at: 0`.
    async fn query(&self, users: &[UserId]) -> StoreResult<Vec<PresenceRecord>>;
    /// Marks offline the users left online only by connections that expired
    /// without a disconnect (their node died), past the grace period, and
    /// returns them. A single-process store has nothing to sweep.
    async fn sweep(&self, _now: u64) -> StoreResult<Vec<Presence>> {
        Ok(Vec::new())
    }
    /// Keeps this node's live connections `conns` counted as alive (a shared
    /// store expires connections that are not refreshed). Returns those it no
    /// longer knew (expired while this node stalled), which the caller
    /// registers again if they are still open. A single-process store has
    /// nothing to refresh.
    async fn refresh(&self, _conns: &[(UserId, ConnRef)]) -> StoreResult<Vec<(UserId, ConnRef)>> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    connections: u32,
    online: bool,
    last_active_at: u64,
    epoch: u64,
}

/// In-process [`PresenceStore`] for a single node.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    users: Mutex<HashMap<UserId, Entry>>,
}

impl MemoryPresence {
    /// An empty presence table.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<UserId, Entry>) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut users)
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn connected(&self, user: UserId, _conn: &ConnRef, now: u64) -> StoreResult<bool> {
        Ok(self.with(|users| {
            let e = users.entry(user).or_default();
            e.connections += 1;
            e.last_active_at = now;
            let became_online = !e.online;
            e.online = true;
            became_online
        }))
    }

    async fn disconnected(&self, user: UserId, _conn: &ConnRef, now: u64) -> StoreResult<Option<u64>> {
        Ok(self.with(|users| match users.get_mut(&user) {
            Some(e) if e.connections > 0 => {
                e.connections -= 1;
                e.last_active_at = now;
                (e.connections == 0).then(|| {
                    e.epoch += 1;
                    e.epoch
                })
            }
            _ => None,
        }))
    }

    async fn settle(&self, user: UserId, epoch: u64) -> StoreResult<bool> {
        Ok(self.with(|users| match users.get_mut(&user) {
            Some(e) if e.connections == 0 && e.online && e.epoch == epoch => {
                e.online = false;
                true
            }
            _ => false,
        }))
    }

    async fn touch(&self, user: UserId, _conn: &ConnRef, now: u64) -> StoreResult<()> {
        self.with(|users| {
            if let Some(e) = users.get_mut(&user) {
                e.last_active_at = e.last_active_at.max(now);
            }
        });
        Ok(())
    }

    async fn query(&self, users: &[UserId]) -> StoreResult<Vec<PresenceRecord>> {
        Ok(self.with(|table| {
            users
                .iter()
                .map(|&user| {
                    let e = table.get(&user).copied().unwrap_or_default();
                    PresenceRecord {
                        presence: Presence {
                            user,
                            status: if e.online { PresenceStatus::Online } else { PresenceStatus::Offline },
                            last_active_at: e.last_active_at,
                        },
                        connections: e.connections,
                    }
                })
                .collect()
        }))
    }
}

/// How long a connection's own presence write (connect, touch, disconnect)
/// may hold that connection up. A slower store (Redis away) is not waited
/// for: the write is given up and logged, and the next
/// [`refresh`](PresenceTracker::refresh) registers the connection again, so
/// an outage of the presence store never holds a handshake's `hello`, a
/// connection's frames or its close for longer than this.
pub const CONNECTION_WRITE_DEADLINE: Duration = Duration::from_secs(1);

/// Applies the grace-period policy on top of a [`PresenceStore`] and reports
/// each online/offline transition once on its channel.
pub struct PresenceTracker {
    store: Arc<dyn PresenceStore>,
    grace: Duration,
    changes: mpsc::Sender<Presence>,
}

impl PresenceTracker {
    /// A tracker and the receiver of its transitions. The channel is bounded
    /// (`capacity`): presence is best-effort, so when the consumer falls
    /// behind, transitions are dropped (and logged) rather than queued
    /// without bound — clients can always query presence.
    pub fn new(
        store: Arc<dyn PresenceStore>,
        grace: Duration,
        capacity: usize,
    ) -> (Arc<Self>, mpsc::Receiver<Presence>) {
        let (changes, rx) = mpsc::channel(capacity.max(1));
        (Arc::new(Self { store, grace, changes }), rx)
    }

    /// The underlying store (for queries).
    pub fn store(&self) -> &Arc<dyn PresenceStore> {
        &self.store
    }

    /// Connection `conn` of `user` opened. Waits at most
    /// [`CONNECTION_WRITE_DEADLINE`] for the store.
    pub async fn connected(&self, user: UserId, conn: &ConnRef) {
        let now = now_ms();
        match within_deadline(self.store.connected(user, conn, now)).await {
            Ok(true) => self.report(Presence { user, status: PresenceStatus::Online, last_active_at: now }),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%user, error = %e, "presence: connect not recorded (the next refresh records it)")
            }
        }
    }

    /// A connection of `user` closed; if it was the last, the user goes
    /// offline after the grace period unless they reconnect first. Waits at
    /// most [`CONNECTION_WRITE_DEADLINE`] for the store (a shared store
    /// then expires the connection by itself).
    pub async fn disconnected(self: &Arc<Self>, user: UserId, conn: &ConnRef) {
        let now = now_ms();
        match within_deadline(self.store.disconnected(user, conn, now)).await {
            Ok(Some(epoch)) => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(this.grace).await;
                    match this.store.settle(user, epoch).await {
                        Ok(true) => this.report(Presence {
                            user,
                            status: PresenceStatus::Offline,
                            last_active_at: now,
                        }),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(%user, error = %e, "presence: settle failed"),
                    }
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%user, error = %e, "presence: disconnect not recorded"),
        }
    }

    /// Records activity of `conn` now. Waits at most
    /// [`CONNECTION_WRITE_DEADLINE`] for the store.
    pub async fn touch(&self, user: UserId, conn: &ConnRef) {
        if let Err(e) = within_deadline(self.store.touch(user, conn, now_ms())).await {
            tracing::warn!(%user, error = %e, "presence: touch failed");
        }
    }

    /// Refreshes this node's connections in the store; re-registers (and
    /// reports online again) those the store had expired while still open.
    pub async fn refresh(&self, conns: &[(UserId, ConnRef)]) {
        match self.store.refresh(conns).await {
            Ok(missing) => {
                for (user, conn) in missing {
                    self.connected(user, &conn).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence: refresh failed"),
        }
    }

    /// Sweeps users of dead nodes offline (see [`PresenceStore::sweep`]) and
    /// reports each transition.
    pub async fn sweep(&self) {
        match self.store.sweep(now_ms()).await {
            Ok(gone) => gone.into_iter().for_each(|p| self.report(p)),
            Err(e) => tracing::warn!(error = %e, "presence: sweep failed"),
        }
    }

    fn report(&self, p: Presence) {
        if self.changes.try_send(p).is_err() {
            tracing::warn!(user = %p.user, "presence: change dropped, consumer is behind");
        }
    }
}

/// `write`, or a [`StoreError::Backend`](crate::store::StoreError::Backend)
/// once [`CONNECTION_WRITE_DEADLINE`] has passed.
async fn within_deadline<T>(write: impl std::future::Future<Output = StoreResult<T>>) -> StoreResult<T> {
    match tokio::time::timeout(CONNECTION_WRITE_DEADLINE, write).await {
        Ok(result) => result,
        Err(_) => {
            Err(crate::store::StoreError::Backend(format!("no answer within {CONNECTION_WRITE_DEADLINE:?}")))
        }
    }
}

/// A presence store that is away, for tests of what relies on one.
#[cfg(test)]
pub(crate) mod away {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::StoreError;

    /// Every call fails, or (`hanging`) never answers; queries are counted.
    #[derive(Default)]
    pub(crate) struct AwayPresence {
        hangs: bool,
        /// [`PresenceStore::query`] calls so far.
        pub(crate) queries: AtomicUsize,
    }

    impl AwayPresence {
        /// One whose calls never return (Redis cut off).
        pub(crate) fn hanging() -> Self {
            Self { hangs: true, queries: AtomicUsize::new(0) }
        }

        async fn away<T>(&self) -> StoreResult<T> {
            if self.hangs {
                std::future::pending().await
            } else {
                Err(StoreError::Backend("away".into()))
            }
        }
    }

    #[async_trait]
    impl PresenceStore for AwayPresence {
        async fn connected(&self, _: UserId, _: &ConnRef, _: u64) -> StoreResult<bool> {
            self.away().await
        }
        async fn disconnected(&self, _: UserId, _: &ConnRef, _: u64) -> StoreResult<Option<u64>> {
            self.away().await
        }
        async fn settle(&self, _: UserId, _: u64) -> StoreResult<bool> {
            self.away().await
        }
        async fn touch(&self, _: UserId, _: &ConnRef, _: u64) -> StoreResult<()> {
            self.away().await
        }
        async fn query(&self, _: &[UserId]) -> StoreResult<Vec<PresenceRecord>> {
            self.queries.fetch_add(1, Ordering::SeqCst);
            self.away().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::away::AwayPresence;
    use super::*;

    fn conn(id: u64) -> ConnRef {
        ConnRef { node: "n".into(), conn: id }
    }

    fn tracker(grace_ms: u64) -> (Arc<PresenceTracker>, mpsc::Receiver<Presence>) {
        PresenceTracker::new(Arc::new(MemoryPresence::new()), Duration::from_millis(grace_ms), 16)
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_does_not_answer_holds_a_connection_up_only_until_the_deadline() {
        let (t, mut rx) =
            PresenceTracker::new(Arc::new(AwayPresence::hanging()), Duration::from_millis(10), 16);
        let u = UserId(1);
        let started = tokio::time::Instant::now();
        t.connected(u, &conn(1)).await;
        t.touch(u, &conn(1)).await;
        t.disconnected(u, &conn(1)).await;
        // Paused time: exactly three deadlines passed, nothing more.
        assert_eq!(started.elapsed(), CONNECTION_WRITE_DEADLINE * 3);
        assert!(rx.try_recv().is_err(), "nothing reported for writes that were given up");
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_within_grace_does_not_flap() {
        let (t, mut rx) = tracker(1000);
        let u = UserId(1);
        t.connected(u, &conn(1)).await;
        assert_eq!(rx.recv().await.unwrap().status, PresenceStatus::Online);
        t.disconnected(u, &conn(1)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        t.connected(u, &conn(1)).await; // back within the grace period
        tokio::time::sleep(Duration::from_millis(2000)).await;
        t.disconnected(u, &conn(1)).await; // and leaves again: only the latest grace timer may settle
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(rx.try_recv().is_err(), "no offline/online flap expected");
        t.connected(u, &conn(1)).await;
        let rec = t.store().query(&[u]).await.unwrap()[0];
        assert_eq!((rec.presence.status, rec.connections), (PresenceStatus::Online, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn goes_offline_after_grace() {
        let (t, mut rx) = tracker(1000);
        let u = UserId(2);
        t.connected(u, &conn(1)).await;
        t.connected(u, &conn(1)).await; // second device
        assert_eq!(rx.recv().await.unwrap().status, PresenceStatus::Online);
        t.disconnected(u, &conn(1)).await;
        t.disconnected(u, &conn(1)).await;
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert!(rx.try_recv().is_err(), "still within grace");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let p = rx.recv().await.unwrap();
        assert_eq!(p.status, PresenceStatus::Offline);
        assert!(p.last_active_at > 0);
        let rec = t.store().query(&[u, UserId(99)]).await.unwrap();
        assert_eq!(rec[0].presence.status, PresenceStatus::Offline);
        assert_eq!(
            rec[1].presence,
            Presence { user: UserId(99), status: PresenceStatus::Offline, last_active_at: 0 }
        );
    }
}
