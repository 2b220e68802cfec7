//! # im-server — the `im` chat server framework
//!
//! A complete instant-messaging server as a library: a WebSocket gateway
//! speaking the [`im_protocol`] protocol, the business HTTP API (accounts,
//! groups, rooms, history, presence), a dispatcher endpoint, and seams —
//! traits — for storage, sessions, presence, broker and push, each with an
//! in-process implementation and an embedded persistent store. The
//! `im-server` binary runs it all on one port.
//!
//! ```
//! use im_server::{Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ServerConfig::default();
//! config.max_group_members = 100;
//! let server = Server::builder().config(config).memory().bind("127.0.0.1:0").await?;
//! println!("chat at {} (HTTP) and {} (WebSocket)", server.http_url(), server.ws_url());
//!
//! // Users register and log in over HTTP, then connect the WebSocket with
//! // the token; here we just check the server answers.
//! let state = server.state().clone();
//! let alice = state.logic().register("alice", "correct horse").await?;
//! let login = state.logic().login("alice", "correct horse").await?;
//! assert_eq!(login.user_id, alice.id);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Module map (see `docs/architecture.md`): [`gateway`] (sockets,
//! heartbeat), [`logic`] (what a request does), [`hub`] (local fan-out),
//! [`send_queue`] (per-connection queue to the socket writer),
//! [`broker`] (between nodes), [`store`] (messages, directory, sessions),
//! [`presence`], [`push`], [`attachments`] (uploaded files), [`hooks`]
//! (the application's say), [`webhooks`] (hooks and the feed over HTTP),
//! [`feed`] (every stored message, at least once, in order), [`auth`],
//! [`http`] (business API and dispatcher),
//! [`dispatch`] (node registry), [`state`] (shared handler state),
//! [`metrics`]; with the `redis` feature, `redis` (cluster back-ends); with
//! the `tls` feature (default), `tls` (certificate, key, reload).
#![warn(missing_docs)]

mod accept;
pub mod attachments;
pub mod auth;
pub mod broker;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod feed;
pub mod gateway;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod logic;
pub mod metrics;
pub mod model;
pub mod presence;
pub mod push;
#[cfg(feature = "redis")]
pub mod redis;
pub mod reorder;
pub mod send_queue;
pub mod server;
pub mod state;
pub mod store;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;
pub mod webhooks;

pub use config::ServerConfig;
pub use error::{Error, Result};
pub use server::{RunningServer, Server, ServerBuilder, StartError};
pub use state::AppState;
