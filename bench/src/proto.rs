//! The one small trait behind which each server's wire protocol sits, and the
//! message body every protocol carries.
//!
//! Every server is reached over a plain WebSocket with text frames, so one
//! connection driver ([`crate::conn`]) serves them all; a [`Proto`] only says
//! which URL to open, how the handshake goes, how to encode a message and how
//! to classify a received frame. Decoding is on the hot path of the load
//! generator (which shares the machine's cores with the server), so it parses
//! only what it must.

/// Length of every message body, in bytes.
pub const BODY_LEN: usize = 100;

/// What one connection is, for the protocol: where it connects and what it
/// sends to.
#[derive(Debug, Clone, Default)]
pub struct ConnSpec {
    /// Index of the connection in its scenario (unique there).
    pub index: usize,
    /// Which server node to connect to (0 unless a cluster).
    pub node: usize,
    /// Room name (raw and Socket.IO: the room the connection is in and sends to).
    pub room: String,
    /// Raw only: ask the server to answer every frame with `ack`.
    pub ack: bool,
    /// im only: the session token.
    pub token: String,
    /// im only: the device id (distinct per connection of a user).
    pub device: String,
    /// im only: the conversation id this connection sends to (`r:7`, `g:3`, `d:1:2`).
    pub conv: String,
    /// im only: a tag making `cmid`s unique per scenario run.
    pub cmid_tag: String,
}

/// What a received text frame means to the load generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message of another connection: when it was sent ([`crate::now_ns`])
    /// and its server-assigned id (0 when the server assigns none).
    Delivery {
        /// Send time, nanoseconds on the generator's clock.
        sent_ns: u64,
        /// Message id (im), else 0.
        id: u64,
    },
    /// The answer to one of this connection's sends (`rid` is the send's
    /// sequence number, or 0 when the protocol does not say which).
    Ack {
        /// Sequence number of the acknowledged send, 0 if unknown.
        rid: u64,
    },
    /// The server refused a request (im `error` frame); `rid` as for `Ack`.
    Error {
        /// Sequence number of the refused send, 0 if unknown.
        rid: u64,
        /// The error code.
        code: String,
    },
    /// A frame to send back at once (Socket.IO's pong `3` to the ping `2`).
    Reply(&'static str),
    /// Anything else (presence, hello, ...): ignored.
    Ignore,
}

/// Progress of a connection's handshake after the WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// Keep waiting for the next frame.
    Wait,
    /// Send this frame, then keep waiting.
    Send(&'static str),
    /// The connection is ready.
    Ready,
    /// The server refused the connection.
    Fail(String),
}

/// One server's wire protocol, as the load generator needs it.
pub trait Proto: Send + Sync {
    /// Path and query of the WebSocket URL for `spec` (e.g. `/ws?token=…`).
    fn path(&self, spec: &ConnSpec) -> String;
    /// Whether the connection is ready as soon as the upgrade succeeded
    /// (no server frame expected first).
    fn ready_at_open(&self) -> bool;
    /// What to do with a frame received before the connection is ready.
    fn handshake(&self, frame: &str) -> Handshake;
    /// Writes into `out` (cleared first) the frame sending `body`, with
    /// sequence number `seq` (≥ 1), asking for an ack when `want_ack`.
    fn encode_send(&self, out: &mut String, spec: &ConnSpec, seq: u64, body: &str, want_ack: bool);
    /// Classifies one received text frame.
    fn decode(&self, frame: &str) -> Incoming;
}

/// Writes into `out` (cleared first) a [`BODY_LEN`]-byte body carrying the
/// send time and a sequence number: `t=<20 digits>;s=<10 digits>;` then
/// padding. Only ASCII letters, digits, `=` and `;`: no JSON escaping needed.
pub fn write_body(out: &mut String, sent_ns: u64, seq: u64) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "t={sent_ns:020};s={seq:010};");
    while out.len() < BODY_LEN {
        out.push('x');
    }
}

/// Finds a body written by [`write_body`] in `frame` and returns its send
/// time, without parsing the rest of the frame.
pub fn find_sent_ns(frame: &str) -> Option<u64> {
    let at = frame.find("t=")?;
    let digits = frame.get(at + 2..at + 22)?;
    parse_digits(digits)
}

/// Parses a string of ASCII digits (no sign, nothing else).
pub fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip() {
        let mut b = String::new();
        write_body(&mut b, 123_456_789, 42);
        assert_eq!(b.len(), BODY_LEN);
        assert!(b.starts_with("t=00000000000123456789;s=0000000042;x"));
        assert_eq!(find_sent_ns(&b), Some(123_456_789));
        assert_eq!(find_sent_ns(&format!("42[\"msg\",\"{b}\"]")), Some(123_456_789));
        assert_eq!(find_sent_ns("no body"), None);
        assert_eq!(parse_digits("12a"), None);
    }
}
