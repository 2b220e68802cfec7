//! How long 100 `im-client` clients take to be back and caught up after the
//! server is killed and restarted, and whether anything was lost or
//! duplicated on the way.
//!
//! `cargo bench -p im-tests --bench resync [-- INTERVAL_MS]`
//!
//! Starts a server in this process on loopback on the embedded persistent
//! store (redb in a temporary directory), registers 100 users spread over 10
//! groups (user `i` is in groups `i % 10` and `i / 10`: 19 members per
//! group, 2 groups per user) and connects one `im-client` per user (half
//! through the dispatcher, half on the WebSocket URL; default client options,
//! i.e. the default reconnect policy). Every client sends a message to one of
//! its groups every INTERVAL_MS (default 250) without waiting for acks. Each
//! round then kills the server (`RunningServer::crash`: sockets dropped, no
//! close frames, no flush), starts a new one on the same data directory and
//! the same port, and measures the time from the kill until every client has
//! emitted `Synced` after its reconnect. 3 rounds; the median is printed.
//!
//! Afterwards the sends are stopped and awaited, and every acknowledged
//! message is checked against every member device's event stream: received
//! once, in order (ids of each conversation 1, 2, 3, … with no gap). Lost
//! and duplicated counts are printed; the process exits non-zero unless both
//! are 0. Bounded: every wait has a deadline, the whole run well under 2
//! minutes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use im_client::core::{ConversationId, GroupId, MessageId};
use im_client::{Client, Event, Events};
use im_server::{RunningServer, ServerConfig};
use im_tests::{builder, Api};
use tokio::time::Instant;

const CLIENTS: usize = 100;
const GROUPS: usize = 10;
const ROUNDS: usize = 3;
/// Sending before the first kill and between rounds.
const STEADY: Duration = Duration::from_secs(1);
/// Longest wait for all clients to resync in one round.
const RESYNC_LIMIT: Duration = Duration::from_secs(20);
const TIME_LIMIT: Duration = Duration::from_secs(110);

/// What one client's event stream showed, with arrival times.
#[derive(Default)]
struct Seen {
    /// Messages in arrival order: (conv, id, body).
    messages: Vec<(ConversationId, MessageId, String)>,
    disconnected: Vec<Instant>,
    synced: Vec<Instant>,
    stopped: bool,
}

type Shared = Arc<Mutex<Seen>>;

fn collect(mut events: Events) -> Shared {
    let seen = Shared::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let now = Instant::now();
            let mut s = s.lock().unwrap();
            match e {
                Event::Message(m) => s.messages.push((m.conv, m.id, m.body)),
                Event::Disconnected { .. } => s.disconnected.push(now),
                Event::Synced => s.synced.push(now),
                Event::Stopped { .. } => s.stopped = true,
                _ => {}
            }
        }
    });
    seen
}

/// When the client was caught up again after the kill at `killed`: its first
/// `Synced` following its first disconnection after `killed`.
fn resynced_after(seen: &Shared, killed: Instant) -> Option<Instant> {
    let s = seen.lock().unwrap();
    let lost = *s.disconnected.iter().find(|t| **t >= killed)?;
    s.synced.iter().find(|t| **t > lost).copied()
}

