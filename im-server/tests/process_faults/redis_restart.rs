//! A private `redis-server` process killed with SIGKILL under load and
//! started again, empty.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::checker::Checker;
use super::harness::{self, acks_flow, probe_answer, wait_for};
use super::private_services::{FreshDatabase, RedisProcess};
use super::seed;
use super::two_nodes::TwoNodes;

/// The bound on the recovery after a Redis restart: from Redis answering
/// again to every client reconnected and synced (each node's pub/sub
/// reconnect backs off up to 5 s, then closes its clients with 3000), both
/// nodes back in the registry (re-announced every `registry_ttl / 3`,
/// about 3.3 s) and every connection's route in the presence table again.
const REDIS_RECOVERY_BOUND: Duration = Duration::from_secs(30);

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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_process_restarted_empty_under_load_loses_and_duplicates_nothing() {
    const OUTAGE: Duration = Duration::from_secs(3);
    let (dir, logs) = harness::scenario_dir();
    let Some(mut redis) = RedisProcess::start_new(logs.clone()).await else { return };
    let tag = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let Some(db) = FreshDatabase::create(&tag).await else { return };
    let seed = seed();
    println!(
        "redis restart test: seed {seed} (PF_SEED={seed} to reuse it), run {tag}, redis on {}",
        redis.addr
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();

    let url = redis.url();
    let mut t = TwoNodes::start(&tag, "r", dir.path(), &logs, [&url, &url], &db.url, &[]).await;
    let checker = t.checker.clone();
    let flowing = |from: Instant, want: usize| acks_flow(checker.clone(), from, want);
    flowing(Instant::now(), 100).await;
    let mut registered = redis.registered_nodes().await;
    registered.sort();
    assert_eq!(registered, t.names, "both nodes in the registry before the outage");

    // The outage.
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
    let (at_kill, outstanding_at_kill) = {
        let c = checker.lock().unwrap();
        (t.lengths_of(&c), c.outstanding_at(Instant::now()))
    };
    let kill_at = redis.kill_9();
    // Probes of each node, each on its own (a slow answer holds no other
    // back): `GET /dispatch` (the registry is in Redis) and a login
    // (sessions are in PostgreSQL), every 250 ms: (node, op, sent,
    // answered, status, error code).
    type Probe = (usize, &'static str, Instant, Instant, u16, String);
    let mut probes: Vec<tokio::task::JoinHandle<Probe>> = Vec::new();
    let apis = t.apis.clone();
    let probe = |n: usize, op: &'static str| {
        let api = apis[n].clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let (status, code) = probe_answer(async {
                match op {
                    "dispatch" => api.probe_get("/dispatch").await,
                    _ => api.try_login("user3").await,
                }
            })
            .await;
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
            let (s, body) = t.apis[1].try_login("user1").await;
            assert_eq!(s, 200, "login during the outage (sessions are in PostgreSQL): {body}");
            let token = body["token"].as_str().expect("token").to_owned();
            laptop = Some((t.add_device("user1-laptop", 1, &token, 1), Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (laptop, laptop_at) = laptop.expect("the laptop connected during the outage");
    let at_restart = t.lengths();
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
                Some((at, Ok(_))) if *at > kill_at && *at < redis_spawned => {
                    by_node[t.node_of[s.device]] += 1
                }
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
                    (
                        c.devices[dev].name.clone(),
                        t.cross_node(&c, dev, &at_kill[dev], Some(&at_restart[dev])),
                    )
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
            closed[t.node_of[dev]] = closed[t.node_of[dev]].max(*gone);
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
            if last_registry == t.names {
                registry_at = Some(Instant::now());
            }
        }
        if routes_at.is_none() {
            missing_routes.clear();
            for (dev, n) in t.node_of.iter().enumerate() {
                let user = checker.lock().unwrap().devices[dev].user;
                if !redis.routes(user.0).await.contains(&t.names[*n]) {
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
            ok = t.apis[0].dispatch().await.is_some() && t.apis[1].dispatch().await.is_some();
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
    let (live_cross, drops_after) = t.live_again(50).await;
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

    t.finish("redis restart", seed, t0, 1).await;
    drop(redis);
    drop(db);
}
