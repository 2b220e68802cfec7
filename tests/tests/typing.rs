//! Typing (protocol version 2): forwarded live to the other members'
//! version-2 connections, never to version-1 ones, never stored; refused in
//! rooms and outside one's conversations; rate-limited per connection.

use std::time::{Duration, Instant};

use im_protocol::{ClientFrame, ConversationId, ErrorCode, GroupId, RoomId, ServerFrame, UserId};
use im_tests::{start_default, Api, Ws};

fn typing_frames(frames: &[ServerFrame]) -> Vec<(ConversationId, UserId, bool)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::UserTyping { conv, user, typing } => Some((*conv, *user, *typing)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_members_on_version_2_only() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let conv = ConversationId::Group(GroupId(api.group(&alice, "team", &[&bob, &carol]).await));
    let url = server.ws_url();
    let mut a1 = Ws::connect_v(&url, &alice.token, "a1", 2).await;
    let mut a2 = Ws::connect_v(&url, &alice.token, "a2", 2).await;
    let mut b = Ws::connect_v(&url, &bob.token, "b", 2).await;
    let mut c = Ws::connect(&url, &carol.token, "c").await;
    assert!(matches!(b.hello, ServerFrame::Hello { protocol: 2, .. }), "{:?}", b.hello);
    assert!(matches!(c.hello, ServerFrame::Hello { protocol: 1, .. }), "no v: version 1");
    // Let the connections' presence notices pass.
    for ws in [&mut a1, &mut a2, &mut b, &mut c] {
        ws.frames_within(Duration::from_millis(200)).await;
    }

    for typing in [true, false] {
        let rid = a1.rid();
        let reply = a1.request(ClientFrame::Typing { rid, conv, typing }).await;
        assert!(matches!(reply, ServerFrame::Ok { rid: r } if r == rid), "{reply:?}");
        let got = b.recv_until(|f| matches!(f, ServerFrame::UserTyping { .. })).await;
        assert_eq!(typing_frames(&[got]), vec![(conv, alice.id, typing)]);
    }
    // Not to the version-1 member, not to the typist's own other device.
    assert_eq!(typing_frames(&c.frames_within(Duration::from_millis(300)).await), vec![]);
    assert_eq!(typing_frames(&a2.frames_within(Duration::from_millis(50)).await), vec![]);

    // A version-1 connection does not know the frame.
    let rid = c.rid();
    match c.request(ClientFrame::Typing { rid, conv, typing: true }).await {
        ServerFrame::Error { rid: Some(r), code: ErrorCode::UnknownType, .. } => assert_eq!(r, rid),
        other => panic!("{other:?}"),
    }
    // Nothing was stored: history is empty.
    let rid = b.rid();
    match b.request(ClientFrame::History { rid, conv, before: None, limit: None }).await {
        ServerFrame::HistoryPage { messages, .. } => assert!(messages.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_in_a_direct_chat_and_refusals() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob, eve) = (api.user("alice").await, api.user("bob").await, api.user("eve").await);
    let group = ConversationId::Group(GroupId(api.group(&alice, "pair", &[&bob]).await));
    let room = ConversationId::Room(RoomId(api.room(&alice, "lobby").await));
    let url = server.ws_url();
    let mut a = Ws::connect_v(&url, &alice.token, "a", 2).await;
    let mut b = Ws::connect_v(&url, &bob.token, "b", 2).await;
    let mut e = Ws::connect_v(&url, &eve.token, "e", 2).await;

    let direct = ConversationId::direct(alice.id, bob.id);
    let rid = a.rid();
    assert!(matches!(
        a.request(ClientFrame::Typing { rid, conv: direct, typing: true }).await,
        ServerFrame::Ok { .. }
    ));
    let got = b.recv_until(|f| matches!(f, ServerFrame::UserTyping { .. })).await;
    assert_eq!(typing_frames(&[got]), vec![(direct, alice.id, true)]);

    let cases = [
        (true, room, ErrorCode::Forbidden),
        (false, group, ErrorCode::NotMember),
        (false, direct, ErrorCode::NotMember),
        (false, ConversationId::Group(GroupId(999)), ErrorCode::NoSuchGroup),
        (false, ConversationId::direct(eve.id, UserId(999)), ErrorCode::NoSuchConversation),
    ];
    for (as_alice, conv, code) in cases {
        let ws = if as_alice { &mut a } else { &mut e };
        let rid = ws.rid();
        match ws.request(ClientFrame::Typing { rid, conv, typing: true }).await {
            ServerFrame::Error { code: got, .. } => assert_eq!(got, code, "{conv}"),
            other => panic!("{conv}: {other:?}"),
        }
    }
    // The refused ones reached nobody.
    assert_eq!(typing_frames(&b.frames_within(Duration::from_millis(300)).await), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_rate_limited_per_connection() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let url = server.ws_url();
    let mut a = Ws::connect_v(&url, &alice.token, "a", 2).await;
    let mut b = Ws::connect_v(&url, &bob.token, "b", 2).await;

    const SENT: usize = 12;
    let start = Instant::now();
    for i in 0..SENT {
        let rid = a.rid();
        let reply = a.request(ClientFrame::Typing { rid, conv, typing: i % 2 == 0 }).await;
        assert!(matches!(reply, ServerFrame::Ok { .. }), "every typing frame is answered: {reply:?}");
    }
    let elapsed = start.elapsed();
    let got = typing_frames(&b.frames_within(Duration::from_millis(400)).await);
    // A burst of 4, then one more per 500 ms that passed while sending.
    let allowed = 4 + (elapsed.as_millis() / 500) as usize;
    assert!(got.len() >= 4 && got.len() <= allowed, "{} forwarded of {SENT} in {elapsed:?}", got.len());
    assert!(got.len() < SENT, "the rest were dropped");
    // The forwarded ones are the first ones, in order.
    let expected: Vec<_> = (0..got.len()).map(|i| (conv, alice.id, i % 2 == 0)).collect();
    assert_eq!(got[..4], expected[..4]);
}
