//! The embedded store: stop (or kill -9) and restart the server on the same
//! data directory and nothing acknowledged is lost; ids continue.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_protocol::{codec, ClientFrame, ConversationId, GroupId, RoomId, ServerFrame};
use im_server::store::EmbeddedStore;
use im_server::ServerConfig;
use im_tests::{builder, cmid, start_embedded, Api, TestUser, Ws, WAIT};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_data_dir_keeps_everything_and_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let start = || async {
        builder(ServerConfig::default()).embedded(dir.path()).unwrap().bind("127.0.0.1:0").await.unwrap()
    };

    let server = start().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let group = GroupId(api.group(&alice, "keep", &[&bob]).await);
    let room = RoomId(api.room(&alice, "lobby").await);
    let conv = ConversationId::Group(group);
    let mut ws = Ws::open(&server, &alice, "a").await;
    for i in 1..=3u64 {
        let rid = ws.rid();
        let reply = ws.request(ClientFrame::send(rid, conv, cmid(i), format!("m{i}"))).await;
        assert!(matches!(reply, ServerFrame::Ack { id, .. } if id == i), "{reply:?}");
    }
    drop(ws);
    server.shutdown().await;

    let server = start().await;
    let api = Api::new(&server);
    // The old token still works (same secret, session persisted).
    let mut ws = Ws::open(&server, &alice, "a").await;
    // History is intact.
    let rid = ws.rid();
    match ws.request(ClientFrame::History { rid, conv, before: None, limit: None }).await {
        ServerFrame::HistoryPage { messages, .. } => {
            let got: Vec<_> = messages.iter().map(|m| (m.id, m.body.as_str())).collect();
            assert_eq!(got, vec![(1, "m1"), (2, "m2"), (3, "m3")]);
        }
        other => panic!("{other:?}"),
    }
    // A resend of an acked message is still recognized; a new one gets id 4.
    let rid = ws.rid();
    let dup = ws.request(ClientFrame::send(rid, conv, cmid(2), "again")).await;
    assert!(matches!(dup, ServerFrame::Ack { id: 2, duplicate: true, .. }), "{dup:?}");
    let rid = ws.rid();
    let next = ws.request(ClientFrame::send(rid, conv, cmid(4), "m4")).await;
    assert!(matches!(next, ServerFrame::Ack { id: 4, duplicate: false, .. }), "{next:?}");
    // Groups, members, rooms and user ids survived; new ids continue.
    let (s, info) = api.call("GET", &format!("/api/v1/groups/{}", group.0), Some(&alice.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(info["members"].as_array().map(|m| m.len()), Some(2));
    let rooms = server.state().logic().my_rooms(alice.id).await.unwrap();
    assert_eq!(rooms, vec![room]);
    let carol = api.user("carol").await;
    assert_eq!(carol.id.0, 3, "user ids continue");
    assert_eq!(api.room(&carol, "second").await, room.0 + 1, "room ids continue");
    server.shutdown().await;
}

/// Set in the child process of [`kill_9_loses_no_acknowledged_message`]:
/// it then runs an embedded server on this data directory and address
/// until it is killed.
const CHILD_DIR: &str = "IM_TEST_KILL9_DIR";
const CHILD_ADDR: &str = "IM_TEST_KILL9_ADDR";
const KILL9_TEST: &str = "kill_9_loses_no_acknowledged_message";

/// The server is a real process (this test binary run again as a child)
/// killed with SIGKILL while four clients send: every acknowledged message
/// is there after the restart under its id, ids stay gapless, and resends
/// of every message, acknowledged or not, store each exactly once. The
/// kill lands while acknowledged messages are only in the message log
/// (between two durable redb commits), so this covers its replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() {
    if let (Ok(dir), Ok(addr)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ADDR)) {
        return run_child_server(&dir, &addr).await;
    }
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let mut child = spawn_child_server(dir.path(), &addr).await;
    let api = Api::at(format!("http://{addr}"));
    let users: Vec<TestUser> = futures::future::join_all((0..SENDERS).map(|i| {
        let api = &api;
        async move { api.user(&format!("sender{i}")).await }
    }))
    .await;
    let others: Vec<&TestUser> = users[1..].iter().collect();
    let conv = ConversationId::Group(GroupId(api.group(&users[0], "crash", &others).await));
    let ws_url = format!("ws://{addr}/ws");

    let acked_total = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let mut ws = Ws::connect(&ws_url, &u.token, "d").await;
        let acked_total = acked_total.clone();
        senders.push(tokio::spawn(async move {
            // Sends paced ~2 ms apart, reading acks in between, until the
            // connection breaks. Returns the acks: cmid -> id.
            let mut acked = BTreeMap::new();
            let mut pending = BTreeMap::new();
            'sending: for n in 0..PER_SENDER {
                let rid = ws.rid();
                let tag = format!("s{i}-{n}");
                pending.insert(rid, tag.clone());
                let frame = ClientFrame::send(rid, conv, cmid(&tag), tag);
                if ws.send_raw(WsMessage::Text(codec::encode_client(&frame).into())).await.is_err() {
                    break;
                }
                loop {
                    match ws.try_recv(Duration::from_millis(2)).await {
                        Ok(Some(ServerFrame::Ack { rid, id, .. })) => {
                            acked.insert(pending.remove(&rid).expect("ack of a send"), id);
                            acked_total.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'sending,
                    }
                }
            }
            // Read what is still coming until the kill ends the connection.
            while let Ok(Some(frame)) = ws.try_recv(WAIT).await {
                if let ServerFrame::Ack { rid, id, .. } = frame {
                    acked.insert(pending.remove(&rid).expect("ack of a send"), id);
                }
            }
            acked
        }));
    }
    let deadline = Instant::now() + WAIT;
    while acked_total.load(Ordering::Relaxed) < 100 {
        assert!(Instant::now() < deadline, "only {} acks", acked_total.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A checkpoint may have just emptied the log (under load it can land
    // at this very moment): wait for the next appends to be logged, which
    // takes a millisecond or so while the senders keep going.
    let logged_by = Instant::now() + Duration::from_secs(1);
    let logged = loop {
        let logged = EmbeddedStore::logged_appends(dir.path().join("im.redb")).expect("log readable");
        if logged > 0 || Instant::now() > logged_by {
            break logged;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    child.kill_9();
    assert!(logged > 0, "the kill must land while acked messages are only in the log");

    let mut acked = BTreeMap::new();
    for s in senders {
        acked.extend(tokio::time::timeout(WAIT * 2, s).await.expect("sender ends").unwrap());
    }
    assert!(acked.len() >= 100 && acked.len() < SENDERS * PER_SENDER, "{} acked", acked.len());

    let mut child = spawn_child_server(dir.path(), &addr).await;
    let mut ws = Ws::connect(&ws_url, &users[0].token, "check").await;
    let stored = whole_history(&mut ws, conv).await;
    let ids: Vec<u64> = stored.iter().map(|m| m.id).collect();
    assert_eq!(ids, (1..=stored.len() as u64).collect::<Vec<_>>(), "gapless ids after the crash");
    let by_tag: BTreeMap<&str, u64> = stored.iter().map(|m| (m.body.as_str(), m.id)).collect();
    assert_eq!(by_tag.len(), stored.len(), "no message stored twice");
    for (tag, id) in &acked {
        assert_eq!(by_tag.get(tag.as_str()), Some(id), "acknowledged {tag} kept its id");
    }
    for m in &stored {
        assert_eq!(m.cmid, cmid(&m.body), "content intact");
    }

    // Every message again, as a reconnecting client resends what it has no
    // ack for: stored ones are recognized, the rest get the next ids.
    for (i, user) in users.iter().enumerate() {
        let mut ws = Ws::connect(&ws_url, &user.token, "d").await;
        for n in 0..PER_SENDER {
            let tag = format!("s{i}-{n}");
            let rid = ws.rid();
            let reply = ws.request(ClientFrame::send(rid, conv, cmid(&tag), tag.clone())).await;
            let ServerFrame::Ack { id, duplicate, .. } = reply else { panic!("{reply:?}") };
            match by_tag.get(tag.as_str()) {
                Some(&was) => assert_eq!((id, duplicate), (was, true), "{tag}"),
                None => assert!(!duplicate && id > stored.len() as u64, "{tag}: {id} {duplicate}"),
            }
        }
    }
    let all = whole_history(&mut ws, conv).await;
    let ids: Vec<u64> = all.iter().map(|m| m.id).collect();
    assert_eq!(ids, (1..=(SENDERS * PER_SENDER) as u64).collect::<Vec<_>>());
    let tags: BTreeSet<&str> = all.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(tags.len(), SENDERS * PER_SENDER, "each message once");
    println!(
        "kill -9: {} of {} sends acknowledged before the kill, {logged} in the message log, {} stored after replay",
        acked.len(),
        SENDERS * PER_SENDER,
        stored.len()
    );
    child.kill_9();
}

/// The child process's body: an embedded server until SIGKILL.
async fn run_child_server(dir: &str, addr: &str) {
    let _server = start_embedded(dir, addr).await;
    std::future::pending::<()>().await;
}

/// A server process, killed with SIGKILL at the latest when dropped (also
/// when the test fails).
struct ChildServer(std::process::Child);

impl ChildServer {
    fn kill_9(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("the killed process is reaped");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this test binary again as a server process and waits until it answers.
async fn spawn_child_server(dir: &Path, addr: &str) -> ChildServer {
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([KILL9_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_ADDR, addr)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the server process");
    let child = ChildServer(child);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + WAIT * 3;
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await {
            if r.status().is_success() {
                return child;
            }
        }
        assert!(Instant::now() < deadline, "server process did not come up on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// Every message of `conv`, ascending, paging back through history.
async fn whole_history(ws: &mut Ws, conv: ConversationId) -> Vec<im_protocol::Message> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let rid = ws.rid();
        match ws.request(ClientFrame::History { rid, conv, before, limit: Some(200) }).await {
            ServerFrame::HistoryPage { messages, has_more, .. } => {
                before = messages.first().map(|m| m.id);
                let mut page = messages;
                page.append(&mut all);
                all = page;
                if !has_more || before.is_none() {
                    return all;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}
