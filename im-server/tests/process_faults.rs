//! Faults on real processes: the `im-server` binary runs as child processes
//! that the tests kill with SIGKILL (`kill -9`) or drain, while im-client
//! devices send and receive all along; a checker
//! (`process_faults/checker.rs`) records every ack and every delivery and
//! compares them with the stored history at the end: 0 acknowledged
//! messages lost, 0 duplicated, every conversation in order on every
//! device, ids gapless.
//!
//! The scenarios, one module each:
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
//! * `postgres_process_restarted_under_load_loses_and_duplicates_nothing`
//!   (features `postgres` and `redis`): two nodes on a private PostgreSQL
//!   server, every process of which is killed with SIGKILL under load and
//!   started again 3 s later (crash recovery).
//! * `partition_between_a_node_and_redis_is_detected_and_healed_by_sync`
//!   (features `postgres` and `redis`): one of two nodes reaches Redis
//!   through a proxy that blackholes its traffic for 17 s.
//!
//! Timings are random from a seed printed at the start (`PF_SEED=<n>` runs
//! one again; the processes' scheduling still varies). Run with
//! `-- --nocapture` to see the figures.
#![cfg(all(unix, feature = "embedded", feature = "webhook"))]

// The scenarios on Redis and PostgreSQL use more of the helpers.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/blackhole.rs"]
mod blackhole;
#[cfg_attr(not(all(feature = "postgres", feature = "redis")), allow(dead_code))]
#[path = "process_faults/checker.rs"]
mod checker;
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/cluster.rs"]
mod cluster;
#[cfg_attr(not(all(feature = "postgres", feature = "redis")), allow(dead_code))]
#[path = "process_faults/harness.rs"]
mod harness;
#[path = "process_faults/kill_embedded.rs"]
mod kill_embedded;
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/node_loss.rs"]
mod node_loss;
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/postgres_restart.rs"]
mod postgres_restart;
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/private_services.rs"]
mod private_services;
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/redis_partition.rs"]
mod redis_partition;
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/redis_restart.rs"]
mod redis_restart;
#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "process_faults/two_nodes.rs"]
mod two_nodes;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::time::Instant;

use im_protocol::ConversationId;

use checker::Checker;

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

/// Command-line arguments from string slices.
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
    let members: checker::Members = BTreeMap::from([(g, BTreeSet::from([a, b]))]);
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
