//! Pipelined requests and group commit within one conversation, over real
//! sockets: a device may send many requests without waiting; its sends get
//! ascending ids in the order sent and its replies come back in that order;
//! many devices sending into one conversation on the durable embedded store
//! share commits, yet every connection still sees the messages live in id
//! order, gapless.

use std::collections::BTreeSet;
use std::time::Duration;

use im_protocol::{ClientFrame, ConversationId, RoomId, ServerFrame};
use im_server::{RunningServer, ServerConfig};
use im_tests::{builder, cmid, Api, Ws};

/// Rate limits raised: these tests send bursts on purpose.
fn config() -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.limits.rate_per_sec = 100_000;
    cfg.limits.rate_burst = 100_000;
    cfg.user_rate_per_sec = 0;
    cfg
}

async fn embedded(dir: &tempfile::TempDir) -> RunningServer {
    builder(config()).embedded(dir.path()).unwrap().bind("127.0.0.1:0").await.unwrap()
}

/// Reads `n` `message` frames of `conv` and returns their ids in arrival order.
async fn live_ids(ws: &mut Ws, conv: ConversationId, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        if let ServerFrame::Message(m) = ws.recv().await {
            assert_eq!(m.conv, conv);
            ids.push(m.id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_pipelines_sends_and_gets_replies_in_order_with_ascending_ids() {
    const N: u64 = 300; // well past max_in_flight (64): the rest waits in the socket
    let dir = tempfile::tempdir().unwrap();
    let server = embedded(&dir).await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let room = RoomId(api.room(&alice, "pipe").await);
    let conv = ConversationId::Room(room);
    let mut tx = Ws::open(&server, &alice, "phone").await;
    let mut rx = Ws::open(&server, &bob, "laptop").await;
    for ws in [&mut tx, &mut rx] {
        let rid = ws.rid();
        assert!(matches!(ws.request(ClientFrame::Join { rid, room }).await, ServerFrame::Ok { .. }));
    }

    // Everything written before the first reply is read, a resend of the
    // first message in the middle, and a history request at the end.
    let first_rid = tx.rid();
    let mut rids = vec![first_rid];
    tx.send(&ClientFrame::send(first_rid, conv, cmid("m0"), "m0")).await;
    for i in 1..N {
        let rid = tx.rid();
        rids.push(rid);
        tx.send(&ClientFrame::send(rid, conv, cmid(format!("m{i}")), format!("m{i}"))).await;
        if i == N / 2 {
            let rid = tx.rid();
            rids.push(rid);
            tx.send(&ClientFrame::send(rid, conv, cmid("m0"), "m0")).await;
        }
    }
    let history_rid = tx.rid();
    rids.push(history_rid);
    tx.send(&ClientFrame::History { rid: history_rid, conv, before: None, limit: Some(5) }).await;

    let mut replies = Vec::new();
    while replies.len() < rids.len() {
        match tx.recv().await {
            ServerFrame::Message(_) => panic!("the sending connection does not get its own messages"),
            f => replies.push(f),
        }
    }
    let reply_rids: Vec<u64> = replies.iter().map(|f| im_tests::reply_rid(f).expect("rid")).collect();
    assert_eq!(reply_rids, rids, "replies come back in request order");

    let mut fresh = Vec::new();
    for f in &replies {
        match f {
            ServerFrame::Ack { id, duplicate: false, .. } => fresh.push(*id),
            ServerFrame::Ack { id, duplicate: true, cmid: c, .. } => {
                assert_eq!((*id, c.as_str()), (1, cmid("m0").as_str()), "the resend is the first message")
            }
            ServerFrame::HistoryPage { messages, .. } => {
                // Started once every earlier send was answered: it sees them all.
                let ids: Vec<u64> = messages.iter().map(|m| m.id).collect();
                assert_eq!(ids, (N - 4..=N).collect::<Vec<_>>());
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_eq!(fresh, (1..=N).collect::<Vec<_>>(), "ids follow the order sent");
    assert_eq!(live_ids(&mut rx, conv, N as usize).await, (1..=N).collect::<Vec<_>>());
    let extra = rx.try_recv(Duration::from_millis(300)).await.expect("still open");
    assert!(!matches!(extra, Some(ServerFrame::Message(_))), "the resend was not delivered again: {extra:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_senders_in_one_room_on_the_embedded_store_keep_live_id_order_everywhere() {
    const SENDERS: usize = 16;
    const EACH: usize = 40;
    const WATCHERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let server = embedded(&dir).await;
    let api = Api::new(&server);
    let creator = api.user("creator").await;
    let room = RoomId(api.room(&creator, "hot").await);
    let conv = ConversationId::Room(room);
    let total = SENDERS * EACH;

    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        let u = api.user(&format!("watcher{i}")).await;
        let mut ws = Ws::open(&server, &u, "w").await;
        let rid = ws.rid();
        assert!(matches!(ws.request(ClientFrame::Join { rid, room }).await, ServerFrame::Ok { .. }));
        watchers.push(tokio::spawn(async move { live_ids(&mut ws, conv, total).await }));
    }
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let u = api.user(&format!("sender{i}")).await;
        let mut ws = Ws::open(&server, &u, "s").await;
        let rid = ws.rid();
        assert!(matches!(ws.request(ClientFrame::Join { rid, room }).await, ServerFrame::Ok { .. }));
        senders.push(ws);
    }
    // Every sender pipelines its messages at once; all of them race.
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                for j in 0..EACH {
                    let rid = ws.rid();
                    let body = format!("{i}-{j}");
                    ws.send(&ClientFrame::send(rid, conv, cmid(&body), body)).await;
                }
                let mut ids = Vec::new();
                // Acks and others' messages in arrival order.
                let mut seen = Vec::new();
                while ids.len() < EACH {
                    match ws.recv().await {
                        ServerFrame::Ack { id, duplicate: false, .. } => {
                            ids.push(id);
                            seen.push(id);
                        }
                        ServerFrame::Message(m) => seen.push(m.id),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (ids, seen)
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in tasks {
        let (ids, seen) = t.await.unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "one sender's messages keep their order: {ids:?}");
        // A sender's own acks and the others' messages interleave in id
        // order: no later message arrives before the ack of an earlier one
        // (which a client would take for a gap).
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "acks and messages in id order: {seen:?}");
        all.extend(ids);
    }
    assert_eq!(all, (1..=total as u64).collect(), "ids are exactly 1..={total}");
    for w in watchers {
        assert_eq!(w.await.unwrap(), (1..=total as u64).collect::<Vec<_>>(), "live delivery in id order");
    }
    server.shutdown().await;
}
