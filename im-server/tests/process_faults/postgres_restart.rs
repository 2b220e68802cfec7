//! A private PostgreSQL server killed with SIGKILL (every process of it)
//! under load and started again: crash recovery on the same files.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::harness::{self, acks_flow, probe_answer, wait_for};
use super::private_services::{PostgresProcess, RedisProcess};
use super::seed;
use super::two_nodes::TwoNodes;

/// The bound on the recovery after a PostgreSQL restart: from PostgreSQL
/// taking queries again to every send made before it acknowledged and the
/// device that connected during the outage connected and synced (the
/// pool opens new connections on the next call; clients resend what was
/// refused on their next tick).
const POSTGRES_RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// Two `im-server` processes on a private `redis-server` and a private
/// PostgreSQL server, with the load of [`TwoNodes`]. After 100 acks every
/// PostgreSQL process is killed with SIGKILL (a crash: no shutdown
/// checkpoint), kept down 3 s, and started again on the same files and
/// port. Asserted during the outage: no device is disconnected (the nodes
/// keep their connections); `GET /dispatch` keeps answering 200 on both
/// nodes (the registry is in Redis); a login and a history read, which
/// need PostgreSQL, are answered `503 unavailable`, each within 8 s; sends
/// are not acknowledged as stored unless they were (the clients resend
/// the refused ones with their client message id). Within 30 s of
/// PostgreSQL taking queries again: every send made before then is
/// acknowledged, a device that started connecting during the outage (with
/// a token from before it) is connected and synced, and acks flow on both
/// nodes. At the end: 0 acknowledged messages lost, 0 duplicated, every
/// conversation complete and in order on every device, ids gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_process_restarted_under_load_loses_and_duplicates_nothing() {
    const OUTAGE: Duration = Duration::from_secs(3);
    let (dir, logs) = harness::scenario_dir();
    let Some(redis) = RedisProcess::start_new(logs.clone()).await else { return };
    let Some(mut pg) = PostgresProcess::start_new(logs.clone()).await else { return };
    let tag = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let seed = seed();
    println!(
        "postgres restart test: seed {seed} (PF_SEED={seed} to reuse it), run {tag}, postgres on {}",
        pg.addr
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();

    let url = redis.url();
    let mut t = TwoNodes::start(&tag, "p", dir.path(), &logs, [&url, &url], &pg.url(), &[]).await;
    let checker = t.checker.clone();
    let flowing = |from: Instant, want: usize| acks_flow(checker.clone(), from, want);
    flowing(Instant::now(), 100).await;
    // User 1's laptop logs in now and connects during the outage.
    let (_, laptop_token) = t.apis[1].login("user1").await;
    let reader_token = t.users[0].1.clone();
    let group = t.group;

    tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
    let outstanding_at_kill = checker.lock().unwrap().outstanding_at(Instant::now());
    let kill_at = pg.kill_9();
    // Probes of each node, each on its own, every 250 ms: `GET /dispatch`
    // (Redis), a login and a history read (PostgreSQL): (node, op, sent,
    // answered, status, error code).
    type Probe = (usize, &'static str, Instant, Instant, u16, String);
    let mut probes: Vec<tokio::task::JoinHandle<Probe>> = Vec::new();
    let apis = t.apis.clone();
    let probe = |n: usize, op: &'static str| {
        let api = apis[n].clone();
        let token = reader_token.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let path = format!("/api/v1/conversations/{group}/messages?limit=5");
            let (status, code) = probe_answer(async {
                match op {
                    "dispatch" => api.probe_get("/dispatch").await,
                    "login" => api.try_login("user3").await,
                    _ => api.probe_get_with(&path, &token).await,
                }
            })
            .await;
            (n, op, sent, Instant::now(), status, code)
        })
    };
    let mut laptop = None;
    while Instant::now() < kill_at + OUTAGE {
        for n in 0..2 {
            for op in ["dispatch", "login", "history"] {
                probes.push(probe(n, op));
            }
        }
        if laptop.is_none() && Instant::now() > kill_at + Duration::from_secs(1) {
            laptop = Some((t.add_device("user1-laptop", 1, &laptop_token, 1), Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (laptop, laptop_at) = laptop.expect("the laptop started during the outage");
    let spawned = Instant::now();
    let back_at = pg.start().await;
    let mut answered = Vec::new();
    for p in probes {
        answered.push(p.await.expect("probe"));
    }

    // During the outage.
    let (outage_acks, outage_disconnects, laptop_tries) = {
        let c = checker.lock().unwrap();
        let acks = c
            .sends
            .iter()
            .filter(|s| matches!(&s.outcome, Some((at, Ok(_))) if *at > kill_at && *at < spawned))
            .count();
        let drops: Vec<(String, Option<u16>)> = c
            .devices
            .iter()
            .flat_map(|d| {
                d.disconnects
                    .iter()
                    .filter(|(at, _)| *at > kill_at && *at < back_at)
                    .map(|(_, code)| (d.name.clone(), *code))
            })
            .collect();
        let mut tries: BTreeMap<String, usize> = BTreeMap::new();
        for (_, why) in c.devices[laptop].retries.iter().filter(|(at, _)| *at < back_at) {
            *tries.entry(why.chars().take(90).collect()).or_default() += 1;
        }
        (acks, drops, tries)
    };
    let mut by_answer: BTreeMap<String, (usize, u128)> = BTreeMap::new();
    for (n, op, sent, got, status, code) in &answered {
        let e = by_answer.entry(format!("{op}@node{n}: {status} {code}")).or_default();
        e.0 += 1;
        e.1 = e.1.max((*got - *sent).as_millis());
    }
    println!(
        "  outage {} ms, PostgreSQL back {} ms after its spawn (crash recovery); {outstanding_at_kill} sends awaiting \
         an ack at the kill; {outage_acks} acks during the outage; disconnects during it {outage_disconnects:?}",
        (spawned - kill_at).as_millis(),
        (back_at - spawned).as_millis()
    );
    println!("  every probe by answer (count, slowest ms): {by_answer:?}");
    println!(
        "  the device started during the outage: failed attempts before PostgreSQL was back {laptop_tries:?}"
    );
    assert!(
        outage_disconnects.is_empty(),
        "no device is disconnected while PostgreSQL is down: {outage_disconnects:?}"
    );
    // What was sent and answered inside the outage.
    let bad: Vec<_> = answered
        .iter()
        .filter(|p| p.2 > kill_at && p.3 < spawned)
        .filter(|(_, op, _, _, s, code)| match *op {
            "dispatch" => *s != 200,
            _ => !(*s == 503 && code == "unavailable"),
        })
        .collect();
    assert!(
        bad.is_empty(),
        "dispatch answers 200, login and history 503 unavailable, while PostgreSQL is down: {bad:?}"
    );
    let slow: Vec<_> = answered.iter().filter(|p| p.4 == 0).collect();
    assert!(slow.is_empty(), "every probe is answered within 8 s: {slow:?}");
    assert!(
        answered.iter().any(|p| p.1 == "login" && p.2 > kill_at && p.3 < spawned),
        "some logins were answered during the outage"
    );

    // Recovery: everything sent before PostgreSQL was back is acknowledged;
    // the laptop is connected and synced.
    let deadline = back_at + POSTGRES_RECOVERY_BOUND;
    let recovered = |c: &super::checker::Checker| -> Option<(Instant, Instant, Instant)> {
        let mut last_ack = back_at;
        for s in c.sends.iter().filter(|s| s.issued < back_at) {
            let (at, outcome) = s.outcome.as_ref()?;
            outcome.as_ref().ok()?;
            last_ack = last_ack.max(*at);
        }
        let first_ack = c
            .sends
            .iter()
            .filter_map(|s| match &s.outcome {
                Some((at, Ok(_))) if *at > back_at => Some(*at),
                _ => None,
            })
            .min()?;
        let d = &c.devices[laptop];
        let (connected, _) = d.connects.first()?;
        let synced = d.synced.iter().find(|at| *at >= connected)?;
        Some((first_ack, last_ack, *synced))
    };
    let ok = wait_for(&checker, deadline, |c| recovered(c).is_some()).await;
    assert!(
        ok,
        "within {POSTGRES_RECOVERY_BOUND:?} of PostgreSQL being back every earlier send is acknowledged and the \
         laptop connected and synced:\n{}",
        checker.lock().unwrap().summary()
    );
    let (first_ack, last_ack, laptop_synced) = recovered(&checker.lock().unwrap()).expect("recovered");
    let ms = |at: Instant| at.saturating_duration_since(back_at).as_millis();
    println!(
        "  recovery after PostgreSQL was back: first ack after {} ms, every earlier send acknowledged after {} ms, \
         the laptop (started {} ms into the outage) synced after {} ms (bound {} s)",
        ms(first_ack),
        ms(last_ack),
        (laptop_at - kill_at).as_millis(),
        ms(laptop_synced),
        POSTGRES_RECOVERY_BOUND.as_secs()
    );
    let acks_by_node = |from: Instant| -> [usize; 2] {
        let c = checker.lock().unwrap();
        let mut n = [0; 2];
        for s in &c.sends {
            if matches!(&s.outcome, Some((at, Ok(_))) if *at > from) {
                n[t.node_of[s.device]] += 1;
            }
        }
        n
    };
    let live_from = Instant::now();
    flowing(live_from, 50).await;
    let after = acks_by_node(live_from);
    assert!(after.iter().all(|n| *n > 0), "both nodes acknowledge sends again: {after:?}");

    t.finish("postgres restart", seed, t0, 0).await;
    drop(pg);
    drop(redis);
}
