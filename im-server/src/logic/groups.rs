//! Groups: managed membership with owner/admin rights and a member cap.

use im_protocol::events;
use im_protocol::{ErrorCode, GroupId, MemberChangeKind, ServerFrame, UserId};
use serde::Serialize;

use super::Logic;
use crate::broker::{Audience, Event};
use crate::error::{Error, Result};
use crate::model::{Group, Member, Role};
use crate::time::now_ms;

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// The group.
    #[serde(flatten)]
    pub group: Group,
    /// Its members, ordered by user id.
    pub members: Vec<Member>,
}

const MAX_GROUP_NAME: usize = 100;

impl Logic {
    /// Creates a group owned by `owner` with `members` added as plain members.
    pub async fn create_group(&self, owner: UserId, name: &str, members: &[UserId]) -> Result<GroupInfo> {
        let name = name.trim();
        if name.is_empty() || name.contains('\0') || name.chars().count() > MAX_GROUP_NAME {
            return Err(Error::new(ErrorCode::InvalidField, "name must be 1 to 100 characters"));
        }
        let mut wanted: Vec<UserId> = members.iter().copied().filter(|&u| u != owner).collect();
        wanted.sort();
        wanted.dedup();
        let cap = self.cfg.max_group_members;
        if wanted.len() + 1 > cap {
            return Err(Error::new(ErrorCode::GroupFull, format!("a group has at most {cap} members")));
        }
        let dir = &self.svc.directory;
        for &u in &wanted {
            if dir.user(u).await?.is_none() {
                return Err(Error::new(ErrorCode::NoSuchUser, format!("no user {u}")));
            }
        }
        let group = dir.create_group(name, owner, now_ms()).await?;
        for &u in &wanted {
            dir.add_member(group.id, u, Role::Member, cap).await?;
        }
        let members = dir.members(group.id).await?;
        // Every member hears of every member's addition (the owner's
        // first), as for any later change: N frames to each of N members,
        // at most the group cap squared once per group.
        let mut everyone: Vec<UserId> = members.iter().map(|m| m.user).collect();
        everyone.sort_by_key(|&u| u != owner);
        for &user in &everyone {
            self.announce(group.id, user, MemberChangeKind::Added, owner, everyone.clone()).await;
        }
        Ok(GroupInfo { group, members })
    }

    /// A group and its members, for one of its members.
    pub async fn group_info(&self, actor: UserId, group: GroupId) -> Result<GroupInfo> {
        self.role_of(actor, group).await?;
        let dir = &self.svc.directory;
        let g = dir.group(group).await?.ok_or_else(no_such_group)?;
        Ok(GroupInfo { group: g, members: dir.members(group).await? })
    }

