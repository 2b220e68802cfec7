//! Events in the id sequence (issue 14): reactions, edits, recalls and
//! system notices reach a second device live and by sync, in id order,
//! exactly once; history shows the current state; unread counts leave
//! events out; bad events are refused and store nothing; a recall leaves
//! no content in the embedded store's files or in PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;

use im_protocol::events::{self, EDIT, REACTION, RECALL};
use im_protocol::{ClientFrame, ConversationId, ErrorCode, GroupId, Message, MessageId, ServerFrame, UserId};
use im_server::{RunningServer, ServerConfig};
use im_tests::cluster::{services_available, Cluster};
use im_tests::{cmid, event_frame as event, send_event, start, start_embedded, Api, TestUser, Ws};
use serde_json::json;

/// Sends an event that must be refused with `code`.
async fn refused(ws: &mut Ws, frame: ClientFrame, code: ErrorCode) {
    match ws.request(frame).await {
        ServerFrame::Error { code: got, message, .. } => assert_eq!(got, code, "{message}"),
        other => panic!("expected {code}, got {other:?}"),
    }
}

async fn history(ws: &mut Ws, conv: ConversationId) -> Vec<Message> {
    let rid = ws.rid();
    match ws.request(ClientFrame::History { rid, conv, before: None, limit: None }).await {
        ServerFrame::HistoryPage { messages, .. } => messages,
        other => panic!("{other:?}"),
    }
}

