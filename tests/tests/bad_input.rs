//! Bad input over real sockets: every case gets its documented error or
//! close code, changes nothing stored, and leaves other connections working.

use std::time::Duration;

use im_protocol::{ClientFrame, CloseCode, ConversationId, ErrorCode, GroupId, RoomId, ServerFrame, UserId};
use im_server::ServerConfig;
use im_tests::{cmid, start, start_default, Api, Ended, Ws};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn error_code(f: &ServerFrame) -> (Option<u64>, ErrorCode) {
    match f {
        ServerFrame::Error { rid, code, .. } => (*rid, *code),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

async fn next_error(ws: &mut Ws) -> (Option<u64>, ErrorCode) {
    error_code(&ws.recv_until(|f| matches!(f, ServerFrame::Error { .. })).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_specific_errors_and_store_nothing() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let group = GroupId(api.group(&alice, "g", &[&bob]).await);
    let conv = ConversationId::Group(group);
    let mut ws = Ws::open(&server, &alice, "a").await;
    let mut bystander = Ws::open(&server, &bob, "b").await;

    let cases: &[(&str, Option<u64>, ErrorCode)] = &[
        ("not json at all", None, ErrorCode::BadFrame),
        ("[1,2,3]", None, ErrorCode::BadFrame),
        ("{\"rid\":1}", Some(1), ErrorCode::UnknownType),
        ("{\"type\":\"explode\",\"rid\":2}", Some(2), ErrorCode::UnknownType),
        (
            "{\"type\":\"send\",\"rid\":3,\"conv\":\"g:1\",\"body\":\"no cmid\"}",
            Some(3),
            ErrorCode::InvalidField,
        ),
        (
            "{\"type\":\"send\",\"rid\":4,\"conv\":\"x:1\",\"cmid\":\"c\",\"body\":\"\"}",
            Some(4),
            ErrorCode::InvalidField,
        ),
        (
            "{\"type\":\"send\",\"rid\":5,\"conv\":\"g:1\",\"cmid\":\"has space\",\"body\":\"\"}",
            Some(5),
            ErrorCode::InvalidField,
        ),
        ("{\"type\":\"join\",\"rid\":6,\"room\":\"lobby\"}", Some(6), ErrorCode::InvalidField),
        ("{\"type\":\"sync\",\"rid\":7,\"cursors\":{\"g:1\":-5}}", Some(7), ErrorCode::InvalidField),
    ];
    for (text, rid, code) in cases {
        ws.send_text((*text).to_string()).await;
        assert_eq!(next_error(&mut ws).await, (*rid, *code), "{text}");
    }
    ws.send_raw(WsMessage::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(next_error(&mut ws).await, (None, ErrorCode::BadFrame), "binary frame");
    // Valid JSON nested past the limit: its own message, not "not valid JSON".
    let deep = format!(r#"{{"type":"ping","rid":8,"x":{}{}}}"#, "[".repeat(500), "]".repeat(500));
    ws.send_text(deep).await;
    match ws.recv_until(|f| matches!(f, ServerFrame::Error { .. })).await {
        ServerFrame::Error { code, message, .. } => {
            assert_eq!((code, message.as_str()), (ErrorCode::BadFrame, "JSON nested deeper than 127 levels"))
        }
        other => panic!("{other:?}"),
    }

    // Requests that parse but are not allowed.
    let big = "x".repeat(im_protocol::limits::DEFAULT_MAX_BODY_BYTES + 1);
    let carol = api.user("carol").await;
    let stranger_group = GroupId(api.group(&carol, "private", &[]).await);
    let requests = vec![
        (ClientFrame::send(10, conv, cmid("big"), big), ErrorCode::BodyTooLarge),
        (ClientFrame::send(11, ConversationId::Group(stranger_group), cmid("s"), "hi"), ErrorCode::NotMember),
        (ClientFrame::send(12, ConversationId::Group(GroupId(999)), cmid("m"), ""), ErrorCode::NoSuchGroup),
        (
            ClientFrame::send(13, ConversationId::direct(alice.id, UserId(999)), cmid("d"), ""),
            ErrorCode::NoSuchConversation,
        ),
        (
            ClientFrame::send(14, ConversationId::direct(bob.id, carol.id), cmid("o"), ""),
            ErrorCode::NotMember,
        ),
        (ClientFrame::Join { rid: 15, room: RoomId(4242) }, ErrorCode::NoSuchRoom),
        (ClientFrame::Leave { rid: 16, room: RoomId(4242) }, ErrorCode::NoSuchRoom),
        (ClientFrame::send(17, ConversationId::Room(RoomId(4242)), cmid("r"), ""), ErrorCode::NoSuchRoom),
        (
            ClientFrame::History {
                rid: 18,
                conv: ConversationId::Group(stranger_group),
                before: None,
                limit: None,
            },
            ErrorCode::NotMember,
        ),
        (ClientFrame::History { rid: 19, conv, before: None, limit: Some(0) }, ErrorCode::InvalidField),
        (
            ClientFrame::QueryPresence { rid: 20, users: (1..=501).map(UserId).collect() },
            ErrorCode::InvalidField,
        ),
        // Mentions: of a non-member, twice the same user, too many.
        (
            ClientFrame::Send {
                rid: 21,
                conv,
                cmid: cmid("m1"),
                body: "".into(),
                mentions: vec![carol.id],
                kind: None,
                content: None,
                reply_to: None,
                target: None,
            },
            ErrorCode::InvalidField,
        ),
        (
            ClientFrame::Send {
                rid: 22,
                conv,
                cmid: cmid("m2"),
                body: "".into(),
                mentions: vec![bob.id, bob.id],
                kind: None,
                content: None,
                reply_to: None,
                target: None,
            },
            ErrorCode::InvalidField,
        ),
        (
            ClientFrame::Send {
                rid: 23,
                conv,
                cmid: cmid("m3"),
                body: "".into(),
                mentions: (1..=51).map(UserId).collect(),
                kind: None,
                content: None,
                reply_to: None,
                target: None,
            },
            ErrorCode::InvalidField,
        ),
    ];
    for (frame, code) in requests {
        let rid = frame.rid();
        let reply = ws.request(frame).await;
        assert_eq!(error_code(&reply), (rid, code));
    }

    // Nothing was stored anywhere, and the connection still works.
    let logic = server.state().logic().clone();
    for (reader, c) in [
        (alice.id, conv),
        (carol.id, ConversationId::Group(stranger_group)),
        (carol.id, ConversationId::direct(bob.id, carol.id)),
    ] {
        let page = logic.history(reader, c, None, None).await.unwrap();
        assert!(page.messages.is_empty(), "{c} has messages");
    }
    assert!(logic.my_rooms(alice.id).await.unwrap().is_empty(), "no room joined");
    let rid = ws.rid();
    let ok = ws.request(ClientFrame::send(rid, conv, cmid("fine"), "fine")).await;
    assert!(matches!(ok, ServerFrame::Ack { id: 1, .. }), "{ok:?}");
    // The bystander saw only the one good message.
    match bystander.recv().await {
        ServerFrame::Message(m) => assert_eq!((m.id, m.body.as_str()), (1, "fine")),
        other => panic!("{other:?}"),
    }
    let errors = server.state().metrics().render();
    assert!(errors.contains("im_errors_total{code=\"bad_frame\"} 4"), "errors counted by code:\n{errors}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_with_1009_and_other_connections_carry_on() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let mut ws = Ws::open(&server, &alice, "a").await;
    let mut other = Ws::open(&server, &alice, "b").await;
    let huge = format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(im_protocol::limits::DEFAULT_MAX_FRAME_BYTES)
    );
    ws.send_text(huge).await;
    assert_eq!(ws.closed().await, Ended::Closed(CloseCode::FRAME_TOO_BIG));
    let rid = other.rid();
    assert_eq!(
        other.request(ClientFrame::Ping { rid: Some(rid) }).await,
        ServerFrame::Pong { rid: Some(rid) }
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_messages_share_one_rate_whatever_their_connections() {
    let mut cfg = ServerConfig::default();
    (cfg.limits.rate_per_sec, cfg.limits.rate_burst) = (1000, 1000);
    (cfg.user_rate_per_sec, cfg.user_rate_burst) = (1, 6);
    let server = start(cfg).await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let g = ConversationId::Group(GroupId(api.group(&alice, "g", &[&bob]).await));
    let mut conns = Vec::new();
    for d in ["a1", "a2", "a3"] {
        conns.push(Ws::open(&server, &alice, d).await);
    }
    // Nine sends spread over three connections: the user's burst of six passes.
    let (mut acked, mut limited) = (0, 0);
    for i in 0..9 {
        let ws = &mut conns[i % 3];
        let rid = ws.rid();
        match ws.request(ClientFrame::send(rid, g, cmid(format!("m{i}")), "hi")).await {
            ServerFrame::Ack { .. } => acked += 1,
            ServerFrame::Error { code: ErrorCode::RateLimited, .. } => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!((6..=7).contains(&acked), "{acked} acked, {limited} limited");
    assert_eq!(acked + limited, 9);
    // Another user is not affected.
    let mut b = Ws::open(&server, &bob, "b").await;
    b.send_message(g, "bob-1").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rate_limited_answer_arrives_before_the_4004_close() {
    let mut cfg = ServerConfig::default();
    cfg.limits.rate_per_sec = 1;
    cfg.limits.rate_burst = 10;
    let server = start(cfg).await;
    let alice = Api::new(&server).user("alice").await;
    for frames in [21u64, 25, 30] {
        let mut ws = Ws::open(&server, &alice, &format!("f{frames}")).await;
        // One write of all frames: 10 pass on the burst, the next 10 are
        // refused one by one, the 21st closes the connection.
        let text: Vec<String> = (0..frames).map(|i| format!("{{\"type\":\"ping\",\"rid\":{i}}}")).collect();
        for t in &text {
            if ws.send_raw(WsMessage::Text(t.clone().into())).await.is_err() {
                break;
            }
        }
        let (mut pongs, mut limited) = (Vec::new(), Vec::new());
        let ended = loop {
            match ws.try_recv(Duration::from_secs(10)).await {
                Ok(Some(ServerFrame::Pong { rid })) => pongs.push(rid.unwrap()),
                Ok(Some(ServerFrame::Error { code: ErrorCode::RateLimited, rid, .. })) => {
                    limited.push(rid.unwrap())
                }
                Ok(Some(other)) => panic!("{other:?}"),
                Ok(None) => panic!("not closed"),
                Err(ended) => break ended,
            }
        };
        assert_eq!(ended, Ended::Closed(CloseCode::POLICY_VIOLATION), "{frames} frames");
        assert_eq!(pongs, (0..10).collect::<Vec<_>>(), "{frames} frames");
        assert_eq!(limited, (10..20).collect::<Vec<_>>(), "{frames} frames: every refusal before the close");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_rate_limited_and_sustained_flooding_closes_with_4004() {
    let mut cfg = ServerConfig::default();
    cfg.limits.rate_per_sec = 5;
    cfg.limits.rate_burst = 10;
    let server = start(cfg).await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let mut ws = Ws::open(&server, &alice, "a").await;

    // A burst of 15 pings: 10 pass, the rest are refused (not processed).
    for i in 0..15 {
        ws.send(&ClientFrame::Ping { rid: Some(100 + i) }).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    while pongs + limited < 15 {
        match ws.recv().await {
            ServerFrame::Pong { .. } => pongs += 1,
            ServerFrame::Error { code: ErrorCode::RateLimited, .. } => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!((10..=11).contains(&pongs), "{pongs} pongs");
    assert_eq!(pongs + limited, 15);

    // Keep flooding: the connection is closed as a policy violation.
    let mut flooder = Ws::open(&server, &alice, "f").await;
    for i in 0..200 {
        if flooder
            .send_raw(WsMessage::Text(format!("{{\"type\":\"ping\",\"rid\":{i}}}").into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(flooder.closed().await, Ended::Closed(CloseCode::POLICY_VIOLATION));
    // A well-behaved connection of the same user is unaffected.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rid = ws.rid();
    assert_eq!(ws.request(ClientFrame::Ping { rid: Some(rid) }).await, ServerFrame::Pong { rid: Some(rid) });
    server.shutdown().await;
}
