//! Tokens issued by the application's backend: JSON Web Tokens (RFC 7519)
//! signed with HS256 (a shared secret), RS256 or EdDSA (Ed25519; a public
//! key in PEM or a JWKS file). The app's user id is `sub`; `exp` is
//! required; `nbf`, `iss` and `aud` are checked when present or
//! configured; `name` is an optional display name; `jti` names the token
//! for revocation (without one, the token's hash does).
//!
//! Only what the configured keys allow is accepted: an HS256 secret never
//! verifies an RS256 token and the other way round (no algorithm
//! confusion), and `alg: none` is never accepted.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{valid_subject, AuthError};

/// Longest JWT looked at, bytes (larger input is refused before decoding).
pub const MAX_JWT_LEN: usize = super::MAX_PRESENTED_TOKEN_LEN;

/// A key a JWT may be signed with.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with this shared secret (at least 32 bytes).
    Hs256(Vec<u8>),
    /// RS256 with this RSA public key (modulus and exponent, big-endian).
    Rs256 {
        /// The `kid` the key answers to (`None`: any).
        kid: Option<String>,
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// EdDSA with this Ed25519 public key.
    Ed25519 {
        /// The `kid` the key answers to (`None`: any).
        kid: Option<String>,
        /// The 32-byte public key.
        key: Vec<u8>,
    },
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Hs256(_) => f.write_str("Hs256(…)"),
            JwtKey::Rs256 { kid, n, .. } => write!(f, "Rs256 {{ kid: {kid:?}, bits: {} }}", n.len() * 8),
            JwtKey::Ed25519 { kid, .. } => write!(f, "Ed25519 {{ kid: {kid:?} }}"),
        }
    }
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JwtKeyError(pub String);

impl JwtKey {
    /// An HS256 secret; refused when shorter than 32 bytes.
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Result<Self, JwtKeyError> {
        let secret = secret.into();
        if secret.len() < 32 {
            return Err(JwtKeyError("an HS256 secret needs at least 32 bytes".into()));
        }
        Ok(JwtKey::Hs256(secret))
    }

    /// A public key in PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo):
    /// RSA (for RS256) or Ed25519 (for EdDSA).
    pub fn from_public_pem(pem: &str) -> Result<Self, JwtKeyError> {
        let der = pem_body(pem, "PUBLIC KEY")?;
        let (algorithm, key) = spki(&der).ok_or_else(|| JwtKeyError("not a SubjectPublicKeyInfo".into()))?;
        const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
        if algorithm == RSA {
            let (n, e) = rsa_public_key(key).ok_or_else(|| JwtKeyError("bad RSA public key".into()))?;
            Ok(JwtKey::Rs256 { kid: None, n, e })
        } else if algorithm == ED25519 && key.len() == 32 {
            Ok(JwtKey::Ed25519 { kid: None, key: key.to_vec() })
        } else {
            Err(JwtKeyError("only RSA and Ed25519 public keys are supported".into()))
        }
    }