async fn sync_all(ws: &mut Ws) -> Vec<Message> {
    let mut cursors: BTreeMap<ConversationId, MessageId> = BTreeMap::new();
    let mut all = Vec::new();
    loop {
        let rid = ws.rid();
        match ws.request(ClientFrame::Sync { rid, cursors: cursors.clone(), limit: Some(3) }).await {
            ServerFrame::SyncPage { messages, has_more, .. } => {
                for m in messages {
                    cursors.insert(m.conv, m.id);
                    all.push(m);
                }
                if !has_more {
                    return all;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

async fn unread(ws: &mut Ws, conv: ConversationId) -> u64 {
    let rid = ws.rid();
    match ws.request(ClientFrame::Inbox { rid, after: None, limit: None }).await {
        ServerFrame::InboxPage { entries, .. } => {
            entries.into_iter().find(|e| e.conv == conv).map_or(0, |e| e.unread)
        }
        other => panic!("{other:?}"),
    }
}

async fn add_member(api: &Api, actor: &TestUser, group: u64, user: &TestUser) {
    let body = json!({"user_id": user.id.0, "role": "member"});
    let (status, _) =
        api.call("POST", &format!("/api/v1/groups/{group}/members"), Some(&actor.token), Some(body)).await;
    assert_eq!(status, 204);
}

/// The whole story on one server: every event kind live and by sync,
/// history in its current state, unread counts, refusals.
async fn events_story(server: &RunningServer) {
    let api = Api::new(server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let group = api.group(&alice, "g", &[&bob]).await;
    let conv = ConversationId::Group(GroupId(group));
    let mut a = Ws::connect_v(&server.ws_url(), &alice.token, "a", 2).await;
    let mut b = Ws::connect_v(&server.ws_url(), &bob.token, "b", 2).await;

    let secret = "meet at the old mill at nine";
    let first = a.send_message(conv, "m1").await; // "body m1"
    assert_eq!(first, 1);
    let rid = a.rid();
    let said = ClientFrame::send(rid, conv, cmid("m2"), secret);
    assert!(matches!(a.request(said).await, ServerFrame::Ack { id: 2, .. }));
    assert_eq!(unread(&mut b, conv).await, 2);

    let r3 = send_event(&mut b, conv, "r3", REACTION, 1, "", Some(json!({"emoji": "👍"}))).await;
    let e4 = send_event(&mut a, conv, "e4", EDIT, 2, &format!("{secret}, or ten"), None).await;
    add_member(&api, &alice, group, &carol).await; // notice 5
    let r6 = send_event(&mut a, conv, "r6", REACTION, 1, "", Some(json!({"emoji": "🎉"}))).await;
    let x7 = send_event(&mut a, conv, "x7", RECALL, 2, "", None).await;
    assert_eq!((r3, e4, r6, x7), (3, 4, 6, 7));

    // A resend of the recall is its original ack, though the target is gone now.
    let rid = a.rid();
    match a.request(event(rid, conv, "x7", RECALL, 2, "", None)).await {
        ServerFrame::Ack { id, duplicate, .. } => assert_eq!((id, duplicate), (7, true)),
        other => panic!("{other:?}"),
    }

    // Bob's device saw every event live, in id order, once.
    let mut live: Vec<Message> = Vec::new();
    while live.last().map_or(0, |m| m.id) < 7 {
        if let ServerFrame::Message(m) = b.recv().await {
            live.push(m);
        }
    }
    let kinds: Vec<(MessageId, &str)> = live.iter().map(|m| (m.id, m.kind())).collect();
    assert_eq!(
        kinds,
        [(4, "edit"), (5, "system"), (6, "reaction"), (7, "recall")],
        "Bob's own reaction 3 came as his ack"
    );
    assert!(b
        .frames_within(Duration::from_millis(200))
        .await
        .iter()
        .all(|f| !matches!(f, ServerFrame::Message(_))));
    let notice = &live[1];
    let content = notice.content.as_ref().expect("notice content");
    assert_eq!(
        (content["event"].as_str(), content["user"].as_u64()),
        (Some(events::SYSTEM_MEMBER_ADDED), Some(carol.id.0))
    );
    assert_eq!(notice.body, "alice added carol");

    // A fresh device of Bob syncs the same sequence from zero, gapless.
    let mut fresh = Ws::connect_v(&server.ws_url(), &bob.token, "b2", 2).await;
    let synced = sync_all(&mut fresh).await;
    let ids: Vec<MessageId> = synced.iter().filter(|m| m.conv == conv).map(|m| m.id).collect();
    assert_eq!(ids, (1..=7).collect::<Vec<_>>());

    // Applying the synced events to what a device shows gives the server's history.
    let mut shown: Vec<Message> = Vec::new();
    for m in synced.iter().filter(|m| m.conv == conv) {
        if let Some(t) = m.target {
            for s in shown.iter_mut().filter(|s| s.id == t) {
                events::apply(s, m);
            }
        }
        shown.push(m.clone());
    }
    let page = history(&mut fresh, conv).await;
    assert_eq!(page.len(), 7);
    assert_eq!(shown, page, "a device that applies events shows what history shows");
    let m1 = &page[0];
    let summary: Vec<(&str, Vec<UserId>)> =
        m1.reactions.iter().map(|r| (r.emoji.as_str(), r.users.clone())).collect();
    assert_eq!(summary, [("👍", vec![bob.id]), ("🎉", vec![alice.id])]);
    let m2 = &page[1];
    assert!(m2.is_recalled() && m2.body.is_empty() && m2.edited.is_none(), "{m2:?}");
    assert!(page[3].body.is_empty() && page[3].recalled == Some(7), "the edit is emptied too: {:?}", page[3]);
    for m in &page {
        assert!(!m.body.contains("old mill"), "recalled text in history: {m:?}");
    }

    // Events and notices do not count as unread. Bob's own reaction (3)
    // raised his read id to 3, as any send of his does; above it, only
    // events (4-7): nothing unread.
    assert_eq!(unread(&mut fresh, conv).await, 0);
    let more = a.send_message(conv, "m-more").await;
    assert_eq!(more, 8);
    assert_eq!(unread(&mut fresh, conv).await, 1);

    // Refusals store nothing.
    let head = 8;
    let thumbs = Some(json!({"emoji": "👍"}));
    let cases = [
        ("bad1", EDIT, 1, "mine now", None, ErrorCode::Forbidden), // Alice's message
        ("bad2", RECALL, 1, "", None, ErrorCode::Forbidden),
        ("bad3", REACTION, 99, "", thumbs.clone(), ErrorCode::NoSuchMessage), // no such id
        ("bad4", REACTION, 3, "", thumbs.clone(), ErrorCode::NoSuchMessage),  // an event
        ("bad5", REACTION, 2, "", thumbs, ErrorCode::NoSuchMessage),          // recalled
        ("bad6", REACTION, 1, "", Some(json!({"emoji": "two words"})), ErrorCode::InvalidField),
        ("bad7", "system", 1, "", Some(json!({"event": "member_added"})), ErrorCode::InvalidField),
    ];
    for (tag, kind, target, body, content, code) in cases {
        let rid = b.rid();
        refused(&mut b, event(rid, conv, tag, kind, target, body, content), code).await;
    }
    let rid = b.rid();
    let mut plain = ClientFrame::send(rid, conv, cmid("bad8"), "hi");
    if let ClientFrame::Send { target, .. } = &mut plain {
        *target = Some(1);
    }
    refused(&mut b, plain, ErrorCode::InvalidField).await;
    let rid = a.rid();
    refused(&mut a, event(rid, conv, "bad9", REACTION, 1, "", None), ErrorCode::InvalidField).await;
    assert_eq!(
        history(&mut a, conv).await.last().map(|m| m.id),
        Some(head),
        "a refused event stored something"
    );

    // The group's owner may recall a member's message; the member's reaction goes with it.
    let mine = b.send_message(conv, "m9").await;
    send_event(&mut b, conv, "r10", REACTION, mine, "", Some(json!({"emoji": "👀"}))).await;
    send_event(&mut a, conv, "x11", RECALL, mine, "", None).await;
    let page = history(&mut a, conv).await;
    assert!(page.iter().find(|m| m.id == mine).is_some_and(|m| m.is_recalled() && m.reactions.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_the_memory_store() {
    let server = start(ServerConfig::default()).await;
    events_story(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_embedded(dir.path(), "127.0.0.1:0").await;
    events_story(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_postgres() {
    if !services_available().await {
        return;
    }
    let cluster = Cluster::new();
    let server = cluster.node("events-1").await;
    events_story(&server).await;
    server.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_recalls_past_their_window_are_too_late() {
    let mut cfg = ServerConfig::default();
    cfg.limits.edit_window_ms = 50;
    cfg.limits.recall_window_ms = 50;
    let server = start(cfg).await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let mut a = Ws::open(&server, &alice, "a").await;
    let id = a.send_message(conv, "old").await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let rid = a.rid();
    refused(&mut a, event(rid, conv, "late-edit", EDIT, id, "new", None), ErrorCode::TooLate).await;
    let rid = a.rid();
    refused(&mut a, event(rid, conv, "late-recall", RECALL, id, "", None), ErrorCode::TooLate).await;
    // Reactions have no window.
    send_event(&mut a, conv, "react", REACTION, id, "", Some(json!({"emoji": "👍"}))).await;
    assert_eq!(history(&mut a, conv).await[0].body, "body old");
}

/// Whether `needle` occurs anywhere in the files under `dir`.
fn found_in_files(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(path.display().to_string());
                }
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_leaves_no_content_in_the_embedded_store_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_embedded(dir.path(), "127.0.0.1:0").await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let mut a = Ws::open(&server, &alice, "a").await;
    // Many messages first, so the log and the file have plenty of pages.
    for i in 0..50 {
        a.send_message(conv, &format!("filler{i}")).await;
    }
    let secret = "zq-recall-secret-7f3a9c";
    let edited = "zq-edited-secret-41be0d";
    let rid = a.rid();
    let id = match a.request(ClientFrame::send(rid, conv, cmid("secret"), secret)).await {
        ServerFrame::Ack { id, .. } => id,
        other => panic!("{other:?}"),
    };
    send_event(&mut a, conv, "edit", EDIT, id, edited, None).await;
    for i in 0..20 {
        a.send_message(conv, &format!("after{i}")).await;
    }
    assert!(
        !found_in_files(dir.path(), secret.as_bytes()).is_empty(),
        "the test must see the text before the recall"
    );
    let in_log_before = found_in_files(dir.path(), secret.as_bytes()).iter().any(|f| f.ends_with(".log"));
    eprintln!("before the recall, the message log holds the text: {in_log_before}");
    send_event(&mut a, conv, "recall", RECALL, id, "", None).await;
    // Live values: nowhere in what the store returns.
    for m in history(&mut a, conv).await {
        assert!(!m.body.contains("zq-"), "recalled text returned: {m:?}");
    }
    a.close().await;
    server.shutdown().await;
    // The message log is zeroed after the recall's durable commit. (The
    // redb file itself is copy-on-write: the pages a recall replaced stay
    // in its free space until redb reuses them — a documented limit, so
    // it is not asserted on here.)
    for needle in [secret, edited] {
        let hits: Vec<String> = found_in_files(dir.path(), needle.as_bytes())
            .into_iter()
            .filter(|f| !f.ends_with("im.redb"))
            .collect();
        assert!(hits.is_empty(), "recalled text {needle:?} still in {hits:?}");
    }
    // And the store still opens with everything else in place.
    let server = start_embedded(dir.path(), "127.0.0.1:0").await;
    let mut a = Ws::open(&server, &api_login(&server, "alice").await, "a2").await;
    let page = history(&mut a, conv).await;
    assert_eq!(page.len(), 73);
    assert_eq!(page.iter().filter(|m| m.body.starts_with("body filler")).count(), 50);
    assert!(page.iter().any(|m| m.id == id && m.is_recalled()));
}

async fn api_login(server: &RunningServer, name: &str) -> TestUser {
    Api::new(server).login(name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_leaves_no_content_in_postgres() {
    if !services_available().await {
        return;
    }
    let cluster = Cluster::new();
    let server = cluster.node("recall-1").await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let mut a = Ws::open(&server, &alice, "a").await;
    let secret = "zq-pg-secret-5d1e";
    let rid = a.rid();
    let id = match a.request(ClientFrame::send(rid, conv, cmid("secret"), secret)).await {
        ServerFrame::Ack { id, .. } => id,
        other => panic!("{other:?}"),
    };
    send_event(&mut a, conv, "edit", EDIT, id, &format!("{secret} edited"), None).await;
    send_event(&mut a, conv, "recall", RECALL, id, "", None).await;
    let (client, conn) =
        tokio_postgres::connect(&im_tests::cluster::postgres_url(), tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    let rows = client
        .query(
            &format!(
                "SELECT id FROM {}.messages WHERE body LIKE '%' || $1 || '%' OR content LIKE '%' || $1 || '%'",
                cluster.schema
            ),
            &[&secret],
        )
        .await
        .unwrap();
    assert!(
        rows.is_empty(),
        "rows still holding the recalled text: {:?}",
        rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>()
    );
    let total: i64 = client
        .query_one(&format!("SELECT count(*) FROM {}.messages", cluster.schema), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 3, "the message, its edit and the recall keep their places");
    drop(client);
    let _ = task.await;
    server.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn im_client_reacts_edits_recalls_and_every_device_updates_in_place() {
    use im_client::{Client, Event};
    let server = start(ServerConfig::default()).await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let open = |user: &TestUser, device: &str| {
        Client::builder()
            .url(server.ws_url())
            .token(user.token.clone())
            .device(device)
            .backoff(Duration::from_millis(50), Duration::from_millis(500))
            .connect()
            .expect("valid options")
    };
    let (a, mut a_ev) = open(&alice, "a1");
    let (b, mut b_ev) = open(&bob, "b1");
    for ev in [&mut a_ev, &mut b_ev] {
        im_tests::until(ev, "Synced", |e| matches!(e, Event::Synced)).await;
    }
    let id = a.send(conv, "helo").await.unwrap();
    assert_eq!(b.react(conv, id, "👍").await.unwrap().id, 2);
    assert_eq!(a.edit(conv, id, "hello").await.unwrap().id, 3);
    assert_eq!(b.unreact(conv, id, "👍").await.unwrap().id, 4);
    assert_eq!(b.react(conv, id, "❤️").await.unwrap().id, 5);
    let gone = a.send(conv, "oops, wrong chat").await.unwrap();
    assert_eq!(a.recall(conv, gone).await.unwrap().id, 7);
    match b.edit(conv, id, "not yours").await {
        Err(im_client::SendError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::Forbidden),
        other => panic!("{other:?}"),
    }

    // Both devices get all seven in order, once; applying them gives the history.
    for ev in [&mut a_ev, &mut b_ev] {
        let mut shown: Vec<Message> = Vec::new();
        while shown.len() < 7 {
            let (e, _) =
                im_tests::until(ev, "a message", |e| matches!(e, Event::Message(m) if m.conv == conv)).await;
            let Event::Message(m) = e else { unreachable!() };
            for s in shown.iter_mut() {
                events::apply(s, &m);
            }
            shown.push(m);
        }
        assert_eq!(shown.iter().map(|m| m.id).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
        let page = a.history(conv, None, None).await.unwrap().messages;
        assert_eq!(shown, page);
        assert_eq!((shown[0].body.as_str(), shown[0].edited), ("hello", Some(3)));
        assert_eq!(shown[0].reactions.iter().map(|r| r.emoji.as_str()).collect::<Vec<_>>(), ["❤️"]);
        assert!(shown[5].is_recalled() && shown[5].body.is_empty());
    }
    // Bob's unread count: his reactions raised his read id to 5, so only
    // Alice's message 6 (recalled, but it was said) — not her edit or recall.
    let state = b.read_state(conv).expect("known");
    assert_eq!((state.head, state.read, state.unread), (7, 5, 1));
    assert_eq!(b.unread_total(), 1);
}
