//! [`PresenceStore`] in Redis, shared by every node of a cluster, with the
//! semantics [`PresenceTracker`](crate::presence::PresenceTracker) expects:
//! a user is online from their first connection on any node until their
//! last connection anywhere has been gone for the grace period.
//!
//! # Layout
//!
//! * `{prefix}:pconn:{user}` — sorted set of the user's connections, member
//!   `"{node}|{conn}"`, score = the connection's expiry (ms, Redis server
//!   clock). A connection is live while its score is in the future. This set
//!   is also the broker's user → nodes route table.
//! * `{prefix}:presence:{user}` — hash: `online` (`0`/`1`), `last`
//!   (`last_active_at`, ms, the nodes' clocks as passed in), `epoch` (bumped
//!   by each last disconnect).
//! * `{prefix}:online` — sorted set of the users whose `online` is `1`,
//!   score = the latest expiry among their live connections, or the time
//!   their last connection closed.
//!
//! Every operation is one Lua script, so it is atomic across nodes: of two
//! nodes settling or sweeping the same user, exactly one reports them
//! offline.
//!
//! # Liveness
//!
//! A connection stays live for `conn_ttl` after it was registered, touched
//! ([`PresenceStore::touch`], on client activity) or refreshed
//! ([`RedisPresence::refresh_conns`], which the server calls periodically for all
//! of its connections). A node that dies stops both: its connections expire
//! after at most `conn_ttl`, and once a user has had no live connection for
//! the grace period, the next [`sweep`](PresenceStore::sweep) on any live
//! node marks them offline — exactly once cluster-wide. `conn_ttl` must
//! comfortably exceed both the touch interval (the gateway touches on client
//! activity at most every `heartbeat_interval / 2`) and the refresh
//! interval; [`DEFAULT_CONN_TTL`] is 60 s for the default 15 s heartbeat.
//!
//! All expiries are measured with the Redis server's clock (`TIME` inside
//! the scripts), so skewed node clocks cannot expire each other's
//! connections; the `now` passed to the trait methods only feeds
//! `last_active_at`, and [`sweep`](PresenceStore::sweep) ignores it.

use std::time::Duration;

use async_trait::async_trait;
use im_protocol::{Presence, PresenceStatus, UserId};
use redis::Script;

use super::{backend, ms, Redis};
use crate::broker::ConnRef;
use crate::presence::{PresenceRecord, PresenceStore};
use crate::store::StoreResult;

/// A sane connection time-to-live for the default 15 s heartbeat.
pub const DEFAULT_CONN_TTL: Duration = Duration::from_secs(60);
/// Users (or connections) per script call of `query`, `refresh` and `sweep`,
/// so that no single script blocks Redis for long.
const BATCH: usize = 256;
/// Upper bound of sweep rounds in one [`PresenceStore::sweep`] call.
const MAX_SWEEP_ROUNDS: usize = 64;

/// Shared head of every script: `now` (Redis server clock, ms) and helpers.
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- last_active_at := max(last_active_at, at)
local function bump_last(pres, at)
  local last = tonumber(redis.call('HGET', pres, 'last') or '0')
  if tonumber(at) > last then redis.call('HSET', pres, 'last', at) end
