//! Delivery latency to a recipient on the sender's node versus on another
//! node of a two-node cluster (Redis + PostgreSQL).
//!
//! `cargo bench -p im-tests --bench cross_node_latency [-- MESSAGES]`
//!
//! Starts nodes n0 and n1 in this process on loopback via the cluster
//! harness (fresh Redis key prefix and PostgreSQL schema per round, removed
//! afterwards). alice (sender) and bob are connected to n0, carol to n1, all
//! in one group. alice sends MESSAGES messages one at a time, each waiting
//! for its ack; bob and carol read `message` frames in their own tasks and
//! record when each id arrived. Latency = receive instant - instant just
//! before the send. 3 rounds; per-round p50/p90/p99 for both paths, the
//! median over rounds, and cross/same ratios. Bounded in count and time.
//! Exits 0 with a note when Redis or PostgreSQL is not reachable.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use im_protocol::{ClientFrame, ConversationId, GroupId, ServerFrame};
use im_tests::cluster::{services_available, Cluster};
use im_tests::{cmid, Api, Ws};
use tokio::sync::watch;

const ROUNDS: usize = 3;
const TIME_LIMIT: Duration = Duration::from_secs(120);
/// How long a receiver keeps waiting once the sender is done.
const DRAIN: Duration = Duration::from_secs(10);

/// p50, p90, p99 in milliseconds.
type Pcts = [f64; 3];

struct Round {
    same: Pcts,
    cross: Pcts,
    sent: usize,
    lost_same: usize,
    lost_cross: usize,
    rate: f64,
}

/// Reads `message` frames of `conv`, recording when each id arrived, until
/// it has `target` of them once the sender publishes `target`.
async fn receive(
    mut ws: Ws,
    conv: ConversationId,
    mut target: watch::Receiver<Option<usize>>,
) -> HashMap<u64, Instant> {
    let mut got = HashMap::new();
    let mut done_at: Option<Instant> = None;
    loop {
        if let Some(want) = *target.borrow_and_update() {
            if got.len() >= want {
                break;
            }
            let since = *done_at.get_or_insert_with(Instant::now);
            if since.elapsed() > DRAIN {
                break;
            }
        }
        match ws.try_recv(Duration::from_millis(100)).await {
            Ok(Some(ServerFrame::Message(m))) if m.conv == conv => {
                got.entry(m.id).or_insert_with(Instant::now);
            }
            Ok(_) => {}
            Err(e) => panic!("receiver connection ended: {e:?}"),
        }
    }
    ws.close().await;
    got
}

async fn send_acked(ws: &mut Ws, conv: ConversationId, tag: String) -> (Instant, u64) {
    let rid = ws.rid();
    let frame = ClientFrame::send(rid, conv, cmid(tag), "benchmark body");
    let at = Instant::now();
    ws.send(&frame).await;
    loop {
        match ws.recv().await {
            ServerFrame::Ack { rid: r, id, .. } if r == rid => return (at, id),
            ServerFrame::Error { code, .. } => panic!("send failed: {code}"),
            _ => {}
        }
    }
}

