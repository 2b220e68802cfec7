//! Acked scenarios: every sender waits for the ack of each message before
//! sending the next.
//!
//! - `direct-64`, `direct-1000`: senders in pairs, each sending 1:1 to its
//!   peer (im: the direct conversation `d:A:B`; raw and Socket.IO: a room of
//!   two). One closed-loop window gives the acked rate and ack latency; a
//!   window paced at half that rate gives the ack p99 at half load (and, on
//!   im embedded, one paced at half the target rate).
//! - `hot-64`: 64 senders in one room, closed loop: how many messages one
//!   conversation stores per second, and (im) whether every connection gets
//!   the live messages in id order.

use std::time::Duration;

use super::{im_spec, measure, note_fleet, note_troubles, room_spec, tag, Ctx, Fleet, Outcome, Step};
use crate::conn::{Plan, Role};
use crate::imapi::for_each;
use crate::proto::ConnSpec;
use crate::servers::Kind;

/// The acked-rate target of im embedded for scenario `name` (msgs/s):
/// 30,000 with 64 senders, 50,000 with 1,000.
pub fn direct_target(name: &str) -> f64 {
    if name == "direct-64" {
        30_000.0
    } else {
        50_000.0
    }
}

fn sender(i: usize, n: usize) -> Role {
    Role { sends: true, wait_ack: true, offset: i as f64 / n as f64 }
}

/// Runs `direct-N`: `n` senders in `n / 2` pairs.
pub async fn direct(ctx: &Ctx<'_>, name: &str, n: usize) -> Outcome {
    let mut out = Outcome::new(name, ctx.kind);
    let mut n = n - n % 2;
    if ctx.kind.is_im() && ctx.users.len() < n {
        n = ctx.users.len() - ctx.users.len() % 2;
    }
    out.notes.push(format!("{n} senders in {} pairs, one message in flight each", n / 2));
    let t = tag(name);
    let conns: Vec<(ConnSpec, Role)> = (0..n)
        .map(|i| {
            let spec = if ctx.kind.is_im() {
                let (a, b) = (&ctx.users[i - i % 2], &ctx.users[i - i % 2 + 1]);
                let conv = format!("d:{}:{}", a.id.min(b.id), a.id.max(b.id));
                im_spec(i, 0, &ctx.users[i], &conv, &t)
            } else {
                room_spec(i, &format!("{t}p{}", i / 2), true)
            };
            (spec, sender(i, n))
        })
        .collect();
    let fleet = Fleet::connect(ctx, conns, Duration::from_secs(90)).await;
    note_fleet(&mut out, &fleet, n);
    if fleet.connected < n {
        fleet.stop().await;
        return out;
    }
    let s = ctx.settings;
    let w = measure(ctx, &fleet, f64::INFINITY, 0.0, 1, s.warmup).await;
    let max = w.acks_per_s();
    out.fig("acked_per_s", "acked msgs/s (closed loop)", Some(max));
    out.fig("ack_p50_ms", "ack p50 ms", w.ack_p50_ms);
    out.fig("ack_p99_ms", "ack p99 ms", w.ack_p99_ms);
    out.fig(
        "cpu_us_per_msg",
        "server CPU µs per acked msg",
        (w.acked > 0).then(|| w.server_cpu_us as f64 / w.acked as f64),
    );
    if w.delivered_ratio() < 1.0 {
        out.notes.push(format!(
            "closed loop: {:.2}% of the messages reached the peer live",
            100.0 * w.delivered_ratio()
        ));
    }
    out.steps.push(Step { what: "closed loop".into(), failure: None, window: w });
    let half = max / 2.0;
    let hw = paced(ctx, &fleet, n, half).await;
    out.fig("ack_p99_half_ms", "ack p99 ms at half of max", hw.ack_p99_ms);
    out.steps.push(Step { what: format!("paced {half:.0} msgs/s (half of max)"), failure: None, window: hw });
    if ctx.kind == Kind::ImEmbedded {
        let target_half = direct_target(name) / 2.0;
        if max >= target_half {
            let tw = paced(ctx, &fleet, n, target_half).await;
            out.fig("ack_p99_target_half_ms", "ack p99 ms at half the target rate", tw.ack_p99_ms);
            out.steps.push(Step {
                what: format!("paced {target_half:.0} msgs/s (half the target)"),
                failure: None,
                window: tw,
            });
        } else {
            out.notes.push(format!(
                "not paced at half the target ({target_half:.0}/s): above the closed-loop max"
            ));
        }
    }
    fleet.set_plan(Plan::IDLE);
    note_troubles(&mut out, &fleet);
    fleet.stop().await;
    out
}

