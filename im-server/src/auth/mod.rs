//! Tokens, passwords and sessions.
//!
//! A login creates a [`Session`] in the shared [`SessionStore`](crate::store::SessionStore) and hands the
//! client a signed token naming it. Any node that knows the signing secret
//! checks a token without a round trip ([`TokenSigner::verify`]) and then
//! confirms the session still exists ([`SessionTokens::authenticate`]), so a
//! logout on one node revokes the token on every node.
//!
//! Token format (opaque to clients, may change): `<payload>.<mac>`, both
//! base64url without padding, where the payload is the UTF-8 text
//! `1:<session id>:<user id>:<expires_at ms>` and the MAC is HMAC-SHA256 over
//! the encoded payload part.
//!
//! Tokens issued by the application's backend (JWT, [`jwt`], feature
//! `jwt`) and an embedder's own kinds of token plug in at the
//! [`Authenticator`] seam; `im`'s session tokens are [`SessionTokens`].
//!
//! Tokens are credentials: never log them (nor passwords).

use std::fmt;

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use im_protocol::{CloseCode, ErrorCode, UserId};
use sha2::Sha256;

mod authenticator;
#[cfg(feature = "jwt")]
pub mod jwt;
mod password;
mod sessions;

#[cfg(feature = "jwt")]
pub use authenticator::JwtAuthenticator;
pub use authenticator::{Authenticator, Identity};
pub use password::{PasswordHasher, HASH_WAIT};
pub use sessions::SessionTokens;

/// Whether `s` can name an application's user (1 to 63 visible ASCII
/// characters): what a JWT's `sub` and the server API's `subject` must be.
pub fn valid_subject(s: &str) -> bool {
    (1..=63).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

use crate::model::Session;
use crate::store::StoreError;

/// Longest token [`TokenSigner::verify`] looks at; longer input is rejected
/// as malformed before any decoding or hashing. Real tokens are ~130 bytes.
pub const MAX_TOKEN_LEN: usize = 512;

/// Longest token of any kind looked at (a JWT with an RSA signature is
/// ~700 bytes); longer input is refused before any authenticator sees it.
pub const MAX_PRESENTED_TOKEN_LEN: usize = 8 * 1024;

/// Name of the cookie [`token_from_request`] reads.
pub const TOKEN_COOKIE: &str = "im_token";

/// Name of the query parameter [`token_from_request`] reads.
pub const TOKEN_QUERY_PARAM: &str = "token";

/// Version tag at the start of every token payload.
const PAYLOAD_VERSION: &str = "1";

type HmacSha256 = Hmac<Sha256>;

/// Why a request or connection is not authenticated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented.
    #[error("no token")]
    Missing,
    /// The token is not one this server issues (shape, encoding, length).
    #[error("malformed token")]
    Malformed,
    /// The token's signature does not match (forged, tampered or signed with
    /// another secret).
    #[error("bad token signature")]
    BadSignature,
    /// The token or its session has expired.
    #[error("token expired")]
    Expired,
    /// The token is not valid yet (`nbf` of a JWT).
    #[error("token not valid yet")]
    NotYetValid,
    /// The token was issued by or for someone else (`iss`, `aud` of a JWT).
    #[error("token issued by or for someone else")]
    WrongAudience,
    /// The session was revoked (logout) or is unknown.
    #[error("session revoked")]
    Revoked,
    /// The session store or the hashing task failed; retry later.
    #[error("auth back-end: {0}")]
    Backend(String),
}

impl AuthError {
    /// The error code for an `error` frame or HTTP error body:
    /// [`ErrorCode::Unavailable`] for `Backend`, else [`ErrorCode::Unauthorized`].
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::Backend(_) => ErrorCode::Unavailable,
            _ => ErrorCode::Unauthorized,
        }
    }

    /// The close code for a WebSocket that fails authentication:
    /// [`CloseCode::SESSION_REVOKED`] for `Revoked`, else [`CloseCode::UNAUTHORIZED`].
    pub fn close_code(&self) -> CloseCode {
        match self {
            AuthError::Revoked => CloseCode::SESSION_REVOKED,
            _ => CloseCode::UNAUTHORIZED,
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Backend(msg) => AuthError::Backend(msg),
            other => AuthError::Backend(other.to_string()),
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The session id.
    pub session: String,
    /// The signed-in user.
    pub user: UserId,
    /// Expiry, ms since the Unix epoch.
    pub expires_at: u64,
}

/// Issues and verifies session tokens with HMAC-SHA256.
///
/// Every node that accepts tokens must use the same secret; use at least 32
/// random bytes.
#[derive(Clone)]
pub struct TokenSigner {
    /// Keyed once; cloned per token (cheaper than re-keying).
    mac: HmacSha256,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigner { .. }")
    }
}

