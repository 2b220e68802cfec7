//! Attachments end to end, over real HTTP and WebSocket on loopback: an
//! upload streamed to disk, a message that references it, downloads (whole
//! and by range) by members only, refused uploads that leave no file
//! behind, refused references that store no message, orphan cleanup, and
//! attachments that survive a restart of the embedded store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use im_protocol::{ClientFrame, ConversationId, ErrorCode, GroupId, Message, ServerFrame};
use im_server::attachments::FsAttachments;
use im_server::{RunningServer, ServerConfig};
use im_tests::{builder, cmid, Api, TestUser, Ws};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's bytes: not compressible, not all the same.
fn file_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7919 % 251) as u8).collect()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

async fn start_with(cfg: ServerConfig, dir: &Path) -> RunningServer {
    let store = FsAttachments::open(dir).expect("attachment directory");
    builder(cfg).memory().attachments(Arc::new(store)).bind("127.0.0.1:0").await.expect("server starts")
}

struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    fn new(server: &RunningServer) -> Self {
        Http { base: server.http_url(), http: reqwest::Client::new() }
    }

    async fn upload(&self, user: &TestUser, mime: &str, query: &str, bytes: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/api/v1/attachments{query}", self.base))
            .bearer_auth(&user.token)
            .header("content-type", mime)
            .body(bytes)
            .send()
            .await
            .expect("upload request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn download(&self, user: &TestUser, id: &str, range: Option<&str>) -> reqwest::Response {
        let mut req =
            self.http.get(format!("{}/api/v1/attachments/{id}", self.base)).bearer_auth(&user.token);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send().await.expect("download request")
    }
}

fn media_send(conv: ConversationId, rid: u64, tag: &str, kind: &str, content: Value) -> ClientFrame {
    ClientFrame::Send {
        rid,
        conv,
        cmid: cmid(tag),
        body: format!("[{kind}]"),
        mentions: Vec::new(),
        kind: Some(kind.into()),
        content: Some(content),
        reply_to: None,
        target: None,
    }
}

