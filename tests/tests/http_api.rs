//! The business HTTP API over real loopback HTTP: accounts and tokens,
//! groups and their rights, rooms, history, presence, bad input, and the
//! dispatcher / health / metrics endpoints.

use im_protocol::{ConversationId, GroupId, UserId};
use im_server::ServerConfig;
use im_tests::{cmid, start, start_default, Api, TestUser};
use serde_json::{json, Value};

/// Asserts an error answer: the status and the JSON body's code.
#[track_caller]
fn assert_error(got: (u16, Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!((s, body["code"].as_str()), (status, Some(code)), "body: {body}");
    assert!(body["message"].is_string(), "error bodies carry a message: {body}");
}

fn creds(username: &str, password: &str) -> Option<Value> {
    Some(json!({"username": username, "password": password}))
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array().expect("array").iter().map(|v| v["id"].as_u64().expect("id")).collect()
}

fn member_ids(info: &Value) -> Vec<(u64, String)> {
    info["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["user"].as_u64().expect("user"), m["role"].as_str().expect("role").to_owned()))
        .collect()
}

// ---- accounts ---------------------------------------------------------------

#[tokio::test]
async fn register_answers_the_user_without_secrets_and_refuses_bad_input() {
    let server = start_default().await;
    let api = Api::new(&server);

    let (s, user) = api.call("POST", "/api/v1/register", None, creds("alice", "password-123")).await;
    assert_eq!(s, 201, "{user}");
    assert!(user["id"].as_u64().is_some_and(|id| id >= 1));
    assert_eq!(user["username"], "alice");
    assert!(user["created_at"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(user.as_object().map(|o| o.len()), Some(3), "only id, username, created_at: {user}");

    assert_error(
        api.call("POST", "/api/v1/register", None, creds("alice", "another-pass")).await,
        409,
        "conflict",
    );
    for bad in ["al", "bad name", "x".repeat(33).as_str(), "émile", ""] {
        assert_error(
            api.call("POST", "/api/v1/register", None, creds(bad, "password-123")).await,
            400,
            "invalid_field",
        );
    }
    assert_error(
        api.call("POST", "/api/v1/register", None, creds("bob", "short")).await,
        400,
        "invalid_field",
    );
    assert_error(
        api.call("POST", "/api/v1/register", None, creds("bob", &"p".repeat(257))).await,
        400,
        "invalid_field",
    );
    server.shutdown().await;
}

#[tokio::test]
async fn login_checks_the_password_and_hides_which_part_was_wrong() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;

    let (s, login) = api.call("POST", "/api/v1/login", None, creds("alice", "password-123")).await;
    assert_eq!(s, 200, "{login}");
    assert_eq!(login["user_id"].as_u64(), Some(alice.id.0));
    assert!(login["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(login["expires_at"].as_u64().is_some());

    assert_error(
        api.call("POST", "/api/v1/login", None, creds("alice", "wrong-password")).await,
        401,
        "bad_credentials",
    );
    assert_error(
        api.call("POST", "/api/v1/login", None, creds("nobody", "password-123")).await,
        401,
        "bad_credentials",
    );
    assert_error(
        api.call("POST", "/api/v1/login", None, creds("a", "password-123")).await,
        401,
        "bad_credentials",
    );
    server.shutdown().await;
}

#[tokio::test]
async fn endpoints_require_a_live_token_and_logout_revokes_it() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;

    for (method, path) in [
        ("GET", "/api/v1/me"),
        ("POST", "/api/v1/logout"),
        ("GET", "/api/v1/groups"),
        ("GET", "/api/v1/rooms"),
        ("GET", "/api/v1/me/rooms"),
        ("GET", "/api/v1/users/1"),
        ("GET", "/api/v1/presence?users=1"),
        ("GET", "/api/v1/conversations/g:1/messages"),
    ] {
        assert_error(api.call(method, path, None, None).await, 401, "unauthorized");
        assert_error(api.call(method, path, Some("garbage"), None).await, 401, "unauthorized");
    }
    // Anonymous requests are refused before their body is looked at.
    assert_error(
        api.call("POST", "/api/v1/groups", None, Some(json!({"nonsense": true}))).await,
        401,
        "unauthorized",
    );

    let (s, me) = api.call("GET", "/api/v1/me", Some(&alice.token), None).await;
    assert_eq!((s, me["id"].as_u64(), me["username"].as_str()), (200, Some(alice.id.0), Some("alice")));

    // A second session survives the first one's logout.
    let other = api.login("alice").await;
    let (s, body) = api.call("POST", "/api/v1/logout", Some(&alice.token), None).await;
    assert_eq!((s, body), (204, Value::Null));
    assert_error(api.call("GET", "/api/v1/me", Some(&alice.token), None).await, 401, "unauthorized");
    assert_error(api.call("POST", "/api/v1/logout", Some(&alice.token), None).await, 401, "unauthorized");
    assert_eq!(api.call("GET", "/api/v1/me", Some(&other.token), None).await.0, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn the_token_travels_in_the_header_a_cookie_or_the_query() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let http = reqwest::Client::new();
    let me = format!("{}/api/v1/me", server.http_url());

    let by_header = http.get(&me).bearer_auth(&alice.token).send().await.unwrap();
    let by_cookie =
        http.get(&me).header("cookie", format!("theme=dark; im_token={}", alice.token)).send().await.unwrap();
    let by_query = http.get(format!("{me}?token={}", alice.token)).send().await.unwrap();
    for resp in [by_header, by_cookie, by_query] {
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["id"].as_u64(), Some(alice.id.0));
    }
    let bad_cookie = http.get(&me).header("cookie", "im_token=forged.token").send().await.unwrap();
    assert_eq!(bad_cookie.status().as_u16(), 401);
    server.shutdown().await;
}

#[tokio::test]
async fn users_are_found_by_id_and_by_name() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);

    let (s, u) = api.call("GET", &format!("/api/v1/users/{}", bob.id), Some(&alice.token), None).await;
    assert_eq!((s, u["username"].as_str()), (200, Some("bob")));
    assert!(u.get("password_hash").is_none());
    let (s, u) = api.call("GET", "/api/v1/users/by-name/bob", Some(&alice.token), None).await;
    assert_eq!((s, u["id"].as_u64()), (200, Some(bob.id.0)));

    assert_error(api.call("GET", "/api/v1/users/999", Some(&alice.token), None).await, 404, "no_such_user");
    assert_error(
        api.call("GET", "/api/v1/users/by-name/nobody", Some(&alice.token), None).await,
        404,
        "no_such_user",
    );
    assert_error(api.call("GET", "/api/v1/users/abc", Some(&alice.token), None).await, 400, "invalid_field");
    assert_error(api.call("GET", "/api/v1/users/-1", Some(&alice.token), None).await, 400, "invalid_field");
    server.shutdown().await;
}

// ---- groups -----------------------------------------------------------------

async fn group_members(api: &Api, who: &TestUser, group: u64) -> Vec<(u64, String)> {
    let (s, info) = api.call("GET", &format!("/api/v1/groups/{group}"), Some(&who.token), None).await;
    assert_eq!(s, 200, "{info}");
    member_ids(&info)
}

async fn add(api: &Api, actor: &TestUser, group: u64, user: &TestUser, role: Option<&str>) -> (u16, Value) {
    let mut body = json!({"user_id": user.id.0});
    if let Some(role) = role {
        body["role"] = json!(role);
    }
    api.call("POST", &format!("/api/v1/groups/{group}/members"), Some(&actor.token), Some(body)).await
}

async fn remove(api: &Api, actor: &TestUser, group: u64, user: &TestUser) -> (u16, Value) {
    api.call("DELETE", &format!("/api/v1/groups/{group}/members/{}", user.id), Some(&actor.token), None).await
}

#[tokio::test]
async fn groups_are_created_listed_and_shown_to_members_only() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);

    let (s, info) = api
        .call(
            "POST",
            "/api/v1/groups",
            Some(&alice.token),
            Some(json!({"name": " team ", "members": [bob.id.0, bob.id.0, alice.id.0]})),
        )
        .await;
    assert_eq!(s, 201, "{info}");
    let g = info["id"].as_u64().unwrap();
    assert_eq!(info["name"], "team");
    assert_eq!(info["owner"].as_u64(), Some(alice.id.0));
    assert_eq!(member_ids(&info), vec![(alice.id.0, "owner".into()), (bob.id.0, "member".into())]);

    // Members list it; the member sees the same info.
    let (s, mine) = api.call("GET", "/api/v1/groups", Some(&bob.token), None).await;
    assert_eq!((s, ids(&mine)), (200, vec![g]));
    assert_eq!(group_members(&api, &bob, g).await.len(), 2);
    let (s, none) = api.call("GET", "/api/v1/groups", Some(&carol.token), None).await;
    assert_eq!((s, none), (200, json!([])));

    // `members` is optional.
    let (s, solo) =
        api.call("POST", "/api/v1/groups", Some(&carol.token), Some(json!({"name": "solo"}))).await;
    assert_eq!((s, member_ids(&solo).len()), (201, 1));

    assert_error(
        api.call("GET", &format!("/api/v1/groups/{g}"), Some(&carol.token), None).await,
        403,
        "not_member",
    );
    assert_error(api.call("GET", "/api/v1/groups/999", Some(&carol.token), None).await, 404, "no_such_group");
    assert_error(api.call("GET", "/api/v1/groups/abc", Some(&carol.token), None).await, 400, "invalid_field");
    assert_error(
        api.call("POST", "/api/v1/groups", Some(&alice.token), Some(json!({"name": "   "}))).await,
        400,
        "invalid_field",
    );
    assert_error(
        api.call("POST", "/api/v1/groups", Some(&alice.token), Some(json!({"name": "x", "members": [999]})))
            .await,
        404,
        "no_such_user",
    );
    server.shutdown().await;
}

