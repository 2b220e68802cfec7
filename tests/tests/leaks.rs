//! Leaks: connecting and disconnecting, joining and leaving, again and
//! again, leaves nothing behind. Each test takes a baseline after a warm-up,
//! runs the cycles, and checks that the hub's indexes return to it exactly,
//! that open file descriptors and live tasks are not above it (they may
//! end below: idle pooled connections close), and that resident memory stays
//! within a stated tolerance (the allocator keeps some freed pages). The
//! figures are printed (`--nocapture`) and recorded in docs/reliability.md.
//!
//! The server runs in this process, so the counts include the clients'; they
//! end too, so a leak on either side shows.

use std::time::{Duration, Instant};

use im_protocol::{ClientFrame, RoomId, ServerFrame};
use im_server::hub::HubIndexSizes;
use im_server::{RunningServer, ServerConfig};
use im_tests::{start, Api, Ws};

/// Descriptors and resident memory are the process's: the tests take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resident memory growth allowed after the cycles, over the baseline.
const RSS_TOLERANCE_KIB: u64 = 16 * 1024;

/// What is measured before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    rss_kib: u64,
    fds: usize,
    tasks: usize,
    hub: HubIndexSizes,
}

fn sample(server: &RunningServer) -> Sample {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count();
    let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    Sample { rss_kib, fds, tasks, hub: server.state().hub().index_sizes() }
}

/// Waits (bounded) until the hub holds `connections` connections and the
/// task and descriptor counts have stopped moving (connections that are
/// closing have finished), then samples.
async fn quiet(server: &RunningServer, connections: usize) -> Sample {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = sample(server);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = sample(server);
        let still = now.tasks == last.tasks && now.fds == last.fds;
        if (now.hub.connections == connections && still) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// An API client that keeps no idle connection, so none is in the counts.
fn unpooled_api(server: &RunningServer) -> Api {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    Api::with_client(server.http_url(), http)
}

/// Descriptors and tasks back at the baseline, memory within the tolerance.
fn assert_process_back_to(baseline: &Sample, after: &Sample) {
    assert!(after.fds <= baseline.fds, "file descriptors: {} before, {} after", baseline.fds, after.fds);
    assert!(after.tasks <= baseline.tasks, "live tasks: {} before, {} after", baseline.tasks, after.tasks);
    assert!(
        after.rss_kib <= baseline.rss_kib + RSS_TOLERANCE_KIB,
        "resident memory grew by {} KiB (tolerance {RSS_TOLERANCE_KIB} KiB)",
        after.rss_kib - baseline.rss_kib
    );
}

/// One connect/disconnect cycle: the handshake, `hello`, a client close.
async fn cycle(server: &RunningServer, token: &str, device: &str) {
    let ws = Ws::connect(&server.ws_url(), token, device).await;
    ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_disconnect_cycles_leave_nothing_behind() {
    const CYCLES: usize = 10_000;
    const AT_ONCE: usize = 8;
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cfg = ServerConfig::default();
    cfg.presence_grace = Duration::from_millis(50);
    let server = start(cfg).await;
    let api = unpooled_api(&server);
    let users: Vec<_> = futures::future::join_all((0..AT_ONCE).map(|i| {
        let api = &api;
        async move { api.user(&format!("cycler{i}")).await }
    }))
    .await;

    let run = |count: usize| {
        let server = &server;
        let users = &users;
        async move {
            futures::future::join_all(users.iter().enumerate().map(|(i, u)| async move {
                for n in 0..count / AT_ONCE {
                    cycle(server, &u.token, &format!("d{i}-{}", n % 4)).await;
                }
            }))
            .await;
        }
    };
    // Warm-up: pools, caches and allocator arenas reach their working size.
    run(400).await;
    let baseline = quiet(&server, 0).await;
    let started = Instant::now();
    run(CYCLES).await;
    let took = started.elapsed();
    let after = quiet(&server, 0).await;
    println!(
        "{CYCLES} connect/disconnect cycles in {took:.1?} ({:.0}/s): baseline {baseline:?}, after {after:?}, RSS {:+} KiB",
        CYCLES as f64 / took.as_secs_f64(),
        after.rss_kib as i64 - baseline.rss_kib as i64
    );
    assert_eq!(after.hub, HubIndexSizes::default(), "the hub's indexes are empty again");
    assert_process_back_to(&baseline, &after);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_join_leave_cycles_per_room_leave_nothing_behind() {
    const CYCLES: usize = 1_000;
    const ROOMS: usize = 4;
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cfg = ServerConfig::default();
    // 8,000 requests on one connection: the frame rate limit is not under test.
    cfg.limits.rate_per_sec = 1_000_000;
    cfg.limits.rate_burst = 1_000_000;
    let server = start(cfg).await;
    let api = unpooled_api(&server);
    let owner = api.user("owner").await;
    let member = api.user("member").await;
    let mut rooms = Vec::new();
    for i in 0..ROOMS {
        rooms.push(RoomId(api.room(&owner, &format!("room{i}")).await));
    }
    let mut ws = Ws::open(&server, &member, "d").await;
    async fn cycles(ws: &mut Ws, rooms: &[RoomId], count: usize) {
        for _ in 0..count {
            for &room in rooms {
                let rid = ws.rid();
                let joined = ws.request(ClientFrame::Join { rid, room }).await;
                assert!(matches!(joined, ServerFrame::Ok { .. }), "join answered {joined:?}");
                let rid = ws.rid();
                let left = ws.request(ClientFrame::Leave { rid, room }).await;
                assert!(matches!(left, ServerFrame::Ok { .. }), "leave answered {left:?}");
            }
        }
    }
    cycles(&mut ws, &rooms, 20).await;
    let baseline = quiet(&server, 1).await;
    let started = Instant::now();
    cycles(&mut ws, &rooms, CYCLES).await;
    let took = started.elapsed();
    let after = quiet(&server, 1).await;
    println!(
        "{CYCLES} join/leave cycles in each of {ROOMS} rooms in {took:.1?}: baseline {baseline:?}, after {after:?}, RSS {:+} KiB",
        after.rss_kib as i64 - baseline.rss_kib as i64
    );
    assert_eq!(after.hub, baseline.hub, "the hub's indexes are back where they were");
    assert_eq!(after.hub.rooms, 0, "the member left every room: no room is indexed");
    assert_eq!(after.hub.connections, 1, "only the member's connection is registered");
    assert_eq!(after.hub.user_rooms, 0, "a user in no room has no room entry");
    assert_process_back_to(&baseline, &after);
    ws.close().await;
    server.shutdown().await;
}
