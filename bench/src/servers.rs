//! Starting and stopping the servers under test, as child processes on
//! loopback. [`Running`] kills its children (and removes its temporary data)
//! when dropped, also on error or panic.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// im's per-connection rate limit as raised for the benchmark (frames/s and
/// burst; im's defaults are 50 and 200). Printed in every report.
pub const IM_RATE: u32 = 1_000_000;
/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    /// `raw-server`: tokio-tungstenite broadcast, no auth, no storage.
    Raw,
    /// Socket.IO 4 on Node.
    SocketIo,
    /// `im-server --memory`.
    ImMemory,
    /// `im-server --data-dir …` (embedded redb store, durable commits).
    ImEmbedded,
    /// Three `im-server` nodes on Redis (fan-out, presence) and PostgreSQL (store).
    ImCluster,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 5] = [Kind::Raw, Kind::SocketIo, Kind::ImMemory, Kind::ImEmbedded, Kind::ImCluster];

    /// Name used on the command line and in results.json.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::SocketIo => "socketio",
            Kind::ImMemory => "im-memory",
            Kind::ImEmbedded => "im-embedded",
            Kind::ImCluster => "im-cluster",
        }
    }

    /// Column title in the report.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::SocketIo => "Socket.IO",
            Kind::ImMemory => "im memory",
            Kind::ImEmbedded => "im embedded",
            Kind::ImCluster => "im 3 nodes",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the server speaks the im protocol.
    pub fn is_im(self) -> bool {
        matches!(self, Kind::ImMemory | Kind::ImEmbedded | Kind::ImCluster)
    }
}

/// Where the programs and services are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The `raw-server` binary.
    pub raw_server: PathBuf,
    /// The `im-server` binary (built with the `redis` and `postgres` features
    /// for the cluster).
    pub im_server: PathBuf,
    /// The `node` binary, if any.
    pub node: Option<PathBuf>,
    /// `bench/socketio` (with `node_modules` installed).
    pub socketio_dir: PathBuf,
    /// Redis for the cluster.
    pub redis_url: String,
    /// A PostgreSQL URL allowed to create databases (the cluster's database
    /// is created next to it and dropped afterwards).
    pub postgres_admin_url: String,
    /// Where server logs go.
    pub log_dir: PathBuf,
}

/// A started server: one process, or three for the cluster.
pub struct Running {
    /// Which server.
    pub kind: Kind,
    /// Address of each node.
    pub addrs: Vec<SocketAddr>,
    /// Process id of each node.
    pub pids: Vec<u32>,
    /// What was passed to the server (for the report).
    pub command_lines: Vec<String>,
    children: Vec<Child>,
    temp_dir: Option<PathBuf>,
    database: Option<(String, String)>,
}

impl Running {
    /// `http://ADDR` of node `i`.
    pub fn http(&self, i: usize) -> String {
        format!("http://{}", self.addrs[i])
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin, db)) = &self.database {
            let _ = psql(admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn psql(url: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A random-enough hex string (token secrets, names), without a crate.
pub fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut s = String::new();
    while s.len() < bytes * 2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::now_ns());
        s.push_str(&format!("{:016x}", h.finish()));
    }
    s.truncate(bytes * 2);
    s
}

/// A command whose output goes to `log_dir/NAME.log`, without the caller's
/// `IM_*` variables (so nothing but the flags configures im).
fn command(program: &PathBuf, tools: &Tools, log_name: &str) -> Result<Command, String> {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("IM_") {
            cmd.env_remove(k);
        }
    }
    std::fs::create_dir_all(&tools.log_dir).map_err(|e| format!("log dir: {e}"))?;
    let log = File::create(tools.log_dir.join(format!("{log_name}.log"))).map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    Ok(cmd)
}

fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

