//! [`NodeRegistry`] in Redis: the dispatcher on any node sees every live
//! node of the cluster.
//!
//! `{prefix}:nodes` is a sorted set of node names scored by their entry's
//! expiry (ms, Redis server clock); `{prefix}:node:{name}` holds the
//! [`NodeInfo`] as JSON and expires at the same time (`PX`). Announcing
//! writes both in one script; listing first drops the expired names.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{backend, ms, Redis};
use crate::dispatch::{NodeInfo, NodeRegistry};
use crate::store::StoreResult;

/// KEYS: nodes, node. ARGV: name, JSON, ttl ms.
const ANNOUNCE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// KEYS: nodes. Drops expired names; returns the others.
const LIVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// The node registry in Redis (see the [module docs](self)).
#[derive(Clone)]
pub struct RedisRegistry {
    redis: Redis,
    scripts: std::sync::Arc<(Script, Script)>,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry").field("redis", &self.redis).finish_non_exhaustive()
    }
}

impl RedisRegistry {
    /// The registry under `redis`'s prefix.
    pub fn new(redis: Redis) -> Self {
        Self { redis, scripts: std::sync::Arc::new((Script::new(ANNOUNCE), Script::new(LIVE))) }
    }

    fn node_key(&self, node: &str) -> String {
        self.redis.key(format_args!("node:{node}"))
    }
}

#[async_trait]
impl NodeRegistry for RedisRegistry {
    async fn announce(&self, info: &NodeInfo, ttl: Duration) -> StoreResult<()> {
        let json = serde_json::to_string(info).map_err(backend)?;
        self.scripts
            .0
            .key(self.redis.key("nodes"))
            .key(self.node_key(&info.node))
            .arg(&info.node)
            .arg(json)
            .arg(ms(ttl))
            .invoke_async::<()>(&mut self.redis.conn())
            .await
            .map_err(backend)
    }

    async fn withdraw(&self, node: &str) -> StoreResult<()> {
        redis::pipe()
            .atomic()
            .zrem(self.redis.key("nodes"), node)
            .ignore()
            .del(self.node_key(node))
            .ignore()
            .query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(backend)
    }

    /// Live nodes, sorted by name.
    async fn live_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        let mut conn = self.redis.conn();
        let names: Vec<String> =
            self.scripts.1.key(self.redis.key("nodes")).invoke_async(&mut conn).await.map_err(backend)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = names.iter().map(|n| self.node_key(n)).collect();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(backend)?;
        let mut live = Vec::with_capacity(values.len());
        for json in values.into_iter().flatten() {
            match serde_json::from_str::<NodeInfo>(&json) {
                Ok(info) => live.push(info),
                Err(e) => tracing::warn!(error = %e, "node registry: unreadable entry skipped"),
            }
        }
        live.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::pick;
    use crate::redis::{another_node, delete_test_keys, test_redis};

    fn node(name: &str, load: u64, draining: bool) -> NodeInfo {
        NodeInfo { node: name.into(), ws_url: Some(format!("ws://{name}/ws")), load, draining }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn announce_pick_expire_withdraw() {
        let Some((redis, _)) = test_redis().await else { return };
        let a = RedisRegistry::new(redis.clone());
        let b = RedisRegistry::new(another_node(&redis).await);
        assert!(a.live_nodes().await.unwrap().is_empty());
        a.announce(&node("n2", 5, false), Duration::from_secs(60)).await.unwrap();
        b.announce(&node("n1", 2, false), Duration::from_millis(200)).await.unwrap();
        b.announce(&node("n3", 3, false), Duration::from_secs(60)).await.unwrap();
        let live = a.live_nodes().await.unwrap();
        assert_eq!(live, vec![node("n1", 2, false), node("n2", 5, false), node("n3", 3, false)]);
        assert_eq!(pick(&live).map(|n| n.node.as_str()), Some("n1"));

        // Re-announcing replaces the entry (a draining node is never offered).
        a.announce(&node("n1", 2, true), Duration::from_millis(200)).await.unwrap();
        assert_eq!(pick(&b.live_nodes().await.unwrap()).map(|n| n.node.as_str()), Some("n3"));

        tokio::time::sleep(Duration::from_millis(300)).await;
        let live = b.live_nodes().await.unwrap();
        assert_eq!(live, vec![node("n2", 5, false), node("n3", 3, false)], "n1 expired");
        assert_eq!(pick(&live).map(|n| n.node.as_str()), Some("n3"));

        a.withdraw("n3").await.unwrap();
        a.withdraw("nope").await.unwrap();
        assert_eq!(b.live_nodes().await.unwrap(), vec![node("n2", 5, false)]);
        let indexed: u64 = redis::cmd("ZCARD")
            .arg(format!("{}:nodes", redis.prefix()))
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        assert_eq!(indexed, 1, "expired and withdrawn names left the index");
        delete_test_keys(&redis).await;
    }
}
