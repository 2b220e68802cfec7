//! Events in a conversation's sequence: the checks a reaction, edit or
//! recall must pass before [`Logic::send`] stores it, and the system
//! notices the server posts itself (see `docs/rich-messages.md`).

use im_protocol::events::{self, Change, SystemNotice};
use im_protocol::{ClientMsgId, ConversationId, ErrorCode, Message, MessageId, UserId};

use super::messages::{Draft, Settle};
use super::Logic;
use crate::error::{Error, Result};
use crate::time::now_ms;

/// What a checked event changes: its target as it was, and for a recall
/// the attachment only that message may have held.
pub(super) struct CheckedEvent {
    /// The target message before the event.
    pub target: Message,
}

impl CheckedEvent {
    /// The attachment the target's content names, if any.
    pub fn attachment(&self) -> Option<String> {
        self.target.content.as_ref()?.get("attachment")?.as_str().map(str::to_owned)
    }
}

impl Logic {
    /// Checks an event draft (`kind` is an event kind) from `from` in
    /// `conv`: a target that is a message of the conversation (not an
    /// event, not recalled); for an edit, the sender's own message within
    /// the edit window and a new content of the target's kind; for a
    /// recall, the sender's own message within the recall window, or any
    /// message for a group's owners and admins; for a reaction, room left
    /// on the message. The caller has checked access and the content's shape.
    pub(super) async fn check_event(
        &self,
        from: UserId,
        conv: ConversationId,
        change: &Change,
        draft: &Draft,
    ) -> Result<CheckedEvent> {
        let kind = draft.kind.as_deref().unwrap_or_default();
        let Some(id) = draft.target else {
            return Err(Error::new(ErrorCode::InvalidField, format!("a {kind} needs a target")));
        };
        if draft.reply_to.is_some() {
            return Err(Error::new(ErrorCode::InvalidField, format!("a {kind} cannot reply to a message")));
        }
        if !draft.mentions.is_empty() && !matches!(change, Change::Edit(_)) {
            return Err(Error::new(ErrorCode::InvalidField, format!("a {kind} has no mentions")));
        }
        let target = self.target_message(conv, id).await?;
        let now = now_ms();
        let own = target.from == from;
        let age = now.saturating_sub(target.ts);
        match change {
            Change::Reaction(r) => {
                let summary = &target.reactions;
                let known = summary.iter().any(|x| x.emoji == r.emoji);
                let total: usize = summary.iter().map(|x| x.users.len()).sum();
                if !r.remove
                    && ((!known && summary.len() >= events::MAX_EMOJIS_PER_MESSAGE)
                        || total >= events::MAX_REACTIONS_PER_MESSAGE)
                {
                    return Err(Error::new(
                        ErrorCode::InvalidField,
                        format!(
                            "message {id} has the most reactions allowed ({} emojis, {} reactions)",
                            events::MAX_EMOJIS_PER_MESSAGE,
                            events::MAX_REACTIONS_PER_MESSAGE
                        ),
                    ));
                }
            }
            Change::Edit(edit) => {
                if !own {
                    return Err(Error::new(ErrorCode::Forbidden, "only its sender can edit a message"));
                }
                if age > self.cfg.limits.edit_window_ms {
                    return Err(too_late("edit", id, self.cfg.limits.edit_window_ms));
                }
                if let Some(content) = &edit.content {
                    let target_kind = target.kind();
                    if matches!(
                        target_kind,
                        im_protocol::content::TEXT | "image" | "file" | "audio" | "video"
                    ) {
                        return Err(Error::new(
                            ErrorCode::InvalidField,
                            format!("the content of a {target_kind} message cannot be edited (its body can)"),
                        ));
                    }
                    im_protocol::Content::from_parts(target_kind, Some(content))
                        .map_err(|e| Error::new(ErrorCode::InvalidField, e.0))?;
                }
            }
            Change::Recall => {
                // Moderators recall any message at any time; senders their own within the window.
                let in_window = own && age <= self.cfg.limits.recall_window_ms;
                if !in_window && !self.moderates(from, conv).await? {
                    if !own {
                        return Err(Error::new(
                            ErrorCode::Forbidden,
                            "only its sender, or a group's owner or admin, can recall a message",
                        ));
                    }
                    return Err(too_late("recall", id, self.cfg.limits.recall_window_ms));
                }
            }
            Change::System(_) => {
                return Err(Error::new(ErrorCode::InvalidField, "system notices are made by the server"));
            }
            _ => return Err(Error::new(ErrorCode::InvalidField, format!("unknown event kind {kind}"))),
        }
        Ok(CheckedEvent { target })
    }

    /// Message `id` of `conv`, if it is one an event may change.
    async fn target_message(&self, conv: ConversationId, id: MessageId) -> Result<Message> {
        let found = match id {
            0 => None,
            _ => self.svc.messages.after(conv, id - 1, 1).await?.pop().filter(|m| m.id == id),
        };
        let Some(target) = found else {
            return Err(Error::new(ErrorCode::NoSuchMessage, format!("no message {id} in {conv}")));
        };
        if target.is_event() {
            return Err(Error::new(
                ErrorCode::NoSuchMessage,
                format!("message {id} of {conv} is a {} event, which events cannot change", target.kind()),
            ));
        }
        if target.is_recalled() {
            return Err(Error::new(ErrorCode::NoSuchMessage, format!("message {id} of {conv} was recalled")));
        }
        Ok(target)
    }

    /// Posts a `system` notice from `actor` into `conv`'s sequence, when
    /// [`ServerConfig::system_notices`](crate::ServerConfig::system_notices)
    /// is on: stored, delivered live and by sync, never pushed. A failure
    /// is logged, not returned: the change it tells of has happened.
    pub(super) async fn post_notice(
        &self,
        conv: ConversationId,
        actor: UserId,
        notice: SystemNotice,
        body: String,
    ) {
        if !self.cfg.system_notices {
            return;
        }
        let cmid = notice_cmid();
        let draft = Draft {
            body,
            kind: Some(events::SYSTEM.into()),
            content: Some(serde_json::to_value(&notice).unwrap_or_default()),
            ..Draft::default()
        };
        let stored =
            async { self.submit_checked(actor, None, conv, cmid, draft, Settle::default()).await?.await };
        if let Err(e) = stored.await {
            tracing::warn!(%conv, event = %notice.event, error = %e, "storing a system notice failed");
        }
    }
}

fn too_late(what: &str, id: MessageId, window_ms: u64) -> Error {
    Error::new(
        ErrorCode::TooLate,
        format!("message {id} is older than the {what} window ({} s)", window_ms / 1000),
    )
}

/// A fresh client message id for a notice (`sys-` and 32 random hex digits).
fn notice_cmid() -> ClientMsgId {
    let bits: [u8; 16] = rand::random();
    let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
    ClientMsgId::new(format!("sys-{hex}")).expect("sys- and 32 hex digits is a valid cmid")
}