/// Starts `kind` and waits until it is ready.
pub async fn start(kind: Kind, tools: &Tools) -> Result<Running, String> {
    let mut run = Running {
        kind,
        addrs: Vec::new(),
        pids: Vec::new(),
        command_lines: Vec::new(),
        children: Vec::new(),
        temp_dir: None,
        database: None,
    };
    let mut cmds = Vec::new();
    match kind {
        Kind::Raw => {
            let port = free_port()?;
            let mut cmd = command(&tools.raw_server, tools, "raw")?;
            cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
            cmds.push((port, cmd));
        }
        Kind::SocketIo => {
            let node = tools.node.clone().ok_or("node not found")?;
            if !tools.socketio_dir.join("node_modules/socket.io").is_dir() {
                return Err(format!("socket.io not installed in {}", tools.socketio_dir.display()));
            }
            let port = free_port()?;
            let mut cmd = command(&node, tools, "socketio")?;
            cmd.current_dir(&tools.socketio_dir).args(["server.js", &port.to_string()]);
            cmds.push((port, cmd));
        }
        Kind::ImMemory | Kind::ImEmbedded => {
            let port = free_port()?;
            let mut cmd = command(&tools.im_server, tools, kind.name())?;
            im_common(&mut cmd, port, "bench-1");
            if kind == Kind::ImMemory {
                cmd.arg("--memory");
            } else {
                let dir =
                    std::env::temp_dir().join(format!("im-bench-{}-{}", std::process::id(), random_hex(4)));
                cmd.arg("--data-dir").arg(&dir);
                run.temp_dir = Some(dir);
            }
            cmds.push((port, cmd));
        }
        Kind::ImCluster => {
            check_tcp(&tools.redis_url).map_err(|e| format!("Redis at {}: {e}", tools.redis_url))?;
            let db = format!("im_bench_{}_{}", std::process::id(), random_hex(3));
            psql(&tools.postgres_admin_url, &format!("CREATE DATABASE {db}"))?;
            run.database = Some((tools.postgres_admin_url.clone(), db.clone()));
            let pg = replace_db(&tools.postgres_admin_url, &db);
            let secret = random_hex(32);
            for i in 1..=3 {
                let port = free_port()?;
                let mut cmd = command(&tools.im_server, tools, &format!("im-cluster-{i}"))?;
                im_common(&mut cmd, port, &format!("bench-n{i}"));
                cmd.args(["--redis-url", &tools.redis_url, "--postgres-url", &pg, "--token-secret", &secret]);
                cmd.args(["--public-ws-url", &format!("ws://127.0.0.1:{port}/ws")]);
                cmds.push((port, cmd));
            }
        }
    }
    for (port, mut cmd) in cmds {
        run.command_lines.push(describe(&cmd).replace(&random_secret_marker(&cmd), "<secret>"));
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", describe(&cmd)))?;
        run.pids.push(child.id());
        run.children.push(child);
        run.addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    for i in 0..run.addrs.len() {
        wait_ready(&mut run, i).await?;
    }
    Ok(run)
}

/// The token secret's value in `cmd`, to hide it from the report.
fn random_secret_marker(cmd: &Command) -> String {
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    args.iter()
        .position(|a| a == "--token-secret")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "\u{0}".into())
}

fn im_common(cmd: &mut Command, port: u16, node: &str) {
    let rate = IM_RATE.to_string();
    cmd.env("IM_LOG", "warn").args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--node-name",
        node,
        "--rate-per-sec",
        &rate,
        "--rate-burst",
        &rate,
        "--user-rate-per-sec",
        "0",
        "--max-connections",
        "200000",
        // Every load generator connection comes from 127.0.0.1.
        "--max-connections-per-ip",
        "0",
    ]);
}

/// `postgres://u@h:p/OLD?x` with the database replaced by `db`.
pub fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// Whether `redis://host:port[/…]` accepts TCP connections.
fn check_tcp(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let addr: SocketAddr = hostport.parse().map_err(|_| format!("not an ip:port: {hostport}"))?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(|_| ()).map_err(|e| e.to_string())
}

async fn wait_ready(run: &mut Running, i: usize) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr = run.addrs[i];
    let http = reqwest::Client::new();
    loop {
        if let Ok(Some(status)) = run.children[i].try_wait() {
            return Err(format!("{} node {i} exited at start ({status}); see its log", run.kind.name()));
        }
        let ready = if run.kind.is_im() {
            match http.get(format!("http://{addr}/healthz")).send().await {
                Ok(r) => r.status().is_success(),
                Err(_) => false,
            }
        } else {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        };
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{} node {i} not ready after {READY_TIMEOUT:?}", run.kind.name()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_rewrite() {
        assert_eq!(
            replace_db("postgres://postgres@127.0.0.1:5432/postgres", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(replace_db("postgres://u@h:1", "b1"), "postgres://u@h:1/b1");
        assert_eq!(
            replace_db("postgres://u@h:1/x?sslmode=disable", "b"),
            "postgres://u@h:1/b?sslmode=disable"
        );
        assert_eq!(Kind::parse("im-embedded"), Some(Kind::ImEmbedded));
    }
}
