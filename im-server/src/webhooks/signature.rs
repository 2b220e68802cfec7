//! Webhook signatures: `im-signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`
//! over `"<t>.<body>"` with the shared secret — the receiver recomputes it
//! and refuses stale timestamps, so a captured call cannot be replayed
//! after the window.
//!
//! ```
//! use im_server::webhooks::signature::{sign, verify};
//! let header = sign(b"shh", 1_767_225_600, br#"{"type":"connect"}"#);
//! assert!(verify(b"shh", &header, br#"{"type":"connect"}"#, 1_767_225_660, 300).is_ok());
//! assert!(verify(b"shh", &header, br#"{"type":"tampered"}"#, 1_767_225_660, 300).is_err());
//! assert!(verify(b"shh", &header, br#"{"type":"connect"}"#, 1_767_226_000, 300).is_err(), "stale");
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "im-signature";

/// How far (seconds) a receiver should let a signature's time be from its clock.
pub const DEFAULT_WINDOW_SECS: u64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `t=<seconds>,v1=<64 hex digits>`.
    #[error("malformed signature header")]
    Malformed,
    /// Its time is outside the window (a replay, or a clock far off).
    #[error("signature timestamp outside the replay window")]
    Stale,
    /// The body or the secret differs.
    #[error("signature does not match")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value signing `body` at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Checks `header` against `body`, with the signature's time at most
/// `window_secs` from `now_secs`. The comparison is constant-time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: u64,
    window_secs: u64,
) -> Result<(), SignatureError> {
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = decode_hex(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return Err(SignatureError::Malformed) };
    if t.abs_diff(now_secs) > window_secs {
        return Err(SignatureError::Stale);
    }
    mac(secret, t, body).verify_slice(&v1).map_err(|_| SignatureError::Mismatch)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_secret_body_and_time() {
        let h = sign(b"k", 100, b"body");
        assert_eq!(verify(b"k", &h, b"body", 100, 0), Ok(()));
        assert_eq!(verify(b"other", &h, b"body", 100, 0), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"k", &h, b"body", 401, 300), Err(SignatureError::Stale));
        let forged = h.replace("t=100", "t=101");
        assert_eq!(verify(b"k", &forged, b"body", 101, 300), Err(SignatureError::Mismatch), "time is signed");
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz"] {
            assert_eq!(verify(b"k", bad, b"body", 1, 300), Err(SignatureError::Malformed), "{bad}");
        }
    }
}
