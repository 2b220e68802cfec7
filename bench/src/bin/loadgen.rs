//! `loadgen`: runs every scenario against every server and writes the
//! report (`results.md`, `results.json`, `chart.svg`). Usually started by
//! `bench/run.sh`; see `bench/README.md`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use im_bench::imapi::{register_users, Api};
use im_bench::machine::{open_file_limit, Machine};
use im_bench::proto::Proto;
use im_bench::report::{self, fmt_num, Run};
use im_bench::scenario::{self, acked, fanout, idle, Ctx, Outcome, Settings};
use im_bench::servers::{self, Kind, Tools};
use im_bench::{chart, im, procstat, raw, socketio};

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "im benchmark: one load generator against raw, Socket.IO and im.")]
struct Args {
    /// Smoke test: fewer and shorter steps, smaller counts (≤ 5 minutes).
    #[arg(long)]
    quick: bool,
    /// Only these servers (comma-separated): raw, socketio, im-memory, im-embedded, im-cluster.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these scenarios (comma-separated): idle, room-1000x1, room-100x10,
    /// direct-64, direct-1000, hot-64, group-500, cross-node.
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Output directory.
    #[arg(long, default_value = "bench/out/latest")]
    out: PathBuf,
    /// The im-server binary (default: next to this one).
    #[arg(long)]
    im_server: Option<PathBuf>,
    /// The raw-server binary (default: next to this one).
    #[arg(long)]
    raw_server: Option<PathBuf>,
    /// The Socket.IO server's folder (with node_modules installed).
    #[arg(long, default_value = "bench/socketio")]
    socketio_dir: PathBuf,
    /// The node binary (default: `node` on PATH).
    #[arg(long)]
    node: Option<PathBuf>,
    /// Redis of the cluster.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// PostgreSQL URL allowed to CREATE DATABASE (the cluster's database is
    /// created for the run and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_admin_url: String,
    /// The im commit measured, for the report.
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// Cap on the idle scenario's "as many as allowed" connections.
    #[arg(long, default_value_t = 50_000)]
    max_conns: usize,
}

fn settings(args: &Args) -> Settings {
    let allowed = (open_file_limit() as usize).saturating_sub(300).min(args.max_conns);
    if args.quick {
        Settings {
            quick: true,
            warmup: 0.5,
            settle: 0.3,
            window: 1.0,
            drain: 0.5,
            pool: 200,
            idle_counts: (2_000.min(allowed), 5_000.min(allowed)),
            idle_secs: 2.0,
            ladder_start: 5_000.0,
            ladder_factor: 2.0,
            ladder_cap: 1_280_000.0,
            refine: false,
            direct_many: 200,
            group_size: 200,
            connect_concurrency: 32,
        }
    } else {
        Settings {
            quick: false,
            warmup: 1.0,
            settle: 0.5,
            window: 3.0,
            drain: 0.7,
            pool: 1_000,
            idle_counts: (10_000.min(allowed), allowed),
            idle_secs: 5.0,
            ladder_start: 5_000.0,
            ladder_factor: 2.0,
            ladder_cap: 2_560_000.0,
            refine: true,
            direct_many: 1_000,
            group_size: 500,
            connect_concurrency: 32,
        }
    }
}

/// The scenarios that apply to a server.
fn applies(kind: Kind, scenario: &str) -> bool {
    (kind == Kind::ImCluster) == (scenario == "cross-node")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let settings = settings(&args);
    let state = Arc::new(Mutex::new(Partial::default()));
    let limit = Duration::from_secs(if args.quick { 330 } else { 25 * 60 });
    scenario::QUIET_BUDGET
        .store(if args.quick { 20_000 } else { 90_000 }, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        tokio::select! {
            _ = run(&args, &settings, state.clone()) => {}
            _ = tokio::signal::ctrl_c() => eprintln!("loadgen: interrupted; writing what was measured"),
            _ = tokio::time::sleep(limit) => eprintln!("loadgen: time limit {limit:?} reached; writing what was measured"),
        }
    });
    // Servers of an interrupted run were dropped (killed) with `run`.
    let partial = std::mem::take(&mut *state.lock().expect("state lock"));
    let run = Run {
        machine: Machine::probe(),
        settings,
        commit: args.commit.clone(),
        servers: partial.servers,
        skipped: partial.skipped,
        outcomes: partial.outcomes,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    if let Err(e) = write(&args.out, &run) {
        eprintln!("loadgen: cannot write the report to {}: {e}", args.out.display());
        std::process::exit(1);
    }
    println!("{}", report::markdown(&run));
    eprintln!("loadgen: report in {}", args.out.display());
    rt.shutdown_timeout(Duration::from_secs(2));
}

fn write(out: &PathBuf, run: &Run) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("results.md"), report::markdown(run))?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(run).unwrap_or_default())?;
    std::fs::write(out.join("chart.svg"), chart::svg(run))
}

