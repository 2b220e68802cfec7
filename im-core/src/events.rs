//! Events in a conversation's id sequence: reactions, edits, recalls and
//! system notices.
//!
//! An event is a [`Message`] of its own kind with its own id, so sync and
//! dedupe deliver it exactly like any message, in order. `reaction`,
//! `edit` and `recall` name the message they change in
//! [`Message::target`]; `system` notices (a member added, a group renamed)
//! stand alone. The server applies each change to its target when it
//! stores the event, so history pages show the current state of every
//! message ([`Message::edited`], [`Message::recalled`],
//! [`Message::reactions`]); a client that receives the event live or by
//! sync applies the same change with [`apply`] to update the message in
//! place.
//!
//! ```
//! use im_protocol::events::{self, Change};
//! use im_protocol::{ClientMsgId, ConversationId, GroupId, Message, UserId};
//!
//! let conv = ConversationId::Group(GroupId(42));
//! let msg = |id, from, kind: Option<&str>, content, target| Message {
//!     kind: kind.map(str::to_owned),
//!     content,
//!     target,
//!     ..Message::new(conv, id, UserId(from), ClientMsgId::new(format!("c{id}")).unwrap(), "", 0)
//! };
//! let mut hello = Message { body: "helo".into(), ..msg(1, 3, None, None, None) };
//! let thumbs = msg(2, 5, Some("reaction"), Some(serde_json::json!({"emoji": "👍"})), Some(1));
//! let fix = Message { body: "hello".into(), ..msg(3, 3, Some("edit"), None, Some(1)) };
//!
//! assert!(matches!(events::change_of(&thumbs), Some(Change::Reaction(_))));
//! assert!(events::apply(&mut hello, &thumbs));
//! assert!(events::apply(&mut hello, &fix));
//! assert_eq!((hello.body.as_str(), hello.edited), ("hello", Some(3)));
//! assert_eq!(hello.reactions[0].users, [UserId(5)]);
//! assert!(!events::apply(&mut hello, &fix), "applying an event twice changes nothing");
//!
//! let recall = msg(4, 3, Some("recall"), None, Some(1));
//! assert!(events::apply(&mut hello, &recall));
//! assert!(hello.is_recalled() && hello.body.is_empty() && hello.reactions.is_empty());
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::content::ContentError;
use crate::ids::{MessageId, UserId};
use crate::message::Message;

/// Kind of a reaction event: adds or removes one user's emoji on the target.
pub const REACTION: &str = "reaction";
/// Kind of an edit event: the target's new body (and content).
pub const EDIT: &str = "edit";
/// Kind of a recall event: empties the target for good (a tombstone).
pub const RECALL: &str = "recall";
/// Kind of a system notice (made by the server only).
pub const SYSTEM: &str = "system";

/// Longest reaction emoji (or short code), in bytes.
pub const MAX_EMOJI_LEN: usize = 32;
/// Most distinct emojis on one message.
pub const MAX_EMOJIS_PER_MESSAGE: usize = 50;
/// Most reactions (user and emoji pairs) on one message.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 5000;

/// Whether `kind` is one of the event kinds (`reaction`, `edit`, `recall`,
/// `system`), which change other messages or announce something instead
/// of saying something themselves.
pub fn is_event_kind(kind: &str) -> bool {
    matches!(kind, REACTION | EDIT | RECALL | SYSTEM)
}

/// Whether a message of `kind` counts as unread and may be the target of
/// an event: every kind but the event kinds.
pub fn is_countable(kind: &str) -> bool {
    !is_event_kind(kind)
}

/// The users who reacted to a message with one emoji (current state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// The emoji (or an app's short code such as `:party:`).
    pub emoji: String,
    /// Who reacted with it, ascending, each once; the count is the length.
    pub users: Vec<UserId>,
}

/// Content of a `reaction` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactionChange {
    /// The emoji: 1 to [`MAX_EMOJI_LEN`] bytes, no whitespace or control characters.
    pub emoji: String,
    /// `true` takes the sender's reaction back; absent or `false` adds it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

/// Content of an `edit` event (optional: an edit of the body alone has
/// none). The event's `body` is the target's new body, its `mentions` the
/// new mentions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// The new content object of the target's kind (`location` and app
    /// kinds; media content cannot be edited). Absent: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
}

/// Content of a `system` notice. Clients show the notice's `body` for an
/// `event` they do not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemNotice {
    /// What happened: one of the `SYSTEM_*` names of this module, or a
    /// later one.
    pub event: String,
    /// The user it happened to (added, removed, left, role changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    /// The user's role after the change (`member`, `admin`, `owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A name the notice is about (none of today's events uses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For a mute: until when (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// `system` event: the notice's sender added `user` to the group.
