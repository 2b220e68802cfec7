//! Percentiles, the totals of a measurement window and the ladder rule.

use serde::Serialize;

/// Fraction of the expected deliveries a ladder step must deliver.
pub const PASS_DELIVERED: f64 = 0.999;
/// Largest p99 latency of a passing ladder step, milliseconds.
pub const PASS_P99_MS: f64 = 50.0;
/// Fraction of the planned send rate the senders must reach (below it the
/// server, or the generator, could not take the load).
pub const PASS_SEND_RATE: f64 = 0.95;

/// The `p`-th percentile (0–100, nearest rank) of sorted samples, or `None`
/// when there are none.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Microseconds to milliseconds.
pub fn ms(us: Option<u32>) -> Option<f64> {
    us.map(|u| f64::from(u) / 1000.0)
}

/// Everything measured in one window, summed over the connections.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    /// Planned messages per second, all senders together.
    pub planned_msgs_per_s: f64,
    /// Window length, seconds.
    pub secs: f64,
    /// Messages sent in the window.
    pub sent: u64,
    /// Deliveries expected (sent × recipients per message).
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Acks received (acked scenarios).
    pub acked: u64,
    /// Delivery latency percentiles, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile delivery latency, ms.
    pub p99_ms: Option<f64>,
    /// Ack latency median, ms.
    pub ack_p50_ms: Option<f64>,
    /// Ack latency 99th percentile, ms.
    pub ack_p99_ms: Option<f64>,
    /// Server CPU time during the window (all server processes), µs.
    pub server_cpu_us: u64,
    /// Load generator CPU time during the window, µs.
    pub loadgen_cpu_us: u64,
    /// CPU time of everything else on the machine during the window (other
    /// processes, and kernel work not charged to a process), µs: a sign of
    /// contention from outside the benchmark.
    pub other_cpu_us: u64,
    /// Error frames received during the window.
    pub errors: u64,
    /// Connections that ended before the scenario stopped them (so far).
    pub closed: u64,
}

impl Window {
    /// Builds the totals from raw counts and (unsorted) latency samples.
    pub fn from_samples(mut self, mut lat: Vec<u32>, mut ack_lat: Vec<u32>) -> Self {
        lat.sort_unstable();
        ack_lat.sort_unstable();
        self.p50_ms = ms(percentile(&lat, 50.0));
        self.p99_ms = ms(percentile(&lat, 99.0));
        self.ack_p50_ms = ms(percentile(&ack_lat, 50.0));
        self.ack_p99_ms = ms(percentile(&ack_lat, 99.0));
        self
    }

    /// Deliveries per second actually received.
    pub fn deliveries_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.delivered as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Acks per second actually received.
    pub fn acks_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.acked as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Fraction of expected deliveries that arrived (1 when none expected).
    pub fn delivered_ratio(&self) -> f64 {
        if self.expected == 0 {
            return if self.sent == 0 { 0.0 } else { 1.0 };
        }
        self.delivered as f64 / self.expected as f64
    }

    /// Server CPU per delivery, µs.
    pub fn cpu_us_per_delivery(&self) -> Option<f64> {
        (self.delivered > 0).then(|| self.server_cpu_us as f64 / self.delivered as f64)
    }

    /// Why a ladder step fails, or `None` when it passes: at least
    /// [`PASS_DELIVERED`] of the expected deliveries, p99 at most
    /// [`PASS_P99_MS`], and at least [`PASS_SEND_RATE`] of the planned rate.
    pub fn ladder_failure(&self) -> Option<String> {
        let planned = self.planned_msgs_per_s * self.secs;
        if planned > 0.0 && (self.sent as f64) < PASS_SEND_RATE * planned {
            return Some(format!("sent {:.0}% of the planned messages", 100.0 * self.sent as f64 / planned));
        }
        if self.delivered_ratio() < PASS_DELIVERED {
            return Some(format!("delivered {:.2}%", 100.0 * self.delivered_ratio()));
        }
        match self.p99_ms {
            None => Some("no deliveries".into()),
            Some(p) if p > PASS_P99_MS => Some(format!("p99 {p:.1} ms")),
            Some(_) => None,
        }
    }
}

/// A ladder's next rates: start at `start`, multiply by `factor` up to `cap`.
pub fn ladder_rates(start: f64, factor: f64, cap: f64) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut r = start;
    while r <= cap * 1.0001 && rates.len() < 64 {
        rates.push(r);
        r *= factor;
    }
    rates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn step(sent: u64, expected: u64, delivered: u64, p99: f64) -> Window {
        Window {
            planned_msgs_per_s: 100.0,
            secs: 1.0,
            sent,
            expected,
            delivered,
            p99_ms: Some(p99),
            ..Window::default()
        }
    }

    #[test]
    fn ladder_pass_and_fail() {
        assert_eq!(step(100, 1000, 1000, 3.0).ladder_failure(), None);
        assert_eq!(step(100, 1000, 999, 50.0).ladder_failure(), None);
        assert!(step(100, 1000, 998, 3.0).ladder_failure().expect("fails").starts_with("delivered"));
        assert!(step(100, 1000, 1000, 50.1).ladder_failure().expect("fails").starts_with("p99"));
        assert!(step(90, 900, 900, 1.0).ladder_failure().expect("fails").starts_with("sent"));
        let w = Window { secs: 2.0, delivered: 500, server_cpu_us: 250, ..Window::default() };
        assert_eq!(w.deliveries_per_s(), 250.0);
        assert_eq!(w.cpu_us_per_delivery(), Some(0.5));
    }

    #[test]
    fn ladder_rates_grow_to_cap() {
        assert_eq!(ladder_rates(10.0, 2.0, 80.0), vec![10.0, 20.0, 40.0, 80.0]);
        assert_eq!(ladder_rates(10.0, 2.0, 79.0), vec![10.0, 20.0, 40.0]);
    }
}
