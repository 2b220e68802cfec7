//! [`Hooks`]: the application's say in what happens — allow or deny a
//! connection, allow, reject or rewrite a message before it is stored,
//! and hear of every stored message, join, leave and presence change.
//!
//! Every method has a default that allows and ignores, so an embedder
//! implements only what it needs:
//!
//! ```
//! use async_trait::async_trait;
//! use im_protocol::{ConversationId, UserId};
//! use im_server::hooks::{Hooks, Verdict};
//! use im_server::logic::messages::Draft;
//!
//! /// Refuses one word and masks another.
//! struct Moderation;
//!
//! #[async_trait]
//! impl Hooks for Moderation {
//!     async fn before_send(&self, _from: UserId, _conv: ConversationId, draft: &mut Draft) -> Verdict {
//!         if draft.body.contains("spam") {
//!             return Verdict::Deny("no advertising here".into());
//!         }
//!         draft.body = draft.body.replace("darn", "d**n");
//!         Verdict::Allow
//!     }
//! }
//! ```
//!
//! Hooks run in the request's path (except [`Hooks::after_store`] and the
//! notifications, which run on a task of their own): a slow hook slows
//! what it guards, so keep them fast or bound them yourself.

use std::sync::Arc;

use async_trait::async_trait;
use im_protocol::{ConversationId, Message, PresenceStatus, UserId};
use tokio::sync::mpsc;

use crate::logic::messages::Draft;

/// Stored messages and notifications waiting for [`Hooks`]; beyond this
/// many, further ones are dropped (and counted in the log) rather than
/// holding up delivery.
pub const NOTIFY_QUEUE: usize = 8192;

/// A hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Refuse, with a reason the caller is told (a connection: HTTP 403
    /// before the upgrade; a message: an `error` frame `forbidden`).
    Deny(String),
    /// Cannot say now (e.g. a webhook that is down, configured to refuse
    /// then): the caller is told to retry (a connection: HTTP 503, which
    /// clients retry; a message: an `error` frame `unavailable`, which the
    /// outbox resends).
    Unavailable(String),
}

/// What the application is asked and told. See the module docs.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// A signed-in user opens a WebSocket from `device`.
    async fn on_connect(&self, _user: UserId, _device: &str) -> Verdict {
        Verdict::Allow
    }

    /// `from` sends `draft` to `conv` (a member: access is checked first).
    /// The hook may change the draft; the server checks the result as it
    /// checks any message. A resend (same `cmid`, after a lost ack) is
    /// asked again; if the first was stored, the store answers with the
    /// original whatever the hook does to the resend — unless it denies
    /// it, which the sender then sees, so keep verdicts stable per message.
    async fn before_send(&self, _from: UserId, _conv: ConversationId, _draft: &mut Draft) -> Verdict {
        Verdict::Allow
    }

    /// A message was stored (once per message, not for duplicates), in
    /// each conversation's id order as this node published it.
    async fn after_store(&self, _message: &Message) {}

    /// `user` joined `conv` (a room joined, a group member added).
    async fn on_join(&self, _user: UserId, _conv: ConversationId) {}

    /// `user` left `conv` (a room left, a group member removed or gone).
    async fn on_leave(&self, _user: UserId, _conv: ConversationId) {}

    /// `user`'s presence changed.
    async fn on_presence(&self, _user: UserId, _status: PresenceStatus) {}
}

/// The default: every method's default.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// Something the hooks are told after the fact.
#[derive(Debug)]
pub(crate) enum Notice {
    Stored(Box<Message>),
    Joined(UserId, ConversationId),
    Left(UserId, ConversationId),
    Presence(UserId, PresenceStatus),
}

/// Hands notices to the hooks on one task, in the order they happen, so a
/// slow hook never holds up delivery.
#[derive(Clone)]
pub(crate) struct Notifier {
    tx: mpsc::Sender<Notice>,
}

impl Notifier {
    /// Starts the task that tells `hooks`.
    pub(crate) fn start(hooks: Arc<dyn Hooks>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Notice>(NOTIFY_QUEUE);
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                match n {
                    Notice::Stored(m) => hooks.after_store(&m).await,
                    Notice::Joined(u, c) => hooks.on_join(u, c).await,
                    Notice::Left(u, c) => hooks.on_leave(u, c).await,
                    Notice::Presence(u, s) => hooks.on_presence(u, s).await,
                }
            }
        });
        Notifier { tx }
    }

    /// Queues `notice`; dropped (logged) when the hooks are too far behind.
    pub(crate) fn tell(&self, notice: Notice) {
        if let Err(mpsc::error::TrySendError::Full(n)) = self.tx.try_send(notice) {
            tracing::warn!(?n, "hooks are {NOTIFY_QUEUE} notices behind: one dropped");
        }
    }
}
