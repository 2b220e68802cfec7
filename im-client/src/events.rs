//! The typed event stream: messages, presence, membership and the
//! connection's life (after async-nats' connection events).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use im_protocol::{
    CloseCode, ConversationId, GroupId, MemberChangeKind, Message, MessageId, Presence, UserId,
};
use tokio::sync::mpsc;

use crate::error::StopReason;

/// Something the app should know about.
///
/// Per conversation, [`Event::Message`]s arrive exactly once per device and
/// in ascending id order, whether they came live, by sync, or — for this
/// device's own sends — from the `ack` (see [`Client::send`](crate::Client::send)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
// Messages are by far the most common event: boxing them would cost an
// allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A connection is up (the server's `hello` arrived). A sync follows.
    Connected {
        /// The node serving the connection.
        node: String,
        /// The signed-in user.
        user: UserId,
        /// This device's id (as sent, or assigned by the server).
        device: String,
    },
    /// The device has caught up: every message stored before the sync began
    /// has been delivered. Sent after the sync of every (re)connect, and after
    /// each catch-up sync that a gap in live delivery caused.
    Synced,
    /// A message, in order, exactly once.
    Message(Message),
    /// A user this user cares about went online or offline.
    Presence(Presence),
    /// A contact relation of this user changed (protocol version 2): a
    /// request arrived (`Pending`) or was sent from another device
    /// (`Requested`), was accepted, or ended (`None`: declined, cancelled,
    /// removed, or ended by a block).
    Contact {
        /// The other user.
        user: UserId,
        /// The relation now, from this user's side.
        state: crate::core::ContactState,
    },
    /// A group's membership changed.
    Member {
        /// The group.
        group: GroupId,
        /// The user added or removed.
        user: UserId,
        /// Added or removed.
        change: MemberChangeKind,
        /// Who made the change.
        by: UserId,
    },
    /// A fellow member started or stopped typing (protocol version 2). Show
    /// it until a `typing: false`: the client sends one by itself when a
    /// `true` is not refreshed within
    /// [`TYPING_EXPIRY_MS`](crate::core::limits::TYPING_EXPIRY_MS), when a
    /// message from that user arrives there, and at a disconnect.
    Typing {
        /// The conversation.
        conv: ConversationId,
        /// Who.
        user: UserId,
        /// Typing or stopped.
        typing: bool,
    },
    /// The user's read id in `conv` rose to `id` because another of their
    /// devices (or the app's backend over HTTP) marked it read — live, or
    /// learned from the inbox the client reads after each connection's first sync (protocol
    /// version 2): clear the badge up to `id`. Not sent for this device's
    /// own [`Client::mark_read`](crate::Client::mark_read).
    ReadUpTo {
        /// The conversation.
        conv: ConversationId,
        /// The user's read id now.
        id: MessageId,
    },
    /// A conversation's unread count changed (a message of another user
    /// arrived, or it was marked read here or on another device; protocol
    /// version 2 for marks elsewhere). The same state is readable at any
    /// moment with [`Client::read_state`](crate::Client::read_state).
    Unread {
        /// The conversation.
        conv: ConversationId,
        /// Messages of others not read yet.
        unread: u64,
        /// The user's read id.
        read: MessageId,
    },
    /// A fellow member of a direct chat or group read or received further
    /// (protocol version 2): show "delivered" for this user's messages up
    /// to `delivered` and "seen" up to `read`. At most about one per member
    /// and conversation per second; groups above the server's live-receipt
    /// size send none (ask with [`Client::receipts`](crate::Client::receipts)).
    Receipt {
        /// The conversation.
        conv: ConversationId,
        /// The member.
        user: UserId,
        /// Their read id.
        read: MessageId,
        /// Their delivered id (never below `read`).
        delivered: MessageId,
    },
    /// The connection ended. Unless a [`Event::Stopped`] follows, the client
    /// reconnects by itself.
    Disconnected {
        /// The server's close code, if it sent one.
        code: Option<CloseCode>,
        /// Why, for logs.
        reason: String,
    },
    /// The client will try to connect again after `delay`.
    Reconnecting {
        /// Consecutive attempt number, from 1.
        attempt: u32,
        /// Wait before the attempt (exponential backoff with jitter).
        delay: Duration,
        /// Why the last attempt failed, or why the connection ended (for
        /// logs and a "reconnecting…" line: e.g. an untrusted certificate).
        reason: String,
    },
    /// The client stopped for good; this is the last event.
    Stopped {
        /// Why.
        reason: StopReason,
    },
}

/// The stream of [`Event`]s of one client, ending after [`Event::Stopped`].
///
/// Read it steadily: it is bounded, and while it is full the client stops
/// reading its socket (back-pressure; the server eventually closes a reader
/// that slow with "reconnect and sync", which loses nothing). Dropping it
/// shuts the client down, as no message could be delivered any more.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: mpsc::Receiver<Event>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the client has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