end
-- After a change to pconn: an online user's score in the online set is the
-- latest expiry among their connections, and pconn expires with its last one.
local function sync(pconn, pres, online, user)
  local top = redis.call('ZRANGE', pconn, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIRE', pconn, math.max(1, tonumber(top[2]) - now) + 1000)
    if redis.call('HGET', pres, 'online') == '1' then
      redis.call('ZADD', online, top[2], user)
    end
  end
end
"#;

/// KEYS: pconn, presence, online. ARGV: member, ttl ms, now (caller), user.
/// Returns 1 if the user was offline.
const CONNECTED: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local was = redis.call('HGET', KEYS[2], 'online')
bump_last(KEYS[2], ARGV[3])
redis.call('HSET', KEYS[2], 'online', '1')
sync(KEYS[1], KEYS[2], KEYS[3], ARGV[4])
if was == '1' then return 0 end
return 1
"#;

/// KEYS: pconn, presence, online. ARGV: member, now (caller), user.
/// Returns the new epoch if that was the user's last live connection, else -1.
const DISCONNECTED: &str = r#"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if removed == 0 then return -1 end
bump_last(KEYS[2], ARGV[2])
if redis.call('ZCARD', KEYS[1]) > 0 then
  sync(KEYS[1], KEYS[2], KEYS[3], ARGV[3])
  return -1
end
-- The grace period starts now; should the node that settles it die, the
-- sweeper finds the user once the grace period has passed.
if redis.call('HGET', KEYS[2], 'online') == '1' then
  redis.call('ZADD', KEYS[3], now, ARGV[3])
end
return redis.call('HINCRBY', KEYS[2], 'epoch', 1)
"#;

/// KEYS: pconn, presence, online. ARGV: epoch, user.
/// Returns 1 if the user went offline.
const SETTLE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
local h = redis.call('HMGET', KEYS[2], 'online', 'epoch')
if h[1] ~= '1' or h[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'online', '0')
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"#;

/// KEYS: pconn, presence, online. ARGV: member, ttl ms, now (caller), user.
/// Returns 1 if the user had been marked offline (their connection had
/// expired) and is online again.
const TOUCH: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
bump_last(KEYS[2], ARGV[3])
local was = redis.call('HGET', KEYS[2], 'online')
redis.call('HSET', KEYS[2], 'online', '1')
sync(KEYS[1], KEYS[2], KEYS[3], ARGV[4])
if was == '1' then return 0 end
return 1
"#;

/// KEYS: online, then (pconn, presence) per connection. ARGV: ttl ms, then
/// (member, user) per connection. Extends each connection that is still
/// registered on an online user; returns the (1-based) indexes of the others.
const REFRESH: &str = r#"
local ttl = tonumber(ARGV[1])
local missing = {}
for i = 1, (#KEYS - 1) / 2 do
  local pconn, pres = KEYS[2 * i], KEYS[2 * i + 1]
  local member, user = ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('ZSCORE', pconn, member) and redis.call('HGET', pres, 'online') == '1' then
    redis.call('ZADD', pconn, now + ttl, member)
    redis.call('ZREMRANGEBYSCORE', pconn, '-inf', now)
    sync(pconn, pres, KEYS[1], user)
  else
    missing[#missing + 1] = i
  end
end
return missing
"#;

/// KEYS: (pconn, presence) per user. Returns online, last, live connections
/// per user, flat, as strings.
const QUERY: &str = r#"
local out = {}
for i = 1, #KEYS / 2 do
  local h = redis.call('HMGET', KEYS[2 * i], 'online', 'last')
  out[#out + 1] = h[1] or '0'
  out[#out + 1] = h[2] or '0'
  out[#out + 1] = tostring(redis.call('ZCOUNT', KEYS[2 * i - 1], '(' .. now, '+inf'))
end
return out
"#;

/// KEYS: online. ARGV: grace ms, limit. The online users whose score is
/// more than the grace period in the past.
const SWEEP_CANDIDATES: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])), 'LIMIT', 0, tonumber(ARGV[2]))
"#;

/// KEYS: online, then (pconn, presence) per user. ARGV: grace ms, then the
/// users. Marks offline each user who is online with no live connection and
/// has been so for the grace period; returns user, last per user marked.
const SWEEP: &str = r#"
local cutoff = now - tonumber(ARGV[1])
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local pconn, pres, user = KEYS[2 * i], KEYS[2 * i + 1], ARGV[i + 1]
  redis.call('ZREMRANGEBYSCORE', pconn, '-inf', now)
  local score = redis.call('ZSCORE', KEYS[1], user)
  if score then
    if redis.call('ZCARD', pconn) > 0 then
      sync(pconn, pres, KEYS[1], user)
    elseif tonumber(score) < cutoff then
      redis.call('ZREM', KEYS[1], user)
      if redis.call('HGET', pres, 'online') == '1' then
        redis.call('HSET', pres, 'online', '0')
        out[#out + 1] = user
        out[#out + 1] = redis.call('HGET', pres, 'last') or '0'
      end
    end
  end
end
return out
"#;

struct Scripts {
    connected: Script,
    disconnected: Script,
    settle: Script,
    touch: Script,
    refresh: Script,
    query: Script,
    sweep_candidates: Script,
    sweep: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            connected: s(CONNECTED),
            disconnected: s(DISCONNECTED),
            settle: s(SETTLE),
            touch: s(TOUCH),
            refresh: s(REFRESH),
            query: s(QUERY),
            sweep_candidates: s(SWEEP_CANDIDATES),
            sweep: s(SWEEP),
        }
    }
}

/// Presence shared by the nodes of a cluster (see the [module docs](self)).
///
/// Every node of a cluster must use the same prefix and the same grace
/// period (the tracker's `presence_grace`).
#[derive(Clone)]
pub struct RedisPresence {
    redis: Redis,
    conn_ttl: Duration,
    grace: Duration,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("redis", &self.redis)
            .field("conn_ttl", &self.conn_ttl)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    /// Presence under `redis`'s prefix. A connection counts as live for
    /// `conn_ttl` after it was last registered, touched or refreshed (see
    /// [`DEFAULT_CONN_TTL`]: it must exceed the touch and refresh
    /// intervals); [`sweep`](PresenceStore::sweep) marks offline the users
    /// who have had no live connection for `grace`.
    pub fn new(redis: Redis, conn_ttl: Duration, grace: Duration) -> Self {
        Self { redis, conn_ttl, grace, scripts: std::sync::Arc::new(Scripts::new()) }
    }

    /// How long a connection stays live without a touch or refresh.
    pub fn conn_ttl(&self) -> Duration {
        self.conn_ttl
    }

    /// Keeps this node's connections alive: extends each of `conns` for
    /// another `conn_ttl`. The server calls it periodically (well within
    /// `conn_ttl`, e.g. every `conn_ttl / 3`) with all of its local
    /// connections, so an idle but healthy connection never expires.
    ///
    /// Returns the connections that were no longer registered — closed
    /// meanwhile, or expired and swept offline because this node stalled for
    /// longer than `conn_ttl`. Those are not re-added here (a refresh racing
    /// a disconnect must not resurrect it); for each one that is in fact
    /// still open, the caller registers it again with
    /// [`connected`](PresenceStore::connected) (through the tracker, so the
    /// user's return online is reported).
    pub async fn refresh_conns(&self, conns: &[(UserId, ConnRef)]) -> StoreResult<Vec<(UserId, ConnRef)>> {
        let mut missing = Vec::new();
        let mut redis = self.redis.conn();
        for chunk in conns.chunks(BATCH) {
            let mut inv = self.scripts.refresh.prepare_invoke();
            inv.key(self.redis.key("online")).arg(ms(self.conn_ttl));
            for (user, conn) in chunk {
                inv.key(self.pconn_key(*user)).key(self.presence_key(*user)).arg(member(conn)).arg(user.0);
            }
            let gone: Vec<usize> = inv.invoke_async(&mut redis).await.map_err(backend)?;
            missing.extend(gone.into_iter().filter_map(|i| chunk.get(i.checked_sub(1)?).cloned()));
        }
        Ok(missing)
    }

    fn pconn_key(&self, user: UserId) -> String {
        self.redis.key(format_args!("pconn:{user}"))
    }

    fn presence_key(&self, user: UserId) -> String {
        self.redis.key(format_args!("presence:{user}"))
    }

    fn user_keys<'a>(&self, inv: &mut redis::ScriptInvocation<'a>, user: UserId) {
        inv.key(self.pconn_key(user)).key(self.presence_key(user)).key(self.redis.key("online"));
    }
}

/// The member naming `conn` in `{prefix}:pconn:{user}`.
fn member(conn: &ConnRef) -> String {
    format!("{}|{}", conn.node, conn.conn)
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn refresh(&self, conns: &[(UserId, ConnRef)]) -> StoreResult<Vec<(UserId, ConnRef)>> {
        self.refresh_conns(conns).await
    }

    async fn connected(&self, user: UserId, conn: &ConnRef, now: u64) -> StoreResult<bool> {
        let mut inv = self.scripts.connected.prepare_invoke();
        self.user_keys(&mut inv, user);
        inv.arg(member(conn)).arg(ms(self.conn_ttl)).arg(now).arg(user.0);
        let became_online: i64 = inv.invoke_async(&mut self.redis.conn()).await.map_err(backend)?;
        Ok(became_online == 1)
    }

    async fn disconnected(&self, user: UserId, conn: &ConnRef, now: u64) -> StoreResult<Option<u64>> {
        let mut inv = self.scripts.disconnected.prepare_invoke();
        self.user_keys(&mut inv, user);
        inv.arg(member(conn)).arg(now).arg(user.0);
        let epoch: i64 = inv.invoke_async(&mut self.redis.conn()).await.map_err(backend)?;
        Ok(u64::try_from(epoch).ok())
    }

    async fn settle(&self, user: UserId, epoch: u64) -> StoreResult<bool> {
        let mut inv = self.scripts.settle.prepare_invoke();
        self.user_keys(&mut inv, user);
        inv.arg(epoch).arg(user.0);
        let offline: i64 = inv.invoke_async(&mut self.redis.conn()).await.map_err(backend)?;
        Ok(offline == 1)
    }

    /// Extends `conn` for another `conn_ttl` and records the activity. A
    /// connection that had expired meanwhile (its node stalled for longer
    /// than `conn_ttl`) is registered again, and its user marked online
    /// again; that return is logged, as it cannot be reported from here.
    async fn touch(&self, user: UserId, conn: &ConnRef, now: u64) -> StoreResult<()> {
        let mut inv = self.scripts.touch.prepare_invoke();
        self.user_keys(&mut inv, user);
        inv.arg(member(conn)).arg(ms(self.conn_ttl)).arg(now).arg(user.0);
        let revived: i64 = inv.invoke_async(&mut self.redis.conn()).await.map_err(backend)?;
        if revived == 1 {
            tracing::warn!(%user, node = %conn.node, conn = conn.conn,
                "presence: connection had expired (node stalled longer than conn_ttl?); registered again");
        }
        Ok(())
    }

    async fn query(&self, users: &[UserId]) -> StoreResult<Vec<PresenceRecord>> {
        let mut out = Vec::with_capacity(users.len());
        let mut redis = self.redis.conn();
        for chunk in users.chunks(BATCH) {
            let mut inv = self.scripts.query.prepare_invoke();
            for &user in chunk {
                inv.key(self.pconn_key(user)).key(self.presence_key(user));
            }
            let flat: Vec<String> = inv.invoke_async(&mut redis).await.map_err(backend)?;
            if flat.len() != chunk.len() * 3 {
                return Err(backend(format_args!(
                    "presence query: {} fields for {} users",
                    flat.len(),
                    chunk.len()
                )));
            }
            for (&user, f) in chunk.iter().zip(flat.chunks_exact(3)) {
                let num = |s: &str| {
                    s.parse::<u64>().map_err(|_| backend(format_args!("presence: bad number {s:?}")))
                };
                let online = f[0] == "1";
                out.push(PresenceRecord {
                    presence: Presence {
                        user,
                        status: if online { PresenceStatus::Online } else { PresenceStatus::Offline },
                        last_active_at: num(&f[1])?,
                    },
                    connections: u32::try_from(num(&f[2])?).unwrap_or(u32::MAX),
                });
            }
        }
        Ok(out)
    }

    /// Marks offline the users left online by dead nodes; `_now` is ignored
    /// (expiry is judged by the Redis server's clock).
    async fn sweep(&self, _now: u64) -> StoreResult<Vec<Presence>> {
        let mut gone = Vec::new();
        let mut redis = self.redis.conn();
        let online = self.redis.key("online");
        let grace = ms(self.grace);
        for _ in 0..MAX_SWEEP_ROUNDS {
            let candidates: Vec<u64> = self
                .scripts
                .sweep_candidates
                .key(&online)
                .arg(grace)
                .arg(BATCH)
                .invoke_async(&mut redis)
                .await
                .map_err(backend)?;
            if candidates.is_empty() {
                break;
            }
            let mut inv = self.scripts.sweep.prepare_invoke();
            inv.key(&online).arg(grace);
            for &user in &candidates {
                inv.key(self.pconn_key(UserId(user))).key(self.presence_key(UserId(user))).arg(user);
            }
            let flat: Vec<u64> = inv.invoke_async(&mut redis).await.map_err(backend)?;
            gone.extend(flat.chunks_exact(2).map(|f| Presence {
                user: UserId(f[0]),
                status: PresenceStatus::Offline,
                last_active_at: f[1],
            }));
            if candidates.len() < BATCH {
                break;
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::presence::PresenceTracker;
    use crate::redis::{another_node, delete_test_keys, test_redis};
    use crate::time::now_ms;

    fn conn(node: &str, id: u64) -> ConnRef {
        ConnRef { node: node.into(), conn: id }
    }

    const LONG: Duration = Duration::from_secs(60);

    /// Two nodes (two connections, two stores) on one fresh prefix.
    async fn two_nodes(ttl: Duration, grace: Duration) -> Option<(Redis, RedisPresence, RedisPresence)> {
        let (redis, _) = test_redis().await?;
        let a = RedisPresence::new(redis.clone(), ttl, grace);
        let b = RedisPresence::new(another_node(&redis).await, ttl, grace);
        Some((redis, a, b))
    }

    async fn status(p: &RedisPresence, user: UserId) -> (PresenceStatus, u32) {
        let r = p.query(&[user]).await.unwrap()[0];
        (r.presence.status, r.connections)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn last_disconnect_across_nodes_starts_the_grace_period() {
        let Some((redis, a, b)) = two_nodes(LONG, LONG).await else { return };
        let u = UserId(1);
        assert!(a.connected(u, &conn("a", 1), 1000).await.unwrap(), "offline → online");
        assert!(!b.connected(u, &conn("b", 1), 1001).await.unwrap(), "already online");
        assert_eq!(status(&a, u).await, (PresenceStatus::Online, 2));
        assert_eq!(a.disconnected(u, &conn("a", 1), 1002).await.unwrap(), None, "b still connected");
        assert_eq!(a.disconnected(u, &conn("a", 1), 1003).await.unwrap(), None, "unknown connection");
        let e1 = b.disconnected(u, &conn("b", 1), 1004).await.unwrap().expect("last connection");
        assert_eq!(status(&b, u).await, (PresenceStatus::Online, 0), "online during grace");

        // Back within the grace period (on the other node), and gone again.
        assert!(!a.connected(u, &conn("a", 2), 1005).await.unwrap());
        assert!(!b.settle(u, e1).await.unwrap(), "a connection is live");
        let e2 = a.disconnected(u, &conn("a", 2), 1006).await.unwrap().expect("last again");
        assert!(e2 > e1);
        assert!(!a.settle(u, e1).await.unwrap(), "stale epoch settles nothing");
        assert_eq!(status(&a, u).await.0, PresenceStatus::Online);
        assert!(b.settle(u, e2).await.unwrap(), "latest epoch settles");
        assert!(!a.settle(u, e2).await.unwrap(), "only once");
        let r = a.query(&[u, UserId(99)]).await.unwrap();
        assert_eq!(
            r[0].presence,
            Presence { user: u, status: PresenceStatus::Offline, last_active_at: 1006 }
        );
        assert_eq!(r[0].connections, 0);
        assert_eq!(
            r[1].presence,
            Presence { user: UserId(99), status: PresenceStatus::Offline, last_active_at: 0 }
        );
        assert!(a.sweep(now_ms()).await.unwrap().is_empty());
        delete_test_keys(&redis).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn query_counts_connections_and_last_activity() {
        let Some((redis, a, b)) = two_nodes(LONG, LONG).await else { return };
        let (u, v) = (UserId(7), UserId(8));
        a.connected(u, &conn("a", 1), 5000).await.unwrap();
        a.connected(u, &conn("a", 2), 5001).await.unwrap();
        b.connected(u, &conn("b", 1), 5002).await.unwrap();
        b.connected(v, &conn("b", 2), 4000).await.unwrap();
        a.touch(u, &conn("a", 1), 9000).await.unwrap();
        a.touch(u, &conn("a", 2), 8000).await.unwrap(); // older: last stays 9000
        let r = b.query(&[v, u]).await.unwrap();
        assert_eq!(
            (r[0].presence.status, r[0].presence.last_active_at, r[0].connections),
            (PresenceStatus::Online, 4000, 1)
        );
        assert_eq!(
            (r[1].presence.status, r[1].presence.last_active_at, r[1].connections),
            (PresenceStatus::Online, 9000, 3)
        );
        // The route table the broker reads.
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{}:pconn:7", redis.prefix()))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        assert_eq!(members.len(), 3);
        assert!(members.contains(&"a|1".to_owned()) && members.contains(&"b|1".to_owned()));
        // Many users at once (more than one batch).
        let many: Vec<UserId> = (1000..1000 + 2 * BATCH as u64 + 3).map(UserId).collect();
        let recs = a.query(&many).await.unwrap();
        assert_eq!(recs.len(), many.len());
        assert!(recs.iter().zip(&many).all(|(r, &u)| r.presence.user == u && r.connections == 0));
        delete_test_keys(&redis).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dead_node_is_swept_offline_exactly_once() {
        let (ttl, grace) = (Duration::from_millis(300), Duration::from_millis(700));
        let Some((redis, dead, b)) = two_nodes(ttl, grace).await else { return };
        let c = RedisPresence::new(another_node(&redis).await, ttl, grace);
        let (u, w) = (UserId(3), UserId(4));
        assert!(dead.connected(u, &conn("dead", 1), 1234).await.unwrap());
        // w is connected on a healthy node that keeps refreshing.
        assert!(b.connected(w, &conn("b", 1), 1235).await.unwrap());
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert_eq!(status(&b, u).await, (PresenceStatus::Online, 0), "expired, within grace");
        assert!(b.refresh_conns(&[(w, conn("b", 1))]).await.unwrap().is_empty());
        assert!(b.sweep(now_ms()).await.unwrap().is_empty(), "still within grace");
        tokio::time::sleep(grace).await;
        assert!(b.refresh_conns(&[(w, conn("b", 1))]).await.unwrap().is_empty());
        let (x, y) = tokio::join!(b.sweep(now_ms()), c.sweep(now_ms()));
        let swept: Vec<Presence> = x.unwrap().into_iter().chain(y.unwrap()).collect();
        assert_eq!(swept, vec![Presence { user: u, status: PresenceStatus::Offline, last_active_at: 1234 }]);
        assert_eq!(status(&c, u).await, (PresenceStatus::Offline, 0));
        assert_eq!(status(&c, w).await, (PresenceStatus::Online, 1), "refreshed user stays");
        assert!(b.sweep(now_ms()).await.unwrap().is_empty());
        delete_test_keys(&redis).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn node_dying_during_grace_is_swept_and_settle_loses() {
        let (ttl, grace) = (Duration::from_secs(60), Duration::from_millis(500));
        let Some((redis, a, b)) = two_nodes(ttl, grace).await else { return };
        let u = UserId(5);
        a.connected(u, &conn("a", 1), 10).await.unwrap();
        let epoch = a.disconnected(u, &conn("a", 1), 20).await.unwrap().unwrap();
        assert!(b.sweep(now_ms()).await.unwrap().is_empty(), "within grace");
        // a dies before settling: b's sweeper takes over after the grace period.
        tokio::time::sleep(grace + Duration::from_millis(50)).await;
        let swept = b.sweep(now_ms()).await.unwrap();
        assert_eq!(swept, vec![Presence { user: u, status: PresenceStatus::Offline, last_active_at: 20 }]);
        assert!(!a.settle(u, epoch).await.unwrap(), "already offline: reported once");
        delete_test_keys(&redis).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn refresh_keeps_idle_connections_and_reports_unknown_ones() {
        let ttl = Duration::from_millis(500);
        let Some((redis, a, b)) = two_nodes(ttl, Duration::from_millis(100)).await else { return };
        let (u, v) = (UserId(11), UserId(12));
        a.connected(u, &conn("a", 1), 1).await.unwrap();
        a.connected(v, &conn("a", 2), 1).await.unwrap();
        let closed = conn("a", 3); // never registered (or closed meanwhile)
        let local = [(u, conn("a", 1)), (v, conn("a", 2)), (v, closed.clone())];
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(a.refresh_conns(&local).await.unwrap(), vec![(v, closed.clone())]);
            assert!(b.sweep(now_ms()).await.unwrap().is_empty());
        }
        assert_eq!(status(&b, u).await, (PresenceStatus::Online, 1));
        // Left to expire and swept, the connection is reported, not revived.
        tokio::time::sleep(ttl + Duration::from_millis(200)).await;
        assert_eq!(b.sweep(now_ms()).await.unwrap().len(), 2);
        assert_eq!(a.refresh_conns(&local[..1]).await.unwrap(), vec![(u, conn("a", 1))]);
        assert_eq!(status(&b, u).await, (PresenceStatus::Offline, 0));
        // A touch from the still-open connection registers it again.
        a.touch(u, &conn("a", 1), 99).await.unwrap();
        assert_eq!(status(&b, u).await, (PresenceStatus::Online, 1));
        delete_test_keys(&redis).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn tracker_on_redis_reconnect_within_grace_does_not_flap() {
        let grace = Duration::from_millis(500);
        let Some((redis, a, b)) = two_nodes(LONG, grace).await else { return };
        let (ta, mut rx_a) = PresenceTracker::new(Arc::new(a), grace, 16);
        let (tb, mut rx_b) = PresenceTracker::new(Arc::new(b), grace, 16);
        let u = UserId(21);
        ta.connected(u, &conn("a", 1)).await;
        assert_eq!(rx_a.recv().await.unwrap().status, PresenceStatus::Online);
        ta.disconnected(u, &conn("a", 1)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        tb.connected(u, &conn("b", 1)).await; // back on the other node within grace
        tokio::time::sleep(grace + Duration::from_millis(100)).await;
        assert!(rx_a.try_recv().is_err() && rx_b.try_recv().is_err(), "no flap");
        tb.disconnected(u, &conn("b", 1)).await;
        let p = tokio::time::timeout(grace * 4, rx_b.recv()).await.expect("offline after grace").unwrap();
        assert_eq!(p.status, PresenceStatus::Offline);
        assert!(rx_a.try_recv().is_err());
        tb.sweep().await;
        ta.sweep().await;
        assert!(rx_a.try_recv().is_err() && rx_b.try_recv().is_err(), "reported once");
        delete_test_keys(&redis).await;
    }
}
