//! Moderation over real sockets and HTTP: a group's owner and admins and a
//! room's creator and moderators mute, kick and ban; each action is a
//! system notice in the conversation; a muted member's sends are refused
//! with `muted`, a banned user stays out (`banned`) until unbanned; rights
//! follow rank; and on two PostgreSQL nodes a mute, kick and ban decided on
//! one node hold on the other, in a room and in a group.

use im_client::core::{ConversationId, ErrorCode, GroupId, RoomId};
use im_client::{Client, Event, SendError};
use im_tests::{start_default, until, Api, TestUser};
use serde_json::{json, Value};

async fn sanction(api: &Api, by: &TestUser, conv: ConversationId, body: Value) -> (u16, Value) {
    api.call("POST", &format!("/api/v1/conversations/{conv}/sanctions"), Some(&by.token), Some(body)).await
}

/// The `system` notices of `conv` as `(event, user)`, read by `reader`.
async fn notices(api: &Api, reader: &TestUser, conv: ConversationId) -> Vec<(String, u64)> {
    let (s, page) =
        api.call("GET", &format!("/api/v1/conversations/{conv}/messages"), Some(&reader.token), None).await;
    assert_eq!(s, 200, "{page}");
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "system")
        .map(|m| (m["content"]["event"].as_str().unwrap().to_owned(), m["content"]["user"].as_u64().unwrap()))
        .collect()
}

async fn connect(url: String, user: &TestUser) -> Client {
    let (client, mut events) = Client::builder().url(url).token(user.token.clone()).connect().unwrap();
    until(&mut events, "Synced", |e| matches!(e, Event::Synced)).await;
    // Keep the events flowing; the test reads state through the API.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    client
}

