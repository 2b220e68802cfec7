//! Per-connection token bucket: `rate` frames per second on average, bursts
//! up to `burst`.

use std::time::Instant;

/// A token bucket refilled continuously.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(rate.max(1)), burst, tokens: burst, last: now }
    }

    /// How long since the bucket was last used.
    pub(crate) fn idle_for(&self, now: Instant) -> std::time::Duration {
        now.saturating_duration_since(self.last)
    }

    /// Takes one token if available.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert_eq!((0..5).filter(|_| b.take(t0)).count(), 5, "the whole burst");
        assert!(!b.take(t0), "empty");
        // 10/s refills one token every 100 ms.
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(150)));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 5);
    }
}