    /// The RSA and Ed25519 keys of a JWKS document (`{"keys": [...]}`);
    /// keys of other types, or for other uses, are skipped.
    pub fn from_jwks(json: &str) -> Result<Vec<Self>, JwtKeyError> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<Jwk>,
        }
        #[derive(Deserialize)]
        struct Jwk {
            kty: String,
            kid: Option<String>,
            #[serde(rename = "use")]
            use_: Option<String>,
            n: Option<String>,
            e: Option<String>,
            crv: Option<String>,
            x: Option<String>,
        }
        let jwks: Jwks =
            serde_json::from_str(json).map_err(|e| JwtKeyError(format!("not a JWKS document: {e}")))?;
        let b64 = |s: &Option<String>, what: &str| {
            let s = s.as_deref().ok_or_else(|| JwtKeyError(format!("JWK without {what}")))?;
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| JwtKeyError(format!("JWK {what} not base64url")))
        };
        let mut keys = Vec::new();
        for k in jwks.keys {
            if k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            match (k.kty.as_str(), k.crv.as_deref()) {
                ("RSA", _) => keys.push(JwtKey::Rs256 { kid: k.kid, n: b64(&k.n, "n")?, e: b64(&k.e, "e")? }),
                ("OKP", Some("Ed25519")) => keys.push(JwtKey::Ed25519 { kid: k.kid, key: b64(&k.x, "x")? }),
                _ => {}
            }
        }
        if keys.is_empty() {
            return Err(JwtKeyError("the JWKS document holds no RSA or Ed25519 signing key".into()));
        }
        Ok(keys)
    }

    /// Reads keys from a file: a JWKS document (`.json`) or a PEM public key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Vec<Self>, JwtKeyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| JwtKeyError(format!("cannot read {}: {e}", path.display())))?;
        if text.trim_start().starts_with('{') {
            Self::from_jwks(&text)
        } else {
            Ok(vec![Self::from_public_pem(&text)?])
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            JwtKey::Hs256(_) => "HS256",
            JwtKey::Rs256 { .. } => "RS256",
            JwtKey::Ed25519 { .. } => "EdDSA",
        }
    }

    fn kid(&self) -> Option<&str> {
        match self {
            JwtKey::Hs256(_) => None,
            JwtKey::Rs256 { kid, .. } | JwtKey::Ed25519 { kid, .. } => kid.as_deref(),
        }
    }

    fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            JwtKey::Hs256(secret) => {
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
                mac.update(message);
                mac.verify_slice(sig).is_ok()
            }
            JwtKey::Rs256 { n, e, .. } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            JwtKey::Ed25519 { key, .. } => {
                UnparsedPublicKey::new(&signature::ED25519, key).verify(message, sig).is_ok()
            }
        }
    }
}

/// What a JWT must say to be accepted.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Keys it may be signed with.
    pub keys: Vec<JwtKey>,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required `aud` (the token's `aud`, a string or a list, must hold it), if any.
    pub audience: Option<String>,
    /// Clock skew allowed for `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
}

impl JwtConfig {
    /// Accepts tokens signed by `keys`, with 30 s of leeway and no
    /// issuer or audience requirement.
    pub fn new(keys: Vec<JwtKey>) -> Self {
        JwtConfig { keys, issuer: None, audience: None, leeway_secs: 30 }
    }
}

/// What a verified JWT says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    /// The app's user id.
    pub subject: String,
    /// A display name, if the token carries one.
    pub name: Option<String>,
    /// Expiry, ms since the Unix epoch.
    pub expires_at: u64,
    /// Issue time (`iat`), ms since the Unix epoch, if the token says.
    pub issued_at: Option<u64>,
    /// What names this token for revocation: `jti`, else a hash of the token.
    pub token_id: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    iss: Option<String>,
    aud: Option<Audience>,
    jti: Option<String>,
    name: Option<String>,
}

/// Whether `token` is shaped like a JWT (three base64url parts, the first
/// a JSON object): tells it from the server's own session tokens.
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() <= MAX_JWT_LEN
        && token.bytes().filter(|&b| b == b'.').count() == 2
        && token.starts_with("eyJ")
}

