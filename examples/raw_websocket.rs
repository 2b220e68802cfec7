//! The wire protocol by hand: any WebSocket library can speak it.
//!
//! ```sh
//! cargo run --example raw_websocket
//! ```
//!
//! Starts a throw-away in-memory server, registers two users over the HTTP
//! API, connects both WebSockets with their tokens, and shows a send → ack →
//! delivery round trip, then a sync by `cur_max_message_id` — each JSON frame
//! printed as it travels. `docs/protocol.md` is the full spec.

use futures::{SinkExt, StreamExt};
use im_server::{Server, ServerConfig};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn login(http: &reqwest::Client, base: &str, name: &str) -> Result<(u64, String), reqwest::Error> {
    let creds = json!({"username": name, "password": "password-123"});
    http.post(format!("{base}/api/v1/register")).json(&creds).send().await?;
    let body: Value = http.post(format!("{base}/api/v1/login")).json(&creds).send().await?.json().await?;
    Ok((body["user_id"].as_u64().unwrap_or(0), body["token"].as_str().unwrap_or("").to_string()))
}

async fn send(ws: &mut Socket, who: &str, frame: Value) -> Result<(), Box<dyn std::error::Error>> {
    println!("{who} → {frame}");
    ws.send(WsMessage::Text(frame.to_string().into())).await?;
    Ok(())
}

/// Prints frames until one of type `want` arrives.
async fn expect(ws: &mut Socket, who: &str, want: &str) -> Result<Value, Box<dyn std::error::Error>> {
    while let Some(msg) = ws.next().await {
        if let WsMessage::Text(text) = msg? {
            println!("{who} ← {text}");
            let frame: Value = serde_json::from_str(text.as_str())?;
            if frame["type"] == want {
                return Ok(frame);
            }
        }
    }
    Err(format!("{who}: connection ended before a {want} frame").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder().config(ServerConfig::default()).memory().bind("127.0.0.1:0").await?;
    let (base, ws_url) = (server.http_url(), server.ws_url());
    let http = reqwest::Client::new();
    let (alice, alice_token) = login(&http, &base, "alice").await?;
    let (bob, bob_token) = login(&http, &base, "bob").await?;

    let (mut a, _) =
        tokio_tungstenite::connect_async(format!("{ws_url}?token={alice_token}&device=laptop")).await?;
    let (mut b, _) =
        tokio_tungstenite::connect_async(format!("{ws_url}?token={bob_token}&device=phone")).await?;
    expect(&mut a, "alice", "hello").await?;
    expect(&mut b, "bob", "hello").await?;

    // 1:1 conversation id: smaller user id first.
    let conv = format!("d:{}:{}", alice.min(bob), alice.max(bob));
    send(&mut a, "alice", json!({"type":"send","rid":1,"conv":conv,"cmid":"m-1","body":"hi bob"})).await?;
    expect(&mut a, "alice", "ack").await?;
    expect(&mut b, "bob", "message").await?;

    // Bob's cursor for this conversation is now 1; a sync from 0 gets it again.
    send(&mut b, "bob", json!({"type":"sync","rid":7,"cursors":{conv.clone(): 0}})).await?;
    expect(&mut b, "bob", "sync_page").await?;

    server.shutdown().await;
    Ok(())
}
