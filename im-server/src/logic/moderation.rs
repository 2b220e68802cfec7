//! Moderation: a group's owner and admins, or a room's creator and
//! moderators, mute, kick and ban members (and lift mutes and bans); a
//! room's creator names its moderators. Every action is a `system` notice
//! in the conversation's sequence, and the state lives in the store
//! ([`ModerationStore`]), so every node enforces it: a muted member's
//! sends are refused with `muted`, a banned user's joins and adds with
//! `banned`. Deleting a member's message is a recall, which the same
//! people may make.

use im_protocol::events::{self, SystemNotice};
use im_protocol::{ConversationId, ErrorCode, MemberChangeKind, RoomId, UserId};

use super::Logic;
use crate::error::{Error, Result};
use crate::model::Role;
use crate::store::{Access, ModerationStore, Sanction, StoreError};
use crate::time::now_ms;

/// The longest mute (and what a mute without a duration lasts): 100 years.
pub const MAX_MUTE_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// A moderation action on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sanctioning {
    /// Muted for this many ms (`None`: until unmuted).
    Mute(Option<u64>),
    /// Mute lifted.
    Unmute,
    /// Removed (they may come back: rejoin a room, be added to a group).
    Kick,
    /// Removed and kept out until unbanned.
    Ban,
    /// Ban lifted (not re-added).
    Unban,
}

/// How strongly someone moderates a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    None,
    /// A group admin, a room moderator.
    Moderator,
    /// A group's owner, a room's creator.
    Owner,
}

impl Logic {
    fn moderation_store(&self) -> Result<&dyn ModerationStore> {
        self.svc
            .directory
            .moderation()
            .ok_or_else(|| Error::new(ErrorCode::Unavailable, "this server's directory keeps no moderation"))
    }

    /// `user`'s standing in `conv` for a send: a member (else the error
    /// [`Logic::check_access`] gives) who is not muted; in a direct chat,
    /// neither party blocking the other.
    pub(crate) async fn check_send_access(&self, user: UserId, conv: ConversationId) -> Result<()> {
        if let ConversationId::Direct(..) = conv {
            self.check_access(user, conv).await?;
            return self.check_direct_block(user, conv).await;
        }
        let Some(m) = self.svc.directory.moderation() else {
            return self.check_access(user, conv).await;
        };
        match m.access(conv, user).await? {
            Some(Access { muted_until, .. }) if muted_until > now_ms() => Err(Error::new(
                ErrorCode::Muted,
                format!("muted in {conv} until {muted_until} (ms since the epoch)"),
            )),
            Some(_) => Ok(()),
            // Not a member: the usual answer (not_member, no_such_group, …).
            None => self.check_access(user, conv).await,
        }
    }

    /// How strongly `user` moderates `conv` (a group or a room).
    async fn rank(&self, conv: ConversationId, user: UserId) -> Result<Rank> {
        match conv {
            ConversationId::Group(g) => Ok(match self.svc.directory.member_role(g, user).await? {
                Some(Role::Owner) => Rank::Owner,
                Some(Role::Admin) => Rank::Moderator,
                _ => Rank::None,
            }),
            ConversationId::Room(r) => {
                let room = self.svc.directory.room(r).await?;
                if room.is_some_and(|room| room.created_by == user) {
                    return Ok(Rank::Owner);
                }
                let access = self.moderation_store()?.access(conv, user).await?;
                Ok(if access.is_some_and(|a| a.moderator) { Rank::Moderator } else { Rank::None })
            }
            ConversationId::Direct(..) => Ok(Rank::None),
        }
    }

    /// Whether `user` may moderate `conv`: delete (recall) others' messages.
    pub(crate) async fn moderates(&self, user: UserId, conv: ConversationId) -> Result<bool> {
        Ok(self.rank(conv, user).await? > Rank::None)
    }

