//! Structured content and replies: a message's kind and content object,
//! and the message it replies to, reach every device live, by sync and in
//! history exactly as sent; an older client still sees the fallback body;
//! wrong shapes, unknown kinds and replies to nothing are refused and
//! store nothing.

use im_protocol::content::{Content, Location, Media};
use im_protocol::{ClientFrame, ConversationId, ErrorCode, GroupId, Message, MessageId, ServerFrame};
use im_tests::{cmid, start_default, Api, Ws};
use serde_json::{json, Value};

fn send(
    conv: ConversationId,
    rid: u64,
    tag: &str,
    kind: Option<&str>,
    content: Option<Value>,
    reply_to: Option<MessageId>,
) -> ClientFrame {
    ClientFrame::Send {
        rid,
        conv,
        cmid: cmid(tag),
        body: format!("[{}]", kind.unwrap_or("text")),
        mentions: Vec::new(),
        kind: kind.map(str::to_owned),
        content,
        reply_to,
        target: None,
    }
}

async fn history(ws: &mut Ws, conv: ConversationId) -> Vec<Message> {
    let rid = ws.rid();
    match ws.request(ClientFrame::History { rid, conv, before: None, limit: None }).await {
        ServerFrame::HistoryPage { messages, .. } => messages,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_content_and_replies_reach_every_device_as_sent() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::Group(GroupId(api.group(&alice, "g", &[&bob]).await));
    let mut a = Ws::open(&server, &alice, "a").await;
    let mut b = Ws::open(&server, &bob, "b").await;
    let image = json!({"url": "https://cdn.example/cat.png", "mime": "image/png", "width": 640, "height": 480, "size": 31337});
    let pin = json!({"lat": 48.8584, "lon": 2.2945, "name": "Tour Eiffel"});
    let custom = json!({"amount": "12.50", "currency": "EUR", "note": {"nested": [1, 2]}});
    let frames = [
        send(conv, a.rid(), "t", None, None, None),
        send(conv, a.rid(), "i", Some("image"), Some(image.clone()), None),
        send(conv, a.rid(), "l", Some("location"), Some(pin.clone()), Some(1)),
        send(conv, a.rid(), "x", Some("x-payment"), Some(custom.clone()), Some(2)),
        send(conv, a.rid(), "e", Some("text"), None, Some(3)),
    ];
    for f in frames {
        assert!(matches!(a.request(f).await, ServerFrame::Ack { .. }));
    }
    // Live, on Bob's device.
    let mut live = Vec::new();
    while live.len() < 5 {
        if let ServerFrame::Message(m) = b.recv().await {
            live.push(m);
        }
    }
    let shape: Vec<(MessageId, &str, Option<MessageId>)> =
        live.iter().map(|m| (m.id, m.kind(), m.reply_to)).collect();
    assert_eq!(
        shape,
        vec![
            (1, "text", None),
            (2, "image", None),
            (3, "location", Some(1)),
            (4, "x-payment", Some(2)),
            (5, "text", Some(3))
        ]
    );
    assert_eq!(live[4].kind, None, "an explicit text kind is stored as plain text");
    assert_eq!(live[1].content.as_ref(), Some(&image));
    assert_eq!(live[3].content.as_ref(), Some(&custom));
    assert_eq!(
        live[2].typed_content().unwrap(),
        Content::Location(Location { lat: 48.8584, lon: 2.2945, name: Some("Tour Eiffel".into()) })
    );
    match live[1].typed_content().unwrap() {
        Content::Image(Media { width: Some(640), height: Some(480), .. }) => {}
        other => panic!("{other:?}"),
    }
    // By sync and in history: the same messages.
    let rid = b.rid();
    match b.request(ClientFrame::Sync { rid, cursors: Default::default(), limit: None }).await {
        ServerFrame::SyncPage { messages, .. } => assert_eq!(messages, live),
        other => panic!("{other:?}"),
    }
    assert_eq!(history(&mut b, conv).await, live);
    // A client that knows nothing of kinds still has the fallback body.
    let raw = im_protocol::codec::encode_server(&ServerFrame::Message(live[1].clone()));
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!((v["body"].as_str(), v["kind"].as_str()), (Some("[image]"), Some("image")));
    let plain = im_protocol::codec::encode_server(&ServerFrame::Message(live[0].clone()));
    assert!(!plain.contains("kind") && !plain.contains("content") && !plain.contains("reply_to"), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_and_replies_to_nothing_are_refused_and_store_nothing() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let conv = ConversationId::Group(GroupId(api.group(&alice, "g", &[]).await));
    let mut a = Ws::open(&server, &alice, "a").await;
    let rid = a.rid();
    assert!(matches!(
        a.request(send(conv, rid, "ok", None, None, None)).await,
        ServerFrame::Ack { id: 1, .. }
    ));
    let big = json!({"blob": "x".repeat(im_protocol::limits::DEFAULT_MAX_BODY_BYTES)});
    let cases: Vec<(ClientFrame, ErrorCode)> = vec![
        (
            send(conv, 10, "a", Some("image"), Some(json!({"url": "javascript:alert(1)"})), None),
            ErrorCode::InvalidField,
        ),
        (send(conv, 11, "b", Some("image"), None, None), ErrorCode::InvalidField),
        (
            send(conv, 12, "c", Some("location"), Some(json!({"lat": 100, "lon": 0})), None),
            ErrorCode::InvalidField,
        ),
        (
            send(conv, 13, "d", Some("file"), Some(json!({"url": "https://x/y"})), None),
            ErrorCode::InvalidField,
        ),
        (send(conv, 14, "e", Some("sticker"), Some(json!({})), None), ErrorCode::InvalidField),
        (send(conv, 15, "f", None, Some(json!({"text": "hi"})), None), ErrorCode::InvalidField),
        (send(conv, 16, "g", Some("x-thing"), Some(json!([1, 2])), None), ErrorCode::InvalidField),
        (send(conv, 17, "h", Some("x-thing"), Some(big), None), ErrorCode::BodyTooLarge),
        (send(conv, 18, "i", None, None, Some(2)), ErrorCode::InvalidField),
        (send(conv, 19, "j", None, None, Some(0)), ErrorCode::InvalidField),
    ];
    for (frame, code) in cases {
        let rid = frame.rid();
        match a.request(frame).await {
            ServerFrame::Error { rid: r, code: c, .. } => assert_eq!((r, c), (rid, code)),
            other => panic!("{other:?}"),
        }
    }
    let stored = history(&mut a, conv).await;
    assert_eq!(stored.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1], "nothing more was stored");
    // Malformed fields are refused by the decoder.
    a.send_text(json!({"type": "send", "rid": 30, "conv": conv.to_string(), "cmid": "k", "body": "", "reply_to": "one"}).to_string()).await;
    match a.recv().await {
        ServerFrame::Error { rid: Some(30), code: ErrorCode::InvalidField, .. } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_counts_against_the_page_byte_budget() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let conv = ConversationId::Group(GroupId(api.group(&alice, "g", &[]).await));
    let mut a = Ws::open(&server, &alice, "a").await;
    // 80 messages with a 1-byte body and ~15 KB of content: ~1.2 MB in all.
    let blob = "x".repeat(15_000);
    for i in 0..80 {
        let rid = a.rid();
        let frame = send(conv, rid, &format!("c{i}"), Some("x-blob"), Some(json!({"data": blob})), None);
        assert!(matches!(a.request(frame).await, ServerFrame::Ack { .. }));
    }
    let rid = a.rid();
    match a.request(ClientFrame::Sync { rid, cursors: Default::default(), limit: None }).await {
        ServerFrame::SyncPage { messages, has_more, .. } => {
            assert!(has_more, "a page stops at about 1 MiB");
            assert!(
                messages.len() < 75 && messages.len() > 50,
                "{} messages in the first page",
                messages.len()
            );
        }
        other => panic!("{other:?}"),
    }
    let rid = a.rid();
    match a.request(ClientFrame::History { rid, conv, before: None, limit: None }).await {
        ServerFrame::HistoryPage { messages, has_more, .. } => {
            assert!(
                has_more && messages.len() < 75,
                "{} messages in the newest history page",
                messages.len()
            );
        }
        other => panic!("{other:?}"),
    }
}