/// Checks a JWT against `cfg` at `now_ms`.
pub fn verify(cfg: &JwtConfig, token: &str, now_ms: u64) -> Result<JwtClaims, AuthError> {
    if !looks_like_jwt(token) {
        return Err(AuthError::Malformed);
    }
    let mut parts = token.splitn(3, '.');
    let (h64, c64, s64) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let header: Header = URL_SAFE_NO_PAD
        .decode(h64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Malformed)?;
    let sig = URL_SAFE_NO_PAD.decode(s64).map_err(|_| AuthError::Malformed)?;
    let signed = &token[..h64.len() + 1 + c64.len()];
    let verified = cfg
        .keys
        .iter()
        .filter(|k| k.alg() == header.alg)
        .filter(|k| match (k.kid(), header.kid.as_deref()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        })
        .any(|k| k.verifies(signed.as_bytes(), &sig));
    if !verified {
        return Err(AuthError::BadSignature);
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(c64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Malformed)?;
    let now = now_ms as f64 / 1000.0;
    let leeway = cfg.leeway_secs as f64;
    let exp = claims.exp.ok_or(AuthError::Malformed)?;
    if now >= exp + leeway {
        return Err(AuthError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(AuthError::NotYetValid);
    }
    if let Some(iss) = &cfg.issuer {
        if claims.iss.as_deref() != Some(iss.as_str()) {
            return Err(AuthError::WrongAudience);
        }
    }
    if let Some(aud) = &cfg.audience {
        let ok = match &claims.aud {
            Some(Audience::One(a)) => a == aud,
            Some(Audience::Many(list)) => list.iter().any(|a| a == aud),
            None => false,
        };
        if !ok {
            return Err(AuthError::WrongAudience);
        }
    }
    let subject = claims.sub.filter(|s| valid_subject(s)).ok_or(AuthError::Malformed)?;
    let token_id = match claims.jti.filter(|j| !j.is_empty() && j.len() <= 128) {
        Some(jti) => format!("jti:{jti}"),
        None => {
            let digest = Sha256::digest(token.as_bytes());
            format!("sha:{}", &STANDARD.encode(digest)[..22])
        }
    };
    Ok(JwtClaims {
        subject,
        name: claims.name.filter(|n| !n.is_empty() && n.len() <= 128 && !n.chars().any(char::is_control)),
        expires_at: (exp * 1000.0).max(0.0).min(u64::MAX as f64) as u64,
        issued_at: claims
            .iat
            .filter(|t| t.is_finite())
            .map(|t| (t * 1000.0).max(0.0).min(u64::MAX as f64) as u64),
        token_id,
    })
}

/// The DER inside a PEM block labelled `label`.
fn pem_body(pem: &str, label: &str) -> Result<Vec<u8>, JwtKeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).ok_or_else(|| JwtKeyError(format!("no {begin} block")))? + begin.len();
    let stop = pem[start..].find(&end).ok_or_else(|| JwtKeyError(format!("no {end}")))? + start;
    let b64: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).map_err(|_| JwtKeyError("PEM body is not base64".into()))
}

/// One DER element at the start of `der`: (tag, content, rest).
fn der(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize), &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A SubjectPublicKeyInfo's algorithm OID and key bytes.
fn spki(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, spki, _) = der(bytes)? else { return None };
    let (0x30, alg, rest) = der(spki)? else { return None };
    let (0x06, oid, _) = der(alg)? else { return None };
    let (0x03, bits, _) = der(rest)? else { return None };
    let (&unused, key) = bits.split_first()?;
    (unused == 0).then_some((oid, key))
}

