//! Attachments in an S3-compatible store (moto's server, a real S3-protocol
//! server on loopback): clients upload to and download from presigned
//! URLs, so the bytes never pass through the node; the same authorization
//! as on the file system; mismatched uploads and orphans leave no object.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use im_protocol::{ClientFrame, ConversationId, GroupId, ServerFrame};
use im_server::attachments::S3Attachments;
use im_server::{RunningServer, ServerConfig};
use im_tests::s3::MotoServer;
use im_tests::{builder, cmid, Api, TestUser, Ws};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7919 % 251) as u8).collect()
}

async fn start(cfg: ServerConfig, moto: &MotoServer, bucket: &str) -> RunningServer {
    let store = S3Attachments::connect(moto.bucket(bucket).await).await.expect("bucket reachable");
    builder(cfg).memory().attachments(Arc::new(store)).bind("127.0.0.1:0").await.expect("server starts")
}

/// A client that does not follow redirects, to see where they lead.
fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn call(
    server: &RunningServer,
    user: &TestUser,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req =
        http().request(method, format!("{}/api/v1{path}", server.http_url())).bearer_auth(&user.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Announces, uploads to the presigned URL, and completes; the attachment.
async fn upload(server: &RunningServer, user: &TestUser, mime: &str, bytes: &[u8]) -> Value {
    let announce = json!({"mime": mime, "size": bytes.len(), "sha256": sha256_hex(bytes), "name": "f.bin"});
    let (s, ticket) = call(server, user, reqwest::Method::POST, "/attachments/uploads", Some(announce)).await;
    assert_eq!(s, 201, "{ticket}");
    let url = ticket["url"].as_str().unwrap();
    assert_eq!(ticket["method"], "PUT");
    let mut put = http().put(url).body(bytes.to_vec());
    for (k, v) in ticket["headers"].as_object().unwrap() {
        put = put.header(k.as_str(), v.as_str().unwrap());
    }
    let stored = put.send().await.unwrap();
    assert!(stored.status().is_success(), "the object store took the bytes: {}", stored.status());
    let id = ticket["id"].as_str().unwrap();
    let (s, info) =
        call(server, user, reqwest::Method::POST, &format!("/attachments/{id}/complete"), None).await;
    assert_eq!(s, 201, "{info}");
    info
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_uploads_and_downloads_bypass_the_node() {
    let Some(moto) = MotoServer::start().await else { return };
    let server = start(ServerConfig::default(), &moto, "presigned").await;
    let api = Api::new(&server);
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let conv = ConversationId::Group(GroupId(api.group(&alice, "g", &[&bob]).await));

    // The web chat may talk to the object store: its origin is in connect-src.
    let page = reqwest::get(format!("{}/", server.http_url())).await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains(&format!("connect-src 'self' ws: wss: {};", moto.endpoint)), "{csp}");
    let (s, config) = call(&server, &alice, reqwest::Method::GET, "/attachments/config", None).await;
    assert_eq!((s, config["upload"].as_str()), (200, Some("presigned")), "{config}");
    // The one-shot upload through the node is refused here, saying what to use.
    let direct = http()
        .post(format!("{}/api/v1/attachments", server.http_url()))
        .bearer_auth(&alice.token)
        .header("content-type", "image/png")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status().as_u16(), 409);
    assert!(direct.text().await.unwrap().contains("/api/v1/attachments/uploads"));

    let bytes = file_of(200 * 1024);
    let info = upload(&server, &alice, "image/png", &bytes).await;
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(
        (info["size"].as_u64(), info["sha256"].as_str()),
        (Some(bytes.len() as u64), Some(sha256_hex(&bytes).as_str()))
    );
    assert!(
        moto.keys("presigned").await.iter().any(|k| k == &format!("im/blobs/{id}")),
        "the bytes are in the bucket"
    );

    let mut a = Ws::open(&server, &alice, "a").await;
    let frame = ClientFrame::Send {
        rid: a.rid(),
        conv,
        cmid: cmid("img"),
        body: "[image]".into(),
        mentions: vec![],
        kind: Some("image".into()),
        content: Some(json!({"attachment": id})),
        reply_to: None,
        target: None,
    };
    assert!(matches!(a.request(frame).await, ServerFrame::Ack { id: 1, .. }));

    // Bob is redirected to the object store and fetches the bytes there.
    let resp = http()
        .get(format!("{}/api/v1/attachments/{id}", server.http_url()))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{}/presigned/im/blobs/{id}?", moto.endpoint)), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let got = reqwest::get(&location).await.unwrap();
    assert_eq!(got.headers()["content-type"], "image/png", "the presigned URL sets the type");
    assert_eq!(got.bytes().await.unwrap().as_ref(), &bytes[..]);
    let part = http().get(&location).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    // A client that follows redirects gets the bytes in one call.
    let followed = reqwest::Client::new()
        .get(format!("{}/api/v1/attachments/{id}", server.http_url()))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(followed.bytes().await.unwrap().as_ref(), &bytes[..]);

    // Carol, who is in no conversation that has it, gets no URL at all.
    let (s, body) = call(&server, &carol, reqwest::Method::GET, &format!("/attachments/{id}"), None).await;
    assert_eq!((s, body["code"].as_str()), (404, Some("no_such_attachment")));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn im_client_uploads_to_the_presigned_url_and_another_client_downloads() {
    let Some(moto) = MotoServer::start().await else { return };
    let server = start(ServerConfig::default(), &moto, "client").await;
    im_tests::files::round_trip_through_im_client(&server, file_of(300 * 1024)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_mismatched_presigned_uploads_leave_no_object() {
    let Some(moto) = MotoServer::start().await else { return };
    let mut cfg = ServerConfig::default();
    cfg.max_attachment_bytes = 1024;
    let server = start(cfg, &moto, "refused").await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let post = reqwest::Method::POST;
    let sha = sha256_hex(b"x");

    let cases = [
        (json!({"mime": "image/png", "size": 2048, "sha256": sha}), 413, "body_too_large"),
        (json!({"mime": "text/html", "size": 10, "sha256": sha}), 415, "unsupported_media_type"),
        (json!({"mime": "image/png", "size": 10, "sha256": "XYZ"}), 400, "invalid_field"),
        (json!({"mime": "image/png", "size": 10}), 400, "invalid_field"),
    ];
    for (announce, status, code) in cases {
        let (s, body) =
            call(&server, &alice, post.clone(), "/attachments/uploads", Some(announce.clone())).await;
        assert_eq!((s, body["code"].as_str()), (status, Some(code)), "{announce}: {body}");
    }
    assert!(moto.keys("refused").await.is_empty(), "refused announcements store nothing");

    // The ticket names the hash the object store must check the bytes
    // against (signed, so it cannot be dropped). Real S3 refuses other bytes
    // with BadDigest; moto does not check checksums, so this suite can only
    // show the header is there and signed.
    let announce = json!({"mime": "image/png", "size": 64, "sha256": sha256_hex(&file_of(64))});
    let (_, ticket) = call(&server, &alice, post.clone(), "/attachments/uploads", Some(announce)).await;
    let expected = STANDARD.encode(Sha256::digest(file_of(64)));
    assert_eq!(ticket["headers"]["x-amz-checksum-sha256"], expected.as_str(), "{ticket}");
    assert!(ticket["url"].as_str().unwrap().contains("x-amz-checksum-sha256"), "signed: {ticket}");

    // Announced 100 bytes, sent 50: completing finds the mismatch and removes it all.
    // (moto does not check signatures, so it takes the 50 bytes; real S3
    // refuses them already, the length being signed. The server's check at
    // completion holds either way.)
    let announce = json!({"mime": "image/png", "size": 100, "sha256": sha256_hex(&file_of(100))});
    let (_, ticket) =
        call(&server, &alice, post.clone(), "/attachments/uploads", Some(announce.clone())).await;
    let id = ticket["id"].as_str().unwrap().to_string();
    let _ = http()
        .put(ticket["url"].as_str().unwrap())
        .header("content-type", "image/png")
        .body(file_of(50))
        .send()
        .await;
    let (s, _) = call(&server, &bob, post.clone(), &format!("/attachments/{id}/complete"), None).await;
    assert_eq!(s, 404, "only the uploader completes an upload");
    let (s, body) = call(&server, &alice, post.clone(), &format!("/attachments/{id}/complete"), None).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_field")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("100 announced"), "{body}");
    // Announced and never sent: completing says so and keeps nothing.
    let (_, ticket) = call(&server, &alice, post.clone(), "/attachments/uploads", Some(announce)).await;
    let id2 = ticket["id"].as_str().unwrap().to_string();
    let (s, body) = call(&server, &alice, post.clone(), &format!("/attachments/{id2}/complete"), None).await;
    assert_eq!(s, 400);
    assert!(body["message"].as_str().unwrap().contains("no bytes"), "{body}");
    let keys = moto.keys("refused").await;
    assert!(keys.iter().all(|k| !k.contains(&id) && !k.contains(&id2)), "nothing left: {keys:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_in_the_bucket_are_removed_and_referenced_attachments_kept() {
    let Some(moto) = MotoServer::start().await else { return };
    let mut cfg = ServerConfig::default();
    cfg.attachment_orphan_ttl = Duration::from_secs(1);
    let server = start(cfg, &moto, "orphans").await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let conv = ConversationId::Group(GroupId(api.group(&alice, "g", &[]).await));
    let kept = upload(&server, &alice, "image/png", &file_of(10)).await["id"].as_str().unwrap().to_string();
    let orphan = upload(&server, &alice, "image/png", &file_of(20)).await["id"].as_str().unwrap().to_string();
    // An announced upload never completed is an orphan too.
    let announce = json!({"mime": "image/png", "size": 5, "sha256": sha256_hex(&file_of(5))});
    let (_, ticket) =
        call(&server, &alice, reqwest::Method::POST, "/attachments/uploads", Some(announce)).await;
    let abandoned = ticket["id"].as_str().unwrap().to_string();
    // Bytes sent again to a URL after their upload failed to complete: stray.
    let announce = json!({"mime": "image/png", "size": 100, "sha256": sha256_hex(&file_of(100))});
    let (_, ticket) =
        call(&server, &alice, reqwest::Method::POST, "/attachments/uploads", Some(announce)).await;
    let stray = ticket["id"].as_str().unwrap().to_string();
    let url = ticket["url"].as_str().unwrap().to_string();
    let _ = http().put(&url).header("content-type", "image/png").body(file_of(50)).send().await;
    let (s, _) =
        call(&server, &alice, reqwest::Method::POST, &format!("/attachments/{stray}/complete"), None).await;
    assert_eq!(s, 400);
    let again = http().put(&url).header("content-type", "image/png").body(file_of(50)).send().await.unwrap();
    assert!(again.status().is_success());
    assert!(moto.keys("orphans").await.contains(&format!("im/blobs/{stray}")), "the stray bytes are there");
    let mut a = Ws::open(&server, &alice, "a").await;
    let frame = ClientFrame::Send {
        rid: a.rid(),
        conv,
        cmid: cmid("k"),
        body: "[image]".into(),
        mentions: vec![],
        kind: Some("image".into()),
        content: Some(json!({"attachment": kept})),
        reply_to: None,
        target: None,
    };
    assert!(matches!(a.request(frame).await, ServerFrame::Ack { .. }));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let keys = moto.keys("orphans").await;
        let gone =
            keys.iter().all(|k| !k.contains(&orphan) && !k.contains(&abandoned) && !k.contains(&stray));
        if gone {
            assert!(keys.contains(&format!("im/blobs/{kept}")), "{keys:?}");
            assert!(keys.contains(&format!("im/meta/{kept}.json")), "{keys:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "orphans were never removed: {keys:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.shutdown().await;
}
