//! An existing product adds chat without moving its users: its backend
//! issues a short-lived JWT for the user it already signed in, and the
//! chat client connects to `im` with that token.
//!
//! ```sh
//! cargo run -p im-server --example app_backend
//! ```
//!
//! Three parts in one process, on loopback: the app's backend (a few lines
//! of axum: `GET /chat-token?user=…` stands in for "the signed-in user asks
//! for a chat token", and `POST /im/feed` receives every stored message
//! from `im`'s message feed, signature checked), an `im` server that
//! accepts the app's tokens and feeds the backend, and an `im-client` that
//! fetches a token from the backend and says hello. In a real deployment
//! the backend and `im-server` are separate processes that share only the
//! secrets (`im-server --jwt-hs256-secret … --feed-url … --hooks-secret …`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use im_client::core::ConversationId;
use im_client::{Client, Event};
use im_server::auth::jwt::{JwtConfig, JwtKey};
use im_server::feed::FeedConfig;
use im_server::webhooks::{signature, WebhookFeed};
use im_server::Server;
use sha2::Sha256;
use tokio::sync::mpsc;

/// Shared by the app's backend and `im` (at least 32 bytes; keep it secret).
const SECRET: &[u8] = b"app backend and im share this secret";

/// Signs what `im` posts to the backend (another secret, also shared).
const HOOKS_SECRET: &[u8] = b"im signs its webhook calls with this";

/// The backend's feed endpoint: checks the signature, then takes the batch
/// (a real backend stores it, skipping ids it has seen per conversation).
async fn feed(State(seen): State<mpsc::Sender<String>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = headers.get(signature::HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if signature::verify(HOOKS_SECRET, header, &body, now, signature::DEFAULT_WINDOW_SECS).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let batch: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    for m in batch["messages"].as_array().into_iter().flatten() {
        let _ = seen.send(format!("{} #{}: {}", m["conv"], m["id"], m["body"])).await;
    }
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct Who {
    user: String,
}

/// The app backend's one chat-related endpoint: a JWT for its user.
async fn chat_token(Query(who): Query<Who>) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "sub": who.user,            // the app's own user id
        "name": "Ada Lovelace",     // shown by clients
        "iss": "https://app.example",
        "aud": "im",
        "exp": now + 15 * 60,       // short-lived: the app hands out fresh ones
        "jti": format!("{now}-{}", rand::random::<u32>()),
    });
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The app's backend.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend_url = format!("http://{}", backend.local_addr()?);
    let (seen, mut fed) = mpsc::channel(16);
    let routes = axum::Router::new().route("/chat-token", get(chat_token)).route("/im/feed", post(feed));
    tokio::spawn(async move { axum::serve(backend, routes.with_state(seen)).await });

    // 2. im, accepting the app's tokens (and still its own logins), and
    //    posting every stored message to the backend.
    let mut jwt = JwtConfig::new(vec![JwtKey::hs256(SECRET.to_vec())?]);
    jwt.issuer = Some("https://app.example".into());
    jwt.audience = Some("im".into());
    let sink = WebhookFeed::new(format!("{backend_url}/im/feed"), HOOKS_SECRET, Duration::from_secs(10));
    let server = Server::builder()
        .memory()
        .jwt(jwt)
        .feed(std::sync::Arc::new(sink), FeedConfig::default())
        .bind("127.0.0.1:0")
        .await?;

    // 3. The chat client: a token from the backend, then im.
    let token = reqwest::get(format!("{backend_url}/chat-token?user=ada-1815")).await?.text().await?;
    let (client, mut events) = Client::builder().url(server.ws_url()).token(token).connect()?;
    let me = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await? {
            Some(Event::Connected { user, .. }) => break user,
            Some(Event::Stopped { reason }) => return Err(reason.to_string().into()),
            Some(_) => continue,
            None => return Err("client stopped".into()),
        }
    };
    println!("the app's user ada-1815 is im user {me} (username ~ada-1815)");
    // App users and im's own users chat with each other like any users.
    let grace = server.state().logic().register("grace", "correct horse battery").await?;
    let chat = ConversationId::direct(me, grace.id);
    let id = client.send(chat, "Hello from an app that kept its own accounts").await?;
    println!("stored as message {id} in {chat}");
    let got = tokio::time::timeout(Duration::from_secs(10), fed.recv()).await?.ok_or("feed ended")?;
    println!("the backend's feed received {got}");
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
