//! The embedded store: stop and restart the server on the same data
//! directory and nothing is lost; ids continue.

use im_core::{ClientFrame, ConversationId, GroupId, RoomId, ServerFrame};
use im_server::ServerConfig;
use im_tests::{builder, cmid, Api, Ws};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_data_dir_keeps_everything_and_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let start = || async {
        builder(ServerConfig::default()).embedded(dir.path()).unwrap().bind("127.0.0.1:0").await.unwrap()
    };

    let server = start().await;
    let api = Api::new(&server);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let group = GroupId(api.group(&alice, "keep", &[&bob]).await);
    let room = RoomId(api.room(&alice, "lobby").await);
    let conv = ConversationId::Group(group);
    let mut ws = Ws::open(&server, &alice, "a").await;
    for i in 1..=3u64 {
        let rid = ws.rid();
        let reply = ws.request(ClientFrame::Send { rid, conv, cmid: cmid(i), body: format!("m{i}") }).await;
        assert!(matches!(reply, ServerFrame::Ack { id, .. } if id == i), "{reply:?}");
    }
    drop(ws);
    server.shutdown().await;

    let server = start().await;
    let api = Api::new(&server);
    // The old token still works (same secret, session persisted).
    let mut ws = Ws::open(&server, &alice, "a").await;
    // History is intact.
    let rid = ws.rid();
    match ws.request(ClientFrame::History { rid, conv, before: None, limit: None }).await {
        ServerFrame::HistoryPage { messages, .. } => {
            let got: Vec<_> = messages.iter().map(|m| (m.id, m.body.as_str())).collect();
            assert_eq!(got, vec![(1, "m1"), (2, "m2"), (3, "m3")]);
        }
        other => panic!("{other:?}"),
    }
    // A resend of an acked message is still recognized; a new one gets id 4.
    let rid = ws.rid();
    let dup = ws.request(ClientFrame::Send { rid, conv, cmid: cmid(2), body: "again".into() }).await;
    assert!(matches!(dup, ServerFrame::Ack { id: 2, duplicate: true, .. }), "{dup:?}");
    let rid = ws.rid();
    let next = ws.request(ClientFrame::Send { rid, conv, cmid: cmid(4), body: "m4".into() }).await;
    assert!(matches!(next, ServerFrame::Ack { id: 4, duplicate: false, .. }), "{next:?}");
    // Groups, members, rooms and user ids survived; new ids continue.
    let (s, info) = api.call("GET", &format!("/api/v1/groups/{}", group.0), Some(&alice.token), None).await;
    assert_eq!(s, 200);
    assert_eq!(info["members"].as_array().map(|m| m.len()), Some(2));
    let rooms = server.state().logic().my_rooms(alice.id).await.unwrap();
    assert_eq!(rooms, vec![room]);
    let carol = api.user("carol").await;
    assert_eq!(carol.id.0, 3, "user ids continue");
    assert_eq!(api.room(&carol, "second").await, room.0 + 1, "room ids continue");
    server.shutdown().await;
}