#[tokio::test]
async fn owner_and_admins_manage_members_within_the_cap() {
    let mut cfg = ServerConfig::default();
    cfg.max_group_members = 3;
    let server = start(cfg).await;
    let api = Api::new(&server);
    let alice = api.user("alice").await; // owner
    let bob = api.user("bob").await; // plain member
    let carol = api.user("carol").await; // admin
    let dave = api.user("dave").await;
    let erin = api.user("erin").await;
    let g = api.group(&alice, "capped", &[&bob]).await;

    // A plain member cannot add; an unknown role or "owner" is refused.
    assert_error(add(&api, &bob, g, &dave, None).await, 403, "forbidden");
    assert_error(add(&api, &alice, g, &carol, Some("boss")).await, 400, "invalid_field");
    assert_error(add(&api, &alice, g, &carol, Some("owner")).await, 400, "invalid_field");
    assert_error(add(&api, &erin, g, &dave, None).await, 403, "not_member");
    assert_error(add(&api, &alice, 999, &dave, None).await, 404, "no_such_group");

    // The owner adds an admin: the group is now full.
    assert_eq!(add(&api, &alice, g, &carol, Some("admin")).await.0, 204);
    let full = vec![(alice.id.0, "owner".into()), (bob.id.0, "member".into()), (carol.id.0, "admin".into())];
    assert_eq!(group_members(&api, &alice, g).await, full);

    // The 4th member is refused and nothing changes.
    assert_error(add(&api, &carol, g, &dave, None).await, 409, "group_full");
    assert_error(add(&api, &alice, g, &erin, None).await, 409, "group_full");
    assert_eq!(group_members(&api, &alice, g).await, full);

    // An admin cannot make admins, and cannot remove the owner; nor can the owner leave.
    assert_error(add(&api, &carol, g, &bob, Some("admin")).await, 403, "forbidden");
    assert_error(remove(&api, &carol, g, &alice).await, 403, "forbidden");
    assert_error(remove(&api, &alice, g, &alice).await, 403, "forbidden");
    assert_error(remove(&api, &bob, g, &carol).await, 403, "forbidden");

    // The admin removes a plain member, then adds another.
    assert_eq!(remove(&api, &carol, g, &bob).await.0, 204);
    assert_error(
        api.call("GET", &format!("/api/v1/groups/{g}"), Some(&bob.token), None).await,
        403,
        "not_member",
    );
    assert_error(remove(&api, &carol, g, &bob).await, 403, "not_member");
    assert_eq!(add(&api, &carol, g, &dave, None).await.0, 204);
    assert_eq!(
        group_members(&api, &dave, g).await,
        vec![(alice.id.0, "owner".into()), (carol.id.0, "admin".into()), (dave.id.0, "member".into())]
    );

    // A member leaves by removing themselves.
    assert_eq!(remove(&api, &dave, g, &dave).await.0, 204);
    let (_, mine) = api.call("GET", "/api/v1/groups", Some(&dave.token), None).await;
    assert_eq!(mine, json!([]));
    assert_eq!(group_members(&api, &alice, g).await.len(), 2);
    assert_error(
        api.call("DELETE", &format!("/api/v1/groups/{g}/members/abc"), Some(&alice.token), None).await,
        400,
        "invalid_field",
    );
    server.shutdown().await;
}

