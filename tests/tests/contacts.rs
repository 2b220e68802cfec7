//! Contacts and blocks over real sockets and HTTP: requests seen from both
//! sides (and as `contact` frames on each side's connections), acceptance,
//! removal, a contact list with presence, presence fan-out to contacts,
//! presence queries answered only for related users, and blocks — no
//! direct messages, requests or presence either way, with a refusal that
//! says nothing of the block unless the server is told to — also across
//! two PostgreSQL nodes.

use std::time::Duration;

use im_client::core::{ContactState, ConversationId, ErrorCode, PresenceStatus, ServerFrame, UserId};
use im_client::{Client, Event, Events, SendError};
use im_server::ServerConfig;
use im_tests::{start, until, Api, TestUser, Ws};
use serde_json::{json, Value};

async fn connect(url: String, user: &TestUser) -> (Client, Events) {
    let (client, mut events) = Client::builder().url(url).token(user.token.clone()).connect().unwrap();
    until(&mut events, "Synced", |e| matches!(e, Event::Synced)).await;
    (client, events)
}

async fn contact_event(events: &mut Events, from: UserId) -> ContactState {
    let (e, _) =
        until(events, "a contact event", |e| matches!(e, Event::Contact { user, .. } if *user == from)).await;
    match e {
        Event::Contact { state, .. } => state,
        _ => unreachable!(),
    }
}

async fn presence_of(api: &Api, caller: &TestUser, users: &[UserId]) -> Vec<u64> {
    let list: Vec<String> = users.iter().map(|u| u.0.to_string()).collect();
    let (s, got) = api
        .call("GET", &format!("/api/v1/presence?users={}", list.join(",")), Some(&caller.token), None)
        .await;
    assert_eq!(s, 200, "{got}");
    got.as_array().unwrap().iter().map(|p| p["user"].as_u64().unwrap()).collect()
}

