//! Tests of write-behind: appends held in the tail read back exactly as
//! from redb, and survive a crash that never applied them.

use std::time::Duration;

use super::tests::{closed_store_with_one_message, job, logged_value, new_msg};
use super::*;
use crate::store::ReadStore;

/// A store whose appends stay in the tail until something else drains it
/// (no drain by age within a test).
fn holding_store() -> (tempfile::TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(&dir.path().join("im.redb"), Duration::from_secs(3600)).unwrap();
    (dir, Arc::new(store))
}

impl EmbeddedStore {
    /// Appends waiting in the tail.
    fn tail_len(&self) -> usize {
        let tails = self.tail.read().unwrap();
        tails.current.len() + tails.applying.as_ref().map_or(0, |a| a.len())
    }
}

fn system_notice(conv: ConversationId, cmid: &str) -> NewMessage {
    NewMessage { kind: Some(im_protocol::events::SYSTEM.into()), ..new_msg(conv, 1, cmid) }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_conformance_suite_holds_with_appends_in_the_tail() {
    let (_dir, store) = holding_store();
    crate::store::conformance::messages(store).await;
    let (_dir, store) = holding_store();
    crate::store::conformance::reads(store).await;
    let (_dir, store) = holding_store();
    crate::store::conformance::concurrent_appends(store).await;
    let (_dir, store) = holding_store();
    crate::store::conformance_events::events(store).await;
    let (_dir, store) = holding_store();
    crate::store::conformance_erasure::erasure(store).await;
    let (_dir, store) = holding_store();
    crate::store::conformance_feed::feed(store).await;
}

/// Every read a client's sync, history and unread counts use, asked of
/// the same messages in the tail, in redb, and split between the two.
#[tokio::test(flavor = "multi_thread")]
async fn reads_merge_the_tail_with_redb() {
    let (_dir, store) = holding_store();
    let conv = ConversationId::direct(UserId(1), UserId(2));
    let ids = |m: Vec<Message>| m.into_iter().map(|m| m.id).collect::<Vec<_>>();
    for i in 1..=5 {
        assert_eq!(store.append(new_msg(conv, 1, &format!("m{i}"))).await.unwrap().message.id, i);
    }
    let resent = store.append(new_msg(conv, 1, "m2")).await.unwrap();
    assert!(resent.duplicate && resent.message.id == 2 && resent.message.body == "m2");
    assert_eq!(store.tail_len(), 5, "plain appends wait in the tail");
    for round in ["tail", "redb"] {
        assert_eq!(ids(store.after(conv, 0, 10).await.unwrap()), [1, 2, 3, 4, 5], "{round}");
        assert_eq!(ids(store.after(conv, 2, 2).await.unwrap()), [3, 4], "{round}");
        assert_eq!(ids(store.before(conv, None, 3).await.unwrap()), [3, 4, 5], "{round}");
        assert_eq!(ids(store.before(conv, Some(3), 10).await.unwrap()), [1, 2], "{round}");
        assert_eq!(store.heads(&[conv]).await.unwrap(), [5], "{round}");
        assert_eq!(store.latest(&[conv]).await.unwrap()[0].as_ref().map(|m| m.id), Some(5), "{round}");
        let sent = store.sent(conv, UserId(1), &ClientMsgId::new("m4").unwrap()).await.unwrap();
        assert_eq!(sent.map(|m| (m.id, m.body)), Some((4, "m4".to_owned())), "{round}");
        assert!(store.sent(conv, UserId(2), &ClientMsgId::new("m4").unwrap()).await.unwrap().is_none());
        let states = store.read_states(UserId(1), &[conv]).await.unwrap();
        assert_eq!(states[0].read, 5, "{round}: a sender has read what they sent");
        assert_eq!(store.read_states(UserId(2), &[conv]).await.unwrap()[0].read, 0, "{round}");
        assert_eq!(store.countable(&[(conv, 3), (conv, 99), (conv, 0)]).await.unwrap(), [3, 5, 0], "{round}");
        store.flush().await.unwrap();
        assert_eq!(store.tail_len(), 0, "a checkpoint applies the tail");
    }
    // Split: 1–5 in redb, 6–8 in the tail.
    for i in 6..=8 {
        store.append(new_msg(conv, 2, &format!("m{i}"))).await.unwrap();
    }
    store.append(system_notice(conv, "notice")).await.unwrap();
    assert_eq!(store.tail_len(), 4);
    assert_eq!(ids(store.after(conv, 3, 10).await.unwrap()), [4, 5, 6, 7, 8, 9]);
    assert_eq!(ids(store.after(conv, 3, 3).await.unwrap()), [4, 5, 6]);
    assert_eq!(ids(store.before(conv, Some(8), 4).await.unwrap()), [4, 5, 6, 7]);
    assert_eq!(ids(store.before(conv, None, 2).await.unwrap()), [8, 9]);
    assert_eq!(store.heads(&[conv]).await.unwrap(), [9]);
    for (cmid, id) in [("m4", 4), ("m7", 7)] {
        let from = if id > 5 { 2 } else { 1 };
        let again = store.append(new_msg(conv, from, cmid)).await.unwrap();
        assert_eq!(
            (again.duplicate, again.message.id),
            (true, id),
            "a resend of {cmid} (redb and tail alike)"
        );
    }
    assert_eq!(store.read_states(UserId(2), &[conv]).await.unwrap()[0].read, 8);
    // The notice is not countable: 8 countable messages up to it and past it.
    assert_eq!(store.countable(&[(conv, 9), (conv, 50)]).await.unwrap(), [8, 8]);
    // An event (a target) drains the tail first, in its own transaction.
    let mut edit = new_msg(conv, 2, "edit-7");
    edit.kind = Some(im_protocol::events::EDIT.into());
    edit.body = "seven".into();
    edit.target = Some(7);
    assert_eq!(store.append(edit).await.unwrap().message.id, 10);
    assert_eq!(store.tail_len(), 0);
    let seven = store.after(conv, 6, 1).await.unwrap();
    assert_eq!((seven[0].body.as_str(), seven[0].edited), ("seven", Some(10)));
    store.append(new_msg(conv, 1, "m11")).await.unwrap();
    assert_eq!(store.countable(&[(conv, 11)]).await.unwrap(), [9], "events before it are not counted");
}

/// A "crash" of a writer whose appends never left the tail: the log alone
/// brings them back, with the conversation's event count.
#[tokio::test(flavor = "multi_thread")]
async fn appends_only_in_the_tail_survive_a_crash() {
    let (_dir, path, conv, _) = closed_store_with_one_message().await;
    {
        // The writer as the store runs it, minus its run loop: nothing
        // drains the tail or checkpoints, as if the process died.
        let db = Arc::new(Database::create(&path).unwrap());
        let (log, old) = MessageLog::open(&MessageLog::path_for(&path)).unwrap();
        let (second, _) = MessageLog::open(&MessageLog::second_path_for(&path)).unwrap();
        assert!(old.is_empty());
        let logs = [log, second];
        let mut writer =
            Writer::new(db.clone(), logs, Arc::new(Visibility::default()), Default::default(), TAIL_AGE)
                .unwrap();
        let (jobs, answers): (Vec<_>, Vec<_>) = [
            Op::Append(new_msg(conv, 1, "m2")),
            Op::Append(system_notice(conv, "joined")),
            Op::Append(new_msg(conv, 2, "m4")),
            Op::Append(new_msg(conv, 1, "m2")),
        ]
        .into_iter()
        .map(job)
        .unzip();
        writer.run_batch(jobs);
        let mut got = Vec::new();
        for a in answers {
            match a.await.unwrap().unwrap() {
                Reply::Appended(a) => got.push((a.message.id, a.duplicate)),
                r => panic!("{r:?}"),
            }
        }
        assert_eq!(got, [(2, false), (3, false), (4, false), (2, true)]);
        drop(writer);
        let txn = db.begin_read().unwrap();
        let messages = txn.open_table(MESSAGES).unwrap();
        assert!(messages.get((conv.to_string().as_str(), 2)).unwrap().is_none(), "redb never saw them");
    }
    assert_eq!(EmbeddedStore::logged_appends(&path).unwrap(), 3);
    let s = EmbeddedStore::open(&path).unwrap();
    let all: Vec<_> = s.after(conv, 0, 10).await.unwrap().into_iter().map(|m| (m.id, m.body)).collect();
    assert_eq!(all, [(1, "m1".into()), (2, "m2".into()), (3, "joined".into()), (4, "m4".into())]);
    assert_eq!(s.read_states(UserId(2), &[conv]).await.unwrap()[0].read, 4);
    // The replay restored the event count: the next message counts 4 - 1.
    let five = s.append(new_msg(conv, 2, "m5")).await.unwrap().message.id;
    assert_eq!(five, 5);
    assert_eq!(s.countable(&[(conv, 5)]).await.unwrap(), [4]);
    let resent = s.append(new_msg(conv, 2, "m4")).await.unwrap();
    assert_eq!((resent.duplicate, resent.message.id), (true, 4));
}

/// A crash during a checkpoint leaves records in both log files: the
/// older epoch's replay first, whichever file holds it.
#[tokio::test(flavor = "multi_thread")]
async fn both_logs_replay_older_epoch_first() {
    for older_in_second in [false, true] {
        let (_dir, path, conv, c) = closed_store_with_one_message().await;
        {
            let (mut first, _) = MessageLog::open(&MessageLog::path_for(&path)).unwrap();
            let (mut second, _) = MessageLog::open(&MessageLog::second_path_for(&path)).unwrap();
            let (older, newer) = if older_in_second {
                first.clear_after(second.epoch()).unwrap();
                (&mut second, &mut first)
            } else {
                second.clear_after(first.epoch()).unwrap();
                (&mut first, &mut second)
            };
            assert!(older.epoch() < newer.epoch());
            for (log, ids) in [(older, [2, 3]), (newer, [4, 5])] {
                for id in ids {
                    log.push(&c, id, &logged_value(&format!("m{id}")));
                }
                log.write().unwrap();
            }
        }
        assert_eq!(EmbeddedStore::logged_appends(&path).unwrap(), 4);
        let s = EmbeddedStore::open(&path).unwrap();
        let ids: Vec<_> = s.after(conv, 0, 10).await.unwrap().into_iter().map(|m| (m.id, m.body)).collect();
        let want: Vec<_> = (1..=5).map(|i| (i, format!("m{i}"))).collect();
        assert_eq!(ids, want, "older epoch in the second file: {older_in_second}");
        drop(s);
        assert_eq!(EmbeddedStore::logged_appends(&path).unwrap(), 0, "replayed and both logs cleared");
    }
}

/// Readers racing the applier (drains and checkpoints in the background,
/// with the writer going on): a conversation's head never goes back, and
/// its history is always gapless up to at least the head seen before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_never_miss_a_message_while_the_tail_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("im.redb")).unwrap());
    let convs: Vec<_> = (1..=8).map(|g| ConversationId::Group(GroupId(g))).collect();
    let per_conv = 700; // 5,600 appends: past TAIL_APPENDS twice, and past a checkpoint's count
    let mut writers = Vec::new();
    for &conv in &convs {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..per_conv {
                store.append(new_msg(conv, 1, &format!("c{i}"))).await.unwrap();
            }
        }));
    }
    let reader = {
        let (store, convs) = (store.clone(), convs.clone());
        tokio::spawn(async move {
            let mut seen = vec![0u64; convs.len()];
            let mut reads = 0u64;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while seen.iter().any(|&h| h < per_conv) && std::time::Instant::now() < deadline {
                for (i, &conv) in convs.iter().enumerate() {
                    let head = store.heads(&[conv]).await.unwrap()[0];
                    assert!(head >= seen[i], "{conv}: head went back from {} to {head}", seen[i]);
                    let page = store.after(conv, 0, 10_000).await.unwrap();
                    let ids: Vec<u64> = page.iter().map(|m| m.id).collect();
                    assert!(ids.len() as u64 >= head, "{conv}: history has {} of head {head}", ids.len());
                    assert!(ids.iter().copied().eq(1..=ids.len() as u64), "{conv}: history not gapless");
                    let newest = store.before(conv, None, 5).await.unwrap();
                    assert!(newest.last().map_or(0, |m| m.id) >= head, "{conv}: newest page behind the head");
                    seen[i] = head;
                    reads += 1;
                }
            }
            reads
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    assert_eq!(store.heads(&convs).await.unwrap(), vec![per_conv; convs.len()]);
}
