//! Push notifications for recipients with no live connection.
//!
//! After a message is stored and fanned out, the recipients that have no
//! connection on any node are handed to a [`PushNotifier`] (mobile push,
//! e-mail, …) through a [`PushDispatcher`], which runs notifiers off the hot
//! path with bounded concurrency and drops work it cannot take rather than
//! queueing without bound. Push is a hint: the message is already stored and
//! reaches every device by sync.
//!
//! Push knows what was read: a recipient whose read id already covers the
//! message, or who muted the conversation, is not notified; each recipient
//! comes with their unread count in the conversation (for a badge); and a
//! read mark calls [`PushNotifier::read`], so the app can take back
//! notifications on the user's other devices.

use async_trait::async_trait;
use im_protocol::{ConversationId, Message, MessageId, UserId};

mod dispatcher;
#[cfg(feature = "webhook")]
mod webhook;

pub use dispatcher::{PushDispatcher, NOTIFY_TIMEOUT};
#[cfg(feature = "webhook")]
pub use webhook::WebhookPush;

/// Why a push notification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The notification could not be delivered (connect, timeout, I/O).
    #[error("push transport: {0}")]
    Transport(String),
    /// The push endpoint answered with a non-success HTTP status.
    #[error("push endpoint answered HTTP {0}")]
    Status(u16),
}

/// One user to notify about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PushRecipient {
    /// The user.
    pub user: UserId,
    /// Their unread messages in the message's conversation, this one
    /// included (for a badge).
    pub unread: u64,
}

impl PushRecipient {
    /// A recipient with `unread` unread messages.
    pub fn new(user: UserId, unread: u64) -> Self {
        Self { user, unread }
    }
}

/// Tells users about a message they could not receive live.
#[async_trait]
pub trait PushNotifier: Send + Sync + 'static {
    /// Notifies `users` about `message`.
    ///
    /// Called for recipients that have no live connection anywhere. Must not
    /// block for long: callers run it off the hot path with bounded
    /// concurrency (see [`PushDispatcher`]), and a slow notifier makes later
    /// notifications be dropped. The body is private; send it on only to a
    /// trusted endpoint.
    async fn notify(&self, users: &[UserId], message: &Message) -> Result<(), PushError>;

    /// Notifies `recipients` about `message`, with each one's unread count
    /// in the conversation. This is what the dispatcher calls; the default
    /// passes the users on to [`notify`](Self::notify).
    async fn notify_recipients(
        &self,
        recipients: &[PushRecipient],
        message: &Message,
    ) -> Result<(), PushError> {
        let users: Vec<UserId> = recipients.iter().map(|r| r.user).collect();
        self.notify(&users, message).await
    }

    /// `user` read `conv` up to `read` (on some device, or over HTTP):
    /// notifications for messages up to it can be withdrawn from their
    /// devices. The default does nothing.
    async fn read(&self, user: UserId, conv: ConversationId, read: MessageId) -> Result<(), PushError> {
        let _ = (user, conv, read);
        Ok(())
    }

    /// Whether [`read`](Self::read) does anything: when `false` (the
    /// default), the dispatcher does not even start a task for a read mark.
    fn wants_read_notices(&self) -> bool {
        false
    }
}

/// The default notifier: logs each notification at `info` (user ids,
/// conversation and message id; never the body).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogPush;

#[async_trait]
impl PushNotifier for LogPush {
    async fn notify(&self, users: &[UserId], message: &Message) -> Result<(), PushError> {
        tracing::info!(?users, conv = %message.conv, id = message.id, from = %message.from, "push notification");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use im_protocol::{ClientMsgId, ConversationId, GroupId};

    use super::*;

    pub(super) fn message() -> Message {
        Message::new(
            ConversationId::Group(GroupId(1)),
            5,
            UserId(3),
            ClientMsgId::new("c-1").unwrap(),
            "hello",
            1_700_000_000_000,
        )
    }

    #[tokio::test]
    async fn log_push_is_ok_and_ignores_reads() {
        LogPush.notify(&[UserId(7)], &message()).await.unwrap();
        LogPush.notify_recipients(&[PushRecipient::new(UserId(7), 2)], &message()).await.unwrap();
        LogPush.read(UserId(7), message().conv, 5).await.unwrap();
    }
}
