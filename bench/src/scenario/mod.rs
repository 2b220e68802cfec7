//! The scenarios, and what they share: the settings, the context of one
//! server under test, a [`Fleet`] of driven connections and the
//! measurement of one window.

pub mod acked;
pub mod fanout;
pub mod idle;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::conn::{self, ConnStats, Plan, Role};
use crate::imapi::{Api, User};
use crate::procstat;
use crate::proto::{ConnSpec, Proto};
use crate::servers::{Kind, Running};
use crate::stats::Window;

/// Names of the scenarios, in run order.
pub const ALL: [&str; 8] =
    ["idle", "room-1000x1", "room-100x10", "direct-64", "direct-1000", "hot-64", "group-500", "cross-node"];

/// How long and how big the run is.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The `--quick` smoke-test mode.
    pub quick: bool,
    /// Before the first window of a scenario (connections fresh), seconds.
    pub warmup: f64,
    /// Before every window at a new rate, seconds.
    pub settle: f64,
    /// Length of a measurement window, seconds.
    pub window: f64,
    /// After a window, waiting for late deliveries, seconds.
    pub drain: f64,
    /// Users registered on each im server.
    pub pool: usize,
    /// Connections of the idle scenario: the fixed count and the most the
    /// open-file limit allows.
    pub idle_counts: (usize, usize),
    /// Idle CPU window, seconds.
    pub idle_secs: f64,
    /// First ladder step, deliveries per second.
    pub ladder_start: f64,
    /// Ladder factor per step.
    pub ladder_factor: f64,
    /// Largest ladder step, deliveries per second.
    pub ladder_cap: f64,
    /// After the first failing step, try once between it and the last pass.
    pub refine: bool,
    /// Senders of `direct-1000` (fewer in quick mode).
    pub direct_many: usize,
    /// Members of `group-500` (fewer in quick mode).
    pub group_size: usize,
    /// Connections opened concurrently.
    pub connect_concurrency: usize,
}

/// One figure of a scenario on one server.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable key (`deliveries_per_s`, `p99_ms`…), the row of the table.
    pub key: &'static str,
    /// Row label.
    pub label: &'static str,
    /// The value, or `None` when not measured (shown as —).
    pub value: Option<f64>,
}

/// What one scenario measured on one server.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// Server.
    pub server: Kind,
    /// Headline figures.
    pub figures: Vec<Figure>,
    /// Every measurement window (ladder steps and others).
    pub steps: Vec<Step>,
    /// What to know when reading the figures (counts, failures, skips).
    pub notes: Vec<String>,
}

impl Outcome {
    /// An outcome without figures yet.
    pub fn new(scenario: &str, server: Kind) -> Outcome {
        Outcome {
            scenario: scenario.into(),
            server,
            figures: Vec::new(),
            steps: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a figure.
    pub fn fig(&mut self, key: &'static str, label: &'static str, value: Option<f64>) {
        self.figures.push(Figure { key, label, value });
    }

    /// The value of figure `key`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key).and_then(|f| f.value)
    }
}

/// One measurement window with what it was for.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What the window was (`ladder`, `closed loop`, `half load`…).
    pub what: String,
    /// Why it failed the ladder rule, if it did.
    pub failure: Option<String>,
    /// The totals.
    pub window: Window,
}

/// A server under test, as the scenarios see it.
pub struct Ctx<'a> {
    /// Which server.
    pub kind: Kind,
    /// Its processes.
    pub server: &'a Running,
    /// Its protocol.
    pub proto: Arc<dyn Proto>,
    /// im only: one API client per node.
    pub apis: Vec<Api>,
    /// im only: the registered users.
    pub users: Vec<User>,
    /// The settings.
    pub settings: &'a Settings,
}

impl Ctx<'_> {
    /// CPU time of the server's processes so far, µs.
    pub fn server_cpu(&self) -> u64 {
        procstat::cpu_us_all(&self.server.pids)
    }

    /// Resident memory of the server's processes, KiB.
    pub fn server_rss(&self) -> u64 {
        procstat::rss_kib_all(&self.server.pids)
    }
}

/// A tag unique to one scenario run (room names, device ids, `cmid`s).
pub fn tag(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}{}", name.replace(['-', 'x'], ""), N.fetch_add(1, Ordering::Relaxed))
}

/// Connections of a scenario, each driven by its own task.
pub struct Fleet {
    plan: watch::Sender<Plan>,
    stats: Vec<Arc<Mutex<ConnStats>>>,
    tasks: JoinSet<()>,
    /// Connections that completed their handshake.
    pub connected: usize,
    /// Connections that did not (after retries, or in time).
    pub failed: usize,
    /// The first connection error, if any.
    pub first_error: Option<String>,
    /// Seconds the connection phase took.
    pub connect_secs: f64,
}

