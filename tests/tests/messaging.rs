//! Messaging over real sockets: 1:1, group and room delivery, acks after
//! storage, idempotent resends, gapless ids under concurrency, sync and history.

use std::collections::BTreeMap;
use std::time::Duration;

use im_protocol::{
    ClientFrame, ConversationId, ErrorCode, GroupId, MemberChangeKind, Message, RoomId, ServerFrame, UserId,
};
use im_tests::{cmid, start_default, Api, Ws};

const QUIET: Duration = Duration::from_millis(300);

fn send(ws: &mut Ws, conv: ConversationId, tag: &str, body: &str) -> ClientFrame {
    ClientFrame::send(ws.rid(), conv, cmid(tag), body)
}

fn delivered(f: ServerFrame) -> Message {
    match f {
        ServerFrame::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn acked(f: ServerFrame) -> (u64, bool) {
    match f {
        ServerFrame::Ack { id, duplicate, .. } => (id, duplicate),
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn is_message(f: &ServerFrame) -> bool {
    matches!(f, ServerFrame::Message(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_message_reaches_every_device_of_both_users_but_not_the_sending_one() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let mut alice_phone = Ws::open(&server, &alice, "phone").await;
    let mut alice_laptop = Ws::open(&server, &alice, "laptop").await;
    let mut bob_phone = Ws::open(&server, &bob, "phone").await;

    let conv = ConversationId::direct(alice.id, bob.id);
    let frame = send(&mut alice_phone, conv, "a1", "hi bob");
    assert_eq!(acked(alice_phone.request(frame).await), (1, false));

    for ws in [&mut bob_phone, &mut alice_laptop] {
        let m = delivered(ws.recv_until(is_message).await);
        assert_eq!((m.conv, m.id, m.from, m.body.as_str()), (conv, 1, alice.id, "hi bob"));
    }
    // The sending connection got only the ack.
    let extra = alice_phone.try_recv(QUIET).await.unwrap();
    assert!(extra.is_none(), "sending connection got {extra:?}");

    // Bob answers; ids continue in the same conversation.
    let frame = send(&mut bob_phone, conv, "b1", "hi alice");
    assert_eq!(acked(bob_phone.request(frame).await).0, 2);
    let m = delivered(alice_phone.recv_until(is_message).await);
    assert_eq!((m.id, m.from), (2, bob.id));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_with_same_client_message_id_is_the_same_message() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let mut a = Ws::open(&server, &alice, "a").await;
    let mut b = Ws::open(&server, &bob, "b").await;
    let conv = ConversationId::direct(alice.id, bob.id);

    let first = send(&mut a, conv, "same", "once");
    assert_eq!(acked(a.request(first).await), (1, false));
    let other = send(&mut a, conv, "other", "between");
    assert_eq!(acked(a.request(other).await), (2, false));
    let again = send(&mut a, conv, "same", "once (resent)");
    assert_eq!(acked(a.request(again).await), (1, true), "same id, flagged duplicate");

    // Bob saw exactly two messages, and history holds exactly two.
    assert_eq!(delivered(b.recv().await).id, 1);
    assert_eq!(delivered(b.recv().await).id, 2);
    assert!(b.try_recv(QUIET).await.unwrap().is_none(), "no third delivery");
    let rid = b.rid();
    match b.request(ClientFrame::History { rid, conv, before: None, limit: None }).await {
        ServerFrame::HistoryPage { messages, has_more, .. } => {
            assert_eq!(messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2]);
            assert_eq!(messages[0].body, "once", "the first stored body stands");
            assert!(!has_more);
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_senders_in_one_group_get_ids_one_to_n_without_gaps() {
    const SENDERS: usize = 50;
    const EACH: usize = 4;
    let server = start_default().await;
    let api = Api::new(&server);
    let owner = api.user("owner").await;
    let mut users = Vec::new();
    for i in 0..SENDERS {
        users.push(api.user(&format!("sender{i}")).await);
    }
    let refs: Vec<&_> = users.iter().collect();
    let group = api.group(&owner, "busy", &refs).await;
    let conv = ConversationId::Group(GroupId(group));
    let mut watcher = Ws::open(&server, &owner, "watch").await;

    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let (url, token) = (server.ws_url(), u.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&url, &token, "d").await;
            let mut ids = Vec::new();
            for j in 0..EACH {
                let frame = send(&mut ws, conv, &format!("{i}-{j}"), "x");
                ids.push(acked(ws.request(frame).await).0);
            }
            ids
        }));
    }
    let mut all: Vec<u64> = Vec::new();
    for t in tasks {
        let ids = t.await.unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "one sender's messages keep their order");
        all.extend(ids);
    }
    all.sort_unstable();
    let n = (SENDERS * EACH) as u64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>(), "ids are exactly 1..={n}");

    // Live delivery to the watcher arrived in id order.
    let mut seen = Vec::new();
    while seen.len() < n as usize {
        if let ServerFrame::Message(m) = watcher.recv().await {
            seen.push(m.id);
        }
    }
    assert_eq!(seen, (1..=n).collect::<Vec<_>>(), "live delivery in id order");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_group_member_gets_a_ten_thousand_message_backlog_by_sync_in_pages() {
    const BACKLOG: u64 = 10_000;
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let group = api.group(&alice, "backlog", &[&bob]).await;
    let conv = ConversationId::Group(GroupId(group));
    // Stored through the same logic the gateway uses (no socket per message).
    let logic = server.state().logic().clone();
    for i in 0..BACKLOG {
        logic.send(alice.id, None, conv, cmid(i), format!("m{i}")).await.unwrap();
    }
    // A direct chat too, so sync spans several conversations.
    let direct = ConversationId::direct(alice.id, bob.id);
    for i in 0..3 {
        logic.send(alice.id, None, direct, cmid(format!("d{i}")), "dm".to_owned()).await.unwrap();
    }

    let mut bob_ws = Ws::open(&server, &bob, "phone").await;
    let mut cursors: BTreeMap<ConversationId, u64> = BTreeMap::new();
    let mut got: BTreeMap<ConversationId, Vec<u64>> = BTreeMap::new();
    let mut pages = 0;
    loop {
        let rid = bob_ws.rid();
        let reply = bob_ws.request(ClientFrame::Sync { rid, cursors: cursors.clone(), limit: None }).await;
        let ServerFrame::SyncPage { messages, has_more, .. } = reply else { panic!("{reply:?}") };
        pages += 1;
        assert!(messages.len() <= 500, "pages are bounded");
        for m in messages {
            got.entry(m.conv).or_default().push(m.id);
            cursors.insert(m.conv, m.id);
        }
        if !has_more {
            break;
        }
        assert!(pages < 100, "sync must terminate");
    }
    assert_eq!(got[&conv], (1..=BACKLOG).collect::<Vec<_>>(), "every group message once, in order");
    assert_eq!(got[&direct], vec![1, 2, 3]);
    assert!(pages >= (BACKLOG / 500) as usize, "{pages} pages");

    // Synced up: another sync returns nothing.
    let rid = bob_ws.rid();
    match bob_ws.request(ClientFrame::Sync { rid, cursors, limit: Some(10) }).await {
        ServerFrame::SyncPage { messages, has_more, .. } => assert!(messages.is_empty() && !has_more),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_delivers_live_to_joined_members_and_offers_history() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let room = RoomId(api.room(&alice, "lobby").await);
    let conv = ConversationId::Room(room);
    let mut a = Ws::open(&server, &alice, "a").await;
    let mut b = Ws::open(&server, &bob, "b").await;
    let mut c = Ws::open(&server, &carol, "c").await;

    // Bob joins over the WebSocket; carol does not join.
    let rid = b.rid();
    assert_eq!(b.request(ClientFrame::Join { rid, room }).await, ServerFrame::Ok { rid });
    let frame = send(&mut a, conv, "r1", "hello room");
    assert_eq!(acked(a.request(frame).await).0, 1);
    assert_eq!(delivered(b.recv().await).body, "hello room");
    assert!(c.try_recv(QUIET).await.unwrap().is_none(), "carol is not in the room");

    // Carol cannot send before joining; after joining she reads history.
    let frame = send(&mut c, conv, "c1", "me too");
    match c.request(frame).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::NotMember),
        other => panic!("{other:?}"),
    }
    let rid = c.rid();
    assert_eq!(c.request(ClientFrame::Join { rid, room }).await, ServerFrame::Ok { rid });
    let rid = c.rid();
    match c.request(ClientFrame::History { rid, conv, before: None, limit: Some(10) }).await {
        ServerFrame::HistoryPage { messages, .. } => assert_eq!(messages.len(), 1),
        other => panic!("{other:?}"),
    }
    // Bob leaves: no more deliveries to him.
    let rid = b.rid();
    assert_eq!(b.request(ClientFrame::Leave { rid, room }).await, ServerFrame::Ok { rid });
    let frame = send(&mut a, conv, "r2", "second");
    assert_eq!(acked(a.request(frame).await).0, 2);
    assert_eq!(delivered(c.recv().await).id, 2);
    assert!(b.try_recv(QUIET).await.unwrap().is_none(), "bob left");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_in_ascending_order() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let logic = server.state().logic().clone();
    for i in 0..25 {
        logic.send(alice.id, None, conv, cmid(i), format!("{i}")).await.unwrap();
    }
    let mut ws = Ws::open(&server, &bob, "b").await;
    let mut before = None;
    let mut all = Vec::new();
    loop {
        let rid = ws.rid();
        let reply = ws.request(ClientFrame::History { rid, conv, before, limit: Some(10) }).await;
        let ServerFrame::HistoryPage { messages, has_more, .. } = reply else { panic!("{reply:?}") };
        let ids: Vec<u64> = messages.iter().map(|m| m.id).collect();
        assert!(ids.len() <= 10);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending within a page");
        before = ids.first().copied();
        all.splice(0..0, ids);
        if !has_more {
            break;
        }
    }
    assert_eq!(all, (1..=25).collect::<Vec<_>>());
    server.shutdown().await;
}

/// The `member` frames a connection receives within `QUIET`, as
/// `(user, change, by)`.
async fn member_frames(ws: &mut Ws, group: GroupId) -> Vec<(UserId, MemberChangeKind, UserId)> {
    let got = ws.frames_within(QUIET).await;
    got.into_iter()
        .filter_map(|f| match f {
            ServerFrame::Member { group: g, user, change, by } if g == group => Some((user, change, by)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_reach_every_member_also_at_creation() {
    use MemberChangeKind::{Added, Removed};
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, carol, dave) =
        (api.user("alice").await, api.user("bob").await, api.user("carol").await, api.user("dave").await);
    let mut a = Ws::open(&server, &alice, "a").await;
    let mut b = Ws::open(&server, &bob, "b").await;
    let mut c = Ws::open(&server, &carol, "c").await;
    let mut d = Ws::open(&server, &dave, "d").await;
    let g = GroupId(api.group(&alice, "team", &[&bob, &carol]).await);
    // Creation: each member hears of all three, the owner first.
    let created = vec![(alice.id, Added, alice.id), (bob.id, Added, alice.id), (carol.id, Added, alice.id)];
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(member_frames(ws, g).await, created);
    }
    assert_eq!(member_frames(&mut d, g).await, vec![], "no frame to a non-member");
    // A later addition reaches the old members and the new one.
    let (s, body) = api
        .call(
            "POST",
            &format!("/api/v1/groups/{}/members", g.0),
            Some(&alice.token),
            Some(serde_json::json!({"user_id": dave.id.0})),
        )
        .await;
    assert_eq!(s, 204, "{body}");
    for ws in [&mut a, &mut b, &mut c, &mut d] {
        assert_eq!(member_frames(ws, g).await, vec![(dave.id, Added, alice.id)]);
    }
    // A removal reaches the remaining members and the removed one.
    let (s, body) = api
        .call("DELETE", &format!("/api/v1/groups/{}/members/{}", g.0, carol.id.0), Some(&alice.token), None)
        .await;
    assert_eq!(s, 204, "{body}");
    for ws in [&mut a, &mut b, &mut c, &mut d] {
        assert_eq!(member_frames(ws, g).await, vec![(carol.id, Removed, alice.id)]);
    }
    server.shutdown().await;
}
