//! Faults on real processes: the `im-server` binary runs as child processes
//! that the tests kill with SIGKILL (`kill -9`) or drain, while im-client
//! devices send and receive all along; a checker
//! (`process_faults/checker.rs`) records every ack and every delivery and
//! compares them with the stored history at the end: 0 acknowledged
//! messages lost, 0 duplicated, every conversation in order on every
//! device, ids gapless.
//!
//! * `kill_9_under_load_twenty_times_loses_and_duplicates_nothing`: one node
//!   on the embedded store, killed and restarted on the same data directory
//!   and port 20 times.
//! * `cluster_node_loss_and_rolling_redeploy_lose_and_duplicate_nothing`
//!   (features `postgres` and `redis`): three nodes on Redis and PostgreSQL
//!   behind a TCP front; one is killed, then each is drained in turn and
//!   restarted.
//! * `redis_process_restarted_empty_under_load_loses_and_duplicates_nothing`
//!   (features `postgres` and `redis`): two nodes on a private
//!   `redis-server` process, which is killed with SIGKILL under load and
//!   started again, empty, 3 s later.
//!
//! Timings are random from a seed printed at the start (`PF_SEED=<n>` runs
//! one again; the processes' scheduling still varies). Run with
//! `-- --nocapture` to see the figures.
#![cfg(all(unix, feature = "embedded", feature = "webhook"))]

// The cluster test uses more of the helpers.
#[cfg_attr(not(all(feature = "postgres", feature = "redis")), allow(dead_code))]
#[path = "process_faults/checker.rs"]
mod checker;
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/cluster.rs"]
mod cluster;
#[cfg_attr(not(all(feature = "postgres", feature = "redis")), allow(dead_code))]
#[path = "process_faults/harness.rs"]
mod harness;
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/redis_restart.rs"]
mod redis_restart;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_protocol::ConversationId;
use im_server::store::EmbeddedStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use checker::{median_max_ms, Checker, Members};
use harness::{
    device, free_addr, join_sends, send_until, wait_for, Api, SendPlan, ServerProcess, TOKEN_SECRET,
};

