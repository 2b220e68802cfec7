//! Live delivery of one conversation reaches every connection in id order,
//! also while senders on different nodes store in it at once: the reorder
//! step in front of each hub (`im_server::reorder`) puts interleaved
//! publications back in order, so no client needs a gap sync for it.
//! Three nodes on the real Redis and PostgreSQL of this machine.

use std::time::Duration;

use im_protocol::{ClientFrame, ConversationId, GroupId, ServerFrame};
use im_tests::cluster::{services_available, Cluster};
use im_tests::{cmid, Api, Ws};

const PER_SENDER: u64 = 60;

/// The group's live `message` ids on `ws` until `want` arrived.
async fn live_ids(ws: &mut Ws, group: ConversationId, want: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < want {
        match ws.try_recv(Duration::from_secs(15)).await {
            Ok(Some(ServerFrame::Message(m))) if m.conv == group => ids.push(m.id),
            Ok(Some(_)) => {}
            other => panic!("after {} of {want} messages ({ids:?}): {other:?}", ids.len()),
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_on_two_nodes_interleave_and_every_listener_gets_ids_in_order() {
    if !services_available().await {
        return;
    }
    let cluster = Cluster::new();
    let mut nodes = Vec::new();
    for name in ["n0", "n1", "n2"] {
        let mut cfg = cluster.config(name);
        // A held message waits at most this long for the ids before it: ample
        // on a loaded CI machine, so the order seen is the step's, not luck.
        cfg.reorder_window = Duration::from_secs(3);
        cfg.limits.rate_per_sec = 10_000;
        cfg.limits.rate_burst = 10_000;
        nodes.push(cluster.node_with(cfg).await);
    }
    let api = Api::new(&nodes[0]);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let group = ConversationId::Group(GroupId(api.group(&alice, "interleaved", &[&bob, &carol]).await));
    let mut listeners = [
        Ws::open(&nodes[0], &alice, "a-listen").await,
        Ws::open(&nodes[1], &bob, "b-listen").await,
        Ws::open(&nodes[2], &carol, "c-listen").await,
    ];
    // One message first, seen by every listener: a node takes its position
    // in a conversation from the first message of it that reaches it (see
    // im_server::reorder), so the step has one before the race starts.
    let mut senders =
        [Ws::open(&nodes[0], &alice, "a-send").await, Ws::open(&nodes[1], &bob, "b-send").await];
    let rid = senders[0].rid();
    let first = senders[0].request(ClientFrame::send(rid, group, cmid("first"), "first")).await;
    assert!(matches!(first, ServerFrame::Ack { id: 1, .. }), "{first:?}");
    for ws in listeners.iter_mut() {
        assert_eq!(live_ids(ws, group, 1).await, [1]);
    }
    // Senders on n0 and n1, each with several sends in flight, so the two
    // nodes store (and publish) in the group at the same moments.
    let mut senders =
        [Ws::open(&nodes[0], &alice, "a-send").await, Ws::open(&nodes[1], &bob, "b-send").await];
    let sending = senders.iter_mut().enumerate().map(|(s, ws)| async move {
        let mut acked = Vec::new();
        for chunk in 0..PER_SENDER / 4 {
            let mut rids = Vec::new();
            for k in 0..4 {
                let rid = ws.rid();
                let tag = format!("s{s}-{}", chunk * 4 + k);
                ws.send(&ClientFrame::send(rid, group, cmid(&tag), tag.clone())).await;
                rids.push(rid);
            }
            while !rids.is_empty() {
                match ws.recv().await {
                    ServerFrame::Ack { rid, id, .. } => {
                        rids.retain(|r| *r != rid);
                        acked.push(id);
                    }
                    e @ ServerFrame::Error { .. } => panic!("sender {s}: {e:?}"),
                    // Messages of the other sender, presence and the like.
                    _ => {}
                }
            }
        }
        acked
    });
    let acked: Vec<Vec<u64>> = futures::future::join_all(sending).await;
    let total = (2 * PER_SENDER) as usize;
    let mut all: Vec<u64> = acked.concat();
    all.sort_unstable();
    assert_eq!(all, (2..=total as u64 + 1).collect::<Vec<_>>(), "ids are gapless and unique");
    let interleaved = acked.iter().all(|a| a.windows(2).any(|w| w[1] != w[0] + 1));
    println!("acked ids interleaved between the nodes: {interleaved}");

    for (i, ws) in listeners.iter_mut().enumerate() {
        let ids = live_ids(ws, group, total).await;
        assert_eq!(
            ids,
            (2..=total as u64 + 1).collect::<Vec<_>>(),
            "listener {i} got every id once, in order"
        );
        let extra = ws.try_recv(Duration::from_millis(300)).await.unwrap();
        assert!(!matches!(extra, Some(ServerFrame::Message(_))), "no duplicate delivery: {extra:?}");
    }
    for n in nodes {
        n.shutdown().await;
    }
    cluster.cleanup().await;
}
