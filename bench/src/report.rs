//! The report: `results.md` (one Markdown table with every figure and its
//! ratios to raw and to Socket.IO, the im targets with pass/fail, the
//! ladder steps and notes) and `results.json` (everything measured).

use std::fmt::Write;

use serde::Serialize;

use crate::machine::Machine;
use crate::scenario::{Outcome, Settings};
use crate::servers::Kind;

/// Everything one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The machine and date.
    pub machine: Machine,
    /// The settings.
    pub settings: Settings,
    /// The im commit measured (as given by `run.sh`).
    pub commit: String,
    /// How each server was started.
    pub servers: Vec<(Kind, Vec<String>)>,
    /// Servers that could not be run, and why.
    pub skipped: Vec<(Kind, String)>,
    /// Every scenario on every server.
    pub outcomes: Vec<Outcome>,
    /// Wall-clock seconds of the whole run.
    pub elapsed_secs: f64,
}

impl Run {
    /// The outcome of `scenario` on `kind`.
    pub fn find(&self, scenario: &str, kind: Kind) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.scenario == scenario && o.server == kind)
    }

    /// Figure `key` of `scenario` on `kind`.
    pub fn value(&self, scenario: &str, kind: Kind, key: &str) -> Option<f64> {
        self.find(scenario, kind).and_then(|o| o.get(key))
    }

    /// The reference figure for ratios: the same scenario on `reference`,
    /// or for `cross-node` (im only) the single-node `room-1000x1`.
    pub fn reference(&self, scenario: &str, reference: Kind, key: &str) -> Option<f64> {
        self.value(scenario, reference, key).or_else(|| {
            (scenario == "cross-node").then(|| self.value("room-1000x1", reference, key)).flatten()
        })
    }
}

/// Formats a figure: thousands separators for large values, 3 significant
/// digits for small ones.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    if v.abs() >= 1000.0 {
        let n = v.round() as i64;
        let digits = n.abs().to_string();
        let mut s = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                s.push(',');
            }
            s.push(c);
        }
        return if n < 0 { format!("-{s}") } else { s };
    }
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `value ÷ reference` as `0.52×`, or `None` without both.
pub fn ratio(value: Option<f64>, reference: Option<f64>) -> Option<String> {
    match (value, reference) {
        (Some(v), Some(r)) if r > 0.0 => Some(format!("{:.2}×", v / r)),
        _ => None,
    }
}

/// Figures that are counts set by the scenario, not performance: no ratios.
const NO_RATIO: [&str; 4] = ["conns", "max_conns", "logins", "order_violations"];

/// One cell of the table: the value and its ratios to raw and Socket.IO.
fn cell(run: &Run, o: &Outcome, key: &str, v: Option<f64>) -> String {
    let Some(v) = v else { return "—".into() };
    if NO_RATIO.contains(&key) {
        return fmt_num(v);
    }
    let mut parts = Vec::new();
    for (k, name) in [(Kind::Raw, "raw"), (Kind::SocketIo, "sio")] {
        if o.server != k {
            if let Some(r) = ratio(Some(v), run.reference(&o.scenario, k, key)) {
                parts.push(format!("{r} {name}"));
            }
        }
    }
    if parts.is_empty() {
        fmt_num(v)
    } else {
        format!("{} ({})", fmt_num(v), parts.join(", "))
    }
}

