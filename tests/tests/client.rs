//! The `im-client` against real servers on loopback: messaging, server
//! restarts, frozen networks, terminal closes, several devices, durable
//! cursors. Every wait is bounded.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use im_client::core::{ConversationId, GroupId, Message, PresenceStatus, RoomId};
use im_client::{Client, ClientBuilder, Event, Events, FileCursorStore, SendError, StopReason};
use im_server::ServerConfig;
use im_tests::{start_default, start_embedded, until, Api, TestUser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(15);

/// Client options for tests: quick reconnects, bounded attempts.
fn opts(url: &str, user: &TestUser, device: &str) -> ClientBuilder {
    Client::builder()
        .url(url)
        .token(user.token.clone())
        .device(device)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(2))
        .max_reconnect_attempts(200)
}

/// Collects `n` messages of `conv` (other events are skipped).
async fn messages(events: &mut Events, conv: ConversationId, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < n {
        let (e, _) = until(events, "a message", |e| matches!(e, Event::Message(m) if m.conv == conv)).await;
        if let Event::Message(m) = e {
            got.push(m);
        }
    }
    got
}

fn ids(ms: &[Message]) -> Vec<u64> {
    ms.iter().map(|m| m.id).collect()
}

/// A server with users alice and bob and their direct conversation.
async fn alice_and_bob() -> (im_server::RunningServer, Api, TestUser, TestUser, ConversationId) {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    (server, api, alice, bob, conv)
}

async fn connected(b: ClientBuilder) -> (Client, Events) {
    let (client, mut events) = b.connect().expect("valid options");
    until(&mut events, "Synced", |e| matches!(e, Event::Synced)).await;
    (client, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_exchange_messages_and_use_rooms_history_and_presence() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::Group(GroupId(api.group(&alice, "pair", &[&bob]).await));

    // Alice logs in with her password through the dispatcher; Bob uses a token and the WebSocket URL.
    let dispatch = format!("{}/dispatch", server.http_url());
    let alice_opts = Client::builder().url(&dispatch).login("alice", "password-123").device("a1");
    let (a, mut a_ev) = connected(alice_opts).await;
    let (b, mut b_ev) = connected(opts(&server.ws_url(), &bob, "b1")).await;

    for i in 0..5u64 {
        assert_eq!(a.send(conv, format!("a{i}")).await, Ok(2 * i + 1));
        assert_eq!(b.send(conv, format!("b{i}")).await, Ok(2 * i + 2));
    }
    // Both streams hold the whole conversation, own messages included, in order, once.
    let expect: Vec<String> = (0..5).flat_map(|i| [format!("a{i}"), format!("b{i}")]).collect();
    for ev in [&mut a_ev, &mut b_ev] {
        let got = messages(ev, conv, 10).await;
        assert_eq!(ids(&got), (1..=10).collect::<Vec<_>>());
        assert_eq!(got.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), expect);
    }

    // Rooms: Bob joins Alice's room, gets its messages live; history pages; presence.
    let room = RoomId(api.room(&alice, "lobby").await);
    b.join(room).await.expect("join");
    let rconv = ConversationId::Room(room);
    assert_eq!(a.send(rconv, "welcome").await, Ok(1));
    assert_eq!(messages(&mut b_ev, rconv, 1).await[0].body, "welcome");
    let page = b.history(conv, Some(10), Some(3)).await.expect("history");
    assert_eq!(ids(&page.messages), vec![7, 8, 9]);
    assert!(page.has_more);
    let presence = b.query_presence(&[alice.id]).await.expect("presence");
    assert_eq!(presence.len(), 1);
    assert_eq!(presence[0].status, PresenceStatus::Online);
    b.leave(room).await.expect("leave");
    // A refused send fails for good, and the client carries on.
    let err = b.send(rconv, "after leaving").await.expect_err("not a member any more");
    assert!(
        matches!(err, SendError::Rejected { code: im_client::core::ErrorCode::NotMember, .. }),
        "{err:?}"
    );
    let err = b.send(conv, "x".repeat(20_000)).await.expect_err("too large");
    assert!(matches!(err, SendError::BodyTooLarge { .. }), "{err:?}");
    // Within max_body_bytes, but the JSON-escaped frame would exceed max_frame_bytes (1009 loop).
    let err = b.send(conv, "\u{1}".repeat(16_000)).await.expect_err("frame too large");
    assert!(matches!(err, SendError::BodyTooLarge { len, .. } if len > 65_536), "{err:?}");
    assert_eq!(b.send(conv, "still here").await, Ok(11));

    a.shutdown().await;
    b.shutdown().await;
    until(&mut a_ev, "Stopped", |e| matches!(e, Event::Stopped { reason: StopReason::Shutdown })).await;
    server.shutdown().await;
}

