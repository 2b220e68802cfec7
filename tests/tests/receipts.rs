//! Receipts (protocol version 2): a member's read and delivered ids reach
//! the other members of direct chats and small groups as `receipt`,
//! coalesced to about one per second; `receipts` answers for any group;
//! sharing can be turned off; rooms have none.

use std::collections::BTreeMap;
use std::time::Duration;

use im_protocol::{
    ClientFrame, ConversationId, ErrorCode, GroupId, MessageId, Receipt, RoomId, ServerFrame, UserId,
};
use im_server::ServerConfig;
use im_tests::{start, start_default, Api, Ws};
use serde_json::json;

/// Longer than one receipt flush interval, with room for a loaded machine.
const FLUSH: Duration = Duration::from_millis(2_500);

async fn ok(ws: &mut Ws, frame: ClientFrame) {
    let rid = frame.rid();
    match ws.request(frame).await {
        ServerFrame::Ok { rid: r } if Some(r) == rid => {}
        other => panic!("{other:?}"),
    }
}

async fn received(ws: &mut Ws, conv: ConversationId, id: MessageId) {
    let rid = ws.rid();
    ok(ws, ClientFrame::Received { rid, cursors: BTreeMap::from([(conv, id)]) }).await;
}

async fn read(ws: &mut Ws, conv: ConversationId, id: MessageId) {
    let rid = ws.rid();
    ok(ws, ClientFrame::Read { rid, conv, id }).await;
}

async fn list(ws: &mut Ws, conv: ConversationId) -> Result<Vec<Receipt>, ErrorCode> {
    let rid = ws.rid();
    match ws.request(ClientFrame::Receipts { rid, conv }).await {
        ServerFrame::ReceiptList { receipts, conv: c, .. } => {
            assert_eq!(c, conv);
            Ok(receipts)
        }
        ServerFrame::Error { code, .. } => Err(code),
        other => panic!("{other:?}"),
    }
}

/// The receipt frames among `frames`, as (conv, user, read, delivered).
fn receipts(frames: &[ServerFrame]) -> Vec<(ConversationId, UserId, MessageId, MessageId)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Receipt { conv, user, read, delivered } => Some((*conv, *user, *read, *delivered)),
            _ => None,
        })
        .collect()
}

