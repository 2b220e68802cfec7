//! # im-client — the `im` chat client
//!
//! A [`Client`] is a cheap, clonable handle; a background task (the driver)
//! owns the WebSocket, and everything the app should know arrives on one
//! typed [`Events`] stream. The client does the work the protocol asks of
//! it, so the app does not have to:
//!
//! * **Finding a node** — give it a dispatcher URL (`http://…/dispatch`) and
//!   it asks for a node before every reconnect that the close code sends
//!   back to the dispatcher, or a fixed WebSocket URL (`ws://…/ws`).
//! * **TLS** — `wss://` and `https://` with rustls (the default `tls`
//!   feature): the Mozilla root store by default, private CAs and a client
//!   certificate through [`tls::TlsOptions`]. Without the feature the
//!   client is `ws://`-only and links no TLS stack.
//! * **Heartbeat** — it pings every heartbeat interval and treats a
//!   connection that says nothing for `heartbeat_interval + pong_timeout` as
//!   dead, also when TCP reports nothing.
//! * **Delay-retry reconnect** — exponential backoff with jitter (the
//!   `backoff` crate), obeying the server's close codes
//!   ([`im_protocol::CloseCode::reaction`]): same node, back to the dispatcher,
//!   or stop ([`Event::Stopped`]).
//! * **Incremental sync** — per-conversation `cur_max_message_id` cursors,
//!   kept in a [`CursorStore`] ([`FileCursorStore`] survives restarts); on
//!   every (re)connect it syncs page by page, then emits [`Event::Synced`].
//!   Every message reaches the app exactly once per device, in order, live or
//!   by sync: duplicates are dropped by id, and a message that arrives ahead
//!   of a gap is held until a sync fills the gap.
//! * **Idempotent send** — [`Client::send`] resolves with the server's id once
//!   the message is stored; unacknowledged sends are resent after a
//!   reconnect with the same client message id, so nothing is lost or
//!   stored twice. The device's own messages also appear in the event
//!   stream, at their place, so the stream is each conversation's full log.
//!   Sends are paced under the server's announced rate limit.
//!   [`Client::send_detailed`] also tells whether a resend was deduplicated.
//! * **Protocol version** — it asks for the newest version (2) and falls
//!   back to an older one when a server refuses it with 4003.
//! * **Read state** (version 2) — [`Client::mark_read`] works offline too
//!   (queued, the highest mark per conversation goes out after the
//!   reconnect); unread counts and read ids are state the app reads at any
//!   moment ([`Client::read_state`], [`Client::unread_total`]) and events
//!   ([`Event::Unread`], [`Event::ReadUpTo`] from the user's other
//!   devices, also learned from the inbox the client reads after each
//!   connection's first sync); [`Client::inbox`] lists every conversation with its last
//!   message — the first screen of a chat app.
//! * **Receipts** — the client reports what reached the app (at most once
//!   a second); [`Event::Receipt`] tells how far others read and received,
//!   [`Client::receipts`] asks.
//! * **Attachments** — [`Client::upload`] (with progress) sends a file the
//!   way the server takes it (through the server, or to its object store
//!   by a presigned URL) and returns an [`Attachment`] whose
//!   [`content`](Attachment::content) goes into a message;
//!   [`Client::download`] fetches one named by a message ([`files`]).
//! * **Typing** — call [`Client::typing`] on every keystroke: the client
//!   throttles, refreshes and stops by itself after a pause
//!   ([`TYPING_IDLE`]); others' typing arrives as [`Event::Typing`] and is
//!   ended by the client when not refreshed.
//!
//! ```no_run
//! use futures::StreamExt;
//! use im_client::{Client, Event, FileCursorStore};
//! use im_client::core::{ConversationId, GroupId};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, mut events) = Client::builder()
//!     .url("http://127.0.0.1:8080/dispatch") // or "ws://127.0.0.1:8080/ws"
//!     .login("alice", "correct horse")       // or .token(token)
//!     .device("alice-laptop")
//!     .cursor_store(FileCursorStore::open("alice-laptop.cursors.json")?)
//!     .connect()?;
//!
//! let lunch = ConversationId::Group(GroupId(42));
//! let id = client.send(lunch, "Lunch at noon?").await?;
//! println!("stored as message {id}");
//!
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Message(m) => println!("{} #{} from {}: {}", m.conv, m.id, m.from, m.body),
//!         Event::Synced => println!("caught up"),
//!         Event::Reconnecting { attempt, delay, reason } => {
//!             println!("retry #{attempt} in {delay:?} ({reason})")
//!         }
//!         Event::Stopped { reason } => {
//!             println!("stopped: {reason}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! client.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The wire protocol is re-exported as [`core`]:
//!
//! ```
//! use im_client::core::{CloseCode, CloseReaction};
//! assert_eq!(CloseCode::SLOW_CONSUMER.reaction(), CloseReaction::Reconnect);
//! ```
#![warn(missing_docs)]

mod backoff;
mod client;
mod connect;
mod cursor_store;
mod draft;
mod driver;
mod error;
mod events;
pub mod files;
mod http;
mod options;
mod outbox;
mod pacer;
#[cfg(test)]
mod proptests;
mod read_book;
mod read_sync;
mod state;
#[cfg(feature = "tls")]
pub mod tls;
mod typing;

pub use im_protocol as core;
/// The protocol types an app uses most, re-exported from [`core`].
pub use im_protocol::{
    CloseCode, Content, ConversationId, ErrorCode, GroupId, InboxEntry, MemberChangeKind, Message, MessageId,
    Presence, PresenceStatus, Receipt, RoomId, UserId,
};

pub use crate::backoff::ReconnectPolicy;
pub use crate::client::{Client, HistoryPage, InboxPage, SendReceipt};
pub use crate::cursor_store::{CursorStore, FileCursorStore, MemoryCursorStore};
pub use crate::draft::Draft;
pub use crate::error::{ConfigError, RequestError, SendError, StopReason};
pub use crate::events::{Event, Events};
pub use crate::files::{Attachment, FileError};
pub use crate::options::ClientBuilder;
pub use crate::read_book::ConversationState;
pub use crate::typing::TYPING_IDLE;
