//! Hooks as signed HTTP webhooks and the durable message feed, against a
//! real receiver on loopback: `before_send` refuses and rewrites,
//! `on_connect` bans, notifications arrive, a dead backend follows the
//! configured policy within the timeout, and the feed delivers every
//! message and event in each conversation's order across a backend outage,
//! a server crash, and (on PostgreSQL) a node's death in a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_client::core::{ClientFrame, ConversationId, ErrorCode, GroupId, RoomId, ServerFrame};
use im_client::{Client, Event, StopReason};
use im_server::feed::FeedConfig;
use im_server::webhooks::{HookCall, WebhookConfig, WebhookFeed, WebhookHooks, WhenDown};
use im_server::ServerConfig;
use im_tests::webhook::{Mode, WebhookReceiver};
use im_tests::{builder, cmid, until, Api, Ws};
use serde_json::{json, Value};

const SECRET: &[u8] = b"webhook-secret-of-the-tests";

/// Polls `f` until it holds (at most 20 s).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The backend of an app with a word filter and a ban list.
fn moderating_backend(banned: Arc<AtomicU64>) -> impl Fn(&Value) -> Value + Send + Sync + 'static {
    move |call| match call["type"].as_str() {
        Some("connect") if call["user"].as_u64() == Some(banned.load(Ordering::SeqCst)) => {
            json!({"allow": false, "reason": "banned by the app"})
        }
        Some("before_send") => {
            let body = call["draft"]["body"].as_str().unwrap_or_default();
            if body.contains("spam") {
                json!({"allow": false, "reason": "no advertising here"})
            } else if body.contains("darn") {
                json!({"allow": true, "draft": {"body": body.replace("darn", "d**n")}})
            } else {
                json!({"allow": true})
            }
        }
        _ => json!({"allow": true}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_refuse_rewrite_ban_and_hear_joins_and_presence() {
    let banned = Arc::new(AtomicU64::new(0));
    let backend = WebhookReceiver::start(SECRET, moderating_backend(banned.clone())).await;
    let hooks = WebhookHooks::new(WebhookConfig::new(backend.url(), SECRET));
    let server =
        builder(ServerConfig::default()).memory().hooks(Arc::new(hooks)).bind("127.0.0.1:0").await.unwrap();
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let g = ConversationId::Group(GroupId(api.group(&alice, "one", &[&bob]).await));
    let room = api.room(&alice, "lobby").await;

    let (a, mut a_ev) = Client::builder().url(server.ws_url()).token(alice.token.clone()).connect().unwrap();
    until(&mut a_ev, "Synced", |e| matches!(e, Event::Synced)).await;
    let connects = backend.calls_of("connect");
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(connects[0]["user"], alice.id.0);
    assert!(connects[0]["device"].as_str().is_some_and(|d| !d.is_empty()));

    let refused = a.send(g, "buy spam now").await.unwrap_err();
    assert!(refused.to_string().contains("no advertising here"), "{refused}");
    let id = a.send(g, "darn it").await.unwrap();
    let (_, page) =
        api.call("GET", &format!("/api/v1/conversations/{g}/messages"), Some(&bob.token), None).await;
    let bodies: Vec<_> = page["messages"].as_array().unwrap().iter().map(|m| m["body"].clone()).collect();
    assert_eq!(bodies, vec![json!("d**n it")], "the refused message was not stored; the rewrite was");
    assert_eq!(page["messages"][0]["id"], id);
    let asked = backend.calls_of("before_send");
    assert_eq!(asked.len(), 2);
    assert_eq!(
        (asked[0]["from"].clone(), asked[0]["conv"].clone()),
        (json!(alice.id.0), json!(g.to_string()))
    );

    let (s, _) = api.call("POST", &format!("/api/v1/rooms/{room}/join"), Some(&bob.token), None).await;
    assert_eq!(s, 204);
    let room_conv = ConversationId::Room(RoomId(room)).to_string();
    eventually("bob's join", || {
        backend.calls_of("join").iter().any(|c| c["user"] == bob.id.0 && c["conv"] == room_conv.as_str())
    })
    .await;
    eventually("alice online", || {
        backend.calls_of("presence").iter().any(|c| c["user"] == alice.id.0 && c["status"] == "online")
    })
    .await;

    banned.store(bob.id.0, Ordering::SeqCst);
    let (_b, mut b_ev) = Client::builder().url(server.ws_url()).token(bob.token.clone()).connect().unwrap();
    let (e, _) = until(&mut b_ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert_eq!(e, Event::Stopped { reason: StopReason::HandshakeRefused { status: 403 } });
    assert_eq!(backend.bad_signatures(), 0, "every call was signed");
    a.shutdown().await;
    server.shutdown().await;
}

/// The HTTP status of a WebSocket handshake to `server` as `token`.
async fn handshake_status(ws_url: &str, token: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_gets_the_configured_policy_within_the_timeout() {
    let backend = WebhookReceiver::start(SECRET, |_| json!({"allow": true})).await;
    let config = |when_down| {
        let mut cfg = WebhookConfig::new(backend.url(), SECRET);
        cfg.timeout = Duration::from_millis(300);
        cfg.when_down = when_down;
        cfg.calls = [HookCall::Connect, HookCall::BeforeSend].into_iter().collect();
        cfg
    };
    let open = builder(ServerConfig::default())
        .memory()
        .hooks(Arc::new(WebhookHooks::new(config(WhenDown::Allow))))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let closed = builder(ServerConfig::default())
        .memory()
        .hooks(Arc::new(WebhookHooks::new(config(WhenDown::Refuse))))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    // A hang is 30 s; everything below must be decided by the 300 ms timeout.
    let bound = Duration::from_secs(5);

    // Fail-closed: while the backend is up, a connection opens.
    let api = Api::new(&closed);
    let carol = api.user("carol").await;
    let g = ConversationId::Group(GroupId(api.group(&carol, "g", &[]).await));
    let mut ws = Ws::open(&closed, &carol, "d1").await;
    backend.set_mode(Mode::Hang);
    let started = Instant::now();
    let rid = ws.rid();
    match ws.request(ClientFrame::send(rid, g, cmid("closed-1"), "while down")).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::Unavailable),
        other => panic!("expected unavailable: {other:?}"),
    }
    assert_eq!(handshake_status(&closed.ws_url(), &carol.token).await, 503, "connections too");
    assert!(started.elapsed() < bound, "decided within the timeout: {:?}", started.elapsed());
    let (_, page) =
        api.call("GET", &format!("/api/v1/conversations/{g}/messages"), Some(&carol.token), None).await;
    assert_eq!(page["messages"], json!([]), "nothing stored unchecked");
    // Back up: the same message, resent, goes through.
    backend.set_mode(Mode::Up);
    let rid = ws.rid();
    match ws.request(ClientFrame::send(rid, g, cmid("closed-1"), "while down")).await {
        ServerFrame::Ack { id, .. } => assert_eq!(id, 1),
        other => panic!("expected an ack: {other:?}"),
    }

    // Fail-open: connections and sends go ahead, unchecked.
    let api = Api::new(&open);
    let dave = api.user("dave").await;
    let g = ConversationId::Group(GroupId(api.group(&dave, "g", &[]).await));
    backend.set_mode(Mode::Hang);
    let started = Instant::now();
    let (d, mut d_ev) = Client::builder().url(open.ws_url()).token(dave.token.clone()).connect().unwrap();
    until(&mut d_ev, "Synced", |e| matches!(e, Event::Synced)).await;
    assert_eq!(d.send(g, "unchecked").await.unwrap(), 1);
    assert!(started.elapsed() < bound, "decided within the timeout: {:?}", started.elapsed());
    assert!(backend.refused() >= 3, "the backend was asked each time: {}", backend.refused());
    d.shutdown().await;
    open.shutdown().await;
    closed.shutdown().await;
}

/// Feed batches as received: `(conv, ids)` in arrival order.
fn batches(receiver: &WebhookReceiver) -> Vec<(String, Vec<u64>)> {
    receiver
        .calls_of("messages")
        .iter()
        .map(|b| {
            let ids = b["messages"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
            (b["conv"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

/// Checks the feed's promise on what `receiver` got: per conversation,
/// batches of consecutive ids that never skip past what was delivered
/// before (repeats allowed), and every id from `first` to the head.
/// Returns the ids delivered more than once.
fn check_feed(receiver: &WebhookReceiver, heads: &BTreeMap<String, (u64, u64)>) -> usize {
    let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut repeats = 0;
    for (conv, ids) in batches(receiver) {
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{conv}: a batch is consecutive: {ids:?}");
        let got = seen.entry(conv.clone()).or_default();
        let first = heads.get(&conv).map_or(1, |&(first, _)| first);
        let next = got.last().map_or(first, |&last| last + 1);
        assert!(ids[0] <= next, "{conv}: batch {ids:?} skips past {next}");
        repeats += ids.iter().filter(|id| !got.insert(**id)).count();
    }
    for (conv, &(first, head)) in heads {
        let got: Vec<u64> = seen.get(conv).map(|s| s.iter().copied().collect()).unwrap_or_default();
        assert_eq!(got, (first..=head).collect::<Vec<_>>(), "{conv}: every message from {first}");
    }
    repeats
}

fn fast_feed() -> FeedConfig {
    FeedConfig {
        batch: 7,
        sweep: Duration::from_millis(200),
        retry_first: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        lease: Duration::from_secs(2),
        ..FeedConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_delivers_every_message_in_order_across_an_outage_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = WebhookReceiver::start(SECRET, |_| json!({})).await;
    let start = |addr: String| {
        let sink = Arc::new(WebhookFeed::new(receiver.url(), SECRET, Duration::from_secs(2)));
        let dir = dir.path().to_owned();
        async move {
            // The crashed server's listener and store may take a moment to let go.
            for _ in 0..100 {
                let Ok(b) = builder(ServerConfig::default()).embedded(&dir) else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match b.feed(sink.clone(), fast_feed()).bind(addr.as_str()).await {
                    Ok(server) => return server,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            panic!("cannot start on {addr}");
        }
    };
    let server = start("127.0.0.1:0".into()).await;
    let addr = server.local_addr().to_string();
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let gid1 = api.group(&alice, "one", &[&bob]).await;
    let g1 = ConversationId::Group(GroupId(gid1));
    let g2 = ConversationId::Group(GroupId(api.group(&alice, "two", &[&bob]).await));
    let (a, mut a_ev) = Client::builder().url(server.ws_url()).token(alice.token.clone()).connect().unwrap();
    until(&mut a_ev, "Synced", |e| matches!(e, Event::Synced)).await;

    let send_many = |a: Client, tag: &'static str, n: usize| async move {
        let sends: Vec<_> = (0..n)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(
                    async move { a.send(if i % 2 == 0 { g1 } else { g2 }, format!("{tag}{i}")).await },
                )
            })
            .collect();
        for s in sends {
            s.await.unwrap().unwrap();
        }
    };
    send_many(a.clone(), "up", 10).await;
    let mut heads = BTreeMap::from([(g1.to_string(), (1, 5)), (g2.to_string(), (1, 5))]);
    eventually("the first 10", || batches(&receiver).iter().map(|b| b.1.len()).sum::<usize>() >= 10).await;

    // The backend goes down: messages, a reaction and a system notice wait.
    receiver.set_mode(Mode::Down);
    send_many(a.clone(), "down", 30).await;
    a.react(g1, 1, "👍").await.unwrap();
    let (s, _) = api
        .call(
            "POST",
            &format!("/api/v1/groups/{gid1}/members"),
            Some(&alice.token),
            Some(json!({"user_id": carol.id})),
        )
        .await;
    assert_eq!(s, 204);
    eventually("retries while down", || receiver.refused() >= 3).await;
    receiver.set_mode(Mode::Up);
    heads.insert(g1.to_string(), (1, 22));
    heads.insert(g2.to_string(), (1, 20));
    eventually("every message of both", || {
        let got: BTreeSet<(String, u64)> = batches(&receiver)
            .into_iter()
            .flat_map(|(c, ids)| ids.into_iter().map(move |i| (c.clone(), i)))
            .collect();
        got.len() == 42
    })
    .await;
    check_feed(&receiver, &heads);
    let kinds: Vec<String> = receiver
        .calls_of("messages")
        .iter()
        .flat_map(|b| b["messages"].as_array().unwrap().clone())
        .filter_map(|m| m["kind"].as_str().map(str::to_owned))
        .collect();
    assert!(kinds.contains(&"reaction".to_owned()) && kinds.contains(&"system".to_owned()), "{kinds:?}");

    // A crash (kill -9 in process) with the backend down; the restarted
    // server delivers what was stored meanwhile, from its cursors.
    receiver.set_mode(Mode::Down);
    send_many(a.clone(), "crash", 6).await;
    a.shutdown().await;
    server.crash().await;
    let delivered_before = batches(&receiver).iter().map(|b| b.1.len()).sum::<usize>();
    receiver.set_mode(Mode::Up);
    let server = start(addr).await;
    heads.insert(g1.to_string(), (1, 25));
    heads.insert(g2.to_string(), (1, 23));
    eventually("the 6 stored before the crash", || {
        let got: BTreeSet<(String, u64)> = batches(&receiver)
            .into_iter()
            .flat_map(|(c, ids)| ids.into_iter().map(move |i| (c.clone(), i)))
            .collect();
        got.len() == 48
    })
    .await;
    let repeats = check_feed(&receiver, &heads);
    let after_restart = batches(&receiver).iter().map(|b| b.1.len()).sum::<usize>() - delivered_before;
    assert!(after_restart < 48, "the restart resumed from the cursors, not from the start: {after_restart}");
    eprintln!("feed: {repeats} repeated deliveries, {after_restart} deliveries after the restart");
    assert_eq!(receiver.bad_signatures(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_feeds_each_conversation_in_order_and_takes_over_from_a_dead_node() {
    if !im_tests::cluster::services_available().await {
        return;
    }
    let cluster = im_tests::cluster::Cluster::new();
    let receiver = WebhookReceiver::start(SECRET, |_| json!({})).await;
    let redis = im_tests::cluster::redis_url();
    let node = |name: &'static str| {
        let sink = Arc::new(WebhookFeed::new(receiver.url(), SECRET, Duration::from_secs(2)));
        cluster.node_built(cluster.config(name), &redis, move |b| b.feed(sink, fast_feed()))
    };
    let (n1, n2) = (node("feed-1").await, node("feed-2").await);
    let api = Api::new(&n1);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let g = ConversationId::Group(GroupId(api.group(&alice, "g", &[&bob]).await));
    let (a, mut a_ev) = Client::builder().url(n1.ws_url()).token(alice.token.clone()).connect().unwrap();
    let (b, mut b_ev) = Client::builder().url(n2.ws_url()).token(bob.token.clone()).connect().unwrap();
    until(&mut a_ev, "Synced", |e| matches!(e, Event::Synced)).await;
    until(&mut b_ev, "Synced", |e| matches!(e, Event::Synced)).await;

    // Both nodes store into one conversation at once.
    let mut sends = Vec::new();
    for i in 0..20 {
        let (a, b) = (a.clone(), b.clone());
        sends.push(tokio::spawn(async move { a.send(g, format!("a{i}")).await }));
        sends.push(tokio::spawn(async move { b.send(g, format!("b{i}")).await }));
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let heads = BTreeMap::from([(g.to_string(), (1, 40))]);
    eventually("all 40", || {
        batches(&receiver).iter().flat_map(|b| b.1.clone()).collect::<BTreeSet<_>>().len() == 40
    })
    .await;
    check_feed(&receiver, &heads);

    // The backend is down while node 1 stores and dies; node 2 takes the
    // conversation over once node 1's claim lapses.
    receiver.set_mode(Mode::Down);
    for i in 0..5 {
        a.send(g, format!("late{i}")).await.unwrap();
    }
    a.shutdown().await;
    n1.crash().await;
    receiver.set_mode(Mode::Up);
    let heads = BTreeMap::from([(g.to_string(), (1, 45))]);
    eventually("node 2 delivers node 1's last 5", || {
        batches(&receiver).iter().flat_map(|b| b.1.clone()).collect::<BTreeSet<_>>().len() == 45
    })
    .await;
    check_feed(&receiver, &heads);
    b.shutdown().await;
    n2.shutdown().await;
    cluster.cleanup().await;
}
