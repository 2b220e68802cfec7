//! The application's hooks over real sockets: `before_send` rejects and
//! rewrites (and is never asked about a non-member's message), `on_connect`
//! refuses a user before the upgrade, and `after_store`, `on_join` and
//! `on_presence` hear what happened — every stored message once, in each
//! conversation's order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use im_client::core::{ConversationId, GroupId, Message, PresenceStatus, RoomId, UserId};
use im_client::{Client, Event, StopReason};
use im_server::hooks::{Hooks, Verdict};
use im_server::logic::messages::Draft;
use im_server::ServerConfig;
use im_tests::{builder, until, Api};

#[derive(Default)]
struct Recorder {
    asked: Mutex<Vec<(UserId, String)>>,
    stored: Mutex<Vec<Message>>,
    joined: Mutex<Vec<(UserId, ConversationId)>>,
    online: Mutex<Vec<UserId>>,
    banned: Mutex<Option<UserId>>,
}

#[async_trait]
impl Hooks for Recorder {
    async fn on_connect(&self, user: UserId, _device: &str) -> Verdict {
        if *self.banned.lock().unwrap() == Some(user) {
            return Verdict::Deny("banned by the app".into());
        }
        Verdict::Allow
    }

    async fn before_send(&self, from: UserId, _conv: ConversationId, draft: &mut Draft) -> Verdict {
        self.asked.lock().unwrap().push((from, draft.body.clone()));
        if draft.body.contains("spam") {
            return Verdict::Deny("no advertising here".into());
        }
        draft.body = draft.body.replace("darn", "d**n");
        Verdict::Allow
    }

    async fn after_store(&self, message: &Message) {
        self.stored.lock().unwrap().push(message.clone());
    }

    async fn on_join(&self, user: UserId, conv: ConversationId) {
        self.joined.lock().unwrap().push((user, conv));
    }

    async fn on_presence(&self, user: UserId, status: PresenceStatus) {
        if status == PresenceStatus::Online {
            self.online.lock().unwrap().push(user);
        }
    }
}

/// Polls `f` until it holds (at most 10 s).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_allow_refuse_rewrite_and_hear_everything_in_order() {
    let hooks = Arc::new(Recorder::default());
    let server =
        builder(ServerConfig::default()).memory().hooks(hooks.clone()).bind("127.0.0.1:0").await.unwrap();
    let api = Api::new(&server);
    let (alice, bob, mallory) = (api.user("alice").await, api.user("bob").await, api.user("mallory").await);
    let g1 = ConversationId::Group(GroupId(api.group(&alice, "one", &[&bob]).await));
    let g2 = ConversationId::Group(GroupId(api.group(&alice, "two", &[&bob]).await));
    let room = api.room(&alice, "lobby").await;

    let (a, mut a_ev) = Client::builder().url(server.ws_url()).token(alice.token.clone()).connect().unwrap();
    until(&mut a_ev, "Synced", |e| matches!(e, Event::Synced)).await;
    eventually("alice online", || hooks.online.lock().unwrap().contains(&alice.id)).await;

    // Rejected with the hook's reason; nothing stored.
    let refused = a.send(g1, "buy spam now").await.unwrap_err();
    assert!(refused.to_string().contains("no advertising here"), "{refused}");
    // Rewritten, then stored and delivered as rewritten.
    let id = a.send(g1, "darn it").await.unwrap();
    let (_, page) =
        api.call("GET", &format!("/api/v1/conversations/{g1}/messages"), Some(&bob.token), None).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "the refused message was not stored");
    assert_eq!(
        (page["messages"][0]["id"].as_u64(), page["messages"][0]["body"].as_str()),
        (Some(id), Some("d**n it"))
    );

    // A non-member's message is refused before the hook is asked.
    let (m, mut m_ev) =
        Client::builder().url(server.ws_url()).token(mallory.token.clone()).connect().unwrap();
    until(&mut m_ev, "Synced", |e| matches!(e, Event::Synced)).await;
    assert!(m.send(g1, "let me in").await.is_err());
    assert!(!hooks.asked.lock().unwrap().iter().any(|(u, _)| *u == mallory.id), "not asked about outsiders");

    // after_store: every stored message once, in each conversation's order.
    let mut sends = Vec::new();
    for i in 0..20 {
        let conv = if i % 2 == 0 { g1 } else { g2 };
        let a = a.clone();
        sends.push(tokio::spawn(async move { a.send(conv, format!("m{i}")).await }));
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    eventually("21 stored messages", || hooks.stored.lock().unwrap().len() == 21).await;
    let stored = hooks.stored.lock().unwrap().clone();
    for conv in [g1, g2] {
        let ids: Vec<u64> = stored.iter().filter(|m| m.conv == conv).map(|m| m.id).collect();
        let expected: Vec<u64> = (1..=ids.len() as u64).collect();
        assert_eq!(ids, expected, "{conv}: once each, in id order");
    }

    // on_join for a room joined over HTTP.
    let (s, _) = api.call("POST", &format!("/api/v1/rooms/{room}/join"), Some(&bob.token), None).await;
    assert_eq!(s, 204);
    eventually("bob joined", || {
        hooks.joined.lock().unwrap().contains(&(bob.id, ConversationId::Room(RoomId(room))))
    })
    .await;

    // on_connect refuses a user the app banned: 403 before the upgrade, terminal.
    *hooks.banned.lock().unwrap() = Some(bob.id);
    let (_b, mut b_ev) = Client::builder().url(server.ws_url()).token(bob.token.clone()).connect().unwrap();
    let (e, _) = until(&mut b_ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert_eq!(e, Event::Stopped { reason: StopReason::HandshakeRefused { status: 403 } });
    a.shutdown().await;
    m.shutdown().await;
    server.shutdown().await;
}
