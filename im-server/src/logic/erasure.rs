//! Erasing a user for the application's backend (`DELETE
//! /api/v1/server/users/{id}`): tokens revoked, messages kept or recalled
//! by policy, groups handed on, every membership and relation ended, and
//! the account removed. See `docs/embedding.md` §10 for what is left.

use im_protocol::events::{self, ReactionChange};
use im_protocol::{
    ClientMsgId, ContactState, ConversationId, ErrorCode, GroupId, Message, MessageId, UserId,
};
use serde::Serialize;

use super::messages::{Draft, Settle};
use super::Logic;
use crate::error::{Error, Result};
use crate::model::Role;
use crate::store::{DirectoryErasure, MessageErasure};
use crate::time::now_ms;

/// What happens to the messages of a user who is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasedMessages {
    /// They stay, under the erased user's id (which no account has any more).
    Keep,
    /// Each is recalled (a `recall` event in its conversation's sequence:
    /// its content gone from storage, its edits scrubbed, attachments only
    /// it used deleted) and the user's reactions are taken back.
    Recall,
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// The erased user.
    pub user_id: UserId,
    /// Messages recalled (0 when kept).
    pub messages_recalled: u64,
    /// Reactions taken back.
    pub reactions_removed: u64,
    /// Groups the user owned and handed on: the group and its new owner.
    pub groups_handed_on: Vec<(GroupId, UserId)>,
    /// Groups the user was a member of (handed-on ones included).
    pub groups_left: usize,
    /// Rooms the user had joined.
    pub rooms_left: usize,
    /// Contacts and contact requests ended.
    pub contacts_removed: usize,
}

/// How many of the user's messages one [`MessageErasure::sent_by`] page holds.
const PAGE: usize = 200;

impl Logic {
    /// Erases `user`: every token of theirs is revoked and their
    /// connections closed on every node; their messages are kept or
    /// recalled (`messages`); each group they owned passes to its admin
    /// with the lowest user id, else its member with the lowest id; they
    /// leave every group (with the usual `member` push and notice) and
    /// room; their contacts hear the relation end; their read state is
    /// forgotten; and the account is removed, its username free again.
    /// Then tokens are revoked once more (a login made while the erasure
    /// ran is refused from now on) and, with `Recall`, a last pass recalls
    /// what such a session sent meanwhile. A repeated call after a failure
    /// part-way resumes (recalls already made are skipped); once the
    /// account is gone it answers `no_such_user`. One erasure of a user at
    /// a time per node (`conflict` for a second).
    pub async fn erase_user(&self, user: UserId, messages: ErasedMessages) -> Result<Erasure> {
        let unavailable = |what: &str| Error::new(ErrorCode::Unavailable, format!("this server's {what}"));
        let directory =
            self.svc.directory.user_erasure().ok_or_else(|| unavailable("directory cannot erase users"))?;
        let stored = self
            .svc
            .messages
            .message_erasure()
            .ok_or_else(|| unavailable("message store cannot erase users' data"))?;
        let _running = ErasureGuard::take(&self.erasing, user)?;
        let account = self.user(user).await?;
        self.revoke_all_tokens(user).await?;
        let mut done = Erasure {
            user_id: user,
            messages_recalled: 0,
            reactions_removed: 0,
            groups_handed_on: Vec::new(),
            groups_left: 0,
            rooms_left: 0,
            contacts_removed: 0,
        };
        if messages == ErasedMessages::Recall {
            self.recall_all(user, stored, &mut done).await?;
        }
        self.leave_groups(user, directory, &mut done).await?;
        for room in self.svc.directory.rooms_of(user).await? {
            self.svc.directory.leave_room(room, user).await?;
            self.announce_left(room, user).await;
            done.rooms_left += 1;
        }
        if let Some(contacts) = self.svc.directory.contacts() {
            for c in contacts.contacts(user).await? {
                contacts.remove_contact(user, c.user).await?;
                self.tell_contact(user, c.user, ContactState::None).await;
                done.contacts_removed += 1;
            }
            for other in contacts.blocked_either_way(user).await? {
                self.block_cache.forget(user, other);
            }
        }
        stored.forget_reads(user).await?;
        directory.erase_user(user).await?;
        // A session opened while this ran (a login, a fresh app token) is
        // refused from now on, and its connections close; what it sent is
        // recalled by a last pass.
        self.svc
            .auth
            .revoke_all(user, now_ms())
            .await
            .map_err(|e| Error::new(e.error_code(), e.to_string()))?;
        self.publish(crate::broker::Event::UserDisconnected { user }).await;
        if messages == ErasedMessages::Recall {
            self.recall_all(user, stored, &mut done).await?;
        }
        self.display_names.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
        if let Some(subject) = account.username.strip_prefix('~') {
            self.forget_subject(subject);
        }
        // A direct chat with the user is no longer one to write to (on this
        // node; see docs/embedding.md §10 for the others).
        self.known_directs.lock().unwrap_or_else(|p| p.into_inner()).retain(|&(a, b)| a != user && b != user);
        tracing::info!(%user, ?messages, recalled = done.messages_recalled, "user erased");
        Ok(done)
    }

