//! Node registry: which message nodes are alive, how loaded, and whether
//! draining — what the dispatcher (`GET /dispatch`) chooses from.
//!
//! Every node announces itself periodically with a time-to-live; a node that
//! dies stops announcing and disappears when its entry expires. The
//! dispatcher offers the least-loaded live node that is not draining.
//! [`LocalRegistry`] serves one process; a Redis registry serves a cluster.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::StoreResult;
use crate::time::now_ms;

/// A node as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name (unique in the cluster).
    pub node: String,
    /// The WebSocket URL clients use to reach it (`None`: unknown; the
    /// dispatcher then answers with the URL the client used to ask).
    pub ws_url: Option<String>,
    /// Live connections.
    pub load: u64,
    /// Draining nodes are never offered.
    pub draining: bool,
}

/// Where nodes announce themselves.
#[async_trait]
pub trait NodeRegistry: Send + Sync + 'static {
    /// Creates or refreshes `info`'s entry; it expires after `ttl` unless
    /// announced again.
    async fn announce(&self, info: &NodeInfo, ttl: Duration) -> StoreResult<()>;
    /// Removes a node's entry at once (clean shutdown).
    async fn withdraw(&self, node: &str) -> StoreResult<()>;
    /// Every node whose entry has not expired.
    async fn live_nodes(&self) -> StoreResult<Vec<NodeInfo>>;
}

/// The least-loaded live node that is not draining (ties: by name).
pub fn pick(nodes: &[NodeInfo]) -> Option<&NodeInfo> {
    nodes.iter().filter(|n| !n.draining).min_by(|a, b| a.load.cmp(&b.load).then_with(|| a.node.cmp(&b.node)))
}

/// In-process [`NodeRegistry`] (a single node, or nodes in one process in tests).
#[derive(Debug, Default)]
pub struct LocalRegistry {
    nodes: Mutex<HashMap<String, (NodeInfo, u64)>>,
}

impl LocalRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl NodeRegistry for LocalRegistry {
    async fn announce(&self, info: &NodeInfo, ttl: Duration) -> StoreResult<()> {
        let expires = now_ms() + ttl.as_millis() as u64;
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.node.clone(), (info.clone(), expires));
        Ok(())
    }

    async fn withdraw(&self, node: &str) -> StoreResult<()> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
        Ok(())
    }

    async fn live_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        let now = now_ms();
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.retain(|_, (_, expires)| *expires > now);
        let mut live: Vec<NodeInfo> = nodes.values().map(|(n, _)| n.clone()).collect();
        live.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, load: u64, draining: bool) -> NodeInfo {
        NodeInfo { node: name.into(), ws_url: Some(format!("ws://{name}/ws")), load, draining }
    }

    #[test]
    fn picks_the_least_loaded_node_that_is_not_draining() {
        let nodes = [node("a", 5, false), node("b", 1, true), node("c", 3, false), node("d", 3, false)];
        assert_eq!(pick(&nodes).map(|n| n.node.as_str()), Some("c"));
        assert_eq!(pick(&[node("x", 0, true)]), None);
        assert_eq!(pick(&[]), None);
    }

    #[tokio::test]
    async fn entries_expire_and_can_be_withdrawn() {
        let reg = LocalRegistry::new();
        reg.announce(&node("a", 1, false), Duration::from_millis(50)).await.unwrap();
        reg.announce(&node("b", 2, false), Duration::from_secs(60)).await.unwrap();
        assert_eq!(reg.live_nodes().await.unwrap().len(), 2);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(reg.live_nodes().await.unwrap(), vec![node("b", 2, false)]);
        reg.withdraw("b").await.unwrap();
        assert!(reg.live_nodes().await.unwrap().is_empty());
    }
}