fn refused(result: Result<impl std::fmt::Debug, SendError>) -> String {
    match result {
        Err(SendError::Rejected { code: ErrorCode::Forbidden, message }) => message,
        other => panic!("expected forbidden: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_request_accept_list_and_share_presence() {
    let mut cfg = ServerConfig::default();
    cfg.presence_grace = Duration::from_millis(200);
    let server = start(cfg).await;
    let api = Api::new(&server);
    let (ann, ben, cy) = (api.user("ann").await, api.user("ben").await, api.user("cyd").await);
    let (a, mut a_ev) = connect(server.ws_url(), &ann).await;

    // Unrelated: ann is not told ben's presence.
    assert_eq!(presence_of(&api, &ann, &[ann.id, ben.id]).await, vec![ann.id.0]);

    let (s, r) = api.call("POST", &format!("/api/v1/contacts/{}", ben.id), Some(&ann.token), None).await;
    assert_eq!((s, r.clone()), (200, json!({"user_id": ben.id, "state": "requested"})), "{r}");
    assert_eq!(
        contact_event(&mut a_ev, ben.id).await,
        ContactState::Requested,
        "ann's other devices hear it"
    );
    let (_, list) = api.call("GET", "/api/v1/contacts", Some(&ben.token), None).await;
    assert_eq!(list["contacts"][0]["user_id"], ann.id.0);
    assert_eq!(list["contacts"][0]["state"], "pending");
    assert!(list["contacts"][0].get("presence").is_none(), "no presence before acceptance: {list}");
    assert_eq!(presence_of(&api, &ann, &[ben.id]).await, Vec::<u64>::new(), "a request is no relation yet");

    // ben connects and accepts (by asking back); both sides hear it.
    let (b, mut b_ev) = connect(server.ws_url(), &ben).await;
    let (s, r) = api.call("POST", &format!("/api/v1/contacts/{}", ann.id), Some(&ben.token), None).await;
    assert_eq!((s, r["state"].as_str()), (200, Some("accepted")));
    assert_eq!(contact_event(&mut b_ev, ann.id).await, ContactState::Accepted);
    assert_eq!(contact_event(&mut a_ev, ben.id).await, ContactState::Accepted);
    let (_, list) = api.call("GET", "/api/v1/contacts", Some(&ann.token), None).await;
    assert_eq!(list["contacts"][0]["presence"]["status"], "online", "{list}");
    assert_eq!(presence_of(&api, &ann, &[ben.id]).await, vec![ben.id.0]);

    // Presence fan-out reaches contacts: ben goes offline, ann hears it.
    b.shutdown().await;
    let (e, _) = until(
        &mut a_ev,
        "ben offline",
        |e| matches!(e, Event::Presence(p) if p.user == ben.id && p.status == PresenceStatus::Offline),
    )
    .await;
    assert!(matches!(e, Event::Presence(_)));

    // Declining a request and removing a contact end it for both.
    let (s, _) = api.call("POST", &format!("/api/v1/contacts/{}", ann.id), Some(&cy.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(contact_event(&mut a_ev, cy.id).await, ContactState::Pending);
    let (s, _) = api.call("DELETE", &format!("/api/v1/contacts/{}", cy.id), Some(&ann.token), None).await;
    assert_eq!(s, 204);
    assert_eq!(contact_event(&mut a_ev, cy.id).await, ContactState::None);
    let (s, _) = api.call("DELETE", &format!("/api/v1/contacts/{}", ben.id), Some(&ann.token), None).await;
    assert_eq!(s, 204);
    let (_, list) = api.call("GET", "/api/v1/contacts", Some(&ben.token), None).await;
    assert_eq!(list, json!({"contacts": []}));

    // Bad input.
    for (path, status, code) in [
        (format!("/api/v1/contacts/{}", ann.id), 400, "invalid_field"),
        ("/api/v1/contacts/999".to_owned(), 404, "no_such_user"),
        ("/api/v1/contacts/x".to_owned(), 400, "invalid_field"),
    ] {
        let (s, e) = api.call("POST", &path, Some(&ann.token), None).await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{path}");
    }
    a.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_stops_direct_messages_requests_and_presence_either_way() {
    let mut cfg = ServerConfig::default();
    cfg.presence_grace = Duration::from_millis(200);
    let server = start(cfg).await;
    let api = Api::new(&server);
    let (ann, ben) = (api.user("ann").await, api.user("ben").await);
    let dm = ConversationId::direct(ann.id, ben.id);
    let (a, _a_ev) = connect(server.ws_url(), &ann).await;
    let (b, _b_ev) = connect(server.ws_url(), &ben).await;
    a.send(dm, "hi ben").await.unwrap();
    assert_eq!(presence_of(&api, &ann, &[ben.id]).await, vec![ben.id.0], "a direct chat relates them");

    let (s, _) = api.call("PUT", &format!("/api/v1/blocks/{}", ann.id), Some(&ben.token), None).await;
    assert_eq!(s, 204);
    let (_, blocks) = api.call("GET", "/api/v1/blocks", Some(&ben.token), None).await;
    assert_eq!(blocks, json!({"blocks": [ann.id]}));
    let message = refused(a.send(dm, "are you there?").await);
    assert_eq!(message, "cannot message this user", "the refusal does not say who blocked whom");
    refused(b.send(dm, "bye").await);
    let (s, e) = api.call("POST", &format!("/api/v1/contacts/{}", ben.id), Some(&ann.token), None).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "no contact request either");
    assert_eq!(presence_of(&api, &ann, &[ben.id]).await, Vec::<u64>::new(), "no presence either way");
    assert_eq!(presence_of(&api, &ben, &[ann.id]).await, Vec::<u64>::new());
    let (_, page) =
        api.call("GET", &format!("/api/v1/conversations/{dm}/messages"), Some(&ann.token), None).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "nothing was stored");

    // ben's presence changes no longer reach ann (a raw socket of ann's sees none).
    let mut ws = Ws::open(&server, &ann, "watcher").await;
    b.shutdown().await;
    let frames = ws.frames_within(Duration::from_millis(800)).await;
    assert!(
        !frames.iter().any(|f| matches!(f, ServerFrame::Presence(p) if p.user == ben.id)),
        "a blocked user's presence leaked: {frames:?}"
    );

    let (s, _) = api.call("DELETE", &format!("/api/v1/blocks/{}", ann.id), Some(&ben.token), None).await;
    assert_eq!(s, 204);
    a.send(dm, "hello again").await.expect("unblocked");
    a.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_can_say_who_blocked_whom() {
    let mut cfg = ServerConfig::default();
    cfg.reveal_blocks = true;
    let server = start(cfg).await;
    let api = Api::new(&server);
    let (ann, ben) = (api.user("ann").await, api.user("ben").await);
    let dm = ConversationId::direct(ann.id, ben.id);
    let (s, _) = api.call("PUT", &format!("/api/v1/blocks/{}", ann.id), Some(&ben.token), None).await;
    assert_eq!(s, 204);
    let (a, _a_ev) = connect(server.ws_url(), &ann).await;
    let (b, _b_ev) = connect(server.ws_url(), &ben).await;
    assert_eq!(refused(a.send(dm, "hi").await), format!("user {} has blocked you", ben.id));
    assert!(refused(b.send(dm, "hi").await).starts_with("you have blocked user"));
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_and_blocks_hold_across_nodes() {
    if !im_tests::cluster::services_available().await {
        return;
    }
    let cluster = im_tests::cluster::Cluster::new();
    let (n1, n2) = (cluster.node("contacts-1").await, cluster.node("contacts-2").await);
    let (api1, api2) = (Api::new(&n1), Api::new(&n2));
    let (ann, ben) = (api1.user("ann").await, api1.user("ben").await);
    let (b, mut b_ev) = connect(n2.ws_url(), &ben).await;
    let (s, _) = api1.call("POST", &format!("/api/v1/contacts/{}", ben.id), Some(&ann.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(contact_event(&mut b_ev, ann.id).await, ContactState::Pending, "told on the other node");
    let (s, r): (u16, Value) =
        api2.call("POST", &format!("/api/v1/contacts/{}", ann.id), Some(&ben.token), None).await;
    assert_eq!((s, r["state"].as_str()), (200, Some("accepted")));
    assert_eq!(contact_event(&mut b_ev, ann.id).await, ContactState::Accepted);
    let (s, _) = api1.call("PUT", &format!("/api/v1/blocks/{}", ben.id), Some(&ann.token), None).await;
    assert_eq!(s, 204);
    assert_eq!(contact_event(&mut b_ev, ann.id).await, ContactState::None, "the block ended the contact");
    refused(b.send(ConversationId::direct(ann.id, ben.id), "hi from node 2").await);
    b.shutdown().await;
    n1.shutdown().await;
    n2.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_contact_requests_are_capped() {
    let server = start(ServerConfig::default()).await;
    let api = Api::new(&server);
    let asker = api.user("asker").await;
    let cap = im_server::logic::contacts::MAX_OPEN_REQUESTS;
    let mut last = None;
    for i in 0..=cap {
        let u = api.user(&format!("user{i:04}")).await;
        let (s, e) = api.call("POST", &format!("/api/v1/contacts/{}", u.id), Some(&asker.token), None).await;
        if i < cap {
            assert_eq!(s, 200, "request {i}: {e}");
        } else {
            assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "request {i} is over the cap");
        }
        last = Some(u);
    }
    // Cancelling one makes room again.
    let (_, list) = api.call("GET", "/api/v1/contacts", Some(&asker.token), None).await;
    let first = list["contacts"][0]["user_id"].as_u64().unwrap();
    let (s, _) = api.call("DELETE", &format!("/api/v1/contacts/{first}"), Some(&asker.token), None).await;
    assert_eq!(s, 204);
    let last = last.unwrap();
    let (s, _) = api.call("POST", &format!("/api/v1/contacts/{}", last.id), Some(&asker.token), None).await;
    assert_eq!(s, 200);
    server.shutdown().await;
}
