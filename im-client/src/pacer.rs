//! Client-side pacing under the server's rate limit.
//!
//! The server answers frames beyond its token bucket (`rate_per_sec`,
//! `rate_burst` in `hello`) with `rate_limited`, and may close a client that
//! keeps flooding with the terminal 4004. After a long outage the outbox can
//! hold hundreds of sends that all want to go at once, so the client keeps
//! its own, smaller bucket and sends the rest as it refills.

use std::time::Instant;

use im_protocol::WireLimits;

/// Share of the server's rate and burst the client allows itself, leaving
/// room for pings and for clock skew between the two buckets.
const RATE_SHARE: f64 = 0.8;
const BURST_SHARE: f64 = 0.5;

/// A token bucket: one token per frame.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Pacer {
    /// A full bucket below the server's `limits`.
    pub(crate) fn new(limits: &WireLimits, now: Instant) -> Self {
        let rate = (f64::from(limits.rate_per_sec) * RATE_SHARE).max(1.0);
        let burst = (f64::from(limits.rate_burst) * BURST_SHARE).max(1.0);
        Self { tokens: burst, rate, burst, last: now }
    }

    /// Whole frames that may be sent now.
    pub(crate) fn available(&mut self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens.max(0.0) as usize
    }

    /// Records `n` frames sent (pings too: they may overdraw the bucket).
    pub(crate) fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(&WireLimits::default(), t0); // 50/s, burst 200 → 40/s, 100
        assert_eq!(p.available(t0), 100);
        p.spend(100);
        assert_eq!(p.available(t0), 0);
        assert_eq!(p.available(t0 + Duration::from_millis(500)), 20);
        p.spend(21); // a ping overdraws
        assert_eq!(p.available(t0 + Duration::from_millis(500)), 0);
        assert_eq!(p.available(t0 + Duration::from_secs(60)), 100, "never above the burst");
    }
}
