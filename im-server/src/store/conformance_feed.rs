//! The conformance suite's part for the message feed: a start that counts
//! once, a backlog of conversations past their cursor, exclusive claims
//! that lapse, and cursors that only move up.

use std::sync::Arc;

use im_protocol::ConversationId;

use super::{Directory, FeedPosition, MessageStore, NewMessage};

fn new(conv: ConversationId, cmid: &str) -> NewMessage {
    super::conformance::new_msg(conv, 1, cmid, "hi")
}

/// Runs the feed checks against `store` (messages and directory in one).
pub(crate) async fn feed<S: MessageStore + Directory>(store: Arc<S>) {
    let user = store.create_user("feeder", "x", 0).await.unwrap().id;
    let other = store.create_user("fed", "x", 0).await.unwrap().id;
    let group = ConversationId::Group(store.create_group("g", user, 0).await.unwrap().id);
    let room = ConversationId::Room(store.create_room("r", user, 0).await.unwrap().id);
    store.add_direct(user, other).await.unwrap();
    let direct = ConversationId::direct(user, other);
    let feed = store.feed().expect("a built-in store keeps a feed");

    for cmid in ["a", "b"] {
        store.append(new(group, cmid)).await.unwrap();
    }
    assert!(feed.feed_start().await.unwrap(), "the first start starts");
    assert!(!feed.feed_start().await.unwrap(), "a later start changes nothing");
    assert_eq!(feed.feed_backlog(10).await.unwrap(), vec![], "history before the start is not fed");

    store.append(new(group, "c")).await.unwrap();
    store.append(new(room, "a")).await.unwrap();
    store.append(new(direct, "a")).await.unwrap();
    let mut backlog = feed.feed_backlog(10).await.unwrap();
    backlog.sort_by_key(|p| p.conv.to_string());
    let mut want = vec![
        FeedPosition { conv: group, delivered: 2, head: 3 },
        FeedPosition { conv: room, delivered: 0, head: 1 },
        FeedPosition { conv: direct, delivered: 0, head: 1 },
    ];
    want.sort_by_key(|p| p.conv.to_string());
    assert_eq!(backlog, want, "a new conversation starts at its first message");
    assert_eq!(feed.feed_backlog(1).await.unwrap().len(), 1, "the limit holds");

    assert_eq!(feed.feed_claim(group, "a", 1000, 2000).await.unwrap(), Some(2));
    assert_eq!(feed.feed_claim(group, "b", 1500, 2500).await.unwrap(), None, "a's claim lasts");
    assert!(!feed.feed_advance(group, "b", 3, 2500).await.unwrap(), "b holds nothing");
    assert_eq!(feed.feed_claim(group, "a", 1500, 3000).await.unwrap(), Some(2), "a renews");
    assert!(feed.feed_advance(group, "a", 3, 0).await.unwrap());
    let convs: Vec<_> = feed.feed_backlog(10).await.unwrap().into_iter().map(|p| p.conv).collect();
    assert!(!convs.contains(&group), "delivered to its head: {convs:?}");

    assert_eq!(feed.feed_claim(group, "b", 1600, 5000).await.unwrap(), Some(3), "released");
    assert!(feed.feed_advance(group, "b", 1, 5000).await.unwrap());
    assert_eq!(feed.feed_claim(group, "b", 1700, 5000).await.unwrap(), Some(3), "never down");
    assert_eq!(feed.feed_claim(group, "a", 5001, 9000).await.unwrap(), Some(3), "b's claim lapsed");
    assert!(!feed.feed_advance(group, "b", 4, 9000).await.unwrap(), "b lost it");

    assert_eq!(feed.feed_claim(room, "a", 0, 100).await.unwrap(), Some(0));
    assert!(feed.feed_advance(room, "a", 1, 100).await.unwrap());
    assert_eq!(feed.feed_claim(room, "a", 0, 100).await.unwrap(), Some(1));
}
