//! The part of im's business HTTP API (`docs/http-api.md`) the benchmark
//! uses to set a scenario up: register and log in users, create rooms and
//! groups, join rooms, read history.
//!
//! Registration and login each cost an Argon2 hash (tens of ms) and im runs
//! at most one hash per core at a time, so the benchmark registers only the
//! users it needs (see [`register_users`]) and gives one user's extra
//! connections distinct device ids on the same token.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

/// The password of every benchmark user.
const PASSWORD: &str = "bench-password-1";
/// Attempts of one request answered 503 (hashing saturated) or failing.
const ATTEMPTS: usize = 20;

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    /// User id.
    pub id: u64,
    /// Session token.
    pub token: String,
}

/// An HTTP client of one im node.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Login {
    token: String,
    user_id: u64,
}

#[derive(Deserialize)]
struct Created {
    id: u64,
}

#[derive(Deserialize)]
struct Page {
    messages: Vec<Created>,
}

impl Api {
    /// A client of the node at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: String) -> Api {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        Api { base, http }
    }

    async fn post(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> Result<String, String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => return r.text().await.map_err(|e| e.to_string()),
                Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {
                    last = format!("{path}: {}", r.status());
                }
                Ok(r) => {
                    let status = r.status();
                    return Err(format!("{path}: {status} {}", r.text().await.unwrap_or_default()));
                }
                Err(e) => last = format!("{path}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100 * (attempt as u64 + 1).min(10))).await;
        }
        Err(last)
    }

    /// Registers `username` and logs it in.
    pub async fn register_and_login(&self, username: &str) -> Result<User, String> {
        let creds = json!({"username": username, "password": PASSWORD});
        self.post("/api/v1/register", None, creds.clone()).await?;
        let text = self.post("/api/v1/login", None, creds).await?;
        let login: Login = serde_json::from_str(&text).map_err(|e| format!("login: {e}"))?;
        Ok(User { id: login.user_id, token: login.token })
    }

    /// Creates a room (its creator joins it); returns its id.
    pub async fn create_room(&self, owner: &User, name: &str) -> Result<u64, String> {
        let text = self.post("/api/v1/rooms", Some(&owner.token), json!({"name": name})).await?;
        Ok(serde_json::from_str::<Created>(&text).map_err(|e| format!("room: {e}"))?.id)
    }

    /// Joins `user` to room `room`.
    pub async fn join_room(&self, user: &User, room: u64) -> Result<(), String> {
        self.post(&format!("/api/v1/rooms/{room}/join"), Some(&user.token), json!({})).await.map(|_| ())
    }

    /// Creates a group owned by `owner` with `members`; returns its id.
    pub async fn create_group(&self, owner: &User, name: &str, members: &[u64]) -> Result<u64, String> {
        let text = self
            .post("/api/v1/groups", Some(&owner.token), json!({"name": name, "members": members}))
            .await?;
        Ok(serde_json::from_str::<Created>(&text).map_err(|e| format!("group: {e}"))?.id)
    }

    /// The ids of the newest page of `conv`'s history (`limit` at most).
    pub async fn history_ids(&self, user: &User, conv: &str, limit: u32) -> Result<Vec<u64>, String> {
        let url = format!("{}/api/v1/conversations/{conv}/messages?limit={limit}", self.base);
        let r = self.http.get(url).bearer_auth(&user.token).send().await.map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("history: {}", r.status()));
        }
        let page: Page = r.json().await.map_err(|e| format!("history: {e}"))?;
        Ok(page.messages.into_iter().map(|m| m.id).collect())
    }
}

/// Registers and logs in users `bench0 … bench{n-1}` with `concurrency`
/// requests in flight; returns them in order.
pub async fn register_users(api: &Api, n: usize, concurrency: usize) -> Result<Vec<User>, String> {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let api = api.clone();
        let slots = slots.clone();
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            api.register_and_login(&format!("bench{i}")).await.map(|u| (i, u))
        });
    }
    let mut users: Vec<Option<User>> = vec![None; n];
    while let Some(r) = tasks.join_next().await {
        let (i, u) = r.map_err(|e| e.to_string())??;
        users[i] = Some(u);
    }
    Ok(users.into_iter().flatten().collect())
}

/// Runs `f` on every item with `concurrency` in flight (room joins and the like).
pub async fn for_each<T, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> Result<(), String>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for item in items {
        let fut = f(item);
        let slots = slots.clone();
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            fut.await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}