/// The seed of this run's random timings: `PF_SEED`, or from the clock.
fn seed() -> u64 {
    match std::env::var("PF_SEED") {
        Ok(s) => s.parse().expect("PF_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Flags that keep the rate limits out of the way of the test's load.
const NO_RATE_LIMITS: &[&str] = &[
    "--rate-per-sec",
    "2000",
    "--rate-burst",
    "4000",
    "--user-rate-per-sec",
    "0",
    "--max-connections-per-ip",
    "0",
];

/// The checker itself: each invariant it claims to check is counted when
/// broken, and a clean record passes.
#[test]
fn the_checker_counts_every_kind_of_violation() {
    use im_client::Event;
    use im_protocol::{GroupId, Message, UserId};
    let (a, b) = (UserId(1), UserId(2));
    let g = ConversationId::Group(GroupId(1));
    let msg = |id: u64, from: UserId, body: &str| -> Message {
        serde_json::from_value(serde_json::json!({
            "conv": "g:1", "id": id, "from": from.0, "cmid": format!("c-{body}"), "body": body, "ts": 0
        }))
        .expect("message")
    };
    let members: Members = BTreeMap::from([(g, BTreeSet::from([a, b]))]);
    let ack = |id| Ok(checker::Ack { id, duplicate: false });
    let now = Instant::now();
    let record = |deliveries: [&[(u64, UserId, &str)]; 2], acks: &[(&str, Result<checker::Ack, String>)]| {
        let mut c = Checker::default();
        let devs = [c.add_device("a", a), c.add_device("b", b)];
        for (dev, got) in devs.iter().zip(deliveries) {
            for (id, from, body) in got {
                c.on_event(*dev, Event::Message(msg(*id, *from, body)), now);
            }
        }
        for (body, outcome) in acks {
            let s = c.send_issued(devs[0], g, body.to_string(), now);
            c.send_done(s, outcome.clone(), now);
        }
        c
    };

    // Clean: two acked sends, both stored, both delivered to both devices.
    let history = BTreeMap::from([(g, vec![msg(1, a, "a#0"), msg(2, a, "a#1")])]);
    let all: &[(u64, UserId, &str)] = &[(1, a, "a#0"), (2, a, "a#1")];
    let c = record([all, all], &[("a#0", ack(1)), ("a#1", ack(2))]);
    let v = c.verify(&history, &members);
    assert!(v.clean(), "{}", v.report());
    assert_eq!((v.stored, v.acked, v.deliveries), (2, 2, 4));

    // Broken: id 3 missing from the history, id 2 stored with another
    // body than the send acked with it, id 1 acked twice, a send failed, one
    // unresolved; device b got 2 before 1, 1 twice, never 4, and a body
    // that is not the stored one; a message of a conversation it is not in.
    let history = BTreeMap::from([(g, vec![msg(1, a, "a#0"), msg(2, b, "b#0"), msg(4, a, "a#2")])]);
    let mut c = record(
        [
            &[(1, a, "a#0"), (2, b, "b#0"), (4, a, "a#2")],
            &[(2, b, "b#0"), (1, a, "a#0"), (1, a, "a#0"), (4, a, "x")],
        ],
        &[("a#0", ack(1)), ("a#1", ack(2)), ("a#2", ack(4)), ("a#3", ack(1)), ("a#4", Err("stopped".into()))],
    );
    c.send_issued(0, g, "a#5".into(), now);
    let other = ConversationId::Group(GroupId(9));
    c.devices[1].delivered.entry(other).or_default().push((1, a, "elsewhere".into()));
    let v = c.verify(&history, &members);
    assert!(!v.clean());
    assert_eq!(v.history_gaps, 1, "{}", v.report());
    assert_eq!(v.acked_lost, 2, "a#1 stored as b#0, a#3 acked with a#0's id: {}", v.report());
    assert_eq!(v.duplicate_acks, 1, "{}", v.report());
    assert_eq!((v.failed, v.unresolved), (1, 1), "{}", v.report());
    assert_eq!(v.deliveries_misordered, 1, "{}", v.report());
    assert_eq!(v.deliveries_duplicated, 1, "b got #1 twice: {}", v.report());
    assert_eq!(v.deliveries_wrong, 2, "#4 as x, and a conversation b is not in: {}", v.report());
    assert_eq!(v.deliveries_missing, 0, "{}", v.report());
    // A stored message a device never got.
    let c = record([all, &all[..1]], &[("a#0", ack(1)), ("a#1", ack(2))]);
    let history = BTreeMap::from([(g, vec![msg(1, a, "a#0"), msg(2, a, "a#1")])]);
    let v = c.verify(&history, &members);
    assert_eq!(v.deliveries_missing, 1, "{}", v.report());
    // One send stored twice.
    let history = BTreeMap::from([(g, vec![msg(1, a, "a#0"), msg(2, a, "a#0")])]);
    let v = record([&all[..1], &all[..1]], &[("a#0", ack(1))]).verify(&history, &members);
    assert_eq!(v.stored_twice, 1, "{}", v.report());
}

/// One kill and restart.
struct Cycle {
    kill_at: Instant,
    started: harness::Started,
    /// Killed while the clients were still coming back from the previous kill.
    storm: bool,
    /// Sends awaiting their ack at the kill.
    outstanding: usize,
    /// Acks since the previous restart was ready.
    acks_before: usize,
    /// Acknowledged appends only in the message log at the kill (the
    /// restart replays them).
    logged: usize,
}

/// One node on the embedded store: four users in a group, two direct chats,
/// a client per user sending continuously (user 0 also has a second,
/// listening device). The server process is killed with SIGKILL 20 times
/// under that load and restarted on the same data directory and port
/// (16 times once every client is back and acks flow, 4 times within
/// 150 ms of the restart, while the clients reconnect and sync). Then:
/// every send resolved, every acknowledged message stored under its id,
/// every stored message delivered to every device of its conversation
/// once and in order, ids gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_twenty_times_loses_and_duplicates_nothing() {
    const KILLS: usize = 20;
    const USERS: usize = 4;
    /// Acks between a restart and the next (non-storm) kill, at least.
    const LOAD_ACKS: usize = 20;
    let seed = seed();
    println!("kill -9 test: seed {seed} (PF_SEED={seed} to reuse it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();

    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let mut args = os(&["--data-dir"]);
    args.push(data.clone().into());
    args.extend(os(&["--token-secret", TOKEN_SECRET, "--node-name", "solo"]));
    args.extend(os(NO_RATE_LIMITS));
    let mut server = ServerProcess::new("solo", free_addr(), args, logs);
    server.start().await;
    let api = Api::at(server.http_url());

    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(api.user(&format!("user{i}")).await);
    }
    let ids: Vec<_> = users.iter().map(|u| u.0).collect();
    let group = ConversationId::Group(api.group(&users[0].1, "all", &ids[1..]).await);
    let d01 = ConversationId::direct(ids[0], ids[1]);
    let d23 = ConversationId::direct(ids[2], ids[3]);
    let members: Members = BTreeMap::from([
        (group, ids.iter().copied().collect()),
        (d01, BTreeSet::from([ids[0], ids[1]])),
        (d23, BTreeSet::from([ids[2], ids[3]])),
    ]);

    // Devices 0..4: a phone per user, half through the dispatcher and half
    // on the fixed WebSocket URL; device 4: user 0's tablet, listening only.
    let checker = Checker::shared();
    let dispatcher = format!("{}/dispatch", server.http_url());
    let mut clients = Vec::new();
    for (i, (id, token)) in users.iter().enumerate() {
        let url = if i % 2 == 0 { dispatcher.clone() } else { server.ws_url() };
        clients.push(device(&checker, &format!("user{i}-phone"), *id, token, &url));
    }
    let (_, tablet_token) = api.login("user0").await;
    clients.push(device(&checker, "user0-tablet", ids[0], &tablet_token, &server.ws_url()));
    let devices = clients.len();
    let synced = wait_for(&checker, Instant::now() + Duration::from_secs(15), |c| {
        c.devices.iter().all(|d| !d.synced.is_empty())
    })
    .await;
    assert!(synced, "every client connects and syncs: {}", checker.lock().unwrap().summary());

    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (i, client) in clients.iter().enumerate().take(USERS) {
        let direct = if i < 2 { d01 } else { d23 };
        let plan = SendPlan {
            device: i,
            convs: vec![group, direct, group],
            max: 5000,
            pace: Duration::from_millis(10),
            window: 16,
        };
        senders.push(tokio::spawn(send_until(client.clone(), checker.clone(), plan, stop.clone())));
    }

    // The kills. Reconnect times: from the restarted process's spawn (and
    // from the kill) to each client's next `hello`.
    let mut cycles: Vec<Cycle> = Vec::new();
    let (mut reconnect, mut outage) = (Vec::new(), Vec::new());
    let mut last_ready = Instant::now();
    let everyone_back =
        |c: &Checker, since: Instant| c.devices.iter().all(|d| d.connect_after(since).is_some());
    for k in 0..KILLS {
        let storm = k % 5 == 4;
        if storm {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        } else {
            let since = cycles.last().map(|c| c.kill_at).unwrap_or(t0);
            let deadline = Instant::now() + Duration::from_secs(20);
            let back = wait_for(&checker, deadline, |c| everyone_back(c, since)).await;
            assert!(
                back,
                "kill {k}: not every client reconnected within 20 s of the restart: {}",
                checker.lock().unwrap().summary()
            );
            if let Some(prev) = cycles.last() {
                let c = checker.lock().unwrap();
                for d in &c.devices {
                    let (at, _) = d.connect_after(prev.kill_at).expect("reconnected");
                    reconnect.push(at.saturating_duration_since(prev.started.spawned));
                    outage.push(at.saturating_duration_since(prev.kill_at));
                }
            }
            let flowing = wait_for(&checker, deadline, |c| c.acks_after(last_ready) >= LOAD_ACKS).await;
            assert!(
                flowing,
                "kill {k}: fewer than {LOAD_ACKS} acks within 20 s of the restart: {}",
                checker.lock().unwrap().summary()
            );
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        }
        let (outstanding, acks_before) = {
            let c = checker.lock().unwrap();
            (c.outstanding_at(Instant::now()), c.acks_after(last_ready))
        };
        let kill_at = server.kill_9();
        let logged = EmbeddedStore::logged_appends(data.join("im.redb")).expect("message log readable");
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        let started = server.start().await;
        last_ready = started.ready;
        cycles.push(Cycle { kill_at, started, storm, outstanding, acks_before, logged });
    }
    let last = cycles.last().expect("cycles");
    let back =
        wait_for(&checker, Instant::now() + Duration::from_secs(20), |c| everyone_back(c, last.kill_at))
            .await;
    assert!(
        back,
        "not every client reconnected within 20 s of the last restart: {}",
        checker.lock().unwrap().summary()
    );
    {
        let c = checker.lock().unwrap();
        for d in &c.devices {
            let (at, _) = d.connect_after(last.kill_at).expect("reconnected");
            reconnect.push(at.saturating_duration_since(last.started.spawned));
            outage.push(at.saturating_duration_since(last.kill_at));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for s in senders {
        tasks.push(s.await.expect("sender"));
    }
    join_sends(tasks, Instant::now() + Duration::from_secs(30)).await;

    // Everyone catches up with the stored history, then the verdict.
    let readers = [(group, users[0].1.clone()), (d01, users[0].1.clone()), (d23, users[2].1.clone())];
    let history = harness::histories(&api, &readers).await;
    let heads: BTreeMap<ConversationId, u64> =
        history.iter().map(|(c, m)| (*c, m.last().map(|m| m.id).unwrap_or(0))).collect();
    let caught_up =
        wait_for(&checker, Instant::now() + Duration::from_secs(20), |c| c.caught_up(&heads, &members)).await;
    let history = harness::histories(&api, &readers).await;
    // The guard ends before the clients shut down.
    {
        let c = checker.lock().unwrap();
        let verdict = c.verify(&history, &members);

        let starts: Vec<Duration> = cycles.iter().map(|c| c.started.ready - c.started.spawned).collect();
        let (start_med, start_max) = median_max_ms(&starts).unwrap();
        let (rec_med, rec_max) = median_max_ms(&reconnect).unwrap();
        let (out_med, out_max) = median_max_ms(&outage).unwrap();
        let outstanding: Vec<usize> = cycles.iter().map(|c| c.outstanding).collect();
        let loaded: Vec<usize> = cycles.iter().filter(|c| !c.storm).map(|c| c.acks_before).collect();
        let disconnects: usize = c.devices.iter().map(|d| d.disconnects.len()).sum();
        println!(
            "kill -9 x{} ({} under load after every client was back, {} during the reconnect storm) \
             in {:.1} s, seed {seed}",
            cycles.len(),
            loaded.len(),
            cycles.len() - loaded.len(),
            t0.elapsed().as_secs_f64()
        );
        println!(
            "  {} sends by {USERS} devices, {devices} devices, {disconnects} disconnects seen; heads {}",
            c.sends.len(),
            heads.iter().map(|(c, h)| format!("{c}={h}")).collect::<Vec<_>>().join(" ")
        );
        println!(
            "  sends awaiting their ack at the kills (resent after the reconnect): total {}, min {}, \
             max {}; acks between restart and kill: min {}",
            outstanding.iter().sum::<usize>(),
            outstanding.iter().min().unwrap(),
            outstanding.iter().max().unwrap(),
            loaded.iter().min().unwrap()
        );
        println!(
            "  kills with acknowledged appends only in the message log (replayed at the restart): \
             {} of {}, {} appends",
            cycles.iter().filter(|c| c.logged > 0).count(),
            cycles.len(),
            cycles.iter().map(|c| c.logged).sum::<usize>()
        );
        println!("  server start (spawn -> /healthz): median {start_med} ms, max {start_max} ms");
        println!(
            "  reconnect after restart (spawn -> client hello, {} samples): median {rec_med} ms, \
             max {rec_max} ms; outage (kill -> hello): median {out_med} ms, max {out_max} ms",
            reconnect.len()
        );
        println!("  {}", verdict.report().replace('\n', "\n  "));
        c.assert_clean_end(&verdict, caught_up, &heads, seed, &server.log_lines_with("ERROR"));
        assert!(verdict.acked >= KILLS * LOAD_ACKS, "the load was real: {} acks", verdict.acked);
    }
    for client in &clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
    }
    server.kill_9();
}

/// The bound on how long a client of a node that died or drains may take
/// to be connected to another node again (generous: a dead node stays in
/// the registry, and may be offered by the dispatcher, for up to its 10 s
/// time-to-live).
#[cfg(all(feature = "postgres", feature = "redis"))]
const MOVE_BOUND: Duration = Duration::from_secs(30);

/// Three `im-server` processes on Redis and PostgreSQL (a fresh database
/// each run) behind a TCP front; nine users in a group, four direct chats,
/// a client per user, all finding their node through the dispatcher (via
/// the front) and sending all along. The node with the most clients is
/// killed with SIGKILL: its clients must be connected to the other nodes
/// within 30 s. It is restarted; then a rolling redeploy drains each node
/// in turn (`POST /admin/drain`, SIGTERM for the middle one), waits for the
/// process to exit by itself, and restarts it: its clients must move to the
/// other nodes within 30 s, closed with 3501 (or 3500), and no client may
/// connect to a draining node. At the end, as in the single-node test: 0
/// acknowledged messages lost, 0 duplicated, every conversation complete
/// and in order on every device, ids gapless.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_loss_and_rolling_redeploy_lose_and_duplicate_nothing() {
    const NODES: usize = 3;
    const USERS: usize = 9;
    const ADMIN: &str = "process-faults-admin-token";
    let Some(services) = cluster::Services::provision().await else { return };
    let seed = seed();
    println!("cluster test: seed {seed} (PF_SEED={seed} to reuse it), run {}", services.tag);
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();

    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let addr = free_addr();
        let name = format!("pf{}-n{i}", services.tag);
        let mut args =
            os(&["--node-name", &name, "--public-ws-url", &format!("ws://{addr}/ws"), "--data-dir"]);
        args.push(dir.path().join(format!("n{i}")).into());
        args.extend(os(&[
            "--token-secret",
            TOKEN_SECRET,
            "--redis-url",
            &services.redis_url,
            "--postgres-url",
            &services.postgres_url,
            "--admin-token",
            ADMIN,
            "--drain-window-secs",
            "2",
        ]));
        args.extend(os(NO_RATE_LIMITS));
        nodes.push(ServerProcess::new(&name, addr, args, logs.clone()));
    }
    for n in &mut nodes {
        n.start().await;
    }
    let front = cluster::Front::start(nodes.iter().map(|n| n.addr).collect()).await;
    let api = Api::at(format!("http://{}", front.addr));

    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(api.user(&format!("user{i}")).await);
    }
    let ids: Vec<_> = users.iter().map(|u| u.0).collect();
    let group = ConversationId::Group(api.group(&users[0].1, "all", &ids[1..]).await);
    let directs: Vec<ConversationId> =
        (0..USERS / 2).map(|p| ConversationId::direct(ids[2 * p], ids[2 * p + 1])).collect();
    let mut members: Members = BTreeMap::from([(group, ids.iter().copied().collect())]);
    for (p, d) in directs.iter().enumerate() {
        members.insert(*d, BTreeSet::from([ids[2 * p], ids[2 * p + 1]]));
    }

    // Clients in waves of three, each wave once the dispatcher offers a
    // node the earlier waves are not on (nodes announce their load every
    // few seconds), so the clients spread over the nodes.
    let checker = Checker::shared();
    let dispatcher = format!("http://{}/dispatch", front.addr);
    let mut clients = Vec::new();
    let mut used = BTreeSet::new();
    for wave in 0..USERS / NODES {
        if wave > 0 {
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                match api.dispatch().await {
                    Some(n) if !used.contains(&n) => break,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        for (i, (id, token)) in users.iter().enumerate().skip(wave * NODES).take(NODES) {
            clients.push(device(&checker, &format!("user{i}-phone"), *id, token, &dispatcher));
        }
        let synced = wait_for(&checker, Instant::now() + Duration::from_secs(15), |c| {
            c.devices.iter().all(|d| !d.synced.is_empty())
        })
        .await;
        assert!(
            synced,
            "wave {wave}: every client connects and syncs: {}",
            checker.lock().unwrap().summary()
        );
        let c = checker.lock().unwrap();
        used.extend(c.devices.iter().filter_map(|d| d.connected_to().map(str::to_owned)));
    }
    let placement = |c: &Checker| -> BTreeMap<String, Vec<usize>> {
        let mut by_node: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, d) in c.devices.iter().enumerate() {
            by_node.entry(d.connected_to().unwrap_or("-").to_owned()).or_default().push(i);
        }
        by_node
    };
    let before = placement(&checker.lock().unwrap());
    println!(
        "  placement: {}",
        before.iter().map(|(n, d)| format!("{n}: {}", d.len())).collect::<Vec<_>>().join(", ")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let convs = match directs.get(i / 2) {
            Some(d) => vec![group, *d, group],
            None => vec![group],
        };
        let plan = SendPlan { device: i, convs, max: 3000, pace: Duration::from_millis(20), window: 8 };
        senders.push(tokio::spawn(send_until(client.clone(), checker.clone(), plan, stop.clone())));
    }
    let flowing = |from: Instant, want: usize| acks_flow(checker.clone(), from, want);
    flowing(Instant::now(), 100).await;

    // Node loss: the node with the most clients dies.
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
    let (now_on, outstanding_at_kill) = {
        let c = checker.lock().unwrap();
        (placement(&c), c.outstanding_at(Instant::now()))
    };
    let victim = (0..NODES).max_by_key(|i| now_on.get(&nodes[*i].name).map_or(0, Vec::len)).unwrap();
    let victim_name = nodes[victim].name.clone();
    let on_victim = now_on.get(&victim_name).cloned().unwrap_or_default();
    assert!(!on_victim.is_empty(), "clients on the node to kill: {now_on:?}");
    let kill_at = nodes[victim].kill_9();
    let moved_elsewhere = |c: &Checker, devs: &[usize], since: Instant, from: &str| {
        devs.iter().all(|d| c.devices[*d].connects.iter().any(|(at, n)| *at > since && n != from))
    };
    let moved =
        wait_for(&checker, kill_at + MOVE_BOUND, |c| moved_elsewhere(c, &on_victim, kill_at, &victim_name))
            .await;
    let kill_moves: Vec<Duration> = {
        let c = checker.lock().unwrap();
        on_victim
            .iter()
            .filter_map(|d| c.devices[*d].connects.iter().find(|(at, n)| *at > kill_at && *n != victim_name))
            .map(|(at, _)| *at - kill_at)
            .collect()
    };
    assert!(
        moved,
        "the killed node's clients are on other nodes within {MOVE_BOUND:?}: {kill_moves:?}\n{}",
        checker.lock().unwrap().summary()
    );
    // Why their attempts failed meanwhile (the dispatcher offering the
    // dead node until its registry entry expires shows up here).
    let (attempts, reasons) = {
        let c = checker.lock().unwrap();
        let retries: Vec<&String> = on_victim
            .iter()
            .flat_map(|d| {
                c.devices[*d].retries.iter().filter(|(at, _)| *at > kill_at && *at < kill_at + MOVE_BOUND)
            })
            .map(|(_, why)| why)
            .collect();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for why in &retries {
            *reasons.entry(why.chars().take(90).collect()).or_default() += 1;
        }
        (retries.len(), reasons)
    };
    nodes[victim].start().await;
    let (kmed, kmax) = median_max_ms(&kill_moves).unwrap();
    println!(
        "  kill -9 {victim_name} ({} clients, {outstanding_at_kill} sends awaiting an ack): its clients \
         on other nodes after median {kmed} ms, max {kmax} ms (bound {} s); \
         {attempts} failed attempts meanwhile: {reasons:?}",
        on_victim.len(),
        MOVE_BOUND.as_secs()
    );

    // Rolling redeploy: drain, wait for the exit, restart; node by node.
    let mut drain_moves_all = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        flowing(Instant::now(), 50).await;
        let name = node.name.clone();
        let on_node = placement(&checker.lock().unwrap()).get(&name).cloned().unwrap_or_default();
        let outstanding = checker.lock().unwrap().outstanding_at(Instant::now());
        let drain_at = Instant::now();
        let how = if i == 1 {
            node.sigterm();
            "SIGTERM"
        } else {
            assert_eq!(Api::at(node.http_url()).drain(ADMIN).await, 202, "POST /admin/drain");
            "POST /admin/drain"
        };
        let exit = node.wait_exit(MOVE_BOUND).await;
        assert!(
            exit.is_some_and(|s| s.success()),
            "{name} exits by itself after the drain: {exit:?}\n{}",
            node.log_tail(20)
        );
        let exited_at = Instant::now();
        let moved =
            wait_for(&checker, drain_at + MOVE_BOUND, |c| moved_elsewhere(c, &on_node, drain_at, &name))
                .await;
        let restarted = node.start().await;
        let c = checker.lock().unwrap();
        let moves: Vec<Duration> = on_node
            .iter()
            .filter_map(|d| c.devices[*d].connects.iter().find(|(at, n)| *at > drain_at && *n != name))
            .map(|(at, _)| *at - drain_at)
            .collect();
        assert!(
            moved,
            "{name}'s clients are on other nodes within {MOVE_BOUND:?} of the drain: {moves:?}\n{}",
            c.summary()
        );
        let codes: Vec<Option<u16>> = on_node
            .iter()
            .filter_map(|d| {
                c.devices[*d].disconnects.iter().find(|(at, _)| *at > drain_at).map(|(_, code)| *code)
            })
            .collect();
        assert!(
            codes.iter().all(|code| matches!(code, Some(3501) | Some(3500))),
            "{name}'s clients are closed with 3501 (or 3500 at the end): {codes:?}"
        );
        let onto_draining: Vec<&str> = c
            .devices
            .iter()
            .filter(|d| {
                d.connects.iter().any(|(at, n)| *at > drain_at && *at < restarted.spawned && *n == name)
            })
            .map(|d| d.name.as_str())
            .collect();
        assert!(onto_draining.is_empty(), "clients connected to {name} while it drained: {onto_draining:?}");
        let (med, max) = median_max_ms(&moves).unwrap_or((0, 0));
        println!(
            "  drain {name} by {how} ({} clients, {outstanding} sends awaiting an ack): exited after {} ms; \
             its clients on other nodes after median {med} ms, max {max} ms; close codes {codes:?}",
            on_node.len(),
            (exited_at - drain_at).as_millis()
        );
        drain_moves_all.extend(moves);
    }

    // Everyone back, a last stretch of load, then the verdict.
    let back = wait_for(&checker, Instant::now() + Duration::from_secs(20), |c| {
        c.devices.iter().all(|d| d.connected_to().is_some())
    })
    .await;
    assert!(back, "every client connected at the end: {}", checker.lock().unwrap().summary());
    flowing(Instant::now(), 50).await;
    stop.store(true, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for s in senders {
        tasks.push(s.await.expect("sender"));
    }
    join_sends(tasks, Instant::now() + Duration::from_secs(30)).await;
    let mut readers = vec![(group, users[0].1.clone())];
    for (p, d) in directs.iter().enumerate() {
        readers.push((*d, users[2 * p].1.clone()));
    }
    let history = harness::histories(&api, &readers).await;
    let heads: BTreeMap<ConversationId, u64> =
        history.iter().map(|(c, m)| (*c, m.last().map(|m| m.id).unwrap_or(0))).collect();
    let caught_up =
        wait_for(&checker, Instant::now() + Duration::from_secs(20), |c| c.caught_up(&heads, &members)).await;
    let history = harness::histories(&api, &readers).await;
    // The guard ends before the clients shut down.
    {
        let c = checker.lock().unwrap();
        let verdict = c.verify(&history, &members);
        let after = placement(&c);
        let (dmed, dmax) = median_max_ms(&drain_moves_all).unwrap_or((0, 0));
        println!(
            "cluster: 1 kill -9 + {NODES} drains in {:.1} s, seed {seed}; {} sends by {USERS} devices; \
         drained clients moved after median {dmed} ms, max {dmax} ms",
            t0.elapsed().as_secs_f64(),
            c.sends.len()
        );
        println!(
            "  placement at the end: {}; heads {}",
            after.iter().map(|(n, d)| format!("{n}: {}", d.len())).collect::<Vec<_>>().join(", "),
            heads.iter().map(|(c, h)| format!("{c}={h}")).collect::<Vec<_>>().join(" ")
        );
        println!("  {}", verdict.report().replace('\n', "\n  "));
        let errors: Vec<String> = nodes.iter().flat_map(|n| n.log_lines_with("ERROR")).collect();
        c.assert_clean_end(&verdict, caught_up, &heads, seed, &errors);
    }
    for client in &clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
    }
    for n in &mut nodes {
        n.kill_9();
    }
    drop(front);
}

