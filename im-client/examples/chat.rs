//! A tiny terminal chat on top of `im-client`.
//!
//! Start a server (`cargo run --example embedded_server`, or the
//! `im-server` binary), register two users through the HTTP API, then run
//! one of these per user:
//!
//! ```text
//! cargo run -p im-client --example chat -- http://127.0.0.1:8080/dispatch alice password-123 d:1:2
//! ```
//!
//! Arguments: server URL (dispatcher `http://…/dispatch` or WebSocket
//! `ws://…/ws`), username, password, conversation id (`d:A:B`, `g:N` or
//! `r:N`). Each line typed on stdin is sent; every event is printed.

use futures_util::StreamExt;
use im_client::core::ConversationId;
use im_client::{Client, Event, FileCursorStore};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, user, password, conv] = args.as_slice() else {
        eprintln!("usage: chat <url> <username> <password> <conversation id>");
        std::process::exit(2);
    };
    let conv: ConversationId = conv.parse()?;
    let (client, mut events) = Client::builder()
        .url(url)
        .login(user, password)
        .device(format!("{user}-chat-example"))
        .cursor_store(FileCursorStore::open(format!("{user}-chat-example.cursors.json"))?)
        .connect()?;

    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::Message(m) => println!("[{} #{}] {}: {}", m.conv, m.id, m.from, m.body),
                Event::Stopped { reason } => {
                    println!("* stopped: {reason}");
                    break;
                }
                other => println!("* {other:?}"),
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match client.send(conv, line).await {
            Ok(id) => println!("* stored as #{id}"),
            Err(e) => println!("* not sent: {e}"),
        }
    }
    client.shutdown().await;
    let _ = printer.await;
    Ok(())
}
