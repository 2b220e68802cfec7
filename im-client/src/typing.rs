//! Typing, apart from any I/O: what this user's typing makes the client
//! send ([`TypingOut`]: throttled, refreshed while the user keeps typing,
//! stopped by itself after a pause), and how long others' typing lasts
//! ([`TypingIn`]: a `typing: true` not refreshed expires).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use im_protocol::limits::{TYPING_EXPIRY_MS, TYPING_REFRESH_MS};
use im_protocol::{ConversationId, UserId};

/// How long after the app's last `typing(conv, true)` the client sends
/// `typing: false` by itself (the user paused).
pub const TYPING_IDLE: Duration = Duration::from_secs(5);

/// Most conversations × users whose typing is tracked; beyond, new ones
/// are passed on without expiry tracking.
const TYPING_IN_MAX: usize = 10_000;

fn refresh() -> Duration {
    Duration::from_millis(TYPING_REFRESH_MS)
}

/// This user's typing, per conversation: when `true` was last sent and
/// when the app last said the user types.
#[derive(Debug, Default)]
pub(crate) struct TypingOut {
    convs: HashMap<ConversationId, (Instant, Instant)>,
}

impl TypingOut {
    /// The app says the user types (`true`) or stopped; returns what to
    /// send now, if anything (`true` at most once per refresh interval).
    pub(crate) fn call(&mut self, conv: ConversationId, typing: bool, now: Instant) -> Option<bool> {
        if !typing {
            return self.convs.remove(&conv).map(|_| false);
        }
        match self.convs.get_mut(&conv) {
            Some((sent, call)) => {
                *call = now;
                if now.duration_since(*sent) >= refresh() {
                    *sent = now;
                    return Some(true);
                }
                None
            }
            None => {
                self.convs.insert(conv, (now, now));
                Some(true)
            }
        }
    }

    /// What is due at `now`: a refresh while the user still types, a
    /// `false` once they paused for [`TYPING_IDLE`].
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<(ConversationId, bool)> {
        let mut due = Vec::new();
        self.convs.retain(|&conv, (sent, call)| {
            if now.duration_since(*call) >= TYPING_IDLE {
                due.push((conv, false));
                return false;
            }
            if now.duration_since(*sent) >= refresh() {
                *sent = now;
                due.push((conv, true));
            }
            true
        });
        due
    }

    /// The user sent a message in `conv`: receivers hide the indicator
    /// on the message itself, so nothing more is sent.
    pub(crate) fn sent_message(&mut self, conv: ConversationId) {
        self.convs.remove(&conv);
    }

    /// The connection ended: typing is not worth resending.
    pub(crate) fn clear(&mut self) {
        self.convs.clear();
    }
}

/// Others' typing: when each `typing: true` expires.
#[derive(Debug, Default)]
pub(crate) struct TypingIn {
    until: HashMap<(ConversationId, UserId), Instant>,
}

impl TypingIn {
    /// `user` started or stopped typing in `conv`.
    pub(crate) fn heard(&mut self, conv: ConversationId, user: UserId, typing: bool, now: Instant) {
        if !typing {
            self.until.remove(&(conv, user));
        } else if self.until.len() < TYPING_IN_MAX || self.until.contains_key(&(conv, user)) {
            self.until.insert((conv, user), now + Duration::from_millis(TYPING_EXPIRY_MS));
        }
    }

    /// A message from `user` arrived in `conv`: whether they were shown typing.
    pub(crate) fn message_from(&mut self, conv: ConversationId, user: UserId) -> bool {
        self.until.remove(&(conv, user)).is_some()
    }

    /// The indicators that expired by `now` (removed).
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(ConversationId, UserId)> {
        let mut gone = Vec::new();
        self.until.retain(|&key, until| {
            let keep = *until > now;
            if !keep {
                gone.push(key);
            }
            keep
        });
        gone.sort();
        gone
    }

    /// The connection ended: nobody is shown typing any more.
    pub(crate) fn clear(&mut self) -> Vec<(ConversationId, UserId)> {
        let mut gone: Vec<_> = self.until.drain().map(|(k, _)| k).collect();
        gone.sort();
        gone
    }
}

#[cfg(test)]
mod tests {
    use im_protocol::GroupId;

    use super::*;

    const G: ConversationId = ConversationId::Group(GroupId(1));

    #[test]
    fn typing_out_is_throttled_refreshed_and_stopped_after_a_pause() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut out = TypingOut::default();
        assert_eq!(out.call(G, true, t0), Some(true));
        assert_eq!(out.call(G, true, ms(500)), None, "keystrokes within the interval send nothing");
        assert_eq!(out.tick(ms(1_000)), vec![]);
        // Still typing 3 s later: refreshed.
        assert_eq!(out.call(G, true, ms(2_900)), None);
        assert_eq!(out.tick(ms(3_000)), vec![(G, true)]);
        // Paused: stopped by itself 5 s after the last keystroke.
        assert_eq!(out.tick(ms(6_000)), vec![(G, true)], "refreshed while the pause is short");
        assert_eq!(out.tick(ms(7_900)), vec![(G, false)]);
        assert_eq!(out.tick(ms(9_000)), vec![]);
        // Stopping explicitly sends false once; a message ends it silently.
        assert_eq!(out.call(G, true, ms(10_000)), Some(true));
        assert_eq!(out.call(G, false, ms(10_100)), Some(false));
        assert_eq!(out.call(G, false, ms(10_200)), None);
        assert_eq!(out.call(G, true, ms(11_000)), Some(true));
        out.sent_message(G);
        assert_eq!(out.tick(ms(20_000)), vec![]);
    }

    #[test]
    fn typing_in_expires_without_a_refresh() {
        let t0 = Instant::now();
        let mut inn = TypingIn::default();
        let (a, b) = (UserId(1), UserId(2));
        inn.heard(G, a, true, t0);
        inn.heard(G, b, true, t0);
        inn.heard(G, a, true, t0 + Duration::from_secs(4)); // a refreshed
        assert_eq!(inn.expired(t0 + Duration::from_secs(5)), vec![]);
        assert_eq!(inn.expired(t0 + Duration::from_millis(TYPING_EXPIRY_MS)), vec![(G, b)]);
        assert!(inn.message_from(G, a));
        assert!(!inn.message_from(G, a));
        inn.heard(G, b, true, t0);
        inn.heard(G, b, false, t0);
        assert_eq!(inn.clear(), vec![]);
    }
}
