//! Real `im-server` processes, the business HTTP API, im-client devices
//! that report to the [`Checker`], and paced senders. Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_client::{Client, Event};
use im_protocol::{ConversationId, GroupId, Message, MessageId, UserId};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::checker::{Ack, Checker, Members, Shared};

/// The token secret every process gets: tokens survive restarts and work on every node.
pub const TOKEN_SECRET: &str = "process-faults-token-secret-32-bytes!";
/// The password of every test user.
pub const PASSWORD: &str = "password-123";
/// Longest wait for a process to answer `/healthz` after it was spawned
/// (including respawns while the old listener's port is still taken).
const START_WAIT: Duration = Duration::from_secs(20);

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

/// When a start happened.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// The process was spawned (the last spawn, if the first could not bind).
    pub spawned: Instant,
    /// `/healthz` answered 200.
    pub ready: Instant,
}

/// One `im-server` process, started again and again with the same
/// arguments; killed (SIGKILL) when dropped, also when a test fails.
pub struct ServerProcess {
    /// For logs and reports.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    args: Vec<OsString>,
    log_dir: PathBuf,
    child: Option<Child>,
    /// How many processes were spawned.
    pub spawns: u32,
    http: reqwest::Client,
}

impl ServerProcess {
    /// A process of the binary under test listening on `addr`, with `args`
    /// besides `--listen`; its output goes to `log_dir/{name}-{n}.log`.
    pub fn new(name: &str, addr: SocketAddr, args: Vec<OsString>, log_dir: PathBuf) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("http client");
        ServerProcess { name: name.into(), addr, args, log_dir, child: None, spawns: 0, http }
    }

    /// `http://addr`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://addr/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Child {
        self.spawns += 1;
        let path = self.log_dir.join(format!("{}-{}.log", self.name, self.spawns));
        let log = std::fs::File::create(&path).expect("log file");
        Command::new(env!("CARGO_BIN_EXE_im-server"))
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(&self.args)
            .env("IM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn im-server")
    }

    /// Spawns the process and waits until `/healthz` answers 200. A process
    /// that exits first (its port still taken, say) is spawned again.
    pub async fn start(&mut self) -> Started {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let deadline = Instant::now() + START_WAIT;
        let mut spawned = Instant::now();
        let mut child = self.spawn();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(
                    Instant::now() < deadline,
                    "{} keeps exiting ({status}):\n{}",
                    self.name,
                    self.log_tail(20)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                spawned = Instant::now();
                child = self.spawn();
                continue;
            }
            if let Ok(r) = self.http.get(format!("{}/healthz", self.http_url())).send().await {
                if r.status().is_success() {
                    self.child = Some(child);
                    return Started { spawned, ready: Instant::now() };
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not come up within {START_WAIT:?}:\n{}", self.name, self.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL, and reap it. Returns the moment of the kill.
    pub fn kill_9(&mut self) -> Instant {
        let mut child = self.child.take().expect("a running process to kill");
        let at = Instant::now();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap the killed process");
        at
    }

    /// Sends SIGTERM (the binary then drains and exits).
    pub fn sigterm(&self) {
        let pid = self.pid().expect("a running process");
        let ok =
            Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill -TERM").success();
        assert!(ok, "kill -TERM {pid}");
    }

    /// Waits (at most `within`) for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("a running process");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `lines` lines of the newest log.
    pub fn log_tail(&self, lines: usize) -> String {
        let path = self.log_dir.join(format!("{}-{}.log", self.name, self.spawns));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Log lines of every process so far that mention `needle` (for reports).
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        (1..=self.spawns)
            .flat_map(|n| {
                let path = self.log_dir.join(format!("{}-{n}.log", self.name));
                let text = std::fs::read_to_string(path).unwrap_or_default();
                text.lines()
                    .filter(|l| l.contains(needle))
                    .map(|l| format!("[{}-{n}] {l}", self.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The business HTTP API of one node.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// The API at `base` (`http://host:port`).
    pub fn at(base: String) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
        Api { base, http }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Registers `name` and logs in: (user id, token).
    pub async fn user(&self, name: &str) -> (UserId, String) {
        let creds = json!({"username": name, "password": PASSWORD});
        let (s, body) = self.call(reqwest::Method::POST, "/api/v1/register", None, Some(creds.clone())).await;
        assert_eq!(s, 201, "register {name}: {body}");
        self.login(name).await
    }

    /// Logs in (a new session): (user id, token).
    pub async fn login(&self, name: &str) -> (UserId, String) {
        let creds = json!({"username": name, "password": PASSWORD});
        let (s, body) = self.call(reqwest::Method::POST, "/api/v1/login", None, Some(creds)).await;
        assert_eq!(s, 200, "login {name}: {body}");
        let id = UserId(body["user_id"].as_u64().expect("user_id"));
        (id, body["token"].as_str().expect("token").to_owned())
    }

    /// Creates a group of `owner` with `members`.
    pub async fn group(&self, owner: &str, name: &str, members: &[UserId]) -> GroupId {
        let ids: Vec<u64> = members.iter().map(|m| m.0).collect();
        let body = json!({"name": name, "members": ids});
        let (s, body) = self.call(reqwest::Method::POST, "/api/v1/groups", Some(owner), Some(body)).await;
        assert_eq!(s, 201, "create group: {body}");
        GroupId(body["id"].as_u64().expect("group id"))
    }

    /// Every stored message of `conv`, ascending (paging back through history).
    pub async fn history(&self, token: &str, conv: ConversationId) -> Vec<Message> {
        let mut all: Vec<Message> = Vec::new();
        let mut before: Option<MessageId> = None;
        for _ in 0..100_000 {
            let mut path = format!("/api/v1/conversations/{conv}/messages?limit=200");
            if let Some(b) = before {
                path.push_str(&format!("&before={b}"));
            }
            let (s, body) = self.call(reqwest::Method::GET, &path, Some(token), None).await;
            assert_eq!(s, 200, "history of {conv}: {body}");
            let mut page: Vec<Message> =
                serde_json::from_value(body["messages"].clone()).expect("history messages decode");
            before = page.first().map(|m| m.id);
            page.append(&mut all);
            all = page;
            if body["has_more"] != json!(true) || before.is_none() {
                return all;
            }
        }
        panic!("history of {conv} does not end");
    }

    /// `GET path` without a token, not asserting anything: status and body (probes).
    pub async fn probe_get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    /// `GET path` with `token`, not asserting anything: status and body (probes).
    pub async fn probe_get_with(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None).await
    }

    /// `POST /api/v1/login`, not asserting anything: status and body (probes).
    pub async fn try_login(&self, name: &str) -> (u16, Value) {
        let creds = json!({"username": name, "password": PASSWORD});
        self.call(reqwest::Method::POST, "/api/v1/login", None, Some(creds)).await
    }

    /// `POST /admin/drain`: the status.
    pub async fn drain(&self, admin_token: &str) -> u16 {
        self.call(reqwest::Method::POST, "/admin/drain", Some(admin_token), None).await.0
    }

    /// `GET /dispatch`: the node offered, if any.
    pub async fn dispatch(&self) -> Option<String> {
        let (s, body) = self.call(reqwest::Method::GET, "/dispatch", None, None).await;
        (s == 200).then(|| body["node"].as_str().unwrap_or_default().to_owned())
    }
}

/// Starts an im-client device that reports every event to `checker`.
/// `url` is a dispatcher (`http://…/dispatch`) or a WebSocket URL.
pub fn device(checker: &Shared, name: &str, user: UserId, token: &str, url: &str) -> Client {
    let idx = checker.lock().unwrap().add_device(name, user);
    let (client, mut events) = Client::builder()
        .url(url)
        .token(token)
        .device(name)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .expect("client config");
    let checker = checker.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let stop = matches!(event, Event::Stopped { .. });
            checker.lock().unwrap().on_event(idx, event, Instant::now());
            if stop {
                break;
            }
        }
    });
    client
}

/// How a device sends.
#[derive(Debug, Clone)]
pub struct SendPlan {
    /// The device's index in the checker.
    pub device: usize,
    /// Conversations to send to, in turn.
    pub convs: Vec<ConversationId>,
    /// Most sends.
    pub max: usize,
    /// Pause between two sends.
    pub pace: Duration,
    /// Most sends awaiting their ack at once.
    pub window: usize,
}

/// Sends as `plan` says until `stop` is set (or `plan.max` sends), each a
/// task that records its outcome in `checker`; returns those tasks.
pub async fn send_until(
    client: Client,
    checker: Shared,
    plan: SendPlan,
    stop: Arc<AtomicBool>,
) -> JoinSet<()> {
    let name = checker.lock().unwrap().devices[plan.device].name.clone();
    let window = Arc::new(Semaphore::new(plan.window));
    let mut tasks = JoinSet::new();
    'sending: for n in 0..plan.max {
        let permit = loop {
            if stop.load(Ordering::Relaxed) {
                break 'sending;
            }
            if let Ok(Ok(p)) =
                tokio::time::timeout(Duration::from_millis(50), window.clone().acquire_owned()).await
            {
                break p;
            }
        };
        let conv = plan.convs[n % plan.convs.len()];
        let body = format!("{name}#{n}");
        let idx = checker.lock().unwrap().send_issued(plan.device, conv, body.clone(), Instant::now());
        let (client, checker) = (client.clone(), checker.clone());
        tasks.spawn(async move {
            let outcome = client.send_detailed(conv, body).await.map(Ack::from).map_err(|e| e.to_string());
            checker.lock().unwrap().send_done(idx, outcome, Instant::now());
            drop(permit);
        });
        tokio::time::sleep(plan.pace).await;
    }
    tasks
}

/// Waits (until `deadline`) for every send task to end.
pub async fn join_sends(tasks: Vec<JoinSet<()>>, deadline: Instant) {
    let all = async {
        for mut t in tasks {
            while let Some(r) = t.join_next().await {
                r.expect("send task");
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline.into(), all).await;
}

/// Polls `cond` on the checker every 20 ms until it holds or `deadline`
/// passes; returns whether it held.
pub async fn wait_for(checker: &Shared, deadline: Instant, mut cond: impl FnMut(&Checker) -> bool) -> bool {
    loop {
        if cond(&checker.lock().unwrap()) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Users `user0..` registered on one node, a group of all of them (owned
/// by user 0) and direct chats between the given pairs of them.
pub struct People {
    /// (id, token) per user.
    pub users: Vec<(UserId, String)>,
    /// The users' ids.
    pub ids: Vec<UserId>,
    /// The group of everyone.
    pub group: ConversationId,
    /// One direct chat per pair, in the order given.
    pub directs: Vec<ConversationId>,
    /// Who is in each conversation.
    pub members: Members,
}

impl People {
    /// Registers `n` users on `api` and creates their conversations.
    pub async fn create(api: &Api, n: usize, pairs: &[(usize, usize)]) -> People {
        let mut users = Vec::new();
        for i in 0..n {
            users.push(api.user(&format!("user{i}")).await);
        }
        let ids: Vec<UserId> = users.iter().map(|u| u.0).collect();
        let group = ConversationId::Group(api.group(&users[0].1, "all", &ids[1..]).await);
        let mut members: Members = BTreeMap::from([(group, ids.iter().copied().collect())]);
        let mut directs = Vec::new();
        for &(a, b) in pairs {
            let d = ConversationId::direct(ids[a], ids[b]);
            members.insert(d, BTreeSet::from([ids[a], ids[b]]));
            directs.push(d);
        }
        People { users, ids, group, directs, members }
    }

    /// A member's token for each conversation (the group: user 0's; a
    /// direct chat: its first user's), to read the histories with.
    pub fn readers(&self, pairs: &[(usize, usize)]) -> Vec<(ConversationId, String)> {
        let mut readers = vec![(self.group, self.users[0].1.clone())];
        readers.extend(self.directs.iter().zip(pairs).map(|(d, (a, _))| (*d, self.users[*a].1.clone())));
        readers
    }
}

/// Stops the senders and waits (at most 30 s) for every send to resolve.
pub async fn stop_sending(stop: &AtomicBool, senders: Vec<tokio::task::JoinHandle<JoinSet<()>>>) {
    stop.store(true, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for s in senders {
        tasks.push(s.await.expect("sender"));
    }
    join_sends(tasks, Instant::now() + Duration::from_secs(30)).await;
}

/// The end of a scenario's load: reads every conversation's history,
/// waits (at most 20 s) until every device caught up with its head, and
/// reads it again (what the devices are checked against): (history,
/// heads, whether everyone caught up).
pub async fn settled_history(
    api: &Api,
    checker: &Shared,
    readers: &[(ConversationId, String)],
    members: &Members,
) -> (BTreeMap<ConversationId, Vec<Message>>, BTreeMap<ConversationId, MessageId>, bool) {
    let history = histories(api, readers).await;
    let heads: BTreeMap<ConversationId, MessageId> =
        history.iter().map(|(c, m)| (*c, m.last().map(|m| m.id).unwrap_or(0))).collect();
    let caught_up =
        wait_for(checker, Instant::now() + Duration::from_secs(20), |c| c.caught_up(&heads, members)).await;
    (histories(api, readers).await, heads, caught_up)
}

/// The whole history of each conversation of `readers`, each read with
/// the token given with it (a member's).
pub async fn histories(
    api: &Api,
    readers: &[(ConversationId, String)],
) -> BTreeMap<ConversationId, Vec<Message>> {
    let mut all = BTreeMap::new();
    for (conv, token) in readers {
        all.insert(*conv, api.history(token, *conv).await);
    }
    all
}

/// Waits (at most 20 s) until `want` sends were acked after `from`.
pub async fn acks_flow(checker: Shared, from: Instant, want: usize) {
    let ok =
        wait_for(&checker, Instant::now() + Duration::from_secs(20), |c| c.acks_after(from) >= want).await;
    assert!(ok, "fewer than {want} acks within 20 s: {}", checker.lock().unwrap().summary());
}

/// An error answer's code (`{"error": {"code": ..}}` or `{"code": ..}`).
pub fn error_code(body: &serde_json::Value) -> String {
    let code = body["error"]["code"].as_str().or(body["code"].as_str()).or(body["error"].as_str());
    code.unwrap_or("-").to_owned()
}

/// Awaits a probe's answer for at most 8 s: its status and `-` (200), the
/// error code, or status 0 and `no answer in 8 s`.
pub async fn probe_answer(answer: impl std::future::Future<Output = (u16, Value)>) -> (u16, String) {
    match tokio::time::timeout(Duration::from_secs(8), answer).await {
        Ok((200, _)) => (200, "-".to_owned()),
        Ok((s, body)) => (s, error_code(&body)),
        Err(_) => (0, "no answer in 8 s".to_owned()),
    }
}

/// A scenario's temporary folder and the `logs` folder in it (the nodes'
/// and services' output).
pub fn scenario_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    (dir, logs)
}