/// A window paced at `total` msgs/s over `n` waiting senders.
async fn paced(ctx: &Ctx<'_>, fleet: &Fleet, n: usize, total: f64) -> crate::stats::Window {
    if total <= 0.0 {
        return crate::stats::Window::default();
    }
    measure(ctx, fleet, total / n as f64, total, 1, ctx.settings.settle).await
}

/// Runs `hot-N`: `n` waiting senders in one room.
pub async fn hot(ctx: &Ctx<'_>, name: &str, n: usize) -> Outcome {
    let mut out = Outcome::new(name, ctx.kind);
    let t = tag(name);
    let conns: Vec<(ConnSpec, Role)> = if ctx.kind.is_im() {
        if ctx.users.len() < n {
            out.notes.push(format!("needs {n} users, has {}", ctx.users.len()));
            return out;
        }
        let api = ctx.apis[0].clone();
        let room = match api.create_room(&ctx.users[0], &t).await {
            Ok(r) => r,
            Err(e) => {
                out.notes.push(format!("setup failed: {e}"));
                return out;
            }
        };
        let joiners = ctx.users[1..n].to_vec();
        let joined = for_each(joiners, 8, move |u| {
            let api = api.clone();
            async move { api.join_room(&u, room).await }
        })
        .await;
        if let Err(e) = joined {
            out.notes.push(format!("setup failed: {e}"));
            return out;
        }
        let conv = format!("r:{room}");
        (0..n).map(|i| (im_spec(i, 0, &ctx.users[i], &conv, &t), sender(i, n))).collect()
    } else {
        (0..n).map(|i| (room_spec(i, &t, true), sender(i, n))).collect()
    };
    out.notes.push(format!("{n} senders in one room, one message in flight each"));
    let fleet = Fleet::connect(ctx, conns, Duration::from_secs(60)).await;
    note_fleet(&mut out, &fleet, n);
    if fleet.connected < n {
        fleet.stop().await;
        return out;
    }
    let w = measure(ctx, &fleet, f64::INFINITY, 0.0, (n - 1) as u64, ctx.settings.warmup).await;
    fleet.set_plan(Plan::IDLE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    out.fig("stored_per_s", "stored (acked) msgs/s", Some(w.acks_per_s()));
    out.fig("ack_p99_ms", "ack p99 ms", w.ack_p99_ms);
    out.fig("deliveries_per_s", "deliveries/s", Some(w.deliveries_per_s()));
    out.fig("p99_ms", "delivery p99 ms", w.p99_ms);
    if ctx.kind.is_im() {
        let (checked, bad) = fleet.order();
        out.fig("order_violations", "deliveries out of id order", Some(bad as f64));
        out.notes.push(format!(
            "id order checked on {checked} deliveries over {n} connections: {bad} out of order"
        ));
    } else {
        out.notes.push("no message ids on this server: order not checked".into());
    }
    if w.delivered_ratio() < 1.0 {
        out.notes.push(format!("{:.2}% of the expected deliveries arrived", 100.0 * w.delivered_ratio()));
    }
    out.steps.push(Step { what: "closed loop".into(), failure: None, window: w });
    note_troubles(&mut out, &fleet);
    fleet.stop().await;
    out
}