async fn next_message(ws: &mut Ws) -> Message {
    match ws.recv_until(|f| matches!(f, ServerFrame::Message(_))).await {
        ServerFrame::Message(m) => m,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_image_reaches_members_and_only_members() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(ServerConfig::default(), dir.path()).await;
    let (api, http) = (Api::new(&server), Http::new(&server));
    let (alice, bob, carol) = (api.user("alice").await, api.user("bob").await, api.user("carol").await);
    let conv = ConversationId::Group(GroupId(api.group(&alice, "g", &[&bob]).await));

    // 300 KiB: far over the API's 64 KiB JSON body limit, streamed to disk.
    let bytes = file_of(300 * 1024);
    let (status, info) =
        http.upload(&alice, "image/png", "?name=cat.png&width=640&height=480", bytes.clone()).await;
    assert_eq!(status, 201, "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    assert!(im_protocol::content::is_attachment_id(&id), "{id}");
    assert_eq!(info["size"], bytes.len() as u64);
    assert_eq!(info["sha256"], sha256_hex(&bytes));
    assert_eq!((info["mime"].as_str(), info["name"].as_str()), (Some("image/png"), Some("cat.png")));

    // Before any message references it, only the uploader can fetch it.
    assert_eq!(http.download(&alice, &id, None).await.bytes().await.unwrap().as_ref(), &bytes[..]);
    for who in [&bob, &carol] {
        let r = http.download(who, &id, None).await;
        assert_eq!(r.status().as_u16(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "no_such_attachment");
    }

    // Alice sends it; Bob gets the message live with what the upload measured.
    let mut a = Ws::open(&server, &alice, "a").await;
    let mut b = Ws::open(&server, &bob, "b").await;
    // A caption-less image: the client claims a wrong size, the server corrects it.
    let content = json!({"attachment": id, "size": 1, "mime": "image/gif"});
    let rid = a.rid();
    assert!(matches!(
        a.request(media_send(conv, rid, "img", "image", content)).await,
        ServerFrame::Ack { id: 1, .. }
    ));
    let live = next_message(&mut b).await;
    let c = live.content.clone().unwrap();
    assert_eq!(c["attachment"], id.as_str());
    assert_eq!(c["size"], bytes.len() as u64, "the server's size, not the client's");
    assert_eq!(
        (c["mime"].as_str(), c["sha256"].as_str()),
        (Some("image/png"), Some(sha256_hex(&bytes).as_str()))
    );
    assert_eq!(
        (c["width"].as_u64(), c["name"].as_str()),
        (Some(640), Some("cat.png")),
        "filled from the upload"
    );

    // Bob downloads it: whole, and by ranges.
    let whole = http.download(&bob, &id, None).await;
    assert_eq!(whole.status().as_u16(), 200);
    let h = whole.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["accept-ranges"], "bytes");
    assert!(h["content-disposition"].to_str().unwrap().starts_with("inline"));
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &bytes[..]);
    let part = http.download(&bob, &id, Some("bytes=1000-1999")).await;
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes 1000-1999/{}", bytes.len()).as_str());
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[1000..2000]);
    let tail = http.download(&bob, &id, Some("bytes=-10")).await;
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &bytes[bytes.len() - 10..]);
    let past = http.download(&bob, &id, Some(&format!("bytes={}-", bytes.len()))).await;
    assert_eq!(past.status().as_u16(), 416);
    assert_eq!(past.headers()["content-range"], format!("bytes */{}", bytes.len()).as_str());

    // Carol, not a member, still cannot, though she knows the id.
    let r = http.download(&carol, &id, None).await;
    assert_eq!(r.status().as_u16(), 404);
    let (s, _) = api.call("GET", &format!("/api/v1/attachments/{id}/info"), Some(&carol.token), None).await;
    assert_eq!(s, 404);
    // History carries the same content.
    let (_, page) =
        api.call("GET", &format!("/api/v1/conversations/{conv}/messages"), Some(&bob.token), None).await;
    assert_eq!(page["messages"][0]["content"], c);

    // Bob may forward it to a chat with Carol: he can see it, so he may use it.
    let direct = ConversationId::direct(bob.id, carol.id);
    let rid = b.rid();
    let fwd = media_send(direct, rid, "fwd", "image", json!({"attachment": id}));
    assert!(matches!(b.request(fwd).await, ServerFrame::Ack { .. }));
    assert_eq!(
        http.download(&carol, &id, None).await.status().as_u16(),
        200,
        "now Carol is in a chat that has it"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_leave_nothing_and_refused_references_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::default();
    // Small, so a refused body still fits the socket buffers: the server
    // answers 413 without reading it, and a client still sending a large
    // body could see the connection closed before it reads the answer.
    cfg.max_attachment_bytes = 1024;
    let server = start_with(cfg, dir.path()).await;
    let (api, http) = (Api::new(&server), Http::new(&server));
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::Group(GroupId(api.group(&alice, "g", &[&bob]).await));
    let before = files_under(dir.path());

    let (s, body) = http.upload(&alice, "image/png", "", file_of(1025)).await;
    assert_eq!((s, body["code"].as_str()), (413, Some("body_too_large")), "{body}");
    let (s, body) = http.upload(&alice, "text/html", "?name=x.html", b"<script>".to_vec()).await;
    assert_eq!((s, body["code"].as_str()), (415, Some("unsupported_media_type")), "{body}");
    let (s, body) = http.upload(&alice, "image/png", "?name=..%2F..%2Fetc%2Fpasswd", b"x".to_vec()).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_field")), "{body}");
    let anonymous = reqwest::Client::new()
        .post(format!("{}/api/v1/attachments", server.http_url()))
        .header("content-type", "image/png")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // Too large without a Content-Length (chunked): cut off once it passes the limit.
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let head = format!(
        "POST /api/v1/attachments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n",
        alice.token
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'z'; 16 * 1024];
    for _ in 0..10 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if tcp.write_all(&frame).await.is_err() {
            break; // the server stopped reading: fine
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    drop(tcp);
    assert_eq!(files_under(dir.path()), before, "refused uploads leave no file behind");

    // References that are refused: the message is not stored.
    let (s, pdf) = http.upload(&alice, "application/pdf", "?name=r.pdf", b"%PDF-1.4".to_vec()).await;
    assert_eq!(s, 201);
    let pdf_id = pdf["id"].as_str().unwrap().to_string();
    let mut a = Ws::open(&server, &alice, "a").await;
    let mut b = Ws::open(&server, &bob, "b").await;
    let missing = "at_AAAAAAAAAAAAAAAAAAAAAA";
    let cases = [
        (true, media_send(conv, 50, "bob-uses-alices", "file", json!({"attachment": pdf_id}))),
        (false, media_send(conv, 51, "pdf-as-image", "image", json!({"attachment": pdf_id}))),
        (false, media_send(conv, 52, "missing", "file", json!({"attachment": missing, "name": "x"}))),
        (false, media_send(conv, 53, "both", "file", json!({"attachment": pdf_id, "url": "https://x/y"}))),
    ];
    for (by_bob, frame) in cases {
        let ws = if by_bob { &mut b } else { &mut a };
        match ws.request(frame.clone()).await {
            ServerFrame::Error { code: ErrorCode::InvalidField, message, .. } => {
                assert!(message.contains("attachment"), "{message}")
            }
            other => panic!("{frame:?}: {other:?}"),
        }
    }
    let (_, page) =
        api.call("GET", &format!("/api/v1/conversations/{conv}/messages"), Some(&alice.token), None).await;
    assert_eq!(page["messages"], json!([]), "nothing stored");
    // A file kind takes any allowed type; the name comes from the upload.
    let rid = a.rid();
    assert!(matches!(
        a.request(media_send(conv, rid, "ok", "file", json!({"attachment": pdf_id}))).await,
        ServerFrame::Ack { id: 1, .. }
    ));
    let m = next_message(&mut b).await;
    assert_eq!(m.content.unwrap()["name"], "r.pdf");
    let d = http.download(&bob, &pdf_id, None).await;
    assert!(
        d.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"),
        "a PDF is a download"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_uploads_are_removed_and_referenced_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::default();
    cfg.attachment_orphan_ttl = Duration::from_secs(1);
    let server = start_with(cfg, dir.path()).await;
    let (api, http) = (Api::new(&server), Http::new(&server));
    let alice = api.user("alice").await;
    let conv = ConversationId::Group(GroupId(api.group(&alice, "g", &[]).await));
    let (_, kept) = http.upload(&alice, "image/png", "", file_of(10)).await;
    let (_, orphan) = http.upload(&alice, "image/png", "", file_of(20)).await;
    let (kept, orphan) =
        (kept["id"].as_str().unwrap().to_string(), orphan["id"].as_str().unwrap().to_string());
    let mut a = Ws::open(&server, &alice, "a").await;
    let rid = a.rid();
    assert!(matches!(
        a.request(media_send(conv, rid, "k", "image", json!({"attachment": kept}))).await,
        ServerFrame::Ack { .. }
    ));
    // The sweep runs every second (a quarter of the TTL, at least 1 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The sweep removes the metadata first and the bytes right after, so
    // the download answers 404 a moment before the last file is gone.
    loop {
        let gone = http.download(&alice, &orphan, None).await.status().as_u16() == 404;
        let left = files_under(dir.path());
        if gone && left.iter().all(|f| !f.contains(&orphan)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the orphan was never removed: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http.download(&alice, &kept, None).await.status().as_u16(), 200);
    let left = files_under(dir.path());
    assert!(left.iter().any(|f| f.ends_with(&kept)), "{left:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn im_client_uploads_with_progress_and_another_client_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(ServerConfig::default(), dir.path()).await;
    im_tests::files::round_trip_through_im_client(&server, file_of(300 * 1024)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_survive_a_restart_of_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = im_tests::start_embedded(dir.path(), "127.0.0.1:0").await;
    let api = Api::new(&server);
    let alice = api.user("alice").await;
    let bytes = file_of(5000);
    let (s, info) = Http::new(&server).upload(&alice, "audio/ogg", "?duration_ms=1200", bytes.clone()).await;
    assert_eq!(s, 201);
    let id = info["id"].as_str().unwrap().to_string();
    assert!(dir.path().join("attachments").exists(), "kept beside the embedded store");
    server.shutdown().await;

    let server = im_tests::start_embedded(dir.path(), "127.0.0.1:0").await;
    let got = Http::new(&server).download(&alice, &id, None).await;
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &bytes[..]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recalling_a_message_removes_the_attachment_only_it_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(ServerConfig::default(), dir.path()).await;
    let api = Api::new(&server);
    let http = Http::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let conv = ConversationId::direct(alice.id, bob.id);
    let mut a = Ws::open(&server, &alice, "a").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, meta) = http.upload(&alice, "image/png", "?name=p.png", file_of(4096)).await;
        assert_eq!(status, 201, "{meta}");
        ids.push(meta["id"].as_str().unwrap().to_owned());
    }
    // The first image is sent once; the second is sent, then forwarded to a group.
    let group = ConversationId::Group(GroupId(api.group(&alice, "g", &[&bob]).await));
    let mut sent = Vec::new();
    for (i, (conv, id)) in [(conv, &ids[0]), (conv, &ids[1]), (group, &ids[1])].into_iter().enumerate() {
        let rid = a.rid();
        match a.request(media_send(conv, rid, &format!("img{i}"), "image", json!({"attachment": id}))).await {
            ServerFrame::Ack { id, .. } => sent.push((conv, id)),
            other => panic!("{other:?}"),
        }
    }
    for id in &ids {
        assert_eq!(http.download(&bob, id, None).await.status().as_u16(), 200);
    }
    for (i, &(conv, target)) in sent[..2].iter().enumerate() {
        let rid = a.rid();
        let recall = ClientFrame::Send {
            rid,
            conv,
            cmid: cmid(format!("recall{i}")),
            body: String::new(),
            mentions: Vec::new(),
            kind: Some("recall".into()),
            content: None,
            reply_to: None,
            target: Some(target),
        };
        assert!(matches!(a.request(recall).await, ServerFrame::Ack { .. }));
    }
    // The release runs right after the recall is stored, before its ack
    // publishes; give the file system a moment all the same.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while http.download(&alice, &ids[0], None).await.status().as_u16() != 404 {
        assert!(std::time::Instant::now() < deadline, "the recalled image is still served");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(http.download(&bob, &ids[0], None).await.status().as_u16(), 404);
    assert!(
        !files_under(dir.path()).iter().any(|f| f.contains(&ids[0])),
        "bytes of the recalled image remain"
    );
    // The forwarded one stays for the group, which still references it.
    assert_eq!(http.download(&bob, &ids[1], None).await.status().as_u16(), 200);
}
