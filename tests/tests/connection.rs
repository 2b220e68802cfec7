//! Connection lifecycle over real sockets: handshake refusals, heartbeat
//! timeout, slow consumers, logout, graceful shutdown.

use std::time::Duration;

use im_protocol::{ClientFrame, CloseCode, ConversationId, RoomId, ServerFrame};
use im_server::ServerConfig;
use im_tests::{cmid, start, start_default, Api, Ended, Ws};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

/// Tries a handshake and returns the HTTP status it was refused with (or 101).
async fn handshake_status(url: &str, headers: &[(&'static str, String)]) -> u16 {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected handshake error {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refuses_bad_tokens_before_the_upgrade_and_accepts_all_token_places() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let url = server.ws_url();
    assert_eq!(handshake_status(&url, &[]).await, 401, "no token");
    assert_eq!(handshake_status(&format!("{url}?token=garbage"), &[]).await, 401, "garbage token");
    let mut forged = alice.token.clone();
    forged.pop();
    forged.push(if alice.token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(handshake_status(&format!("{url}?token={forged}"), &[]).await, 401, "bad signature");

    let t = &alice.token;
    assert_eq!(handshake_status(&url, &[("authorization", format!("Bearer {t}"))]).await, 101, "header");
    assert_eq!(
        handshake_status(&url, &[("cookie", format!("theme=dark; im_token={t}"))]).await,
        101,
        "cookie without Origin: a native client (section 3.4)"
    );
    assert_eq!(handshake_status(&format!("{url}?token={t}"), &[]).await, 101, "query");
    assert_eq!(
        handshake_status(&format!("{url}?token={t}&device=bad%20id"), &[]).await,
        400,
        "bad device id"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allow_list_is_enforced_for_browsers_only() {
    let mut cfg = ServerConfig::default();
    cfg.allowed_origins = Some(vec!["https://chat.example".into()]);
    let server = start(cfg).await;
    let alice = Api::new(&server).user("alice").await;
    let url = format!("{}?token={}", server.ws_url(), alice.token);
    assert_eq!(handshake_status(&url, &[("origin", "https://evil.example".into())]).await, 403);
    assert_eq!(handshake_status(&url, &[("origin", "https://chat.example".into())]).await, 101);
    assert_eq!(handshake_status(&url, &[]).await, 101, "no Origin header: not a browser");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_announces_protocol_and_unsupported_version_closes_with_4003() {
    let server = start_default().await;
    let alice = Api::new(&server).user("alice").await;
    // Without `v`: version 1; each supported version is spoken as asked.
    let ws = Ws::open(&server, &alice, "d1").await;
    assert!(matches!(ws.hello, ServerFrame::Hello { protocol: 1, .. }), "{:?}", ws.hello);
    for v in im_protocol::MIN_PROTOCOL_VERSION..=im_protocol::PROTOCOL_VERSION {
        let ws = Ws::connect_v(&server.ws_url(), &alice.token, "dv", v).await;
        assert!(matches!(ws.hello, ServerFrame::Hello { protocol, .. } if protocol == v), "{:?}", ws.hello);
    }
    match &ws.hello {
        ServerFrame::Hello { protocol, user, device, heartbeat_interval_ms, .. } => {
            assert_eq!(*protocol, 1);
            assert_eq!((*user, device.as_str()), (alice.id, "d1"));
            assert_eq!(*heartbeat_interval_ms, 15_000);
        }
        other => panic!("{other:?}"),
    }
    let url = format!("{}?token={}&v=99", server.ws_url(), alice.token);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures::StreamExt;
    let code = loop {
        match socket.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(CloseCode(code), CloseCode::UNSUPPORTED_PROTOCOL);
    // A `v` that is no number is a malformed parameter: 400 before the upgrade.
    for v in ["abc", "", "1.0", "-1", "+1"] {
        let url = format!("{}?token={}&v={v}", server.ws_url(), alice.token);
        assert_eq!(handshake_status(&url, &[]).await, 400, "v={v}");
    }
    let url = format!("{}?token={}&v=99999999999", server.ws_url(), alice.token);
    assert_eq!(handshake_status(&url, &[]).await, 101, "a number, only not one spoken here");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_with_3002_and_pongs_keep_a_reader_alive() {
    let mut cfg = ServerConfig::default();
    cfg.heartbeat_interval = Duration::from_millis(150);
    cfg.idle_timeout = Duration::from_millis(600);
    let server = start(cfg).await;
    let alice = Api::new(&server).user("alice").await;
    let mut reader = Ws::open(&server, &alice, "reader").await;
    let mut sleeper = Ws::open(&server, &alice, "sleeper").await;

    // The reader keeps reading: tungstenite answers the server's pings with
    // pongs, which count as activity, so it outlives the idle timeout.
    let r = reader.try_recv(Duration::from_millis(1500)).await;
    assert_eq!(r, Ok(None), "reader stays open");
    // The sleeper read nothing (so sent no pong) for longer than the timeout.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sleeper.closed().await, Ended::Closed(CloseCode::HEARTBEAT_TIMEOUT));

    // Application-level ping is answered with pong, echoing the rid.
    let rid = reader.rid();
    assert_eq!(
        reader.request(ClientFrame::Ping { rid: Some(rid) }).await,
        ServerFrame::Pong { rid: Some(rid) }
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_closed_with_3001_and_loses_nothing_after_sync() {
    let mut cfg = ServerConfig::default();
    cfg.send_queue = 4;
    let server = start(cfg).await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let room = RoomId(api.room(&alice, "firehose").await);
    let logic = server.state().logic().clone();
    logic.join_room(bob.id, room).await.unwrap();
    let mut slow = Ws::open(&server, &bob, "slow").await;

    // Far more than the socket buffers and the 4-frame queue can hold while
    // bob reads nothing.
    let conv = ConversationId::Room(room);
    let body = "x".repeat(16 * 1024);
    const N: u64 = 1500;
    for i in 0..N {
        logic.send(alice.id, None, conv, cmid(i), body.clone()).await.unwrap();
    }
    // The connection ends (its close frame may not fit into the full socket).
    let ended = slow.closed().await;
    assert!(matches!(ended, Ended::Closed(CloseCode::SLOW_CONSUMER) | Ended::Dropped), "{ended:?}");
    let metrics = server.state().metrics().render();
    assert!(metrics.contains("im_queue_overflows_total 1"), "overflow counted:\n{metrics}");

    // Reconnect and sync: all N messages are there.
    let mut again = Ws::open(&server, &bob, "slow").await;
    let mut cursor = 0;
    loop {
        let rid = again.rid();
        let cursors = [(conv, cursor)].into_iter().collect();
        let ServerFrame::SyncPage { messages, has_more, .. } =
            again.request(ClientFrame::Sync { rid, cursors, limit: None }).await
        else {
            panic!("sync")
        };
        for m in messages {
            assert_eq!(m.id, cursor + 1, "in order, no gap");
            cursor = m.id;
        }
        if !has_more {
            break;
        }
    }
    assert_eq!(cursor, N);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_the_sessions_sockets_with_4001_and_the_token_stops_working() {
    let server = start_default().await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let other_session = api.login("alice").await;
    let mut ws = Ws::open(&server, &alice, "a").await;
    let mut other = Ws::open(&server, &other_session, "b").await;

    let (status, _) = api.call("POST", "/api/v1/logout", Some(&alice.token), None).await;
    assert_eq!(status, 204);
    assert_eq!(ws.closed().await, Ended::Closed(CloseCode::SESSION_REVOKED));
    let url = format!("{}?token={}", server.ws_url(), alice.token);
    assert_eq!(handshake_status(&url, &[]).await, 401, "revoked token refused");
    // The other session of the same user is untouched.
    let rid = other.rid();
    assert_eq!(
        other.request(ClientFrame::Ping { rid: Some(rid) }).await,
        ServerFrame::Pong { rid: Some(rid) }
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_sends_reconnect_via_dispatcher() {
    let server = start_default().await;
    let alice = Api::new(&server).user("alice").await;
    let mut ws = Ws::open(&server, &alice, "a").await;
    let url = server.ws_url();
    server.shutdown().await;
    assert_eq!(ws.closed().await, Ended::Closed(CloseCode::SHUTDOWN));
    assert!(tokio_tungstenite::connect_async(format!("{url}?token={}", alice.token)).await.is_err());
}