    /// Recalls every message `user` sent and takes back their reactions.
    async fn recall_all(&self, user: UserId, stored: &dyn MessageErasure, done: &mut Erasure) -> Result<()> {
        let mut after = None;
        loop {
            let page = stored.sent_by(user, after, PAGE).await?;
            let Some(&last) = page.last() else { return Ok(()) };
            after = Some(last);
            let mut to_recall = Vec::new();
            for (conv, id) in page {
                let Some(message) = self.message_at(conv, id).await? else { continue };
                if message.from != user {
                    continue;
                }
                match message.kind() {
                    events::REACTION if self.withdraw_reaction(user, &message).await? => {
                        done.reactions_removed += 1;
                    }
                    kind if events::is_countable(kind) && !message.is_recalled() => to_recall.push(message),
                    _ => {}
                }
            }
            done.messages_recalled += self.recall_for_erasure(user, &to_recall).await?;
        }
    }

    /// Stores a recall of each of `messages` (all from `user`), whatever
    /// the recall window, as sends would (live, by sync, to the feed).
    /// How many it recalled.
    async fn recall_for_erasure(&self, user: UserId, messages: &[Message]) -> Result<u64> {
        let recalls = messages.iter().map(|m| {
            let attachment = m.content.as_ref().and_then(|c| c.get("attachment")).and_then(|a| a.as_str());
            ErasureEvent {
                conv: m.conv,
                what: "recall",
                about: m.id,
                draft: Draft { kind: Some(events::RECALL.into()), target: Some(m.id), ..Draft::default() },
                settle: Settle { reference: None, release: attachment.map(|a| (a.to_owned(), m.id)) },
            }
        });
        self.store_erasure_events(user, recalls.collect()).await?;
        Ok(messages.len() as u64)
    }

    /// Stores the erasure's `events` from `user`: submitted together, so
    /// they share the store's group commits, then completed in order. Each
    /// has the fixed cmid `erase-<what>-<about>`, so a repeated erasure
    /// stores it once; one whose cmid turns out to be a message of the
    /// user's own (a client may pick any cmid) is stored again under a
    /// fresh one.
    async fn store_erasure_events(&self, user: UserId, events: Vec<ErasureEvent>) -> Result<()> {
        let mut pending = Vec::with_capacity(events.len());
        for e in &events {
            let cmid = erasure_cmid(&format!("erase-{}-{}", e.what, e.about))?;
            pending.push(
                self.submit_checked(user, None, e.conv, cmid, e.draft.clone(), e.settle.clone()).await?,
            );
        }
        let mut claimed = Vec::new();
        for (e, completes) in events.iter().zip(pending) {
            let sent = completes.await?;
            let stored = &sent.appended.message;
            // The store's answer is this event only if kind and target match.
            let own = stored.kind() == e.draft.kind.as_deref().unwrap_or_default()
                && stored.target == e.draft.target;
            if sent.appended.duplicate && !own {
                claimed.push(e);
            }
        }
        for e in claimed {
            let fresh: u64 = rand::random();
            let cmid = erasure_cmid(&format!("erase-{}-{}-{fresh:016x}", e.what, e.about))?;
            self.submit_checked(user, None, e.conv, cmid, e.draft.clone(), e.settle.clone()).await?.await?;
        }
        Ok(())
    }

