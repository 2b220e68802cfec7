//! Login throttling over real HTTP: five wrong passwords lock a username
//! (even the right password then waits, with `Retry-After`), other
//! usernames are unaffected; fifty failures lock a client address, while
//! another address still logs in; across nodes, lock-outs hold
//! everywhere and failures spread over the nodes add up.

use std::net::IpAddr;

use im_tests::{start_default, Api};
use serde_json::{json, Value};

async fn login(base: &str, from: &str, username: &str, password: &str) -> (u16, Option<String>, Value) {
    let client = reqwest::Client::builder().local_address(from.parse::<IpAddr>().unwrap()).build().unwrap();
    let resp = client
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_username_then_the_address() {
    let server = start_default().await;
    let api = Api::new(&server);
    let base = server.http_url();
    api.user("alice").await;
    api.user("bob").await;

    for _ in 0..5 {
        let (s, _, body) = login(&base, "127.0.0.1", "alice", "wrong-password").await;
        assert_eq!((s, body["code"].as_str()), (401, Some("bad_credentials")));
    }
    let (s, retry, body) = login(&base, "127.0.0.1", "alice", "password-123").await;
    assert_eq!(
        (s, body["code"].as_str()),
        (429, Some("rate_limited")),
        "locked: not even the right password"
    );
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((290..=300).contains(&secs), "{secs}");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 290_000, "{body}");
    let (s, _, _) = login(&base, "127.0.0.1", "bob", "password-123").await;
    assert_eq!(s, 200, "another username is not affected");

    // Fifty failures from one address (alice's five count), over many
    // usernames, lock the address.
    for i in 0..45 {
        let (s, _, _) = login(&base, "127.0.0.1", &format!("nobody{i}"), "wrong-password").await;
        assert_eq!(s, 401);
    }
    let (s, _, _) = login(&base, "127.0.0.1", "bob", "password-123").await;
    assert_eq!(s, 429, "the address is locked");
    let (s, _, _) = login(&base, "127.0.0.2", "bob", "password-123").await;
    assert_eq!(s, 200, "another address still logs in");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_out_on_one_node_holds_on_the_others() {
    if !im_tests::cluster::services_available().await {
        return;
    }
    let cluster = im_tests::cluster::Cluster::new();
    let (n1, n2) = (cluster.node("throttle-1").await, cluster.node("throttle-2").await);
    Api::new(&n1).user("carol").await;
    for _ in 0..5 {
        let (s, _, _) = login(&n1.http_url(), "127.0.0.1", "carol", "wrong-password").await;
        assert_eq!(s, 401);
    }
    // Node 2 counted nothing itself, yet refuses: the lock-out is shared.
    let (s, retry, body) = login(&n2.http_url(), "127.0.0.1", "carol", "password-123").await;
    assert_eq!((s, body["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(retry.and_then(|r| r.parse::<u64>().ok()).is_some_and(|r| r > 0 && r <= 300));
    n1.shutdown().await;
    n2.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_spread_over_the_nodes_add_up() {
    if !im_tests::cluster::services_available().await {
        return;
    }
    let cluster = im_tests::cluster::Cluster::new();
    let (n1, n2) = (cluster.node("spread-1").await, cluster.node("spread-2").await);
    Api::new(&n1).user("dave").await;
    // Three failures on one node, two on the other: five for the cluster.
    for (node, times) in [(&n1, 3), (&n2, 2)] {
        for _ in 0..times {
            let (s, _, _) = login(&node.http_url(), "127.0.0.1", "dave", "wrong-password").await;
            assert_eq!(s, 401);
        }
    }
    for node in [&n1, &n2] {
        let (s, _, body) = login(&node.http_url(), "127.0.0.1", "dave", "password-123").await;
        assert_eq!((s, body["code"].as_str()), (429, Some("rate_limited")), "locked everywhere: {body}");
    }
    // A success clears the count: four failures after one do not lock.
    Api::new(&n1).user("erin").await;
    for _ in 0..4 {
        login(&n2.http_url(), "127.0.0.1", "erin", "wrong-password").await;
    }
    let (s, _, _) = login(&n1.http_url(), "127.0.0.1", "erin", "password-123").await;
    assert_eq!(s, 200, "four of five");
    for _ in 0..4 {
        let (s, _, _) = login(&n1.http_url(), "127.0.0.1", "erin", "wrong-password").await;
        assert_eq!(s, 401, "the success started the count again");
    }
    n1.shutdown().await;
    n2.shutdown().await;
    cluster.cleanup().await;
}
