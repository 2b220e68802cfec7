//! Fan-out scenarios with a rate ladder: a room with S subscribers and P
//! publishers (`room-1000x1`, `room-100x10`), a group at im's 500-member cap
//! with history (`group-500`), and a room over three im nodes
//! (`cross-node`).
//!
//! Every connection is in the room; publishers send open loop at the
//! step's rate (im publishers get acks and ignore them) and every message
//! is expected at every other connection (S + P − 1 deliveries). The ladder
//! doubles the delivery rate from a start until a step fails (fewer than
//! 99.9 % delivered, p99 over 50 ms, or senders short of the planned rate),
//! optionally tries once in between, then measures p99 at half the highest
//! passing rate.

use std::time::{Duration, Instant};

use super::{im_spec, measure, note_fleet, note_troubles, room_spec, tag, Ctx, Fleet, Outcome, Step};
use crate::conn::Role;
use crate::imapi::for_each;
use crate::proto::ConnSpec;
use crate::stats::{ladder_rates, Window};

/// Where the messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An open room.
    Room,
    /// A managed group (im) — a room elsewhere.
    Group,
}

/// Runs a fan-out scenario: `subs` subscribers and `pubs` publishers.
pub async fn run(ctx: &Ctx<'_>, name: &str, subs: usize, pubs: usize, target: Target) -> Outcome {
    let mut out = Outcome::new(name, ctx.kind);
    let (conns, conv) = match setup(ctx, name, subs, pubs, target, &mut out).await {
        Ok(c) => c,
        Err(e) => {
            out.notes.push(format!("setup failed: {e}"));
            return out;
        }
    };
    let wanted = conns.len();
    let deadline = Duration::from_secs(if ctx.settings.quick { 60 } else { 120 });
    let fleet = Fleet::connect(ctx, conns, deadline).await;
    note_fleet(&mut out, &fleet, wanted);
    if fleet.connected < wanted {
        fleet.stop().await;
        return out;
    }
    let fanout = (subs + pubs - 1) as u64;
    ladder(ctx, &fleet, pubs, fanout, &mut out).await;
    if let (Target::Group, Some(conv)) = (target, conv) {
        history_check(ctx, &conv, &mut out).await;
    }
    note_troubles(&mut out, &fleet);
    fleet.stop().await;
    out
}

/// The connections of the scenario; for im, creates the room or group and
/// joins the users first.
async fn setup(
    ctx: &Ctx<'_>,
    name: &str,
    subs: usize,
    pubs: usize,
    target: Target,
    out: &mut Outcome,
) -> Result<(Vec<(ConnSpec, Role)>, Option<String>), String> {
    let t = tag(name);
    let nodes = ctx.server.addrs.len();
    let sender = |i: usize| Role { sends: true, wait_ack: false, offset: i as f64 / pubs as f64 };
    if !ctx.kind.is_im() {
        let mut conns: Vec<(ConnSpec, Role)> =
            (0..pubs).map(|i| (room_spec(i, &t, false), sender(i))).collect();
        conns.extend((pubs..pubs + subs).map(|i| (room_spec(i, &t, false), Role::default())));
        return Ok((conns, None));
    }
    let users = &ctx.users;
    if users.len() < pubs + 1 {
        return Err(format!("needs more than {pubs} users, has {}", users.len()));
    }
    let api = &ctx.apis[0];
    let sub_users = (users.len() - pubs).min(subs);
    let conv = match target {
        Target::Room => {
            let room = api.create_room(&users[0], &t).await?;
            let joiners: Vec<_> = users[1..pubs + sub_users].to_vec();
            let api2 = api.clone();
            for_each(joiners, 8, move |u| {
                let api = api2.clone();
                async move { api.join_room(&u, room).await }
            })
            .await?;
            format!("r:{room}")
        }
        Target::Group => {
            let members: Vec<u64> = users[1..pubs + sub_users].iter().map(|u| u.id).collect();
            format!("g:{}", api.create_group(&users[0], &t, &members).await?)
        }
    };
    let mut conns = Vec::with_capacity(pubs + subs);
    for (i, u) in users[..pubs].iter().enumerate() {
        conns.push((im_spec(i, 0, u, &conv, &t), sender(i)));
    }
    for j in 0..subs {
        let u = &users[pubs + j % sub_users];
        conns.push((im_spec(pubs + j, j % nodes, u, &conv, &t), Role::default()));
    }
    out.notes.push(format!(
        "{subs} subscriber connections of {sub_users} users, {pubs} publishers; conversation {conv}{}",
        if nodes > 1 {
            format!("; subscribers spread over {nodes} nodes, publishers on node 1")
        } else {
            String::new()
        }
    ));
    Ok((conns, Some(conv)))
}