/// What has been measured so far (kept if the run is cut short).
#[derive(Default)]
struct Partial {
    servers: Vec<(Kind, Vec<String>)>,
    skipped: Vec<(Kind, String)>,
    outcomes: Vec<Outcome>,
}

async fn run(args: &Args, settings: &Settings, state: Arc<Mutex<Partial>>) {
    let tools = Tools {
        raw_server: args.raw_server.clone().unwrap_or_else(|| sibling("raw-server")),
        im_server: args.im_server.clone().unwrap_or_else(|| sibling("im-server")),
        node: args.node.clone().or_else(|| which("node")),
        socketio_dir: args.socketio_dir.clone(),
        redis_url: args.redis_url.clone(),
        postgres_admin_url: args.postgres_admin_url.clone(),
        log_dir: args.out.join("logs"),
    };
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| args.only.is_empty() || args.only.iter().any(|o| o == k.name()))
        .collect();
    for o in &args.only {
        if Kind::parse(o).is_none() {
            eprintln!("loadgen: unknown server {o:?} (ignored)");
        }
    }
    let wanted: Vec<&str> = scenario::ALL
        .into_iter()
        .filter(|s| args.scenario.is_empty() || args.scenario.iter().any(|a| a == s))
        .collect();
    for kind in kinds {
        let scenarios: Vec<&str> = wanted.iter().copied().filter(|s| applies(kind, s)).collect();
        if scenarios.is_empty() {
            continue;
        }
        eprintln!("loadgen: starting {}", kind.name());
        let server = match servers::start(kind, &tools).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("loadgen: {} skipped: {e}", kind.name());
                state.lock().expect("state lock").skipped.push((kind, e));
                continue;
            }
        };
        state.lock().expect("state lock").servers.push((kind, server.command_lines.clone()));
        let proto: Arc<dyn Proto> = match kind {
            Kind::Raw => Arc::new(raw::Raw),
            Kind::SocketIo => Arc::new(socketio::SocketIo),
            _ => Arc::new(im::Im),
        };
        let apis: Vec<Api> = (0..server.addrs.len()).map(|i| Api::new(server.http(i))).collect();
        let mut users = Vec::new();
        if kind.is_im() {
            let n = if kind == Kind::ImCluster {
                if settings.quick {
                    51
                } else {
                    101
                }
            } else {
                settings.pool
            };
            let rss0 = procstat::rss_kib_all(&server.pids);
            let t = Instant::now();
            match register_users(&apis[0], n, 4).await {
                Ok(u) => users = u,
                Err(e) => {
                    eprintln!("loadgen: {} skipped: registering users: {e}", kind.name());
                    state.lock().expect("state lock").skipped.push((kind, format!("registering users: {e}")));
                    continue;
                }
            }
            let rss1 = procstat::rss_kib_all(&server.pids);
            let mut o = Outcome::new("logins", kind);
            o.fig("logins", "users registered and logged in", Some(n as f64));
            o.fig("logins_per_s", "register + login per s", Some(n as f64 / t.elapsed().as_secs_f64()));
            o.fig(
                "rss_growth_mib",
                "RSS growth over the logins, MiB",
                Some((rss1 as f64 - rss0 as f64) / 1024.0),
            );
            o.notes.push(format!("RSS {rss0} KiB before, {rss1} KiB after {n} registrations + logins"));
            if kind != Kind::ImCluster {
                state.lock().expect("state lock").outcomes.push(o);
            }
        }
        let ctx = Ctx { kind, server: &server, proto, apis, users, settings };
        for sc in scenarios {
            eprintln!("loadgen: {} / {sc}", kind.name());
            let t = Instant::now();
            let o = match sc {
                "idle" => idle::run(&ctx).await,
                "room-1000x1" => fanout::run(&ctx, sc, 1000, 1, fanout::Target::Room).await,
                "room-100x10" => fanout::run(&ctx, sc, 100, 10, fanout::Target::Room).await,
                "group-500" => fanout::run(&ctx, sc, settings.group_size - 1, 1, fanout::Target::Group).await,
                "cross-node" => fanout::run(&ctx, sc, 1000, 1, fanout::Target::Room).await,
                "direct-64" => acked::direct(&ctx, sc, 64).await,
                "direct-1000" => acked::direct(&ctx, sc, settings.direct_many).await,
                "hot-64" => acked::hot(&ctx, sc, 64).await,
                _ => continue,
            };
            let figs: Vec<String> = o
                .figures
                .iter()
                .map(|f| format!("{} {}", f.key, f.value.map(fmt_num).unwrap_or_else(|| "—".into())))
                .collect();
            eprintln!("loadgen:   {:.0} s: {}", t.elapsed().as_secs_f64(), figs.join(", "));
            for n in &o.notes {
                eprintln!("loadgen:   note: {n}");
            }
            state.lock().expect("state lock").outcomes.push(o);
        }
        drop(ctx);
        drop(server);
        // Let sockets and the CPU settle between servers.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