// ---- rooms ------------------------------------------------------------------

#[tokio::test]
async fn rooms_are_created_listed_in_pages_joined_and_left() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);

    let (s, room) =
        api.call("POST", "/api/v1/rooms", Some(&alice.token), Some(json!({"name": "lobby"}))).await;
    assert_eq!(s, 201, "{room}");
    let r1 = room["id"].as_u64().unwrap();
    assert_eq!((room["name"].as_str(), room["created_by"].as_u64()), (Some("lobby"), Some(alice.id.0)));
    let (_, joined) = api.call("GET", "/api/v1/me/rooms", Some(&alice.token), None).await;
    assert_eq!(joined, json!([r1]), "the creator has joined");

    let r2 = api.room(&alice, "two").await;
    let r3 = api.room(&alice, "three").await;
    let (s, page) = api.call("GET", "/api/v1/rooms?limit=2", Some(&bob.token), None).await;
    assert_eq!((s, ids(&page)), (200, vec![r1, r2]));
    let (_, page) =
        api.call("GET", &format!("/api/v1/rooms?after={r2}&limit=2"), Some(&bob.token), None).await;
    assert_eq!(ids(&page), vec![r3]);
    let (_, all) = api.call("GET", "/api/v1/rooms", Some(&bob.token), None).await;
    assert_eq!(ids(&all), vec![r1, r2, r3]);
    for bad in ["?limit=0", "?limit=x", "?after=-1"] {
        assert_error(
            api.call("GET", &format!("/api/v1/rooms{bad}"), Some(&bob.token), None).await,
            400,
            "invalid_field",
        );
    }

    assert_eq!(api.call("POST", &format!("/api/v1/rooms/{r2}/join"), Some(&bob.token), None).await.0, 204);
    assert_eq!(api.call("POST", &format!("/api/v1/rooms/{r2}/join"), Some(&bob.token), None).await.0, 204);
    assert_eq!(api.call("POST", &format!("/api/v1/rooms/{r3}/join"), Some(&bob.token), None).await.0, 204);
    let (_, joined) = api.call("GET", "/api/v1/me/rooms", Some(&bob.token), None).await;
    assert_eq!(joined, json!([r2, r3]));
    assert_eq!(api.call("POST", &format!("/api/v1/rooms/{r2}/leave"), Some(&bob.token), None).await.0, 204);
    assert_eq!(api.call("POST", &format!("/api/v1/rooms/{r2}/leave"), Some(&bob.token), None).await.0, 204);
    let (_, joined) = api.call("GET", "/api/v1/me/rooms", Some(&bob.token), None).await;
    assert_eq!(joined, json!([r3]));

    assert_error(
        api.call("POST", "/api/v1/rooms/999/join", Some(&bob.token), None).await,
        404,
        "no_such_room",
    );
    assert_error(
        api.call("POST", "/api/v1/rooms/999/leave", Some(&bob.token), None).await,
        404,
        "no_such_room",
    );
    assert_error(
        api.call("POST", "/api/v1/rooms/x/join", Some(&bob.token), None).await,
        400,
        "invalid_field",
    );
    assert_error(
        api.call("POST", "/api/v1/rooms", Some(&bob.token), Some(json!({"name": ""}))).await,
        400,
        "invalid_field",
    );
    server.shutdown().await;
}

