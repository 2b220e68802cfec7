//! What the cluster test needs besides the processes: an isolated namespace
//! on this machine's Redis and PostgreSQL, and a TCP front (the load
//! balancer a deployment puts before the dispatchers).
//!
//! Isolation: the binary has no flag for the Redis key prefix (it is always
//! `im`), so each run claims a Redis database of its own (1–15, `SET
//! pf:claim NX` with an expiry) for the keys, and names its nodes uniquely
//! for the pub/sub channels (`im:node:{name}`; channels are shared by all
//! databases). PostgreSQL: a fresh database per run. Both are removed again
//! when [`Services`] is dropped, also after a failure.

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

const CLAIM_KEY: &str = "pf:claim";

/// This run's Redis database and PostgreSQL database.
pub struct Services {
    /// Unique per run: in node names.
    pub tag: String,
    /// Redis URL with this run's database.
    pub redis_url: String,
    /// PostgreSQL URL of this run's database.
    pub postgres_url: String,
    db_name: String,
}

impl Services {
    /// Claims a Redis database and creates a PostgreSQL database. `None`
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

        let mut redis_url = None;
        let first = rand::random::<u32>() as usize;
        for i in 0..15 {
            let db = 1 + (first + i) % 15;
            let url = with_path(&redis_base(), &db.to_string());
            let mut c = redis::Client::open(url.as_str())
                .expect("redis URL")
                .get_multiplexed_async_connection()
                .await
                .expect("redis connects");
            let claimed: Option<String> = redis::cmd("SET")
                .arg(CLAIM_KEY)
                .arg(&tag)
                .arg("NX")
                .arg("EX")
                .arg(900)
                .query_async(&mut c)
                .await
                .expect("SET NX");
            let keys: Vec<String> = redis::cmd("KEYS").arg("im:*").query_async(&mut c).await.expect("KEYS");
            if claimed.is_some() && keys.is_empty() {
                redis_url = Some(url);
                break;
            }
            if claimed.is_some() {
                // Someone else's data: leave it alone.
                let _: Result<(), _> = redis::cmd("DEL").arg(CLAIM_KEY).query_async(&mut c).await;
            }
        }
        let services = Services {
            tag,
            redis_url: redis_url.unwrap_or_default(),
            postgres_url: with_path(&postgres_base(), &db_name),
            db_name,
        };
        assert!(!services.redis_url.is_empty(), "no free Redis database among 1-15");
        Some(services)
    }

    async fn cleanup(redis_url: String, db_name: String) {
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
        if redis_url.is_empty() {
            return;
        }
        if let Ok(client) = redis::Client::open(redis_url.as_str()) {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let mut keys: Vec<String> =
                    redis::cmd("KEYS").arg("im:*").query_async(&mut c).await.unwrap_or_default();
                keys.push(CLAIM_KEY.into());
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
            }
        }
    }
}

impl Drop for Services {
    /// Removes the database and the keys, on a thread of its own (this
    /// may run while a failed test unwinds inside its runtime).
    fn drop(&mut self) {
        let (redis_url, db_name) = (self.redis_url.clone(), self.db_name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(Services::cleanup(redis_url, db_name));
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
