//! `docs/openapi.json` (served by the binary at `/openapi.json`) against
//! the real router: every operation in it is a route of the router and
//! every route of the router is in it (read from the router's source), and
//! each one is reachable on a running server (no 405, no bare 404).

use std::collections::BTreeSet;

use im_server::ServerConfig;
use serde_json::Value;

const OPENAPI: &str = include_str!("../../docs/openapi.json");
const ROUTER: &str = include_str!("../../im-server/src/http/mod.rs");

/// `(METHOD, path)` of every `.route("…", get(…).post(…))` in the router's
/// source; routes inside `fn api()` are nested under `/api/v1`.
fn router_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut nested = false;
    for line in ROUTER.lines() {
        let l = line.trim();
        if l.starts_with("fn api()") {
            nested = true;
        } else if l.starts_with("pub fn router(") {
            nested = false;
        }
        let Some(rest) = l.strip_prefix(".route(\"") else { continue };
        let Some((path, handlers)) = rest.split_once('"') else { continue };
        let full = if nested { format!("/api/v1{path}") } else { path.to_owned() };
        for method in ["get", "post", "put", "delete", "patch"] {
            if handlers.contains(&format!("({method}("))
                || handlers.contains(&format!(".{method}("))
                || handlers.contains(&format!(" {method}("))
            {
                out.insert((method.to_uppercase(), full.clone()));
            }
        }
    }
    out
}

fn spec_routes(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn the_spec_and_the_router_name_the_same_routes() {
    let spec: Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "an OpenAPI 3 document");
    let (router, spec) = (router_routes(), spec_routes(&spec));
    assert!(router.len() > 40, "the router's source was read: {router:?}");
    let missing: Vec<_> = router.difference(&spec).collect();
    let extra: Vec<_> = spec.difference(&router).collect();
    assert!(missing.is_empty(), "routes missing from docs/openapi.json: {missing:?}");
    assert!(extra.is_empty(), "docs/openapi.json names routes the router lacks: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_spec_answers_on_a_real_server() {
    let mut cfg = ServerConfig::default();
    cfg.server_api_keys = vec!["openapi-test-key-0123456789".into()];
    // With an admin token, so /admin/drain exists (a user's token is refused).
    cfg.admin_token = Some("openapi-admin-token-0123456789".into());
    let server = im_tests::start(cfg).await;
    let api = im_tests::Api::new(&server);
    let user = api.user("spec-reader").await;
    let http = reqwest::Client::new();
    let spec: Value = serde_json::from_str(OPENAPI).unwrap();
    for (method, path) in spec_routes(&spec) {
        let concrete = path
            .replace("{conv}", "g:1")
            .replace("{username}", "spec-reader")
            .replace("{file}", "app.js")
            .replace("{id}", "1")
            .replace("{user_id}", "1");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let token = if path.starts_with("/api/v1/server/") {
            "openapi-test-key-0123456789"
        } else {
            user.token.as_str()
        };
        let resp = http
            .request(m, format!("{}{concrete}", server.http_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        assert_ne!(status, 405, "{method} {path}: the router has no such method");
        assert!(!(status == 404 && body.is_empty()), "{method} {path}: the router has no such route");
    }
    // And the binary serves the document itself.
    let served = reqwest::get(format!("{}/openapi.json", server.http_url())).await.unwrap();
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(served.json::<Value>().await.unwrap(), spec);
    server.shutdown().await;
}