// ---- history ----------------------------------------------------------------

#[tokio::test]
async fn history_pages_back_from_the_newest_for_members_only() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let g = api.group(&alice, "team", &[&bob]).await;

    let path = format!("/api/v1/conversations/g:{g}/messages");
    let (s, page) = api.call("GET", &path, Some(&bob.token), None).await;
    assert_eq!((s, page), (200, json!({"messages": [], "has_more": false})));

    let logic = server.state().logic().clone();
    for i in 1..=3 {
        logic
            .send(alice.id, None, ConversationId::Group(GroupId(g)), cmid(i), format!("m{i}"))
            .await
            .expect("stored");
    }
    let (_, page) = api.call("GET", &format!("{path}?limit=2"), Some(&bob.token), None).await;
    let got: Vec<u64> =
        page["messages"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!((got, page["has_more"].as_bool()), (vec![2, 3], Some(true)));
    assert_eq!(page["messages"][0]["body"], "m2");
    assert_eq!(page["messages"][0]["conv"], format!("g:{g}"));
    assert_eq!(page["messages"][0]["from"].as_u64(), Some(alice.id.0));
    let (_, page) = api.call("GET", &format!("{path}?before=2&limit=2"), Some(&bob.token), None).await;
    assert_eq!((page["messages"].as_array().unwrap().len(), page["has_more"].as_bool()), (1, Some(false)));

    // `:` may be percent-encoded.
    let (s, page) =
        api.call("GET", &format!("/api/v1/conversations/g%3A{g}/messages"), Some(&bob.token), None).await;
    assert_eq!((s, page["messages"].as_array().map(Vec::len)), (200, Some(3)));

    // A direct chat with an existing user is readable (empty); the pair is canonical.
    let (a, b) = (alice.id.0.min(bob.id.0), alice.id.0.max(bob.id.0));
    let (s, page) =
        api.call("GET", &format!("/api/v1/conversations/d:{a}:{b}/messages"), Some(&alice.token), None).await;
    assert_eq!((s, page["has_more"].as_bool()), (200, Some(false)));

    assert_error(api.call("GET", &path, Some(&carol.token), None).await, 403, "not_member");
    assert_error(
        api.call("GET", &format!("/api/v1/conversations/d:{a}:{b}/messages"), Some(&carol.token), None).await,
        403,
        "not_member",
    );
    assert_error(
        api.call("GET", "/api/v1/conversations/g:999/messages", Some(&bob.token), None).await,
        404,
        "no_such_group",
    );
    assert_error(
        api.call("GET", "/api/v1/conversations/r:999/messages", Some(&bob.token), None).await,
        404,
        "no_such_room",
    );
    for bad in ["x:1", "g:abc", "g:0", "g:", "d:2:1", "g1"] {
        assert_error(
            api.call("GET", &format!("/api/v1/conversations/{bad}/messages"), Some(&bob.token), None).await,
            400,
            "invalid_field",
        );
    }
    assert_error(
        api.call("GET", &format!("{path}?limit=0"), Some(&bob.token), None).await,
        400,
        "invalid_field",
    );
    assert_error(
        api.call("GET", &format!("{path}?before=x"), Some(&bob.token), None).await,
        400,
        "invalid_field",
    );
    server.shutdown().await;
}

