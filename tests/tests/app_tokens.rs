//! Tokens issued by the application's backend (JWT), end to end on
//! loopback: a fake app backend signs HS256, RS256 and EdDSA tokens; an
//! `im-client` connects with one; the app's user is mapped to one `im` user;
//! expired, forged and foreign tokens are refused terminally; a revoked
//! token is refused on every node sharing the session store, and on two
//! real nodes (Redis and PostgreSQL) one token's session is disconnected and
//! then revoked through the other node.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use im_client::core::{ConversationId, GroupId};
use im_client::{Event, StopReason};
use im_server::auth::jwt::{JwtConfig, JwtKey};
use im_server::store::MemoryStore;
use im_server::{RunningServer, ServerConfig};
use im_tests::cluster::{redis_url, services_available, Cluster};
use im_tests::{builder, connect_or_stop, until, Api};
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &[u8] = b"the app backend's secret, 32+ bytes long";
const RSA_PRIVATE: &str = include_str!("../fixtures/jwt-test-rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../fixtures/jwt-test-rsa-public.pem");

/// The app backend's side: sign claims with a header.
fn sign(alg: &str, claims: &Value, signer: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = json!({"alg": alg, "typ": "JWT"}).to_string();
    let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = signer(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    sign("HS256", claims, |m| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(m);
        mac.finalize().into_bytes().to_vec()
    })
}

fn rs256(claims: &Value) -> String {
    let b64: String = RSA_PRIVATE.lines().filter(|l| !l.starts_with("-----")).collect();
    let pair = RsaKeyPair::from_pkcs8(&STANDARD.decode(b64).unwrap()).unwrap();
    sign("RS256", claims, |m| {
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), m, &mut sig).unwrap();
        sig
    })
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now_s() + 600, "iss": "https://app.example", "aud": "im", "name": sub.to_uppercase()})
}

fn jwt_config(extra: Vec<JwtKey>) -> JwtConfig {
    let mut keys =
        vec![JwtKey::hs256(SECRET.to_vec()).unwrap(), JwtKey::from_public_pem(RSA_PUBLIC).unwrap()];
    keys.extend(extra);
    let mut cfg = JwtConfig::new(keys);
    cfg.issuer = Some("https://app.example".into());
    cfg.audience = Some("im".into());
    cfg
}

async fn start(cfg: JwtConfig, store: Arc<MemoryStore>) -> RunningServer {
    builder(ServerConfig::default()).store(store).jwt(cfg).bind("127.0.0.1:0").await.expect("server starts")
}

/// The server API key of [`start_with_api_key`].
const SERVER_API_KEY: &str = "app-tokens-test-key-0123456";

