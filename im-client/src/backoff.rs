//! The reconnect delay policy: exponential backoff with jitter, capped, with
//! an optional limit on consecutive attempts.
//!
//! The delays come from the `backoff` crate's [`ExponentialBackoff`], used as
//! a plain delay generator (`next_backoff()`), never as a retry loop: the
//! driver decides *whether* to retry from the close code, this module only
//! says *how long* to wait. Jitter matters: after a node dies or drains, its
//! clients must not all come back at the same instant.

use std::time::Duration;

use backoff::backoff::Backoff as _;
use backoff::ExponentialBackoff;

/// How long to wait between reconnect attempts.
///
/// The `n`-th consecutive attempt waits about `initial * multiplier^(n-1)`,
/// randomized by `± jitter` (a fraction, `0.0`–`1.0`) and never more than
/// `max`. The sequence starts again from `initial` once a connection was
/// healthy (it received `hello` and finished its first sync).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Delay before the first reconnect attempt.
    pub initial_delay: Duration,
    /// Largest delay between attempts.
    pub max_delay: Duration,
    /// Growth factor from one attempt to the next (at least 1.0).
    pub multiplier: f64,
    /// Random spread of each delay, as a fraction of it (`0.0` = none, `0.5` = ±50 %).
    pub jitter: f64,
    /// Give up (and stop with [`StopReason::TooManyAttempts`](crate::StopReason::TooManyAttempts))
    /// after this many consecutive failed attempts; `None`: retry forever.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.3,
            max_attempts: None,
        }
    }
}

/// The state of one run of reconnect attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    inner: ExponentialBackoff,
    max: Duration,
    attempts: u32,
    max_attempts: Option<u32>,
}

impl Backoff {
    pub(crate) fn new(policy: &ReconnectPolicy) -> Self {
        let max = policy.max_delay.max(policy.initial_delay);
        let inner = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(policy.initial_delay)
            .with_max_interval(max)
            .with_multiplier(policy.multiplier.max(1.0))
            .with_randomization_factor(policy.jitter.clamp(0.0, 1.0))
            .with_max_elapsed_time(None)
            .build();
        Self { inner, max, attempts: 0, max_attempts: policy.max_attempts }
    }

    /// The next attempt's number (1-based) and the delay before it, or `None`
    /// when the attempts are used up.
    pub(crate) fn next(&mut self) -> Option<(u32, Duration)> {
        if self.max_attempts.is_some_and(|m| self.attempts >= m) {
            return None;
        }
        self.attempts += 1;
        // With max_elapsed_time = None the generator never runs out.
        let delay = self.inner.next_backoff().unwrap_or(self.max).min(self.max);
        Some((self.attempts, delay))
    }

    /// Starts over from the initial delay (after a healthy connection).
    pub(crate) fn reset(&mut self) {
        self.inner.reset();
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> ReconnectPolicy {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1_000),
            multiplier: 2.0,
            jitter,
            max_attempts: None,
        }
    }

    #[test]
    fn without_jitter_delays_double_up_to_the_cap() {
        let mut b = Backoff::new(&policy(0.0));
        let got: Vec<u64> = (0..7).map(|_| b.next().unwrap().1.as_millis() as u64).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn jittered_delays_stay_in_their_band_vary_and_never_exceed_the_cap() {
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(&policy(0.5));
            for n in 0..8u32 {
                let (attempt, d) = b.next().unwrap();
                assert_eq!(attempt, n + 1);
                let nominal = (100.0 * 2f64.powi(n as i32)).min(1000.0);
                let ms = d.as_secs_f64() * 1000.0;
                assert!(ms >= nominal * 0.5 - 1.0 && ms <= (nominal * 1.5 + 1.0).min(1000.0), "{n}: {ms}");
                if n == 0 {
                    distinct.insert(d.as_micros());
                }
            }
        }
        assert!(distinct.len() > 10, "jitter spreads the first delay: {distinct:?}");
    }

    #[test]
    fn reset_starts_over_and_max_attempts_ends_the_run() {
        let mut p = policy(0.0);
        p.max_attempts = Some(3);
        let mut b = Backoff::new(&p);
        assert_eq!(b.next().map(|(a, d)| (a, d.as_millis())), Some((1, 100)));
        assert_eq!(b.next().map(|(a, d)| (a, d.as_millis())), Some((2, 200)));
        assert_eq!(b.next().map(|(a, d)| (a, d.as_millis())), Some((3, 400)));
        assert_eq!(b.next(), None);
        b.reset();
        assert_eq!(b.next().map(|(a, d)| (a, d.as_millis())), Some((1, 100)));
    }
}
