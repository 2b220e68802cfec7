//! Login throttling: after too many failed logins for one username, or
//! from one client address, further attempts are refused with
//! `rate_limited` (HTTP 429) for a lock-out time, without checking the
//! password — so guessing costs the attacker time, not the server hashes.
//!
//! Each node counts failures in memory (bounded), and, when the session
//! store keeps shared counters (Redis, PostgreSQL: [`failure_keys`] names
//! them), in the store too, so failures spread over the nodes of a
//! cluster add up: whichever count reaches the limit first locks. A
//! lock-out is written to the session store ([`lockout_keys`] names it),
//! so every node sharing the store refuses the username or address until
//! it ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins per username within [`WINDOW`] before it is locked.
pub const MAX_FAILURES_PER_USERNAME: u32 = 5;
/// Failed logins per client address within [`WINDOW`] before it is locked
/// (higher: many users may share an address behind NAT).
pub const MAX_FAILURES_PER_ADDRESS: u32 = 50;
/// How long failures are counted.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long a locked username or address is refused.
pub const LOCKOUT: Duration = Duration::from_secs(5 * 60);
/// Most usernames and addresses tracked (beyond, the oldest go).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

/// Failure counts of one kind of key.
#[derive(Debug)]
struct Counts<K> {
    max: u32,
    map: Mutex<HashMap<K, Window>>,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new(max: u32) -> Self {
        Counts { max, map: Mutex::new(HashMap::new()) }
    }

    /// How long `key` is still locked, if it is.
    fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).and_then(|w| w.locked_until).and_then(|until| until.checked_duration_since(now))
    }

    /// Counts a failure; whether it locked `key`.
    fn fail(&self, key: K, now: Instant) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            map.retain(|_, w| {
                now.duration_since(w.started) < WINDOW || w.locked_until.is_some_and(|u| u > now)
            });
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let w = map.entry(key).or_insert(Window { started: now, failures: 0, locked_until: None });
        if now.duration_since(w.started) >= WINDOW {
            *w = Window { started: now, failures: 0, locked_until: None };
        }
        w.failures += 1;
        if w.failures >= self.max {
            w.locked_until = Some(now + LOCKOUT);
            w.failures = 0;
            w.started = now;
            return true;
        }
        false
    }

    fn forget(&self, key: &K) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// The throttle of one node.
#[derive(Debug)]
pub struct LoginThrottle {
    usernames: Counts<String>,
    addresses: Counts<IpAddr>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            usernames: Counts::new(MAX_FAILURES_PER_USERNAME),
            addresses: Counts::new(MAX_FAILURES_PER_ADDRESS),
        }
    }
}

impl LoginThrottle {
    /// How long a login for `username` from `from` must wait, if at all.
    pub fn retry_after(&self, username: &str, from: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let user = self.usernames.locked(&username.to_ascii_lowercase(), now);
        let addr = from.and_then(|ip| self.addresses.locked(&ip, now));
        user.max(addr)
    }

    /// Counts a failed login; the [`lockout_keys`] it locked.
    pub fn failed(&self, username: &str, from: Option<IpAddr>) -> Vec<String> {
        let now = Instant::now();
        let (user_key, addr_key) = lockout_keys(username, from);
        let mut locked = Vec::new();
        if self.usernames.fail(username.to_ascii_lowercase(), now) {
            locked.push(user_key);
        }
        if let (Some(ip), Some(key)) = (from, addr_key) {
            if self.addresses.fail(ip, now) {
                locked.push(key);
            }
        }
        locked
    }

    /// A successful login clears the username's failures.
    pub fn succeeded(&self, username: &str) {
        self.usernames.forget(&username.to_ascii_lowercase());
    }
}

/// The session-store names of the lock-outs of `username` and of `from`.
pub fn lockout_keys(username: &str, from: Option<IpAddr>) -> (String, Option<String>) {
    (
        format!("login-locked:u:{}", username.to_ascii_lowercase()),
        from.map(|ip| format!("login-locked:a:{ip}")),
    )
}

/// The session-store names of the shared failure counts of `username`
/// and of `from`.
pub fn failure_keys(username: &str, from: Option<IpAddr>) -> (String, Option<String>) {
    (
        format!("login-failures:u:{}", username.to_ascii_lowercase()),
        from.map(|ip| format!("login-failures:a:{ip}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_locks_after_its_failures_and_a_success_clears_them() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_USERNAME - 1 {
            t.failed("Alice", Some(ip));
        }
        assert!(t.retry_after("alice", Some(ip)).is_none());
        t.succeeded("alice");
        for _ in 0..MAX_FAILURES_PER_USERNAME {
            t.failed("alice", Some(ip));
        }
        let wait = t.retry_after("ALICE", None).expect("locked");
        assert!(wait > LOCKOUT - Duration::from_secs(1) && wait <= LOCKOUT);
        assert!(t.retry_after("bob", Some(ip)).is_none(), "other usernames from the address still may");
    }

    #[test]
    fn an_address_locks_after_many_failures_across_usernames() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            t.failed(&format!("user{i}"), Some(ip));
        }
        assert!(t.retry_after("someone-new", Some(ip)).is_some());
        assert!(t.retry_after("someone-new", Some("192.0.2.8".parse().unwrap())).is_none());
    }
}