    /// The groups `user` belongs to.
    pub async fn my_groups(&self, user: UserId) -> Result<Vec<Group>> {
        let dir = &self.svc.directory;
        let mut out = Vec::new();
        for id in dir.groups_of(user).await? {
            if let Some(g) = dir.group(id).await? {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Adds `user` to `group` (or changes their role). Owner or admins only.
    /// A new member's read id starts at the group's head.
    pub async fn add_member(&self, actor: UserId, group: GroupId, user: UserId, role: Role) -> Result<()> {
        if role == Role::Owner {
            return Err(Error::new(ErrorCode::InvalidField, "a group has exactly one owner"));
        }
        let actor_role = self.role_of(actor, group).await?;
        if !actor_role.can_manage() || (role == Role::Admin && actor_role != Role::Owner) {
            return Err(Error::new(ErrorCode::Forbidden, "only the owner and admins manage members"));
        }
        let dir = &self.svc.directory;
        if dir.user(user).await?.is_none() {
            return Err(Error::new(ErrorCode::NoSuchUser, format!("no user {user}")));
        }
        let before = dir.member_role(group, user).await?;
        match before {
            Some(Role::Owner) => {
                return Err(Error::new(ErrorCode::Forbidden, "the owner's role cannot change"))
            }
            // Only the owner changes an admin's role.
            Some(Role::Admin) if actor_role != Role::Owner => {
                return Err(Error::new(ErrorCode::Forbidden, "only the owner changes an admin's role"))
            }
            _ => {}
        }
        let added =
            dir.add_member(group, user, role, self.cfg.max_group_members).await.map_err(|e| match e {
                crate::store::StoreError::NotFound => no_such_group(),
                e => e.into(),
            })?;
        if added {
            self.read_from_head(user, im_protocol::ConversationId::Group(group)).await;
            let everyone = self.member_ids(group).await?;
            self.announce(group, user, MemberChangeKind::Added, actor, everyone).await;
            self.group_notice(group, actor, events::SYSTEM_MEMBER_ADDED, user, Some(role)).await;
        } else if before != Some(role) {
            self.group_notice(group, actor, events::SYSTEM_ROLE_CHANGED, user, Some(role)).await;
        }
        Ok(())
    }

    /// Removes `user` from `group`. Members may remove themselves (leave),
    /// except the owner; the owner removes anyone else, admins remove plain
    /// members.
    pub async fn remove_member(&self, actor: UserId, group: GroupId, user: UserId) -> Result<()> {
        let actor_role = self.role_of(actor, group).await?;
        let dir = &self.svc.directory;
        let target = dir
            .member_role(group, user)
            .await?
            .ok_or_else(|| Error::new(ErrorCode::NotMember, format!("user {user} is not a member")))?;
        let allowed = match (actor == user, target) {
            (_, Role::Owner) => false,
            (true, _) => true,
            (false, Role::Admin) => actor_role == Role::Owner,
            (false, Role::Member) => actor_role.can_manage(),
        };
        if !allowed {
            return Err(Error::new(ErrorCode::Forbidden, "not allowed to remove this member"));
        }
        let mut everyone = self.member_ids(group).await?;
        if dir.remove_member(group, user).await? {
            // The removed user hears about it too.
            if !everyone.contains(&user) {
                everyone.push(user);
            }
            self.announce(group, user, MemberChangeKind::Removed, actor, everyone).await;
            let what = if actor == user { events::SYSTEM_MEMBER_LEFT } else { events::SYSTEM_MEMBER_REMOVED };
            self.group_notice(group, actor, what, user, None).await;
        }
        Ok(())
    }

    /// Makes member `to` the owner of `group`; the owner before (`actor`,
    /// who must be the owner) becomes an admin. A notice tells the group.
    pub async fn transfer_ownership(&self, actor: UserId, group: GroupId, to: UserId) -> Result<()> {
        if self.role_of(actor, group).await? != Role::Owner {
            return Err(Error::new(ErrorCode::Forbidden, "only the owner hands a group on"));
        }
        let store = self.svc.directory.user_erasure().ok_or_else(|| {
            Error::new(ErrorCode::Unavailable, "this server's directory cannot change a group's owner")
        })?;
        if to == actor {
            return Ok(());
        }
        match store.transfer_ownership(group, to).await {
            Ok(true) => {}
            Ok(false) => return Err(Error::new(ErrorCode::NotMember, format!("user {to} is not a member"))),
            Err(crate::store::StoreError::NotFound) => return Err(no_such_group()),
            Err(e) => return Err(e.into()),
        }
        self.group_notice(group, actor, events::SYSTEM_ROLE_CHANGED, to, Some(Role::Owner)).await;
        Ok(())
    }

    async fn role_of(&self, actor: UserId, group: GroupId) -> Result<Role> {
        let dir = &self.svc.directory;
        match dir.member_role(group, actor).await? {
            Some(role) => Ok(role),
            None if dir.group(group).await?.is_some() => {
                Err(Error::new(ErrorCode::NotMember, "not a member of this group"))
            }
            None => Err(no_such_group()),
        }
    }

    /// Posts a `system` notice of a membership change into the group's sequence.
    pub(super) async fn group_notice(
        &self,
        group: GroupId,
        actor: UserId,
        event: &str,
        user: UserId,
        role: Option<Role>,
    ) {
        let (who, whom) = (self.display_name(actor).await, self.display_name(user).await);
        let role_name = role.map(|r| r.as_str().to_owned());
        let body = match event {
            events::SYSTEM_MEMBER_ADDED => format!("{who} added {whom}"),
            events::SYSTEM_MEMBER_LEFT => format!("{whom} left"),
            events::SYSTEM_MEMBER_REMOVED => format!("{who} removed {whom}"),
            _ => format!("{who} made {whom} {}", role_name.as_deref().unwrap_or("a member")),
        };
        let notice = events::SystemNotice {
            event: event.into(),
            user: Some(user),
            role: role_name,
            name: None,
            until: None,
        };
        self.post_notice(im_protocol::ConversationId::Group(group), actor, notice, body).await;
    }

    pub(super) async fn member_ids(&self, group: GroupId) -> Result<Vec<UserId>> {
        Ok(self.svc.directory.members(group).await?.into_iter().map(|m| m.user).collect())
    }

    /// Sends the `member` push of a change to `to` and tells the hooks.
    pub(super) async fn announce(
        &self,
        group: GroupId,
        user: UserId,
        change: MemberChangeKind,
        by: UserId,
        to: Vec<UserId>,
    ) {
        let frame = ServerFrame::Member { group, user, change, by };
        self.publish(Event::Deliver { to: Audience::Users(to), frame, skip: None }).await;
        let conv = im_protocol::ConversationId::Group(group);
        self.tell_hooks(|| match change {
            MemberChangeKind::Added => crate::hooks::Notice::Joined(user, conv),
            MemberChangeKind::Removed => crate::hooks::Notice::Left(user, conv),
        });
    }
}

fn no_such_group() -> Error {
    Error::new(ErrorCode::NoSuchGroup, "no such group")
}
