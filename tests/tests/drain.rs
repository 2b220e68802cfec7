//! Dispatcher and drain: the dispatcher offers the least-loaded live node
//! that is not draining; a drained node closes its connections with 3501
//! spread over the drain window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use im_protocol::CloseCode;
use im_server::dispatch::{LocalRegistry, NodeRegistry};
use im_server::store::MemoryStore;
use im_server::ServerConfig;
use im_tests::{builder, Api, Ended, Ws};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_spreads_closes_over_the_window_and_the_dispatcher_moves_on() {
    let registry: Arc<dyn NodeRegistry> = Arc::new(LocalRegistry::new());
    let store = Arc::new(MemoryStore::new());
    let node = |name: &'static str, window_ms: u64| {
        let (registry, store) = (registry.clone(), store.clone());
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut cfg = ServerConfig::default();
            cfg.node_name = name.into();
            cfg.public_ws_url = Some(format!("ws://{}/ws", listener.local_addr().unwrap()));
            cfg.drain_window = Duration::from_millis(window_ms);
            cfg.admin_token = Some("admin-secret".into());
            builder(cfg).store(store).registry(registry).serve(listener).await.unwrap()
        }
    };
    let a = node("node-a", 1200).await;
    let b = node("node-b", 1200).await;
    let api_a = Api::new(&a);
    let alice = api_a.user("alice").await;

    // 6 connections on A, 1 on B: the dispatcher (asked on any node) offers B.
    let mut on_a = Vec::new();
    for i in 0..6 {
        on_a.push(Ws::open(&a, &alice, &format!("a{i}")).await);
    }
    let _on_b = Ws::open(&b, &alice, "b0").await;
    for s in [&a, &b] {
        s.state().registry().announce(&s.state().node_info(), Duration::from_secs(10)).await.unwrap();
    }
    let (status, body) = api_a.call("GET", "/dispatch", None, None).await;
    assert_eq!((status, body["node"].as_str()), (200, Some("node-b")), "{body}");

    // Drain A through the admin endpoint (a wrong token is refused).
    let (status, _) = api_a.call("POST", "/admin/drain", Some("wrong"), None).await;
    assert_eq!(status, 401);
    let started = Instant::now();
    let (status, _) = api_a.call("POST", "/admin/drain", Some("admin-secret"), None).await;
    assert_eq!(status, 202);

    // Every connection of A is told to go via the dispatcher, spread over time.
    let mut closed_at = Vec::new();
    for ws in &mut on_a {
        assert_eq!(ws.closed().await, Ended::Closed(CloseCode::DRAIN));
        closed_at.push(started.elapsed());
    }
    let spread = closed_at.iter().max().unwrap().saturating_sub(*closed_at.iter().min().unwrap());
    assert!(spread >= Duration::from_millis(600), "closes spread over the window, got {spread:?}");
    // A draining node refuses new sockets, and the dispatcher (even on A) offers B.
    let (status, body) = api_a.call("GET", "/dispatch", None, None).await;
    assert_eq!((status, body["node"].as_str()), (200, Some("node-b")), "{body}");
    assert_eq!(body["url"].as_str(), Some(b.ws_url().as_str()));
    let (status, _) = api_a.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 503);
    assert!(tokio_tungstenite::connect_async(format!("{}?token={}", a.ws_url(), alice.token)).await.is_err());

    a.drained().await;
    a.shutdown().await;
    // A withdrew from the registry; B remains.
    let live = b.state().registry().live_nodes().await.unwrap();
    assert_eq!(live.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), vec!["node-b"]);
    b.shutdown().await;
}