/// Waits (at most 20 s) until `want` sends were acked after `from`.
#[cfg(all(feature = "postgres", feature = "redis"))]
async fn acks_flow(checker: Arc<std::sync::Mutex<Checker>>, from: Instant, want: usize) {
    let ok =
        wait_for(&checker, Instant::now() + Duration::from_secs(20), |c| c.acks_after(from) >= want).await;
    assert!(ok, "fewer than {want} acks within 20 s: {}", checker.lock().unwrap().summary());
}

/// The bound on the recovery after a Redis restart: from Redis answering
/// again to every client reconnected and synced (each node's pub/sub
/// reconnect backs off up to 5 s, then closes its clients with 3000), both
/// nodes back in the registry (re-announced every `registry_ttl / 3`,
/// about 3.3 s) and every connection's route in the presence table again.
#[cfg(all(feature = "postgres", feature = "redis"))]
const REDIS_RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// An error answer's code (`{"error": {"code": ..}}` or `{"code": ..}`).
#[cfg(all(feature = "postgres", feature = "redis"))]
fn error_code(body: &serde_json::Value) -> String {
    let code = body["error"]["code"].as_str().or(body["code"].as_str()).or(body["error"].as_str());
    code.unwrap_or("-").to_owned()
}

/// Two `im-server` processes on a private `redis-server` process and a
/// fresh PostgreSQL database; four users in a group and two direct chats
/// that cross the nodes (users 0 and 1 on node 0, users 2 and 3 and user
/// 0's tablet on node 1, each on its node's WebSocket URL), all four
/// phones sending. Under that load redis-server is killed with SIGKILL,
/// kept down 3 s, and started again on the same port, empty (no
/// persistence). Asserted: during the outage both nodes keep acknowledging
/// sends, none fails (PostgreSQL stores them; publications wait in the
/// publish backlog); logins keep working (sessions are in PostgreSQL);
/// `GET /dispatch` never offers a node while the registry is unreachable
/// (answered within the outage: 503 `unavailable`; the others hang until
/// Redis is back). Within 30 s of Redis answering again: every client
/// connected at the kill was closed with 3000 by its node (its pub/sub
/// subscription was lost and came back), reconnected and synced; a device
/// started during the outage is connected and synced; both nodes are in
/// the registry again, every connection's route is in the presence table,
/// `/dispatch` answers on both nodes; then cross-node live delivery flows
/// with no client dropped. At the end: 0 acknowledged messages lost, 0
/// duplicated, every conversation complete and in order on every device,
/// ids gapless.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_process_restarted_empty_under_load_loses_and_duplicates_nothing() {
    const OUTAGE: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let Some(mut redis) = redis_restart::RedisProcess::start_new(logs.clone()).await else { return };
    let tag = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let Some(db) = redis_restart::FreshDatabase::create(&tag).await else { return };
    let seed = seed();
    println!(
        "redis restart test: seed {seed} (PF_SEED={seed} to reuse it), run {tag}, redis on {}",
        redis.addr
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();

    let mut nodes = Vec::new();
    for i in 0..2 {
        let addr = free_addr();
        let name = format!("pf{tag}-r{i}");
        let mut args =
            os(&["--node-name", &name, "--public-ws-url", &format!("ws://{addr}/ws"), "--data-dir"]);
        args.push(dir.path().join(format!("n{i}")).into());
        args.extend(os(&[
            "--token-secret",
            TOKEN_SECRET,
            "--redis-url",
            &redis.url(),
            "--postgres-url",
            &db.url,
        ]));
        args.extend(os(NO_RATE_LIMITS));
        nodes.push(ServerProcess::new(&name, addr, args, logs.clone()));
    }
    for n in &mut nodes {
        n.start().await;
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let apis: Vec<Api> = nodes.iter().map(|n| Api::at(n.http_url())).collect();

    let mut users = Vec::new();
    for i in 0..4 {
        users.push(apis[0].user(&format!("user{i}")).await);
    }
    let ids: Vec<_> = users.iter().map(|u| u.0).collect();
    let group = ConversationId::Group(apis[0].group(&users[0].1, "all", &ids[1..]).await);
    let d02 = ConversationId::direct(ids[0], ids[2]);
    let d13 = ConversationId::direct(ids[1], ids[3]);
    let members: Members = BTreeMap::from([
        (group, ids.iter().copied().collect()),
        (d02, BTreeSet::from([ids[0], ids[2]])),
        (d13, BTreeSet::from([ids[1], ids[3]])),
    ]);

    // Devices 0..4: the phones (users 0 and 1 on node 0, 2 and 3 on node
    // 1); device 4: user 0's tablet on node 1, listening only.
    let checker = Checker::shared();
    let mut clients = Vec::new();
    let mut node_of = Vec::new();
    for (i, (id, token)) in users.iter().enumerate() {
        let n = i / 2;
        clients.push(device(&checker, &format!("user{i}-phone"), *id, token, &nodes[n].ws_url()));
        node_of.push(n);
    }
    let (_, tablet_token) = apis[1].login("user0").await;
    clients.push(device(&checker, "user0-tablet", ids[0], &tablet_token, &nodes[1].ws_url()));
    node_of.push(1);
    let synced = wait_for(&checker, Instant::now() + Duration::from_secs(15), |c| {
        c.devices.iter().all(|d| !d.synced.is_empty())
    })
    .await;
    assert!(synced, "every client connects and syncs: {}", checker.lock().unwrap().summary());

    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (i, client) in clients.iter().enumerate().take(4) {
        let direct = if i % 2 == 0 { d02 } else { d13 };
        let plan = SendPlan {
            device: i,
            convs: vec![group, direct, group],
            max: 5000,
            pace: Duration::from_millis(20),
            window: 8,
        };
        senders.push(tokio::spawn(send_until(client.clone(), checker.clone(), plan, stop.clone())));
    }
    let flowing = |from: Instant, want: usize| acks_flow(checker.clone(), from, want);
    flowing(Instant::now(), 100).await;
    let mut registered = redis.registered_nodes().await;
    registered.sort();
    assert_eq!(registered, names, "both nodes in the registry before the outage");

    // Device 5, user 1's laptop, will connect to node 1 during the outage.
    node_of.push(1);
    // Deliveries so far, per device and conversation (to slice what came when).
    let lengths = |c: &Checker| -> Vec<BTreeMap<ConversationId, usize>> {
        c.devices.iter().map(|d| d.delivered.iter().map(|(conv, v)| (*conv, v.len())).collect()).collect()
    };
    // Deliveries to device `dev` between two snapshots (`None`: now) of
    // messages whose sender's phone is on the other node.
    let cross_node = |c: &Checker,
                      dev: usize,
                      from: &BTreeMap<ConversationId, usize>,
                      to: Option<&BTreeMap<ConversationId, usize>>|
     -> usize {
        let here = node_of.get(dev).copied().unwrap_or(1);
        c.devices[dev]
            .delivered
            .iter()
            .map(|(conv, got)| {
                let a = from.get(conv).copied().unwrap_or(0);
                let b = to.map_or(got.len(), |m| m.get(conv).copied().unwrap_or(0)).max(a);
                got[a..b]
                    .iter()
                    .filter(|(_, sender, _)| {
                        ids.iter().position(|u| u == sender).map(|i| i / 2) != Some(here)
                    })
                    .count()
            })
            .sum()
    };

    // The outage.
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
    let (at_kill, outstanding_at_kill) = {
        let c = checker.lock().unwrap();
        (lengths(&c), c.outstanding_at(Instant::now()))
    };
    let kill_at = redis.kill_9();
    // Probes of each node, each on its own (a slow answer holds no other
    // back): `GET /dispatch` (the registry is in Redis) and a login
    // (sessions are in PostgreSQL), every 250 ms: (node, op, sent,
    // answered, status, error code).
    type Probe = (usize, &'static str, Instant, Instant, u16, String);
    let mut probes: Vec<tokio::task::JoinHandle<Probe>> = Vec::new();
    let probe = |n: usize, op: &'static str| {
        let api = apis[n].clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let answer = match op {
                "dispatch" => tokio::time::timeout(Duration::from_secs(8), api.probe_get("/dispatch")).await,
                _ => tokio::time::timeout(Duration::from_secs(8), api.try_login("user3")).await,
            };
            let (status, code) = match answer {
                Ok((s, _)) if s == 200 => (s, "-".to_owned()),
                Ok((s, body)) => (s, error_code(&body)),
                Err(_) => (0, "no answer in 8 s".to_owned()),
            };
            (n, op, sent, Instant::now(), status, code)
        })
    };
    // A new connection while Redis is away: user 1's laptop on node 1,
    // logged in 1 s into the outage.
    let mut laptop = None;
    while Instant::now() < kill_at + OUTAGE {
        for n in 0..2 {
            probes.push(probe(n, "dispatch"));
            probes.push(probe(n, "login"));
        }
        if laptop.is_none() && Instant::now() > kill_at + Duration::from_secs(1) {
            let (s, body) = apis[1].try_login("user1").await;
            assert_eq!(s, 200, "login during the outage (sessions are in PostgreSQL): {body}");
            let token = body["token"].as_str().expect("token").to_owned();
            clients.push(device(&checker, "user1-laptop", ids[1], &token, &nodes[1].ws_url()));
            laptop = Some((clients.len() - 1, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (laptop, laptop_at) = laptop.expect("the laptop connected during the outage");
    let at_restart = lengths(&checker.lock().unwrap());
    let redis_spawned = Instant::now();
    let restart_at = redis.start().await;
    let keys_after_restart = redis.dbsize().await;
    let mut answered = Vec::new();
    for p in probes {
        answered.push(p.await.expect("probe"));
    }
    let (outage_acks, outage_acks_by_node, outage_failures, outage_cross, laptop_connected) = {
        let c = checker.lock().unwrap();
        let mut by_node = [0usize; 2];
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        for s in &c.sends {
            match &s.outcome {
                Some((at, Ok(_))) if *at > kill_at && *at < redis_spawned => by_node[node_of[s.device]] += 1,
                Some((at, Err(e))) if *at > kill_at && *at < redis_spawned => {
                    *failures.entry(e.chars().take(80).collect()).or_default() += 1
                }
                _ => {}
            }
        }
        // The laptop's connect: how long after its start, and whether before Redis was back.
        let laptop_connected = c.devices[laptop]
            .connects
            .first()
            .map(|(at, _)| (at.saturating_duration_since(laptop_at), *at < redis_spawned));
        (
            by_node[0] + by_node[1],
            by_node,
            failures,
            (0..laptop)
                .map(|dev| {
                    (c.devices[dev].name.clone(), cross_node(&c, dev, &at_kill[dev], Some(&at_restart[dev])))
                })
                .collect::<Vec<_>>(),
            laptop_connected,
        )
    };
    let during = |p: &&Probe| p.2 > kill_at && p.3 < redis_spawned;
    let mut probe_counts: BTreeMap<String, (usize, u128)> = BTreeMap::new();
    for (n, op, sent, got, status, code) in answered.iter().filter(during) {
        let e = probe_counts.entry(format!("{op}@node{n}: {status} {code}")).or_default();
        e.0 += 1;
        e.1 = e.1.max((*got - *sent).as_millis());
    }
    println!(
        "  outage {} ms ({outstanding_at_kill} sends awaiting an ack at the kill; redis back with {keys_after_restart:?} \
         keys): {outage_acks} acks (node0 {}, node1 {}), failed sends {outage_failures:?}; \
         deliveries of messages sent on the other node (by sync: pub/sub is down) {outage_cross:?}; \
         device connecting during the outage: connected after, before Redis was back: {laptop_connected:?}",
        (redis_spawned - kill_at).as_millis(),
        outage_acks_by_node[0],
        outage_acks_by_node[1]
    );
    {
        let c = checker.lock().unwrap();
        let d = &c.devices[laptop];
        let connected = d.connects.first().map(|(at, n)| {
            format!(
                "{} ms after its start, {} ms after Redis answered again, on {n}",
                (*at - laptop_at).as_millis(),
                at.saturating_duration_since(restart_at).as_millis()
            )
        });
        let mut why: BTreeMap<String, usize> = BTreeMap::new();
        for (_, r) in d.retries.iter().filter(|(at, _)| *at < restart_at) {
            *why.entry(r.chars().take(90).collect()).or_default() += 1;
        }
        println!("  the device started during the outage: first hello {connected:?}; failed attempts before Redis was back {why:?}");
    }
    let mut slowest: BTreeMap<String, (usize, u128)> = BTreeMap::new();
    for (n, op, sent, got, status, code) in &answered {
        let e = slowest.entry(format!("{op}@node{n}: {status} {code}")).or_default();
        e.0 += 1;
        e.1 = e.1.max((*got - *sent).as_millis());
    }
    println!("  every probe sent during the outage by answer (count, slowest ms): {slowest:?}");
    assert!(
        !answered.iter().any(|p| p.1 == "dispatch" && p.4 == 200 && p.3 < redis_spawned),
        "no node is dispatched while the registry is unreachable"
    );
    println!(
        "  probes sent and answered during the outage (count, slowest ms): {probe_counts:?}; {} more overlapped the restart",
        answered.len() - answered.iter().filter(during).count()
    );
    assert!(
        outage_acks_by_node.iter().all(|n| *n > 0),
        "both nodes acknowledge sends while Redis is down: {outage_acks_by_node:?}"
    );
    assert!(outage_failures.is_empty(), "no send fails while Redis is down: {outage_failures:?}");
    let bad: Vec<_> = answered
        .iter()
        .filter(during)
        .filter(|(_, op, _, _, s, code)| match *op {
            "login" => *s != 200,
            _ => !(*s == 503 && code == "unavailable"),
        })
        .collect();
    assert!(bad.is_empty(), "dispatch answers 503 unavailable, login 200, while Redis is down: {bad:?}");

    // Recovery: every client closed with 3000, back and synced; registry and routes rewritten.
    let deadline = restart_at + REDIS_RECOVERY_BOUND;
    // The devices connected at the kill: closed with 3000 (their node's
    // subscription came back), reconnected, synced. The laptop, whose
    // connect raced that close: connected and synced after the last of
    // node 1's closes.
    let reconnected = |c: &Checker| -> Option<Instant> {
        let mut last = restart_at;
        let mut closed = [restart_at; 2];
        for (dev, d) in c.devices.iter().enumerate().take(laptop) {
            let (gone, _) = d.disconnects.iter().find(|(at, code)| *at > kill_at && *code == Some(3000))?;
            let (back, _) = d.connects.iter().find(|(at, _)| at > gone)?;
            let synced = d.synced.iter().find(|at| *at > back)?;
            last = last.max(*synced);
            closed[node_of[dev]] = closed[node_of[dev]].max(*gone);
        }
        let d = &c.devices[laptop];
        let (back, _) = d.connects.iter().find(|(at, _)| *at > closed[1])?;
        last = last.max(*d.synced.iter().find(|at| *at > back)?);
        Some(last)
    };
    let clients_back = wait_for(&checker, deadline, |c| reconnected(c).is_some()).await;
    let clients_back_at = reconnected(&checker.lock().unwrap());
    let close_codes: BTreeMap<String, Vec<Option<u16>>> = {
        let c = checker.lock().unwrap();
        c.devices
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.disconnects.iter().filter(|(at, _)| *at > kill_at).map(|(_, c)| *c).collect(),
                )
            })
            .collect()
    };
    assert!(
        clients_back,
        "within {REDIS_RECOVERY_BOUND:?} of Redis being back every client is closed with 3000, \
         reconnects and syncs: close codes since the kill {close_codes:?}\n{}",
        checker.lock().unwrap().summary()
    );
    let (mut registry_at, mut routes_at) = (None, None);
    let (mut last_registry, mut missing_routes) = (Vec::new(), Vec::new());
    while Instant::now() < deadline && (registry_at.is_none() || routes_at.is_none()) {
        if registry_at.is_none() {
            last_registry = redis.registered_nodes().await;
            last_registry.sort();
            if last_registry == names {
                registry_at = Some(Instant::now());
            }
        }
        if routes_at.is_none() {
            missing_routes.clear();
            for (dev, n) in node_of.iter().enumerate() {
                let user = checker.lock().unwrap().devices[dev].user;
                if !redis.routes(user.0).await.contains(&names[*n]) {
                    missing_routes.push(dev);
                }
            }
            if missing_routes.is_empty() {
                routes_at = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        registry_at.is_some(),
        "both nodes re-registered within {REDIS_RECOVERY_BOUND:?}: {last_registry:?}"
    );
    assert!(
        routes_at.is_some(),
        "every connection's route rewritten within {REDIS_RECOVERY_BOUND:?}; devices without one: {missing_routes:?}"
    );
    let dispatch_ok = {
        let mut ok = false;
        while !ok && Instant::now() < deadline {
            ok = apis[0].dispatch().await.is_some() && apis[1].dispatch().await.is_some();
            if !ok {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        ok.then(Instant::now)
    };
    assert!(
        dispatch_ok.is_some(),
        "GET /dispatch answers again on both nodes within {REDIS_RECOVERY_BOUND:?}"
    );
    let recovered_at =
        [clients_back_at, registry_at, routes_at, dispatch_ok].into_iter().flatten().max().unwrap();
    let ms = |t: Option<Instant>| t.map_or(0, |t| t.saturating_duration_since(restart_at).as_millis());

    // Cross-node live delivery again, with no client dropping meanwhile.
    let before_live = lengths(&checker.lock().unwrap());
    let live_from = Instant::now();
    flowing(live_from, 50).await;
    let (live_cross, drops_after) = {
        let c = checker.lock().unwrap();
        let drops: usize =
            c.devices.iter().map(|d| d.disconnects.iter().filter(|(at, _)| *at > live_from).count()).sum();
        ((0..before_live.len()).map(|dev| cross_node(&c, dev, &before_live[dev], None)).sum::<usize>(), drops)
    };
    println!(
        "  recovery after Redis answered again: clients closed (3000), back and synced after {} ms, \
         registry after {} ms, routes after {} ms, dispatch after {} ms: recovered in {} ms (bound {} s); \
         then {live_cross} cross-node live deliveries in 50 acks, {drops_after} disconnects",
        ms(clients_back_at),
        ms(registry_at),
        ms(routes_at),
        ms(dispatch_ok),
        ms(Some(recovered_at)),
        REDIS_RECOVERY_BOUND.as_secs()
    );
    println!("  close codes since the kill: {close_codes:?}");
    assert!(live_cross > 0, "cross-node live delivery works again after the recovery");
    assert_eq!(drops_after, 0, "no client is dropped once recovered");

    stop.store(true, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for s in senders {
        tasks.push(s.await.expect("sender"));
    }
    join_sends(tasks, Instant::now() + Duration::from_secs(30)).await;
    let readers = [(group, users[0].1.clone()), (d02, users[0].1.clone()), (d13, users[1].1.clone())];
    let history = harness::histories(&apis[1], &readers).await;
    let heads: BTreeMap<ConversationId, u64> =
        history.iter().map(|(c, m)| (*c, m.last().map(|m| m.id).unwrap_or(0))).collect();
    let caught_up =
        wait_for(&checker, Instant::now() + Duration::from_secs(20), |c| c.caught_up(&heads, &members)).await;
    let history = harness::histories(&apis[1], &readers).await;
    {
        let c = checker.lock().unwrap();
        let verdict = c.verify(&history, &members);
        let warnings: BTreeMap<&str, usize> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.log_lines_with(" WARN ").len() + n.log_lines_with("ERROR").len()))
            .collect();
        println!(
            "redis restart: {:.1} s, seed {seed}; {} sends by 4 devices, {} devices; heads {}; \
             node log warnings+errors {warnings:?}",
            t0.elapsed().as_secs_f64(),
            c.sends.len(),
            c.devices.len(),
            heads.iter().map(|(c, h)| format!("{c}={h}")).collect::<Vec<_>>().join(" ")
        );
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for line in nodes.iter().flat_map(|n| n.log_lines_with(" WARN ")) {
            // The message, without the timestamp and the fields.
            let text = line.split(" WARN ").nth(1).unwrap_or("");
            let text: Vec<&str> = text.split_whitespace().filter(|w| !w.contains('=')).collect();
            *kinds.entry(text.join(" ").chars().take(70).collect()).or_default() += 1;
        }
        println!("  node warnings by kind: {kinds:?}");
        println!("  {}", verdict.report().replace('\n', "\n  "));
        let errors: Vec<String> = nodes.iter().flat_map(|n| n.log_lines_with("ERROR")).collect();
        c.assert_clean_end(&verdict, caught_up, &heads, seed, &errors);
    }
    for client in &clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
    }
    for n in &mut nodes {
        n.kill_9();
    }
    drop(redis);
    drop(db);
}
