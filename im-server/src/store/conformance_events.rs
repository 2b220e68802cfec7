//! The conformance suite's part for events: every store applies reactions,
//! edits and recalls to their targets atomically with storing them, empties
//! recalled content everywhere it keeps it, and counts only countable
//! messages as unread.

use std::sync::Arc;

use im_protocol::events::{EDIT, REACTION, RECALL, SYSTEM};
use im_protocol::{ClientMsgId, ConversationId, GroupId, Message, UserId};
use serde_json::json;

use super::{MessageStore, NewMessage, StoreError};

fn new(conv: ConversationId, from: u64, cmid: &str) -> NewMessage {
    super::conformance::new_msg(conv, from, cmid, "")
}

fn event(conv: ConversationId, from: u64, cmid: &str, kind: &str, target: u64) -> NewMessage {
    NewMessage { kind: Some(kind.into()), target: Some(target), ..new(conv, from, cmid) }
}

async fn get(store: &Arc<dyn MessageStore>, conv: ConversationId, id: u64) -> Message {
    store.after(conv, id - 1, 1).await.unwrap().pop().unwrap()
}

/// Runs the event checks against `store`.
pub(crate) async fn events(store: Arc<dyn MessageStore>) {
    let conv = ConversationId::Group(GroupId(7));
    let secret = "the launch code is 0000";
    let first = NewMessage { body: secret.into(), mentions: vec![UserId(2)], ..new(conv, 1, "m1") };
    assert_eq!(store.append(first).await.unwrap().message.id, 1);
    store.append(NewMessage { body: "second".into(), ..new(conv, 2, "m2") }).await.unwrap();

    // Reactions: the target's summary changes with the event, in one step.
    let thumbs = |from, cmid: &str, remove: bool| NewMessage {
        content: Some(json!({"emoji": "👍", "remove": remove})),
        ..event(conv, from, cmid, REACTION, 1)
    };
    let r3 = store.append(thumbs(2, "r3", false)).await.unwrap().message;
    assert_eq!((r3.id, r3.target), (3, Some(1)));
    store.append(thumbs(3, "r4", false)).await.unwrap();
    store.append(thumbs(2, "r5", true)).await.unwrap();
    let m1 = get(&store, conv, 1).await;
    assert_eq!(m1.reactions.len(), 1);
    assert_eq!(m1.reactions[0].users, [UserId(3)]);
    assert_eq!(m1.body, secret, "a reaction leaves the content alone");

    // A resend of an event is a duplicate and applies nothing twice.
    let again = store.append(thumbs(3, "r4", false)).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.id, 4);
    assert_eq!(store.sent(conv, UserId(3), &ClientMsgId::new("r4").unwrap()).await.unwrap().unwrap().id, 4);
    assert!(store.sent(conv, UserId(3), &ClientMsgId::new("nope").unwrap()).await.unwrap().is_none());

    // An edit: new body and mentions, `edited` names it.
    let edit = NewMessage { body: format!("{secret} (edited)"), ..event(conv, 1, "e6", EDIT, 1) };
    let e6 = store.append(edit).await.unwrap().message;
    let m1 = get(&store, conv, 1).await;
    assert_eq!((m1.body.as_str(), m1.edited, m1.mentions.len()), (e6.body.as_str(), Some(6), 0));
    assert_eq!(store.heads(&[conv]).await.unwrap(), [6]);

    // Countable: ids 1, 2 count; the events 3–6 do not.
    let counts = store.countable(&[(conv, 0), (conv, 1), (conv, 2), (conv, 5), (conv, 6)]).await.unwrap();
    assert_eq!(counts, [0, 1, 2, 2, 2]);
    store.append(NewMessage { body: "third".into(), ..new(conv, 2, "m7") }).await.unwrap();
    assert_eq!(store.countable(&[(conv, 7)]).await.unwrap(), [3]);

    // A recall: the target becomes a tombstone and its edit is emptied too.
    let recall = store.append(event(conv, 1, "x8", RECALL, 1)).await.unwrap().message;
    assert_eq!(recall.id, 8);
    let m1 = get(&store, conv, 1).await;
    assert!(m1.is_recalled() && m1.body.is_empty() && m1.reactions.is_empty() && m1.mentions.is_empty());
    assert_eq!((m1.recalled, m1.edited, m1.from, m1.cmid.as_str()), (Some(8), None, UserId(1), "m1"));
    let e6 = get(&store, conv, 6).await;
    assert!(e6.body.is_empty() && e6.content.is_none(), "the edit kept the recalled text: {e6:?}");
    assert_eq!((e6.recalled, e6.target, e6.kind.as_deref()), (Some(8), Some(1), Some(EDIT)));
    for m in store.after(conv, 0, 100).await.unwrap() {
        assert!(!m.body.contains("launch code"), "recalled content left in message {}: {m:?}", m.id);
    }

    // An edit stored after the recall (a race the logic lost) is stored empty.
    let late = NewMessage { body: "late edit".into(), ..event(conv, 1, "e9", EDIT, 1) };
    let late = store.append(late).await.unwrap().message;
    assert!(late.body.is_empty() && late.recalled == Some(8), "{late:?}");
    assert!(get(&store, conv, 9).await.body.is_empty());
    assert!(get(&store, conv, 1).await.body.is_empty());

    // A system notice stands alone and does not count.
    let notice = NewMessage {
        content: Some(json!({"event": "member_added", "user": 4})),
        body: "alice added dave".into(),
        kind: Some(SYSTEM.into()),
        ..new(conv, 1, "s10")
    };
    assert_eq!(store.append(notice).await.unwrap().message.id, 10);
    assert_eq!(store.countable(&[(conv, 10)]).await.unwrap(), [3]);

    // A target that is not stored: NotFound, nothing stored.
    match store.append(event(conv, 1, "x11", RECALL, 99)).await {
        Err(StoreError::NotFound) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.heads(&[conv]).await.unwrap(), [10]);

    // Pages carry the current state (history shows the tombstone).
    let page = store.before(conv, None, 100).await.unwrap();
    assert_eq!(page.len(), 10);
    assert!(page[0].is_recalled());
}