impl TokenSigner {
    /// A signer keyed with `secret` (any length; HMAC hashes long keys).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of every length, so this cannot fail.
        let mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        TokenSigner { mac }
    }

    /// Makes a token naming `session`.
    pub fn issue(&self, session: &Session) -> String {
        let payload = format!("{PAYLOAD_VERSION}:{}:{}:{}", session.id, session.user, session.expires_at);
        let mut token = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let sig = mac.finalize().into_bytes();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut token);
        token
    }

    /// Checks a token's shape, signature (in constant time) and expiry
    /// against `now_ms`. Does not consult the session store.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<TokenClaims, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let (payload_b64, sig_b64) = token.split_once('.').ok_or(AuthError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(payload_b64.as_bytes());
        mac.verify_slice(&sig).map_err(|_| AuthError::BadSignature)?;

        // Signed by us, so well-formed unless the format changed.
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| AuthError::Malformed)?;
        let payload = std::str::from_utf8(&payload).map_err(|_| AuthError::Malformed)?;
        let claims = parse_payload(payload).ok_or(AuthError::Malformed)?;
        if now_ms >= claims.expires_at {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

fn parse_payload(payload: &str) -> Option<TokenClaims> {
    let mut parts = payload.split(':');
    let (version, session, user, expires_at) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != PAYLOAD_VERSION || parts.next().is_some() || session.is_empty() {
        return None;
    }
    Some(TokenClaims {
        session: session.to_owned(),
        user: UserId(user.parse().ok()?),
        expires_at: expires_at.parse().ok()?,
    })
}

/// The token a request carries: `Authorization: Bearer <t>`, else the
/// `im_token` cookie, else the `token` query parameter (`query` is the raw
/// query string without `?`). Browsers cannot set headers on a WebSocket
/// handshake, hence the cookie and query fallbacks.
pub fn token_from_request(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    bearer(headers).or_else(|| cookie(headers)).or_else(|| query.and_then(query_param)).map(str::to_owned)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(header::AUTHORIZATION).iter().find_map(|v| {
        let v = v.to_str().ok()?.trim();
        let (scheme, token) = v.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    })
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    // HTTP/2 may split cookies over several headers; each holds `a=b; c=d`.
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.split(';').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            if name.trim() != TOKEN_COOKIE {
                return None;
            }
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            (!value.is_empty()).then_some(value)
        })
    })
}

