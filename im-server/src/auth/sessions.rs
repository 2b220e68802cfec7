//! [`SessionTokens`]: the server's own tokens, naming a session in the
//! shared [`SessionStore`] (`im`'s register and login).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use im_protocol::UserId;

use super::{AuthError, Authenticator, Identity, TokenSigner};
use crate::model::Session;
use crate::store::SessionStore;

/// Logs users in and checks their tokens against the shared session store.
#[derive(Clone)]
pub struct SessionTokens {
    signer: TokenSigner,
    sessions: Arc<dyn SessionStore>,
}

impl fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTokens").finish_non_exhaustive()
    }
}

impl SessionTokens {
    /// An authenticator signing with `signer` and keeping sessions in `sessions`.
    pub fn new(signer: TokenSigner, sessions: Arc<dyn SessionStore>) -> Self {
        SessionTokens { signer, sessions }
    }

    /// Creates a session for `user` valid for `ttl` and returns it with its
    /// token. Call only after the user proved who they are.
    pub async fn login_session(&self, user: UserId, ttl: Duration) -> Result<(Session, String), AuthError> {
        let now = crate::time::now_ms();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let session = Session {
            // 128 bits from the thread-local CSPRNG: unguessable.
            id: format!("{:032x}", rand::random::<u128>()),
            user,
            created_at: now,
            expires_at: now.saturating_add(ttl_ms),
        };
        self.sessions.create(&session).await?;
        let token = self.signer.issue(&session);
        Ok((session, token))
    }

    /// The live session `token` names: the token must verify, and its
    /// session must still exist (else [`AuthError::Revoked`]), belong to the
    /// same user and not have expired.
    pub async fn authenticate(&self, token: &str) -> Result<Session, AuthError> {
        let now = crate::time::now_ms();
        let claims = self.signer.verify(token, now)?;
        let session = self.sessions.get(&claims.session).await?.ok_or(AuthError::Revoked)?;
        if session.user != claims.user {
            return Err(AuthError::Revoked);
        }
        if now >= session.expires_at {
            return Err(AuthError::Expired);
        }
        Ok(session)
    }

    /// Whether a session still exists (not revoked).
    pub async fn session_exists(&self, session_id: &str) -> Result<bool, AuthError> {
        Ok(self.sessions.get(session_id).await?.is_some())
    }

    /// Revokes a session everywhere; returns whether it existed.
    pub async fn logout(&self, session_id: &str) -> Result<bool, AuthError> {
        Ok(self.sessions.revoke(session_id).await?)
    }
    /// Refuses, on every node sharing the session store, every token of
    /// `user` issued before `now` (see [`Self::revoked_before`]). Kept as a
    /// record of the session store for 400 days (`REVOKE_ALL_TTL`).
    pub async fn revoke_all(&self, user: UserId, now: u64) -> Result<(), AuthError> {
        let mark = Session {
            id: format!("{REVOKED_BEFORE}{user}"),
            user,
            created_at: now,
            expires_at: now.saturating_add(REVOKE_ALL_TTL.as_millis() as u64),
        };
        Ok(self.sessions.create(&mark).await?)
    }

    /// Records a lock-out named `key` until `until` (ms), for every node.
    pub async fn lock_out(&self, key: &str, until: u64) -> Result<(), AuthError> {
        let mark = Session {
            id: key.to_owned(),
            user: UserId(0),
            created_at: crate::time::now_ms(),
            expires_at: until,
        };
        Ok(self.sessions.create(&mark).await?)
    }

    /// Until when (ms) `key` is locked out, if it is now.
    pub async fn locked_out(&self, key: &str, now: u64) -> Result<Option<u64>, AuthError> {
        Ok(self.sessions.get(key).await?.map(|m| m.expires_at).filter(|&until| until > now))
    }

    /// Counts one more `key` on every node sharing the session store, in a
    /// window ending at `until` (ms); the count, or `None` if the store
    /// keeps no shared counts ([`SessionStore::bump`]).
    pub async fn count_shared(&self, key: &str, until: u64) -> Result<Option<u64>, AuthError> {
        Ok(self.sessions.bump(key, until, crate::time::now_ms()).await?)
    }

    /// Ends the shared count `key`.
    pub async fn reset_shared(&self, key: &str) -> Result<(), AuthError> {
        Ok(self.sessions.reset(key).await?)
    }

    /// Before when (ms) `user`'s tokens were all revoked; 0 if never.
    pub async fn revoked_before(&self, user: UserId) -> Result<u64, AuthError> {
        let mark = self.sessions.get(&format!("{REVOKED_BEFORE}{user}")).await?;
        Ok(mark.filter(|m| m.user == user).map_or(0, |m| m.created_at))
    }
}

/// The session-store record of [`SessionTokens::revoke_all`]: its id prefix.
const REVOKED_BEFORE: &str = "revoked-before:";

/// How long a revoke-all record is kept: longer than any token lives.
pub const REVOKE_ALL_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

#[async_trait]
impl Authenticator for SessionTokens {
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        // Ours have one dot (`payload.mac`); a JWT has two.
        if token.bytes().filter(|&b| b == b'.').count() != 1 {
            return Ok(None);
        }
        Ok(Some(Identity::Session(SessionTokens::authenticate(self, token).await?)))
    }

    async fn session_alive(&self, id: &str) -> Result<Option<bool>, AuthError> {
        if !is_session_id(id) {
            return Ok(None);
        }
        Ok(Some(self.session_exists(id).await?))
    }

    async fn revoke(&self, id: &str, _user: UserId, _expires_at: u64) -> Result<Option<bool>, AuthError> {
        if !is_session_id(id) {
            return Ok(None);
        }
        Ok(Some(self.logout(id).await?))
    }
}

/// The ids [`SessionTokens::login_session`] makes: 32 hex digits.
fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
