//! What the server API (the application's backend, authenticated by an API
//! key) may do beyond what a user may: act for any user, read any
//! conversation, disconnect users and sessions, and revoke tokens.

use im_protocol::{ConversationId, ErrorCode, GroupId, UserId};

use super::Logic;
use crate::broker::Event;
use crate::error::{Error, Result};
use crate::model::{Role, User};

impl Logic {
    /// The user for the application's user `subject` (`~subject`), created
    /// if new — the same user an app token with that `sub` signs in as.
    pub async fn user_for_subject(&self, subject: &str, name: Option<&str>) -> Result<User> {
        if !crate::auth::valid_subject(subject) {
            return Err(Error::new(ErrorCode::InvalidField, "subject: 1 to 63 visible ASCII characters"));
        }
        let auth = |e: crate::auth::AuthError| Error::new(e.error_code(), e.to_string());
        let bad = |n: &str| {
            n.trim().is_empty()
                || n.len() > super::accounts::MAX_DISPLAY_NAME
                || n.chars().any(char::is_control)
        };
        if name.is_some_and(bad) {
            return Err(Error::new(ErrorCode::InvalidField, "name: 1 to 128 bytes, no control characters"));
        }
        let id = self.external_user(subject).await.map_err(auth)?;
        let id = self.still_external_user(subject, id).await.map_err(auth)?;
        if let Some(name) = name {
            self.keep_display_name(id, name).await.map_err(auth)?;
        }
        self.user(id).await
    }

    /// The owner of `group`, who acts for the server API on its members.
    pub async fn group_owner(&self, group: GroupId) -> Result<UserId> {
        let members = self.svc.directory.members(group).await?;
        members
            .iter()
            .find(|m| m.role == Role::Owner)
            .map(|m| m.user)
            .ok_or_else(|| Error::new(ErrorCode::NoSuchGroup, format!("no group {group}")))
    }

    /// Who the server API acts as to moderate `conv`: a group's owner, a
    /// room's creator (the highest rank there).
    pub async fn chief_moderator(&self, conv: ConversationId) -> Result<UserId> {
        match conv {
            ConversationId::Group(g) => self.group_owner(g).await,
            ConversationId::Room(r) => match self.svc.directory.room(r).await? {
                Some(room) => Ok(room.created_by),
                None => Err(Error::new(ErrorCode::NoSuchRoom, "no such room")),
            },
            ConversationId::Direct(..) => {
                Err(Error::new(ErrorCode::InvalidField, "direct chats have no moderators"))
            }
        }
    }

    /// Closes every connection of `user` on every node with 3000: each
    /// reconnects, authenticates again (a revoked token then fails for
    /// good) and syncs.
    pub async fn disconnect_user(&self, user: UserId) -> Result<()> {
        self.user(user).await?;
        self.publish(Event::UserDisconnected { user }).await;
        Ok(())
    }

    /// Closes the connections of the session `token` names (a session
    /// token or an app token) on every node with 3000, without revoking
    /// it: they reconnect with the same token and sync. The user's other
    /// sessions stay connected. A token that is not valid answers
    /// `unauthorized`.
    pub async fn disconnect_session(&self, token: &str) -> Result<()> {
        let session =
            self.authenticate(token).await.map_err(|e| Error::new(e.error_code(), e.to_string()))?;
        self.publish(Event::SessionDisconnected { user: session.user, session: session.id }).await;
        Ok(())
    }

    /// Revokes `token` (a session token or an app token) on every node and
    /// closes its connections with 4001. A token that is not valid anyway
    /// answers `unauthorized`.
    pub async fn revoke_token(&self, token: &str) -> Result<()> {
        let session =
            self.authenticate(token).await.map_err(|e| Error::new(e.error_code(), e.to_string()))?;
        self.logout(&session).await
    }
}
