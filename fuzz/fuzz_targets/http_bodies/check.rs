//! The `http_bodies` check, shared by the fuzz target
//! (`fuzz/fuzz_targets/http_bodies.rs`) and the corpus replay in the test
//! suite (`tests/tests/http_bodies_replay.rs`), which runs every seed and
//! reproducer through it in `cargo test`.
//!
//! JSON request bodies of the business API and the server API, against an
//! in-process server (memory store), without sockets: each input is one
//! request driven through `im_server::http::router` with `oneshot`.
//!
//! Input: the first byte picks a route (index into [`ROUTES`], modulo its
//! length); the rest is the body, sent as `Content-Type: application/json`
//! with the route's credentials (a user's bearer token, or the server API
//! key).
//!
//! Properties (docs/http-api.md §2):
//! * the status is never 5xx, and is 2xx or 4xx;
//! * every 4xx answers `Content-Type: application/json` and a JSON object
//!   `{"code": …, "message": …}` whose code is one of `ErrorCode::ALL` and
//!   whose status is the one that code is documented with;
//! * a 2xx body is JSON (or empty for 204).
//!
//! The fixture, made once per process and again every [`RESET_EVERY`]
//! inputs (so state the fuzzer builds up — users, messages, a revoked
//! token, a transferred group, login lock-outs — neither grows without
//! bound nor hides routes for the rest of a run): users 1 `fuzz_owner`
//! (whose token the user routes send) and 2 `fuzz_peer`, group 1 owned by
//! user 1 with user 2 as member, room 1 created by user 1 and joined by
//! user 2, and message 1 (from user 1) in `g:1`, `r:1` and `d:1:2`. The
//! seeds name these ids. Passwords hash with Argon2's cheapest parameters, so
//! register and login cost microseconds.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use im_protocol::ErrorCode;
use im_server::auth::PasswordHasher;
use im_server::{RunningServer, Server, ServerConfig};
use serde_json::Value;
use tower::ServiceExt as _;

/// The server API key the fixture configures.
const API_KEY: &str = "fuzz-key";
const PASSWORD: &str = "fuzz-password";
/// Inputs run against one fixture before it is made anew.
const RESET_EVERY: u64 = 20_000;

#[derive(Clone, Copy, Debug)]
enum Auth {
    None,
    User,
    ServerKey,
}

/// `(method, path under /api/v1, credentials)`; `{g}` is the group's id,
/// `{cg}`, `{cr}`, `{cd}` the conversation ids of the group, the room and
/// the direct chat of users 1 and 2. Append only: seeds name routes by index.
const ROUTES: &[(&str, &str, Auth)] = &[
    /* 0 */ ("POST", "/register", Auth::None),
    /* 1 */ ("POST", "/login", Auth::None),
    /* 2 */ ("POST", "/groups", Auth::User),
    /* 3 */ ("POST", "/groups/{g}/members", Auth::User),
    /* 4 */ ("POST", "/groups/{g}/owner", Auth::User),
    /* 5 */ ("POST", "/rooms", Auth::User),
    /* 6 */ ("POST", "/conversations/{cg}/read", Auth::User),
    /* 7 */ ("POST", "/conversations/{cd}/read", Auth::User),
    /* 8 */ ("PUT", "/conversations/{cg}/mute", Auth::User),
    /* 9 */ ("PUT", "/conversations/{cr}/mute", Auth::User),
    /* 10 */ ("POST", "/conversations/{cg}/sanctions", Auth::User),
    /* 11 */ ("POST", "/conversations/{cr}/sanctions", Auth::User),
    /* 12 */ ("PUT", "/me/receipts", Auth::User),
    /* 13 */ ("POST", "/attachments/uploads", Auth::User),
    /* 14 */ ("POST", "/server/users", Auth::ServerKey),
    /* 15 */ ("POST", "/server/groups", Auth::ServerKey),
    /* 16 */ ("POST", "/server/groups/{g}/members", Auth::ServerKey),
    /* 17 */ ("POST", "/server/groups/{g}/owner", Auth::ServerKey),
    /* 18 */ ("POST", "/server/rooms", Auth::ServerKey),
    /* 19 */ ("POST", "/server/messages", Auth::ServerKey),
    /* 20 */ ("POST", "/server/tokens/revoke", Auth::ServerKey),
    /* 21 */ ("POST", "/server/conversations/{cg}/sanctions", Auth::ServerKey),
    /* 22 */ ("POST", "/server/conversations/{cr}/sanctions", Auth::ServerKey),
    /* 23 */ ("POST", "/server/sessions/disconnect", Auth::ServerKey),
];

struct Fixture {
    server: RunningServer,
    router: Router,
    token: String,
    /// [`ROUTES`] with the ids filled in.
    paths: Vec<String>,
    inputs: u64,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
    })
}

