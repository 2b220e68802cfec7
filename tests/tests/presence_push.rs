//! Presence with its grace period, presence fan-out to group members, and
//! push notifications for recipients with no live connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use im_protocol::{
    ClientFrame, ConversationId, GroupId, Message, MessageId, PresenceStatus, ServerFrame, UserId,
};
use im_server::push::{PushError, PushNotifier, PushRecipient};
use im_server::ServerConfig;
use im_tests::{builder, cmid, start, Api, Ws};
use serde_json::json;

fn presence_of(f: &ServerFrame) -> Option<(UserId, PresenceStatus, u64)> {
    match f {
        ServerFrame::Presence(p) => Some((p.user, p.status, p.last_active_at)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_group_members_and_a_quick_reconnect_does_not_flap() {
    let mut cfg = ServerConfig::default();
    cfg.presence_grace = Duration::from_millis(700);
    let server = start(cfg).await;
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    api.group(&alice, "friends", &[&bob]).await;
    let mut bob_ws = Ws::open(&server, &bob, "b").await;
    let mut carol_ws = Ws::open(&server, &carol, "c").await;

    let alice_ws = Ws::open(&server, &alice, "a").await;
    let p = bob_ws.recv_until(|f| presence_of(f).is_some()).await;
    assert_eq!(presence_of(&p).map(|p| (p.0, p.1)), Some((alice.id, PresenceStatus::Online)));

    // A flaky network: gone and back within the grace period.
    alice_ws.close().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let alice_ws = Ws::open(&server, &alice, "a").await;
    let quiet = bob_ws.try_recv(Duration::from_millis(1200)).await.unwrap();
    assert!(quiet.is_none(), "no presence flap expected, got {quiet:?}");

    // Really gone: offline after the grace period, with last_active_at.
    alice_ws.close().await;
    let p = bob_ws.recv_until(|f| presence_of(f).is_some()).await;
    let (user, status, last_active_at) = presence_of(&p).unwrap();
    assert_eq!((user, status), (alice.id, PresenceStatus::Offline));
    assert!(last_active_at > 0);
    // Carol shares no group or chat with alice: she heard nothing.
    assert!(carol_ws.try_recv(Duration::from_millis(200)).await.unwrap().is_none());

    // Query: alice offline, bob online; unknown and unrelated users left out.
    let rid = bob_ws.rid();
    let users = vec![alice.id, bob.id, carol.id, UserId(9999)];
    match bob_ws.request(ClientFrame::QueryPresence { rid, users: users.clone() }).await {
        ServerFrame::PresenceList { users, .. } => {
            let got: Vec<_> = users.iter().map(|p| (p.user, p.status)).collect();
            assert_eq!(got, vec![(alice.id, PresenceStatus::Offline), (bob.id, PresenceStatus::Online)]);
        }
        other => panic!("{other:?}"),
    }
    // Carol is related to nobody but herself.
    let rid = carol_ws.rid();
    match carol_ws.request(ClientFrame::QueryPresence { rid, users }).await {
        ServerFrame::PresenceList { users, .. } => {
            assert_eq!(users.iter().map(|p| p.user).collect::<Vec<_>>(), vec![carol.id]);
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

/// Records every push call.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(Vec<UserId>, ConversationId, u64)>>,
}

#[async_trait]
impl PushNotifier for Recorder {
    async fn notify(&self, users: &[UserId], message: &Message) -> Result<(), PushError> {
        self.calls.lock().unwrap().push((users.to_vec(), message.conv, message.id));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_without_a_live_connection_are_handed_to_the_push_notifier() {
    let recorder = Arc::new(Recorder::default());
    let server =
        builder(ServerConfig::default()).memory().push(recorder.clone()).bind("127.0.0.1:0").await.unwrap();
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let group = GroupId(api.group(&alice, "g", &[&bob, &carol]).await);
    let mut alice_ws = Ws::open(&server, &alice, "a").await;
    let _bob_ws = Ws::open(&server, &bob, "b").await;

    // Group message: bob is online, carol is not (and alice is the sender).
    let rid = alice_ws.rid();
    let conv = ConversationId::Group(group);
    alice_ws.request(ClientFrame::send(rid, conv, cmid(1), "hi")).await;
    // Direct message to carol (offline).
    let direct = ConversationId::direct(alice.id, carol.id);
    let rid = alice_ws.rid();
    alice_ws.request(ClientFrame::send(rid, direct, cmid(2), "psst")).await;
    // Direct message to bob (online): no push.
    let to_bob = ConversationId::direct(alice.id, bob.id);
    let rid = alice_ws.rid();
    alice_ws.request(ClientFrame::send(rid, to_bob, cmid(3), "hey")).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while recorder.calls.lock().unwrap().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // let a wrong third call show up
    let mut calls = recorder.calls.lock().unwrap().clone();
    calls.sort_by_key(|c| c.1);
    let mut expected = vec![(vec![carol.id], conv, 1), (vec![carol.id], direct, 1)];
    expected.sort_by_key(|c| c.1);
    assert_eq!(calls, expected);
    let metrics = server.state().metrics().render();
    assert!(metrics.contains("im_push_notifications_total{result=\"sent\"} 2"), "{metrics}");
    server.shutdown().await;
}

/// Records notifications with their unread counts, and read notices.
#[derive(Default)]
struct ReadAware {
    notified: Mutex<Vec<(MessageId, Vec<PushRecipient>)>>,
    reads: Mutex<Vec<(UserId, ConversationId, MessageId)>>,
}

#[async_trait]
impl PushNotifier for ReadAware {
    async fn notify(&self, _: &[UserId], _: &Message) -> Result<(), PushError> {
        unreachable!("the server calls notify_recipients")
    }
    async fn notify_recipients(&self, r: &[PushRecipient], message: &Message) -> Result<(), PushError> {
        self.notified.lock().unwrap().push((message.id, r.to_vec()));
        Ok(())
    }
    async fn read(&self, user: UserId, conv: ConversationId, id: MessageId) -> Result<(), PushError> {
        self.reads.lock().unwrap().push((user, conv, id));
        Ok(())
    }
    fn wants_read_notices(&self) -> bool {
        true
    }
}

/// Waits until `f` holds (polling; at most 5 s).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_carries_unread_counts_skips_muted_conversations_and_hears_of_reads() {
    let notifier = Arc::new(ReadAware::default());
    let server =
        builder(ServerConfig::default()).memory().push(notifier.clone()).bind("127.0.0.1:0").await.unwrap();
    let api = Api::new(&server);
    let (alice, carol) = (api.user("alice").await, api.user("carol").await);
    let conv = ConversationId::direct(alice.id, carol.id);
    let mut a = Ws::open(&server, &alice, "a").await;
    // Carol is offline: each message is pushed with her unread count.
    for i in 1..=3 {
        a.send_message(conv, &format!("m{i}")).await;
    }
    eventually("three pushes", || notifier.notified.lock().unwrap().len() == 3).await;
    let mut got = notifier.notified.lock().unwrap().clone();
    got.sort_by_key(|(id, _)| *id);
    let expected: Vec<_> = (1..=3).map(|id| (id, vec![PushRecipient::new(carol.id, id)])).collect();
    assert_eq!(got, expected);

    // She reads on the web (HTTP): the notifier hears of it; the next push counts from there.
    let path = format!("/api/v1/conversations/{conv}/read");
    let (s, _) = api.call("POST", &path, Some(&carol.token), Some(json!({"id": 2}))).await;
    assert_eq!(s, 200);
    eventually("the read notice", || !notifier.reads.lock().unwrap().is_empty()).await;
    assert_eq!(*notifier.reads.lock().unwrap(), vec![(carol.id, conv, 2)]);
    a.send_message(conv, "m4").await;
    eventually("the fourth push", || notifier.notified.lock().unwrap().len() == 4).await;
    assert!(notifier.notified.lock().unwrap().contains(&(4, vec![PushRecipient::new(carol.id, 2)])));

    // Muted: no push, but the message still counts as unread.
    let mute = format!("/api/v1/conversations/{conv}/mute");
    let (s, body) = api.call("PUT", &mute, Some(&carol.token), Some(json!({}))).await;
    assert_eq!(s, 204, "{body}");
    a.send_message(conv, "m5").await;
    let (s, body) = api.call("GET", "/api/v1/conversations", Some(&carol.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(body["conversations"][0]["unread"], json!(3));
    assert_eq!(body["conversations"][0]["muted_until"], json!(u64::MAX));
    let (s, _) = api.call("PUT", &mute, Some(&carol.token), Some(json!({"until": 0}))).await;
    assert_eq!(s, 400, "0 is no time");
    // A mention pushes through the mute.
    let rid = a.rid();
    let frame = ClientFrame::Send {
        rid,
        conv,
        cmid: cmid("at"),
        body: "@carol".into(),
        mentions: vec![carol.id],
        kind: None,
        content: None,
        reply_to: None,
        target: None,
    };
    assert!(matches!(a.request(frame).await, ServerFrame::Ack { id: 6, .. }));
    eventually("the mention's push", || notifier.notified.lock().unwrap().len() == 5).await;
    assert!(notifier.notified.lock().unwrap().contains(&(6, vec![PushRecipient::new(carol.id, 4)])));
    let eve = api.user("eve").await;
    let (s, _) = api.call("PUT", &mute, Some(&eve.token), Some(json!({}))).await;
    assert_eq!(s, 403, "not hers to mute");
    // Unmuted: pushes again.
    let (s, _) = api.call("DELETE", &mute, Some(&carol.token), None).await;
    assert_eq!(s, 204);
    a.send_message(conv, "m7").await;
    eventually("the seventh push", || notifier.notified.lock().unwrap().len() == 6).await;
    let got = notifier.notified.lock().unwrap().clone();
    assert!(got.iter().all(|(id, _)| *id != 5), "the muted message was not pushed: {got:?}");
    assert!(got.contains(&(7, vec![PushRecipient::new(carol.id, 5)])));
    let (_, body) = api.call("GET", "/api/v1/conversations", Some(&carol.token), None).await;
    assert!(body["conversations"][0].get("muted_until").is_none(), "{body}");
    server.shutdown().await;
}
