//! Protocol version and the limits both sides enforce.
//!
//! The server announces its effective limits in the `hello` frame
//! ([`WireLimits`]); a client should check a body against
//! `max_body_bytes` before sending it.

use serde::{Deserialize, Serialize};

/// The newest protocol version this crate speaks. A client asks for a
/// version with the `v` query parameter of the WebSocket URL (absent: 1);
/// `hello` announces the one the connection speaks. Version 2 adds
/// `typing`, read state (`read`, `read_up_to`), the inbox and receipts
/// (`received`, `receipt`, `receipts`).
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest protocol version a server of this crate still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// A `typing: true` not refreshed within this time counts as stopped (ms).
pub const TYPING_EXPIRY_MS: u64 = 6_000;

/// How often a client refreshes `typing: true` while the user types (ms).
pub const TYPING_REFRESH_MS: u64 = 3_000;

/// Longest accepted client message id, in bytes.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 64;

/// Default largest WebSocket frame (message) the server reads, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Default largest message body, in bytes (UTF-8).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;

/// Default and largest number of messages in one sync page.
pub const DEFAULT_SYNC_PAGE_MAX: u32 = 500;

/// Default and largest number of messages in one history page.
pub const DEFAULT_HISTORY_PAGE_MAX: u32 = 200;

/// Most conversations one `sync` request may name.
pub const DEFAULT_MAX_SYNC_CURSORS: usize = 10_000;

/// Default and largest number of conversations in one inbox page.
pub const INBOX_PAGE_MAX: u32 = 200;

/// Most devices whose own read reports are kept per user and conversation;
/// a further device's report replaces the one that read least.
pub const MAX_DEVICE_READS: usize = 16;

/// Shortest interval between two `receipt` pushes for one member and
/// conversation (ms); also how often a client reports `received` at most.
pub const RECEIPT_INTERVAL_MS: u64 = 1_000;

/// Most users one message may mention.
pub const MAX_MENTIONS: usize = 50;

/// Most users one presence query may name.
pub const MAX_PRESENCE_QUERY: usize = 500;

/// Default number of requests a connection may have in flight.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;

/// Limits a server announces to its clients in `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WireLimits {
    /// Largest frame the server reads; a larger one closes the connection (1009).
    pub max_frame_bytes: usize,
    /// Largest message body; a larger one is refused with `body_too_large`.
    pub max_body_bytes: usize,
    /// Largest sync page.
    pub sync_page_max: u32,
    /// Largest history page.
    pub history_page_max: u32,
    /// Frames per second a connection may send on average.
    pub rate_per_sec: u32,
    /// Frames a connection may send in a burst above the average.
    pub rate_burst: u32,
    /// Requests one connection may have started but not yet answered; the
    /// server reads further requests only as replies go out (back-pressure
    /// on the socket). Absent from servers before it was announced: treat
    /// as 1 (wait for each reply).
    #[serde(default = "one")]
    pub max_in_flight: u32,
    /// How long after sending a message its sender may edit it, in ms.
    /// Absent from servers without events: 0 (no edits).
    #[serde(default)]
    pub edit_window_ms: u64,
    /// How long after sending a message its sender may recall it, in ms
    /// (group owners and admins may recall any message of their group at
    /// any time). Absent from servers without events: 0.
    #[serde(default)]
    pub recall_window_ms: u64,
}

/// Default edit window: 24 hours.
pub const DEFAULT_EDIT_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// Default recall window: 24 hours.
pub const DEFAULT_RECALL_WINDOW_MS: u64 = 24 * 3600 * 1000;

fn one() -> u32 {
    1
}

impl Default for WireLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            sync_page_max: DEFAULT_SYNC_PAGE_MAX,
            history_page_max: DEFAULT_HISTORY_PAGE_MAX,
            rate_per_sec: 50,
            rate_burst: 200,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            edit_window_ms: DEFAULT_EDIT_WINDOW_MS,
            recall_window_ms: DEFAULT_RECALL_WINDOW_MS,
        }
    }
}
