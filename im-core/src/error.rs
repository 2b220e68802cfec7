//! Error codes carried by `error` frames and HTTP error bodies.
//!
//! An `error` frame never closes the connection; what must end a connection
//! is a close code (see [`crate::close`]). Each code names one thing the
//! client can act on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A machine-readable error code, `snake_case` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not a JSON object (or not valid UTF-8 text).
    BadFrame,
    /// The frame's `type` is missing or unknown.
    UnknownType,
    /// A field is missing, of the wrong type or out of range.
    InvalidField,
    /// The message body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The sender is not a member of the conversation.
    NotMember,
    /// The conversation does not exist (e.g. a direct chat with a missing user).
    NoSuchConversation,
    /// The room does not exist.
    NoSuchRoom,
    /// The group does not exist.
    NoSuchGroup,
    /// The user does not exist.
    NoSuchUser,
    /// The caller may not do this (e.g. a non-admin adding a group member).
    Forbidden,
    /// The group has reached its member cap.
    GroupFull,
    /// Too many frames or requests; slow down. The request was not processed.
    RateLimited,
    /// Missing, invalid, expired or revoked token (HTTP API).
    Unauthorized,
    /// Wrong username or password.
    BadCredentials,
    /// The thing already exists (e.g. a taken username).
    Conflict,
    /// A server-side failure; the request may be retried.
    Internal,
    /// The server is shutting down or a back-end is unreachable; retry later.
    Unavailable,
    /// No attachment with this id is visible to the caller (HTTP API only).
    NoSuchAttachment,
    /// An upload's `Content-Type` is not among the allowed types (HTTP API only).
    UnsupportedMediaType,
    /// An event's target message does not exist in the conversation, or is
    /// not a message an event can change (an event itself).
    NoSuchMessage,
    /// The edit or recall window of the target message has passed.
    TooLate,
    /// The sender is muted in this group or room for now (a moderator's
    /// decision); the message says until when.
    Muted,
    /// The user is banned from this group or room: they cannot join it or
    /// be added until a moderator lifts the ban.
    Banned,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadFrame,
        ErrorCode::UnknownType,
        ErrorCode::InvalidField,
        ErrorCode::BodyTooLarge,
        ErrorCode::NotMember,
        ErrorCode::NoSuchConversation,
        ErrorCode::NoSuchRoom,
        ErrorCode::NoSuchGroup,
        ErrorCode::NoSuchUser,
        ErrorCode::Forbidden,
        ErrorCode::GroupFull,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
        ErrorCode::BadCredentials,
        ErrorCode::Conflict,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::NoSuchAttachment,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::NoSuchMessage,
        ErrorCode::TooLate,
        ErrorCode::Muted,
        ErrorCode::Banned,
    ];

    /// The wire name, e.g. `"not_member"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::NotMember => "not_member",
            ErrorCode::NoSuchConversation => "no_such_conversation",
            ErrorCode::NoSuchRoom => "no_such_room",
            ErrorCode::NoSuchGroup => "no_such_group",
            ErrorCode::NoSuchUser => "no_such_user",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::GroupFull => "group_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NoSuchAttachment => "no_such_attachment",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NoSuchMessage => "no_such_message",
            ErrorCode::TooLate => "too_late",
            ErrorCode::Muted => "muted",
            ErrorCode::Banned => "banned",
        }
    }

    /// The HTTP status the business API answers with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::InvalidField => 400,
            ErrorCode::BodyTooLarge => 413,
            ErrorCode::Unauthorized | ErrorCode::BadCredentials => 401,
            ErrorCode::NotMember
            | ErrorCode::Forbidden
            | ErrorCode::TooLate
            | ErrorCode::Muted
            | ErrorCode::Banned => 403,
            ErrorCode::NoSuchConversation
            | ErrorCode::NoSuchRoom
            | ErrorCode::NoSuchGroup
            | ErrorCode::NoSuchUser
            | ErrorCode::NoSuchAttachment
            | ErrorCode::NoSuchMessage => 404,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::GroupFull | ErrorCode::Conflict => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), *code);
            assert!((400..600).contains(&code.http_status()));
        }
    }

    /// A distinct index per variant. The match is exhaustive, so a new
    /// variant does not compile until it gets the next index here, and then
    /// the test below fails until it is also in [`ErrorCode::ALL`] (and so in
    /// the spec test's view of the documentation).
    fn index(code: ErrorCode) -> usize {
        match code {
            ErrorCode::BadFrame => 0,
            ErrorCode::UnknownType => 1,
            ErrorCode::InvalidField => 2,
            ErrorCode::BodyTooLarge => 3,
            ErrorCode::NotMember => 4,
            ErrorCode::NoSuchConversation => 5,
            ErrorCode::NoSuchRoom => 6,
            ErrorCode::NoSuchGroup => 7,
            ErrorCode::NoSuchUser => 8,
            ErrorCode::Forbidden => 9,
            ErrorCode::GroupFull => 10,
            ErrorCode::RateLimited => 11,
            ErrorCode::Unauthorized => 12,
            ErrorCode::BadCredentials => 13,
            ErrorCode::Conflict => 14,
            ErrorCode::Internal => 15,
            ErrorCode::Unavailable => 16,
            ErrorCode::NoSuchAttachment => 17,
            ErrorCode::UnsupportedMediaType => 18,
            ErrorCode::NoSuchMessage => 19,
            ErrorCode::TooLate => 20,
            ErrorCode::Muted => 21,
            ErrorCode::Banned => 22,
        }
    }

    #[test]
    fn all_lists_every_variant_once() {
        const VARIANTS: usize = 23;
        let mut seen = [false; VARIANTS];
        for code in ErrorCode::ALL {
            assert!(!std::mem::replace(&mut seen[index(*code)], true), "{code} is listed twice");
        }
        assert!(seen.iter().all(|s| *s), "ErrorCode::ALL misses a variant");
    }
}
