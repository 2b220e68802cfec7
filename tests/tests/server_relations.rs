//! The server API's contacts, blocks and moderation over real HTTP and
//! WebSocket: the backend makes two users contacts (both hear it), a block
//! refuses that, and it ends relations; it mutes, bans and lifts them in a
//! group and a room with the conversation's highest rank, and appoints a
//! room moderator.

use im_client::core::{ClientFrame, ContactState, ConversationId, ErrorCode, GroupId, RoomId, ServerFrame};
use im_server::{RunningServer, ServerConfig};
use im_tests::{cmid, Api, Ws};
use serde_json::{json, Value};

const KEY: &str = "server-api-key-for-relations-0123456";

async fn with_key() -> RunningServer {
    let mut cfg = ServerConfig::default();
    cfg.server_api_keys = vec![KEY.into()];
    im_tests::start(cfg).await
}

async fn server(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    api.call(method, &format!("/api/v1/server{path}"), Some(KEY), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_makes_and_ends_contacts_and_blocks_for_users() {
    let srv = with_key().await;
    let api = Api::new(&srv);
    let (ann, ben) = (api.user("ann").await, api.user("ben").await);
    // Contact frames are protocol v2.
    let mut ben_ws = Ws::connect_v(&srv.ws_url(), &ben.token, "ben-phone", 2).await;

    let (s, _) = server(&api, "PUT", &format!("/users/{}/contacts/{}", ann.id.0, ben.id.0), None).await;
    assert_eq!(s, 204);
    let frame = ben_ws.recv_until(|f| matches!(f, ServerFrame::Contact { .. })).await;
    assert!(
        matches!(frame, ServerFrame::Contact { user, state: ContactState::Accepted } if user == ann.id),
        "ben hears it: {frame:?}"
    );
    for (me, other) in [(&ann, &ben), (&ben, &ann)] {
        let (_, list) = server(&api, "GET", &format!("/users/{}/contacts", me.id.0), None).await;
        assert_eq!(list["contacts"][0]["user_id"], other.id.0, "{list}");
        assert_eq!(list["contacts"][0]["state"], "accepted");
    }
    let (s, _) = server(&api, "PUT", &format!("/users/{}/contacts/{}", ben.id.0, ann.id.0), None).await;
    assert_eq!(s, 204, "already contacts: fine");

    // Ben blocks ann (through the backend): the relation ends, and cannot be remade.
    let (s, _) = server(&api, "PUT", &format!("/users/{}/blocks/{}", ben.id.0, ann.id.0), None).await;
    assert_eq!(s, 204);
    let (_, blocks) = server(&api, "GET", &format!("/users/{}/blocks", ben.id.0), None).await;
    assert_eq!(blocks["blocks"], json!([ann.id.0]));
    let (_, list) = server(&api, "GET", &format!("/users/{}/contacts", ann.id.0), None).await;
    assert_eq!(list["contacts"], json!([]), "the block ended it");
    let (s, body) = server(&api, "PUT", &format!("/users/{}/contacts/{}", ann.id.0, ben.id.0), None).await;
    assert_eq!((s, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (s, _) = server(&api, "DELETE", &format!("/users/{}/blocks/{}", ben.id.0, ann.id.0), None).await;
    assert_eq!(s, 204);
    let (s, _) = server(&api, "PUT", &format!("/users/{}/contacts/{}", ann.id.0, ben.id.0), None).await;
    assert_eq!(s, 204, "unblocked: contacts again");
    let (s, _) = server(&api, "DELETE", &format!("/users/{}/contacts/{}", ben.id.0, ann.id.0), None).await;
    assert_eq!(s, 204);
    let (_, list) = server(&api, "GET", &format!("/users/{}/contacts", ann.id.0), None).await;
    assert_eq!(list["contacts"], json!([]), "ended for both");

    // Bad input names its cause and changes nothing.
    let (s, body) = server(&api, "PUT", &format!("/users/{}/contacts/{}", ann.id.0, ann.id.0), None).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_field")));
    let (s, body) = server(&api, "PUT", &format!("/users/999999/contacts/{}", ann.id.0), None).await;
    assert_eq!((s, body["code"].as_str()), (404, Some("no_such_user")));
    let (s, _) =
        api.call("GET", &format!("/api/v1/server/users/{}/blocks", ann.id.0), Some(&ann.token), None).await;
    assert_eq!(s, 401, "a user's token is not a key");
    ben_ws.close().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_moderates_groups_and_rooms_with_the_highest_rank() {
    let srv = with_key().await;
    let api = Api::new(&srv);
    let (owner, mia, noa) = (api.user("owner").await, api.user("mia").await, api.user("noa").await);
    let group = GroupId(api.group(&owner, "g", &[&mia]).await);
    let room = RoomId(api.room(&owner, "lobby").await);
    let (g, r) = (ConversationId::Group(group), ConversationId::Room(room));
    let (s, _) = api.call("POST", &format!("/api/v1/rooms/{}/join", room.0), Some(&noa.token), None).await;
    assert_eq!(s, 204);
    let mut mia_ws = Ws::open(&srv, &mia, "mia-phone").await;

    let sanction = |conv: ConversationId, body: Value| {
        let api = api.clone();
        async move { server(&api, "POST", &format!("/conversations/{conv}/sanctions"), Some(body)).await }
    };
    let (s, out) = sanction(g, json!({"user_id": mia.id.0, "action": "mute", "duration_ms": 60_000})).await;
    assert_eq!(s, 200, "{out}");
    assert!(out["muted_until"].as_u64().unwrap() > 0);
    let rid = mia_ws.rid();
    let reply = mia_ws.request(ClientFrame::send(rid, g, cmid("muted"), "hello?")).await;
    assert!(matches!(reply, ServerFrame::Error { code: ErrorCode::Muted, .. }), "{reply:?}");
    let (_, list) = server(&api, "GET", &format!("/conversations/{g}/sanctions"), None).await;
    assert_eq!(list["sanctions"][0]["user_id"], mia.id.0, "{list}");
    let (s, _) = sanction(g, json!({"user_id": mia.id.0, "action": "unmute"})).await;
    assert_eq!(s, 200);
    assert!(mia_ws.send_message(g, "free").await > 0, "unmuted: sends again");

    // A room: ban noa (she is out and cannot rejoin), then lift it.
    let (s, _) = sanction(r, json!({"user_id": noa.id.0, "action": "ban"})).await;
    assert_eq!(s, 200);
    let (s, body) = api.call("POST", &format!("/api/v1/rooms/{}/join", room.0), Some(&noa.token), None).await;
    assert_eq!((s, body["code"].as_str()), (403, Some("banned")), "{body}");
    let (s, _) = sanction(r, json!({"user_id": noa.id.0, "action": "unban"})).await;
    assert_eq!(s, 200);
    let (s, _) = api.call("POST", &format!("/api/v1/rooms/{}/join", room.0), Some(&noa.token), None).await;
    assert_eq!(s, 204, "unbanned: may rejoin");

    // Room moderators, as the creator.
    let (s, _) = server(&api, "PUT", &format!("/rooms/{}/moderators/{}", room.0, noa.id.0), None).await;
    assert_eq!(s, 204);
    let (_, mods) = server(&api, "GET", &format!("/rooms/{}/moderators", room.0), None).await;
    assert_eq!(mods["moderators"], json!([noa.id.0]));
    let (s, _) = server(&api, "DELETE", &format!("/rooms/{}/moderators/{}", room.0, noa.id.0), None).await;
    assert_eq!(s, 204);

    // What the highest rank cannot do, and bad input.
    let (s, body) = sanction(g, json!({"user_id": owner.id.0, "action": "mute"})).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_field")), "not the owner: {body}");
    let d = ConversationId::direct(mia.id, noa.id);
    let (s, body) = sanction(d, json!({"user_id": mia.id.0, "action": "mute"})).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_field")), "direct chats: {body}");
    let (s, body) = sanction(g, json!({"user_id": mia.id.0, "action": "scold"})).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_field")));
    let (s, body) =
        sanction(ConversationId::Group(GroupId(999)), json!({"user_id": mia.id.0, "action": "kick"})).await;
    assert_eq!((s, body["code"].as_str()), (404, Some("no_such_group")));
    mia_ws.close().await;
    srv.shutdown().await;
}