impl Fleet {
    /// Opens every connection (`concurrency` handshakes at a time, up to
    /// three attempts each) and starts driving each one at once, idle.
    /// Gives up on connections not ready within `deadline`.
    pub async fn connect(ctx: &Ctx<'_>, conns: Vec<(ConnSpec, Role)>, deadline: Duration) -> Fleet {
        let started = std::time::Instant::now();
        let (plan, plans) = watch::channel(Plan::IDLE);
        let slots = Arc::new(Semaphore::new(ctx.settings.connect_concurrency));
        let (report, mut reports) = mpsc::unbounded_channel::<Result<(), String>>();
        let mut tasks = JoinSet::new();
        let mut stats = Vec::with_capacity(conns.len());
        let total = conns.len();
        for (spec, role) in conns {
            let st = Arc::new(Mutex::new(ConnStats::default()));
            stats.push(st.clone());
            let proto = ctx.proto.clone();
            let addr = ctx.server.addrs[spec.node];
            let (slots, report, plans) = (slots.clone(), report.clone(), plans.clone());
            tasks.spawn(async move {
                let mut result = Err(String::new());
                if let Ok(_slot) = slots.acquire_owned().await {
                    for attempt in 0..3u64 {
                        result = conn::open(&*proto, addr, &spec).await;
                        if result.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                    }
                }
                match result {
                    Ok(ws) => {
                        let _ = report.send(Ok(()));
                        conn::drive(ws, proto, spec, role, plans, st).await;
                    }
                    Err(e) => {
                        let _ = report.send(Err(e));
                    }
                }
            });
        }
        drop(report);
        let mut fleet =
            Fleet { plan, stats, tasks, connected: 0, failed: 0, first_error: None, connect_secs: 0.0 };
        let end = tokio::time::Instant::now() + deadline;
        while fleet.connected + fleet.failed < total {
            match tokio::time::timeout_at(end, reports.recv()).await {
                Ok(Some(Ok(()))) => fleet.connected += 1,
                Ok(Some(Err(e))) => {
                    fleet.failed += 1;
                    fleet.first_error.get_or_insert(e);
                }
                Ok(None) => break,
                Err(_) => {
                    fleet.failed = total - fleet.connected;
                    fleet.first_error.get_or_insert_with(|| format!("not connected within {deadline:?}"));
                    break;
                }
            }
        }
        fleet.connect_secs = started.elapsed().as_secs_f64();
        fleet
    }

    /// Tells every connection what to do now.
    pub fn set_plan(&self, plan: Plan) {
        let _ = self.plan.send(plan);
    }

    /// Sums and resets the window counters of every connection.
    pub fn take(&self) -> (Window, Vec<u32>, Vec<u32>) {
        let mut w = Window::default();
        let (mut lat, mut ack_lat) = (Vec::new(), Vec::new());
        for s in &self.stats {
            let mut st = s.lock().expect("stats lock");
            w.sent += std::mem::take(&mut st.sent);
            w.delivered += std::mem::take(&mut st.delivered);
            w.acked += std::mem::take(&mut st.acked);
            w.errors += std::mem::take(&mut st.errors);
            w.closed += u64::from(st.closed.is_some());
            lat.append(&mut st.lat_us);
            ack_lat.append(&mut st.ack_lat_us);
        }
        (w, lat, ack_lat)
    }

    /// Deliveries checked for id order, and those out of order (all time).
    pub fn order(&self) -> (u64, u64) {
        self.stats.iter().fold((0, 0), |(c, v), s| {
            let st = s.lock().expect("stats lock");
            (c + st.ordered_checked, v + st.order_violations)
        })
    }

    /// Why connections ended early and which error codes were seen, with
    /// how many connections each (a few kinds at most).
    pub fn troubles(&self) -> Vec<String> {
        let mut seen: Vec<(String, usize)> = Vec::new();
        for s in &self.stats {
            let st = s.lock().expect("stats lock");
            let kinds = [
                st.closed.clone().map(|c| format!("connection ended early ({c})")),
                st.last_error.clone().map(|e| format!("error frames {e}")),
            ];
            for t in kinds.into_iter().flatten() {
                if let Some(i) = seen.iter().position(|(k, _)| *k == t) {
                    seen[i].1 += 1;
                } else if seen.len() < 6 {
                    seen.push((t, 1));
                }
            }
        }
        seen.into_iter()
            .map(|(t, n)| format!("{t} on {n} connection{}", if n == 1 { "" } else { "s" }))
            .collect()
    }

    /// Stops every connection and waits (briefly) for their tasks.
    pub async fn stop(mut self) {
        self.set_plan(Plan { stop: true, ..Plan::IDLE });
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), all).await.is_err() {
            self.tasks.abort_all();
        }
    }
}

/// Other processes using more than this share of a CPU (percent) during a
/// window make it "disturbed": it is measured again once, after waiting for
/// the machine to quieten (within [`QUIET_BUDGET`]).
pub const DISTURBED_PCT: f64 = 25.0;
/// Other processes below this share of a CPU (percent) count as quiet.
const QUIET_PCT: f64 = 10.0;