/// Records a ladder window as a step; whether it failed the ladder rule.
fn record(out: &mut Outcome, what: String, w: &Window) -> bool {
    let failure = w.ladder_failure();
    let failed = failure.is_some();
    out.steps.push(Step { what, failure, window: w.clone() });
    failed
}

/// The delivery-rate ladder and the half-load step.
async fn ladder(ctx: &Ctx<'_>, fleet: &Fleet, pubs: usize, fanout: u64, out: &mut Outcome) {
    let s = ctx.settings;
    let rates = ladder_rates(s.ladder_start, s.ladder_factor, s.ladder_cap);
    let mut best: Option<(f64, Window)> = None;
    let mut failed_at: Option<f64> = None;
    let mut first = true;
    for &d in &rates {
        let w = step(ctx, fleet, d, pubs, fanout, if first { s.warmup } else { s.settle }).await;
        first = false;
        if record(out, format!("ladder {d:.0} deliveries/s"), &w) {
            failed_at = Some(d);
            break;
        }
        best = Some((d, w));
    }
    if let (true, Some((b, _)), Some(f)) = (s.refine, &best, failed_at) {
        let d = (b * f).sqrt();
        let w = step(ctx, fleet, d, pubs, fanout, s.settle).await;
        if !record(out, format!("refine {d:.0} deliveries/s"), &w) {
            best = Some((d, w));
        }
    }
    fleet.set_plan(crate::conn::Plan::IDLE);
    match &best {
        None => {
            let why = out.steps.first().and_then(|st| st.failure.clone()).unwrap_or_default();
            out.notes.push(format!("no ladder step passed (first step {:.0}/s: {why})", s.ladder_start));
        }
        Some((_, _)) if failed_at.is_none() => {
            out.notes
                .push(format!("every step passed up to the cap ({:.0}/s): the max is higher", s.ladder_cap));
        }
        Some(_) => {}
    }
    let Some((b, w)) = best else {
        for k in ["deliveries_per_s", "p50_ms", "p99_ms", "cpu_us_per_delivery", "p99_half_ms"] {
            out.fig(k, label(k), None);
        }
        return;
    };
    out.fig("deliveries_per_s", label("deliveries_per_s"), Some(w.deliveries_per_s()));
    out.fig("p50_ms", label("p50_ms"), w.p50_ms);
    out.fig("p99_ms", label("p99_ms"), w.p99_ms);
    out.fig("cpu_us_per_delivery", label("cpu_us_per_delivery"), w.cpu_us_per_delivery());
    // Half load: reuse a ladder step at half the max rate if there is one.
    let half = b / 2.0;
    let reuse = out
        .steps
        .iter()
        .find(|st| {
            st.failure.is_none() && (st.window.planned_msgs_per_s * fanout as f64 / half - 1.0).abs() < 0.05
        })
        .map(|st| st.window.clone());
    let hw = match reuse {
        Some(w) => w,
        None => {
            let w = step(ctx, fleet, half, pubs, fanout, s.settle).await;
            out.steps.push(Step {
                what: format!("half load {half:.0} deliveries/s"),
                failure: w.ladder_failure(),
                window: w.clone(),
            });
            fleet.set_plan(crate::conn::Plan::IDLE);
            w
        }
    };
    out.fig("p99_half_ms", label("p99_half_ms"), hw.p99_ms);
}

/// Row label of a fan-out figure.
fn label(key: &str) -> &'static str {
    match key {
        "deliveries_per_s" => "deliveries/s (max passing step)",
        "p50_ms" => "p50 ms at max",
        "p99_ms" => "p99 ms at max",
        "cpu_us_per_delivery" => "server CPU µs per delivery at max",
        _ => "p99 ms at half of max",
    }
}

/// One ladder step at `deliveries` per second.
async fn step(
    ctx: &Ctx<'_>,
    fleet: &Fleet,
    deliveries: f64,
    pubs: usize,
    fanout: u64,
    settle: f64,
) -> Window {
    let msgs = deliveries / fanout as f64;
    measure(ctx, fleet, msgs / pubs as f64, msgs, fanout, settle).await
}

/// im groups keep history: reads the newest page and checks it is in order.
async fn history_check(ctx: &Ctx<'_>, conv: &str, out: &mut Outcome) {
    let started = Instant::now();
    match ctx.apis[0].history_ids(&ctx.users[0], conv, 200).await {
        Ok(ids) => {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let ordered = ids.windows(2).all(|w| w[0] + 1 == w[1]);
            out.fig("history_ms", "history page (200 newest) ms", Some(ms));
            out.notes.push(format!(
                "history of {conv}: newest page of {} messages, ids {}consecutive and ascending, newest id {}",
                ids.len(),
                if ordered { "" } else { "NOT " },
                ids.last().copied().unwrap_or(0)
            ));
        }
        Err(e) => out.notes.push(format!("history read failed: {e}")),
    }
}