    /// Takes back the reaction of `user`'s reaction event `event`, if its
    /// target still has it; whether it did.
    async fn withdraw_reaction(&self, user: UserId, event: &Message) -> Result<bool> {
        let (Some(target), Some(content)) = (event.target, event.content.clone()) else { return Ok(false) };
        let Ok(change) = serde_json::from_value::<ReactionChange>(content) else { return Ok(false) };
        if change.remove {
            return Ok(false);
        }
        let conv = event.conv;
        let Some(message) = self.message_at(conv, target).await? else { return Ok(false) };
        let still = message.reactions.iter().any(|r| r.emoji == change.emoji && r.users.contains(&user));
        if !still || message.is_recalled() {
            return Ok(false);
        }
        let content =
            serde_json::to_value(ReactionChange { emoji: change.emoji, remove: true }).unwrap_or_default();
        let withdrawal = ErasureEvent {
            conv,
            what: "unreact",
            about: event.id,
            draft: Draft {
                kind: Some(events::REACTION.into()),
                content: Some(content),
                target: Some(target),
                ..Draft::default()
            },
            settle: Settle::default(),
        };
        self.store_erasure_events(user, vec![withdrawal]).await?;
        Ok(true)
    }

    /// Message `id` of `conv`, if stored.
    async fn message_at(&self, conv: ConversationId, id: MessageId) -> Result<Option<Message>> {
        let Some(before) = id.checked_sub(1) else { return Ok(None) };
        Ok(self.svc.messages.after(conv, before, 1).await?.pop().filter(|m| m.id == id))
    }

    /// Hands on the groups `user` owns and leaves every group.
    async fn leave_groups(
        &self,
        user: UserId,
        directory: &dyn DirectoryErasure,
        done: &mut Erasure,
    ) -> Result<()> {
        let dir = &self.svc.directory;
        for group in dir.groups_of(user).await? {
            done.groups_left += 1;
            if dir.member_role(group, user).await? == Some(Role::Owner) {
                let members = dir.members(group).await?;
                let heir =
                    |role| members.iter().filter(|m| m.user != user && m.role == role).map(|m| m.user).min();
                let Some(heir) = heir(Role::Admin).or_else(|| heir(Role::Member)) else {
                    continue; // alone in it: the directory's erasure ends the membership
                };
                if directory.transfer_ownership(group, heir).await? {
                    self.group_notice(group, user, events::SYSTEM_ROLE_CHANGED, heir, Some(Role::Owner))
                        .await;
                    done.groups_handed_on.push((group, heir));
                }
            }
            match self.remove_member(user, group, user).await {
                Ok(()) => {}
                Err(e) if e.code == ErrorCode::NotMember => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// An event the erasure stores: its draft, about message `about` of
/// `conv` (`what` names it in the cmid).
struct ErasureEvent {
    conv: ConversationId,
    what: &'static str,
    about: MessageId,
    draft: Draft,
    settle: Settle,
}

/// A client message id the erasure makes (`erase-…`).
fn erasure_cmid(text: &str) -> Result<ClientMsgId> {
    ClientMsgId::new(text).map_err(|e| Error::new(ErrorCode::Internal, format!("erasure cmid: {e}")))
}

/// Marks a user as being erased on this node while it lives.
struct ErasureGuard<'a> {
    running: &'a std::sync::Mutex<std::collections::HashSet<UserId>>,
    user: UserId,
}

impl<'a> ErasureGuard<'a> {
    /// Takes the mark, or `conflict` if another erasure of `user` runs here.
    fn take(running: &'a std::sync::Mutex<std::collections::HashSet<UserId>>, user: UserId) -> Result<Self> {
        if !running.lock().unwrap_or_else(|p| p.into_inner()).insert(user) {
            return Err(Error::new(ErrorCode::Conflict, format!("user {user} is being erased")));
        }
        Ok(ErasureGuard { running, user })
    }
}

impl Drop for ErasureGuard<'_> {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.user);
    }
}
