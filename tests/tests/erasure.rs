//! Erasing a user through the server API, over real HTTP and WebSocket,
//! on the in-memory and the embedded store: with `messages=recall` every
//! message becomes a tombstone that other devices see live and by sync,
//! the user's reactions are taken back, the group they owned passes on,
//! their contacts and memberships end, their tokens stop working and the
//! name is free; with `messages=keep` the messages stay. Handing a group
//! on is tested through the user API too.

use im_client::core::{ClientFrame, ConversationId, ErrorCode, GroupId, Message, RoomId, ServerFrame};
use im_client::{Client, Event};
use im_server::{RunningServer, ServerConfig};
use im_tests::{send_event, Api, TestUser, Ws};
use serde_json::{json, Value};

const KEY: &str = "server-api-key-for-erasure-tests-0123";

fn config() -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.server_api_keys = vec![KEY.into()];
    cfg
}

async fn memory() -> RunningServer {
    im_tests::start(config()).await
}

async fn embedded(dir: &std::path::Path) -> RunningServer {
    im_tests::builder(config()).embedded(dir).expect("store opens").bind("127.0.0.1:0").await.unwrap()
}

async fn server(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    api.call(method, &format!("/api/v1/server{path}"), Some(KEY), body).await
}

async fn history(api: &Api, conv: ConversationId) -> Vec<Value> {
    let (s, page) = server(api, "GET", &format!("/conversations/{conv}/messages?limit=100"), None).await;
    assert_eq!(s, 200, "{page}");
    page["messages"].as_array().unwrap().clone()
}

fn by_id(messages: &[Value], id: u64) -> &Value {
    messages.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("no message {id} in {messages:?}"))
}

/// What the recall scenario set up.
struct Scene {
    eve: TestUser,
    fay: TestUser,
    gus: TestUser,
    group: GroupId,
    room: RoomId,
    /// Eve's messages: (conversation, id).
    eve_sent: Vec<(ConversationId, u64)>,
    /// Fay's message in the group, which Eve reacted to.
    fay_msg: u64,
    /// Eve's edit of her group message.
    edit: u64,
}

async fn scene(srv: &RunningServer) -> Scene {
    let api = Api::new(srv);
    let (eve, fay, gus) = (api.user("eve").await, api.user("fay").await, api.user("gus").await);
    let group = GroupId(api.group(&eve, "team", &[&fay, &gus]).await);
    let (s, _) = api
        .call(
            "POST",
            &format!("/api/v1/groups/{}/members", group.0),
            Some(&eve.token),
            Some(json!({"user_id": gus.id.0, "role": "admin"})),
        )
        .await;
    assert_eq!(s, 204);
    let room = RoomId(api.room(&eve, "lobby").await);
    let (s, _) = api.call("POST", &format!("/api/v1/rooms/{}/join", room.0), Some(&fay.token), None).await;
    assert_eq!(s, 204);
    let (s, _) = api.call("POST", &format!("/api/v1/contacts/{}", fay.id.0), Some(&eve.token), None).await;
    assert_eq!(s, 200);
    let (s, _) = api.call("POST", &format!("/api/v1/contacts/{}", eve.id.0), Some(&fay.token), None).await;
    assert_eq!(s, 200, "fay accepts");

    let (g, r, d) =
        (ConversationId::Group(group), ConversationId::Room(room), ConversationId::direct(eve.id, fay.id));
    let mut ws = Ws::open(srv, &eve, "eve-phone").await;
    let mut fay_ws = Ws::open(srv, &fay, "fay-phone").await;
    let fay_msg = fay_ws.send_message(g, "fay-1").await;
    fay_ws.close().await;
    let mut eve_sent = Vec::new();
    for (conv, tag) in [(g, "eve-g"), (r, "eve-r"), (d, "eve-d")] {
        eve_sent.push((conv, ws.send_message(conv, tag).await));
    }
    // A message whose cmid is the one the erasure would give the recall of
    // that very message (room ids are gapless: it gets id 2): the erasure
    // must still recall it.
    let rid = ws.rid();
    let sneaky = im_client::core::ClientMsgId::new("erase-recall-2").unwrap();
    match ws.request(ClientFrame::send(rid, r, sneaky, "body eve-sneaky")).await {
        ServerFrame::Ack { id, .. } => {
            assert_eq!(id, 2);
            eve_sent.push((r, id));
        }
        other => panic!("{other:?}"),
    }
    let edit = send_event(&mut ws, g, "eve-edit", "edit", eve_sent[0].1, "eve-g, edited", None).await;
    send_event(&mut ws, g, "eve-react", "reaction", fay_msg, "", Some(json!({"emoji": "👍"}))).await;
    ws.close().await;
    Scene { eve, fay, gus, group, room, eve_sent, fay_msg, edit }
}

