//! Three nodes on the real Redis and PostgreSQL of this machine: cross-node
//! delivery, gapless ids under concurrent senders on different nodes,
//! shared sessions, presence and the registry after a node dies, drain and
//! node loss with real im-client clients (0 lost, 0 duplicated).
//!
//! Skipped loudly when the services are missing, unless
//! `IM_REQUIRE_SERVICES=1` (CI), which makes a missing service a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use im_client::{Client, Event, Events};
use im_protocol::{ClientFrame, CloseCode, ConversationId, GroupId, PresenceStatus, RoomId, ServerFrame};
use im_server::RunningServer;
use im_tests::cluster::{services_available, Cluster};
use im_tests::{cmid, Api, Ended, TestUser, Ws};

const PASSWORD: &str = "password-123";

async fn send_ok(ws: &mut Ws, conv: ConversationId, tag: String, body: &str) -> u64 {
    let rid = ws.rid();
    match ws.request(ClientFrame::send(rid, conv, cmid(tag), body)).await {
        ServerFrame::Ack { id, .. } => id,
        other => panic!("send failed: {other:?}"),
    }
}

/// Collects live `message` frames per conversation until `want` of them.
async fn collect(ws: &mut Ws, want: usize) -> BTreeMap<ConversationId, Vec<u64>> {
    let mut got: BTreeMap<ConversationId, Vec<u64>> = BTreeMap::new();
    let mut n = 0;
    while n < want {
        match ws.try_recv(Duration::from_secs(10)).await {
            Ok(Some(ServerFrame::Message(m))) => {
                got.entry(m.conv).or_default().push(m.id);
                n += 1;
            }
            Ok(Some(_)) => {}
            other => panic!("after {n} of {want} messages ({got:?}): {other:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_nodes_to_every_recipient_once_in_order() {
    if !services_available().await {
        return;
    }
    let cluster = Cluster::new();
    let nodes = [cluster.node("n0").await, cluster.node("n1").await, cluster.node("n2").await];
    let api = Api::new(&nodes[0]);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let group = ConversationId::Group(GroupId(api.group(&alice, "trio", &[&bob, &carol]).await));
    let room = RoomId(Api::new(&nodes[2]).room(&carol, "lobby").await);
    let direct = ConversationId::direct(alice.id, bob.id);
    // One token, any node: each user on a different node, with a device that
    // sends and one that only listens (a sending connection skips what
    // arrives while it waits for its ack; the listener sees everything,
    // its user's own messages from the other device included).
    let mut a = Ws::open(&nodes[0], &alice, "a-send").await;
    let mut b = Ws::open(&nodes[1], &bob, "b-send").await;
    let mut c = Ws::open(&nodes[2], &carol, "c-send").await;
    let mut listeners = [
        Ws::open(&nodes[0], &alice, "a-listen").await,
        Ws::open(&nodes[1], &bob, "b-listen").await,
        Ws::open(&nodes[2], &carol, "c-listen").await,
    ];
    for ws in [&mut a, &mut b] {
        let rid = ws.rid();
        assert_eq!(ws.request(ClientFrame::Join { rid, room }).await, ServerFrame::Ok { rid });
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // room subscriptions settle

    for i in 0..20 {
        assert_eq!(send_ok(&mut a, group, format!("a{i}"), "from alice").await, i + 1);
    }
    for i in 0..10 {
        assert_eq!(send_ok(&mut b, group, format!("b{i}"), "from bob").await, 21 + i);
    }
    for i in 0..10 {
        assert_eq!(send_ok(&mut a, direct, format!("d{i}"), "psst").await, i + 1);
    }
    let room_conv = ConversationId::Room(room);
    for i in 0..10 {
        assert_eq!(send_ok(&mut c, room_conv, format!("r{i}"), "hello room").await, i + 1);
    }

    let seq = |n: u64| (1..=n).collect::<Vec<u64>>();
    let expected = [
        BTreeMap::from([(group, seq(30)), (direct, seq(10)), (room_conv, seq(10))]),
        BTreeMap::from([(group, seq(30)), (direct, seq(10)), (room_conv, seq(10))]),
        BTreeMap::from([(group, seq(30)), (room_conv, seq(10))]),
    ];
    for (ws, want) in listeners.iter_mut().zip(expected) {
        let total = want.values().map(Vec::len).sum();
        assert_eq!(collect(ws, total).await, want, "every message once, in order, per conversation");
        let extra = ws.try_recv(Duration::from_millis(300)).await.unwrap();
        assert!(!matches!(extra, Some(ServerFrame::Message(_))), "no duplicate delivery: {extra:?}");
    }
    for n in nodes {
        n.shutdown().await;
    }
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_four_senders_on_three_nodes_get_ids_one_to_960() {
    if !services_available().await {
        return;
    }
    const SENDERS: usize = 24;
    const EACH: usize = 40;
    let cluster = Cluster::new();
    let nodes = [cluster.node("n0").await, cluster.node("n1").await, cluster.node("n2").await];
    let api = Api::new(&nodes[1]);
    let owner = api.user("owner").await;
    let mut users = Vec::new();
    for i in 0..SENDERS {
        users.push(api.user(&format!("sender{i}")).await);
    }
    let refs: Vec<&TestUser> = users.iter().collect();
    let conv = ConversationId::Group(GroupId(api.group(&owner, "busy", &refs).await));
    let mut watcher = Ws::open(&nodes[0], &owner, "watch").await;

    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let (url, token) = (nodes[i % 3].ws_url(), u.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&url, &token, "d").await;
            let mut ids = Vec::new();
            for j in 0..EACH {
                ids.push(send_ok(&mut ws, conv, format!("{i}-{j}"), "x").await);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let ids = t.await.unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "a sender's messages keep their order");
        all.extend(ids);
    }
    all.sort_unstable();
    let n = (SENDERS * EACH) as u64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>(), "ids are exactly 1..={n}");
    // The watcher on another node received each exactly once.
    let mut seen = collect(&mut watcher, n as usize).await.remove(&conv).unwrap();
    seen.sort_unstable();
    assert_eq!(seen, (1..=n).collect::<Vec<_>>());
    for n in nodes {
        n.shutdown().await;
    }
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_node_works_on_another_and_logout_anywhere_closes_everywhere() {
    if !services_available().await {
        return;
    }
    let cluster = Cluster::new();
    let nodes = [cluster.node("n0").await, cluster.node("n1").await];
    let alice = Api::new(&nodes[0]).user("alice").await;
    let mut on_a = Ws::open(&nodes[0], &alice, "a").await;
    let mut on_b = Ws::open(&nodes[1], &alice, "b").await;
    let (status, _) = Api::new(&nodes[1]).call("GET", "/api/v1/me", Some(&alice.token), None).await;
    assert_eq!(status, 200, "node B accepts node A's token");

    let (status, _) = Api::new(&nodes[1]).call("POST", "/api/v1/logout", Some(&alice.token), None).await;
    assert_eq!(status, 204);
    assert_eq!(on_a.closed().await, Ended::Closed(CloseCode::SESSION_REVOKED), "closed on node A");
    assert_eq!(on_b.closed().await, Ended::Closed(CloseCode::SESSION_REVOKED), "closed on node B");
    let (status, _) = Api::new(&nodes[0]).call("GET", "/api/v1/me", Some(&alice.token), None).await;
    assert_eq!(status, 401, "revoked everywhere");
    for n in nodes {
        n.shutdown().await;
    }
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_users_go_offline_and_its_registry_entry_disappears() {
    if !services_available().await {
        return;
    }
    let cluster = Cluster::new();
    let n0 = cluster.node("n0").await;
    let n1 = cluster.node("n1").await;
    let api = Api::new(&n0);
    let (bob, carol) = (api.user("bob").await, api.user("carol").await);
    api.group(&bob, "pair", &[&carol]).await;
    let mut b = Ws::open(&n0, &bob, "b").await;
    let mut c = Ws::open(&n1, &carol, "c").await;
    let online = b.recv_until(|f| matches!(f, ServerFrame::Presence(p) if p.user == carol.id)).await;
    assert!(matches!(online, ServerFrame::Presence(p) if p.status == PresenceStatus::Online));
    let live = n0.state().registry().live_nodes().await.unwrap();
    assert_eq!(live.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), vec!["n0", "n1"]);

    // n1 dies: no close frames, nothing withdrawn.
    n1.crash().await;
    assert_eq!(c.closed().await, Ended::Dropped);
    // Carol goes offline once her connection's TTL and the grace period pass.
    let offline = b.recv_until(|f| matches!(f, ServerFrame::Presence(p) if p.user == carol.id)).await;
    assert!(
        matches!(offline, ServerFrame::Presence(p) if p.status == PresenceStatus::Offline),
        "{offline:?}"
    );
    // And the registry forgets n1: the dispatcher offers n0 only.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let live = n0.state().registry().live_nodes().await.unwrap();
        if live.iter().all(|n| n.node == "n0") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "n1 still registered: {live:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, d) = api.call("GET", "/dispatch", None, None).await;
    assert_eq!(d["node"], "n0");
    n0.shutdown().await;
    cluster.cleanup().await;
}

/// A real client of `user` that finds its node through `dispatcher`.
fn client(dispatcher: &RunningServer, user: &TestUser, device: &str) -> (Client, Events) {
    Client::builder()
        .url(format!("{}/dispatch", dispatcher.http_url()))
        .login(user.name.clone(), PASSWORD)
        .device(device)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect()
        .expect("client config")
}

/// Waits (10 s at most per event) until client `i` has connected and synced.
async fn wait_synced(ev: &mut Events, i: usize) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ev.next()).await {
            Ok(Some(Event::Synced)) => return,
            Ok(Some(_)) => {}
            other => panic!("client {i} did not connect: {other:?}"),
        }
    }
}

/// Reads events until `want` messages of `conv` arrived; returns their ids.
async fn messages_of(events: &mut Events, conv: ConversationId, want: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while ids.len() < want {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Event::Message(m))) if m.conv == conv => ids.push(m.id),
            Ok(Some(Event::Stopped { reason })) => panic!("client stopped: {reason}"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("only {} of {want} messages arrived", ids.len()),
        }
    }
    ids
}

