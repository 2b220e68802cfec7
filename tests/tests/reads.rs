//! Read state (protocol version 2): `read` marks a conversation read for
//! the user and the device, the user's other connections get
//! `read_up_to`, the inbox gives every conversation's head, read id,
//! unread count and last message — over WebSocket and HTTP, across joins,
//! offline devices and restarts.

use std::time::Duration;

use im_protocol::{
    ClientFrame, ConversationId, ErrorCode, GroupId, InboxEntry, MessageId, RoomId, ServerFrame,
};
use im_tests::{start_default, start_embedded, Api, TestUser, Ws};
use serde_json::json;

fn read_ups(frames: &[ServerFrame]) -> Vec<(ConversationId, MessageId)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::ReadUpTo { conv, id } => Some((*conv, *id)),
            _ => None,
        })
        .collect()
}

async fn mark(ws: &mut Ws, conv: ConversationId, id: MessageId) -> ServerFrame {
    let rid = ws.rid();
    ws.request(ClientFrame::Read { rid, conv, id }).await
}

async fn inbox_page(
    ws: &mut Ws,
    after: Option<ConversationId>,
    limit: Option<u32>,
) -> (Vec<InboxEntry>, bool) {
    let rid = ws.rid();
    match ws.request(ClientFrame::Inbox { rid, after, limit }).await {
        ServerFrame::InboxPage { entries, has_more, .. } => (entries, has_more),
        other => panic!("inbox: {other:?}"),
    }
}

async fn entry(ws: &mut Ws, conv: ConversationId) -> InboxEntry {
    let (entries, _) = inbox_page(ws, None, None).await;
    entries.into_iter().find(|e| e.conv == conv).unwrap_or_else(|| panic!("{conv} not in the inbox"))
}

/// (head, read, unread) of `conv` in the inbox.
async fn counts(ws: &mut Ws, conv: ConversationId) -> (MessageId, MessageId, u64) {
    let e = entry(ws, conv).await;
    (e.head, e.read, e.unread)
}

