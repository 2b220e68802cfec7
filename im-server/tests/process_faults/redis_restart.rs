//! What the Redis restart test needs besides the harness: a private
//! `redis-server` child process on a loopback port of its own (killed with
//! SIGKILL and started again, empty, on the same port), a fresh PostgreSQL
//! database, and a look into the private Redis (registry and route table).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `IM_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
fn postgres_base() -> String {
    std::env::var("IM_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Skips loudly (`None`), or fails under `IM_REQUIRE_SERVICES=1`.
fn skip<T>(what: &str) -> Option<T> {
    if std::env::var("IM_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("IM_REQUIRE_SERVICES=1 but {what}");
    }
    eprintln!("SKIPPED: the Redis restart process test: {what}");
    None
}

/// The `redis-server` binary: `/usr/bin/redis-server`, else on `PATH`.
fn redis_binary() -> Option<PathBuf> {
    let usual = PathBuf::from("/usr/bin/redis-server");
    if usual.is_file() {
        return Some(usual);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("redis-server"))
        .find(|p| p.is_file())
}

/// A private `redis-server` (no persistence: every start is empty); killed
/// when dropped.
pub struct RedisProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    bin: PathBuf,
    log_dir: PathBuf,
    child: Option<Child>,
    spawns: u32,
}

impl RedisProcess {
    /// Starts one on a free loopback port (`None` after a loud SKIPPED when
    /// there is no `redis-server`).
    pub async fn start_new(log_dir: PathBuf) -> Option<RedisProcess> {
        let Some(bin) = redis_binary() else { return skip("no redis-server binary") };
        let addr = super::harness::free_addr();
        let mut r = RedisProcess { addr, bin, log_dir, child: None, spawns: 0 };
        r.start().await;
        Some(r)
    }

    /// `redis://127.0.0.1:N`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Spawns it and waits (at most 10 s) until it answers `PING`.
    pub async fn start(&mut self) -> Instant {
        assert!(self.child.is_none(), "redis-server is already running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.spawns += 1;
            let log = std::fs::File::create(self.log_dir.join(format!("redis-{}.log", self.spawns)))
                .expect("log file");
            let port = self.addr.port().to_string();
            let mut child = Command::new(&self.bin)
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("spawn redis-server");
            loop {
                if child.try_wait().expect("try_wait").is_some() {
                    break; // port still taken, say: spawn again
                }
                if self.ping().await {
                    self.child = Some(child);
                    return Instant::now();
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("redis-server on {} did not come up within 10 s", self.addr);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(Instant::now() < deadline, "redis-server on {} keeps exiting", self.addr);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, and reap it. Returns the moment of the kill.
    pub fn kill_9(&mut self) -> Instant {
        let mut child = self.child.take().expect("a running redis-server");
        let at = Instant::now();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap redis-server");
        at
    }

    async fn conn(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        tokio::time::timeout(Duration::from_secs(1), client.get_multiplexed_async_connection())
            .await
            .ok()?
            .ok()
    }

    async fn ping(&self) -> bool {
        let Some(mut c) = self.conn().await else { return false };
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
        pong.is_ok()
    }

    /// Number of keys (0 right after a restart: nothing persisted).
    pub async fn dbsize(&self) -> Option<u64> {
        let mut c = self.conn().await?;
        redis::cmd("DBSIZE").query_async(&mut c).await.ok()
    }

    /// The node names in the registry (`im:nodes`, any score).
    pub async fn registered_nodes(&self) -> Vec<String> {
        let Some(mut c) = self.conn().await else { return Vec::new() };
        redis::cmd("ZRANGE").arg("im:nodes").arg(0).arg(-1).query_async(&mut c).await.unwrap_or_default()
    }

    /// The nodes `user`'s route table (`im:pconn:{user}`) names.
    pub async fn routes(&self, user: u64) -> Vec<String> {
        let Some(mut c) = self.conn().await else { return Vec::new() };
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("im:pconn:{user}"))
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        members.iter().filter_map(|m| m.split('|').next().map(str::to_owned)).collect()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fresh PostgreSQL database, dropped again when this is dropped.
pub struct FreshDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

impl FreshDatabase {
    /// Creates `im_pf_{tag}` (`None` after a loud SKIPPED when PostgreSQL is unreachable).
    pub async fn create(tag: &str) -> Option<FreshDatabase> {
        let Ok(Ok((pg, conn))) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_postgres::connect(&postgres_base(), tokio_postgres::NoTls),
        )
        .await
        else {
            return skip(&format!("PostgreSQL at {} is unreachable", postgres_base()));
        };
        let conn = tokio::spawn(conn);
        let name = format!("im_pf_{tag}");
        pg.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        drop(pg);
        let _ = conn.await;
        let mut url = reqwest::Url::parse(&postgres_base()).expect("PostgreSQL URL");
        url.set_path(&format!("/{name}"));
        Some(FreshDatabase { url: url.to_string(), name })
    }
}

impl Drop for FreshDatabase {
    /// On a thread of its own (this may run while a failed test unwinds
    /// inside its runtime).
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(Ok((pg, conn))) = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio_postgres::connect(&postgres_base(), tokio_postgres::NoTls),
                )
                .await
                {
                    let conn = tokio::spawn(conn);
                    if let Err(e) =
                        pg.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
                    {
                        eprintln!("dropping database {name}: {e}");
                    }
                    drop(pg);
                    let _ = conn.await;
                }
            });
        })
        .join();
    }
}
