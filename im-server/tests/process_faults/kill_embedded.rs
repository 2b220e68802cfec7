//! `kill -9` under load, 20 times, on one node on the embedded store.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_server::store::EmbeddedStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::checker::{median_max_ms, Checker};
use super::harness::{
    self, device, free_addr, send_until, settled_history, stop_sending, wait_for, Api, People, SendPlan,
    ServerProcess, TOKEN_SECRET,
};
use super::{os, seed, NO_RATE_LIMITS};

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

    const PAIRS: [(usize, usize); 2] = [(0, 1), (2, 3)];
    let people = People::create(&api, USERS, &PAIRS).await;
    let (users, ids, members) = (&people.users, &people.ids, &people.members);
    let (group, d01, d23) = (people.group, people.directs[0], people.directs[1]);

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
    stop_sending(&stop, senders).await;

    // Everyone catches up with the stored history, then the verdict.
    let (history, heads, caught_up) = settled_history(&api, &checker, &people.readers(&PAIRS), members).await;
    // The guard ends before the clients shut down.
    {
        let c = checker.lock().unwrap();
        let verdict = c.verify(&history, members);

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
