//! [`SessionStore`] in Redis: a login on any node is valid on every node,
//! and a logout revokes it everywhere at once.
//!
//! A session is the string `{prefix}:session:{id}` holding its JSON, with a
//! Redis expiry at the session's `expires_at`: Redis deletes expired
//! sessions by itself, so [`purge_expired`](SessionStore::purge_expired)
//! has nothing to do. A shared counter ([`SessionStore::bump`]) is the
//! integer `{prefix}:counter:{key}`, expiring at the end of its window.

use async_trait::async_trait;

use super::{backend, Redis, MAX_TTL_MS};
use crate::model::Session;
use crate::store::{SessionStore, StoreResult};
use crate::time::now_ms;

/// Sessions in Redis (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct RedisSessions {
    redis: Redis,
}

impl RedisSessions {
    /// Sessions kept under `redis`'s prefix.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, id: &str) -> String {
        self.redis.key(format_args!("session:{id}"))
    }

    fn counter_key(&self, key: &str) -> String {
        self.redis.key(format_args!("counter:{key}"))
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    /// Stores the session until its `expires_at` (by this node's clock); a
    /// session that has already expired is not stored at all.
    async fn create(&self, session: &Session) -> StoreResult<()> {
        let ttl = session.expires_at.saturating_sub(now_ms()).min(MAX_TTL_MS);
        if ttl == 0 {
            return Ok(());
        }
        let json = serde_json::to_string(session).map_err(backend)?;
        redis::cmd("SET")
            .arg(self.key(&session.id))
            .arg(json)
            .arg("PX")
            .arg(ttl)
            .query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(backend)
    }

    /// The session, or `None` if unknown, revoked or expired.
    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        let json: Option<String> =
            redis::cmd("GET").arg(self.key(id)).query_async(&mut self.redis.conn()).await.map_err(backend)?;
        json.map(|j| serde_json::from_str(&j).map_err(backend)).transpose()
    }

    async fn revoke(&self, id: &str) -> StoreResult<bool> {
        let deleted: u64 =
            redis::cmd("DEL").arg(self.key(id)).query_async(&mut self.redis.conn()).await.map_err(backend)?;
        Ok(deleted > 0)
    }

    /// Always `Ok(0)`: Redis expires sessions by itself.
    async fn purge_expired(&self, _now: u64) -> StoreResult<usize> {
        Ok(0)
    }

    /// `{prefix}:counter:{key}`: `SET … 0 PXAT expires_at NX` then `INCR`,
    /// in one transaction, so the window starts with the first count.
    async fn bump(&self, key: &str, expires_at: u64, now: u64) -> StoreResult<Option<u64>> {
        if expires_at <= now {
            return Ok(Some(1));
        }
        let key = self.counter_key(key);
        let (n,): (u64,) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("PXAT")
            .arg(expires_at)
            .arg("NX")
            .ignore()
            .incr(&key, 1)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(backend)?;
        Ok(Some(n))
    }

    async fn reset(&self, key: &str) -> StoreResult<()> {
        redis::cmd("DEL")
            .arg(self.counter_key(key))
            .query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(backend)
    }
}

// The shared `store::conformance::sessions` suite is not run here: it
// creates sessions expiring at 100–300 ms after the Unix epoch, which this
// store (rightly) never stores, and it expects `purge_expired` to count the
// purged sessions, which Redis expiry does on its own. The tests below cover
// the same contract with real expiry times.
#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use im_protocol::UserId;

    use super::*;
    use crate::redis::{another_node, delete_test_keys, test_redis};

    fn session(id: &str, user: u64, expires_at: u64) -> Session {
        Session { id: id.to_owned(), user: UserId(user), created_at: now_ms(), expires_at }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shared_counters() {
        let Some((redis, _)) = test_redis().await else { return };
        let (a, b) = (RedisSessions::new(redis.clone()), RedisSessions::new(another_node(&redis).await));
        crate::store::conformance::shared_counters(Arc::new(a), Arc::new(b)).await;
        delete_test_keys(&redis).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn create_get_revoke() {
        let Some((redis, _)) = test_redis().await else { return };
        let store: Arc<dyn SessionStore> = Arc::new(RedisSessions::new(redis.clone()));
        let far = now_ms() + 60_000;
        let (s1, s2) = (session("aa01", 1, far), session("bb02", 2, far));
        store.create(&s1).await.unwrap();
        store.create(&s2).await.unwrap();
        assert_eq!(store.get("aa01").await.unwrap(), Some(s1.clone()));
        assert_eq!(store.get("bb02").await.unwrap(), Some(s2.clone()));
        assert_eq!(store.get("zz99").await.unwrap(), None);

        // Another node (another connection) sees the same sessions, and a
        // revoke on one is seen by the other.
        let other = RedisSessions::new(another_node(&redis).await);
        assert_eq!(other.get("aa01").await.unwrap(), Some(s1));
        assert!(other.revoke("aa01").await.unwrap());
        assert!(!store.revoke("aa01").await.unwrap());
        assert!(!store.revoke("zz99").await.unwrap());
        assert_eq!(store.get("aa01").await.unwrap(), None);
        assert_eq!(store.get("bb02").await.unwrap(), Some(s2));
        assert_eq!(store.purge_expired(u64::MAX).await.unwrap(), 0);
        delete_test_keys(&redis).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sessions_expire_by_themselves() {
        let Some((redis, _)) = test_redis().await else { return };
        let store = RedisSessions::new(redis.clone());
        store.create(&session("short", 1, now_ms() + 300)).await.unwrap();
        store.create(&session("gone", 1, now_ms().saturating_sub(1))).await.unwrap();
        assert!(store.get("short").await.unwrap().is_some());
        assert_eq!(store.get("gone").await.unwrap(), None, "an expired session is not stored");
        assert!(!store.revoke("gone").await.unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(store.get("short").await.unwrap(), None);
        assert!(!store.revoke("short").await.unwrap());
        delete_test_keys(&redis).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn keys_live_under_the_prefix() {
        let Some((redis, prefix)) = test_redis().await else { return };
        let store = RedisSessions::new(redis.clone());
        store.create(&session("cafe", 7, now_ms() + 60_000)).await.unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}:session:cafe"))
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        assert!((50_000..=60_000).contains(&ttl), "PTTL {ttl}");
        // A session that never expires is kept (for a century).
        let forever = session("f0f0", 7, u64::MAX);
        store.create(&forever).await.unwrap();
        assert_eq!(store.get("f0f0").await.unwrap(), Some(forever));
        delete_test_keys(&redis).await;
        assert_eq!(store.get("cafe").await.unwrap(), None);
    }
}