pub const SYSTEM_MEMBER_ADDED: &str = "member_added";
/// `system` event: the notice's sender removed `user` from the group.
pub const SYSTEM_MEMBER_REMOVED: &str = "member_removed";
/// `system` event: `user` (the sender) left the group.
pub const SYSTEM_MEMBER_LEFT: &str = "member_left";
/// `system` event: the sender changed `user`'s role to `role`.
pub const SYSTEM_ROLE_CHANGED: &str = "role_changed";
/// `system` event: the sender (a moderator) muted `user` until `until`.
pub const SYSTEM_MEMBER_MUTED: &str = "member_muted";
/// `system` event: the sender lifted `user`'s mute.
pub const SYSTEM_MEMBER_UNMUTED: &str = "member_unmuted";
/// `system` event: the sender removed `user` from the room (a kick; in a
/// group that is [`SYSTEM_MEMBER_REMOVED`]).
pub const SYSTEM_MEMBER_KICKED: &str = "member_kicked";
/// `system` event: the sender banned `user` (and removed them, if a member).
pub const SYSTEM_MEMBER_BANNED: &str = "member_banned";
/// `system` event: the sender lifted `user`'s ban.
pub const SYSTEM_MEMBER_UNBANNED: &str = "member_unbanned";

/// What an event does, read from a message of an event kind.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// Adds or removes the sender's reaction on the target.
    Reaction(ReactionChange),
    /// Replaces the target's body, mentions and (when given) content.
    Edit(Edit),
    /// Empties the target for good.
    Recall,
    /// Announces something; changes no message.
    System(SystemNotice),
}

/// Reads an event kind's content; `None` for a kind that is not an event.
pub(crate) fn parse(kind: &str, content: Option<&Value>) -> Option<Result<Change, ContentError>> {
    let shape = |e: serde_json::Error| ContentError(format!("content of kind {kind}: {e}"));
    let needs = |what: &str| ContentError(format!("kind {kind} needs a content object ({what})"));
    Some(match kind {
        REACTION => match content {
            None => Err(needs("emoji")),
            Some(c) => serde_json::from_value::<ReactionChange>(c.clone())
                .map_err(shape)
                .and_then(|r| check_emoji(&r.emoji).map(|()| Change::Reaction(r))),
        },
        EDIT => match content {
            None => Ok(Change::Edit(Edit::default())),
            Some(c) => match serde_json::from_value::<Edit>(c.clone()).map_err(shape) {
                Ok(Edit { content: Some(inner) }) if !inner.is_object() => {
                    Err(ContentError("an edit's content must be a JSON object".into()))
                }
                other => other.map(Change::Edit),
            },
        },
        RECALL => match content {
            None => Ok(Change::Recall),
            Some(_) => Err(ContentError("a recall has no content object".into())),
        },
        SYSTEM => match content {
            None => Err(needs("event")),
            Some(c) => serde_json::from_value::<SystemNotice>(c.clone()).map_err(shape).map(Change::System),
        },
        _ => return None,
    })
}

fn check_emoji(emoji: &str) -> Result<(), ContentError> {
    if emoji.is_empty()
        || emoji.len() > MAX_EMOJI_LEN
        || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ContentError(format!(
            "emoji must be 1 to {MAX_EMOJI_LEN} bytes without whitespace or control characters"
        )));
    }
    Ok(())
}

/// What `event` does, if it is an event with a well-formed content.
pub fn change_of(event: &Message) -> Option<Change> {
    parse(event.kind(), event.content.as_ref()).and_then(Result::ok)
}

/// Applies `event` (a `reaction`, `edit` or `recall` naming `target`) to
/// `target` as the server did when it stored the event, and returns
/// whether anything changed. Idempotent and safe in any order a device
/// may see events in: an edit older than the applied one, any change to a
/// recalled message, and events for another message change nothing.
pub fn apply(target: &mut Message, event: &Message) -> bool {
    if event.target != Some(target.id) || event.conv != target.conv || target.is_recalled() {
        return false;
    }
    match change_of(event) {
        Some(Change::Reaction(r)) => react(target, event.from, &r),
        Some(Change::Edit(edit)) => {
            if target.edited.is_some_and(|e| e >= event.id) {
                return false;
            }
            target.body.clone_from(&event.body);
            target.mentions.clone_from(&event.mentions);
            if let Some(content) = edit.content {
                target.content = Some(content);
            }
            target.edited = Some(event.id);
            true
        }
        Some(Change::Recall) => {
            recall(target, event.id);
            true
        }
        Some(Change::System(_)) | None => false,
    }
}

/// Empties `message` for good as recall event `by` does: no body,
/// content, mentions, reply or reactions are left, only who sent it when.
pub fn recall(message: &mut Message, by: MessageId) {
    message.body.clear();
    message.kind = None;
    message.content = None;
    message.mentions.clear();
    message.reply_to = None;
    message.reactions.clear();
    message.edited = None;
    message.recalled = Some(by);
}

