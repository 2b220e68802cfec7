//! Accounts: registration, login (argon2), token sessions, logout.

use im_protocol::{ErrorCode, UserId};
use serde::Serialize;

use super::{throttle, Logic};
use crate::auth::{AuthError, Identity};
use crate::broker::Event;
use crate::error::{Error, Result};
use crate::model::{Session, User};
use crate::store::StoreError;
use crate::time::now_ms;

/// What a successful login returns.
#[derive(Debug, Clone, Serialize)]
pub struct Login {
    /// Bearer token for the HTTP API and the WebSocket handshake.
    pub token: String,
    /// The user.
    pub user_id: UserId,
    /// Token expiry, ms since the Unix epoch.
    pub expires_at: u64,
}

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;

/// Usernames: 3–32 characters of `A–Z a–z 0–9 _ . -`.
fn valid_username(name: &str) -> bool {
    (3..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Longest display name kept, in bytes.
pub const MAX_DISPLAY_NAME: usize = 128;

/// An app token without `iat` of a user whose tokens were all revoked is
/// refused if it expires within this long after the revocation (it may
/// have been issued before it): 24 h. Give app tokens an `iat`.
pub const UNDATED_TOKEN_WINDOW_MS: u64 = 24 * 3600 * 1000;

impl Logic {
    /// Creates an account.
    pub async fn register(&self, username: &str, password: &str) -> Result<User> {
        if !valid_username(username) {
            return Err(Error::new(ErrorCode::InvalidField, "username: 3 to 32 of A-Z a-z 0-9 _ . -"));
        }
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
            return Err(Error::new(ErrorCode::InvalidField, "password: 8 to 256 bytes"));
        }
        if self.svc.directory.user_by_name(username).await?.is_some() {
            return Err(Error::new(ErrorCode::Conflict, "username is taken"));
        }
        let hash = self.svc.hasher.hash(password).await.map_err(auth_error)?;
        match self.svc.directory.create_user(username, &hash, now_ms()).await {
            Ok(user) => Ok(user),
            Err(StoreError::Conflict) => Err(Error::new(ErrorCode::Conflict, "username is taken")),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a password and opens a session.
    pub async fn login(&self, username: &str, password: &str) -> Result<Login> {
        self.login_from(username, password, None).await
    }

    /// How long a login for `username` from `from` must wait after too many
    /// failures ([`throttle`]), if at all.
    /// A lock-out decided on another node sharing the session store counts too.
    pub async fn login_retry_after(
        &self,
        username: &str,
        from: Option<std::net::IpAddr>,
    ) -> Option<std::time::Duration> {
        let local = self.login_throttle.retry_after(username, from);
        let now = now_ms();
        let (user_key, addr_key) = throttle::lockout_keys(username, from);
        let mut shared = None;
        for key in std::iter::once(user_key).chain(addr_key) {
            // An unreachable session store leaves the node's own counts.
            if let Ok(Some(until)) = self.svc.auth.locked_out(&key, now).await {
                shared = shared.max(Some(std::time::Duration::from_millis(until - now)));
            }
        }
        local.max(shared)
    }

    /// [`login`](Self::login) from the client address `from`: refused with
    /// `rate_limited` without checking the password while the username or
    /// the address is locked out; failures are counted.
    pub async fn login_from(
        &self,
        username: &str,
        password: &str,
        from: Option<std::net::IpAddr>,
    ) -> Result<Login> {
        if let Some(wait) = self.login_retry_after(username, from).await {
            return Err(Error::new(
                ErrorCode::RateLimited,
                format!("too many failed logins; retry in {} s", wait.as_secs().max(1)),
            ));
        }
        self.login_counted(username, password, from).await
    }

    /// [`login_from`](Self::login_from) for a caller that has just asked
    /// [`login_retry_after`](Self::login_retry_after) itself: checks the
    /// password and counts a failure.
    pub(crate) async fn login_counted(
        &self,
        username: &str,
        password: &str,
        from: Option<std::net::IpAddr>,
    ) -> Result<Login> {
        let result = self.check_password_and_open(username, password).await;
        match &result {
            Ok(_) => {
                self.login_throttle.succeeded(username);
                let (count, _) = throttle::failure_keys(username, from);
                if let Err(e) = self.svc.auth.reset_shared(&count).await {
                    tracing::warn!(error = %e, "a shared login failure count could not be reset");
                }
            }
            Err(e) if e.code == ErrorCode::BadCredentials => {
                let until = now_ms() + throttle::LOCKOUT.as_millis() as u64;
                let mut locked = self.login_throttle.failed(username, from);
                locked.extend(self.count_shared_failure(username, from).await);
                locked.sort();
                locked.dedup();
                for key in locked {
                    if let Err(e) = self.svc.auth.lock_out(&key, until).await {
                        tracing::warn!(error = %e, "a login lock-out could not be shared with the other nodes");
                    }
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Counts a failed login in the session store's shared counts, when it
    /// keeps them; the lock-out keys whose count reached its limit (each
    /// count then starts again).
    async fn count_shared_failure(&self, username: &str, from: Option<std::net::IpAddr>) -> Vec<String> {
        let window_end = now_ms() + throttle::WINDOW.as_millis() as u64;
        let (user_lock, addr_lock) = throttle::lockout_keys(username, from);
        let (user_count, addr_count) = throttle::failure_keys(username, from);
        let kinds = [
            (Some(user_count), Some(user_lock), throttle::MAX_FAILURES_PER_USERNAME),
            (addr_count, addr_lock, throttle::MAX_FAILURES_PER_ADDRESS),
        ];
        let mut locked = Vec::new();
        for (count, lock, max) in kinds {
            let (Some(count), Some(lock)) = (count, lock) else { continue };
            match self.svc.auth.count_shared(&count, window_end).await {
                Ok(Some(n)) if n >= u64::from(max) => {
                    locked.push(lock);
                    if let Err(e) = self.svc.auth.reset_shared(&count).await {
                        tracing::warn!(error = %e, "a shared login failure count could not be reset");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "a login failure could not be counted for the cluster"),
            }
        }
        locked
    }

    async fn check_password_and_open(&self, username: &str, password: &str) -> Result<Login> {
        let bad = || Error::new(ErrorCode::BadCredentials, "wrong username or password");
        if password.len() > MAX_PASSWORD || !valid_username(username) {
            return Err(bad());
        }
        let user = self.svc.directory.user_by_name(username).await?;
        // An unknown user costs a hash too, so timing does not tell which
        // usernames exist.
        let hash = match &user {
            Some(u) => u.password_hash.clone(),
            None => self.dummy_hash().await?,
        };
        let matches = self.svc.hasher.verify(password, &hash).await.map_err(auth_error)?;
        let Some(user) = user.filter(|_| matches) else {
            return Err(bad());
        };
        let (session, token) =
            self.svc.auth.login_session(user.id, self.cfg.token_ttl).await.map_err(auth_error)?;
        Ok(Login { token, user_id: user.id, expires_at: session.expires_at })
    }

    /// A hash of a random password with the configured parameters, made once.
    async fn dummy_hash(&self) -> Result<String> {
        if let Some(h) = self.dummy_hash.get() {
            return Ok(h.clone());
        }
        let random = format!("{:032x}", rand::random::<u128>());
        let h = self.svc.hasher.hash(&random).await.map_err(auth_error)?;
        Ok(self.dummy_hash.get_or_init(|| h).clone())
    }

    /// Resolves a token to its live session: the first authenticator that
    /// knows the token's kind decides ([`Services::authenticators`]). A
    /// user of the application is mapped to a user of ours (created on
    /// first sight, named `~` and the subject, which no registration can
    /// take).
    ///
    /// [`Services::authenticators`]: super::Services::authenticators
    pub async fn authenticate(&self, token: &str) -> std::result::Result<Session, AuthError> {
        if token.is_empty() || token.len() > crate::auth::MAX_PRESENTED_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        for a in &self.svc.authenticators {
            match a.authenticate(token).await? {
                None => continue,
                Some(Identity::Session(session)) => {
                    if session.created_at < self.svc.auth.revoked_before(session.user).await? {
                        return Err(AuthError::Revoked);
                    }
                    return Ok(session);
                }
                Some(Identity::External { subject, session, expires_at, issued_at, name }) => {
                    // Every authenticator's subjects share the `~` namespace;
                    // one of an embedder's own must pass the same check.
                    if !crate::auth::valid_subject(&subject) {
                        return Err(AuthError::Malformed);
                    }
                    let mut user = self.external_user(&subject).await?;
                    let mut revoked = self.svc.auth.revoked_before(user).await?;
                    // Only a user with a revoke-all record can have been erased.
                    if revoked > 0 {
                        let current = self.still_external_user(&subject, user).await?;
                        if current != user {
                            user = current;
                            revoked = self.svc.auth.revoked_before(user).await?;
                        }
                    }
                    let before = match issued_at {
                        // `iat` counts whole seconds: a token of the
                        // revocation's own second is let through.
                        Some(t) => t < revoked - revoked % 1000,
                        // Undated: refused if it may have been issued before.
                        None => revoked > 0 && expires_at <= revoked.saturating_add(UNDATED_TOKEN_WINDOW_MS),
                    };
                    if before {
                        return Err(AuthError::Revoked);
                    }
                    if let Some(name) = name {
                        self.keep_display_name(user, &name).await?;
                    }
                    return Ok(Session { id: session, user, created_at: now_ms(), expires_at });
                }
            }
        }
        Err(AuthError::Malformed)
    }

    /// Makes `name` (a token's `name` claim, or the server API's) the
    /// display name of `user`, writing only when it changed.
    pub(crate) async fn keep_display_name(
        &self,
        user: UserId,
        name: &str,
    ) -> std::result::Result<(), AuthError> {
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
            return Ok(()); // not a name to show; the username stays
        }
        let known =
            |names: &std::collections::HashMap<UserId, String>| names.get(&user).is_some_and(|n| n == name);
        if known(&self.display_names.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let stored = self.svc.directory.user(user).await?.and_then(|u| u.display_name);
        if stored.as_deref() != Some(name) {
            self.svc.directory.set_display_name(user, Some(name)).await?;
        }
        let mut names = self.display_names.lock().unwrap_or_else(|p| p.into_inner());
        if names.len() >= 100_000 {
            names.clear();
        }
        names.insert(user, name.to_owned());
        Ok(())
    }

    /// Whether `session` was made before a revoke-all of its user.
    pub async fn revoked_by_all(&self, session: &Session) -> std::result::Result<bool, AuthError> {
        Ok(session.created_at < self.svc.auth.revoked_before(session.user).await?)
    }

    /// Revokes every token of `user` issued until now — session tokens
    /// and app tokens alike — on every node sharing the session store, and
    /// closes the user's connections (they reconnect, and are refused with
    /// 401: terminal for the clients). New logins and tokens work.
    pub async fn revoke_all_tokens(&self, user: UserId) -> Result<()> {
        self.user(user).await?;
        self.svc.auth.revoke_all(user, now_ms()).await.map_err(auth_error)?;
        self.publish(Event::UserDisconnected { user }).await;
        Ok(())
    }

    /// Our user for the application's user `subject`, created if new.
    pub(crate) async fn external_user(&self, subject: &str) -> std::result::Result<UserId, AuthError> {
        const CACHED: usize = 100_000;
        if let Some(&id) = self.external_users.lock().unwrap_or_else(|p| p.into_inner()).get(subject) {
            return Ok(id);
        }
        let username = format!("~{subject}");
        let dir = &self.svc.directory;
        let user = match dir.user_by_name(&username).await? {
            Some(u) => u,
            // No password: nobody can log in as this user, only present tokens.
            None => match dir.create_user(&username, "", now_ms()).await {
                Ok(u) => u,
                // Another node created it at the same moment.
                Err(StoreError::Conflict) => dir
                    .user_by_name(&username)
                    .await?
                    .ok_or_else(|| AuthError::Backend("user vanished".into()))?,
                Err(e) => return Err(e.into()),
            },
        };
        let mut cache = self.external_users.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(subject.to_owned(), user.id);
        Ok(user.id)
    }

    /// `user`, this node's mapping of `subject`, if that account still
    /// exists; otherwise the mapping was stale (the account was erased,
    /// perhaps on another node) and the subject is resolved again, as a
    /// new user.
    pub(crate) async fn still_external_user(
        &self,
        subject: &str,
        user: UserId,
    ) -> std::result::Result<UserId, AuthError> {
        if self.svc.directory.user(user).await?.is_some() {
            return Ok(user);
        }
        self.forget_subject(subject);
        self.external_user(subject).await
    }

    /// Forgets this node's mapping of an application user to ours.
    pub(super) fn forget_subject(&self, subject: &str) {
        self.external_users.lock().unwrap_or_else(|p| p.into_inner()).remove(subject);
    }

    /// Whether a session is still live (not revoked since it was checked).
    pub async fn session_alive(&self, session_id: &str) -> std::result::Result<bool, AuthError> {
        for a in &self.svc.authenticators {
            if let Some(alive) = a.session_alive(session_id).await? {
                return Ok(alive);
            }
        }
        Ok(false)
    }

    /// Revokes a session everywhere and closes its open connections (4001).
    /// For a token issued by the application, its id is denied until it
    /// expires.
    pub async fn logout(&self, session: &Session) -> Result<()> {
        for a in &self.svc.authenticators {
            if a.revoke(&session.id, session.user, session.expires_at).await.map_err(auth_error)?.is_some() {
                break;
            }
        }
        self.publish(Event::SessionRevoked { user: session.user, session: session.id.clone() }).await;
        Ok(())
    }

    /// A user by id, without the password hash.
    pub async fn user(&self, id: UserId) -> Result<User> {
        let mut user = self
            .svc
            .directory
            .user(id)
            .await?
            .ok_or_else(|| Error::new(ErrorCode::NoSuchUser, format!("no user {id}")))?;
        user.password_hash.clear();
        Ok(user)
    }

    /// A user by username, without the password hash.
    pub async fn user_by_name(&self, name: &str) -> Result<User> {
        let mut user = self
            .svc
            .directory
            .user_by_name(name)
            .await?
            .ok_or_else(|| Error::new(ErrorCode::NoSuchUser, "no such user"))?;
        user.password_hash.clear();
        Ok(user)
    }
}

fn auth_error(e: AuthError) -> Error {
    Error::new(e.error_code(), e.to_string())
}
