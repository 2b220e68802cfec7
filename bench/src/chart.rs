//! `chart.svg`: a hand-written SVG bar chart of each scenario's throughput
//! per server, on a log scale (the servers differ by orders of magnitude).

use std::fmt::Write;

use crate::report::{fmt_num, Run};
use crate::servers::Kind;

/// The scenarios charted, with the figure charted for each.
const CHARTED: [(&str, &str); 7] = [
    ("room-1000x1", "deliveries_per_s"),
    ("room-100x10", "deliveries_per_s"),
    ("group-500", "deliveries_per_s"),
    ("cross-node", "deliveries_per_s"),
    ("direct-64", "acked_per_s"),
    ("direct-1000", "acked_per_s"),
    ("hot-64", "stored_per_s"),
];

fn color(k: Kind) -> &'static str {
    match k {
        Kind::Raw => "#7f7f7f",
        Kind::SocketIo => "#e08a2c",
        Kind::ImMemory => "#4a90d9",
        Kind::ImEmbedded => "#1f4e8c",
        Kind::ImCluster => "#3aa37a",
    }
}

/// Compact value label: 1.2M, 340k, 950.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// XML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The SVG document.
pub fn svg(run: &Run) -> String {
    let kinds: Vec<Kind> =
        Kind::ALL.into_iter().filter(|k| run.outcomes.iter().any(|o| o.server == *k)).collect();
    let groups: Vec<(&str, &str)> =
        CHARTED.into_iter().filter(|(sc, _)| run.outcomes.iter().any(|o| o.scenario == *sc)).collect();
    let (w, h) = (980.0_f64, 460.0_f64);
    let (left, right, top, bottom) = (70.0, 20.0, 70.0, 70.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let values: Vec<f64> = groups
        .iter()
        .flat_map(|(sc, key)| kinds.iter().filter_map(move |k| run.value(sc, *k, key)))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = values.iter().cloned().fold(f64::INFINITY, f64::min).max(1.0).log10().floor().min(2.0);
    let hi = values.iter().cloned().fold(1.0, f64::max).log10().ceil().max(lo + 1.0);
    let y = |v: f64| top + plot_h * (1.0 - ((v.max(1.0).log10() - lo) / (hi - lo)).clamp(0.0, 1.0));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let title = format!(
        "Throughput per scenario (log scale; msgs or deliveries per second) — {} CPUs, {}",
        run.machine.nproc, run.machine.date
    );
    let _ =
        writeln!(s, r#"<text x="{left}" y="22" font-size="14" font-weight="bold">{}</text>"#, esc(&title));
    for (i, k) in kinds.iter().enumerate() {
        let x = left + i as f64 * 130.0;
        let _ = writeln!(s, r#"<rect x="{x}" y="34" width="12" height="12" fill="{}"/>"#, color(*k));
        let _ = writeln!(s, r#"<text x="{}" y="45">{}</text>"#, x + 16.0, esc(k.title()));
    }
    for e in (lo as i64)..=(hi as i64) {
        let v = 10f64.powi(e as i32);
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            yy + 4.0,
            short(v)
        );
    }
    let gw = plot_w / groups.len().max(1) as f64;
    let bw = (gw * 0.8 / kinds.len().max(1) as f64).min(40.0);
    for (gi, (sc, key)) in groups.iter().enumerate() {
        let gx = left + gi as f64 * gw + (gw - bw * kinds.len() as f64) / 2.0;
        for (ki, k) in kinds.iter().enumerate() {
            let x = gx + ki as f64 * bw;
            match run.value(sc, *k, key) {
                Some(v) if v > 0.0 => {
                    let yy = y(v);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                        bw - 2.0,
                        top + plot_h - yy,
                        color(*k),
                        esc(sc),
                        esc(k.title()),
                        fmt_num(v)
                    );
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                        x + bw / 2.0 - 1.0,
                        yy - 3.0,
                        short(v)
                    );
                }
                _ if run.find(sc, *k).is_some() => {
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle" fill="{}">✗</text>"#,
                        x + bw / 2.0 - 1.0,
                        top + plot_h - 4.0,
                        color(*k)
                    );
                }
                _ => {}
            }
        }
        let cx = left + gi as f64 * gw + gw / 2.0;
        let what = format!("{}/s", key.trim_end_matches("_per_s").replace('_', " "));
        let _ = writeln!(
            s,
            r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{cx:.1}" y="{:.1}" font-size="10" fill="#555555" text-anchor="middle">{}</text>"##,
            top + plot_h + 16.0,
            esc(sc),
            top + plot_h + 30.0,
            esc(&what)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333333"/>"##,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{:.1}" font-size="11">✗: no ladder step passed. Fan-out: deliveries/s at the highest passing step; direct: acked msgs/s; hot: stored msgs/s.</text>"#,
        h - 18.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn short_labels() {
        assert_eq!(short(1_250_000.0), "1.2M");
        assert_eq!(short(340_000.0), "340k");
        assert_eq!(short(2_500.0), "2.5k");
        assert_eq!(short(950.0), "950");
    }
}