/// A server accepting the app's tokens and [`SERVER_API_KEY`].
async fn start_with_api_key() -> RunningServer {
    let mut cfg = ServerConfig::default();
    cfg.server_api_keys = vec![SERVER_API_KEY.into()];
    builder(cfg)
        .store(Arc::new(MemoryStore::new()))
        .jwt(jwt_config(vec![]))
        .bind("127.0.0.1:0")
        .await
        .expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_tokens_sign_in_app_users_who_then_chat_like_any_other() {
    let server = start(jwt_config(vec![]), Arc::new(MemoryStore::new())).await;
    let api = Api::new(&server);
    let token = hs256(&claims("user-42"), SECRET);

    let (a, mut a_ev, first) = connect_or_stop(&server, &token).await;
    let Event::Connected { user, .. } = first else { panic!("{first:?}") };
    // The same app user is the same im user, whichever token and algorithm.
    let (_, me) = api.call("GET", "/api/v1/me", Some(&rs256(&claims("user-42"))), None).await;
    assert_eq!(me["id"], user.0);
    assert_eq!(me["username"], "~user-42", "app users are named ~sub, which no registration can take");
    // A registered user and an app user share a group and talk.
    let bob = api.user("bob").await;
    let (s, group) = api
        .call("POST", "/api/v1/groups", Some(&token), Some(json!({"name": "g", "members": [bob.id.0]})))
        .await;
    assert_eq!(s, 201, "{group}");
    let conv = ConversationId::Group(GroupId(group["id"].as_u64().unwrap()));
    until(&mut a_ev, "Synced", |e| matches!(e, Event::Synced)).await;
    a.send(conv, "hello from the app").await.expect("stored");
    let (_, page) =
        api.call("GET", &format!("/api/v1/conversations/{conv}/messages"), Some(&bob.token), None).await;
    assert_eq!(page["messages"][0]["body"], "hello from the app");
    assert_eq!(page["messages"][0]["from"], user.0);
    // Password login as the app user is impossible: it has no password.
    let (s, _) = api
        .call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"username": "~user-42", "password": "x".repeat(12)})),
        )
        .await;
    assert_eq!(s, 401);
    a.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forged_and_foreign_tokens_are_refused_for_good() {
    let rng = ring::rand::SystemRandom::new();
    let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())}]});
    let server =
        start(jwt_config(JwtKey::from_jwks(&jwks.to_string()).unwrap()), Arc::new(MemoryStore::new())).await;
    let api = Api::new(&server);
    let eddsa = sign("EdDSA", &claims("ed-user"), |m| ed.sign(m).as_ref().to_vec());
    let (_, me) = api.call("GET", "/api/v1/me", Some(&eddsa), None).await;
    assert_eq!(me["username"], "~ed-user", "EdDSA from a JWKS key");

    let mut expired = claims("u");
    expired["exp"] = json!(now_s() - 120);
    let mut foreign = claims("u");
    foreign["aud"] = json!("another-service");
    let mut early = claims("u");
    early["nbf"] = json!(now_s() + 3600);
    let bad = [
        ("expired", hs256(&expired, SECRET)),
        ("another secret", hs256(&claims("u"), b"not the app backend's secret at all!!")),
        ("another audience", hs256(&foreign, SECRET)),
        ("not valid yet", hs256(&early, SECRET)),
    ];
    for (what, token) in bad {
        let (s, body) = api.call("GET", "/api/v1/me", Some(&token), None).await;
        assert_eq!((s, body["code"].as_str()), (401, Some("unauthorized")), "{what}: {body}");
        let (_, _, first) = connect_or_stop(&server, &token).await;
        assert_eq!(
            first,
            Event::Stopped { reason: StopReason::Unauthorized },
            "{what}: terminal, no retries"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_app_token_is_refused_on_every_node() {
    // Two nodes sharing one session store, as nodes share Redis or PostgreSQL.
    let store = Arc::new(MemoryStore::new());
    let (one, two) = (start(jwt_config(vec![]), store.clone()).await, start(jwt_config(vec![]), store).await);
    let mut c = claims("leaver");
    c["jti"] = json!("token-1");
    let token = hs256(&c, SECRET);
    let (_a, _a_ev, first) = connect_or_stop(&one, &token).await;
    assert!(matches!(first, Event::Connected { .. }), "{first:?}");

    let (s, _) = Api::new(&two).call("POST", "/api/v1/logout", Some(&token), None).await;
    assert_eq!(s, 204);
    for node in [&one, &two] {
        let (s, _) = Api::new(node).call("GET", "/api/v1/me", Some(&token), None).await;
        assert_eq!(s, 401, "revoked on {}", node.http_url());
    }
    // A fresh connection with it is refused. (An open connection is closed
    // by the `session_revoked` event, which the broker carries between
    // nodes; these two in-process nodes have no broker in common.)
    let (_, _, first) = connect_or_stop(&one, &token).await;
    assert_eq!(first, Event::Stopped { reason: StopReason::Unauthorized });
    // On the node where it is revoked, its open connection is closed with 4001.
    let mut c3 = claims("leaver");
    c3["jti"] = json!("token-3");
    let third = hs256(&c3, SECRET);
    let (_b, mut b_ev, first) = connect_or_stop(&two, &third).await;
    assert!(matches!(first, Event::Connected { .. }), "{first:?}");
    let (s, _) = Api::new(&two).call("POST", "/api/v1/logout", Some(&third), None).await;
    assert_eq!(s, 204);
    let (stopped, _) = until(&mut b_ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert!(
        matches!(&stopped, Event::Stopped { reason: StopReason::Closed { code, .. } } if code.0 == 4001),
        "{stopped:?}"
    );
    // Another token of the same user still works.
    let mut other = claims("leaver");
    other["jti"] = json!("token-2");
    let (_, me) = Api::new(&one).call("GET", "/api/v1/me", Some(&hs256(&other, SECRET)), None).await;
    assert_eq!(me["username"], "~leaver");
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_all_of_a_users_tokens_refuses_every_earlier_token_and_none_after() {
    let server = start_with_api_key().await;
    let api = Api::new(&server);
    let key = SERVER_API_KEY;
    let with_iat = |sub: &str, iat: u64| {
        let mut c = claims(sub);
        c["iat"] = json!(iat);
        hs256(&c, SECRET)
    };
    // An app user with a dated token, connected; and one without iat.
    let old_jwt = with_iat("ada", now_s() - 5);
    let undated = hs256(&claims("ada"), SECRET);
    let (c, mut ev, first) = connect_or_stop(&server, &old_jwt).await;
    let Event::Connected { user: ada, .. } = first else { panic!("{first:?}") };
    // A password user with two sessions.
    let bob = api.user("bob").await;
    let bob_second = api.login("bob").await;

    for user in [ada, bob.id] {
        let (s, _) =
            api.call("POST", &format!("/api/v1/server/users/{user}/revoke-tokens"), Some(key), None).await;
        assert_eq!(s, 204);
    }
    let (e, _) = until(&mut ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert_eq!(
        e,
        Event::Stopped { reason: StopReason::Unauthorized },
        "the connection closed, its reconnect refused"
    );
    for token in [&old_jwt, &undated, &bob.token, &bob_second.token] {
        let (s, body) = api.call("GET", "/api/v1/me", Some(token), None).await;
        assert_eq!((s, body["code"].as_str()), (401, Some("unauthorized")), "an earlier token: {token}");
    }
    // What comes after works.
    tokio::time::sleep(Duration::from_millis(1100)).await; // iat has a resolution of one second
    let fresh = with_iat("ada", now_s());
    let (s, me) = api.call("GET", "/api/v1/me", Some(&fresh), None).await;
    assert_eq!((s, me["id"].as_u64()), (200, Some(ada.0)), "a token issued after the revocation");
    let bob_again = api.login("bob").await;
    let (s, _) = api.call("GET", "/api/v1/me", Some(&bob_again.token), None).await;
    assert_eq!(s, 200, "a new login");
    let (s, e) = api.call("POST", "/api/v1/server/users/999/revoke-tokens", Some(key), None).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("no_such_user")));
    c.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_claim_and_the_server_api_set_display_names_that_notices_use() {
    let server = start_with_api_key().await;
    let api = Api::new(&server);
    let key = SERVER_API_KEY;
    let mut c = claims("ada");
    c["name"] = json!("Ada Lovelace");
    let (s, me) = api.call("GET", "/api/v1/me", Some(&hs256(&c, SECRET)), None).await;
    assert_eq!((s, me["display_name"].as_str()), (200, Some("Ada Lovelace")), "{me}");
    let ada = me["id"].as_u64().unwrap();
    c["name"] = json!("Ada L.");
    let token = hs256(&c, SECRET);
    api.call("GET", "/api/v1/me", Some(&token), None).await;
    let (_, found) = api.call("GET", &format!("/api/v1/users/{ada}"), Some(&token), None).await;
    assert_eq!(found["display_name"], "Ada L.", "a changed claim changes the name");

    let (s, grace) = api
        .call(
            "POST",
            "/api/v1/server/users",
            Some(key),
            Some(json!({"subject": "grace", "name": "Grace Hopper"})),
        )
        .await;
    assert_eq!((s, grace["display_name"].as_str()), (200, Some("Grace Hopper")), "{grace}");
    let (s, e) =
        api.call("POST", "/api/v1/server/users", Some(key), Some(json!({"subject": "x", "name": " "}))).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_field")));

    // Notices name users by their display names.
    let (s, group) = api.call("POST", "/api/v1/groups", Some(&token), Some(json!({"name": "g"}))).await;
    assert_eq!(s, 201);
    let gid = group["id"].as_u64().unwrap();
    let (s, _) = api
        .call(
            "POST",
            &format!("/api/v1/groups/{gid}/members"),
            Some(&token),
            Some(json!({"user_id": grace["id"]})),
        )
        .await;
    assert_eq!(s, 204);
    let (_, page) =
        api.call("GET", &format!("/api/v1/conversations/g:{gid}/messages"), Some(&token), None).await;
    assert_eq!(page["messages"][0]["body"], "Ada L. added Grace Hopper");
    server.shutdown().await;
}

/// A node of `cluster` accepting the app's tokens and [`SERVER_API_KEY`].
async fn jwt_node(cluster: &Cluster, name: &str) -> RunningServer {
    let mut cfg = cluster.config(name);
    cfg.server_api_keys = vec![SERVER_API_KEY.into()];
    cluster.node_built(cfg, &redis_url(), |b| b.jwt(jwt_config(vec![]))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_token_revoked_through_one_node_is_closed_and_refused_on_the_other() {
    if !services_available().await {
        return;
    }
    let cluster = Cluster::new();
    let (one, two) = (jwt_node(&cluster, "jwt-1").await, jwt_node(&cluster, "jwt-2").await);
    let backend = Api::new(&two);
    let server = |path: &str, body: Value| {
        let (backend, path) = (backend.clone(), format!("/api/v1/server{path}"));
        async move { backend.call("POST", &path, Some(SERVER_API_KEY), Some(body)).await }
    };
    let jwt = |jti: &str| {
        let mut c = claims("roamer");
        c["jti"] = json!(jti);
        hs256(&c, SECRET)
    };
    // Two app tokens of one user, both connected to node 1.
    let (token, other) = (jwt("laptop-1"), jwt("phone-1"));
    let (_a, mut a_ev, first) = connect_or_stop(&one, &token).await;
    let Event::Connected { user, .. } = first else { panic!("{first:?}") };
    let (_b, mut b_ev, first) = connect_or_stop(&one, &other).await;
    assert!(matches!(first, Event::Connected { .. }), "{first:?}");
    until(&mut a_ev, "Synced", |e| matches!(e, Event::Synced)).await;

    // Through node 2: one session disconnected (3000, it comes back) ...
    let (s, body) = server("/sessions/disconnect", json!({"token": token})).await;
    assert_eq!(s, 204, "{body}");
    let (e, _) = until(&mut a_ev, "Disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(matches!(e, Event::Disconnected { code: Some(c), .. } if c.0 == 3000), "{e:?}");
    until(&mut a_ev, "Connected again", |e| matches!(e, Event::Connected { .. })).await;
    until(&mut a_ev, "Synced again", |e| matches!(e, Event::Synced)).await;

    // ... then revoked: closed on node 1 with 4001, the client stops.
    let (s, body) = server("/tokens/revoke", json!({"token": token})).await;
    assert_eq!(s, 204, "{body}");
    let (e, _) = until(&mut a_ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert!(
        matches!(&e, Event::Stopped { reason: StopReason::Closed { code, .. } } if code.0 == 4001),
        "{e:?}"
    );
    for n in [&one, &two] {
        let (_, _, first) = connect_or_stop(n, &token).await;
        assert_eq!(first, Event::Stopped { reason: StopReason::Unauthorized }, "refused on {}", n.http_url());
        let (s, _) = Api::new(n).call("GET", "/api/v1/me", Some(&token), None).await;
        assert_eq!(s, 401, "refused over HTTP on {}", n.http_url());
    }

    // The other token's session was left alone all along: its stream up to
    // a message posted now holds no disconnect.
    let (s, group) = server("/groups", json!({"owner": user.0, "name": "notes"})).await;
    assert_eq!(s, 201, "{group}");
    let conv = ConversationId::Group(GroupId(group["id"].as_u64().unwrap()));
    let (s, _) = server(
        "/messages",
        json!({"conv": conv.to_string(), "from": user.0, "cmid": "n1", "body": "still here"}),
    )
    .await;
    assert_eq!(s, 201);
    let (_, before) =
        until(&mut b_ev, "the post", |e| matches!(e, Event::Message(m) if m.body == "still here")).await;
    assert!(
        !before.iter().any(|e| matches!(e, Event::Disconnected { .. } | Event::Stopped { .. })),
        "the other session stayed connected: {before:?}"
    );
    one.shutdown().await;
    two.shutdown().await;
    cluster.cleanup().await;
}
