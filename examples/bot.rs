//! An echo/command bot on top of `im-client`.
//!
//! ```sh
//! cargo run --release -p im-server                    # terminal 1
//! cargo run --example bot -- --user echo-bot --register
//! ```
//!
//! It logs in, listens to every conversation it is in (its direct chats and
//! groups come by sync; rooms it has joined come live, `--room ID` joins
//! one), and answers:
//!
//! * in a direct chat, every message with `echo: <text>`;
//! * anywhere, `!ping` with `pong` and `!help` with the command list.
//!
//! The client reconnects by itself (heartbeat, backoff, resync), so the bot
//! survives server restarts; its sync cursors are kept in a file
//! (`--cursors`, default `<user>.bot-cursors.json`), so every message is
//! answered once, also across bot restarts. Messages older than the bot's
//! first start (e.g. a direct chat's past) are not answered. Ctrl-C stops it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use im_client::core::{ConversationId, Message, RoomId, UserId};
use im_client::{Client, Event, FileCursorStore, StopReason};
use serde_json::json;

/// An echo/command bot for an `im` server.
#[derive(Parser, Debug)]
#[command(name = "bot")]
struct Args {
    /// The server's HTTP address (API and `/dispatch`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The bot's username.
    #[arg(long, default_value = "echo-bot")]
    user: String,
    /// The bot's password.
    #[arg(long, default_value = "password-123")]
    password: String,
    /// Register the user first (an existing user is fine).
    #[arg(long)]
    register: bool,
    /// Join these rooms (repeat the flag for several).
    #[arg(long)]
    room: Vec<u64>,
    /// Sync cursor file (default: `<user>.bot-cursors.json`).
    #[arg(long)]
    cursors: Option<PathBuf>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn register(base: &str, user: &str, password: &str) -> Result<(), BoxError> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let resp = http
        .post(format!("{base}/api/v1/register"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await?;
    match resp.status().as_u16() {
        201 => println!("registered {user}"),
        409 => {}
        s => return Err(format!("register: HTTP {s}: {}", resp.text().await?).into()),
    }
    Ok(())
}

/// The bot's answer to `m`, if any.
fn answer(m: &Message) -> Option<String> {
    let text = m.body.trim();
    match text {
        "!ping" => Some("pong".into()),
        "!help" => Some("commands: !ping, !help; in a direct chat I echo everything".into()),
        _ if matches!(m.conv, ConversationId::Direct(..)) => Some(format!("echo: {text}")),
        _ => None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let base = args.server.trim_end_matches('/').to_string();
    if args.register {
        register(&base, &args.user, &args.password).await?;
    }
    let cursor_path =
        args.cursors.clone().unwrap_or_else(|| format!("{}.bot-cursors.json", args.user).into());
    let fresh = !cursor_path.exists();
    let (client, mut events) = Client::builder()
        .url(format!("{base}/dispatch"))
        .login(&args.user, &args.password)
        .device(format!("{}-bot", args.user))
        .cursor_store(FileCursorStore::open(&cursor_path)?)
        .connect()?;
    // On a first run, the backlog of old conversations is delivered too: only
    // answer what was sent after the bot started.
    let answer_from = if fresh { now_ms() } else { 0 };

    // Replies go out in order from one task: a send resolves after its ack
    // (maybe after a reconnect), and meanwhile the events must keep flowing.
    let (outgoing, mut queue) = tokio::sync::mpsc::unbounded_channel::<(ConversationId, String)>();
    tokio::spawn({
        let client = client.clone();
        async move {
            while let Some((conv, reply)) = queue.recv().await {
                if let Err(e) = client.send(conv, reply).await {
                    println!("reply to {conv} not sent: {e}");
                }
            }
        }
    });

    let mut me: Option<UserId> = None;
    let mut rooms_joined = false;
    let mut replies = 0u64;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tokio::signal::ctrl_c() => {
                println!("stopping");
                // In the background: the events up to `Stopped` must still be read.
                let c = client.clone();
                tokio::spawn(async move { c.shutdown().await });
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            Event::Connected { node, user, .. } => {
                me = Some(user);
                println!("connected to {node} as user {user}");
            }
            Event::Synced => {
                println!("synced");
                if !rooms_joined {
                    rooms_joined = true;
                    for &id in &args.room {
                        // In the background: the event stream must keep being read.
                        let c = client.clone();
                        tokio::spawn(async move {
                            match c.join(RoomId(id)).await {
                                Ok(()) => println!("joined room r:{id}"),
                                Err(e) => println!("cannot join room r:{id}: {e}"),
                            }
                        });
                    }
                }
            }
            Event::Message(m) if Some(m.from) != me && m.ts >= answer_from => {
                if let Some(reply) = answer(&m) {
                    replies += 1;
                    println!("[{} #{}] {}: {} -> {reply}", m.conv, m.id, m.from, m.body);
                    let _ = outgoing.send((m.conv, reply));
                }
            }
            Event::Message(_) => {}
            Event::Member { group, user, change, .. } => println!("group g:{group}: user {user} {change:?}"),
            Event::Disconnected { code, reason } => {
                println!("disconnected ({:?}): {reason}", code.map(|c| c.0))
            }
            Event::Reconnecting { attempt, delay, reason } => {
                println!("reconnecting (#{attempt}) in {delay:?}: {reason}")
            }
            Event::Stopped { reason } => {
                println!("stopped after {replies} replies: {reason}");
                if reason != StopReason::Shutdown {
                    std::process::exit(1);
                }
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