/// An RSAPublicKey's modulus and exponent, without leading zeros.
fn rsa_public_key(bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (0x30, seq, _) = der(bytes)? else { return None };
    let (0x02, n, rest) = der(seq)? else { return None };
    let (0x02, e, _) = der(rest)? else { return None };
    let strip = |v: &[u8]| v.iter().skip_while(|&&b| b == 0).copied().collect::<Vec<u8>>();
    Some((strip(n), strip(e)))
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn encode(header: &str, claims: &serde_json::Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let signed =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn hs256(secret: &[u8], claims: &serde_json::Value) -> String {
        encode(r#"{"alg":"HS256","typ":"JWT"}"#, claims, |m| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(m);
            mac.finalize().into_bytes().to_vec()
        })
    }

    #[test]
    fn hs256_tokens_are_checked_claim_by_claim() {
        let secret = b"an application secret of 32 bytes!";
        let mut cfg = JwtConfig::new(vec![JwtKey::hs256(secret.to_vec()).unwrap()]);
        cfg.issuer = Some("https://app.example".into());
        cfg.audience = Some("im".into());
        let exp = NOW / 1000 + 600;
        let good = serde_json::json!({"sub": "user-7", "exp": exp, "iat": exp - 600, "iss": "https://app.example", "aud": ["x", "im"], "jti": "t1", "name": "Seven"});
        let claims = verify(&cfg, &hs256(secret, &good), NOW).unwrap();
        assert_eq!(
            claims,
            JwtClaims {
                subject: "user-7".into(),
                name: Some("Seven".into()),
                expires_at: exp * 1000,
                issued_at: Some((exp - 600) * 1000),
                token_id: "jti:t1".into()
            }
        );

        let with = |patch: serde_json::Value| {
            let mut c = good.clone();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            verify(&cfg, &hs256(secret, &c), NOW)
        };
        assert!(matches!(with(serde_json::json!({"exp": NOW / 1000 - 31})), Err(AuthError::Expired)));
        assert!(with(serde_json::json!({"exp": NOW / 1000 - 10})).is_ok(), "within the leeway");
        assert!(matches!(with(serde_json::json!({"exp": null})), Err(AuthError::Malformed)));
        assert!(matches!(with(serde_json::json!({"nbf": NOW / 1000 + 120})), Err(AuthError::NotYetValid)));
        assert!(matches!(
            with(serde_json::json!({"iss": "https://evil.example"})),
            Err(AuthError::WrongAudience)
        ));
        assert!(matches!(with(serde_json::json!({"aud": "other"})), Err(AuthError::WrongAudience)));
        assert!(matches!(with(serde_json::json!({"sub": ""})), Err(AuthError::Malformed)));
        assert!(matches!(with(serde_json::json!({"sub": "has space"})), Err(AuthError::Malformed)));
        let no_jti = with(serde_json::json!({"jti": null})).unwrap();
        assert!(no_jti.token_id.starts_with("sha:"), "{}", no_jti.token_id);

        // Another secret, a tampered payload, alg none: refused.
        assert!(matches!(
            verify(&cfg, &hs256(b"another secret of thirty-two bytes", &good), NOW),
            Err(AuthError::BadSignature)
        ));
        let token = hs256(secret, &good);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(good.to_string().replace("user-7", "admin"));
        parts[1] = &forged;
        assert!(matches!(verify(&cfg, &parts.join("."), NOW), Err(AuthError::BadSignature)));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(good.to_string())
        );
        assert!(verify(&cfg, &none, NOW).is_err());
        assert!(JwtKey::hs256(b"short".to_vec()).is_err());
    }

    #[test]
    fn eddsa_tokens_verify_with_a_pem_or_jwks_key_and_never_as_hs256() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        // SubjectPublicKeyInfo of an Ed25519 key: a fixed 12-byte prefix.
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend_from_slice(&public);
        let pem =
            format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(&spki));
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(&public)
        );
        let claims = serde_json::json!({"sub": "u1", "exp": NOW / 1000 + 60});
        let token = encode(r#"{"alg":"EdDSA","kid":"k1"}"#, &claims, |m| pair.sign(m).as_ref().to_vec());
        for keys in [vec![JwtKey::from_public_pem(&pem).unwrap()], JwtKey::from_jwks(&jwks).unwrap()] {
            assert_eq!(verify(&JwtConfig::new(keys), &token, NOW).unwrap().subject, "u1");
        }
        // The public key used as an HS256 secret (algorithm confusion) does not verify.
        let confused = encode(r#"{"alg":"HS256"}"#, &claims, |m| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&spki).unwrap();
            mac.update(m);
            mac.finalize().into_bytes().to_vec()
        });
        let cfg = JwtConfig::new(vec![JwtKey::from_public_pem(&pem).unwrap()]);
        assert!(matches!(verify(&cfg, &confused, NOW), Err(AuthError::BadSignature)));
        // A key with another kid is not tried.
        let other = JwtKey::from_jwks(&jwks.replace("k1", "k2")).unwrap();
        assert!(matches!(verify(&JwtConfig::new(other), &token, NOW), Err(AuthError::BadSignature)));
    }
}