/// The Markdown report.
pub fn markdown(run: &Run) -> String {
    let mut md = String::new();
    let s = &run.settings;
    let _ = writeln!(md, "# im benchmark — {}\n", if s.quick { "quick run" } else { "full run" });
    let _ = writeln!(md, "- Machine: {}", run.machine.line());
    let _ = writeln!(md, "- im commit: {}", run.commit);
    let _ = writeln!(
        md,
        "- Loopback only; server and load generator share the {} CPUs; release builds; {}-byte bodies; \
         windows of {} s ({} s warm-up, {} s settle, {} s drain); run took {:.0} s.",
        run.machine.nproc,
        crate::proto::BODY_LEN,
        s.window,
        s.warmup,
        s.settle,
        s.drain,
        run.elapsed_secs
    );
    let _ = writeln!(
        md,
        "- im's rate limits are on by default (50 frames/s, burst 200); the benchmark raises them with \
         `--rate-per-sec {r} --rate-burst {r}`.",
        r = crate::servers::IM_RATE
    );
    let _ = writeln!(
        md,
        "- A ladder step passes at ≥ {}% delivered, p99 ≤ {} ms and ≥ {}% of the planned send rate. \
         Ratios are value ÷ the same figure on raw and on Socket.IO (cross-node: ÷ their room-1000x1).",
        crate::stats::PASS_DELIVERED * 100.0,
        crate::stats::PASS_P99_MS,
        crate::stats::PASS_SEND_RATE * 100.0
    );
    let mut other: Vec<f64> = run
        .outcomes
        .iter()
        .flat_map(|o| o.steps.iter())
        .filter(|st| st.window.secs > 0.0)
        .map(|st| st.window.other_cpu_us as f64 / st.window.secs / 1e4)
        .collect();
    if !other.is_empty() {
        other.sort_by(f64::total_cmp);
        let median = other[other.len() / 2];
        let _ = writeln!(
            md,
            "- CPU used by other processes during the measurement windows (from /proc/stat): median {median:.0}% of \
             a CPU, max {:.0}%{}",
            other[other.len() - 1],
            if median > 10.0 { " — **the machine was busy: these figures are disturbed**" } else { "" }
        );
    }
    for (k, why) in &run.skipped {
        let _ = writeln!(md, "- **{} skipped**: {why}", k.title());
    }
    let kinds: Vec<Kind> =
        Kind::ALL.into_iter().filter(|k| run.outcomes.iter().any(|o| o.server == *k)).collect();
    let _ = writeln!(md, "\n## Results\n");
    let _ = write!(md, "| scenario | figure |");
    for k in &kinds {
        let _ = write!(md, " {} |", k.title());
    }
    let _ = write!(md, "\n|---|---|");
    for _ in &kinds {
        let _ = write!(md, "---|");
    }
    md.push('\n');
    let mut scenarios: Vec<&str> = Vec::new();
    for o in &run.outcomes {
        if !scenarios.contains(&o.scenario.as_str()) {
            scenarios.push(&o.scenario);
        }
    }
    for sc in &scenarios {
        let mut rows: Vec<(&'static str, &'static str)> = Vec::new();
        for o in run.outcomes.iter().filter(|o| o.scenario == *sc) {
            for f in &o.figures {
                if !rows.iter().any(|(k, _)| *k == f.key) {
                    rows.push((f.key, f.label));
                }
            }
        }
        for (key, label) in rows {
            let _ = write!(md, "| {sc} | {label} |");
            for k in &kinds {
                let c = match run.find(sc, *k) {
                    Some(o) => cell(run, o, key, o.get(key)),
                    None => " ".into(),
                };
                let _ = write!(md, " {c} |");
            }
            md.push('\n');
        }
    }
    md.push_str(&crate::targets::targets_section(run));
    let _ = writeln!(md, "\n## Ladder steps and notes\n");
    for o in &run.outcomes {
        let _ = writeln!(md, "- **{} on {}**", o.scenario, o.server.title());
        if !o.steps.is_empty() {
            let steps: Vec<String> = o
                .steps
                .iter()
                .map(|st| {
                    let w = &st.window;
                    let p99 = w.p99_ms.or(w.ack_p99_ms).map(fmt_num).unwrap_or_else(|| "—".into());
                    let rate = if w.acked > 0 { w.acks_per_s() } else { w.deliveries_per_s() };
                    let verdict = match &st.failure {
                        Some(f) => format!("✗ {f}"),
                        None => "✓".into(),
                    };
                    let pct = |us: u64| if w.secs > 0.0 { us as f64 / w.secs / 1e4 } else { 0.0 };
                    format!(
                        "{}: {}/s, {:.2}% delivered, p99 {p99} ms, CPU % server/loadgen/other {:.0}/{:.0}/{:.0}, {verdict}",
                        st.what,
                        fmt_num(rate),
                        100.0 * w.delivered_ratio(),
                        pct(w.server_cpu_us),
                        pct(w.loadgen_cpu_us),
                        pct(w.other_cpu_us)
                    )
                })
                .collect();
            let _ = writeln!(md, "  - steps: {}", steps.join("; "));
        }
        for n in &o.notes {
            let _ = writeln!(md, "  - {n}");
        }
    }
    let _ = writeln!(md, "\n## Servers\n");
    for (k, cmds) in &run.servers {
        for c in cmds {
            let _ = writeln!(md, "- {}: `{c}`", k.title());
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(1000.0), "1,000");
        assert_eq!(fmt_num(512.4), "512");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(25.0), "25");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(0.456), "0.46");
        assert_eq!(fmt_num(f64::NAN), "—");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(50.0), Some(100.0)), Some("0.50×".into()));
        assert_eq!(ratio(Some(50.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