fn percentiles(mut ms: Vec<f64>) -> Pcts {
    if ms.is_empty() {
        return [f64::NAN; 3];
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    [at(0.50), at(0.90), at(0.99)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn run(messages: usize, round: usize, deadline: Instant) -> Round {
    let cluster = Cluster::new();
    let mut cfgs = [cluster.config("n0"), cluster.config("n1")];
    for cfg in &mut cfgs {
        // The bench measures delivery, not the per-connection rate limit.
        cfg.limits.rate_per_sec = 1_000_000;
        cfg.limits.rate_burst = 1_000_000;
        cfg.user_rate_per_sec = 0;
    }
    let [c0, c1] = cfgs;
    let n0 = cluster.node_with(c0).await;
    let n1 = cluster.node_with(c1).await;
    let api = Api::new(&n0);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let conv = ConversationId::Group(GroupId(api.group(&alice, "bench", &[&bob, &carol]).await));
    let mut a = Ws::open(&n0, &alice, "send").await;
    let b = Ws::open(&n0, &bob, "recv").await;
    let c = Ws::open(&n1, &carol, "recv").await;

    let (target_tx, target_rx) = watch::channel(None);
    let same = tokio::spawn(receive(b, conv, target_rx.clone()));
    let cross = tokio::spawn(receive(c, conv, target_rx));

    // Warm-up: one message both receivers must see (subscriptions are live),
    // excluded from the figures.
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_acked(&mut a, conv, format!("r{round}-warm")).await;

    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(messages);
    let started = Instant::now();
    for i in 0..messages {
        if Instant::now() > deadline {
            break;
        }
        let (at, id) = send_acked(&mut a, conv, format!("r{round}-{i}")).await;
        sent.insert(id, at);
    }
    let rate = sent.len() as f64 / started.elapsed().as_secs_f64();
    // Warm-up plus the measured messages.
    target_tx.send(Some(sent.len() + 1)).expect("receivers alive");
    let same = same.await.expect("same-node receiver");
    let cross = cross.await.expect("cross-node receiver");

    let latencies = |got: &HashMap<u64, Instant>| -> (Vec<f64>, usize) {
        let mut ms = Vec::with_capacity(sent.len());
        let mut lost = 0;
        for (id, at) in &sent {
            match got.get(id) {
                Some(r) => ms.push(r.saturating_duration_since(*at).as_secs_f64() * 1e3),
                None => lost += 1,
            }
        }
        (ms, lost)
    };
    let (same_ms, lost_same) = latencies(&same);
    let (cross_ms, lost_cross) = latencies(&cross);

    a.close().await;
    n0.shutdown().await;
    n1.shutdown().await;
    cluster.cleanup().await;
    Round {
        same: percentiles(same_ms),
        cross: percentiles(cross_ms),
        sent: sent.len(),
        lost_same,
        lost_cross,
        rate,
    }
}

#[tokio::main]
async fn main() {
    if !services_available().await {
        println!("cross_node_latency skipped: Redis and PostgreSQL are needed (see the note above)");
        return;
    }
    let messages = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2000usize);
    let deadline = Instant::now() + TIME_LIMIT;
    println!(
        "group of 3 on 2 nodes: alice (sender) and bob on n0, carol on n1; \
         {messages} messages per round, each awaiting its ack; latency in ms"
    );
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        if Instant::now() > deadline {
            println!("  time limit reached after {round} rounds");
            break;
        }
        let r = run(messages, round, deadline).await;
        println!(
            "  round {round}: sent {} ({:.0} acked msg/s) | same-node p50 {:.2} p90 {:.2} p99 {:.2} \
             (lost {}) | cross-node p50 {:.2} p90 {:.2} p99 {:.2} (lost {})",
            r.sent,
            r.rate,
            r.same[0],
            r.same[1],
            r.same[2],
            r.lost_same,
            r.cross[0],
            r.cross[1],
            r.cross[2],
            r.lost_cross
        );
        rounds.push(r);
    }
    if rounds.is_empty() {
        return;
    }
    let med = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let same: Vec<f64> = (0..3).map(|k| med(&|r| r.same[k])).collect();
    let cross: Vec<f64> = (0..3).map(|k| med(&|r| r.cross[k])).collect();
    println!("median over {} rounds:", rounds.len());
    println!("  same-node  p50 {:.2} p90 {:.2} p99 {:.2} ms", same[0], same[1], same[2]);
    println!("  cross-node p50 {:.2} p90 {:.2} p99 {:.2} ms", cross[0], cross[1], cross[2]);
    println!("  cross/same p50 {:.2}, p99 {:.2}", cross[0] / same[0], cross[2] / same[2]);
    println!("  sender {:.0} acked msg/s", med(&|r| r.rate));
}
