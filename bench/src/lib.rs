//! `im-bench`: the load generator and report of the im benchmark.
//!
//! One load generator (`loadgen`) drives, in one run and with the same
//! scenarios, a raw tokio-tungstenite broadcast server (`raw-server`, the
//! practical limit), Socket.IO 4 on Node, `im --memory`, `im` on its embedded
//! store and a three-node im cluster on Redis and PostgreSQL. See
//! `bench/README.md` for what each scenario does and how each figure is
//! computed.
//!
//! Layout: [`proto`] is the small trait each server's wire protocol
//! implements ([`raw`], [`socketio`], [`im`]); [`conn`] drives one
//! WebSocket connection with any of them; [`scenario`] runs the scenarios;
//! [`servers`] starts and stops the servers; [`procstat`] reads their CPU
//! time and memory; [`stats`] holds percentiles and the ladder rule;
//! [`report`] and [`chart`] write the Markdown table and the SVG chart.

#![warn(missing_docs)]

pub mod chart;
pub mod conn;
pub mod im;
pub mod imapi;
pub mod machine;
pub mod procstat;
pub mod proto;
pub mod raw;
pub mod report;
pub mod scenario;
pub mod servers;
pub mod socketio;
pub mod stats;
pub mod targets;

use std::sync::OnceLock;
use std::time::Instant;

/// The process-wide origin of [`now_ns`].
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds since a process-wide instant (monotonic). Message bodies carry
/// this value, so the receiving connection of the same process computes the
/// latency.
pub fn now_ns() -> u64 {
    origin().elapsed().as_nanos() as u64
}
