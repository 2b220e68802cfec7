//! The per-user message rate limit: every message a user sends over any of
//! their connections on this node takes a token from one bucket of theirs
//! (`ServerConfig::user_rate_per_sec`, bursts of `user_rate_burst`), on top
//! of each connection's own frame limit — so opening more connections
//! does not raise a user's rate. A refused send is `rate_limited`, which
//! the clients' outboxes resend later. Per node: a user connected to k
//! nodes may send up to k times the rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use im_protocol::UserId;

use crate::gateway::ratelimit::TokenBucket;

/// Shards of the bucket map (by user id), so senders rarely share a lock.
const SHARDS: usize = 16;

/// Buckets a shard holds before idle ones are dropped.
const SHARD_CAP: usize = 8192;

/// A bucket unused this long is full again, and can go.
const IDLE: Duration = Duration::from_secs(60);

/// One token bucket per user.
#[derive(Debug)]
pub(crate) struct UserSendLimit {
    rate: u32,
    burst: u32,
    shards: Vec<Mutex<HashMap<UserId, TokenBucket>>>,
}

impl UserSendLimit {
    /// `rate` messages per second per user, bursts of `burst`; `rate` 0: no limit.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        UserSendLimit { rate, burst, shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }

    /// Whether `user` may send one more message now.
    pub(crate) fn allow(&self, user: UserId, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let shard = &self.shards[(user.0 % SHARDS as u64) as usize];
        let mut buckets = shard.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= SHARD_CAP && !buckets.contains_key(&user) {
            buckets.retain(|_, b| b.idle_for(now) < IDLE);
        }
        buckets.entry(user).or_insert_with(|| TokenBucket::new(self.rate, self.burst, now)).take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_one_bucket_and_zero_means_no_limit() {
        let t0 = Instant::now();
        let limit = UserSendLimit::new(2, 3);
        let (a, b) = (UserId(1), UserId(17)); // the same shard
        assert_eq!((0..5).filter(|_| limit.allow(a, t0)).count(), 3, "a's burst");
        assert!(limit.allow(b, t0), "b has a bucket of its own");
        assert!(limit.allow(a, t0 + Duration::from_millis(500)), "2/s refills one token in 500 ms");
        let off = UserSendLimit::new(0, 0);
        assert!((0..1000).all(|_| off.allow(a, t0)));
    }
}