/// Milliseconds the whole run may still spend waiting for a quiet machine.
pub static QUIET_BUDGET: AtomicU64 = AtomicU64::new(0);

/// CPU share (percent of one CPU) of other processes over `secs`, excluding
/// the server's and this process's own.
async fn other_pct(ctx: &Ctx<'_>, secs: f64) -> f64 {
    let me = std::process::id();
    let take =
        || procstat::machine_busy_us().saturating_sub(ctx.server_cpu() + procstat::cpu_us(me).unwrap_or(0));
    let before = take();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    take().saturating_sub(before) as f64 / secs / 1e4
}

/// Waits (within the run's [`QUIET_BUDGET`]) until other processes leave the
/// CPUs to the benchmark; returns whether they did.
async fn wait_quiet(ctx: &Ctx<'_>) -> bool {
    loop {
        if other_pct(ctx, 0.25).await < QUIET_PCT {
            return true;
        }
        let left = QUIET_BUDGET.load(Ordering::Relaxed);
        if left == 0 {
            return false;
        }
        QUIET_BUDGET.store(left.saturating_sub(500), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs one measurement window: sending connections at `rate` messages/s
/// each (`f64::INFINITY`: closed loop), after `settle` seconds; `fanout` is
/// the recipients of each message and `planned` the planned messages/s of
/// all senders together (0 for closed loop). A window disturbed by other
/// processes is measured once more after waiting for quiet.
pub async fn measure(
    ctx: &Ctx<'_>,
    fleet: &Fleet,
    rate: f64,
    planned: f64,
    fanout: u64,
    settle: f64,
) -> Window {
    let w = measure_once(ctx, fleet, rate, planned, fanout, settle).await;
    if w.other_cpu_us as f64 / w.secs / 1e4 <= DISTURBED_PCT || QUIET_BUDGET.load(Ordering::Relaxed) == 0 {
        return w;
    }
    wait_quiet(ctx).await;
    measure_once(ctx, fleet, rate, planned, fanout, ctx.settings.settle).await
}

async fn measure_once(
    ctx: &Ctx<'_>,
    fleet: &Fleet,
    rate: f64,
    planned: f64,
    fanout: u64,
    settle: f64,
) -> Window {
    let s = ctx.settings;
    let start = crate::now_ns() + (settle * 1e9) as u64;
    let end = start + (s.window * 1e9) as u64;
    let _ = fleet.take();
    fleet.set_plan(Plan { rate, win_start: start, win_end: end, stop: false });
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let me = std::process::id();
    let (cpu0, gen0, all0) =
        (ctx.server_cpu(), procstat::cpu_us(me).unwrap_or(0), procstat::machine_busy_us());
    tokio::time::sleep(Duration::from_secs_f64(s.window)).await;
    let (cpu1, gen1, all1) =
        (ctx.server_cpu(), procstat::cpu_us(me).unwrap_or(0), procstat::machine_busy_us());
    tokio::time::sleep(Duration::from_secs_f64(s.drain)).await;
    let (mut w, lat, ack_lat) = fleet.take();
    w.planned_msgs_per_s = planned;
    w.secs = s.window;
    w.expected = w.sent * fanout;
    w.server_cpu_us = cpu1.saturating_sub(cpu0);
    w.loadgen_cpu_us = gen1.saturating_sub(gen0);
    w.other_cpu_us = all1.saturating_sub(all0).saturating_sub(w.server_cpu_us + w.loadgen_cpu_us);
    w.from_samples(lat, ack_lat)
}

/// The ConnSpec of connection `index` for a raw or Socket.IO room.
pub fn room_spec(index: usize, room: &str, ack: bool) -> ConnSpec {
    ConnSpec { index, room: room.into(), ack, ..ConnSpec::default() }
}

/// The ConnSpec of connection `index` of im user `user` sending to `conv`.
pub fn im_spec(index: usize, node: usize, user: &User, conv: &str, tag: &str) -> ConnSpec {
    ConnSpec {
        index,
        node,
        token: user.token.clone(),
        device: format!("{tag}-{index}"),
        conv: conv.into(),
        cmid_tag: tag.into(),
        ..ConnSpec::default()
    }
}

/// Notes connections of `fleet` that did not open.
pub fn note_fleet(out: &mut Outcome, fleet: &Fleet, wanted: usize) {
    if fleet.connected < wanted {
        out.notes.push(format!(
            "only {} of {wanted} connections opened ({})",
            fleet.connected,
            fleet.first_error.clone().unwrap_or_default()
        ));
    }
}

/// Notes why connections of `fleet` ended early and the error codes seen.
pub fn note_troubles(out: &mut Outcome, fleet: &Fleet) {
    for t in fleet.troubles() {
        if !out.notes.contains(&t) {
            out.notes.push(t);
        }
    }
}
