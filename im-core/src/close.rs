//! WebSocket close codes and what a client must do after each.
//!
//! The private-use range 3000–4999 is split by reaction, after Centrifugo:
//!
//! | range | reaction |
//! |---|---|
//! | 3000–3499 | reconnect to the same URL after backoff, then sync |
//! | 3500–3999 | ask the dispatcher for a node again, then reconnect and sync |
//! | 4000–4999 | terminal: do not reconnect; surface the reason to the app |
//!
//! Standard codes: 1009 (frame too big) and 1007 (text not UTF-8) mean the
//! client sent a bad frame — drop that frame, reconnect and sync. Any other standard code
//! (1000, 1001, 1006, 1011, 1012 …) means "reconnect via the dispatcher".

use serde::{Deserialize, Serialize};

/// A WebSocket close code as used by `im`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CloseCode(pub u16);

/// What a client does after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReaction {
    /// Reconnect to the same node after backoff, then sync.
    Reconnect,
    /// Ask the dispatcher again, then reconnect and sync.
    ReconnectViaDispatcher,
    /// Do not reconnect; the app must act (log in again, upgrade, …).
    Stop,
}

impl CloseCode {
    /// The server hit a transient problem; reconnect here.
    pub const RECONNECT: CloseCode = CloseCode(3000);
    /// The connection's send queue overflowed (slow reader). Nothing is lost:
    /// reconnect and sync.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(3001);
    /// The server heard nothing from the client within the idle timeout.
    pub const HEARTBEAT_TIMEOUT: CloseCode = CloseCode(3002);
    /// The server is shutting down; go back to the dispatcher.
    pub const SHUTDOWN: CloseCode = CloseCode(3500);
    /// The node is draining for a redeploy; go back to the dispatcher.
    pub const DRAIN: CloseCode = CloseCode(3501);
    /// The node has lost its link to the rest of the cluster (its broker)
    /// for a while and misses other nodes' messages; go back to the
    /// dispatcher for a node that has it.
    pub const NODE_ISOLATED: CloseCode = CloseCode(3502);
    /// The token is invalid or expired; log in again.
    pub const UNAUTHORIZED: CloseCode = CloseCode(4000);
    /// The session was revoked (logout); do not reconnect with this token.
    pub const SESSION_REVOKED: CloseCode = CloseCode(4001);
    /// The user is banned.
    pub const BANNED: CloseCode = CloseCode(4002);
    /// The client asked for a protocol version the server does not speak.
    pub const UNSUPPORTED_PROTOCOL: CloseCode = CloseCode(4003);
    /// The client kept violating the protocol (e.g. sustained flooding).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(4004);
    /// Standard 1009: a frame exceeded `max_frame_bytes`.
    pub const FRAME_TOO_BIG: CloseCode = CloseCode(1009);
    /// Standard 1007: a text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);

    /// Every close code this crate names, in the order of the spec's table.
    pub const NAMED: [CloseCode; 13] = [
        CloseCode::RECONNECT,
        CloseCode::SLOW_CONSUMER,
        CloseCode::HEARTBEAT_TIMEOUT,
        CloseCode::SHUTDOWN,
        CloseCode::DRAIN,
        CloseCode::NODE_ISOLATED,
        CloseCode::UNAUTHORIZED,
        CloseCode::SESSION_REVOKED,
        CloseCode::BANNED,
        CloseCode::UNSUPPORTED_PROTOCOL,
        CloseCode::POLICY_VIOLATION,
        CloseCode::FRAME_TOO_BIG,
        CloseCode::INVALID_PAYLOAD,
    ];

    /// What a client must do after this close.
    pub fn reaction(self) -> CloseReaction {
        match self.0 {
            1007 | 1009 => CloseReaction::Reconnect,
            3000..=3499 => CloseReaction::Reconnect,
            4000..=4999 => CloseReaction::Stop,
            _ => CloseReaction::ReconnectViaDispatcher,
        }
    }

    /// A short name for logs and metrics (`"slow_consumer"`), or `"other"`.
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::RECONNECT => "reconnect",
            CloseCode::SLOW_CONSUMER => "slow_consumer",
            CloseCode::HEARTBEAT_TIMEOUT => "heartbeat_timeout",
            CloseCode::SHUTDOWN => "shutdown",
            CloseCode::DRAIN => "drain",
            CloseCode::NODE_ISOLATED => "node_isolated",
            CloseCode::UNAUTHORIZED => "unauthorized",
            CloseCode::SESSION_REVOKED => "session_revoked",
            CloseCode::BANNED => "banned",
            CloseCode::UNSUPPORTED_PROTOCOL => "unsupported_protocol",
            CloseCode::POLICY_VIOLATION => "policy_violation",
            CloseCode::FRAME_TOO_BIG => "frame_too_big",
            CloseCode::INVALID_PAYLOAD => "invalid_payload",
            _ => "other",
        }
    }
}

impl From<u16> for CloseCode {
    fn from(v: u16) -> Self {
        CloseCode(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_to_reactions() {
        assert_eq!(CloseCode::SLOW_CONSUMER.reaction(), CloseReaction::Reconnect);
        assert_eq!(CloseCode::HEARTBEAT_TIMEOUT.reaction(), CloseReaction::Reconnect);
        assert_eq!(CloseCode::DRAIN.reaction(), CloseReaction::ReconnectViaDispatcher);
        assert_eq!(CloseCode::SHUTDOWN.reaction(), CloseReaction::ReconnectViaDispatcher);
        assert_eq!(CloseCode::NODE_ISOLATED.reaction(), CloseReaction::ReconnectViaDispatcher);
        assert_eq!(CloseCode::UNAUTHORIZED.reaction(), CloseReaction::Stop);
        assert_eq!(CloseCode::SESSION_REVOKED.reaction(), CloseReaction::Stop);
        assert_eq!(CloseCode(1006).reaction(), CloseReaction::ReconnectViaDispatcher);
        assert_eq!(CloseCode::FRAME_TOO_BIG.reaction(), CloseReaction::Reconnect);
        assert_eq!(CloseCode::INVALID_PAYLOAD.reaction(), CloseReaction::Reconnect);
        assert_eq!(CloseCode(3499).reaction(), CloseReaction::Reconnect);
        assert_eq!(CloseCode(3999).reaction(), CloseReaction::ReconnectViaDispatcher);
        assert_eq!(CloseCode(4999).reaction(), CloseReaction::Stop);
    }

    #[test]
    fn named_lists_exactly_the_codes_that_have_a_name() {
        let named: Vec<u16> = (0..=u16::MAX).filter(|&v| CloseCode(v).name() != "other").collect();
        let mut listed: Vec<u16> = CloseCode::NAMED.iter().map(|c| c.0).collect();
        listed.sort_unstable();
        assert_eq!(named, listed);
    }
}
