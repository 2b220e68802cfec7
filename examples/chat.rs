//! A small terminal chat on top of `im-client`.
//!
//! ```sh
//! cargo run --release -p im-server                       # terminal 1
//! cargo run --example chat -- --user alice --register    # terminal 2
//! cargo run --example chat -- --user bob --register --dm alice
//! ```
//!
//! It logs in (registering the user first with `--register`), lists the
//! user's groups, joins a room (`--room ID`) or creates one
//! (`--create-room NAME`), and then sends every line typed on stdin to the
//! current conversation, printing incoming messages, presence and membership
//! events and the connection's state as they come. Lines starting with `/`
//! are commands: `/to CONV` (`d:A:B`, `g:N`, `r:N`), `/dm USER`,
//! `/join ROOM`, `/groups`, `/quit`. `cargo run --example chat -- --help`
//! lists the options.

use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use im_client::core::{ConversationId, GroupId, RoomId, UserId};
use im_client::{Client, Event, FileCursorStore, MemberChangeKind, PresenceStatus};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A terminal chat client of an `im` server.
#[derive(Parser, Debug)]
#[command(name = "chat")]
struct Args {
    /// The server's HTTP address (API and `/dispatch`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Username.
    #[arg(long)]
    user: String,
    /// Password.
    #[arg(long, default_value = "password-123")]
    password: String,
    /// Register the user first (an existing user is fine).
    #[arg(long)]
    register: bool,
    /// Join this room and talk in it.
    #[arg(long, conflicts_with = "create_room")]
    room: Option<u64>,
    /// Create a room with this name, join it and talk in it.
    #[arg(long)]
    create_room: Option<String>,
    /// Talk in this group (one of the user's groups).
    #[arg(long)]
    group: Option<u64>,
    /// Talk to this user in a direct chat.
    #[arg(long)]
    dm: Option<String>,
    /// Talk in this conversation (`d:A:B`, `g:N` or `r:N`).
    #[arg(long)]
    conv: Option<ConversationId>,
    /// This device's id (default: `<user>-chat`).
    #[arg(long)]
    device: Option<String>,
    /// Keep sync cursors in this file, so a restart fetches only what is new
    /// (default: in memory; every start shows the whole past of groups and chats).
    #[arg(long)]
    cursors: Option<std::path::PathBuf>,
}

