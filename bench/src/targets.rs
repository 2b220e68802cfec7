//! The targets the im team reports against, computed from a run with
//! pass/fail.

use std::fmt::Write;

use crate::report::{fmt_num, Run};
use crate::servers::Kind;

/// One target and how the run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What the target says.
    pub target: String,
    /// What was measured (or why nothing was).
    pub measured: String,
    /// `Some(true)` pass, `Some(false)` fail, `None` not measured.
    pub pass: Option<bool>,
}

fn check(target: String, value: Option<f64>, unit: &str, ok: impl Fn(f64) -> bool) -> Verdict {
    match value {
        Some(v) => Verdict { target, measured: format!("{} {unit}", fmt_num(v)), pass: Some(ok(v)) },
        None => Verdict { target, measured: "not measured".into(), pass: None },
    }
}

/// Evaluates every target on the run.
pub fn evaluate(run: &Run) -> Vec<Verdict> {
    let mut v = Vec::new();
    let e = Kind::ImEmbedded;
    for k in [Kind::ImMemory, Kind::ImEmbedded] {
        v.push(check(
            format!("{}: idle ≤ 10 KiB RSS per authenticated connection", k.title()),
            run.value("idle", k, "kib_per_conn"),
            "KiB",
            |x| x <= 10.0,
        ));
    }
    for sc in ["room-1000x1", "room-100x10"] {
        let mine = run.value(sc, e, "deliveries_per_s");
        let raw = run.value(sc, Kind::Raw, "deliveries_per_s");
        let r = match (mine, raw) {
            (Some(m), Some(r)) if r > 0.0 => Some(m / r),
            (None, Some(_)) if run.find(sc, e).is_some() => Some(0.0),
            _ => None,
        };
        v.push(check(format!("{sc}, im embedded: ≥ 0.7 × raw deliveries/s"), r, "× raw", |x| x >= 0.7));
        v.push(check(
            format!("{sc}, im embedded: server CPU ≤ 0.5 µs per delivery at max"),
            run.value(sc, e, "cpu_us_per_delivery"),
            "µs",
            |x| x <= 0.5,
        ));
        v.push(check(
            format!("{sc}, im embedded: p99 ≤ 25 ms at half of its max"),
            run.value(sc, e, "p99_half_ms"),
            "ms",
            |x| x <= 25.0,
        ));
    }
    v.push(check(
        "hot-64, im embedded: ≥ 20,000 stored msgs/s with 64 senders".into(),
        run.value("hot-64", e, "stored_per_s"),
        "msgs/s",
        |x| x >= 20_000.0,
    ));
    for (sc, target) in [("direct-64", 30_000.0), ("direct-1000", 50_000.0)] {
        let senders = run
            .find(sc, e)
            .and_then(|o| o.notes.first())
            .and_then(|n| n.split(' ').next())
            .unwrap_or("?")
            .to_owned();
        v.push(check(
            format!("{sc}, im embedded: ≥ {} acked msgs/s ({senders} senders)", fmt_num(target)),
            run.value(sc, e, "acked_per_s"),
            "msgs/s",
            |x| x >= target,
        ));
        let half = run.value(sc, e, "ack_p99_target_half_ms");
        let mut verdict = check(
            format!("{sc}, im embedded: ack p99 ≤ 10 ms at {} msgs/s", fmt_num(target / 2.0)),
            half,
            "ms",
            |x| x <= 10.0,
        );
        if half.is_none() && run.find(sc, e).is_some() {
            verdict.measured = "max below that rate".into();
            verdict.pass = Some(false);
        }
        v.push(verdict);
    }
    for k in [Kind::ImMemory, Kind::ImEmbedded] {
        let n = run.value("logins", k, "logins").map(fmt_num).unwrap_or_else(|| "1,000".into());
        v.push(check(
            format!("{}: RSS after {n} logins within 64 MiB of before", k.title()),
            run.value("logins", k, "rss_growth_mib"),
            "MiB",
            |x| x <= 64.0,
        ));
    }
    v
}

/// The Markdown section of the targets.
pub fn targets_section(run: &Run) -> String {
    let mut md = String::from("\n## im targets\n\n| target | measured | result |\n|---|---|---|\n");
    for t in evaluate(run) {
        let result = match t.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "—",
        };
        let _ = writeln!(md, "| {} | {} | {result} |", t.target, t.measured);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::scenario::{Outcome, Settings};

    fn run_with(outcomes: Vec<Outcome>) -> Run {
        let settings = Settings {
            quick: true,
            warmup: 1.0,
            settle: 0.5,
            window: 1.0,
            drain: 0.5,
            pool: 10,
            idle_counts: (10, 20),
            idle_secs: 1.0,
            ladder_start: 1.0,
            ladder_factor: 2.0,
            ladder_cap: 8.0,
            refine: false,
            direct_many: 10,
            group_size: 10,
            connect_concurrency: 4,
        };
        Run {
            machine: Machine::probe(),
            settings,
            commit: "test".into(),
            servers: Vec::new(),
            skipped: Vec::new(),
            outcomes,
            elapsed_secs: 1.0,
        }
    }

    #[test]
    fn fan_out_ratio_to_raw() {
        let mut raw = Outcome::new("room-1000x1", Kind::Raw);
        raw.fig("deliveries_per_s", "d", Some(100_000.0));
        let mut im = Outcome::new("room-1000x1", Kind::ImEmbedded);
        im.fig("deliveries_per_s", "d", Some(80_000.0));
        im.fig("cpu_us_per_delivery", "c", Some(0.6));
        let run = run_with(vec![raw, im]);
        let v = evaluate(&run);
        let ratio =
            v.iter().find(|t| t.target.starts_with("room-1000x1, im embedded: ≥ 0.7")).expect("ratio");
        assert_eq!(ratio.pass, Some(true));
        assert_eq!(ratio.measured, "0.80 × raw");
        let cpu = v.iter().find(|t| t.target.contains("1000x1, im embedded: server CPU")).expect("cpu");
        assert_eq!(cpu.pass, Some(false));
        let idle = v.iter().find(|t| t.target.starts_with("im memory: idle")).expect("idle");
        assert_eq!(idle.pass, None);
        assert_eq!(run.reference("cross-node", Kind::Raw, "deliveries_per_s"), Some(100_000.0));
    }

    #[test]
    fn failed_ladder_counts_as_zero() {
        let raw = {
            let mut o = Outcome::new("room-100x10", Kind::Raw);
            o.fig("deliveries_per_s", "d", Some(50_000.0));
            o
        };
        let mut im = Outcome::new("room-100x10", Kind::ImEmbedded);
        im.fig("deliveries_per_s", "d", None);
        let v = evaluate(&run_with(vec![raw, im]));
        let ratio =
            v.iter().find(|t| t.target.starts_with("room-100x10, im embedded: ≥ 0.7")).expect("ratio");
        assert_eq!(ratio.pass, Some(false));
    }
}