async fn start(dir: &Path, addr: &str) -> RunningServer {
    // The killed server may hold the store or the port for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = match builder(ServerConfig::default()).embedded(dir) {
            Ok(b) => b.bind(addr).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match started {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("cannot restart on {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let interval_ms: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(250);
    let interval = Duration::from_millis(interval_ms.max(10));
    let bench_deadline = Instant::now() + TIME_LIMIT;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start(dir.path(), "127.0.0.1:0").await;
    let addr = server.local_addr().to_string();
    println!(
        "resync: {CLIENTS} im-client clients, {GROUPS} groups (19 members each, 2 per user), \
         one send per client every {interval:?}; embedded store; {ROUNDS} kill/restart rounds on {addr}"
    );

    let api = Api::new(&server);
    let mut users = Vec::new();
    for i in 0..CLIENTS {
        users.push(api.user(&format!("user{i}")).await);
    }
    let mut groups = Vec::new();
    for g in 0..GROUPS {
        let members: Vec<_> = (0..CLIENTS)
            .filter(|i| (i % GROUPS == g || i / GROUPS == g) && *i != g)
            .map(|i| &users[i])
            .collect();
        // User `g` (in both halves) owns group g.
        groups.push(ConversationId::Group(GroupId(api.group(&users[g], &format!("g{g}"), &members).await)));
    }
    let groups_of = |i: usize| -> Vec<ConversationId> {
        let mut gs = vec![groups[i % GROUPS]];
        if i / GROUPS != i % GROUPS {
            gs.push(groups[i / GROUPS]);
        }
        gs
    };

    let mut clients = Vec::new();
    let mut seen = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let url = if i % 2 == 0 { format!("http://{addr}/dispatch") } else { format!("ws://{addr}/ws") };
        let (c, ev) = Client::builder()
            .url(url)
            .token(u.token.clone())
            .device(format!("dev{i}"))
            .send_queue(10_000)
            .event_buffer(16_384)
            .connect()
            .expect("valid options");
        clients.push(c);
        seen.push(collect(ev));
    }
    let connect_deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().all(|s| !s.lock().unwrap().synced.is_empty()) {
        assert!(Instant::now() < connect_deadline, "clients did not all connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Senders: one send per client every `interval`, not awaiting acks;
    // acknowledged ones are recorded as (conv, id) -> body.
    let acked: Arc<Mutex<BTreeMap<(ConversationId, MessageId), String>>> = Arc::default();
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    // Kill instants, to count the sends that were unacked across a kill.
    let kills: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let spanning = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Acks with `duplicate: true`: a resend of a message the server had already stored.
    let duplicates = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut senders = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let (c, gs, acked, failed, stop) =
            (c.clone(), groups_of(i), acked.clone(), failed.clone(), stop_rx.clone());
        let (kills, spanning, duplicates) = (kills.clone(), spanning.clone(), duplicates.clone());
        senders.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            // Spread the clients over the interval.
            tokio::time::sleep(interval * i as u32 / CLIENTS as u32).await;
            let mut in_flight = Vec::new();
            let mut n = 0usize;
            while !*stop.borrow() {
                ticker.tick().await;
                let conv = gs[n % gs.len()];
                let body = format!("c{i}-{n}");
                n += 1;
                let (c, acked, failed) = (c.clone(), acked.clone(), failed.clone());
                let (kills, spanning, duplicates) = (kills.clone(), spanning.clone(), duplicates.clone());
                let issued = Instant::now();
                in_flight.push(tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(60), c.send_detailed(conv, body.clone()))
                        .await
                    {
                        Ok(Ok(receipt)) => {
                            let id = receipt.id;
                            if receipt.duplicate {
                                duplicates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            let done = Instant::now();
                            if kills.lock().unwrap().iter().any(|k| issued < *k && *k < done) {
                                spanning.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            if let Some(old) = acked.lock().unwrap().insert((conv, id), body.clone()) {
                                failed
                                    .lock()
                                    .unwrap()
                                    .push(format!("{conv} #{id} acked twice: {old} / {body}"));
                            }
                        }
                        Ok(Err(e)) => failed.lock().unwrap().push(format!("{body}: {e}")),
                        Err(_) => failed.lock().unwrap().push(format!("{body}: no ack within 60 s")),
                    }
                }));
            }
            in_flight
        }));
    }

    let mut times = Vec::new();
    for round in 0..ROUNDS {
        tokio::time::sleep(STEADY).await;
        let killed = Instant::now();
        kills.lock().unwrap().push(killed);
        server.crash().await;
        let crashed = killed.elapsed();
        server = start(dir.path(), &addr).await;
        let restarted = killed.elapsed();
        let deadline = Instant::now() + RESYNC_LIMIT;
        let all = loop {
            let done: Vec<Option<Instant>> = seen.iter().map(|s| resynced_after(s, killed)).collect();
            if done.iter().all(Option::is_some) {
                break done.into_iter().flatten().max().expect("100 clients");
            }
            if Instant::now() > deadline || Instant::now() > bench_deadline {
                let missing = done.iter().filter(|d| d.is_none()).count();
                eprintln!("round {round}: {missing} clients not resynced within {RESYNC_LIMIT:?}");
                std::process::exit(1);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let took = all - killed;
        let first = seen.iter().filter_map(|s| resynced_after(s, killed)).min().expect("resynced") - killed;
        println!(
            "round {round}: kill took {crashed:.0?}, new server listening {restarted:.0?} after the kill; \
             first client synced {first:.0?}, all {CLIENTS} synced {took:.0?} after the kill"
        );
        times.push(took);
    }
    tokio::time::sleep(STEADY).await;

    // Stop sending; wait for every send to resolve.
    let _ = stop_tx.send(true);
    let mut in_flight = Vec::new();
    for s in senders {
        in_flight.extend(s.await.expect("sender task"));
    }
    for t in in_flight {
        t.await.expect("send task");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let failed = std::mem::take(&mut *failed.lock().unwrap());
    let last: HashMap<ConversationId, MessageId> = acked.keys().fold(HashMap::new(), |mut m, (c, id)| {
        let e = m.entry(*c).or_insert(0);
        *e = (*e).max(*id);
        m
    });

    // Wait (bounded) until every device has every acked message of its groups.
    let caught_up = |i: usize| {
        let s = seen[i].lock().unwrap();
        groups_of(i).iter().all(|g| {
            let want = last.get(g).copied().unwrap_or(0);
            s.messages.iter().filter(|(c, id, _)| c == g && *id >= want).count() > 0 || want == 0
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(0..CLIENTS).all(caught_up) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Check: per device and group, ids arrive as 1, 2, 3, … exactly once, and
    // every acked message is there with its body.
    let (mut lost, mut duplicated, mut out_of_order, mut expected) = (0usize, 0usize, 0usize, 0usize);
    for (i, s) in seen.iter().enumerate() {
        let s = s.lock().unwrap();
        for g in groups_of(i) {
            let got: Vec<(MessageId, &str)> =
                s.messages.iter().filter(|(c, _, _)| *c == g).map(|(_, id, b)| (*id, b.as_str())).collect();
            let mut by_id: HashMap<MessageId, usize> = HashMap::new();
            for (id, _) in &got {
                *by_id.entry(*id).or_default() += 1;
            }
            duplicated += by_id.values().map(|n| n - 1).sum::<usize>();
            out_of_order += got.windows(2).filter(|w| w[1].0 <= w[0].0).count();
            let bodies: HashMap<MessageId, &str> = got.iter().copied().collect();
            for ((_, id), body) in acked.range((g, 0)..=(g, MessageId::MAX)) {
                expected += 1;
                if bodies.get(id) != Some(&body.as_str()) {
                    lost += 1;
                }
            }
        }
    }
    let stopped = seen.iter().filter(|s| s.lock().unwrap().stopped).count();
    println!(
        "messages: {} acked ({} of them unacked at a kill and resent after it, {} acked as \
         duplicates of an earlier stored attempt), {} send failures; {expected} deliveries expected across {CLIENTS} devices: \
         lost {lost}, duplicated {duplicated}, out of order {out_of_order}; {stopped} clients stopped",
        acked.len(),
        spanning.load(std::sync::atomic::Ordering::Relaxed),
        duplicates.load(std::sync::atomic::Ordering::Relaxed),
        failed.len(),
    );
    for f in failed.iter().take(5) {
        println!("  send failure: {f}");
    }
    println!(
        "kill -> all {CLIENTS} clients synced: median {:.0?} over {ROUNDS} rounds ({times:.0?})",
        median(times.clone())
    );

    for c in &clients {
        c.shutdown().await;
    }
    server.shutdown().await;
    if lost != 0 || duplicated != 0 || out_of_order != 0 || !failed.is_empty() || stopped != 0 {
        eprintln!("FAILED: lost {lost}, duplicated {duplicated}, out of order {out_of_order}");
        std::process::exit(1);
    }
}
