//! A network partition between one node and Redis: its Redis traffic is
//! blackholed (held, not refused) for 17 s, under load, then healed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::blackhole::BlackholeProxy;
use super::checker::Checker;
use super::harness::{self, acks_flow, error_code, wait_for};
use super::private_services::{FreshDatabase, RedisProcess};
use super::seed;
use super::two_nodes::TwoNodes;

/// How long the partition lasts.
const PARTITION: Duration = Duration::from_secs(17);

/// The bound on noticing it, seen by the cut-off node's clients as a
/// close with 3502 (`node_isolated`): the subscription is pinged every 3 s, a ping may take
/// 5 s, and the connections are told after the subscription has been lost
/// for 5 s more (`im_server::redis::broker::LOST_NOTICE_AFTER`), plus
/// slack for a loaded machine.
const DETECT_BOUND: Duration = Duration::from_secs(15);

/// The bound on the other node's dispatcher leaving the cut-off node out:
/// its registry entry expires 10 s after its last announcement (made at
/// most 3.3 s before the cut), plus slack.
const DISPATCH_BOUND: Duration = Duration::from_secs(12);

/// The bound on the recovery after the partition heals: the cut-off
/// node's subscription comes back (its reconnect backs off up to 5 s), it
/// closes its clients with 3000, they reconnect and sync; it announces
/// itself again (every 3.3 s).
const HEAL_BOUND: Duration = Duration::from_secs(30);