    /// Checks that `actor` may sanction `user` in `conv`: a moderator acting
    /// on someone they outrank, in a group or room that exists.
    async fn check_sanction(&self, actor: UserId, conv: ConversationId, user: UserId) -> Result<()> {
        match conv {
            ConversationId::Direct(..) => {
                return Err(Error::new(ErrorCode::InvalidField, "direct chats have no moderators"))
            }
            ConversationId::Group(g) if self.svc.directory.group(g).await?.is_none() => {
                return Err(Error::new(ErrorCode::NoSuchGroup, "no such group"))
            }
            ConversationId::Room(r) if self.svc.directory.room(r).await?.is_none() => {
                return Err(Error::new(ErrorCode::NoSuchRoom, "no such room"))
            }
            _ => {}
        }
        if actor == user {
            return Err(Error::new(ErrorCode::InvalidField, "moderators do not sanction themselves"));
        }
        if self.svc.directory.user(user).await?.is_none() {
            return Err(Error::new(ErrorCode::NoSuchUser, format!("no user {user}")));
        }
        let (mine, theirs) = (self.rank(conv, actor).await?, self.rank(conv, user).await?);
        if mine == Rank::None {
            return Err(Error::new(ErrorCode::Forbidden, "only the conversation's moderators do this"));
        }
        if theirs >= mine {
            return Err(Error::new(ErrorCode::Forbidden, "moderators act only on members they outrank"));
        }
        Ok(())
    }

    /// `actor` mutes, kicks, bans, or lifts a mute or ban of `user` in
    /// `conv`; posts the notice. Returns the sanction now in force.
    pub async fn sanction(
        &self,
        actor: UserId,
        conv: ConversationId,
        user: UserId,
        action: Sanctioning,
    ) -> Result<Sanction> {
        let store = self.moderation_store()?;
        self.check_sanction(actor, conv, user).await?;
        let mut until = None;
        let event = match action {
            Sanctioning::Mute(duration) => {
                let duration = duration.unwrap_or(MAX_MUTE_MS);
                if duration == 0 || duration > MAX_MUTE_MS {
                    return Err(Error::new(ErrorCode::InvalidField, "duration_ms: 1 ms to 100 years"));
                }
                let t = now_ms() + duration;
                store.set_muted(conv, user, t).await?;
                until = Some(t);
                events::SYSTEM_MEMBER_MUTED
            }
            Sanctioning::Unmute => {
                store.set_muted(conv, user, 0).await?;
                events::SYSTEM_MEMBER_UNMUTED
            }
            Sanctioning::Kick => match conv {
                // A group's kick is the removal of a member, notice and all.
                ConversationId::Group(g) => {
                    self.remove_member(actor, g, user).await?;
                    return self.sanction_of(store, conv, user).await;
                }
                ConversationId::Direct(..) => {
                    return Err(Error::new(ErrorCode::InvalidField, "direct chats have no moderators"))
                }
                ConversationId::Room(r) => {
                    if !self.svc.directory.leave_room(r, user).await? {
                        return Err(Error::new(ErrorCode::NotMember, format!("user {user} is not a member")));
                    }
                    self.after_removal(actor, conv, user).await?;
                    events::SYSTEM_MEMBER_KICKED
                }
            },
            Sanctioning::Ban => {
                let was = store.ban(conv, user).await.map_err(|e| match e {
                    StoreError::NotFound => Error::new(ErrorCode::NoSuchConversation, "no such conversation"),
                    e => e.into(),
                })?;
                if was {
                    self.after_removal(actor, conv, user).await?;
                }
                events::SYSTEM_MEMBER_BANNED
            }
            Sanctioning::Unban => {
                if !store.unban(conv, user).await? {
                    return Err(Error::new(ErrorCode::InvalidField, format!("user {user} is not banned")));
                }
                events::SYSTEM_MEMBER_UNBANNED
            }
        };
        self.moderation_notice(conv, actor, event, user, until).await;
        self.sanction_of(store, conv, user).await
    }

