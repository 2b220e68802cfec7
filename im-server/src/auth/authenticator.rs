//! The authentication seam: an [`Authenticator`] turns a token into an
//! [`Identity`]. The server asks each configured authenticator in turn
//! (an embedder's own first, then JWT, then its own session tokens); the
//! first that knows the token's kind decides.

use async_trait::async_trait;
use im_protocol::UserId;

use super::AuthError;
use crate::model::Session;

/// Who a token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A user of `im`'s own accounts, signed in with this session.
    Session(Session),
    /// A user of the application, named by the application. `im` maps the
    /// subject to a user of its own, created on first sight.
    External {
        /// The application's user id (1 to 63 visible ASCII characters).
        subject: String,
        /// A display name, if the token carries one.
        name: Option<String>,
        /// What names this sign-in for [`Authenticator::revoke`] and
        /// [`Authenticator::session_alive`].
        session: String,
        /// When the token expires, ms since the Unix epoch.
        expires_at: u64,
        /// When the token was issued, ms since the Unix epoch, if it says
        /// (JWT `iat`); revoking all of a user's tokens compares with it.
        issued_at: Option<u64>,
    },
}

/// Checks tokens of one kind.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// What `token` proves. `Ok(None)`: not a token of this kind (the next
    /// authenticator is asked); `Err`: of this kind but refused (expired,
    /// forged, revoked), which is final.
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>, AuthError>;

    /// Whether the session `id` (of an identity this authenticator made)
    /// still stands; `Ok(None)`: not one of its sessions.
    async fn session_alive(&self, id: &str) -> Result<Option<bool>, AuthError>;

    /// Revokes the session `id` of `user` on every node, at least until
    /// `expires_at`; whether it stood. `Ok(None)`: not one of its sessions.
    async fn revoke(&self, id: &str, user: UserId, expires_at: u64) -> Result<Option<bool>, AuthError>;
}

#[cfg(feature = "jwt")]
pub use jwt_authenticator::JwtAuthenticator;

#[cfg(feature = "jwt")]
mod jwt_authenticator {
    use std::sync::Arc;

    use async_trait::async_trait;
    use im_protocol::UserId;

    use super::{Authenticator, Identity};
    use crate::auth::jwt::{self, JwtConfig};
    use crate::auth::AuthError;
    use crate::model::Session;
    use crate::store::SessionStore;

    /// Prefix of the session ids of JWT sign-ins.
    const SESSION_PREFIX: &str = "jwt:";
    /// Prefix of a revoked JWT's entry in the session store (the deny-list,
    /// shared by every node that shares the store; it expires with the token).
    const REVOKED_PREFIX: &str = "jwt-revoked:";

    /// Accepts JWTs from the application's backend ([`jwt`]); revocation
    /// (logout, or the server API) keeps the token's id in the shared
    /// session store until the token would have expired anyway.
    pub struct JwtAuthenticator {
        cfg: JwtConfig,
        sessions: Arc<dyn SessionStore>,
    }

    impl std::fmt::Debug for JwtAuthenticator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("JwtAuthenticator").field("cfg", &self.cfg).finish_non_exhaustive()
        }
    }

    impl JwtAuthenticator {
        /// Checks tokens against `cfg`, with the deny-list in `sessions`.
        pub fn new(cfg: JwtConfig, sessions: Arc<dyn SessionStore>) -> Self {
            JwtAuthenticator { cfg, sessions }
        }

        async fn revoked(&self, token_id: &str) -> Result<bool, AuthError> {
            Ok(self.sessions.get(&format!("{REVOKED_PREFIX}{token_id}")).await?.is_some())
        }
    }

    #[async_trait]
    impl Authenticator for JwtAuthenticator {
        async fn authenticate(&self, token: &str) -> Result<Option<Identity>, AuthError> {
            if !jwt::looks_like_jwt(token) {
                return Ok(None);
            }
            let claims = jwt::verify(&self.cfg, token, crate::time::now_ms())?;
            if self.revoked(&claims.token_id).await? {
                return Err(AuthError::Revoked);
            }
            Ok(Some(Identity::External {
                subject: claims.subject,
                name: claims.name,
                session: format!("{SESSION_PREFIX}{}", claims.token_id),
                expires_at: claims.expires_at,
                issued_at: claims.issued_at,
            }))
        }

        async fn session_alive(&self, id: &str) -> Result<Option<bool>, AuthError> {
            let Some(token_id) = id.strip_prefix(SESSION_PREFIX) else { return Ok(None) };
            Ok(Some(!self.revoked(token_id).await?))
        }

        async fn revoke(&self, id: &str, user: UserId, expires_at: u64) -> Result<Option<bool>, AuthError> {
            let Some(token_id) = id.strip_prefix(SESSION_PREFIX) else { return Ok(None) };
            if self.revoked(token_id).await? {
                return Ok(Some(false));
            }
            let now = crate::time::now_ms();
            // Kept as long as the token is accepted (its expiry plus the
            // leeway), and a minute more: clocks of other nodes may lag.
            let keep_ms = self.cfg.leeway_secs.saturating_mul(1000).saturating_add(60_000);
            let entry = Session {
                id: format!("{REVOKED_PREFIX}{token_id}"),
                user,
                created_at: now,
                expires_at: expires_at.max(now).saturating_add(keep_ms),
            };
            self.sessions.create(&entry).await?;
            Ok(Some(true))
        }
    }
}
