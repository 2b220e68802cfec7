//! An embedder's own [`Authenticator`] plugged in with
//! `ServerBuilder::authenticator`, over real sockets: a token it accepts
//! signs its user in (mapped to `~subject`, with its display name) over
//! WebSocket and HTTP; one of its kind it rejects is refused for good; a
//! token of another kind goes on to `im`'s own session tokens; a logout
//! reaches its `revoke`, closes the connection with 4001, and its
//! `authenticate` refuses the token from then on. The authenticator is the
//! example of docs/embedding.md §2, which must stay this code verbatim.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use im_client::{Event, StopReason};
use im_protocol::UserId;
use im_server::auth::{AuthError, Authenticator, Identity};
use im_server::{RunningServer, ServerConfig};
use im_tests::{builder, connect_or_stop, until, Api};

// docs/embedding.md §2 begins
/// Single sign-on of the embedding product: it knows the tokens it issued
/// (`sso_…`) and the sign-ins they belong to.
struct MySso {
    /// Token → (the product's user id, display name, sign-in id), as its
    /// introspection would answer.
    issued: HashMap<String, (String, String, String)>,
    /// Sign-ins ended through `im` (a logout, the server API's revoke).
    ended: Mutex<HashSet<String>>,
}

#[async_trait]
impl Authenticator for MySso {
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        if !token.starts_with("sso_") {
            return Ok(None); // not mine: the next authenticator is asked
        }
        let Some((user, name, sign_in)) = self.issued.get(token) else {
            return Err(AuthError::BadSignature); // mine but not issued: refused for good
        };
        let session = format!("sso:{sign_in}");
        if self.ended.lock().unwrap().contains(&session) {
            return Err(AuthError::Revoked);
        }
        Ok(Some(Identity::External {
            subject: user.clone(),
            name: Some(name.clone()),
            session,
            expires_at: im_server::time::now_ms() + 3_600_000,
            issued_at: None, // unknown: a revoke-all refuses it if it expires within 24 h
        }))
    }

    async fn session_alive(&self, id: &str) -> Result<Option<bool>, AuthError> {
        if !id.starts_with("sso:") {
            return Ok(None); // another authenticator's session
        }
        Ok(Some(!self.ended.lock().unwrap().contains(id)))
    }

    async fn revoke(&self, id: &str, _user: UserId, _expires_at: u64) -> Result<Option<bool>, AuthError> {
        if !id.starts_with("sso:") {
            return Ok(None);
        }
        Ok(Some(self.ended.lock().unwrap().insert(id.to_owned())))
    }
}
// docs/embedding.md §2 ends

const ADA: &str = "sso_ada-token";

async fn start(sso: Arc<MySso>) -> RunningServer {
    builder(ServerConfig::default()).memory().authenticator(sso).bind("127.0.0.1:0").await.expect("starts")
}

fn sso() -> Arc<MySso> {
    let issued = [(ADA.to_owned(), ("ada-1815".to_owned(), "Ada Lovelace".to_owned(), "s-1".to_owned()))];
    Arc::new(MySso { issued: issued.into_iter().collect(), ended: Mutex::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_authenticator_signs_its_users_in_and_refuses_the_rest() {
    let sso = sso();
    let server = start(sso.clone()).await;
    let api = Api::new(&server);

    // Accepted: the product's user, mapped to `~ada-1815`, display name kept.
    let (ada, mut ada_ev, first) = connect_or_stop(&server, ADA).await;
    let Event::Connected { user, .. } = first else { panic!("{first:?}") };
    let (s, me) = api.call("GET", "/api/v1/me", Some(ADA), None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!((me["id"].as_u64(), me["username"].as_str()), (Some(user.0), Some("~ada-1815")));
    assert_eq!(me["display_name"], "Ada Lovelace");

    // Its kind, not issued: refused, terminal for the client.
    let (_, _, first) = connect_or_stop(&server, "sso_forged").await;
    assert_eq!(first, Event::Stopped { reason: StopReason::Unauthorized });
    let (s, e) = api.call("GET", "/api/v1/me", Some("sso_forged"), None).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("unauthorized")));

    // Another kind: im's own session tokens still work beside it.
    let bob = api.user("bob").await;
    let (bob_client, _bob_ev, first) = connect_or_stop(&server, &bob.token).await;
    assert!(matches!(first, Event::Connected { user, .. } if user == bob.id), "{first:?}");

    // A logout reaches its revoke: the connection closes with 4001 and
    // the token is refused from then on.
    let (s, _) = api.call("POST", "/api/v1/logout", Some(ADA), None).await;
    assert_eq!(s, 204);
    assert!(sso.ended.lock().unwrap().contains("sso:s-1"), "revoke was asked");
    let (e, _) = until(&mut ada_ev, "Stopped", |e| matches!(e, Event::Stopped { .. })).await;
    assert!(
        matches!(&e, Event::Stopped { reason: StopReason::Closed { code, .. } } if code.0 == 4001),
        "{e:?}"
    );
    let (_, _, first) = connect_or_stop(&server, ADA).await;
    assert_eq!(first, Event::Stopped { reason: StopReason::Unauthorized });
    let (s, _) = api.call("GET", "/api/v1/me", Some(&bob.token), None).await;
    assert_eq!(s, 200, "other sessions are not its business");
    ada.shutdown().await;
    bob_client.shutdown().await;
    server.shutdown().await;
}

#[test]
fn the_embedding_guide_shows_this_authenticator_verbatim() {
    let guide = include_str!("../../docs/embedding.md");
    let source = include_str!("custom_auth.rs");
    let section = guide.split("## 2. ").nth(1).expect("embedding.md has a §2");
    let block = section
        .split("```rust,ignore\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("§2 has a rust block");
    let code = source
        .split("// docs/embedding.md §2 begins\n")
        .nth(1)
        .and_then(|c| c.split("\n// docs/embedding.md §2 ends").next())
        .expect("the marked code");
    assert_eq!(block.trim(), code.trim(), "docs/embedding.md §2 and tests/tests/custom_auth.rs differ");
}
