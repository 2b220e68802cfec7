//! Identifiers: users, groups, rooms, conversations, messages and requests.
//!
//! Every id that travels on the wire is either a JSON number (`u64`) or, for
//! [`ConversationId`], a short string such as `"g:42"`, so that any language
//! can use it as a map key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::MAX_CLIENT_MSG_ID_LEN;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

numeric_id!(
    /// A registered user, assigned by the server at registration (starts at 1).
    UserId
);
numeric_id!(
    /// A managed group (owner/admins add and remove members; capped size).
    GroupId
);
numeric_id!(
    /// An open room (anyone signed in may join or leave; no cap).
    RoomId
);

/// A message's position in its conversation: `1, 2, 3, …` with no gaps.
///
/// Assigned by the server when the message is stored. Message ids — never
/// clocks — order messages. `0` means "nothing yet" and is the starting
/// cursor of a conversation a device has never seen.
pub type MessageId = u64;

/// Correlates a client request with its reply (`ack`, `ok`, `error`, pages).
///
/// Chosen by the client; the server echoes it and never interprets it.
pub type RequestId = u64;

/// The conversation a message belongs to: a 1:1 chat, a group or a room.
///
/// On the wire it is a string: `"d:3:5"` (direct chat of users 3 and 5, the
/// smaller id first), `"g:42"` (group 42) or `"r:7"` (room 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConversationId {
    /// 1:1 chat between two users; always stored with the smaller id first.
    Direct(UserId, UserId),
    /// A managed group.
    Group(GroupId),
    /// An open room.
    Room(RoomId),
}

impl ConversationId {
    /// The direct conversation of `a` and `b`, whatever their order.
    pub fn direct(a: UserId, b: UserId) -> Self {
        if a <= b {
            ConversationId::Direct(a, b)
        } else {
            ConversationId::Direct(b, a)
        }
    }

    /// For a direct conversation that includes `me`, the other user.
    pub fn peer_of(&self, me: UserId) -> Option<UserId> {
        match *self {
            ConversationId::Direct(a, b) if a == me => Some(b),
            ConversationId::Direct(a, b) if b == me => Some(a),
            _ => None,
        }
    }

    /// The kind of conversation, without its id.
    pub fn kind(&self) -> ConversationKind {
        match self {
            ConversationId::Direct(..) => ConversationKind::Direct,
            ConversationId::Group(_) => ConversationKind::Group,
            ConversationId::Room(_) => ConversationKind::Room,
        }
    }
}

/// The three kinds of conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// 1:1.
    Direct,
    /// Managed, capped, offline members get everything by sync.
    Group,
    /// Open, uncapped, live delivery to joined members plus history.
    Room,
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConversationId::Direct(a, b) => write!(f, "d:{a}:{b}"),
            ConversationId::Group(g) => write!(f, "g:{g}"),
            ConversationId::Room(r) => write!(f, "r:{r}"),
        }
    }
}

/// Why a string is not a valid [`ConversationId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid conversation id {0:?}: expected \"d:<user>:<user>\", \"g:<group>\" or \"r:<room>\"")]
pub struct ParseConversationIdError(pub String);

impl FromStr for ConversationId {
    type Err = ParseConversationIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseConversationIdError(s.chars().take(64).collect());
        let num = |p: &str| -> Result<u64, ParseConversationIdError> {
            // Digits only: no sign, no whitespace, no leading "+" or "0" (one spelling per id).
            if p.is_empty() || p.len() > 20 || p.starts_with('0') || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            match p.parse::<u64>() {
                Ok(0) | Err(_) => Err(err()),
                Ok(v) => Ok(v),
            }
        };
        let (kind, rest) = s.split_once(':').ok_or_else(err)?;
        match kind {
            "g" => Ok(ConversationId::Group(GroupId(num(rest)?))),
            "r" => Ok(ConversationId::Room(RoomId(num(rest)?))),
            "d" => {
                let (a, b) = rest.split_once(':').ok_or_else(err)?;
                let (a, b) = (UserId(num(a)?), UserId(num(b)?));
                // The canonical form has the smaller id first and two distinct users.
                if a >= b {
                    return Err(err());
                }
                Ok(ConversationId::Direct(a, b))
            }
            _ => Err(err()),
        }
    }
}

impl Serialize for ConversationId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConversationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ConversationId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a conversation id such as \"g:42\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// The sender's own id for a message, used to make resends idempotent.
///
/// A resend with the same `cmid` (by the same user, into the same
/// conversation) is the same message: the server answers with the id it
/// assigned the first time and stores nothing new. 1 to
/// [`MAX_CLIENT_MSG_ID_LEN`] printable ASCII characters; a UUID is a good choice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientMsgId(String);

/// Why a string is not a valid [`ClientMsgId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client message id: 1 to {MAX_CLIENT_MSG_ID_LEN} printable ASCII characters expected")]
pub struct InvalidClientMsgId;

impl ClientMsgId {
    /// Checks and wraps a client message id.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidClientMsgId> {
        let s = s.into();
        if s.is_empty() || s.len() > MAX_CLIENT_MSG_ID_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidClientMsgId);
        }
        Ok(Self(s))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientMsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClientMsgId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ClientMsgId::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_round_trip_as_strings() {
        for (s, id) in [
            ("d:3:5", ConversationId::Direct(UserId(3), UserId(5))),
            ("g:42", ConversationId::Group(GroupId(42))),
            ("r:7", ConversationId::Room(RoomId(7))),
        ] {
            assert_eq!(s.parse::<ConversationId>().unwrap(), id);
            assert_eq!(id.to_string(), s);
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{s}\""));
        }
    }

    #[test]
    fn direct_is_canonical() {
        assert_eq!(ConversationId::direct(UserId(9), UserId(2)).to_string(), "d:2:9");
        assert!("d:9:2".parse::<ConversationId>().is_err(), "non-canonical order");
        assert!("d:4:4".parse::<ConversationId>().is_err(), "self chat");
        let d = ConversationId::direct(UserId(2), UserId(9));
        assert_eq!(d.peer_of(UserId(2)), Some(UserId(9)));
        assert_eq!(d.peer_of(UserId(9)), Some(UserId(2)));
        assert_eq!(d.peer_of(UserId(1)), None);
    }

    #[test]
    fn malformed_conversation_ids_are_rejected() {
        for s in
            ["", "g", "g:", "g:0", "g:-1", "g:+1", "g: 1", "x:1", "d:1", "r:1:2", "g:99999999999999999999999"]
        {
            assert!(s.parse::<ConversationId>().is_err(), "{s:?} accepted");
        }
        for s in ["g:042", "d:03:5", "r:00"] {
            assert!(s.parse::<ConversationId>().is_err(), "{s:?} accepted: leading zero, not canonical");
        }
    }

    #[test]
    fn client_msg_ids_are_checked() {
        assert!(ClientMsgId::new("a-1").is_ok());
        assert!(ClientMsgId::new("").is_err());
        assert!(ClientMsgId::new("has space").is_err());
        assert!(ClientMsgId::new("x".repeat(MAX_CLIENT_MSG_ID_LEN + 1)).is_err());
        assert!(serde_json::from_str::<ClientMsgId>("\"\"").is_err());
    }
}