// ---- presence ---------------------------------------------------------------

#[tokio::test]
async fn presence_lists_existing_related_users_only() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, eve) = (api.user("alice").await, api.user("bob").await, api.user("eve").await);
    api.group(&alice, "pair", &[&bob]).await;

    let (s, list) = api
        .call(
            "GET",
            &format!("/api/v1/presence?users={},{},999,{},{}", alice.id, bob.id, bob.id, eve.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{list}");
    let list = list.as_array().expect("array").clone();
    let users: Vec<UserId> = list.iter().map(|p| UserId(p["user"].as_u64().unwrap())).collect();
    assert_eq!(users, vec![alice.id, bob.id], "eve shares nothing with alice: left out, like unknown ids");
    for p in &list {
        assert_eq!((p["status"].as_str(), p["last_active_at"].as_u64()), (Some("offline"), Some(0)), "{p}");
    }
    let (s, empty) = api.call("GET", "/api/v1/presence?users=", Some(&alice.token), None).await;
    assert_eq!((s, empty), (200, json!([])));
    assert_error(
        api.call("GET", "/api/v1/presence?users=1,x", Some(&alice.token), None).await,
        400,
        "invalid_field",
    );
    assert_error(api.call("GET", "/api/v1/presence", Some(&alice.token), None).await, 400, "invalid_field");
    server.shutdown().await;
}

// ---- bad bodies -------------------------------------------------------------

#[tokio::test]
async fn bad_bodies_answer_json_errors() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.http_url());
    let error = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(ct, "application/json", "status {status}");
        let body: Value = resp.json().await.expect("a JSON error body");
        (status, body)
    };
    let json_post = |p: &str, body: &str| {
        http.post(url(p))
            .bearer_auth(&alice.token)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };

    for bad in ["{", "not json", "", r#"{"name": }"#] {
        assert_error(error(json_post("/api/v1/rooms", bad).send().await.unwrap()).await, 400, "bad_frame");
    }
    for wrong in [r#"{}"#, r#"{"name": 5}"#, r#"[]"#, r#"{"nom": "x"}"#] {
        assert_error(
            error(json_post("/api/v1/rooms", wrong).send().await.unwrap()).await,
            400,
            "invalid_field",
        );
    }
    assert_error(
        error(json_post("/api/v1/register", r#"{"username":"bob"}"#).send().await.unwrap()).await,
        400,
        "invalid_field",
    );
    assert_error(
        error(json_post("/api/v1/groups", r#"{"name":"g","members":["x"]}"#).send().await.unwrap()).await,
        400,
        "invalid_field",
    );

    // No or a wrong content type.
    let plain = http
        .post(url("/api/v1/rooms"))
        .bearer_auth(&alice.token)
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_error(error(plain).await, 400, "bad_frame");
    let form = http
        .post(url("/api/v1/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=alice&password=password-123")
        .send()
        .await
        .unwrap();
    assert_error(error(form).await, 400, "bad_frame");

    // Over 64 KiB.
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(70 * 1024));
    assert_error(error(json_post("/api/v1/rooms", &big).send().await.unwrap()).await, 413, "body_too_large");

    // Nothing was created by any of it.
    let (_, rooms) = api.call("GET", "/api/v1/rooms", Some(&alice.token), None).await;
    assert_eq!(rooms, json!([]));
    server.shutdown().await;
}

// ---- dispatcher, health, metrics -------------------------------------------

#[tokio::test]
async fn dispatch_health_and_metrics() {
    let server = start_default().await;
    let http = reqwest::Client::new();
    let base = server.http_url();
    let port = server.local_addr().port();

    let resp = http.get(format!("{base}/dispatch")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let d: Value = resp.json().await.unwrap();
    assert_eq!(d["url"].as_str(), Some(format!("ws://127.0.0.1:{port}/ws").as_str()), "{d}");
    assert_eq!(d["node"].as_str(), Some(ServerConfig::default().node_name.as_str()));

    let resp = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (200, "ok".to_owned()));

    // An error first, so the API counters have something to show.
    let (s, _) = Api::new(&server).call("GET", "/api/v1/me", None, None).await;
    assert_eq!(s, 401);
    let resp = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.unwrap();
    assert!(text.contains("im_connections"), "{text}");
    assert!(text.contains("im_http_requests_total{status=\"401\"}"), "{text}");
    assert!(text.contains("im_errors_total{code=\"unauthorized\"}"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn dispatch_answers_the_configured_public_url() {
    let mut cfg = ServerConfig::default();
    cfg.public_ws_url = Some("wss://chat.example/ws".into());
    cfg.node_name = "edge-7".into();
    let server = start(cfg).await;
    let d: Value =
        reqwest::get(format!("{}/dispatch", server.http_url())).await.unwrap().json().await.unwrap();
    assert_eq!(d, json!({"url": "wss://chat.example/ws", "node": "edge-7"}));
    server.shutdown().await;
}

#[tokio::test]
async fn a_draining_node_is_not_offered_and_fails_health_checks() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    server.state().set_draining();

    assert_error(api.call("GET", "/dispatch", None, None).await, 503, "unavailable");
    assert_eq!(api.call("GET", "/healthz", None, None).await.0, 503);
    // The business API keeps answering while connections move elsewhere.
    assert_eq!(api.call("GET", "/api/v1/me", Some(&alice.token), None).await.0, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_chat_and_the_javascript_client_are_served_with_a_strict_policy() {
    let server = start_default().await;
    let base = server.http_url();
    let get = |path: &str| reqwest::get(format!("{base}{path}"));
    let page = get("/").await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains("app.js"), "the page loads its script");
    assert!(!html.contains("<script>") && !html.contains(" style=\""), "no inline script or style");
    let client = get("/js/im-client.js").await.unwrap();
    assert_eq!(client.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(client.text().await.unwrap().contains("export class ImClient"));
    for missing in ["/js/nope.js", "/js/..%2FCargo.toml", "/nope.js", "/favicon.ico"] {
        assert_eq!(get(missing).await.unwrap().status(), 404, "{missing}");
    }
    // The API and the operations endpoints are unaffected.
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/api/v1/me").await.unwrap().status(), 401);
}