/// The business HTTP API, for what the WebSocket does not do.
struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Api {
    async fn login(
        base: &str,
        user: &str,
        password: &str,
        register: bool,
    ) -> Result<(Api, UserId), BoxError> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let creds = json!({"username": user, "password": password});
        if register {
            let resp = http.post(format!("{base}/api/v1/register")).json(&creds).send().await?;
            match resp.status().as_u16() {
                201 => println!("* registered {user}"),
                409 => {}
                s => return Err(format!("register: HTTP {s}: {}", resp.text().await?).into()),
            }
        }
        let resp = http.post(format!("{base}/api/v1/login")).json(&creds).send().await?;
        if !resp.status().is_success() {
            let hint = if register { "" } else { " (new user? add --register)" };
            return Err(format!("login: HTTP {}{hint}", resp.status().as_u16()).into());
        }
        let body: Value = resp.json().await?;
        let token = body["token"].as_str().ok_or("login: no token")?.to_string();
        let me = UserId(body["user_id"].as_u64().ok_or("login: no user_id")?);
        Ok((Api { base: base.to_string(), http, token }, me))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BoxError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            return Err(format!("{path}: HTTP {}: {text}", status.as_u16()).into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn print_groups(&self) -> Result<(), BoxError> {
        let groups = self.call(reqwest::Method::GET, "/api/v1/groups", None).await?;
        let groups = groups.as_array().cloned().unwrap_or_default();
        if groups.is_empty() {
            println!("* no groups");
        }
        for g in groups {
            println!("* group g:{} {:?} (owner {})", g["id"], g["name"].as_str().unwrap_or(""), g["owner"]);
        }
        Ok(())
    }

    async fn user_id(&self, name: &str) -> Result<UserId, BoxError> {
        let u = self.call(reqwest::Method::GET, &format!("/api/v1/users/by-name/{name}"), None).await?;
        Ok(UserId(u["id"].as_u64().ok_or("no such user")?))
    }

    async fn create_room(&self, name: &str) -> Result<RoomId, BoxError> {
        let r = self.call(reqwest::Method::POST, "/api/v1/rooms", Some(json!({ "name": name }))).await?;
        Ok(RoomId(r["id"].as_u64().ok_or("create room: no id")?))
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let base = args.server.trim_end_matches('/').to_string();
    let (api, me) = Api::login(&base, &args.user, &args.password, args.register).await?;
    println!("* logged in as {} (user {me})", args.user);
    api.print_groups().await?;

    let device = args.device.clone().unwrap_or_else(|| format!("{}-chat", args.user));
    let mut builder =
        Client::builder().url(format!("{base}/dispatch")).login(&args.user, &args.password).device(device);
    if let Some(path) = &args.cursors {
        builder = builder.cursor_store(FileCursorStore::open(path)?);
    }
    let (client, mut events) = builder.connect()?;

    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::Message(m) => println!("[{} #{}] {}: {}", m.conv, m.id, m.from, m.body),
                Event::Presence(p) => {
                    let s = if p.status == PresenceStatus::Online { "online" } else { "offline" };
                    println!("* user {} is {s}", p.user);
                }
                Event::Member { group, user, change, by } => {
                    let what = if change == MemberChangeKind::Added { "added to" } else { "removed from" };
                    println!("* user {user} {what} group g:{group} by user {by}");
                }
                Event::Connected { node, device, .. } => println!("* connected to {node} as device {device}"),
                Event::Synced => println!("* synced"),
                Event::Disconnected { code, reason } => {
                    println!(
                        "* disconnected ({}): {reason}",
                        code.map_or("no code".into(), |c| c.0.to_string())
                    )
                }
                Event::Reconnecting { attempt, delay, reason } => {
                    println!("* reconnecting (#{attempt}) in {delay:?}: {reason}")
                }
                Event::Stopped { reason } => {
                    println!("* stopped: {reason}");
                    break;
                }
                other => println!("* {other:?}"),
            }
        }
    });

    // Where typed lines go.
    let mut target: Option<ConversationId> = args.conv;
    if let Some(g) = args.group {
        target = Some(ConversationId::Group(GroupId(g)));
    }
    if let Some(name) = &args.dm {
        target = Some(ConversationId::direct(me, api.user_id(name).await?));
    }
    let room = match (&args.create_room, args.room) {
        (Some(name), _) => Some(api.create_room(name).await?),
        (None, Some(id)) => Some(RoomId(id)),
        _ => None,
    };
    if let Some(room) = room {
        match client.join(room).await {
            Ok(()) => {
                println!("* joined room r:{room}");
                target = Some(ConversationId::Room(room));
            }
            Err(e) => println!("* cannot join room r:{room}: {e}"),
        }
    }
    match target {
        Some(t) => println!("* talking in {t}; type a line to send it, /quit to leave"),
        None => println!("* no conversation chosen: use /to CONV, /dm USER or /join ROOM"),
    }

    let (outgoing, mut queue) = tokio::sync::mpsc::unbounded_channel::<(ConversationId, String)>();
    let sender = tokio::spawn({
        let client = client.clone();
        async move {
            while let Some((conv, body)) = queue.recv().await {
                match client.send(conv, body).await {
                    Ok(id) => println!("* stored as {conv} #{id}"),
                    Err(e) => println!("* not sent: {e}"),
                }
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let (verb, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
            let arg = arg.trim();
            match verb {
                "quit" | "q" => break,
                "groups" => api.print_groups().await?,
                "to" => match arg.parse::<ConversationId>() {
                    Ok(c) => {
                        target = Some(c);
                        println!("* talking in {c}");
                    }
                    Err(e) => println!("* bad conversation id {arg:?}: {e}"),
                },
                "dm" => match api.user_id(arg).await {
                    Ok(peer) => {
                        let c = ConversationId::direct(me, peer);
                        target = Some(c);
                        println!("* talking in {c}");
                    }
                    Err(e) => println!("* {e}"),
                },
                "join" => match arg.parse::<u64>() {
                    Ok(id) => match client.join(RoomId(id)).await {
                        Ok(()) => {
                            target = Some(ConversationId::Room(RoomId(id)));
                            println!("* joined room r:{id}");
                        }
                        Err(e) => println!("* cannot join: {e}"),
                    },
                    Err(_) => println!("* usage: /join ROOM_ID"),
                },
                _ => println!("* commands: /to CONV, /dm USER, /join ROOM, /groups, /quit"),
            }
            continue;
        }
        let Some(conv) = target else {
            println!("* no conversation chosen: use /to CONV, /dm USER or /join ROOM");
            continue;
        };
        // In order, by one task, so typing goes on while a send waits for a reconnect.
        if outgoing.send((conv, line.to_string())).is_err() {
            break;
        }
    }
    // Let the sends typed so far get their acks (bounded) before stopping.
    drop(outgoing);
    let _ = tokio::time::timeout(Duration::from_secs(10), sender).await;
    client.shutdown().await;
    let _ = printer.await;
    Ok(())
}
