//! Abuse and limits, as an attacker sees them: raw TCP on loopback. Each
//! abuse gets its documented answer, and the server keeps serving others
//! meanwhile (docs/reliability.md, "Abuse and limits").

use std::time::{Duration, Instant};

use im_server::{RunningServer, ServerConfig};
use im_tests::{start, Api, Ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (`Ok(0)` or a reset), for at most `wait`;
/// true when it closed.
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// `GET /healthz` on a new connection answers 200.
async fn healthy(server: &RunningServer) -> bool {
    let url = format!("{}/healthz", server.http_url());
    matches!(reqwest::get(url).await, Ok(r) if r.status().as_u16() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_disconnected_and_others_are_served_meanwhile() {
    let mut cfg = ServerConfig::default();
    cfg.header_read_timeout = Duration::from_secs(2);
    let server = start(cfg).await;

    // Ten slowloris connections: a request line, then a header byte a time.
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
        tcp.write_all(b"GET /ws?v=2 HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        slow.push(tcp);
    }
    let started = Instant::now();
    let trickle = async {
        let mut open: Vec<Option<TcpStream>> = slow.into_iter().map(Some).collect();
        let mut closed_after = Vec::new();
        while open.iter().any(Option::is_some) && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for slot in open.iter_mut() {
                let Some(tcp) = slot.as_mut() else { continue };
                if tcp.write_all(b"a").await.is_err() || closed_within(tcp, Duration::from_millis(1)).await {
                    closed_after.push(started.elapsed());
                    *slot = None;
                }
            }
        }
        closed_after
    };
    let others = async {
        // While the trickle goes on, a normal client is served.
        let mut served = 0;
        for _ in 0..5 {
            served += healthy(&server).await as usize;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        served
    };
    let (closed_after, served) = tokio::join!(trickle, others);
    assert_eq!(closed_after.len(), 10, "every trickling connection was closed by the server");
    assert!(
        closed_after.iter().all(|t| *t >= Duration::from_secs(1)),
        "none was closed before its header deadline: {closed_after:?}"
    );
    assert_eq!(served, 5, "other clients were served while the slow ones held connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_that_never_sends_a_request_is_closed() {
    let mut cfg = ServerConfig::default();
    cfg.header_read_timeout = Duration::from_secs(1);
    let server = start(cfg).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    assert!(closed_within(&mut tcp, Duration::from_secs(10)).await, "a silent connection was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_its_cap_of_connections_websockets_included() {
    let mut cfg = ServerConfig::default();
    cfg.max_connections_per_ip = 3;
    let server = start(cfg).await;
    // No idle pooled connection of the API client may take a place.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let api = Api::with_client(server.http_url(), http);
    let alice = api.user("alice").await;

    // Two WebSockets and one raw TCP connection: the cap of 3 is reached.
    let ws1 = Ws::open(&server, &alice, "d1").await;
    let ws2 = Ws::open(&server, &alice, "d2").await;
    let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = raw.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "the third connection is served");

    // The fourth is closed on arrival, before it is read.
    let mut fourth = TcpStream::connect(server.local_addr()).await.unwrap();
    let _ = fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(closed_within(&mut fourth, Duration::from_secs(5)).await, "the fourth connection was closed");
    assert!(!healthy(&server).await, "a new HTTP connection is refused too");
    let metrics = server.state().metrics().render();
    assert!(
        metrics.lines().any(|l| l.starts_with("im_connections_refused_total{reason=\"per_ip_cap\"}")),
        "refusals are counted: {metrics}"
    );

    // A WebSocket that ends frees its place, and so does a closed HTTP connection.
    ws1.close().await;
    drop(raw);
    let mut freed = false;
    for _ in 0..50 {
        if healthy(&server).await {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "connections that ended freed their places");
    let _again = Ws::open(&server, &alice, "d3").await;
    drop(ws2);
}