fn react(target: &mut Message, user: UserId, r: &ReactionChange) -> bool {
    let pos = target.reactions.iter().position(|x| x.emoji == r.emoji);
    if r.remove {
        let Some(i) = pos else { return false };
        let users = &mut target.reactions[i].users;
        let Ok(at) = users.binary_search(&user) else { return false };
        users.remove(at);
        if users.is_empty() {
            target.reactions.remove(i);
        }
        return true;
    }
    let total: usize = target.reactions.iter().map(|x| x.users.len()).sum();
    if total >= MAX_REACTIONS_PER_MESSAGE {
        return false;
    }
    match pos {
        Some(i) => {
            let users = &mut target.reactions[i].users;
            match users.binary_search(&user) {
                Ok(_) => false,
                Err(at) => {
                    users.insert(at, user);
                    true
                }
            }
        }
        None if target.reactions.len() >= MAX_EMOJIS_PER_MESSAGE => false,
        None => {
            target.reactions.push(Reaction { emoji: r.emoji.clone(), users: vec![user] });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{ClientMsgId, ConversationId, GroupId};

    fn msg(
        id: MessageId,
        from: u64,
        kind: Option<&str>,
        content: Option<Value>,
        target: Option<MessageId>,
    ) -> Message {
        Message {
            kind: kind.map(str::to_owned),
            content,
            target,
            ..Message::new(
                ConversationId::Group(GroupId(1)),
                id,
                UserId(from),
                ClientMsgId::new(format!("c{id}")).unwrap(),
                "",
                0,
            )
        }
    }

    fn reaction(id: MessageId, from: u64, emoji: &str, remove: bool) -> Message {
        msg(id, from, Some(REACTION), Some(json!({"emoji": emoji, "remove": remove})), Some(1))
    }

    #[test]
    fn reactions_add_once_remove_and_keep_first_use_order() {
        let mut m = msg(1, 3, None, None, None);
        assert!(apply(&mut m, &reaction(2, 9, "👍", false)));
        assert!(apply(&mut m, &reaction(3, 4, "🎉", false)));
        assert!(apply(&mut m, &reaction(4, 4, "👍", false)));
        assert!(!apply(&mut m, &reaction(5, 4, "👍", false)), "a second add is no change");
        let summary: Vec<(&str, Vec<u64>)> =
            m.reactions.iter().map(|r| (r.emoji.as_str(), r.users.iter().map(|u| u.0).collect())).collect();
        assert_eq!(summary, [("👍", vec![4, 9]), ("🎉", vec![4])]);
        assert!(apply(&mut m, &reaction(6, 4, "🎉", true)));
        assert!(!apply(&mut m, &reaction(7, 4, "🎉", true)));
        assert_eq!(m.reactions.len(), 1, "an emoji nobody uses any more is gone");
    }

    #[test]
    fn emoji_caps_hold() {
        let mut m = msg(1, 3, None, None, None);
        for i in 0..MAX_EMOJIS_PER_MESSAGE as u64 {
            assert!(apply(&mut m, &reaction(2 + i, 9, &format!(":e{i}:"), false)));
        }
        assert!(!apply(&mut m, &reaction(100, 9, ":one-more:", false)));
        assert!(apply(&mut m, &reaction(101, 10, ":e0:", false)), "existing emojis still take users");
    }

    #[test]
    fn edits_apply_newest_only_and_recall_wins_over_everything() {
        let mut m = Message { body: "v1".into(), mentions: vec![UserId(7)], ..msg(1, 3, None, None, None) };
        let e5 = Message { body: "v5".into(), ..msg(5, 3, Some(EDIT), None, Some(1)) };
        let e4 = Message { body: "v4".into(), ..msg(4, 3, Some(EDIT), None, Some(1)) };
        assert!(apply(&mut m, &e5));
        assert!(!apply(&mut m, &e4), "an older edit arriving late is ignored");
        assert_eq!((m.body.as_str(), m.edited, m.mentions.len()), ("v5", Some(5), 0));
        let other = Message { target: Some(2), ..e5.clone() };
        assert!(!apply(&mut m, &other));
        assert!(apply(&mut m, &msg(6, 3, Some(RECALL), None, Some(1))));
        assert_eq!(m.recalled, Some(6));
        assert!(!apply(&mut m, &Message { id: 7, ..e5 }), "a recalled message stays empty");
        assert!(!apply(&mut m, &reaction(8, 4, "👍", false)));
    }

    #[test]
    fn event_contents_are_checked() {
        assert!(parse(REACTION, Some(&json!({"emoji": "👍"}))).unwrap().is_ok());
        for bad in [
            json!({}),
            json!({"emoji": ""}),
            json!({"emoji": "a b"}),
            json!({"emoji": "x".repeat(33)}),
            json!({"emoji": "👍", "size": 2}),
        ] {
            assert!(parse(REACTION, Some(&bad)).unwrap().is_err(), "{bad}");
        }
        assert!(parse(REACTION, None).unwrap().is_err());
        assert!(parse(EDIT, None).unwrap().is_ok());
        assert!(parse(EDIT, Some(&json!({"content": {"lat": 1, "lon": 2}}))).unwrap().is_ok());
        assert!(parse(EDIT, Some(&json!({"content": 3}))).unwrap().is_err());
        assert!(parse(EDIT, Some(&json!({"body": "x"}))).unwrap().is_err());
        assert!(parse(RECALL, Some(&json!({}))).unwrap().is_err());
        assert!(parse(SYSTEM, Some(&json!({"event": "member_added", "user": 5}))).unwrap().is_ok());
        assert!(parse("image", None).is_none());
    }
}
