//! How fast the server serves a normal client while each abuse goes on:
//! one connected user sends a message every 25 ms and times each `ack`,
//! first alone (the baseline), then during each abuse of
//! docs/reliability.md's "Abuse and limits" in turn. Asserted: every send
//! of the normal client is acknowledged during every abuse, and each abuse
//! gets its documented answer. The latencies are printed (run with
//! `-- --nocapture`), not asserted: this machine is shared and noisy, and
//! figures are a benchmark's business; docs/reliability.md quotes them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_protocol::{ClientFrame, ConversationId, ServerFrame};
use im_server::ServerConfig;
use im_tests::{start, Api, Ws};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Sends a message every 25 ms for `n` sends and returns each send → ack
/// time; panics if one is not acknowledged within 10 s.
async fn timed_sends(ws: &mut Ws, conv: ConversationId, tag: &str, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let id = tokio::time::timeout(Duration::from_secs(10), ws.send_message(conv, &format!("{tag}-{i}")))
            .await
            .unwrap_or_else(|_| panic!("send {tag}-{i} was not acknowledged within 10 s"));
        assert!(id > 0);
        took.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    took
}

/// p50, p99 and max in ms.
fn summary(mut t: Vec<Duration>) -> String {
    t.sort();
    let at = |q: f64| t[((t.len() as f64 * q).ceil() as usize).clamp(1, t.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", ms(at(0.5)), ms(at(0.99)), ms(*t.last().unwrap()))
}

/// Runs `abuse` (until `stop` is set) while the normal client sends 80
/// messages; returns the latencies and what the abuse reports.
async fn during<F, Fut>(ws: &mut Ws, conv: ConversationId, tag: &str, abuse: F) -> (Vec<Duration>, usize)
where
    F: FnOnce(Arc<AtomicBool>, Arc<AtomicUsize>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(abuse(stop.clone(), answered.clone()));
    // Let the abuse get going first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = timed_sends(ws, conv, tag, 80).await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(20), task).await.expect("the abuse stops").expect("abuse task");
    (took, answered.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_client_is_served_while_each_abuse_goes_on() {
    let mut cfg = ServerConfig::default();
    cfg.header_read_timeout = Duration::from_secs(2);
    cfg.max_connections_per_ip = 300;
    let server = start(cfg).await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let mallory = api.user("mallory").await;
    let conv = ConversationId::direct(alice.id, bob.id);
    let mut normal = Ws::open(&server, &alice, "phone").await;
    let addr = server.local_addr();
    let (ws_url, http) = (server.ws_url(), server.http_url());
    let mut report = Vec::new();

    let baseline = timed_sends(&mut normal, conv, "base", 80).await;
    report.push(("none (baseline)".to_owned(), summary(baseline), String::new()));

    // Slowloris: 100 connections trickling a header byte every 100 ms;
    // counted: those the server closed (header deadline, 2 s here).
    let (took, closed) = during(&mut normal, conv, "slowloris", move |stop, closed| async move {
        let mut open = Vec::new();
        for _ in 0..100 {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(b"GET /ws?v=2 HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("write");
            open.push(Some(tcp));
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for slot in open.iter_mut() {
                if let Some(tcp) = slot {
                    if tcp.write_all(b"a").await.is_err() {
                        closed.fetch_add(1, Ordering::Relaxed);
                        *slot = None;
                    }
                }
            }
        }
    })
    .await;
    assert!(closed > 0, "the trickling connections are closed at the header deadline");
    report.push((
        "slowloris, 100 connections".into(),
        summary(took),
        format!("{closed} closed by the server"),
    ));

    // Connection flood: connections opened as fast as they go, held, from
    // the one address; counted: those refused beyond the cap of 300.
    let (took, refused) = during(&mut normal, conv, "flood", move |stop, refused| async move {
        let mut held = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if held.len() >= 600 {
                held.clear();
            }
            match TcpStream::connect(addr).await {
                Ok(mut tcp) => {
                    let _ = tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
                    let mut byte = [0u8; 1];
                    // A refused one is closed at once.
                    use tokio::io::AsyncReadExt;
                    if let Ok(Ok(0)) =
                        tokio::time::timeout(Duration::from_millis(2), tcp.read(&mut byte)).await
                    {
                        refused.fetch_add(1, Ordering::Relaxed);
                    } else {
                        held.push(tcp);
                    }
                }
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    })
    .await;
    assert!(refused > 0, "connections beyond the per-address cap are refused");
    report.push((
        "connection flood, one address (cap 300)".into(),
        summary(took),
        format!("{refused} refused"),
    ));
    // The held connections are gone with the task; let the server see it.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Deeply nested JSON, 40 frames a second on another user's connection.
    let mut nested_ws = Ws::open(&server, &mallory, "nest").await;
    let (took, answered) = during(&mut normal, conv, "nested", move |stop, answered| async move {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        while !stop.load(Ordering::Relaxed) {
            nested_ws.send_text(deep.clone()).await;
            if let ServerFrame::Error { code, .. } = nested_ws.recv().await {
                assert_eq!(code, im_protocol::ErrorCode::BadFrame);
                answered.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(answered > 0, "nested frames are answered bad_frame");
    report.push((
        "JSON nested 200 deep, 40/s".into(),
        summary(took),
        format!("{answered} answered bad_frame"),
    ));

    // Frame barrage: pings as fast as the socket takes them until the
    // server closes with 4004, then again on a new connection.
    let (barrage_url, barrage_token) = (ws_url.clone(), mallory.token.clone());
    let (took, closes) = during(&mut normal, conv, "barrage", move |stop, closes| async move {
        while !stop.load(Ordering::Relaxed) {
            let mut ws = Ws::connect(&barrage_url, &barrage_token, "barrage").await;
            let ping = serde_json::to_string(&ClientFrame::Ping { rid: Some(1) }).expect("ping");
            let flood = async { while ws.send_raw(WsMessage::Text(ping.clone().into())).await.is_ok() {} };
            // Counted only when the server ended it (4004), not the 5 s bound.
            if tokio::time::timeout(Duration::from_secs(5), flood).await.is_ok() {
                closes.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
    assert!(closes > 0, "the server closes the barrage connections");
    report.push((
        "frame barrage (pings, unpaced)".into(),
        summary(took),
        format!("{closes} connections closed by the server"),
    ));

    // Login brute force: 4 at a time, wrong passwords for bob.
    let brute_http = http.clone();
    let (took, refused) = during(&mut normal, conv, "brute", move |stop, refused| async move {
        let client = reqwest::Client::new();
        let mut tries = JoinSet::new();
        while !stop.load(Ordering::Relaxed) {
            while tries.len() < 4 {
                let (client, url) = (client.clone(), format!("{brute_http}/api/v1/login"));
                tries.spawn(async move {
                    let body = json!({"username": "bob", "password": "wrong-password-1"});
                    client.post(url).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
                });
            }
            if let Some(Ok(status)) = tries.join_next().await {
                if status == 401 || status == 429 {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        while tries.join_next().await.is_some() {}
    })
    .await;
    assert!(refused > 0, "wrong passwords are refused");
    report.push((
        "login brute force, 4 at a time".into(),
        summary(took),
        format!("{refused} refused (401/429)"),
    ));

    // Token replay: a logged-out session's token, over and over.
    let replayed = api.login("mallory").await;
    let (s, _) = api.call("POST", "/api/v1/logout", Some(&replayed.token), None).await;
    assert!(s == 200 || s == 204, "logout: {s}");
    let (replay_url, replay_token) = (format!("{ws_url}?device=replay"), replayed.token.clone());
    let (took, refused) = during(&mut normal, conv, "replay", move |stop, refused| async move {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        while !stop.load(Ordering::Relaxed) {
            let mut req = replay_url.clone().into_client_request().expect("request");
            req.headers_mut()
                .insert("authorization", format!("Bearer {replay_token}").parse().expect("header"));
            // Refused before the upgrade (401); an upgraded one would be a hole.
            let upgraded = tokio_tungstenite::connect_async(req).await.is_ok();
            assert!(!upgraded, "a logged-out token opened a WebSocket");
            refused.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await;
    assert!(refused > 0, "the revoked token is refused");
    report.push(("token replay after logout".into(), summary(took), format!("{refused} refused")));

    println!(
        "a normal client's send → ack, 80 sends 25 ms apart, during each abuse (in-process, debug build):"
    );
    for (abuse, latency, answer) in &report {
        println!("  {abuse:<42} {latency:<44} {answer}");
    }
    normal.close().await;
}