/// Where each of `nodes`' connections are: (node index, connections).
fn loads(nodes: &[&RunningServer]) -> Vec<usize> {
    nodes.iter().map(|n| n.state().hub().connection_count()).collect()
}

/// Node loss and drain, with real clients sending all along: every acked
/// message reaches every client exactly once, in order.
async fn clients_survive(kill: bool) {
    const USERS: usize = 9;
    const EACH: u64 = 20;
    let cluster = Cluster::new();
    let mut cfg = cluster.config("n0");
    cfg.registry_ttl = Duration::from_millis(600);
    let n0 = cluster.node_with(cfg.clone()).await;
    cfg.node_name = "n1".into();
    let n1 = cluster.node_with(cfg.clone()).await;
    cfg.node_name = "n2".into();
    let n2 = cluster.node_with(cfg).await;
    let api = Api::new(&n0);
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(api.user(&format!("user{i}")).await);
    }
    let refs: Vec<&TestUser> = users[1..].iter().collect();
    let conv = ConversationId::Group(GroupId(api.group(&users[0], "all", &refs).await));

    // Connect in waves so the least-loaded dispatcher spreads the clients.
    let mut clients = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let (c, mut ev) = client(&n0, u, &format!("dev{i}"));
        wait_synced(&mut ev, i).await;
        clients.push((c, ev));
        if i % 3 == 2 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    let before = loads(&[&n0, &n1, &n2]);
    assert_eq!(before.iter().sum::<usize>(), USERS, "{before:?}");
    assert!(before[1] + before[2] > 0, "some clients on the node that goes away: {before:?}");

    // Everyone sends; meanwhile n1 and n2 go away (n0 hosts the dispatcher).
    let mut senders = Vec::new();
    for (i, (c, _)) in clients.iter().enumerate() {
        let c = c.clone();
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for j in 0..EACH {
                ids.push(c.send(conv, format!("{i}-{j}")).await.expect("acked"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ids
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    if kill {
        n1.crash().await;
        n2.crash().await;
    } else {
        let (d1, d2) = (tokio::spawn(n1.drain()), tokio::spawn(n2.drain()));
        d1.await.unwrap();
        d2.await.unwrap();
    }
    let mut acked = BTreeSet::new();
    for s in senders {
        for id in s.await.unwrap() {
            assert!(acked.insert(id), "id {id} acked twice");
        }
    }
    let total = USERS as u64 * EACH;
    assert_eq!(acked, (1..=total).collect::<BTreeSet<_>>(), "every send acked once, ids gapless");

    // Every client ends with every message exactly once, in order (its own
    // sends included: the event stream is the conversation's full log).
    for (i, (c, ev)) in clients.iter_mut().enumerate() {
        let ids = messages_of(ev, conv, total as usize).await;
        assert_eq!(ids, (1..=total).collect::<Vec<_>>(), "client {i}: 0 lost, 0 duplicated, in order");
        c.shutdown().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while n0.state().hub().connection_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "clients still connected after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n0.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_nodes_while_clients_send_loses_and_duplicates_nothing() {
    if !services_available().await {
        return;
    }
    clients_survive(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_nodes_while_clients_send_loses_and_duplicates_nothing() {
    if !services_available().await {
        return;
    }
    clients_survive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_under_load_is_detected_and_healed_by_sync() {
    if !services_available().await {
        return;
    }
    const USERS: usize = 6;
    const EACH: u64 = 50;
    let cluster = Cluster::new();
    // n1 reaches Redis through a proxy the test cuts: to n1 that is a Redis
    // restart (all its connections drop, pub/sub included).
    let redis_addr: std::net::SocketAddr = im_tests::cluster::redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("IM_REDIS_URL as redis://ip:port");
    let proxy = im_tests::proxy::Proxy::start(redis_addr).await;
    let n0 = cluster.node("n0").await;
    let n1 = cluster.node_via(cluster.config("n1"), &format!("redis://{}", proxy.addr())).await;
    let api = Api::new(&n0);
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(api.user(&format!("user{i}")).await);
    }
    let refs: Vec<&TestUser> = users[1..].iter().collect();
    let conv = ConversationId::Group(GroupId(api.group(&users[0], "all", &refs).await));

    // Half the clients on each node, pinned by WebSocket URL.
    let mut clients = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let node = if i % 2 == 0 { &n0 } else { &n1 };
        let (c, mut ev) = Client::builder()
            .url(node.ws_url())
            .api_base(node.http_url())
            .login(u.name.clone(), PASSWORD)
            .device(format!("dev{i}"))
            .backoff(Duration::from_millis(50), Duration::from_millis(500))
            .connect()
            .expect("client config");
        wait_synced(&mut ev, i).await;
        clients.push((c, ev));
    }
    let mut senders = Vec::new();
    for (i, (c, _)) in clients.iter().enumerate() {
        let c = c.clone();
        senders.push(tokio::spawn(async move {
            for j in 0..EACH {
                c.send(conv, format!("{i}-{j}")).await.expect("acked");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.heal();
    for s in senders {
        s.await.unwrap();
    }
    let total = USERS as u64 * EACH;
    for (i, (c, ev)) in clients.iter_mut().enumerate() {
        let ids = messages_of(ev, conv, total as usize).await;
        assert_eq!(ids, (1..=total).collect::<Vec<_>>(), "client {i}: 0 lost, 0 duplicated, in order");
        c.shutdown().await;
    }
    // The outage really happened: n1 lost its subscription and told its
    // clients to reconnect and sync (3000).
    let metrics = n1.state().metrics().render();
    let reconnects = metrics
        .lines()
        .find(|l| l.starts_with("im_closes_total{reason=\"reconnect\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(reconnects >= (USERS / 2) as f64, "n1's clients were told to resync:\n{metrics}");
    n0.shutdown().await;
    n1.shutdown().await;
    cluster.cleanup().await;
}

/// Two nodes on real Redis and PostgreSQL, and users alice and bob in a
/// group "pair" (`None`, after a SKIPPED note, without the services).
async fn pair_on_two_nodes() -> Option<(Cluster, [RunningServer; 2], TestUser, TestUser, ConversationId)> {
    if !services_available().await {
        return None;
    }
    let cluster = Cluster::new();
    let nodes = [cluster.node("n0").await, cluster.node("n1").await];
    let api = Api::new(&nodes[0]);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let group = ConversationId::Group(GroupId(api.group(&alice, "pair", &[&bob]).await));
    Some((cluster, nodes, alice, bob, group))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_crosses_nodes_to_version_2_connections() {
    let Some((_cluster, nodes, alice, bob, group)) = pair_on_two_nodes().await else { return };
    let mut a = Ws::connect_v(&nodes[0].ws_url(), &alice.token, "a", 2).await;
    let mut b = Ws::connect_v(&nodes[1].ws_url(), &bob.token, "b", 2).await;
    let rid = a.rid();
    assert_eq!(
        a.request(ClientFrame::Typing { rid, conv: group, typing: true }).await,
        ServerFrame::Ok { rid }
    );
    let got = b.recv_until(|f| matches!(f, ServerFrame::UserTyping { .. })).await;
    assert_eq!(got, ServerFrame::UserTyping { conv: group, user: alice.id, typing: true });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_state_crosses_nodes_and_lives_in_postgres() {
    let Some((_cluster, nodes, alice, bob, group)) = pair_on_two_nodes().await else { return };
    let mut b = Ws::connect_v(&nodes[0].ws_url(), &bob.token, "b", 2).await;
    for i in 0..3 {
        let rid = b.rid();
        let frame = ClientFrame::send(rid, group, cmid(format!("x{i}")), "hi");
        assert!(matches!(b.request(frame).await, ServerFrame::Ack { .. }));
    }
    // Alice's laptop on n0 marks read; her phone on n1 is told.
    let mut laptop = Ws::connect_v(&nodes[0].ws_url(), &alice.token, "laptop", 2).await;
    let mut phone = Ws::connect_v(&nodes[1].ws_url(), &alice.token, "phone", 2).await;
    let rid = laptop.rid();
    assert_eq!(laptop.request(ClientFrame::Read { rid, conv: group, id: 2 }).await, ServerFrame::Ok { rid });
    let got = phone.recv_until(|f| matches!(f, ServerFrame::ReadUpTo { .. })).await;
    assert_eq!(got, ServerFrame::ReadUpTo { conv: group, id: 2 });
    // Both nodes read the same state from the shared store.
    for ws in [&mut laptop, &mut phone] {
        let rid = ws.rid();
        match ws.request(ClientFrame::Inbox { rid, after: None, limit: None }).await {
            ServerFrame::InboxPage { entries, .. } => {
                let e = entries.iter().find(|e| e.conv == group).expect("the group is listed");
                assert_eq!((e.head, e.read, e.unread), (3, 2, 1));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_cross_nodes() {
    let Some((_cluster, nodes, alice, bob, group)) = pair_on_two_nodes().await else { return };
    let mut a = Ws::connect_v(&nodes[0].ws_url(), &alice.token, "a", 2).await;
    let mut b = Ws::connect_v(&nodes[1].ws_url(), &bob.token, "b", 2).await;
    let id = send_ok(&mut a, group, "r1".into(), "hi").await;
    let rid = b.rid();
    let cursors = BTreeMap::from([(group, id)]);
    assert_eq!(b.request(ClientFrame::Received { rid, cursors }).await, ServerFrame::Ok { rid });
    let got = a.recv_until(|f| matches!(f, ServerFrame::Receipt { .. })).await;
    assert_eq!(got, ServerFrame::Receipt { conv: group, user: bob.id, read: 0, delivered: id });
    let rid = b.rid();
    assert_eq!(b.request(ClientFrame::Read { rid, conv: group, id }).await, ServerFrame::Ok { rid });
    let got = a.recv_until(|f| matches!(f, ServerFrame::Receipt { .. })).await;
    assert_eq!(got, ServerFrame::Receipt { conv: group, user: bob.id, read: id, delivered: id });
}