async fn next_receipt(ws: &mut Ws) -> (ConversationId, UserId, MessageId, MessageId) {
    let f = ws.recv_until(|f| matches!(f, ServerFrame::Receipt { .. })).await;
    receipts(&[f])[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_how_far_others_received_and_read() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let group = ConversationId::Group(GroupId(api.group(&alice, "trio", &[&bob, &carol]).await));
    let url = server.ws_url();
    let mut a = Ws::connect_v(&url, &alice.token, "a", 2).await;
    let mut b = Ws::connect_v(&url, &bob.token, "b", 2).await;
    let mut c = Ws::connect_v(&url, &carol.token, "c", 2).await;
    for i in 1..=3 {
        a.send_message(group, &format!("m{i}")).await;
    }
    // Bob's device got all three: the others learn "delivered up to 3".
    received(&mut b, group, 3).await;
    assert_eq!(next_receipt(&mut a).await, (group, bob.id, 0, 3));
    assert_eq!(next_receipt(&mut c).await, (group, bob.id, 0, 3));
    // Bob reads two: "seen up to 2".
    read(&mut b, group, 2).await;
    assert_eq!(next_receipt(&mut a).await, (group, bob.id, 2, 3));
    // Not to Bob himself.
    assert!(receipts(&b.frames_within(FLUSH).await).is_empty());

    // The query: every member, by user id; Alice's own sends count as read.
    let got = list(&mut c, group).await.unwrap();
    assert_eq!(
        got,
        vec![
            Receipt { user: alice.id, read: 3, delivered: 3 },
            Receipt { user: bob.id, read: 2, delivered: 3 },
            Receipt { user: carol.id, read: 0, delivered: 0 },
        ]
    );
    // A report above the head counts as the head; reading implies delivered.
    received(&mut c, group, 99).await;
    read(&mut c, group, 1).await;
    assert_eq!(next_receipt(&mut a).await, (group, carol.id, 1, 3), "one coalesced receipt");
    assert_eq!(list(&mut a, group).await.unwrap()[2], Receipt { user: carol.id, read: 1, delivered: 3 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_coalesced_to_about_one_per_second() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let url = server.ws_url();
    let mut a = Ws::connect_v(&url, &alice.token, "a", 2).await;
    let mut b = Ws::connect_v(&url, &bob.token, "b", 2).await;
    for i in 1..=20 {
        a.send_message(conv, &format!("m{i}")).await;
    }
    for id in 1..=20 {
        read(&mut b, conv, id).await;
    }
    let got = receipts(&a.frames_within(FLUSH).await);
    assert!(!got.is_empty() && got.len() <= 3, "20 marks, {} receipts: {got:?}", got.len());
    assert_eq!(got.last(), Some(&(conv, bob.id, 20, 20)), "the last carries the latest ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_off_hides_receipts_and_rooms_and_strangers_are_refused() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, eve) = (api.user("alice").await, api.user("bob").await, api.user("eve").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let url = server.ws_url();
    let mut a = Ws::connect_v(&url, &alice.token, "a", 2).await;
    let mut b = Ws::connect_v(&url, &bob.token, "b", 2).await;
    let mut b2 = Ws::connect_v(&url, &bob.token, "b2", 2).await;
    a.send_message(conv, "m1").await;
    a.send_message(conv, "m2").await;

    let (s, body) = api.call("GET", "/api/v1/me/receipts", Some(&bob.token), None).await;
    assert_eq!((s, body), (200, json!({"shared": true})));
    let (s, body) =
        api.call("PUT", "/api/v1/me/receipts", Some(&bob.token), Some(json!({"shared": false}))).await;
    assert_eq!((s, body), (200, json!({"shared": false})));
    read(&mut b, conv, 2).await;
    // Bob's own devices still follow his read state; Alice learns nothing.
    let got = b2.recv_until(|f| matches!(f, ServerFrame::ReadUpTo { .. })).await;
    assert_eq!(got, ServerFrame::ReadUpTo { conv, id: 2 });
    assert!(receipts(&a.frames_within(FLUSH).await).is_empty());
    let users: Vec<UserId> = list(&mut a, conv).await.unwrap().iter().map(|r| r.user).collect();
    assert_eq!(users, vec![alice.id]);
    let (s, body) =
        api.call("GET", &format!("/api/v1/conversations/{conv}/receipts"), Some(&alice.token), None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({"receipts": [{"user": alice.id.0, "read": 2, "delivered": 2}]}));
    // Sharing on again shows the state kept meanwhile.
    api.call("PUT", "/api/v1/me/receipts", Some(&bob.token), Some(json!({"shared": true}))).await;
    assert_eq!(list(&mut a, conv).await.unwrap()[1], Receipt { user: bob.id, read: 2, delivered: 2 });
    let (s, _) = api.call("PUT", "/api/v1/me/receipts", Some(&bob.token), Some(json!({"shared": 1}))).await;
    assert_eq!(s, 400);

    // Rooms have no receipts; a report for a room is ignored.
    let room = RoomId(api.room(&alice, "lobby").await);
    let rid = a.rid();
    ok(&mut a, ClientFrame::Join { rid, room }).await;
    assert_eq!(list(&mut a, ConversationId::Room(room)).await, Err(ErrorCode::Forbidden));
    received(&mut a, ConversationId::Room(room), 5).await;
    // Strangers and version-1 connections.
    let mut e = Ws::connect_v(&url, &eve.token, "e", 2).await;
    assert_eq!(list(&mut e, conv).await, Err(ErrorCode::NotMember));
    received(&mut e, conv, 2).await; // not hers: ignored
    assert_eq!(list(&mut a, conv).await.unwrap().len(), 2, "eve is not listed");
    let mut old = Ws::connect(&url, &alice.token, "old").await;
    assert_eq!(list(&mut old, conv).await, Err(ErrorCode::UnknownType));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_groups_answer_the_query_but_push_nothing() {
    let mut cfg = ServerConfig::default();
    cfg.receipts_live_max_members = 2;
    let server = start(cfg).await;
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let group = ConversationId::Group(GroupId(api.group(&alice, "trio", &[&bob, &carol]).await));
    let url = server.ws_url();
    let mut a = Ws::connect_v(&url, &alice.token, "a", 2).await;
    let mut b = Ws::connect_v(&url, &bob.token, "b", 2).await;
    a.send_message(group, "m1").await;
    read(&mut b, group, 1).await;
    assert!(receipts(&a.frames_within(FLUSH).await).is_empty());
    assert_eq!(list(&mut a, group).await.unwrap()[1], Receipt { user: bob.id, read: 1, delivered: 1 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_at_the_500_cap_counts_exactly_and_pushes_no_receipts() {
    let server = start_default().await;
    let api = Api::new(&server);
    let owner = api.user("owner").await;
    let mut members = Vec::new();
    for i in 0..499 {
        members.push(api.user(&format!("m{i:03}")).await);
    }
    let refs: Vec<&im_tests::TestUser> = members.iter().collect();
    let group = ConversationId::Group(GroupId(api.group(&owner, "full house", &refs).await));
    let url = server.ws_url();
    let mut o = Ws::connect_v(&url, &owner.token, "o", 2).await;
    for i in 1..=3 {
        o.send_message(group, &format!("m{i}")).await;
    }
    let (last, first) = (&members[498], &members[0]);
    let mut l = Ws::connect_v(&url, &last.token, "l", 2).await;
    let mut f = Ws::connect_v(&url, &first.token, "f", 2).await;
    read(&mut l, group, 2).await;
    received(&mut f, group, 3).await;
    // Exact counts for members at both ends of the list.
    for (ws, unread) in [(&mut l, 1), (&mut f, 3)] {
        let rid = ws.rid();
        match ws.request(ClientFrame::Inbox { rid, after: None, limit: None }).await {
            ServerFrame::InboxPage { entries, .. } => assert_eq!(entries[0].unread, unread),
            other => panic!("{other:?}"),
        }
    }
    // 500 members are above the live-receipt size: the query answers, nothing is pushed.
    let all = list(&mut o, group).await.unwrap();
    assert_eq!(all.len(), 500);
    assert!(all.contains(&Receipt { user: last.id, read: 2, delivered: 2 }));
    assert!(all.contains(&Receipt { user: first.id, read: 0, delivered: 3 }));
    assert!(receipts(&o.frames_within(FLUSH).await).is_empty());
}
