//! What the cluster test needs besides the processes: an isolated namespace
//! on this machine's Redis and PostgreSQL, and a TCP front (the load
//! balancer a deployment puts before the dispatchers).
//!
//! Isolation: each run has a Redis key prefix of its own (`--redis-prefix
//! pf{tag}`), which also names its pub/sub channels, and a fresh PostgreSQL
//! database. Both are removed again when [`Services`] is dropped, also
//! after a failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// `IM_REDIS_URL`, default `redis://127.0.0.1:6379`.
fn redis_base() -> String {
    std::env::var("IM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `IM_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
fn postgres_base() -> String {
    std::env::var("IM_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `base` with the path `/{path}` (a database number or name).
fn with_path(base: &str, path: &str) -> String {
    let mut url = reqwest::Url::parse(base).expect("service URL");
    url.set_path(&format!("/{path}"));
    url.to_string()
}

/// This run's Redis key prefix and PostgreSQL database.
pub struct Services {
    /// Unique per run: in node names.
    pub tag: String,
    /// The Redis URL.
    pub redis_url: String,
    /// This run's Redis key prefix (`--redis-prefix`).
    pub redis_prefix: String,
    /// PostgreSQL URL of this run's database.
    pub postgres_url: String,
    db_name: String,
}

impl Services {
    /// Checks that Redis answers and creates a PostgreSQL database. `None`
    /// (after a loud SKIPPED) when a service is unreachable, unless
    /// `IM_REQUIRE_SERVICES=1`, which makes that a failure.
    pub async fn provision() -> Option<Services> {
        let tag = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let pg = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_postgres::connect(&postgres_base(), tokio_postgres::NoTls),
        )
        .await;
        let redis = async {
            let client = redis::Client::open(redis_base()).ok()?;
            tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection())
                .await
                .ok()?
                .ok()
        }
        .await;
        let (Ok(Ok((pg, conn))), Some(_)) = (pg, redis) else {
            let what = format!("Redis at {}, PostgreSQL at {}", redis_base(), postgres_base());
            if std::env::var("IM_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("IM_REQUIRE_SERVICES=1 but a service is unreachable: {what}");
            }
            eprintln!("SKIPPED: the cluster process test needs Redis and PostgreSQL ({what})");
            return None;
        };
        let conn = tokio::spawn(conn);
        let db_name = format!("im_pf_{tag}");
        pg.batch_execute(&format!("CREATE DATABASE {db_name}")).await.expect("CREATE DATABASE");
        drop(pg);
        let _ = conn.await;
        Some(Services {
            redis_url: redis_base(),
            redis_prefix: format!("pf{tag}"),
            postgres_url: with_path(&postgres_base(), &db_name),
            tag,
            db_name,
        })
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis_url.as_str()).expect("redis URL");
        client.get_multiplexed_async_connection().await.expect("redis connects")
    }

    /// The Redis server's clock, ms since the Unix epoch (what expiry
    /// scores are measured against).
    pub async fn redis_ms(&self) -> u64 {
        let (secs, micros): (u64, u64) =
            redis::cmd("TIME").query_async(&mut self.redis().await).await.expect("TIME");
        secs * 1000 + micros / 1000
    }

    /// The nodes whose registry entry has not expired.
    pub async fn live_nodes(&self) -> Vec<String> {
        let now = self.redis_ms().await;
        redis::cmd("ZRANGEBYSCORE")
            .arg(format!("{}:nodes", self.redis_prefix))
            .arg(format!("({now}"))
            .arg("+inf")
            .query_async(&mut self.redis().await)
            .await
            .expect("ZRANGEBYSCORE")
    }

    /// The expiry (ms) of every presence route entry that names `node`.
    pub async fn route_expiries(&self, node: &str) -> Vec<u64> {
        let mut c = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:pconn:*", self.redis_prefix))
            .query_async(&mut c)
            .await
            .expect("KEYS");
        let mut out = Vec::new();
        for key in keys {
            let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
                .expect("ZRANGE");
            out.extend(
                entries.into_iter().filter(|(m, _)| m.split('|').next() == Some(node)).map(|(_, s)| s as u64),
            );
        }
        out
    }

    async fn cleanup(redis_url: String, prefix: String, db_name: String) {
        if let Ok(Ok((pg, conn))) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&postgres_base(), tokio_postgres::NoTls),
        )
        .await
        {
            let conn = tokio::spawn(conn);
            if let Err(e) = pg.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).await
            {
                eprintln!("dropping database {db_name}: {e}");
            }
            drop(pg);
            let _ = conn.await;
        }
        if let Ok(client) = redis::Client::open(redis_url.as_str()) {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}:*"))
                    .query_async(&mut c)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
                }
            }
        }
    }
}

impl Drop for Services {
    /// Removes the database and the keys, on a thread of its own (this
    /// may run while a failed test unwinds inside its runtime).
    fn drop(&mut self) {
        let (redis_url, prefix, db_name) =
            (self.redis_url.clone(), self.redis_prefix.clone(), self.db_name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(Services::cleanup(redis_url, prefix, db_name));
        })
        .join();
        if done.is_err() {
            eprintln!("cleaning up the cluster test's services panicked");
        }
    }
}

/// A TCP front on loopback: each connection goes to the first of the
/// backends (starting from the next one in turn) that accepts it.
pub struct Front {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Front {
    /// Starts the front before `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the front");
        let addr = listener.local_addr().expect("addr");
        let next = Arc::new(AtomicUsize::new(0));
        let backends = Arc::new(backends);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (next, backends) = (next.clone(), backends.clone());
                tokio::spawn(async move {
                    let start = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..backends.len() {
                        let to = backends[(start + i) % backends.len()];
                        let Ok(Ok(mut out)) =
                            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(to)).await
                        else {
                            continue;
                        };
                        let _ = out.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        return;
                    }
                });
            }
        });
        Front { addr, task }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}