fn refused_with(result: Result<impl std::fmt::Debug, SendError>, code: ErrorCode) {
    match result {
        Err(SendError::Rejected { code: got, .. }) => assert_eq!(got, code),
        other => panic!("expected {code}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_mute_kick_and_ban_in_groups_and_rooms() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, carol, dave) =
        (api.user("alice").await, api.user("bob").await, api.user("carol").await, api.user("dave").await);
    let gid = api.group(&alice, "team", &[&bob, &dave]).await;
    let g = ConversationId::Group(GroupId(gid));
    let (s, _) = api
        .call(
            "POST",
            &format!("/api/v1/groups/{gid}/members"),
            Some(&alice.token),
            Some(json!({"user_id": carol.id, "role": "admin"})),
        )
        .await;
    assert_eq!(s, 204);
    let b = connect(server.ws_url(), &bob).await;
    b.send(g, "before").await.unwrap();

    // An admin mutes a member: sends refused with `muted`, reads still fine.
    let (s, muted) =
        sanction(&api, &carol, g, json!({"user_id": bob.id, "action": "mute", "duration_ms": 60_000})).await;
    assert_eq!(s, 200, "{muted}");
    assert!(muted["muted_until"].as_u64().unwrap() > 0);
    refused_with(b.send(g, "while muted").await, ErrorCode::Muted);
    refused_with(b.react(g, 1, "👍").await, ErrorCode::Muted);
    let (s, _) =
        api.call("GET", &format!("/api/v1/conversations/{g}/messages"), Some(&bob.token), None).await;
    assert_eq!(s, 200, "a muted member still reads");

    // Rank: nobody acts on the owner, members do not moderate, nobody on themselves.
    let refusals = [
        (&carol, json!({"user_id": alice.id, "action": "mute"}), 403, "forbidden"),
        (&dave, json!({"user_id": bob.id, "action": "kick"}), 403, "forbidden"),
        (&alice, json!({"user_id": alice.id, "action": "ban"}), 400, "invalid_field"),
        (&alice, json!({"user_id": bob.id, "action": "mute", "duration_ms": 0}), 400, "invalid_field"),
        (&alice, json!({"user_id": bob.id, "action": "kick", "duration_ms": 5}), 400, "invalid_field"),
        (&alice, json!({"user_id": bob.id, "action": "smite"}), 400, "invalid_field"),
        (&alice, json!({"user_id": 999, "action": "mute"}), 404, "no_such_user"),
    ];
    for (by, body, status, code) in refusals {
        let (s, e) = sanction(&api, by, g, body.clone()).await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{body}");
    }
    let (s, list) =
        api.call("GET", &format!("/api/v1/conversations/{g}/sanctions"), Some(&dave.token), None).await;
    assert_eq!((s, list["code"].as_str()), (403, Some("forbidden")), "members do not see sanctions");

    let (s, _) = sanction(&api, &carol, g, json!({"user_id": bob.id, "action": "unmute"})).await;
    assert_eq!(s, 200);
    b.send(g, "after the mute").await.unwrap();

    // A ban removes and keeps out until lifted; the mute list shows it.
    let (s, banned) = sanction(&api, &alice, g, json!({"user_id": bob.id, "action": "ban"})).await;
    assert_eq!((s, banned["banned"].as_bool()), (200, Some(true)));
    refused_with(b.send(g, "banned").await, ErrorCode::NotMember);
    let members = format!("/api/v1/groups/{gid}/members");
    let add_bob = || api.call("POST", &members, Some(&alice.token), Some(json!({"user_id": bob.id})));
    let (s, e) = add_bob().await;
    assert_eq!((s, e["code"].as_str()), (403, Some("banned")));
    let (_, list) =
        api.call("GET", &format!("/api/v1/conversations/{g}/sanctions"), Some(&carol.token), None).await;
    assert_eq!(list["sanctions"], json!([{"user_id": bob.id, "banned": true, "muted_until": 0}]));
    let (s, _) = sanction(&api, &alice, g, json!({"user_id": bob.id, "action": "unban"})).await;
    assert_eq!(s, 200);
    assert_eq!(add_bob().await.0, 204, "unbanned: may be added again");
    // A kick: removed (as DELETE /groups/{id}/members would), may come back.
    let (s, kicked) = sanction(&api, &carol, g, json!({"user_id": bob.id, "action": "kick"})).await;
    assert_eq!((s, kicked["banned"].as_bool()), (200, Some(false)), "{kicked}");
    refused_with(b.send(g, "kicked").await, ErrorCode::NotMember);
    let (s, e) = sanction(&api, &carol, g, json!({"user_id": bob.id, "action": "kick"})).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("not_member")), "a kick of a non-member");
    assert_eq!(add_bob().await.0, 204, "a kick is not a ban");

    let seen = notices(&api, &dave, g).await;
    let moderation: Vec<(String, u64)> =
        seen.into_iter().filter(|(e, _)| e != "member_added" && e != "role_changed").collect();
    let expected = ["member_muted", "member_unmuted", "member_banned", "member_unbanned", "member_removed"];
    assert_eq!(moderation, expected.iter().map(|e| (e.to_string(), bob.id.0)).collect::<Vec<_>>());

    // Rooms: the creator names a moderator, who kicks, bans and deletes.
    let rid = api.room(&alice, "lobby").await;
    let r = ConversationId::Room(RoomId(rid));
    for u in [&bob, &dave] {
        let (s, _) = api.call("POST", &format!("/api/v1/rooms/{rid}/join"), Some(&u.token), None).await;
        assert_eq!(s, 204);
    }
    let (s, e) =
        api.call("PUT", &format!("/api/v1/rooms/{rid}/moderators/{}", dave.id), Some(&bob.token), None).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "only the creator names moderators");
    let (s, _) = api
        .call("PUT", &format!("/api/v1/rooms/{rid}/moderators/{}", dave.id), Some(&alice.token), None)
        .await;
    assert_eq!(s, 204);
    let (_, mods) = api.call("GET", &format!("/api/v1/rooms/{rid}/moderators"), Some(&bob.token), None).await;
    assert_eq!(mods["moderators"], json!([dave.id]));
    b.join(RoomId(rid)).await.unwrap();
    let spam = b.send(r, "spam spam").await.unwrap();
    let d = connect(server.ws_url(), &dave).await;
    d.recall(r, spam).await.expect("a room moderator deletes a member's message");
    let (s, _) = sanction(&api, &dave, r, json!({"user_id": bob.id, "action": "kick"})).await;
    assert_eq!(s, 200);
    refused_with(b.send(r, "kicked").await, ErrorCode::NotMember);
    b.join(RoomId(rid)).await.expect("a kick is not a ban");
    let (s, e) = sanction(&api, &dave, r, json!({"user_id": alice.id, "action": "ban"})).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "not the creator");
    let (s, _) = sanction(&api, &dave, r, json!({"user_id": bob.id, "action": "ban"})).await;
    assert_eq!(s, 200);
    let (s, e) = api.call("POST", &format!("/api/v1/rooms/{rid}/join"), Some(&bob.token), None).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("banned")));
    let room_notices: Vec<String> = notices(&api, &alice, r).await.into_iter().map(|(e, _)| e).collect();
    assert_eq!(room_notices, ["member_kicked", "member_banned"]);
    let (s, history) =
        api.call("GET", &format!("/api/v1/conversations/{r}/messages"), Some(&alice.token), None).await;
    assert_eq!(s, 200);
    let deleted = history["messages"].as_array().unwrap().iter().find(|m| m["id"] == spam).unwrap().clone();
    assert!(deleted["recalled"].is_u64() && deleted["body"] == "", "{deleted}");

    b.shutdown().await;
    d.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutes_kicks_and_bans_decided_on_one_node_hold_on_the_other_in_rooms_and_groups() {
    if !im_tests::cluster::services_available().await {
        return;
    }
    let cluster = im_tests::cluster::Cluster::new();
    let (n1, n2) = (cluster.node("mod-1").await, cluster.node("mod-2").await);
    let (api1, api2) = (Api::new(&n1), Api::new(&n2));
    let (alice, bob) = (api1.user("alice").await, api1.user("bob").await);
    let rid = api1.room(&alice, "lobby").await;
    let r = ConversationId::Room(RoomId(rid));
    let b = connect(n2.ws_url(), &bob).await;
    b.join(RoomId(rid)).await.unwrap();
    b.send(r, "hello").await.unwrap();

    // A kick on node 1 takes Bob out on node 2; he may join again there.
    let (s, _) = sanction(&api1, &alice, r, json!({"user_id": bob.id, "action": "kick"})).await;
    assert_eq!(s, 200);
    refused_with(b.send(r, "kicked on node 2").await, ErrorCode::NotMember);
    b.join(RoomId(rid)).await.expect("a kick is not a ban, on node 2 too");
    b.send(r, "back").await.unwrap();

    let (s, _) =
        sanction(&api1, &alice, r, json!({"user_id": bob.id, "action": "mute", "duration_ms": 60_000})).await;
    assert_eq!(s, 200);
    refused_with(b.send(r, "muted on node 2").await, ErrorCode::Muted);
    let (s, _) = sanction(&api1, &alice, r, json!({"user_id": bob.id, "action": "ban"})).await;
    assert_eq!(s, 200);
    refused_with(b.send(r, "banned on node 2").await, ErrorCode::NotMember);
    let (s, e) = api2.call("POST", &format!("/api/v1/rooms/{rid}/join"), Some(&bob.token), None).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("banned")), "node 2 keeps the ban too");

    // The same in a group: decided by its owner on node 1, held on node 2.
    let carol = api1.user("carol").await;
    let gid = api1.group(&alice, "team", &[&bob, &carol]).await;
    let g = ConversationId::Group(GroupId(gid));
    b.send(g, "hello team").await.unwrap();
    let members = format!("/api/v1/groups/{gid}/members");
    let add_bob = || api2.call("POST", &members, Some(&alice.token), Some(json!({"user_id": bob.id})));
    let (s, _) =
        sanction(&api1, &alice, g, json!({"user_id": bob.id, "action": "mute", "duration_ms": 60_000})).await;
    assert_eq!(s, 200);
    refused_with(b.send(g, "muted on node 2").await, ErrorCode::Muted);
    let (s, _) = sanction(&api1, &alice, g, json!({"user_id": bob.id, "action": "unmute"})).await;
    assert_eq!(s, 200);
    b.send(g, "unmuted on node 2").await.unwrap();
    let (s, _) = sanction(&api1, &alice, g, json!({"user_id": bob.id, "action": "kick"})).await;
    assert_eq!(s, 200);
    refused_with(b.send(g, "kicked on node 2").await, ErrorCode::NotMember);
    assert_eq!(add_bob().await.0, 204, "a kick is not a ban: re-added through node 2");
    b.send(g, "re-added").await.unwrap();
    let (s, _) = sanction(&api1, &alice, g, json!({"user_id": bob.id, "action": "ban"})).await;
    assert_eq!(s, 200);
    refused_with(b.send(g, "banned on node 2").await, ErrorCode::NotMember);
    let (s, e) = add_bob().await;
    assert_eq!((s, e["code"].as_str()), (403, Some("banned")), "node 2 keeps the group's ban");
    let (s, list) =
        api2.call("GET", &format!("/api/v1/conversations/{g}/sanctions"), Some(&alice.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(list["sanctions"], json!([{"user_id": bob.id, "banned": true, "muted_until": 0}]));
    // Each decision is a notice in the group, read on node 2 by a member.
    let seen: Vec<String> = notices(&api2, &carol, g).await.into_iter().map(|(e, _)| e).collect();
    let expected = ["member_muted", "member_unmuted", "member_removed", "member_added", "member_banned"];
    assert_eq!(seen, expected, "the group's notices");
    b.shutdown().await;
    n1.shutdown().await;
    n2.shutdown().await;
    cluster.cleanup().await;
}