/// Erasure with `messages=recall`, checked from every side.
async fn recall_everything(srv: &RunningServer) {
    let api = Api::new(srv);
    let s = scene(srv).await;
    let (g, d) = (ConversationId::Group(s.group), ConversationId::direct(s.eve.id, s.fay.id));
    let mut live = Ws::open(srv, &s.fay, "fay-laptop").await;

    let (status, body) = server(&api, "DELETE", &format!("/users/{}", s.eve.id.0), None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_field")), "the policy must be stated");
    let (status, done) =
        server(&api, "DELETE", &format!("/users/{}?messages=recall", s.eve.id.0), None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["messages_recalled"], 4, "{done}");
    assert_eq!(done["reactions_removed"], 1);
    assert_eq!(done["groups_handed_on"], json!([[s.group.0, s.gus.id.0]]), "the admin inherits the group");
    assert_eq!((done["groups_left"].as_u64(), done["rooms_left"].as_u64()), (Some(1), Some(1)));
    assert_eq!(done["contacts_removed"], 1);

    // Fay's open device sees every recall live, and the reaction go.
    let mut recalled = std::collections::BTreeSet::new();
    let mut unreacted = false;
    while recalled.len() < 4 || !unreacted {
        let ServerFrame::Message(m) = live.recv_until(|f| matches!(f, ServerFrame::Message(_))).await else {
            unreachable!()
        };
        assert_eq!(m.from, s.eve.id, "only eve's events: {m:?}");
        match m.kind() {
            "recall" => assert!(recalled.insert((m.conv, m.target.unwrap()))),
            "reaction" => {
                assert_eq!(
                    (m.target, m.content.as_ref().unwrap()["remove"].as_bool()),
                    (Some(s.fay_msg), Some(true))
                );
                unreacted = true;
            }
            other => panic!("unexpected {other}: {m:?}"),
        }
    }
    assert_eq!(recalled, s.eve_sent.iter().copied().collect(), "each of eve's messages, once");

    // History shows tombstones and nothing of what eve wrote.
    let group_history = history(&api, g).await;
    let original = by_id(&group_history, s.eve_sent[0].1);
    assert!(original["recalled"].is_u64(), "{original}");
    assert_eq!(original["body"], "", "no content left");
    assert_eq!(by_id(&group_history, s.edit)["body"], "", "the edit is scrubbed too");
    assert!(by_id(&group_history, s.fay_msg).get("reactions").is_none_or(|r| r == &json!([])));
    let direct = history(&api, d).await;
    assert!(direct.iter().all(|m| !m["body"].as_str().unwrap_or("").contains("eve-")), "{direct:?}");
    for (conv, id) in &s.eve_sent {
        let page = history(&api, *conv).await;
        assert_eq!(by_id(&page, *id)["body"], "", "{conv} {id}");
    }
    let notices: Vec<&str> = group_history
        .iter()
        .filter(|m| m["kind"] == "system")
        .filter_map(|m| m["content"]["event"].as_str())
        .collect();
    assert!(notices.ends_with(&["role_changed", "member_left"]), "{notices:?}");

    // The group is gus's, without eve; fay's contacts are empty.
    let (status, info) =
        api.call("GET", &format!("/api/v1/groups/{}", s.group.0), Some(&s.gus.token), None).await;
    assert_eq!(status, 200);
    assert_eq!(info["owner"], s.gus.id.0, "{info}");
    assert!(info["members"].as_array().unwrap().iter().all(|m| m["user"] != s.eve.id.0), "{info}");
    let (_, contacts) = api.call("GET", "/api/v1/contacts", Some(&s.fay.token), None).await;
    assert_eq!(contacts["contacts"], json!([]), "{contacts}");

    // Eve is gone: token, login, lookups; the name is free for someone new.
    let (status, _) = api.call("GET", "/api/v1/me", Some(&s.eve.token), None).await;
    assert_eq!(status, 401, "her token is refused");
    let (status, _) = api
        .call("POST", "/api/v1/login", None, Some(json!({"username": "eve", "password": "password-123"})))
        .await;
    assert_eq!(status, 401, "no such account");
    let (status, _) = server(&api, "GET", &format!("/users/{}", s.eve.id.0), None).await;
    assert_eq!(status, 404);
    let (status, _) = server(&api, "DELETE", &format!("/users/{}?messages=recall", s.eve.id.0), None).await;
    assert_eq!(status, 404, "erased once");
    let newcomer = api.user("eve").await;
    assert!(newcomer.id.0 > s.gus.id.0, "a new user, a new id");
    let (_, groups) = api.call("GET", "/api/v1/groups", Some(&newcomer.token), None).await;
    assert_eq!(groups, json!([]), "the newcomer inherits nothing");

    // Fay's direct chat with eve stays in her inbox, closed for writing.
    let (_, inbox) = api.call("GET", "/api/v1/conversations", Some(&s.fay.token), None).await;
    assert!(inbox.to_string().contains(&format!("\"{d}\"")), "{inbox}");
    let rid = live.rid();
    let reply = live.request(ClientFrame::send(rid, d, im_tests::cmid("after"), "still there?")).await;
    assert!(
        matches!(reply, ServerFrame::Error { code: ErrorCode::NoSuchConversation, .. }),
        "nobody to write to: {reply:?}"
    );

    // A device of fay's that syncs from scratch gets the same picture.
    let (client, mut ev) = Client::builder().url(srv.ws_url()).token(s.fay.token.clone()).connect().unwrap();
    let mut synced: Vec<Message> = Vec::new();
    while let (Event::Message(m), _) =
        im_tests::until(&mut ev, "sync", |e| matches!(e, Event::Message(_) | Event::Synced)).await
    {
        synced.push(m);
    }
    // (A room syncs only when a device names it; this new device knows none.)
    for (conv, id) in s.eve_sent.iter().filter(|(c, _)| !matches!(c, ConversationId::Room(_))) {
        let recall =
            synced.iter().filter(|m| m.conv == *conv && m.kind() == "recall" && m.target == Some(*id));
        assert_eq!(recall.count(), 1, "the recall of {conv} {id} syncs once");
    }
    client.shutdown().await;
    live.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_with_recall_leaves_tombstones_everywhere_on_the_memory_store() {
    let srv = memory().await;
    recall_everything(&srv).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_with_recall_leaves_tombstones_everywhere_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let srv = embedded(dir.path()).await;
    recall_everything(&srv).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_with_keep_leaves_the_messages_and_ends_the_account() {
    let srv = memory().await;
    let api = Api::new(&srv);
    let s = scene(&srv).await;
    let (status, done) = server(&api, "DELETE", &format!("/users/{}?messages=keep", s.eve.id.0), None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!((done["messages_recalled"].as_u64(), done["reactions_removed"].as_u64()), (Some(0), Some(0)));
    for (conv, id) in &s.eve_sent {
        let page = history(&api, *conv).await;
        let m = by_id(&page, *id);
        assert!(m["body"].as_str().unwrap().starts_with("body eve-") || m["edited"].is_u64(), "{m}");
        assert!(m.get("recalled").is_none_or(Value::is_null), "kept: {m}");
        assert_eq!(m["from"], s.eve.id.0, "under her id");
    }
    let (status, _) =
        api.call("GET", &format!("/api/v1/users/{}", s.eve.id.0), Some(&s.fay.token), None).await;
    assert_eq!(status, 404, "the account is gone");
    let (status, _) = api
        .call("GET", &format!("/api/v1/conversations/r:{}/messages", s.room.0), Some(&s.eve.token), None)
        .await;
    assert_eq!(status, 401);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_app_user_comes_back_as_someone_new_and_a_lone_owners_group_stays_empty() {
    let srv = memory().await;
    let api = Api::new(&srv);
    let (_, ada) = server(&api, "POST", "/users", Some(json!({"subject": "ada-1815", "name": "Ada"}))).await;
    let ada_id = ada["id"].as_u64().unwrap();
    let (s, group) =
        server(&api, "POST", "/groups", Some(json!({"owner": ada_id, "name": "alone", "members": []}))).await;
    assert_eq!(s, 201, "{group}");
    let (s, done) = server(&api, "DELETE", &format!("/users/{ada_id}?messages=recall"), None).await;
    assert_eq!(s, 200, "{done}");
    assert_eq!((done["groups_left"].as_u64(), done["groups_handed_on"].clone()), (Some(1), json!([])));
    let (_, other) = server(&api, "POST", "/users", Some(json!({"subject": "bob-1"}))).await;
    let (s, body) = server(
        &api,
        "POST",
        &format!("/groups/{}/members", group["id"]),
        Some(json!({"user_id": other["id"]})),
    )
    .await;
    assert_eq!((s, body["code"].as_str()), (404, Some("no_such_group")), "no owner left to act as: {body}");
    let (_, again) = server(&api, "POST", "/users", Some(json!({"subject": "ada-1815"}))).await;
    assert_ne!(again["id"].as_u64().unwrap(), ada_id, "the subject is a new user now");
    assert!(again.get("display_name").is_none_or(Value::is_null), "nothing of the old account: {again}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_hands_a_group_on() {
    let srv = memory().await;
    let api = Api::new(&srv);
    let (ann, ben, cal) = (api.user("ann").await, api.user("ben").await, api.user("cal").await);
    let group = api.group(&ann, "g", &[&ben]).await;
    let path = format!("/api/v1/groups/{group}/owner");
    let to = |u: &TestUser| Some(json!({"user_id": u.id.0}));
    let (s, body) = api.call("POST", &path, Some(&ben.token), to(&ben)).await;
    assert_eq!((s, body["code"].as_str()), (403, Some("forbidden")), "only the owner");
    let (s, body) = api.call("POST", &path, Some(&ann.token), to(&cal)).await;
    assert_eq!((s, body["code"].as_str()), (403, Some("not_member")), "only to a member");
    let (s, _) = api.call("POST", &path, Some(&ann.token), to(&ann)).await;
    assert_eq!(s, 204, "naming oneself is fine");
    let (s, _) = api.call("POST", &path, Some(&ann.token), to(&ben)).await;
    assert_eq!(s, 204);
    let conv = format!("g:{group}");
    let (_, page) =
        api.call("GET", &format!("/api/v1/conversations/{conv}/messages"), Some(&ben.token), None).await;
    let changes: Vec<&Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["content"]["event"] == "role_changed")
        .collect();
    assert_eq!(changes.len(), 1, "one notice, for the real change: {page}");
    assert_eq!(
        (changes[0]["content"]["user"].as_u64(), changes[0]["content"]["role"].as_str()),
        (Some(ben.id.0), Some("owner"))
    );
    let (_, info) = api.call("GET", &format!("/api/v1/groups/{group}"), Some(&ann.token), None).await;
    assert_eq!(info["owner"], ben.id.0, "{info}");
    let role = |u: &TestUser| {
        info["members"].as_array().unwrap().iter().find(|m| m["user"] == u.id.0).unwrap()["role"].clone()
    };
    assert_eq!((role(&ann), role(&ben)), (json!("admin"), json!("owner")));
    // Ann may leave now; the server API hands it back through the owner.
    let (s, _) = api
        .call("DELETE", &format!("/api/v1/groups/{group}/members/{}", ann.id.0), Some(&ann.token), None)
        .await;
    assert_eq!(s, 204, "the owner before is an admin, free to leave");
    let (s, _) =
        server(&api, "POST", &format!("/groups/{group}/members"), Some(json!({"user_id": cal.id.0}))).await;
    assert_eq!(s, 204);
    let (s, _) =
        server(&api, "POST", &format!("/groups/{group}/owner"), Some(json!({"user_id": cal.id.0}))).await;
    assert_eq!(s, 204);
    let (_, info) = api.call("GET", &format!("/api/v1/groups/{group}"), Some(&cal.token), None).await;
    assert_eq!(info["owner"], cal.id.0);
    srv.shutdown().await;
}