/// Two nodes on a private `redis-server` and a fresh PostgreSQL database
/// with the load of [`TwoNodes`]; node 0 reaches Redis only through a
/// proxy. After 100 acks the proxy blackholes for 17 s: node 0's Redis
/// connections stay open but nothing passes. Asserted during the
/// partition: both nodes keep acknowledging sends (PostgreSQL stores them);
/// node 0's clients are closed with 3502 within 15 s of the cut (node 0
/// noticed its subscription was lost: they must not sit on a node that
/// misses the other node's messages) and come back; node 0 answers
/// `GET /dispatch` with 503 `unavailable` (its registry is out of reach)
/// within 3 s each; node 1's dispatcher offers only node 1 from 12 s after
/// the cut on. Within 30 s of the heal: node 0's clients are closed with
/// 3000 again (the subscription is back: what was published meanwhile
/// missed them), reconnect and sync; node 0 is in the registry again and
/// offered; cross-node live delivery flows with no client dropped. At the
/// end: 0 acknowledged messages lost, 0 duplicated, every conversation
/// complete and in order on every device, ids gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_between_a_node_and_redis_is_detected_and_healed_by_sync() {
    let (dir, logs) = harness::scenario_dir();
    let Some(redis) = RedisProcess::start_new(logs.clone()).await else { return };
    let tag = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let Some(db) = FreshDatabase::create(&tag).await else { return };
    let proxy = BlackholeProxy::start(redis.addr).await;
    let seed = seed();
    println!("partition test: seed {seed} (PF_SEED={seed} to reuse it), run {tag}, redis on {}", redis.addr);
    let t0 = Instant::now();

    let (via_proxy, direct) = (proxy.redis_url(), redis.url());
    let t = TwoNodes::start(&tag, "b", dir.path(), &logs, [&via_proxy, &direct], &db.url, &[]).await;
    let checker = t.checker.clone();
    let flowing = |from: Instant, want: usize| acks_flow(checker.clone(), from, want);
    flowing(Instant::now(), 100).await;
    let mut registered = redis.registered_nodes().await;
    registered.sort();
    assert_eq!(registered, t.names, "both nodes in the registry before the partition");
    let cut_off: Vec<usize> = (0..t.node_of.len()).filter(|d| t.node_of[*d] == 0).collect();

    let cut_at = proxy.cut();
    // `GET /dispatch` on each node every 250 ms, each on its own: (node,
    // sent, answered, status, code or node offered).
    type Probe = (usize, Instant, Instant, u16, String);
    let mut probes: Vec<tokio::task::JoinHandle<Probe>> = Vec::new();
    while Instant::now() < cut_at + PARTITION {
        for n in 0..2 {
            let api = t.apis[n].clone();
            probes.push(tokio::spawn(async move {
                let sent = Instant::now();
                let answer = tokio::time::timeout(Duration::from_secs(8), api.probe_get("/dispatch")).await;
                let (status, what) = match answer {
                    Ok((200, body)) => (200, body["node"].as_str().unwrap_or("-").to_owned()),
                    Ok((s, body)) => (s, error_code(&body)),
                    Err(_) => (0, "no answer in 8 s".to_owned()),
                };
                (n, sent, Instant::now(), status, what)
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let heal_at = proxy.heal();
    let mut answered = Vec::new();
    for p in probes {
        answered.push(p.await.expect("probe"));
    }

    // During the partition.
    let (acks_by_node, detected, rejoined) = {
        let c = checker.lock().unwrap();
        let mut acks = [0usize; 2];
        for s in &c.sends {
            if matches!(&s.outcome, Some((at, Ok(_))) if *at > cut_at && *at < heal_at) {
                acks[t.node_of[s.device]] += 1;
            }
        }
        // Each cut-off device: its first 3502 close after the cut, and its reconnect.
        let mut detected = Vec::new();
        let mut rejoined = Vec::new();
        for &dev in &cut_off {
            let d = &c.devices[dev];
            let close =
                d.disconnects.iter().find(|(at, code)| *at > cut_at && *at < heal_at && *code == Some(3502));
            detected.push(close.map(|(at, _)| *at - cut_at));
            rejoined.push(close.and_then(|(gone, _)| d.connect_after(*gone)).map(|(at, _)| *at - cut_at));
        }
        (acks, detected, rejoined)
    };
    let mut by_answer: BTreeMap<String, (usize, u128)> = BTreeMap::new();
    for (n, sent, got, status, what) in &answered {
        let e = by_answer.entry(format!("node{n}: {status} {what}")).or_default();
        e.0 += 1;
        e.1 = e.1.max((*got - *sent).as_millis());
    }
    println!(
        "  partition {} ms: acks node0 {}, node1 {}; node0's devices closed with 3502 after {detected:?}, \
         back after {rejoined:?}",
        (heal_at - cut_at).as_millis(),
        acks_by_node[0],
        acks_by_node[1]
    );
    println!("  /dispatch during the partition by answer (count, slowest ms): {by_answer:?}");
    assert!(
        acks_by_node.iter().all(|n| *n > 0),
        "both nodes acknowledge sends during the partition: {acks_by_node:?}"
    );
    assert!(
        detected.iter().all(|d| d.is_some_and(|d| d <= DETECT_BOUND)),
        "node 0's clients are told (3502) within {DETECT_BOUND:?} of the cut: {detected:?}"
    );
    let during = |p: &&Probe| p.2 < heal_at;
    let bad0: Vec<_> = answered
        .iter()
        .filter(during)
        .filter(|p| p.0 == 0 && !(p.3 == 503 && p.4 == "unavailable" && p.2 - p.1 <= Duration::from_secs(3)))
        .collect();
    assert!(bad0.is_empty(), "node 0 answers /dispatch 503 unavailable within 3 s while cut off: {bad0:?}");
    let bad1: Vec<_> = answered
        .iter()
        .filter(during)
        .filter(|p| p.0 == 1 && p.1 > cut_at + DISPATCH_BOUND && !(p.3 == 200 && p.4 == t.names[1]))
        .collect();
    assert!(
        bad1.is_empty(),
        "node 1's dispatcher offers only node 1 from {DISPATCH_BOUND:?} after the cut on: {bad1:?}"
    );
    assert!(
        answered.iter().filter(during).any(|p| p.0 == 1 && p.1 > cut_at + DISPATCH_BOUND),
        "node 1's dispatcher was asked late in the partition"
    );

    // The heal: node 0's clients told again, back and synced; node 0 registered again.
    let deadline = heal_at + HEAL_BOUND;
    let healed = |c: &Checker| -> Option<Instant> {
        let mut last = heal_at;
        for &dev in &cut_off {
            let d = &c.devices[dev];
            let (gone, _) = d.disconnects.iter().find(|(at, code)| *at > heal_at && *code == Some(3000))?;
            let (back, _) = d.connect_after(*gone)?;
            last = last.max(*d.synced.iter().find(|at| *at > back)?);
        }
        Some(last)
    };
    let ok = wait_for(&checker, deadline, |c| healed(c).is_some()).await;
    assert!(
        ok,
        "within {HEAL_BOUND:?} of the heal node 0's clients are closed with 3000, reconnect and sync:\n{}",
        checker.lock().unwrap().summary()
    );
    let clients_back = healed(&checker.lock().unwrap()).expect("healed");
    let mut registry_at = None;
    while registry_at.is_none() && Instant::now() < deadline {
        let mut nodes = redis.registered_nodes().await;
        nodes.sort();
        if nodes == t.names {
            registry_at = Some(Instant::now());
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let registry_at = registry_at.expect("node 0 is in the registry again");
    let ms = |at: Instant| at.saturating_duration_since(heal_at).as_millis();

    // Cross-node live delivery again, nobody dropped meanwhile.
    let (live_cross, drops_after) = t.live_again(50).await;
    println!(
        "  after the heal: node0's clients closed (3000), back and synced after {} ms, node0 registered after {} ms \
         (bound {} s); then {live_cross} cross-node live deliveries in 50 acks, {drops_after} disconnects",
        ms(clients_back),
        ms(registry_at),
        HEAL_BOUND.as_secs()
    );
    assert!(live_cross > 0, "cross-node live delivery works again after the heal");
    assert_eq!(drops_after, 0, "no client is dropped once healed");

    t.finish("partition", seed, t0, 1).await;
    drop(proxy);
    drop(redis);
    drop(db);
}