async fn ws2(server: &im_server::RunningServer, user: &TestUser, device: &str) -> Ws {
    Ws::connect_v(&server.ws_url(), &user.token, device, 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_on_one_device_clears_the_count_on_the_others() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let mut a1 = ws2(&server, &alice, "a1").await;
    let mut a2 = ws2(&server, &alice, "a2").await;
    let mut b = ws2(&server, &bob, "b").await;
    for i in 1..=3 {
        b.send_message(conv, &format!("b{i}")).await;
    }
    // Bob's own messages never count for him; all three count for Alice.
    assert_eq!(counts(&mut b, conv).await, (3, 3, 0));
    let e = entry(&mut a1, conv).await;
    assert_eq!((e.head, e.read, e.unread), (3, 0, 3));
    let last = e.last.expect("last message");
    assert_eq!((last.id, last.from, last.body.as_str()), (3, bob.id, "body b3"));

    // a1 reads up to 2: a2 is told, a1 (the reporter) is not.
    assert!(matches!(mark(&mut a1, conv, 2).await, ServerFrame::Ok { .. }));
    let got = a2.recv_until(|f| matches!(f, ServerFrame::ReadUpTo { .. })).await;
    assert_eq!(read_ups(&[got]), vec![(conv, 2)]);
    assert_eq!(counts(&mut a2, conv).await, (3, 2, 1));
    // An older id changes nothing and tells nobody; a newer one does.
    assert!(matches!(mark(&mut a2, conv, 1).await, ServerFrame::Ok { .. }));
    assert!(matches!(mark(&mut a2, conv, 3).await, ServerFrame::Ok { .. }));
    let got = a1.recv_until(|f| matches!(f, ServerFrame::ReadUpTo { .. })).await;
    assert_eq!(read_ups(&[got]), vec![(conv, 3)], "the mark of 1 moved nothing");
    assert_eq!(counts(&mut a1, conv).await, (3, 3, 0));
    assert_eq!(read_ups(&a1.frames_within(Duration::from_millis(200)).await), vec![]);
    assert_eq!(read_ups(&b.frames_within(Duration::from_millis(50)).await), vec![], "not the peer");

    // Alice's own message moves her read id with it; Bob's count rises.
    let four = a1.send_message(conv, "a4").await;
    assert_eq!(counts(&mut a2, conv).await, (four, four, 0));
    assert_eq!(counts(&mut b, conv).await, (four, 3, 1));

    // Each device's own report is kept (HTTP shows it).
    let path = format!("/api/v1/conversations/{conv}/read");
    let (s, body) = api.call("GET", &path, Some(&alice.token), None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["read"], json!(four));
    assert_eq!(body["devices"], json!([{"device": "a1", "read": 2}, {"device": "a2", "read": 3}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_marks_are_refused_and_change_nothing() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, eve) = (api.user("alice").await, api.user("bob").await, api.user("eve").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let mut a = ws2(&server, &alice, "a").await;
    let mut e = ws2(&server, &eve, "e").await;
    a.send_message(conv, "m1").await;
    let mut b = ws2(&server, &bob, "b").await;

    // Above the head.
    match mark(&mut b, conv, 2).await {
        ServerFrame::Error { code: ErrorCode::InvalidField, .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(counts(&mut b, conv).await, (1, 0, 1));
    // Id 0 is accepted and moves nothing.
    assert!(matches!(mark(&mut b, conv, 0).await, ServerFrame::Ok { .. }));
    assert_eq!(counts(&mut b, conv).await, (1, 0, 1));
    // Not a party of the direct chat; a group or room one does not belong to.
    match mark(&mut e, conv, 1).await {
        ServerFrame::Error { code: ErrorCode::NotMember, .. } => {}
        other => panic!("{other:?}"),
    }
    let group = ConversationId::Group(GroupId(api.group(&alice, "g", &[]).await));
    match mark(&mut e, group, 0).await {
        ServerFrame::Error { code: ErrorCode::NotMember, .. } => {}
        other => panic!("{other:?}"),
    }
    let room = ConversationId::Room(RoomId(api.room(&alice, "r").await));
    match mark(&mut e, room, 0).await {
        ServerFrame::Error { code: ErrorCode::NotMember, .. } => {}
        other => panic!("{other:?}"),
    }
    match mark(&mut e, ConversationId::Group(GroupId(999)), 0).await {
        ServerFrame::Error { code: ErrorCode::NoSuchGroup, .. } => {}
        other => panic!("{other:?}"),
    }
    // Eve's inbox holds none of it.
    let (entries, has_more) = inbox_page(&mut e, None, None).await;
    assert!(entries.is_empty() && !has_more, "{entries:?}");
    // A version-1 connection does not know the frames.
    let mut v1 = Ws::connect(&server.ws_url(), &bob.token, "old").await;
    match mark(&mut v1, conv, 1).await {
        ServerFrame::Error { code: ErrorCode::UnknownType, .. } => {}
        other => panic!("{other:?}"),
    }
    let rid = v1.rid();
    match v1.request(ClientFrame::Inbox { rid, after: None, limit: None }).await {
        ServerFrame::Error { code: ErrorCode::UnknownType, .. } => {}
        other => panic!("{other:?}"),
    }
    let rid = b.rid();
    match b.request(ClientFrame::Inbox { rid, after: None, limit: Some(0) }).await {
        ServerFrame::Error { code: ErrorCode::InvalidField, .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(counts(&mut b, conv).await, (1, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_starts_at_the_head_and_the_inbox_pages() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, dave) = (api.user("alice").await, api.user("dave").await);
    let mut a = ws2(&server, &alice, "a").await;
    let group_id = api.group(&alice, "old news", &[]).await;
    let group = ConversationId::Group(GroupId(group_id));
    let room_id = api.room(&alice, "lobby").await;
    let room = ConversationId::Room(RoomId(room_id));
    for i in 0..5 {
        a.send_message(group, &format!("g{i}")).await;
        a.send_message(room, &format!("r{i}")).await;
    }
    // Dave is added to the group and joins the room: their history is not unread.
    let (s, body) = api
        .call(
            "POST",
            &format!("/api/v1/groups/{group_id}/members"),
            Some(&alice.token),
            Some(json!({"user_id": dave.id.0})),
        )
        .await;
    assert_eq!(s, 204, "{body}");
    let mut d = ws2(&server, &dave, "d").await;
    let rid = d.rid();
    assert!(matches!(
        d.request(ClientFrame::Join { rid, room: RoomId(room_id) }).await,
        ServerFrame::Ok { .. }
    ));
    // The group's sequence holds the "alice added dave" notice at 6 now:
    // above Dave's read id, and not unread (notices do not count).
    assert_eq!(counts(&mut d, group).await, (6, 5, 0));
    assert_eq!(counts(&mut d, room).await, (5, 5, 0));
    // New messages count; joining again does not clear them.
    a.send_message(room, "r5").await;
    a.send_message(group, "g5").await;
    let rid = d.rid();
    assert!(matches!(
        d.request(ClientFrame::Join { rid, room: RoomId(room_id) }).await,
        ServerFrame::Ok { .. }
    ));
    assert_eq!(counts(&mut d, room).await, (6, 5, 1));
    assert_eq!(counts(&mut d, group).await, (7, 5, 1));

    // Five more direct chats: seven conversations, paged two at a time, in order.
    for i in 0..5 {
        let peer = api.user(&format!("peer{i}")).await;
        let mut p = ws2(&server, &peer, "p").await;
        p.send_message(ConversationId::direct(peer.id, dave.id), "hi").await;
    }
    let (all, has_more) = inbox_page(&mut d, None, None).await;
    assert!(!has_more);
    assert_eq!(all.len(), 7);
    let convs: Vec<ConversationId> = all.iter().map(|e| e.conv).collect();
    let mut sorted = convs.clone();
    sorted.sort();
    assert_eq!(convs, sorted, "ascending conversation ids");
    assert!(all[..5].iter().all(|e| matches!(e.conv, ConversationId::Direct(..)) && e.unread == 1));
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = inbox_page(&mut d, after, Some(2)).await;
        assert!(page.len() <= 2);
        after = page.last().map(|e| e.conv);
        paged.extend(page);
        if !more {
            break;
        }
    }
    assert_eq!(paged, all);
    // HTTP lists the same.
    let (s, body) = api.call("GET", "/api/v1/conversations?limit=200", Some(&dave.token), None).await;
    assert_eq!(s, 200, "{body}");
    let listed: Vec<InboxEntry> = serde_json::from_value(body["conversations"].clone()).unwrap();
    assert_eq!(listed, all);
    assert_eq!(body["has_more"], json!(false));
    let (s, _) = api.call("GET", "/api/v1/conversations?after=nonsense", Some(&dave.token), None).await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_learns_on_reconnect_and_http_marks_reach_sockets() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let mut b = ws2(&server, &bob, "b").await;
    for i in 1..=4 {
        b.send_message(conv, &format!("m{i}")).await;
    }
    // The phone is offline while the laptop reads.
    let mut laptop = ws2(&server, &alice, "laptop").await;
    assert!(matches!(mark(&mut laptop, conv, 3).await, ServerFrame::Ok { .. }));
    let mut phone = ws2(&server, &alice, "phone").await;
    assert_eq!(counts(&mut phone, conv).await, (4, 3, 1));

    // A mark over HTTP (the app's backend, or a web page) reaches every socket.
    let path = format!("/api/v1/conversations/{conv}/read");
    let (s, body) = api.call("POST", &path, Some(&alice.token), Some(json!({"id": 4}))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["read"], json!(4));
    for ws in [&mut laptop, &mut phone] {
        let got = ws.recv_until(|f| matches!(f, ServerFrame::ReadUpTo { .. })).await;
        assert_eq!(read_ups(&[got]), vec![(conv, 4)]);
    }
    let (s, body) = api.call("POST", &path, Some(&alice.token), Some(json!({"id": 5}))).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_field")), "{body}");
    let (s, _) = api.call("POST", &path, Some(&alice.token), Some(json!({"id": "x"}))).await;
    assert_eq!(s, 400);
    let carol = api.user("carol").await;
    let (s, body) = api.call("POST", &path, Some(&carol.token), Some(json!({"id": 1}))).await;
    assert_eq!((s, body["code"].as_str()), (403, Some("not_member")), "{body}");
    let (s, body) = api.call("GET", &path, Some(&carol.token), None).await;
    assert_eq!((s, body["code"].as_str()), (403, Some("not_member")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_state_survives_a_restart_of_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let addr = "127.0.0.1:0";
    let server = start_embedded(dir.path(), addr).await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let group = ConversationId::Group(GroupId(api.group(&alice, "g", &[&bob]).await));
    {
        let mut a = ws2(&server, &alice, "a").await;
        let mut b = ws2(&server, &bob, "b").await;
        for i in 1..=3 {
            a.send_message(conv, &format!("d{i}")).await;
            a.send_message(group, &format!("g{i}")).await;
        }
        assert!(matches!(mark(&mut b, conv, 2).await, ServerFrame::Ok { .. }));
        b.send_message(group, "g4").await;
    }
    server.shutdown().await;
    let server = start_embedded(dir.path(), addr).await;
    let mut b = ws2(&server, &bob, "b").await;
    assert_eq!(counts(&mut b, conv).await, (3, 2, 1));
    assert_eq!(counts(&mut b, group).await, (4, 4, 0));
    let mut a = ws2(&server, &alice, "a").await;
    assert_eq!(counts(&mut a, conv).await, (3, 3, 0));
    assert_eq!(counts(&mut a, group).await, (4, 3, 1));
}

/// A device back from a week away in 100 conversations: one `inbox`
/// request answers every unread count exactly; the missed messages come in
/// sync pages. Prints what that costs (round trips and bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_in_100_conversations_is_counted_in_one_request() {
    const GROUPS: usize = 50;
    const PEERS: usize = 50;
    const EACH: usize = 5;
    let mut cfg = im_server::ServerConfig::default();
    (cfg.limits.rate_per_sec, cfg.limits.rate_burst) = (100_000, 100_000);
    cfg.user_rate_per_sec = 0;
    let server = im_tests::start(cfg).await;
    let api = Api::new(&server);
    let (alice, dave) = (api.user("alice").await, api.user("dave").await);
    let mut a = ws2(&server, &alice, "a").await;
    let mut expected = std::collections::BTreeMap::new();
    for g in 0..GROUPS {
        let conv = ConversationId::Group(GroupId(api.group(&alice, &format!("g{g}"), &[&dave]).await));
        for i in 0..EACH {
            a.send_message(conv, &format!("g{g}-{i}")).await;
        }
        expected.insert(conv, EACH as u64);
    }
    for p in 0..PEERS {
        let peer = api.user(&format!("peer{p}")).await;
        let mut ws = ws2(&server, &peer, "p").await;
        let conv = ConversationId::direct(peer.id, dave.id);
        for i in 0..EACH {
            ws.send_message(conv, &format!("p{p}-{i}")).await;
        }
        expected.insert(conv, EACH as u64);
    }
    // Dave had read one message of the first group before going away.
    let first = *expected.keys().next().unwrap();
    let mut d = ws2(&server, &dave, "d").await;
    assert!(matches!(mark(&mut d, first, 1).await, ServerFrame::Ok { .. }));
    *expected.get_mut(&first).unwrap() -= 1;

    let rid = d.rid();
    let request = ClientFrame::Inbox { rid, after: None, limit: None };
    let request_bytes = im_protocol::codec::encode_client(&request).len();
    let reply = d.request(request).await;
    let reply_bytes = im_protocol::codec::encode_server(&reply).len();
    let ServerFrame::InboxPage { entries, has_more, .. } = reply else { panic!("{reply:?}") };
    assert!(!has_more, "one page holds 100 conversations");
    let got: std::collections::BTreeMap<_, _> = entries.iter().map(|e| (e.conv, e.unread)).collect();
    assert_eq!(got, expected);
    assert!(entries.iter().all(|e| e.last.as_ref().is_some_and(|m| m.id == EACH as u64)));

    // The messages themselves: sync pages from cursor 0 (groups and direct chats are included unnamed).
    let (mut rounds, mut sync_bytes, mut messages) = (0, 0, 0);
    let mut cursors = std::collections::BTreeMap::new();
    loop {
        let rid = d.rid();
        let reply = d.request(ClientFrame::Sync { rid, cursors: cursors.clone(), limit: None }).await;
        sync_bytes += im_protocol::codec::encode_server(&reply).len();
        rounds += 1;
        let ServerFrame::SyncPage { messages: page, has_more, .. } = reply else { panic!("{reply:?}") };
        messages += page.len();
        for m in &page {
            cursors.insert(m.conv, m.id);
        }
        if !has_more {
            break;
        }
    }
    assert_eq!(messages, (GROUPS + PEERS) * EACH);
    println!(
        "inbox of 100 conversations: 1 round trip, request {request_bytes} B, reply {reply_bytes} B \
         ({} B per conversation with its last message); sync of {messages} missed messages: {rounds} \
         round trips, {sync_bytes} B",
        reply_bytes / entries.len()
    );
}
