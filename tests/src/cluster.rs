//! Several nodes in one test process on the real Redis and PostgreSQL of
//! this machine, each test isolated by its own Redis key prefix and
//! PostgreSQL schema (removed again when the cluster is dropped).

use std::time::Duration;

use im_server::store::postgres::PgOptions;
use im_server::{RunningServer, ServerBuilder, ServerConfig};

use crate::builder;

/// `IM_REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("IM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `IM_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("IM_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether Redis and PostgreSQL answer. When they do not: panics if
/// `IM_REQUIRE_SERVICES=1` (CI), else says so loudly and returns `false`
/// (the caller skips).
pub async fn services_available() -> bool {
    let redis_ok = async {
        let client = redis::Client::open(redis_url()).ok()?;
        let mut conn =
            tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection())
                .await
                .ok()?
                .ok()?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
    }
    .await
    .is_some();
    let pg_ok = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls),
    )
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    if redis_ok && pg_ok {
        return true;
    }
    let what =
        format!("Redis at {} up: {redis_ok}; PostgreSQL at {} up: {pg_ok}", redis_url(), postgres_url());
    if std::env::var("IM_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("IM_REQUIRE_SERVICES=1 but the services are not reachable: {what}");
    }
    eprintln!("SKIPPED: cluster test needs Redis and PostgreSQL ({what})");
    false
}

/// A cluster's shared settings and its nodes.
pub struct Cluster {
    /// Redis key prefix of this test.
    pub prefix: String,
    /// PostgreSQL schema of this test.
    pub schema: String,
}

impl Cluster {
    /// A fresh, isolated namespace (no nodes yet).
    pub fn new() -> Self {
        let tag = format!("{:012x}", rand_u64() & 0xffff_ffff_ffff);
        Cluster { prefix: format!("imtest-{tag}"), schema: format!("im_test_{tag}") }
    }

    /// The configuration of node `name` with test-friendly timings.
    pub fn config(&self, name: &str) -> ServerConfig {
        let mut cfg = ServerConfig::default();
        cfg.node_name = name.into();
        cfg.redis_prefix = self.prefix.clone();
        cfg.registry_ttl = Duration::from_millis(1500);
        cfg.presence_grace = Duration::from_millis(300);
        cfg.presence_conn_ttl = Duration::from_millis(1500);
        cfg.presence_refresh = Duration::from_millis(300);
        cfg.drain_window = Duration::from_millis(800);
        cfg
    }

    /// Starts a node with `cfg` on 127.0.0.1 (its public URL set to the
    /// bound address).
    pub async fn node_with(&self, cfg: ServerConfig) -> RunningServer {
        self.node_via(cfg, &redis_url()).await
    }

    /// [`node_with`](Self::node_with), reaching Redis at `redis` (e.g.
    /// through a [`Proxy`](crate::proxy::Proxy) the test can cut).
    pub async fn node_via(&self, cfg: ServerConfig, redis: &str) -> RunningServer {
        self.node_built(cfg, redis, |b| b).await
    }

    /// [`node_via`](Self::node_via), with `more` setting further seams
    /// (hooks, a message feed) on the builder.
    pub async fn node_built(
        &self,
        mut cfg: ServerConfig,
        redis: &str,
        more: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> RunningServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        cfg.public_ws_url = Some(format!("ws://{}/ws", listener.local_addr().expect("addr")));
        let opts = PgOptions { schema: Some(self.schema.clone()), ..PgOptions::default() };
        more(builder(cfg))
            .postgres_with(&postgres_url(), opts)
            .await
            .expect("postgres")
            .redis(redis)
            .await
            .expect("redis")
            .serve(listener)
            .await
            .expect("node starts")
    }

    /// Starts node `name` with the test configuration.
    pub async fn node(&self, name: &str) -> RunningServer {
        self.node_with(self.config(name)).await
    }

    /// Removes this test's schema and keys (best effort).
    pub async fn cleanup(&self) {
        if let Ok((client, conn)) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await {
            let task = tokio::spawn(conn);
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).await;
            drop(client);
            let _ = task.await;
        }
        if let Ok(client) = redis::Client::open(redis_url()) {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}:*", self.prefix))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                }
            }
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    h.finish()
}