/// Events of one client gathered by a background task, with arrival times.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(Instant, Event)>>>);

impl Log {
    fn spawn(mut events: Events) -> Log {
        let log = Log::default();
        let inner = log.0.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                inner.lock().unwrap().push((Instant::now(), e));
            }
        });
        log
    }

    fn messages(&self, conv: ConversationId) -> Vec<Message> {
        let log = self.0.lock().unwrap();
        log.iter()
            .filter_map(|(_, e)| match e {
                Event::Message(m) if m.conv == conv => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// When the first `Synced` after `t` arrived.
    fn synced_after(&self, t: Instant) -> Option<Instant> {
        let log = self.0.lock().unwrap();
        log.iter().find(|(at, e)| *at > t && matches!(e, Event::Synced)).map(|(at, _)| *at)
    }

    /// The log without message bodies, for failure reports.
    fn summary(&self) -> Vec<String> {
        let log = self.0.lock().unwrap();
        log.iter()
            .map(|(_, e)| match e {
                Event::Message(m) => format!("m{}", m.id),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|(_, e)| pred(e)).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_while_clients_send_loses_and_duplicates_nothing() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let server = start_embedded(dir.path(), "127.0.0.1:0").await;
    let addr = server.local_addr().to_string();
    let api = Api::new(&server);
    let mut users = Vec::new();
    for i in 0..CLIENTS {
        users.push(api.user(&format!("user{i}")).await);
    }
    let others: Vec<&TestUser> = users[1..].iter().collect();
    let conv = ConversationId::Group(GroupId(api.group(&users[0], "crew", &others).await));

    let mut clients = Vec::new();
    let mut logs = Vec::new();
    for (i, u) in users.iter().enumerate() {
        // Half go through the dispatcher, half use the WebSocket URL directly.
        let url = if i % 2 == 0 { format!("http://{addr}/dispatch") } else { format!("ws://{addr}/ws") };
        let (c, mut ev) = opts(&url, u, &format!("dev{i}")).connect().unwrap();
        until(&mut ev, "Synced", |e| matches!(e, Event::Synced)).await;
        clients.push(c);
        logs.push(Log::spawn(ev));
    }

    // Every client sends PER_CLIENT messages, a new one every 4 ms without
    // waiting for the previous ack (so several are in flight), while the
    // server restarts.
    let mut senders = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        senders.push(tokio::spawn(async move {
            let mut in_flight = Vec::new();
            for n in 0..PER_CLIENT {
                let c = c.clone();
                in_flight.push(tokio::spawn(async move {
                    let issued = Instant::now();
                    let id = tokio::time::timeout(WAIT, c.send(conv, format!("c{i}-{n}"))).await;
                    (issued, Instant::now(), id.expect("send resolves").expect("send succeeds"))
                }));
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            let mut acked = Vec::new();
            for t in in_flight {
                acked.push(t.await.expect("send task"));
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    let killed = Instant::now();
    server.shutdown().await;
    let down_for = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = start_embedded(dir.path(), &addr).await;
    let restarted = Instant::now();

    let mut acked = Vec::new();
    for s in senders {
        acked.extend(tokio::time::timeout(WAIT * 2, s).await.expect("senders finish").unwrap());
    }
    let acked_ids: Vec<u64> = acked.iter().map(|(_, _, id)| *id).collect();
    // Sends made before the kill and acknowledged only by the new server.
    let spanning = acked.iter().filter(|(issued, done, _)| *issued < killed && *done > restarted).count();
    let total = CLIENTS * PER_CLIENT;
    let unique: BTreeSet<u64> = acked_ids.iter().copied().collect();
    assert_eq!(unique.len(), total, "every send got its own id");

    // Every client ends with every message exactly once, in order.
    let deadline = Instant::now() + WAIT;
    let done = |l: &Log| l.messages(conv).len() >= total && l.synced_after(restarted).is_some();
    while !logs.iter().all(done) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, l) in logs.iter().enumerate() {
        assert!(done(l), "client {i} not resynced: {:?}", l.summary());
    }
    let all_resynced = logs.iter().filter_map(|l| l.synced_after(restarted)).max().expect("resynced");
    let expected_bodies: BTreeSet<String> =
        (0..CLIENTS).flat_map(|i| (0..PER_CLIENT).map(move |n| format!("c{i}-{n}"))).collect();
    let (mut lost, mut duplicated) = (0, 0);
    for (i, log) in logs.iter().enumerate() {
        let got = log.messages(conv);
        let bodies: BTreeSet<String> = got.iter().map(|m| m.body.clone()).collect();
        lost += expected_bodies.difference(&bodies).count();
        duplicated += got.len() - bodies.len();
        assert_eq!(
            ids(&got),
            (1..=total as u64).collect::<Vec<_>>(),
            "client {i}: ids 1..={total}, once, in order"
        );
        assert_eq!(bodies, expected_bodies, "client {i}");
        assert!(log.count(|e| matches!(e, Event::Disconnected { .. })) >= 1, "client {i} saw the restart");
    }
    // The server stored each message once (resends were deduplicated).
    let stored = clients[0].history(conv, None, None).await.expect("history");
    assert_eq!(stored.messages.len(), 200.min(total));
    assert_eq!(stored.messages.last().map(|m| m.id), Some(total as u64));
    println!(
        "restart: {CLIENTS} clients, {total} messages; server down {:?} (+200 ms pause); kill -> all resynced {:?}; \
         restart -> all resynced {:?}; {spanning} sends spanned the restart; lost {lost}, duplicated {duplicated}",
        down_for,
        all_resynced - killed,
        all_resynced - restarted,
    );
    assert_eq!((lost, duplicated), (0, 0));
    for c in &clients {
        c.shutdown().await;
    }
    server.shutdown().await;
}

/// A TCP proxy that can stop forwarding while keeping every socket open
/// (a frozen server, or a middlebox blackholing packets).
struct Proxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    wait_thawed(&f).await;
                    let Ok(up) = TcpStream::connect(upstream).await else { return };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::spawn(pipe(dr, uw, f.clone()));
                    tokio::spawn(pipe(ur, dw, f));
                });
            }
        });
        Proxy { addr, frozen }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

async fn wait_thawed(frozen: &AtomicBool) {
    // Bounded: a test never stays frozen for more than a minute.
    for _ in 0..6000 {
        if !frozen.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    f: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_thawed(&f).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Frozen meanwhile: hold the bytes (nothing gets through, nothing is closed).
        wait_thawed(&f).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_network_is_detected_by_heartbeat_and_reconnects_with_growing_delays() {
    let (server, _api, alice, bob, conv) = alice_and_bob().await;
    let proxy = Proxy::start(server.local_addr()).await;

    let interval = Duration::from_millis(300);
    let timeout = Duration::from_millis(300);
    let b = opts(&format!("ws://{}/ws", proxy.addr), &alice, "a1")
        .heartbeat_interval(interval)
        .pong_timeout(timeout)
        .connect_timeout(Duration::from_millis(400))
        .backoff(Duration::from_millis(100), Duration::from_secs(2))
        .backoff_multiplier(2.0)
        .jitter(0.1);
    let (a, mut a_ev) = connected(b).await;
    let (bc, _b_ev) = connected(opts(&server.ws_url(), &bob, "b1")).await;

    proxy.freeze(true);
    let frozen_at = Instant::now();
    let (ev, _) = until(&mut a_ev, "Disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
    let detected = frozen_at.elapsed();
    assert!(matches!(ev, Event::Disconnected { code: None, .. }), "{ev:?}");
    assert!(detected <= interval + timeout + Duration::from_millis(400), "detected after {detected:?}");
    // Messages sent meanwhile are stored; Alice gets them after the thaw.
    assert_eq!(bc.send(conv, "while frozen").await, Ok(1));
    // Alice sends into the frozen connection before noticing... no: it is
    // already dead; this send waits in her queue and goes out after the thaw.
    let queued = tokio::spawn({
        let a = a.clone();
        async move { a.send(conv, "queued while frozen").await }
    });

    let mut delays = Vec::new();
    for n in 1..=4u32 {
        let (ev, _) = until(&mut a_ev, "Reconnecting", |e| matches!(e, Event::Reconnecting { .. })).await;
        let Event::Reconnecting { attempt, delay, reason } = ev else { unreachable!() };
        assert!(!reason.is_empty(), "the event says why");
        assert_eq!(attempt, n);
        delays.push(delay);
    }
    assert!(delays.windows(2).all(|w| w[1] > w[0]), "delays grow: {delays:?}");
    assert!(delays[0] >= Duration::from_millis(90) && delays[0] <= Duration::from_millis(110), "{delays:?}");

    proxy.freeze(false);
    let thawed = Instant::now();
    until(&mut a_ev, "Connected", |e| matches!(e, Event::Connected { .. })).await;
    let got = messages(&mut a_ev, conv, 2).await;
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["while frozen", "queued while frozen"]);
    assert_eq!(queued.await.unwrap(), Ok(2));
    println!(
        "frozen network: detected after {detected:?}; delays {delays:?}; back {:?} after thaw",
        thawed.elapsed()
    );
    assert_eq!(a.send(conv, "back").await, Ok(3));
    a.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_whose_ack_is_lost_is_resent_with_its_cmid_and_stored_once() {
    let (server, _api, alice, bob, conv) = alice_and_bob().await;
    let proxy = Proxy::start(server.local_addr()).await;
    let b = opts(&format!("ws://{}/ws", proxy.addr), &alice, "a1")
        .heartbeat_interval(Duration::from_millis(200))
        .pong_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(400))
        .backoff(Duration::from_millis(100), Duration::from_millis(400));
    let (a, mut a_ev) = connected(b).await;
    let (bc, mut b_ev) = connected(opts(&server.ws_url(), &bob, "b1")).await;

    // Freeze, then send: the frame sits in the proxy; the client gives the
    // connection up; on the thaw the proxy delivers the old frame (stored,
    // ack lost) while the client resends it on its new connection.
    proxy.freeze(true);
    let sent = tokio::spawn({
        let a = a.clone();
        async move { a.send(conv, "maybe twice?").await }
    });
    until(&mut a_ev, "Disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
    proxy.freeze(false);
    let id = tokio::time::timeout(WAIT, sent).await.expect("send resolves").unwrap().expect("acked");
    assert_eq!(id, 1);
    assert_eq!(bc.send(conv, "next").await, Ok(2), "stored once: the next message is 2");
    let got = messages(&mut b_ev, conv, 2).await;
    assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["maybe twice?", "next"]);
    let got = messages(&mut a_ev, conv, 2).await;
    assert_eq!(ids(&got), vec![1, 2], "own message once, then Bob's");
    a.shutdown().await;
    bc.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_and_refused_tokens_stop_the_client_for_good() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let (a, mut a_ev) = connected(opts(&server.ws_url(), &alice, "a1")).await;

    let (s, _) = api.call("POST", "/api/v1/logout", Some(&alice.token), None).await;
    assert_eq!(s, 204);
    let (ev, skipped) = until(&mut a_ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    match ev {
        Event::Stopped { reason: StopReason::Closed { code, .. } } => assert_eq!(code.0, 4001),
        other => panic!("{other:?}"),
    }
    assert!(!skipped.iter().any(|e| matches!(e, Event::Reconnecting { .. })), "no retry: {skipped:?}");
    assert!(tokio::time::timeout(WAIT, a_ev.recv()).await.expect("stream ends").is_none(), "Stopped is last");
    assert_eq!(
        a.send(ConversationId::direct(alice.id, im_client::core::UserId(99)), "x").await,
        Err(SendError::Stopped)
    );

    // The revoked token is refused at the handshake (HTTP 401): terminal too.
    let (_c, mut ev) = opts(&server.ws_url(), &alice, "a1").connect().unwrap();
    let (ev, skipped) = until(&mut ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert_eq!(ev, Event::Stopped { reason: StopReason::Unauthorized });
    assert!(skipped.is_empty(), "{skipped:?}");

    // Wrong password: login refused, terminal.
    let (_c, mut ev) =
        Client::builder().url(server.ws_url()).login("alice", "wrong-password").connect().unwrap();
    let (ev, _) = until(&mut ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert!(matches!(ev, Event::Stopped { reason: StopReason::LoginFailed(_) }), "{ev:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_devices_stay_in_step_and_a_restarted_app_fetches_only_what_is_new() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let alice_laptop = api.login("alice").await;
    let conv = ConversationId::direct(alice.id, bob.id);
    let dir = tempfile::tempdir().unwrap();
    let cursor_file = dir.path().join("laptop.json");

    let (phone, mut phone_ev) = connected(opts(&server.ws_url(), &alice, "phone")).await;
    let laptop_opts = || {
        opts(&server.ws_url(), &alice_laptop, "laptop")
            .cursor_store(FileCursorStore::open(&cursor_file).unwrap())
    };
    let (laptop, mut laptop_ev) = connected(laptop_opts()).await;
    let (b, mut b_ev) = connected(opts(&server.ws_url(), &bob, "b")).await;

    let mut expect = Vec::new();
    for (who, c) in [("phone", &phone), ("laptop", &laptop), ("bob", &b), ("phone", &phone)] {
        for n in 0..2 {
            let body = format!("{who}-{n}");
            c.send(conv, body.clone()).await.expect("send");
            expect.push(body);
        }
    }
    for ev in [&mut phone_ev, &mut laptop_ev, &mut b_ev] {
        let got = messages(ev, conv, expect.len()).await;
        assert_eq!(ids(&got), (1..=expect.len() as u64).collect::<Vec<_>>());
        assert_eq!(got.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), expect);
    }

    // The laptop app quits cleanly; three messages arrive while it is gone.
    laptop.shutdown().await;
    until(&mut laptop_ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    for n in 0..3 {
        b.send(conv, format!("later-{n}")).await.expect("send");
    }
    let (laptop, mut laptop_ev) = laptop_opts().connect().unwrap();
    let (_, before) = until(&mut laptop_ev, "Synced", |e| matches!(e, Event::Synced)).await;
    let fetched: Vec<u64> = before
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(fetched, vec![9, 10, 11], "only what is new");
    laptop.shutdown().await;
    phone.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
}

/// A stand-in dispatcher that counts how often it is asked and always
/// answers with `ws_url`.
async fn counting_dispatcher(ws_url: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/dispatch", listener.local_addr().unwrap());
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (h, ws_url) = (h.clone(), ws_url.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = format!(r#"{{"url":"{ws_url}","node":"fake"}}"#);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_codes_choose_between_the_same_node_and_the_dispatcher() {
    // The server closes idle connections quickly (3002, "same node"); the
    // client pings too rarely on purpose.
    let mut cfg = ServerConfig::default();
    cfg.idle_timeout = Duration::from_millis(400);
    let server = im_tests::start(cfg).await;
    let alice = Api::new(&server).user("alice").await;
    let (dispatcher, hits) = counting_dispatcher(server.ws_url()).await;
    let (a, mut ev) =
        opts(&dispatcher, &alice, "a1").heartbeat_interval(Duration::from_secs(30)).connect().unwrap();
    until(&mut ev, "Connected", |e| matches!(e, Event::Connected { .. })).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the first connect asks the dispatcher");
    let (e, _) = until(&mut ev, "Disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(matches!(e, Event::Disconnected { code: Some(c), .. } if c.0 == 3002), "{e:?}");
    until(&mut ev, "Connected", |e| matches!(e, Event::Connected { .. })).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "3002: same node, no dispatcher");
    a.shutdown().await;

    // 3500 (shutdown): back to the dispatcher.
    let (a, mut ev) =
        opts(&dispatcher, &alice, "a2").heartbeat_interval(Duration::from_millis(100)).connect().unwrap();
    until(&mut ev, "Synced", |e| matches!(e, Event::Synced)).await;
    let before = hits.load(Ordering::SeqCst);
    server.shutdown().await;
    let (e, _) = until(&mut ev, "Disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(matches!(e, Event::Disconnected { code: Some(c), .. } if c.0 == 3500), "{e:?}");
    until(&mut ev, "Reconnecting", |e| matches!(e, Event::Reconnecting { .. })).await;
    // Every failed attempt asks again (the node is gone).
    until(&mut ev, "Reconnecting", |e| matches!(e, Event::Reconnecting { attempt: 3, .. })).await;
    assert!(hits.load(Ordering::SeqCst) >= before + 2, "asked again on each attempt");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_ends_the_retries() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens there any more
    let user = TestUser { id: im_client::core::UserId(1), name: "x".into(), token: "t".into() };
    let (_c, mut ev) = opts(&format!("ws://{addr}/ws"), &user, "d")
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .max_reconnect_attempts(2)
        .connect()
        .unwrap();
    let (e, skipped) = until(&mut ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    let Event::Stopped { reason: StopReason::TooManyAttempts { attempts: 2, last_error } } = e else {
        panic!("expected TooManyAttempts after 2 attempts, got {e:?}");
    };
    assert!(last_error.contains("failed"), "the last attempt's error is kept: {last_error}");
    let attempts: Vec<u32> = skipped
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_token_is_renewed_by_password_login_but_stops_a_token_client() {
    let mut cfg = ServerConfig::default();
    cfg.token_ttl = Duration::from_millis(1200);
    cfg.heartbeat_interval = Duration::from_millis(200);
    let server = im_tests::start(cfg).await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;

    let (a, mut a_ev) =
        connected(Client::builder().url(server.ws_url()).login("alice", "password-123")).await;
    let (_t, mut t_ev) = connected(opts(&server.ws_url(), &alice, "t")).await;

    // The token client cannot renew: 4000 is terminal for it.
    let (e, _) = until(&mut t_ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert!(
        matches!(e, Event::Stopped { reason: StopReason::Closed { code, .. } } if code.0 == 4000),
        "{e:?}"
    );

    // The password client logs in again and carries on.
    let (e, _) = until(&mut a_ev, "Disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(matches!(e, Event::Disconnected { code: Some(c), .. } if c.0 == 4000), "{e:?}");
    let (_, skipped) = until(&mut a_ev, "Synced", |e| matches!(e, Event::Synced)).await;
    assert!(skipped.iter().any(|e| matches!(e, Event::Connected { .. })), "{skipped:?}");
    assert!(!skipped.iter().any(|e| matches!(e, Event::Stopped { .. })), "{skipped:?}");
    let bob = api.user("bob").await;
    assert_eq!(a.send(ConversationId::direct(alice.id, bob.id), "renewed").await, Ok(1));
    a.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_sends_is_paced_under_the_server_rate_limit() {
    const N: usize = 260; // above the server's burst of 200
    let (server, _api, alice, _bob, conv) = alice_and_bob().await;
    let (a, mut a_ev) = connected(opts(&server.ws_url(), &alice, "a1")).await;
    let started = Instant::now();
    let sends: Vec<_> = (0..N)
        .map(|n| {
            let a = a.clone();
            tokio::spawn(async move { a.send(conv, format!("burst-{n}")).await })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for s in sends {
        let id = tokio::time::timeout(WAIT, s).await.expect("acked in time").unwrap().expect("sent");
        ids.insert(id);
    }
    assert_eq!(ids, (1..=N as u64).collect::<BTreeSet<_>>());
    assert_eq!(messages(&mut a_ev, conv, N).await.len(), N);
    let metrics = reqwest::get(format!("{}/metrics", server.http_url())).await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("code=\"rate_limited\""), "the server never had to refuse a frame");
    println!("pacing: {N} sends acked in {:?}", started.elapsed());
    a.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_peer_client_as_an_event() {
    let server = start_default().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::Group(GroupId(api.group(&alice, "pair", &[&bob]).await));
    let url = server.ws_url();
    let (a, _a_events) = connected(opts(&url, &alice, "a")).await;
    let (b, mut b_events) = connected(opts(&url, &bob, "b")).await;
    for typing in [true, false] {
        a.typing(conv, typing).await.expect("typing answered");
        let (e, _) = until(&mut b_events, "Typing", |e| matches!(e, Event::Typing { .. })).await;
        match e {
            Event::Typing { conv: c, user, typing: t } => assert_eq!((c, user, t), (conv, alice.id, typing)),
            other => panic!("{other:?}"),
        }
    }
    // Rooms refuse typing, and the error reaches the app.
    let room = RoomId(api.room(&alice, "lobby").await);
    a.join(room).await.unwrap();
    assert!(a.typing(ConversationId::Room(room), true).await.is_err());
    a.shutdown().await;
    b.shutdown().await;
}

/// Waits until `f` holds (polling; at most [`WAIT`]).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_keeps_read_state_and_marks_made_offline_go_out_after_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_embedded(dir.path(), "127.0.0.1:0").await;
    let addr = server.local_addr().to_string();
    let url = server.ws_url();
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let (b, _b_events) = connected(opts(&url, &bob, "b")).await;
    for i in 0..4 {
        b.send(conv, format!("m{i}")).await.expect("sent");
    }
    let (laptop, mut laptop_events) = connected(opts(&url, &alice, "laptop")).await;
    let (phone, mut phone_events) = connected(opts(&url, &alice, "phone")).await;
    // Counts are state the app can read at any moment.
    eventually("the phone knows 4 unread", || phone.read_state(conv).is_some_and(|s| s.unread == 4)).await;
    let s = phone.read_state(conv).unwrap();
    assert_eq!((s.head, s.read, s.unread, phone.unread_total()), (4, 0, 4, 4));
    let inbox = phone.inbox().await.expect("inbox");
    assert_eq!((inbox.len(), inbox[0].unread), (1, 4));
    assert_eq!(inbox[0].last.as_ref().map(|m| m.body.as_str()), Some("m3"));

    // The laptop reads: its own count follows at once, the phone's live.
    laptop.mark_read(conv, 3).await.expect("marked");
    let (e, _) = until(&mut laptop_events, "Unread", |e| matches!(e, Event::Unread { .. })).await;
    assert_eq!(e, Event::Unread { conv, unread: 1, read: 3 });
    let (e, _) = until(&mut phone_events, "ReadUpTo", |e| matches!(e, Event::ReadUpTo { .. })).await;
    assert_eq!(e, Event::ReadUpTo { conv, id: 3 });
    let (e, _) = until(&mut phone_events, "Unread", |e| matches!(e, Event::Unread { .. })).await;
    assert_eq!(e, Event::Unread { conv, unread: 1, read: 3 });
    // An id beyond what the client has is lowered to its newest message.
    laptop.mark_read(conv, 99).await.expect("marked");
    let (e, _) = until(&mut phone_events, "ReadUpTo", |e| matches!(e, Event::ReadUpTo { .. })).await;
    assert_eq!(e, Event::ReadUpTo { conv, id: 4 });
    assert_eq!(phone.read_state(conv).map(|s| s.unread), Some(0));

    // Offline: the phone marks while the server is down; the mark goes
    // out after the reconnect, the highest of the two.
    laptop.shutdown().await;
    b.send(conv, "m4").await.expect("sent");
    b.send(conv, "m5").await.expect("sent");
    eventually("the phone has 2 unread", || phone.read_state(conv).is_some_and(|s| s.unread == 2)).await;
    b.shutdown().await;
    server.shutdown().await;
    until(&mut phone_events, "Disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
    phone.mark_read(conv, 5).await.expect("queued");
    phone.mark_read(conv, 6).await.expect("queued");
    eventually("the offline mark counts at once", || phone.read_state(conv).is_some_and(|s| s.unread == 0))
        .await;
    let server = start_embedded(dir.path(), &addr).await;
    until(&mut phone_events, "Synced", |e| matches!(e, Event::Synced)).await;
    let path = format!("/api/v1/conversations/{conv}/read");
    let api = Api::new(&server);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = api.call("GET", &path, Some(&alice.token), None).await;
        if body["read"] == serde_json::json!(6) {
            assert_eq!(body["devices"][1], serde_json::json!({"device": "phone", "read": 6}), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the offline mark never reached the server: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A device that was away learns from the inbox walk after its sync.
    let (laptop, mut laptop_events) = opts(&server.ws_url(), &alice, "laptop").connect().unwrap();
    let (e, _) = until(&mut laptop_events, "ReadUpTo", |e| matches!(e, Event::ReadUpTo { .. })).await;
    assert_eq!(e, Event::ReadUpTo { conv, id: 6 });
    assert_eq!(laptop.read_state(conv).map(|s| (s.head, s.read, s.unread)), Some((6, 6, 0)));
    laptop.shutdown().await;
    phone.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_refreshed_for_the_app_and_expires_on_the_receiver() {
    let (server, _api, alice, bob, conv) = alice_and_bob().await;
    let url = server.ws_url();
    let (a, _a_events) = connected(opts(&url, &alice, "a")).await;
    let (_b, mut b_events) = connected(opts(&url, &bob, "b")).await;
    a.send(conv, "hi").await.unwrap();
    // Keystrokes for 4 s: one `true`, then a refresh; Bob's indicator stays on.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        a.typing(conv, true).await.expect("typing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut typing = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    // Alice pauses: her client stops by itself after TYPING_IDLE.
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), b_events.recv()).await {
            Ok(Some(Event::Typing { typing: t, user, .. })) => {
                assert_eq!(user, alice.id);
                typing.push((t, started.elapsed()));
                if !t {
                    break;
                }
            }
            _ => continue,
        }
    }
    let trues = typing.iter().filter(|(t, _)| *t).count();
    assert!(
        (2..=3).contains(&trues),
        "one true and one or two refreshes over 4 s, not one per keystroke: {typing:?}"
    );
    let (last, at) = *typing.last().expect("typing events");
    assert!(!last, "stopped in the end: {typing:?}");
    assert!(at >= Duration::from_secs(4) + im_client::TYPING_IDLE - Duration::from_millis(600), "{typing:?}");

    // Receiver-side expiry: a `true` never refreshed (sent on a raw socket) ends after 6 s.
    let mut raw = im_tests::Ws::connect_v(&url, &alice.token, "raw", 2).await;
    let rid = raw.rid();
    raw.request(im_protocol::ClientFrame::Typing { rid, conv, typing: true }).await;
    let (e, _) =
        until(&mut b_events, "Typing true", |e| matches!(e, Event::Typing { typing: true, .. })).await;
    assert!(matches!(e, Event::Typing { user, .. } if user == alice.id));
    let heard = Instant::now();
    until(&mut b_events, "Typing false", |e| matches!(e, Event::Typing { typing: false, .. })).await;
    let lasted = heard.elapsed();
    let expiry = Duration::from_millis(im_client::core::limits::TYPING_EXPIRY_MS);
    assert!(
        lasted >= expiry - Duration::from_millis(600) && lasted < expiry + Duration::from_secs(2),
        "{lasted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiving_client_reports_delivery_by_itself_and_reads_show_as_receipts() {
    let (server, _api, alice, bob, conv) = alice_and_bob().await;
    let url = server.ws_url();
    let (a, mut a_events) = connected(opts(&url, &alice, "a")).await;
    let (b, mut b_events) = connected(opts(&url, &bob, "b")).await;
    let id = a.send(conv, "are you there?").await.expect("sent");
    until(&mut b_events, "the message", |e| matches!(e, Event::Message(m) if m.id == id)).await;
    // Bob's client told the server it received the message; Alice is told.
    let (e, _) = until(&mut a_events, "Receipt", |e| matches!(e, Event::Receipt { .. })).await;
    assert_eq!(e, Event::Receipt { conv, user: bob.id, read: 0, delivered: id });
    b.mark_read(conv, id).await.expect("marked");
    let (e, _) =
        until(&mut a_events, "Receipt", |e| matches!(e, Event::Receipt { read, .. } if *read == id)).await;
    assert_eq!(e, Event::Receipt { conv, user: bob.id, read: id, delivered: id });
    let receipts = a.receipts(conv).await.expect("receipts");
    assert_eq!(
        receipts.iter().map(|r| (r.user, r.read, r.delivered)).collect::<Vec<_>>(),
        vec![(alice.id, id, id), (bob.id, id, id)]
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A server that speaks only protocol version 1 (as before version 2):
/// refuses `v=2` with 4003, and greets `v=1` with `hello`.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
async fn version_1_only_server() -> (String, Arc<Mutex<Vec<String>>>) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::CloseCode as WsCode, CloseFrame};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut query = String::new();
                let callback = |req: &Request, resp: Response| {
                    query = req.uri().query().unwrap_or("").to_owned();
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
                seen.lock().unwrap().push(query.clone());
                if query.split('&').any(|p| p == "v=2") {
                    let close =
                        CloseFrame { code: WsCode::from(4003), reason: "unsupported protocol".into() };
                    let _ = ws.send(WsMessage::Close(Some(close))).await;
                } else {
                    let hello = im_client::core::ServerFrame::Hello {
                        protocol: 1,
                        user: im_client::core::UserId(7),
                        device: "old".into(),
                        node: "old-node".into(),
                        heartbeat_interval_ms: 15_000,
                        idle_timeout_ms: 45_000,
                        limits: im_client::core::WireLimits::default(),
                    };
                    let text = im_client::core::codec::encode_server(&hello);
                    let _ = ws.send(WsMessage::Text(text.into())).await;
                }
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    (format!("ws://{addr}/ws"), asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_server_is_asked_for_version_1_after_refusing_2() {
    let (url, asked) = version_1_only_server().await;
    let user = TestUser { id: im_client::core::UserId(7), name: "old".into(), token: "t".into() };
    let (client, mut events) = opts(&url, &user, "old").connect().expect("valid options");
    let (e, _) = until(&mut events, "Connected", |e| matches!(e, Event::Connected { .. })).await;
    assert!(matches!(e, Event::Connected { node, .. } if node == "old-node"));
    let asked = asked.lock().unwrap().clone();
    let versions: Vec<&str> =
        asked.iter().map(|q| q.split('&').find(|p| p.starts_with("v=")).unwrap_or("none")).collect();
    assert_eq!(versions, ["v=2", "v=1"], "queries: {asked:?}");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_carry_content_replies_and_mentions_to_the_other_device() {
    use im_client::core::content::{Content, Location};
    use im_client::Draft;
    let (server, _api, alice, bob, conv) = alice_and_bob().await;
    let url = server.ws_url();
    let (a, _a_events) = connected(opts(&url, &alice, "a")).await;
    let (b, mut b_events) = connected(opts(&url, &bob, "b")).await;
    let first = a.send(conv, "where?").await.unwrap();
    let pin = Content::Location(Location { lat: 52.52, lon: 13.405, name: Some("Berlin".into()) });
    let draft = Draft::content(pin.clone(), "📍 Berlin").reply_to(first).mention(&[bob.id]);
    let receipt = a.send_draft(conv, draft).await.expect("sent");
    let (e, _) =
        until(&mut b_events, "the pin", |e| matches!(e, Event::Message(m) if m.id == receipt.id)).await;
    let Event::Message(m) = e else { unreachable!() };
    assert_eq!((m.body.as_str(), m.reply_to, m.mentions.clone()), ("📍 Berlin", Some(first), vec![bob.id]));
    assert_eq!(m.typed_content().unwrap(), pin);
    // A reply to nothing is refused and reaches the app as such.
    match a.send_draft(conv, Draft::text("?").reply_to(99)).await {
        Err(SendError::Rejected { code: im_client::ErrorCode::InvalidField, .. }) => {}
        other => panic!("{other:?}"),
    }
    a.shutdown().await;
    b.shutdown().await;
}
