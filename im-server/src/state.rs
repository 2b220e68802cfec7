//! The state every request handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use im_protocol::CloseCode;
use tokio::sync::{watch, Semaphore};

use crate::config::ServerConfig;
use crate::dispatch::NodeRegistry;
use crate::hub::Hub;
use crate::logic::Logic;
use crate::metrics::Metrics;

/// Shared by the gateway and the HTTP API (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    logic: Arc<Logic>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    registry: Arc<dyn NodeRegistry>,
    connection_permits: Arc<Semaphore>,
    draining: AtomicBool,
    drain_started: AtomicBool,
    drained: watch::Sender<bool>,
    crashed: AtomicBool,
    serves_tls: AtomicBool,
}

impl AppState {
    /// State over a logic and hub.
    pub fn new(
        logic: Arc<Logic>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        registry: Arc<dyn NodeRegistry>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(logic.config().max_connections));
        Self {
            inner: Arc::new(Inner {
                logic,
                hub,
                metrics,
                registry,
                connection_permits: permits,
                draining: AtomicBool::new(false),
                drain_started: AtomicBool::new(false),
                drained: watch::Sender::new(false),
                crashed: AtomicBool::new(false),
                serves_tls: AtomicBool::new(false),
            }),
        }
    }

    /// How many clones of this state are alive (connection tasks and
    /// in-flight requests hold one each).
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// What requests do.
    pub fn logic(&self) -> &Arc<Logic> {
        &self.inner.logic
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        self.inner.logic.config()
    }

    /// This node's connections.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The node registry the dispatcher chooses from.
    pub fn registry(&self) -> &Arc<dyn NodeRegistry> {
        &self.inner.registry
    }

    /// This node's registry entry as of now.
    pub fn node_info(&self) -> crate::dispatch::NodeInfo {
        let cfg = self.config();
        crate::dispatch::NodeInfo {
            node: cfg.node_name.clone(),
            ws_url: cfg.public_ws_url.clone(),
            load: self.hub().connection_count() as u64,
            draining: self.is_draining(),
        }
    }

    /// Bounds concurrent WebSocket connections.
    pub fn connection_permits(&self) -> &Arc<Semaphore> {
        &self.inner.connection_permits
    }

    /// Whether the node is shutting down or draining (refuses new connections).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Whether the node is simulating a crash (see
    /// [`RunningServer::crash`](crate::RunningServer::crash)): connections
    /// end without a close frame and without telling shared stores.
    pub fn is_crashed(&self) -> bool {
        self.inner.crashed.load(Ordering::Acquire)
    }

    /// Whether this node terminates TLS itself (its URLs are `https://`
    /// and `wss://`).
    pub fn serves_tls(&self) -> bool {
        self.inner.serves_tls.load(Ordering::Relaxed)
    }

    pub(crate) fn set_serves_tls(&self) {
        self.inner.serves_tls.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_crashed(&self) {
        self.inner.crashed.store(true, Ordering::Release);
    }

    /// Marks the node as shutting down or draining.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Starts draining (idempotent): the node stops taking connections, tells
    /// the registry at once (so the dispatcher stops offering it), and closes
    /// its connections with 3501 ("reconnect via the dispatcher") spread
    /// evenly over `drain_window`, so the other nodes are not hit by every
    /// client at once. [`drained`](Self::drained) resolves when all are asked
    /// to go.
    pub fn start_drain(&self) {
        if self.inner.drain_started.swap(true, Ordering::AcqRel) {
            return;
        }
        self.set_draining();
        let state = self.clone();
        tokio::spawn(async move {
            let cfg = state.config();
            if let Err(e) = state.registry().announce(&state.node_info(), cfg.registry_ttl).await {
                tracing::warn!(error = %e, "node registry: draining announce failed");
            }
            let conns = state.hub().connections();
            let n = conns.len().max(1) as u32;
            let window = cfg.drain_window;
            tracing::info!(connections = conns.len(), ?window, "draining");
            let start = tokio::time::Instant::now();
            for (i, conn) in conns.iter().enumerate() {
                tokio::time::sleep_until(start + window * (i as u32) / n).await;
                conn.close(CloseCode::DRAIN);
            }
            state.inner.drained.send_replace(true);
        });
    }

    /// Resolves once a drain has asked every connection to go.
    pub async fn drained(&self) {
        let mut rx = self.inner.drained.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}
