//! Embedding `im-server` in your own program, with your own push hook.
//!
//! ```sh
//! cargo run --example embedded_server            # listens on 127.0.0.1:8080, data in ./data
//! ```
//!
//! The same thing the `im-server` binary does, in ~40 lines: pick a
//! configuration, choose the storage, plug in a push notifier, serve, and
//! shut down gracefully on Ctrl-C (clients are told to reconnect via the
//! dispatcher, storage is flushed).

use std::sync::Arc;

use async_trait::async_trait;
use im_protocol::{Message, UserId};
use im_server::push::{PushError, PushNotifier};
use im_server::{Server, ServerConfig};

/// Where your app would call APNs/FCM; here it just prints.
struct PrintPush;

#[async_trait]
impl PushNotifier for PrintPush {
    async fn notify(&self, users: &[UserId], message: &Message) -> Result<(), PushError> {
        println!("push → users {users:?}: new message {} in {}", message.id, message.conv);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut config = ServerConfig::default();
    config.node_name = "embedded-1".into();
    config.max_group_members = 200;

    let server = Server::builder()
        .config(config)
        .embedded("data")? // persistent; `.memory()` for a throw-away server
        .token_secret(b"change me: share this secret between nodes".to_vec())
        .push(Arc::new(PrintPush))
        .bind("127.0.0.1:8080")
        .await?;
    println!("HTTP API {}  WebSocket {}  (Ctrl-C stops)", server.http_url(), server.ws_url());

    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
