//! The server API (the application's backend, with an API key) over real
//! HTTP and WebSocket: off without keys, refused with a wrong key; creates
//! users, a group and a room, posts a message as a bot that members receive
//! live and — a member who was offline — by sync from their cursors
//! (idempotent by cmid), reads any history, disconnects a user or one of
//! their sessions, and revokes a token.

use std::time::Duration;

use im_client::core::{ConversationId, GroupId};
use im_client::{Client, Event, FileCursorStore, StopReason};
use im_server::{RunningServer, ServerConfig};
use im_tests::{start, until, Api};
use serde_json::{json, Value};

const KEY: &str = "server-api-key-for-tests-0123456789";

async fn with_key() -> RunningServer {
    let mut cfg = ServerConfig::default();
    cfg.server_api_keys = vec!["another-configured-key-000".into(), KEY.into()];
    start(cfg).await
}

/// An `im-client` with `token` that reconnects by itself, quickly (20 to
/// 100 ms, at most 20 attempts).
fn reconnecting(srv: &RunningServer, token: &str) -> (Client, im_client::Events) {
    Client::builder()
        .url(srv.ws_url())
        .token(token)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .max_reconnect_attempts(20)
        .connect()
        .unwrap()
}

/// A call with the API key.
async fn server(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    api.call(method, &format!("/api/v1/server{path}"), Some(KEY), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_api_is_off_without_keys_and_refuses_wrong_keys() {
    let off = im_tests::start_default().await;
    let (s, _) = Api::new(&off).call("GET", "/api/v1/server/users/1", Some(KEY), None).await;
    assert_eq!(s, 404, "no keys: the server API does not exist");
    off.shutdown().await;

    let on = with_key().await;
    let api = Api::new(&on);
    let alice = api.user("alice").await;
    for token in [None, Some("wrong-key-0123456789"), Some(alice.token.as_str())] {
        let (s, body) = api.call("POST", "/api/v1/server/users", token, Some(json!({"subject": "x"}))).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{token:?}: a user's token is no API key"
        );
    }
    let (s, _) = server(&api, "GET", "/users/404", None).await;
    assert_eq!(s, 404);
    on.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_sets_up_a_group_and_posts_as_a_bot() {
    let srv = with_key().await;
    let api = Api::new(&srv);
    let alice = api.user("alice").await;
    // The app's users by subject (idempotent), and a bot account.
    let (s, ada) = server(&api, "POST", "/users", Some(json!({"subject": "ada-1815"}))).await;
    assert_eq!((s, ada["username"].as_str()), (200, Some("~ada-1815")), "{ada}");
    let (_, again) = server(&api, "POST", "/users", Some(json!({"subject": "ada-1815"}))).await;
    assert_eq!(again["id"], ada["id"]);
    let (s, bot) =
        server(&api, "POST", "/users", Some(json!({"username": "notifier", "password": "bot-password-1"})))
            .await;
    assert_eq!(s, 201, "{bot}");
    assert!(bot.get("password_hash").is_none());

    let (s, group) = server(
        &api,
        "POST",
        "/groups",
        Some(json!({"owner": bot["id"], "name": "Release news", "members": [ada["id"]]})),
    )
    .await;
    assert_eq!(s, 201, "{group}");
    let gid = group["id"].as_u64().unwrap();
    let (s, _) =
        server(&api, "POST", &format!("/groups/{gid}/members"), Some(json!({"user_id": alice.id.0}))).await;
    assert_eq!(s, 204);
    let (s, room) =
        server(&api, "POST", "/rooms", Some(json!({"creator": bot["id"], "name": "lobby"}))).await;
    assert_eq!((s, room["name"].as_str()), (201, Some("lobby")));

    // Alice is online; the bot posts twice with the same cmid.
    let (client, mut ev) = Client::builder().url(srv.ws_url()).token(alice.token.clone()).connect().unwrap();
    until(&mut ev, "Synced", |e| matches!(e, Event::Synced)).await;
    let conv = ConversationId::Group(GroupId(gid));
    let post =
        json!({"conv": conv.to_string(), "from": bot["id"], "cmid": "release-1.2", "body": "im 1.2 is out"});
    let (s, first) = server(&api, "POST", "/messages", Some(post.clone())).await;
    assert_eq!((s, first["duplicate"].as_bool()), (201, Some(false)), "{first}");
    let (s, second) = server(&api, "POST", "/messages", Some(post.clone())).await;
    assert_eq!((s, second["duplicate"].as_bool()), (200, Some(true)));
    // Content nested past the JSON parser's limit is named as such (and
    // nothing is stored: the next page below holds the one message).
    let mut deep = json!("leaf");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let mut too_deep = post.clone();
    too_deep["cmid"] = json!("deep-1");
    too_deep["kind"] = json!("x.deep");
    too_deep["content"] = json!({ "v": deep });
    let (s, refused) = server(&api, "POST", "/messages", Some(too_deep)).await;
    assert_eq!((s, refused["code"].as_str()), (400, Some("bad_frame")), "{refused}");
    assert_eq!(refused["message"], "the request body nests JSON deeper than 127 levels");
    assert_eq!(second["message"]["id"], first["message"]["id"], "stored once");
    let (e, _) =
        until(&mut ev, "the bot's message", |e| matches!(e, Event::Message(m) if !m.is_event())).await;
    let Event::Message(m) = e else { unreachable!() };
    assert_eq!((m.body.as_str(), m.from.0), ("im 1.2 is out", bot["id"].as_u64().unwrap()));

    // A non-member cannot be made to post; the backend reads any history.
    let outsider = api.user("mallory").await;
    let (s, body) = server(
        &api,
        "POST",
        "/messages",
        Some(json!({"conv": conv.to_string(), "from": outsider.id.0, "cmid": "x", "body": "hi"})),
    )
    .await;
    assert_eq!((s, body["code"].as_str()), (403, Some("not_member")));
    // The system sender is a bot: `system` notices are the server's own.
    let mut system = post.clone();
    system["cmid"] = json!("sys-1");
    system["kind"] = json!("system");
    system["content"] = json!({"event": "member_added", "user": outsider.id.0});
    let (s, body) = server(&api, "POST", "/messages", Some(system)).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_field")), "{body}");
    let (s, page) = server(&api, "GET", &format!("/conversations/{conv}/messages"), None).await;
    assert_eq!(s, 200);
    // The bot's message, and the notice of the bot's addition before it.
    let kinds: Vec<&str> =
        page["messages"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap_or("text")).collect();
    assert_eq!(kinds, ["system", "text"]);

    // Removing Alice through the backend: she is no longer a member.
    let (s, _) = server(&api, "DELETE", &format!("/groups/{gid}/members/{}", alice.id.0), None).await;
    assert_eq!(s, 204);
    let (s, _) =
        api.call("GET", &format!("/api/v1/conversations/{conv}/messages"), Some(&alice.token), None).await;
    assert_eq!(s, 403);
    client.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_disconnects_users_and_revokes_tokens() {
    let srv = with_key().await;
    let api = Api::new(&srv);
    let alice = api.user("alice").await;
    let (_c, mut ev) = reconnecting(&srv, &alice.token);
    until(&mut ev, "Connected", |e| matches!(e, Event::Connected { .. })).await;

    // Disconnect: closed with 3000, and back by itself (the token still works).
    let (s, _) = server(&api, "POST", &format!("/users/{}/disconnect", alice.id.0), None).await;
    assert_eq!(s, 204);
    let (e, _) = until(&mut ev, "Disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(matches!(e, Event::Disconnected { code: Some(c), .. } if c.0 == 3000), "{e:?}");
    until(&mut ev, "Connected again", |e| matches!(e, Event::Connected { .. })).await;

    // Revoke: closed with 4001 and stopped for good; the token is dead everywhere.
    let (s, _) = server(&api, "POST", "/tokens/revoke", Some(json!({"token": alice.token}))).await;
    assert_eq!(s, 204);
    let (e, _) = until(&mut ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert!(
        matches!(&e, Event::Stopped { reason: StopReason::Closed { code, .. } } if code.0 == 4001),
        "{e:?}"
    );
    let (s, _) = api.call("GET", "/api/v1/me", Some(&alice.token), None).await;
    assert_eq!(s, 401);
    let (s, body) = server(&api, "POST", "/tokens/revoke", Some(json!({"token": alice.token}))).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (401, Some("unauthorized")),
        "a dead token cannot be revoked again"
    );
    srv.shutdown().await;
}

/// A bot account and a group it owns with `members`: (bot id, the group).
async fn bot_group(api: &Api, members: &[u64]) -> (u64, ConversationId) {
    let (s, bot) =
        server(api, "POST", "/users", Some(json!({"username": "notifier", "password": "bot-password-1"})))
            .await;
    assert_eq!(s, 201, "{bot}");
    let (s, group) =
        server(api, "POST", "/groups", Some(json!({"owner": bot["id"], "name": "news", "members": members})))
            .await;
    assert_eq!(s, 201, "{group}");
    (bot["id"].as_u64().unwrap(), ConversationId::Group(GroupId(group["id"].as_u64().unwrap())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_offline_while_the_bot_posts_gets_it_by_sync() {
    let srv = with_key().await;
    let api = Api::new(&srv);
    let carol = api.user("carol").await;
    let (bot, conv) = bot_group(&api, &[carol.id.0]).await;
    let dir = tempfile::tempdir().unwrap();
    let cursors = dir.path().join("carol.cursors.json");
    let connect = || {
        Client::builder()
            .url(srv.ws_url())
            .token(carol.token.clone())
            .cursor_store(FileCursorStore::open(&cursors).unwrap())
            .connect()
            .unwrap()
    };
    let post = |cmid: &str, body: &str| {
        server(
            &api,
            "POST",
            "/messages",
            Some(json!({"conv": conv.to_string(), "from": bot, "cmid": cmid, "body": body})),
        )
    };
    // Carol's device gets a first post live, then goes away.
    let (client, mut ev) = connect();
    until(&mut ev, "Synced", |e| matches!(e, Event::Synced)).await;
    let (s, _) = post("welcome", "welcome").await;
    assert_eq!(s, 201);
    until(&mut ev, "the first post", |e| matches!(e, Event::Message(m) if m.body == "welcome")).await;
    client.shutdown().await;

    let (s, posted) = post("while-away", "posted while you were away").await;
    assert_eq!(s, 201, "{posted}");

    // Back: the sync from her saved cursor brings the post, and only it.
    let (client, mut ev) = connect();
    let (_, synced) = until(&mut ev, "Synced", |e| matches!(e, Event::Synced)).await;
    let got: Vec<_> = synced
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.conv == conv => Some((m.id, m.from.0, m.body.as_str())),
            _ => None,
        })
        .collect();
    let id = posted["message"]["id"].as_u64().unwrap();
    assert_eq!(got, [(id, bot, "posted while you were away")], "{synced:?}");
    client.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_disconnects_one_session_and_the_others_stay() {
    let srv = with_key().await;
    let api = Api::new(&srv);
    // Alice signed in twice (two devices, two sessions).
    let (laptop, phone) = (api.user("alice").await, api.login("alice").await);
    let (bot, conv) = bot_group(&api, &[laptop.id.0]).await;
    let (_l, mut l_ev) = reconnecting(&srv, &laptop.token);
    let (_p, mut p_ev) = reconnecting(&srv, &phone.token);
    for ev in [&mut l_ev, &mut p_ev] {
        until(ev, "Synced", |e| matches!(e, Event::Synced)).await;
    }

    let (s, body) = server(&api, "POST", "/sessions/disconnect", Some(json!({"token": laptop.token}))).await;
    assert_eq!(s, 204, "{body}");
    // The laptop's session: closed with 3000, back by itself with the same token.
    let (e, _) = until(&mut l_ev, "Disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(matches!(e, Event::Disconnected { code: Some(c), .. } if c.0 == 3000), "{e:?}");
    until(&mut l_ev, "Connected again", |e| matches!(e, Event::Connected { .. })).await;
    until(&mut l_ev, "Synced again", |e| matches!(e, Event::Synced)).await;
    let (s, me) = api.call("GET", "/api/v1/me", Some(&laptop.token), None).await;
    assert_eq!((s, me["id"].as_u64()), (200, Some(laptop.id.0)), "the token was not revoked");

    // The phone's session was not touched: it was closed by the same event
    // as the laptop if at all, so its stream up to a message posted after the
    // laptop's reconnect holds no disconnect; both devices get the message.
    let post =
        json!({"conv": conv.to_string(), "from": bot, "cmid": "after", "body": "after the disconnect"});
    let (s, _) = server(&api, "POST", "/messages", Some(post)).await;
    assert_eq!(s, 201);
    let is_post = |e: &Event| matches!(e, Event::Message(m) if m.body == "after the disconnect");
    until(&mut l_ev, "the post on the laptop", is_post).await;
    let (_, before) = until(&mut p_ev, "the post on the phone", is_post).await;
    assert!(
        !before.iter().any(|e| matches!(e, Event::Disconnected { .. } | Event::Connected { .. })),
        "the phone stayed connected: {before:?}"
    );

    // Bad input: no token, not a token, a revoked token, an unknown field.
    let (s, _) = server(&api, "POST", "/tokens/revoke", Some(json!({"token": phone.token}))).await;
    assert_eq!(s, 204);
    let refused = [
        (json!({}), 400, "invalid_field"),
        (json!({"token": 7}), 400, "invalid_field"),
        (json!({"token": laptop.token, "user": 1}), 400, "invalid_field"),
        (json!({"token": "not-a-token"}), 401, "unauthorized"),
        (json!({"token": phone.token}), 401, "unauthorized"),
    ];
    for (body, status, code) in refused {
        let (s, e) = server(&api, "POST", "/sessions/disconnect", Some(body.clone())).await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{body}: {e}");
    }
    srv.shutdown().await;
}
