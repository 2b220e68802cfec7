//! # im-client — the `im` chat client
//!
//! This crate is being built (see the project's open issues); today it
//! re-exports the wire protocol so applications can already speak it over a
//! WebSocket library of their choice.
//!
//! ```
//! use im_client::core::{CloseCode, CloseReaction};
//! assert_eq!(CloseCode::SLOW_CONSUMER.reaction(), CloseReaction::Reconnect);
//! ```
#![warn(missing_docs)]

pub use im_core as core;