async fn start() -> Fixture {
    let mut cfg = ServerConfig::default();
    cfg.server_api_keys = vec![API_KEY.into()];
    // Messages posted in a burst are the point here, not the per-user rate.
    cfg.user_rate_per_sec = 0;
    let hasher = PasswordHasher::with_params(8, 1, 1).expect("argon2's smallest parameters");
    let server = Server::builder()
        .config(cfg)
        .memory()
        .password_hasher(hasher)
        .bind("127.0.0.1:0")
        .await
        .expect("the fixture server starts");
    let state = server.state().clone();
    let logic = state.logic();
    let owner = logic.register("fuzz_owner", PASSWORD).await.expect("register fuzz_owner");
    let peer = logic.register("fuzz_peer", PASSWORD).await.expect("register fuzz_peer");
    let login = logic.login("fuzz_owner", PASSWORD).await.expect("log in fuzz_owner");
    let group = logic.create_group(owner.id, "fuzz group", &[peer.id]).await.expect("create the group");
    let room = logic.create_room(owner.id, "fuzz room").await.expect("create the room");
    logic.join_room(peer.id, room.id).await.expect("fuzz_peer joins the room");
    let g = group.group.id.0;
    let (cg, cr) = (format!("g:{g}"), format!("r:{}", room.id.0));
    let cd = im_protocol::ConversationId::direct(owner.id, peer.id).to_string();
    let paths = ROUTES
        .iter()
        .map(|(_, p, _)| {
            let p = p
                .replace("{g}", &g.to_string())
                .replace("{cg}", &cg)
                .replace("{cr}", &cr)
                .replace("{cd}", &cd);
            format!("/api/v1{p}")
        })
        .collect();
    let router = im_server::http::router(state);
    // Message 1 of each conversation, for the bodies that name one (read, reply_to).
    for conv in [&cg, &cr, &cd] {
        let body = format!(r#"{{"conv":"{conv}","from":{},"cmid":"fixture-1","body":"first"}}"#, owner.id);
        let req = Request::post("/api/v1/server/messages")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {API_KEY}"))
            .body(Body::from(body))
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap_or_else(|never| match never {});
        assert_eq!(resp.status(), StatusCode::CREATED, "the fixture posts message 1 of {conv}");
    }
    Fixture { server, router, token: login.token, paths, inputs: 0 }
}

async fn stop(fixture: Fixture) {
    let Fixture { server, router, .. } = fixture;
    // The router holds the state; shutdown waits for every holder to go.
    drop(router);
    server.shutdown().await;
}

/// `IM_FUZZ_TRACE=1`: print each request and its answer (to check what
/// the seeds reach: `.../http_bodies fuzz/corpus/http_bodies/*`).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("IM_FUZZ_TRACE").is_some_and(|v| v != "0"))
}

fn fixture() -> &'static Mutex<Option<Fixture>> {
    static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);
    &FIXTURE
}

/// Sends one input (first byte: the route; the rest: the body) and checks
/// the answer's properties; panics on a violation.
pub fn check(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let mut guard = fixture().lock().unwrap_or_else(|p| p.into_inner());
    let rt = runtime();
    if guard.as_ref().is_some_and(|f| f.inputs >= RESET_EVERY) {
        rt.block_on(stop(guard.take().unwrap()));
    }
    let fixture = guard.get_or_insert_with(|| rt.block_on(start()));
    fixture.inputs += 1;

    let index = usize::from(pick) % ROUTES.len();
    let (method, _, auth) = ROUTES[index];
    let path = &fixture.paths[index];
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path.as_str())
        .header(header::CONTENT_TYPE, "application/json");
    match auth {
        Auth::None => {}
        Auth::User => req = req.header(header::AUTHORIZATION, format!("Bearer {}", fixture.token)),
        Auth::ServerKey => req = req.header(header::AUTHORIZATION, format!("Bearer {API_KEY}")),
    }
    let mut req = req.body(Body::from(body.to_vec())).expect("a valid request");
    // What `into_make_service_with_connect_info` adds for a real socket (login reads it).
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50_000))));

    let router = fixture.router.clone();
    let (status, content_type, bytes) = rt.block_on(async move {
        let resp = router.oneshot(req).await.unwrap_or_else(|never| match never {});
        let status = resp.status();
        let content_type =
            resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("the body reads");
        (status, content_type, bytes)
    });
    let what = || format!("{method} {path} -> {status}: {}", String::from_utf8_lossy(&bytes));
    if trace() {
        eprintln!("{}", what());
    }

    assert!(!status.is_server_error(), "server error: {}", what());
    assert!(status.is_success() || status.is_client_error(), "neither 2xx nor 4xx: {}", what());
    if status.is_client_error() {
        assert_eq!(content_type.as_deref(), Some("application/json"), "error not sent as JSON: {}", what());
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", what()));
        let code = value.get("code").cloned().unwrap_or(Value::Null);
        let code: ErrorCode = serde_json::from_value(code)
            .unwrap_or_else(|e| panic!("error body without a known \"code\" ({e}): {}", what()));
        assert!(ErrorCode::ALL.contains(&code), "code {code} not in ErrorCode::ALL: {}", what());
        assert!(
            value.get("message").is_some_and(Value::is_string),
            "error body without a message: {}",
            what()
        );
        assert_eq!(status.as_u16(), code.http_status(), "status is not the one of code {code}: {}", what());
    } else if status == StatusCode::NO_CONTENT {
        assert!(bytes.is_empty(), "204 with a body: {}", what());
    } else {
        serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|e| panic!("success body is not JSON ({e}): {}", what()));
    }
}
