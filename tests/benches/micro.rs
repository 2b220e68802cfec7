//! Micro-benchmarks of the hot path's parts, with divan:
//!
//! `cargo bench -p im-tests --bench micro` (add `-- codec` etc. to filter)
//!
//! - **codec**: decoding a client `send` frame, encoding a server `message`
//!   frame (done once per message, whatever the audience);
//! - **hub fan-out**: one room message pushed to every local connection's
//!   send queue, then taken off again as the writers would — per delivery
//!   that is one shared-bytes clone, one short lock, one wake;
//! - **store**: `append` and a 200-message `after` range, on the memory
//!   store and on the embedded (redb) store; an embedded append is a durable
//!   commit on its own here (no other appends share it).
//!
//! These isolate costs for profiling; the end-to-end figures (with sockets,
//! against raw tokio-tungstenite and Socket.IO) come from `bench/run.sh`.

use std::sync::Arc;

use divan::Bencher;
use im_protocol::{codec, ClientMsgId, ConversationId, Message, RoomId, ServerFrame, UserId};
use im_server::broker::{Audience, Event, EventSink};
use im_server::hub::{ConnHandle, Hub};
use im_server::metrics::Metrics;
use im_server::store::{EmbeddedStore, MemoryStore, MessageStore, NewMessage};

fn main() {
    divan::main();
}

const BODY: &str =
    "t=1234567890123;s=42;xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn message(id: u64) -> Message {
    Message::new(
        ConversationId::Room(RoomId(7)),
        id,
        UserId(3),
        ClientMsgId::new(format!("c-{id}")).unwrap(),
        BODY,
        1_764_000_000_000,
    )
}

mod codec_bench {
    use super::*;

    #[divan::bench]
    fn decode_send(b: Bencher) {
        let text = format!(r#"{{"type":"send","rid":12,"conv":"r:7","cmid":"c-12","body":"{BODY}"}}"#);
        b.bench(|| codec::decode_client(divan::black_box(&text)).unwrap());
    }

    #[divan::bench]
    fn encode_message(b: Bencher) {
        let frame = ServerFrame::Message(message(42));
        b.bench(|| codec::encode_server(divan::black_box(&frame)));
    }
}

mod hub_fanout {
    use super::*;

    /// A hub with `n` connections of `n` users, all in room 7.
    fn hub_with(n: u64) -> (Hub, Vec<Arc<ConnHandle>>) {
        let hub = Hub::new("bench", Arc::new(Metrics::new()));
        let conns: Vec<_> = (1..=n)
            .map(|u| {
                let c = hub.new_conn(UserId(u), "s".into(), "d".into(), (1024, 8 << 20));
                hub.register(c.clone(), &[RoomId(7)]);
                c
            })
            .collect();
        (hub, conns)
    }

    /// One message to a room of `n` local connections, pushed and taken.
    #[divan::bench(args = [100, 1000])]
    fn room_message(b: Bencher, n: u64) {
        let (hub, conns) = hub_with(n);
        let mut taken = Vec::new();
        b.counter(divan::counter::ItemsCount::new(n as usize)).bench_local(|| {
            hub.handle(Event::Deliver {
                to: Audience::Room(RoomId(7)),
                frame: ServerFrame::Message(message(1)),
                skip: None,
            });
            for c in &conns {
                c.queue().take_ready(&mut taken, 64);
                taken.clear();
            }
        });
    }
}

mod store {
    use super::*;

    fn new_message(i: u64) -> NewMessage {
        NewMessage {
            conv: ConversationId::Room(RoomId(7)),
            from: UserId(3),
            cmid: ClientMsgId::new(format!("c-{i}")).unwrap(),
            body: BODY.into(),
            ts: 1_764_000_000_000,
            mentions: Vec::new(),
            kind: None,
            content: None,
            reply_to: None,
            target: None,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    async fn filled(store: &dyn MessageStore, n: u64) {
        for i in 0..n {
            store.append(new_message(i)).await.unwrap();
        }
    }

    #[divan::bench]
    fn memory_append(b: Bencher) {
        let rt = runtime();
        let store = MemoryStore::new();
        let mut i = 0u64;
        b.bench_local(|| {
            i += 1;
            rt.block_on(store.append(new_message(i))).unwrap()
        });
    }

    #[divan::bench(sample_count = 20, sample_size = 10)]
    fn embedded_append_durable(b: Bencher) {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("im.redb")).unwrap();
        let mut i = 0u64;
        b.bench_local(|| {
            i += 1;
            rt.block_on(store.append(new_message(i))).unwrap()
        });
    }

    #[divan::bench]
    fn memory_after_200(b: Bencher) {
        let rt = runtime();
        let store = MemoryStore::new();
        rt.block_on(filled(&store, 2000));
        let conv = ConversationId::Room(RoomId(7));
        b.bench_local(|| rt.block_on(store.after(conv, 1000, 200)).unwrap());
    }

    #[divan::bench]
    fn embedded_after_200(b: Bencher) {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("im.redb")).unwrap();
        rt.block_on(async {
            // Concurrent appends share commits: filling takes a moment, not 2000 fsyncs.
            let handles: Vec<_> = (0..2000).map(|i| store.submit_append(new_message(i))).collect();
            for h in futures::future::join_all(handles).await {
                h.unwrap().await.unwrap();
            }
        });
        let conv = ConversationId::Room(RoomId(7));
        b.bench_local(|| rt.block_on(store.after(conv, 1000, 200)).unwrap());
    }
}