fn query_param(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == TOKEN_QUERY_PARAM && !value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::http::HeaderValue;

    use super::*;
    use crate::store::MemoryStore;

    const NOW: u64 = 1_700_000_000_000;

    fn session(expires_at: u64) -> Session {
        Session {
            id: "0123456789abcdef0123456789abcdef".into(),
            user: UserId(42),
            created_at: NOW,
            expires_at,
        }
    }

    #[test]
    fn issue_verify_round_trip() {
        let signer = TokenSigner::new(b"a secret of some thirty-two bytes");
        let token = signer.issue(&session(NOW + 1000));
        assert!(token.len() < MAX_TOKEN_LEN);
        let claims = signer.verify(&token, NOW).unwrap();
        assert_eq!(
            claims,
            TokenClaims {
                session: "0123456789abcdef0123456789abcdef".into(),
                user: UserId(42),
                expires_at: NOW + 1000
            }
        );
    }

    /// Replaces the character at `i` with another base64url character.
    fn flip(token: &str, i: usize) -> String {
        let mut b = token.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn tampering_is_a_bad_signature() {
        let signer = TokenSigner::new(b"secret");
        let token = signer.issue(&session(NOW + 1000));
        let dot = token.find('.').unwrap();
        assert!(matches!(signer.verify(&flip(&token, 3), NOW), Err(AuthError::BadSignature)));
        assert!(matches!(signer.verify(&flip(&token, dot + 1), NOW), Err(AuthError::BadSignature)));
        // A forged payload re-encoded by someone without the secret.
        let forged = URL_SAFE_NO_PAD.encode(format!("1:{}:1:{}", "0".repeat(32), u64::MAX));
        let forged = format!("{forged}{}", &token[dot..]);
        assert!(matches!(signer.verify(&forged, NOW), Err(AuthError::BadSignature)));
        // Another secret.
        assert!(matches!(TokenSigner::new(b"other").verify(&token, NOW), Err(AuthError::BadSignature)));
    }

    #[test]
    fn expired_token() {
        let signer = TokenSigner::new(b"secret");
        let token = signer.issue(&session(NOW));
        assert!(matches!(signer.verify(&token, NOW), Err(AuthError::Expired)));
        assert!(signer.verify(&token, NOW - 1).is_ok());
    }

    #[test]
    fn garbage_and_overlong_are_malformed() {
        let signer = TokenSigner::new(b"secret");
        for bad in ["", "abc", "a.b.c", "!!!.???", "....", "a.b"] {
            assert!(matches!(signer.verify(bad, NOW), Err(AuthError::Malformed)), "{bad:?}");
        }
        let token = signer.issue(&session(NOW + 1000));
        let long = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
        assert!(matches!(signer.verify(&long, NOW), Err(AuthError::Malformed)));
        // A validly signed payload this server does not understand.
        let payload = URL_SAFE_NO_PAD.encode("2:x:1:1");
        let mut mac = signer.mac.clone();
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert!(matches!(signer.verify(&format!("{payload}.{sig}"), NOW), Err(AuthError::Malformed)));
    }

    #[test]
    fn error_and_close_codes() {
        assert_eq!(AuthError::Expired.error_code(), ErrorCode::Unauthorized);
        assert_eq!(AuthError::Backend("x".into()).error_code(), ErrorCode::Unavailable);
        assert_eq!(AuthError::Revoked.close_code(), CloseCode::SESSION_REVOKED);
        assert_eq!(AuthError::BadSignature.close_code(), CloseCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn login_authenticate_logout() {
        let auth = SessionTokens::new(TokenSigner::new(b"secret"), Arc::new(MemoryStore::new()));
        let (session, token) = auth.login_session(UserId(7), Duration::from_secs(60)).await.unwrap();
        assert_eq!(session.id.len(), 32);
        assert!(session.id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(auth.authenticate(&token).await.unwrap(), session);

        let (other, _) = auth.login_session(UserId(7), Duration::from_secs(60)).await.unwrap();
        assert_ne!(other.id, session.id);

        assert!(auth.logout(&session.id).await.unwrap());
        assert!(matches!(auth.authenticate(&token).await, Err(AuthError::Revoked)));
        assert!(!auth.logout(&session.id).await.unwrap());
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn token_from_each_place_in_order() {
        let none = HeaderMap::new();
        assert_eq!(token_from_request(&none, None), None);
        assert_eq!(token_from_request(&none, Some("a=1&b=2")), None);

        let auth = headers(&[(header::AUTHORIZATION, "Bearer  tok-h ")]);
        assert_eq!(token_from_request(&auth, None).as_deref(), Some("tok-h"));
        let lower = headers(&[(header::AUTHORIZATION, "bearer tok-h")]);
        assert_eq!(token_from_request(&lower, None).as_deref(), Some("tok-h"));
        let basic = headers(&[(header::AUTHORIZATION, "Basic dXNlcjpwdw==")]);
        assert_eq!(token_from_request(&basic, None), None);

        let cookies = headers(&[
            (header::COOKIE, "theme=dark; x_im_token=no"),
            (header::COOKIE, "lang=en;im_token=tok-c; other=1"),
        ]);
        assert_eq!(token_from_request(&cookies, None).as_deref(), Some("tok-c"));
        let quoted = headers(&[(header::COOKIE, "im_token=\"tok-q\"")]);
        assert_eq!(token_from_request(&quoted, None).as_deref(), Some("tok-q"));

        assert_eq!(token_from_request(&none, Some("v=1&token=tok-p&x=2")).as_deref(), Some("tok-p"));
        assert_eq!(token_from_request(&none, Some("token=tok-p")).as_deref(), Some("tok-p"));
        assert_eq!(token_from_request(&none, Some("xtoken=no&token=")), None);

        // Header beats cookie beats query.
        let both = headers(&[(header::AUTHORIZATION, "Bearer tok-h"), (header::COOKIE, "im_token=tok-c")]);
        assert_eq!(token_from_request(&both, Some("token=tok-p")).as_deref(), Some("tok-h"));
        assert_eq!(token_from_request(&cookies, Some("token=tok-p")).as_deref(), Some("tok-c"));
        assert_eq!(token_from_request(&basic, Some("token=tok-p")).as_deref(), Some("tok-p"));
    }
}
