//! Three nodes on Redis and PostgreSQL: one killed with `kill -9`, then a
//! rolling redeploy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::checker::{median_max_ms, Checker};
use super::cluster::{self, Services};
use super::harness::{
    acks_flow, device, free_addr, send_until, settled_history, stop_sending, wait_for, Api, People, SendPlan,
    ServerProcess, TOKEN_SECRET,
};
use super::{os, seed, NO_RATE_LIMITS};

/// The bound on how long a client of a node that died or drains may take
/// to be connected to another node again (generous: a dead node stays in
/// the registry, and may be offered by the dispatcher, for up to its 10 s
/// time-to-live).
const MOVE_BOUND: Duration = Duration::from_secs(30);

/// The bound on a dead node's registry entry expiring: 10 s after its last
/// announcement, plus slack.
const REGISTRY_EXPIRY_BOUND: Duration = Duration::from_secs(15);

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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_loss_and_rolling_redeploy_lose_and_duplicate_nothing() {
    const NODES: usize = 3;
    const USERS: usize = 9;
    const ADMIN: &str = "process-faults-admin-token";
    let Some(services) = Services::provision().await else { return };
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
            "--redis-prefix",
            &services.redis_prefix,
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

    let pairs: Vec<(usize, usize)> = (0..USERS / 2).map(|p| (2 * p, 2 * p + 1)).collect();
    let people = People::create(&api, USERS, &pairs).await;
    let (users, members, group, directs) = (&people.users, &people.members, people.group, &people.directs);

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
    // The dead node's registry entry expires (announced every 3.3 s, kept
    // 10 s), and its presence routes are no longer refreshed: each expires
    // at most `presence_conn_ttl` (60 s) after the kill.
    let kill_ms = services.redis_ms().await.saturating_sub(kill_at.elapsed().as_millis() as u64);
    let mut registry_gone = None;
    while registry_gone.is_none() && Instant::now() < kill_at + REGISTRY_EXPIRY_BOUND {
        if services.live_nodes().await.contains(&victim_name) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            registry_gone = Some(kill_at.elapsed());
        }
    }
    let registry_gone = registry_gone.unwrap_or_else(|| {
        panic!("{victim_name}'s registry entry expires within {REGISTRY_EXPIRY_BOUND:?} of the kill")
    });
    let routes = services.route_expiries(&victim_name).await;
    let latest = routes.iter().max().map(|at| at.saturating_sub(kill_ms));
    assert!(
        routes.iter().all(|at| *at <= kill_ms + 61_000),
        "{victim_name}'s presence routes are not refreshed after the kill: expiries {latest:?} ms after it"
    );
    println!(
        "  {victim_name}'s registry entry expired {} ms after the kill; its {} presence routes expire by then + {} ms (at most 60 s)",
        registry_gone.as_millis(),
        routes.len(),
        latest.unwrap_or(0)
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
    stop_sending(&stop, senders).await;
    let (history, heads, caught_up) = settled_history(&api, &checker, &people.readers(&pairs), members).await;
    // The guard ends before the clients shut down.
    {
        let c = checker.lock().unwrap();
        let verdict = c.verify(&history, members);
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
