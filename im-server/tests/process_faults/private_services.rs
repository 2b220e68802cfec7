//! What the Redis restart test needs besides the harness: a private
//! `redis-server` child process on a loopback port of its own (killed with
//! SIGKILL and started again, empty, on the same port), a fresh PostgreSQL
//! database, and a look into the private Redis (registry and route table).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `IM_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_base() -> String {
    std::env::var("IM_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Skips loudly (`None`), or fails under `IM_REQUIRE_SERVICES=1`.
pub fn skip<T>(what: &str) -> Option<T> {
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

/// The directory holding PostgreSQL's server binaries (`postgres`,
/// `initdb`): the newest `/usr/lib/postgresql/*/bin` (Debian's layout), else
/// `pg_config --bindir`.
fn postgres_bindir() -> Option<PathBuf> {
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("postgres").is_file() && bin.join("initdb").is_file())
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (bin.join("postgres").is_file() && bin.join("initdb").is_file()).then_some(bin)
}

/// The numeric uid and gid of the `postgres` account (`id`).
fn postgres_account() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Whether this process runs as root (PostgreSQL refuses to).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|uid| uid.trim() == "0")
}

/// A private PostgreSQL server: its own cluster (`initdb`) in a temporary
/// folder, listening on a loopback port of its own, started as a process
/// group so that [`kill_9`](Self::kill_9) takes the postmaster and every
/// backend down at once, as a crash would; [`start`](Self::start) again
/// runs PostgreSQL's crash recovery on the same files. Run as the
/// `postgres` account (`runuser`) when the tests run as root. Killed when
/// dropped.
pub struct PostgresProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    bin: PathBuf,
    /// Holds the cluster (`data/`) and the Unix socket.
    dir: tempfile::TempDir,
    log_dir: PathBuf,
    as_postgres: bool,
    child: Option<Child>,
    spawns: u32,
}

impl PostgresProcess {
    /// Creates a cluster and starts it (`None` after a loud SKIPPED when
    /// PostgreSQL's server binaries are not installed).
    pub async fn start_new(log_dir: PathBuf) -> Option<PostgresProcess> {
        let Some(bin) = postgres_bindir() else {
            return skip("no PostgreSQL server binaries (postgres, initdb)");
        };
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new().prefix("im-pf-pg").tempdir().expect("temporary folder");
        if as_postgres {
            let Some((uid, gid)) = postgres_account() else {
                return skip("running as root and there is no postgres account to run PostgreSQL as");
            };
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the cluster folder");
        }
        let data = dir.path().join("data");
        let initdb = Self::command(as_postgres, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        let addr = super::harness::free_addr();
        let mut pg = PostgresProcess { addr, bin, dir, log_dir, as_postgres, child: None, spawns: 0 };
        pg.start().await;
        Some(pg)
    }

    fn command(as_postgres: bool, program: &Path) -> Command {
        if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// `postgres://postgres@127.0.0.1:N/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.addr)
    }

    /// Spawns the server and waits (at most 30 s: a restart first replays
    /// the write-ahead log) until it takes a query. Returns that moment.
    pub async fn start(&mut self) -> Instant {
        use std::os::unix::process::CommandExt;
        assert!(self.child.is_none(), "PostgreSQL is already running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.spawns += 1;
            let log = std::fs::File::create(self.log_dir.join(format!("postgres-{}.log", self.spawns)))
                .expect("log file");
            let mut child = Self::command(self.as_postgres, &self.bin.join("postgres"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-k")
                .arg(self.dir.path())
                .args(["-p", &self.addr.port().to_string(), "-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "max_connections=100", "-c", "shared_buffers=16MB"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .process_group(0)
                .spawn()
                .expect("spawn postgres");
            loop {
                if child.try_wait().expect("try_wait").is_some() {
                    break; // the port or the old shared memory still taken: spawn again
                }
                if self.answers().await {
                    self.child = Some(child);
                    return Instant::now();
                }
                if Instant::now() > deadline {
                    Self::kill_group(&mut child);
                    panic!("PostgreSQL on {} did not come up within 30 s", self.addr);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(Instant::now() < deadline, "PostgreSQL on {} keeps exiting", self.addr);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL to the whole process group (postmaster and backends), and
    /// reap it. Returns the moment of the kill.
    pub fn kill_9(&mut self) -> Instant {
        let mut child = self.child.take().expect("a running PostgreSQL");
        let at = Instant::now();
        Self::kill_group(&mut child);
        at
    }

    fn kill_group(child: &mut Child) {
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
        // Until the last backend of the group is gone.
        for _ in 0..500 {
            let alive = Command::new("kill")
                .args(["-0", "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !alive {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it takes a query now.
    pub async fn answers(&self) -> bool {
        let url = self.url();
        let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
        let Ok(Ok((client, conn))) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
            return false;
        };
        let conn = tokio::spawn(conn);
        let ok = client.simple_query("SELECT 1").await.is_ok();
        drop(client);
        let _ = conn.await;
        ok
    }
}

impl Drop for PostgresProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Self::kill_group(&mut c);
        }
    }
}
