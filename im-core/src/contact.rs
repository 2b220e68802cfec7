//! Contacts: the relation between two users, as one of them sees it.
//!
//! `alice` asks `bob`: alice sees `requested`, bob `pending`; bob accepts
//! (or asks alice back): both see `accepted`; either declines, cancels or
//! removes: both see `none`. The server tells each side's connections with
//! a [`ServerFrame::Contact`](crate::ServerFrame::Contact) frame.

use serde::{Deserialize, Serialize};

/// Where two users stand, from one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ContactState {
    /// This user asked the other; waiting for an answer.
    Requested,
    /// The other asked this user; waiting for this user's answer.
    Pending,
    /// Contacts: both agreed.
    Accepted,
    /// No relation (declined, cancelled or removed).
    None,
}

impl ContactState {
    /// The wire name, e.g. `"pending"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactState::Requested => "requested",
            ContactState::Pending => "pending",
            ContactState::Accepted => "accepted",
            ContactState::None => "none",
        }
    }

    /// The same relation from the other side.
    pub fn mirrored(self) -> Self {
        match self {
            ContactState::Requested => ContactState::Pending,
            ContactState::Pending => ContactState::Requested,
            s => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde_and_mirror() {
        for s in [ContactState::Requested, ContactState::Pending, ContactState::Accepted, ContactState::None]
        {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
            assert_eq!(s.mirrored().mirrored(), s);
        }
        assert_eq!(ContactState::Requested.mirrored(), ContactState::Pending);
    }
}
