//! Messages per second acked by one server for 1:1 traffic.
//!
//! `cargo bench -p im-tests --bench ack_throughput [-- PAIRS MESSAGES]`
//!
//! Starts servers in this process on loopback — the embedded persistent
//! store (the binary's default) and, as the in-process baseline, the memory
//! store — and drives each with PAIRS pairs of users over real WebSockets.
//! Every user sends MESSAGES direct messages to its peer, each waiting for
//! its ack (so this measures acknowledged, durably stored messages), while
//! reading what its peer sends. Each configuration runs 3 times; the median
//! is reported, with the embedded/memory ratio. Bounded in count and time.
//!
//! `ACK_BENCH_STORES=memory` (or `embedded`) runs one store only, and
//! `ACK_BENCH_ROUNDS=1` one round: for an instruction count under
//! `valgrind --tool=callgrind` (docs/benchmarks.md §4).

use std::time::{Duration, Instant};

use im_protocol::{ClientFrame, ConversationId, ServerFrame};
use im_server::{RunningServer, ServerConfig};
use im_tests::{builder, cmid, Api, Ws};

/// Rounds per store unless `ACK_BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 3;
const TIME_LIMIT: Duration = Duration::from_secs(120);

async fn run(server: &RunningServer, pairs: usize, messages: usize, round: usize) -> f64 {
    let api = Api::new(server);
    let mut users = Vec::new();
    for i in 0..pairs * 2 {
        users.push(api.user(&format!("r{round}u{i}")).await);
    }
    let mut sockets = Vec::new();
    for u in &users {
        sockets.push(Ws::open(server, u, "bench").await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let peer = &users[i ^ 1];
        let conv = ConversationId::direct(users[i].id, peer.id);
        tasks.push(tokio::spawn(async move {
            for j in 0..messages {
                let rid = ws.rid();
                ws.send(&ClientFrame::send(rid, conv, cmid(format!("{i}-{j}")), "benchmark body")).await;
                // Wait for this ack; deliveries from the peer arrive meanwhile.
                loop {
                    match ws.recv().await {
                        ServerFrame::Ack { rid: r, .. } if r == rid => break,
                        ServerFrame::Error { code, .. } => panic!("send failed: {code}"),
                        _ => {}
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender task");
    }
    (pairs * 2 * messages) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let pairs = args.first().copied().unwrap_or(32);
    let messages = args.get(1).copied().unwrap_or(200);
    let mut cfg = ServerConfig::default();
    // The bench measures storage and fan-out, not the per-connection rate limit.
    cfg.limits.rate_per_sec = 1_000_000;
    cfg.limits.rate_burst = 1_000_000;
    cfg.user_rate_per_sec = 0;
    // Every client connects from 127.0.0.1.
    cfg.max_connections_per_ip = 0;
    let deadline = Instant::now() + TIME_LIMIT;
    let stores = std::env::var("ACK_BENCH_STORES").unwrap_or_else(|_| "memory,embedded".into());
    let rounds = std::env::var("ACK_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(ROUNDS);

    println!("1:1 traffic, {pairs} pairs x 2 senders x {messages} messages, each awaiting its ack");
    let mut results = Vec::new();
    for store in ["memory", "embedded"].into_iter().filter(|s| stores.split(',').any(|x| x == *s)) {
        let mut rates = Vec::new();
        for round in 0..rounds {
            if Instant::now() > deadline {
                break;
            }
            let dir = tempfile::tempdir().expect("temp dir");
            let b = builder(cfg.clone());
            let b =
                if store == "memory" { b.memory() } else { b.embedded(dir.path()).expect("embedded store") };
            let server = b.bind("127.0.0.1:0").await.expect("server");
            let rate = run(&server, pairs, messages, round).await;
            server.shutdown().await;
            println!("  {store:8} round {round}: {rate:>9.0} acked msg/s");
            rates.push(rate);
        }
        let m = median(rates);
        println!("{store:8} median: {m:.0} acked msg/s");
        results.push(m);
    }
    if let [memory, embedded] = results[..] {
        println!("embedded / memory = {:.2}", embedded / memory);
    }
}
