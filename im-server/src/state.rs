//! The state every request handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::ServerConfig;
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
    connection_permits: Arc<Semaphore>,
    draining: AtomicBool,
}

impl AppState {
    /// State over a logic and hub.
    pub fn new(logic: Arc<Logic>, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Self {
        let permits = Arc::new(Semaphore::new(logic.config().max_connections));
        Self {
            inner: Arc::new(Inner {
                logic,
                hub,
                metrics,
                connection_permits: permits,
                draining: AtomicBool::new(false),
            }),
        }
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

    /// Bounds concurrent WebSocket connections.
    pub fn connection_permits(&self) -> &Arc<Semaphore> {
        &self.inner.connection_permits
    }

    /// Whether the node is shutting down or draining (refuses new connections).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Marks the node as shutting down or draining.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }
}