    /// The sanction of `user` in `conv` now.
    async fn sanction_of(
        &self,
        store: &dyn ModerationStore,
        conv: ConversationId,
        user: UserId,
    ) -> Result<Sanction> {
        let current = store.sanctions(conv, now_ms()).await?.into_iter().find(|s| s.user == user);
        Ok(current.unwrap_or(Sanction { user, banned: false, muted_until: 0 }))
    }

    /// What a removal by a moderator changes besides the store: live
    /// subscriptions, the group's `member` push, the hooks.
    async fn after_removal(&self, actor: UserId, conv: ConversationId, user: UserId) -> Result<()> {
        match conv {
            ConversationId::Group(group) => {
                let mut to = self.member_ids(group).await?;
                to.push(user);
                self.announce(group, user, MemberChangeKind::Removed, actor, to).await;
            }
            ConversationId::Room(room) => self.announce_left(room, user).await,
            ConversationId::Direct(..) => {}
        }
        Ok(())
    }

    /// The users banned from `conv` or muted in it now; for its moderators.
    pub async fn sanctions(&self, actor: UserId, conv: ConversationId) -> Result<Vec<Sanction>> {
        let store = self.moderation_store()?;
        if self.rank(conv, actor).await? == Rank::None {
            return Err(Error::new(ErrorCode::Forbidden, "only the conversation's moderators see this"));
        }
        Ok(store.sanctions(conv, now_ms()).await?)
    }

    /// The creator of `room` makes a member a moderator, or not.
    pub async fn set_room_moderator(
        &self,
        actor: UserId,
        room: RoomId,
        user: UserId,
        on: bool,
    ) -> Result<()> {
        let store = self.moderation_store()?;
        let found = self.svc.directory.room(room).await?;
        let Some(found) = found else { return Err(Error::new(ErrorCode::NoSuchRoom, "no such room")) };
        if found.created_by != actor {
            return Err(Error::new(ErrorCode::Forbidden, "only the room's creator names moderators"));
        }
        if !store.set_room_moderator(room, user, on).await? {
            return Err(Error::new(ErrorCode::NotMember, format!("user {user} has not joined the room")));
        }
        Ok(())
    }

    /// The moderators of `room` (anyone may see them).
    pub async fn room_moderators(&self, room: RoomId) -> Result<Vec<UserId>> {
        let store = self.moderation_store()?;
        if self.svc.directory.room(room).await?.is_none() {
            return Err(Error::new(ErrorCode::NoSuchRoom, "no such room"));
        }
        Ok(store.room_moderators(room).await?)
    }

    /// Posts the notice of a moderation action.
    async fn moderation_notice(
        &self,
        conv: ConversationId,
        actor: UserId,
        event: &str,
        user: UserId,
        until: Option<u64>,
    ) {
        let (who, whom) = (self.display_name(actor).await, self.display_name(user).await);
        let body = match event {
            events::SYSTEM_MEMBER_MUTED => format!("{who} muted {whom}"),
            events::SYSTEM_MEMBER_UNMUTED => format!("{who} unmuted {whom}"),
            events::SYSTEM_MEMBER_BANNED => format!("{who} banned {whom}"),
            events::SYSTEM_MEMBER_UNBANNED => format!("{who} lifted {whom}'s ban"),
            _ => format!("{who} removed {whom}"),
        };
        let notice = SystemNotice { event: event.into(), user: Some(user), role: None, name: None, until };
        self.post_notice(conv, actor, notice, body).await;
    }

    /// A user's name for notices: the display name, else the username
    /// (`user N` if it cannot be read).
    pub(crate) async fn display_name(&self, user: UserId) -> String {
        match self.svc.directory.user(user).await {
            Ok(Some(found)) => found.display_name.unwrap_or(found.username),
            _ => format!("user {user}"),
        }
    }
}
