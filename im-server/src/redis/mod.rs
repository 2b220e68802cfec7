//! Redis back-ends for a cluster (cargo feature `redis`): sessions
//! ([`RedisSessions`]), presence across nodes ([`RedisPresence`]), the node
//! registry ([`RedisRegistry`]) and the pub/sub broker (`broker`).
//!
//! Every node connects with [`Redis::connect`] to the same server (a plain
//! standalone Redis ≥ 6.2 or Valkey; no cluster mode, no TLS) and the same
//! key prefix ([`RedisConfig::prefix`], default `im`); every key starts with
//! `{prefix}:`, so several deployments can share one server.
//!
//! # Key layout
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:session:{id}` | string | JSON [`Session`](crate::model::Session), expiring with the session (`PX`) |
//! | `{prefix}:pconn:{user}` | sorted set | the user's live connections: member `"{node}\|{conn}"`, score = expiry (ms since the Unix epoch, Redis server clock) |
//! | `{prefix}:presence:{user}` | hash | `online` (`0`/`1`), `last` (last_active_at, ms), `epoch` (grace epoch) |
//! | `{prefix}:online` | sorted set | online users, score = the latest expiry among their connections (or the time their last one closed) |
//! | `{prefix}:nodes` | sorted set | node names, score = expiry (ms, Redis server clock) |
//! | `{prefix}:node:{name}` | string | JSON [`NodeInfo`](crate::dispatch::NodeInfo), expiring with the entry (`PX`) |
//!
//! `{prefix}:pconn:{user}` doubles as the user → nodes route table: the
//! nodes holding live connections of a user are the node parts of the
//! members whose score is above the current time. Scores are taken from the
//! Redis server's clock (`TIME`, inside the scripts), never from a node's
//! clock, so nodes with skewed clocks still agree on what has expired;
//! [`Redis::server_time_ms`] reads that clock.
//!
//! Every multi-key change is one Lua script (atomic across nodes). Scripts
//! are sent by hash and reloaded automatically after a Redis restart.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client};

use crate::store::{StoreError, StoreResult};

pub mod broker;
pub mod presence;
mod publisher;
pub mod registry;
pub mod sessions;

pub use presence::RedisPresence;
pub use registry::RedisRegistry;
pub use sessions::RedisSessions;

/// The key prefix of [`RedisConfig::default`].
pub const DEFAULT_PREFIX: &str = "im";
/// The URL of [`RedisConfig::default`].
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// How long connecting (and each reconnect attempt) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may wait for its reply before failing with `Backend`.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection attempts after the first when the connection is lost: a
/// command waits for the reconnect, so while Redis is away it fails after
/// two attempts (about 100–200 ms apart) instead of the client library's
/// default six (about 4 s of backoff); the next command tries again.
const RECONNECT_RETRIES: usize = 1;

/// Where the cluster's Redis is and which keys are ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// A `redis://[user:password@]host:port[/db]` URL.
    pub url: String,
    /// Every key starts with `{prefix}:`. All nodes of a cluster use the same
    /// prefix; two deployments sharing a server use different ones.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: DEFAULT_URL.to_owned(), prefix: DEFAULT_PREFIX.to_owned() }
    }
}

/// A connection to the cluster's Redis plus the key prefix: cheap to clone,
/// shared by the Redis back-ends of a node.
///
/// Commands go over one multiplexed [`ConnectionManager`] that reconnects by
/// itself; a command that fails while Redis is away fails with
/// [`StoreError::Backend`] (the caller retries later). Pub/sub needs its own
/// connection: open one from [`client`](Self::client).
#[derive(Clone)]
pub struct Redis {
    client: Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client's connection info may hold a password: show only the prefix.
        f.debug_struct("Redis").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects to `config.url` (failing with `Backend` if Redis cannot be
    /// reached within a couple of seconds).
    pub async fn connect(config: &RedisConfig) -> StoreResult<Self> {
        let client = Client::open(config.url.as_str()).map_err(backend)?;
        let conn = manager(&client).await?;
        Ok(Self { client, conn, prefix: config.prefix.as_str().into() })
    }

    /// The key prefix (without the trailing `:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key `{prefix}:{suffix}`.
    pub fn key(&self, suffix: impl std::fmt::Display) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// A handle on the shared, self-reconnecting command connection.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, to open dedicated connections (pub/sub).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The Redis server's clock, ms since the Unix epoch: the clock that
    /// every expiry score in this module is measured against.
    pub async fn server_time_ms(&self) -> StoreResult<u64> {
        let (secs, micros): (u64, u64) =
            redis::cmd("TIME").query_async(&mut self.conn()).await.map_err(backend)?;
        Ok(secs * 1000 + micros / 1000)
    }
}

/// Connects a self-reconnecting command connection to `url`.
pub async fn connect(url: &str) -> StoreResult<ConnectionManager> {
    manager(&Client::open(url).map_err(backend)?).await
}

async fn manager(client: &Client) -> StoreResult<ConnectionManager> {
    // The manager retries a failed first connection for seconds; one plain
    // attempt first fails fast, with the real reason.
    let probe = AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT));
    drop(client.get_multiplexed_async_connection_with_config(&probe).await.map_err(backend)?);
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_max_delay(Duration::from_millis(200))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client.get_connection_manager_with_config(config).await.map_err(backend)
}

/// Maps a Redis (or decoding) error to [`StoreError::Backend`].
pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

/// Longest expiry handed to Redis (about 100 years; far beyond any real
/// use, and far below what would overflow Redis's own clock arithmetic).
pub(crate) const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Milliseconds as a Redis expiry argument, in `1..=MAX_TTL_MS` (`PX 0` is an error).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MS)
}

/// A connection to the test server under a fresh random prefix, and that
/// prefix; `None` (after a loud `SKIPPED`) when the server is unreachable and
/// `IM_REQUIRE_SERVICES` is not `1`. The server is `IM_REDIS_URL` (default
/// `redis://127.0.0.1:6379`). Call [`delete_test_keys`] at the end.
#[cfg(test)]
pub(crate) async fn test_redis() -> Option<(Redis, String)> {
    let url = std::env::var("IM_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let prefix = format!("imtest-{:016x}", rand::random::<u64>());
    let config = RedisConfig { url: url.clone(), prefix: prefix.clone() };
    let connected = match tokio::time::timeout(Duration::from_secs(5), Redis::connect(&config)).await {
        Ok(Ok(redis)) => match redis::cmd("PING").query_async::<String>(&mut redis.conn()).await {
            Ok(_) => Ok(redis),
            Err(e) => Err(e.to_string()),
        },
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 5 s".to_owned()),
    };
    match connected {
        Ok(redis) => Some((redis, prefix)),
        Err(why) => {
            if std::env::var("IM_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("Redis not reachable at {url} ({why}) and IM_REQUIRE_SERVICES=1");
            }
            eprintln!(
                "SKIPPED: Redis not reachable at {url} ({why}); set IM_REDIS_URL, or IM_REQUIRE_SERVICES=1 to fail instead"
            );
            None
        }
    }
}

/// Another connection on the same server and prefix, as another node of
/// the cluster would have.
#[cfg(test)]
pub(crate) async fn another_node(redis: &Redis) -> Redis {
    let url = std::env::var("IM_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    Redis::connect(&RedisConfig { url, prefix: redis.prefix().to_owned() }).await.expect("second connection")
}

/// Deletes every key under `redis`'s prefix (test clean-up).
#[cfg(test)]
pub(crate) async fn delete_test_keys(redis: &Redis) {
    let mut conn = redis.conn();
    let pattern = format!("{}:*", redis.prefix());
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.expect("DEL");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
