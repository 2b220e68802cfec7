//! `idle`: many connections that send nothing. Memory per connection
//! (server RSS growth ÷ connections) and the server's CPU while idle, at a
//! fixed count and at the most the open-file limit allows.

use std::time::Duration;

use super::{im_spec, note_fleet, note_troubles, room_spec, tag, Ctx, Fleet, Outcome};
use crate::conn::Role;
use crate::proto::ConnSpec;

/// Runs the idle scenario.
pub async fn run(ctx: &Ctx<'_>) -> Outcome {
    let s = ctx.settings;
    let mut out = Outcome::new("idle", ctx.kind);
    let (n1, n2) = s.idle_counts;
    let t = tag("idle");
    let spec = |i: usize| -> ConnSpec {
        if ctx.kind.is_im() {
            let u = &ctx.users[i % ctx.users.len()];
            im_spec(i, 0, u, "", &t)
        } else {
            room_spec(i, &format!("idle{}", i % 100), false)
        }
    };
    let settle = Duration::from_secs_f64(s.warmup);
    let rss0 = ctx.server_rss();
    let deadline = Duration::from_secs(if s.quick { 60 } else { 180 });
    let first = Fleet::connect(ctx, (0..n1).map(|i| (spec(i), Role::default())).collect(), deadline).await;
    let rate1 = first.connected as f64 / first.connect_secs.max(1e-3);
    tokio::time::sleep(settle).await;
    let rss1 = ctx.server_rss();
    let cpu0 = ctx.server_cpu();
    tokio::time::sleep(Duration::from_secs_f64(s.idle_secs)).await;
    let cpu1 = ctx.server_cpu();
    let per_conn = |rss: u64, n: usize| (n > 0).then(|| rss.saturating_sub(rss0) as f64 / n as f64);
    out.fig("conns", "connections", Some(first.connected as f64));
    out.fig("kib_per_conn", "KiB RSS per connection", per_conn(rss1, first.connected));
    out.fig("idle_cpu_pct", "idle CPU, % of a core", Some((cpu1 - cpu0) as f64 / (s.idle_secs * 1e4)));
    out.fig("connect_per_s", "connections opened per s", Some(rate1));
    note_fleet(&mut out, &first, n1);

    let mut total = first.connected;
    let mut second = None;
    if n2 > n1 {
        let more =
            Fleet::connect(ctx, (n1..n2).map(|i| (spec(i), Role::default())).collect(), deadline).await;
        tokio::time::sleep(settle).await;
        total += more.connected;
        let rss2 = ctx.server_rss();
        out.fig("max_conns", "max connections (open-file limit)", Some(total as f64));
        out.fig("kib_per_conn_max", "KiB RSS per connection at max", per_conn(rss2, total));
        note_fleet(&mut out, &more, n2 - n1);
        second = Some(more);
    }
    if ctx.kind.is_im() {
        out.notes.push(format!(
            "{total} connections of {} users (one token each, distinct device ids)",
            ctx.users.len().min(total.max(1))
        ));
    }
    out.notes.push(format!("server RSS {rss0} KiB before, {rss1} KiB at {}", first.connected));
    note_troubles(&mut out, &first);
    if let Some(more) = &second {
        note_troubles(&mut out, more);
    }
    first.stop().await;
    if let Some(more) = second {
        more.stop().await;
    }
    // Let the server notice the closes before the next scenario measures.
    tokio::time::sleep(Duration::from_secs(1)).await;
    out
}
