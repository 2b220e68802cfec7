//! Records the server keeps: users, groups, members, rooms, sessions.
//!
//! These are storage and HTTP API types; the wire protocol's types live in
//! `im_protocol`.

use im_protocol::{GroupId, RoomId, UserId};
use serde::{Deserialize, Serialize};

/// A registered account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Assigned at registration, starting at 1.
    pub id: UserId,
    /// Unique login name.
    pub username: String,
    /// Argon2 PHC string; never leaves the server.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub password_hash: String,
    /// Registration time, ms since the Unix epoch.
    pub created_at: u64,
    /// A name to show, if one was given (an app token's `name` claim, or
    /// the server API); clients fall back to `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A managed, capped conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Assigned at creation, starting at 1.
    pub id: GroupId,
    /// Display name.
    pub name: String,
    /// The creator; always a member with [`Role::Owner`].
    pub owner: UserId,
    /// Creation time, ms since the Unix epoch.
    pub created_at: u64,
}

/// A member's rights in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Plain member: may send, read and leave.
    Member,
    /// May add and remove members.
    Admin,
    /// The creator: an admin who cannot be removed.
    Owner,
}

impl Role {
    /// Whether this role may add and remove members.
    pub fn can_manage(self) -> bool {
        self >= Role::Admin
    }

    /// The wire name: `member`, `admin` or `owner`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user.
    pub user: UserId,
    /// Their role.
    pub role: Role,
}

/// An open, uncapped conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Assigned at creation, starting at 1.
    pub id: RoomId,
    /// Display name.
    pub name: String,
    /// Who created it.
    pub created_by: UserId,
    /// Creation time, ms since the Unix epoch.
    pub created_at: u64,
}

/// A login session; a token names one, and logout revokes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random, unguessable id (hex).
    pub id: String,
    /// The signed-in user.
    pub user: UserId,
    /// Creation time, ms since the Unix epoch.
    pub created_at: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_at: u64,
}
