//! # im-protocol — the wire protocol of `im`
//!
//! (The package is `im-protocol`; its folder in the repository is `im-core`.)
//!
//! Types, codec and limits shared by the `im` server and clients; no async
//! runtime, no I/O. Frames are JSON text, one object per WebSocket message,
//! tagged by `type`, so any language with a WebSocket library can speak the
//! protocol. The normative spec is `docs/protocol.md` in the repository; a
//! test round-trips every example of that spec through this crate.
//!
//! ```
//! use im_protocol::{codec, ClientFrame, ClientMsgId, ConversationId, GroupId, ServerFrame};
//!
//! // A client asks to store a message in group 42…
//! let send = ClientFrame::send(1, ConversationId::Group(GroupId(42)), ClientMsgId::new("5f1c-01").unwrap(), "hello");
//! let text = codec::encode_client(&send);
//! assert_eq!(text, r#"{"type":"send","rid":1,"conv":"g:42","cmid":"5f1c-01","body":"hello"}"#);
//!
//! // …and the server decodes it, or explains precisely what is wrong.
//! assert_eq!(codec::decode_client(&text).unwrap(), send);
//! let err = codec::decode_client(r#"{"type":"shout","rid":2}"#).unwrap_err();
//! assert_eq!(err.code, im_protocol::ErrorCode::UnknownType);
//! assert_eq!(err.rid, Some(2));
//!
//! // Close codes tell a client how to react.
//! use im_protocol::{CloseCode, CloseReaction};
//! assert_eq!(CloseCode::DRAIN.reaction(), CloseReaction::ReconnectViaDispatcher);
//! # let _ = ServerFrame::Pong { rid: None };
//! ```
#![warn(missing_docs)]

pub mod close;
pub mod codec;
pub mod contact;
pub mod content;
pub mod error;
pub mod events;
pub mod frame;
pub mod ids;
pub mod limits;
pub mod message;

pub use close::{CloseCode, CloseReaction};
pub use codec::DecodeError;
pub use contact::ContactState;
pub use content::Content;
pub use error::ErrorCode;
pub use frame::{ClientFrame, InboxEntry, MemberChangeKind, Presence, PresenceStatus, Receipt, ServerFrame};
pub use ids::{ClientMsgId, ConversationId, ConversationKind, GroupId, MessageId, RequestId, RoomId, UserId};
pub use limits::{WireLimits, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
pub use message::Message;
