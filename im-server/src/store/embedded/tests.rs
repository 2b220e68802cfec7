use super::record::MsgOut;
use super::*;
use crate::store::conformance;
use crate::store::ReadStore;

fn temp_store() -> (tempfile::TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("im.redb")).unwrap();
    (dir, Arc::new(store))
}

pub(super) fn new_msg(conv: ConversationId, from: u64, cmid: &str) -> NewMessage {
    NewMessage {
        conv,
        from: UserId(from),
        cmid: ClientMsgId::new(cmid).unwrap(),
        body: cmid.into(),
        ts: 7,
        mentions: Vec::new(),
        kind: None,
        content: None,
        reply_to: None,
        target: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages() {
    let (_dir, store) = temp_store();
    conformance::messages(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads() {
    let (_dir, store) = temp_store();
    conformance::reads(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events() {
    let (_dir, store) = temp_store();
    crate::store::conformance_events::events(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn contacts() {
    let (_dir, store) = temp_store();
    crate::store::conformance_contacts::contacts(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn moderation() {
    let (_dir, store) = temp_store();
    crate::store::conformance_moderation::moderation(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn erasure() {
    let (_dir, store) = temp_store();
    crate::store::conformance_erasure::erasure(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn feed() {
    let (_dir, store) = temp_store();
    crate::store::conformance_feed::feed(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn feed_cursors_survive_reopening() {
    use crate::store::{Directory, FeedStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("im.redb");
    let group = {
        let store = EmbeddedStore::open(&path).unwrap();
        let owner = store.create_user("o", "x", 0).await.unwrap().id;
        let group = ConversationId::Group(store.create_group("g", owner, 0).await.unwrap().id);
        assert!(store.feed_start().await.unwrap());
        for cmid in ["a", "b", "c"] {
            store.append(new_msg(group, owner.0, cmid)).await.unwrap();
        }
        assert_eq!(store.feed_claim(group, "n", 0, 10).await.unwrap(), Some(0));
        assert!(store.feed_advance(group, "n", 2, 0).await.unwrap());
        store.flush().await.unwrap();
        group
    };
    let store = EmbeddedStore::open(&path).unwrap();
    assert!(!store.feed_start().await.unwrap(), "the start is remembered");
    let backlog = store.feed_backlog(10).await.unwrap();
    assert_eq!(backlog, vec![crate::store::FeedPosition { conv: group, delivered: 2, head: 3 }]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends() {
    let (_dir, store) = temp_store();
    conformance::concurrent_appends(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn directory() {
    let (_dir, store) = temp_store();
    conformance::directory(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions() {
    let (_dir, store) = temp_store();
    conformance::sessions(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_keeps_everything_and_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("im.redb");
    let conv = ConversationId::Group(GroupId(1));
    let session = Session { id: "5e55".into(), user: UserId(1), created_at: 1, expires_at: 1000 };
    let (alice, bob, group, room);
    {
        let s = EmbeddedStore::open(&path).unwrap();
        alice = s.create_user("alice", "ha", 1).await.unwrap();
        bob = s.create_user("bob", "hb", 2).await.unwrap();
        group = s.create_group("team", alice.id, 3).await.unwrap();
        assert!(s.add_member(group.id, bob.id, Role::Admin, 10).await.unwrap());
        room = s.create_room("lobby", bob.id, 4).await.unwrap();
        assert!(s.join_room(room.id, alice.id).await.unwrap());
        s.add_direct(alice.id, bob.id).await.unwrap();
        s.create(&session).await.unwrap();
        for i in 1..=3 {
            s.append(new_msg(conv, 1, &format!("m{i}"))).await.unwrap();
        }
        s.flush().await.unwrap();
    }
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(s.user_by_name("bob").await.unwrap(), Some(bob.clone()));
    assert_eq!(s.group(group.id).await.unwrap(), Some(group.clone()));
    let members =
        vec![Member { user: alice.id, role: Role::Owner }, Member { user: bob.id, role: Role::Admin }];
    assert_eq!(s.members(group.id).await.unwrap(), members);
    assert_eq!(s.groups_of(bob.id).await.unwrap(), vec![group.id]);
    assert_eq!(s.room(room.id).await.unwrap(), Some(room.clone()));
    assert_eq!(s.rooms_of(alice.id).await.unwrap(), vec![room.id]);
    assert!(s.in_room(room.id, alice.id).await.unwrap());
    assert_eq!(s.directs_of(bob.id).await.unwrap(), vec![alice.id]);
    assert_eq!(s.get("5e55").await.unwrap(), Some(session));
    assert_eq!(s.heads(&[conv]).await.unwrap(), vec![3]);
    let stored = s.after(conv, 0, 10).await.unwrap();
    assert_eq!(stored.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["m1", "m2", "m3"]);
    // Idempotency keys survived; ids and counters continue without reuse.
    let dup = s.append(new_msg(conv, 1, "m2")).await.unwrap();
    assert_eq!((dup.message.id, dup.duplicate), (2, true));
    assert_eq!(s.append(new_msg(conv, 1, "m4")).await.unwrap().message.id, 4);
    assert_eq!(s.create_user("carol", "hc", 5).await.unwrap().id, UserId(3));
    assert!(matches!(s.create_user("alice", "x", 5).await, Err(StoreError::Conflict)));
    assert_eq!(s.create_group("two", bob.id, 6).await.unwrap().id, GroupId(2));
    assert_eq!(s.create_room("two", bob.id, 7).await.unwrap().id, RoomId(2));
    assert_eq!(s.purge_expired(2000).await.unwrap(), 1);
    drop(s);
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.heads(&[conv]).await.unwrap(), vec![4]);
    assert_eq!(s.get("5e55").await.unwrap(), None);
}

/// The stored value of a plain text message from user 1 whose body is its cmid.
pub(super) fn logged_value(cmid: &str) -> Vec<u8> {
    serde_json::to_vec(&MsgOut {
        f: 1,
        c: cmid,
        b: cmid,
        t: 7,
        m: &[],
        k: None,
        x: None,
        r: None,
        g: None,
        e: None,
        v: None,
        a: &[],
        n: None,
    })
    .unwrap()
}

pub(super) fn job(op: Op) -> (Job, oneshot::Receiver<StoreResult<Reply>>) {
    let (reply, answer) = oneshot::channel();
    (Job { op, reply, _slot: None }, answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_request_does_not_disturb_its_batch() {
    let (dir, s) = temp_store();
    let g = s.create_group("g", UserId(1), 0).await.unwrap();
    let conv = ConversationId::Group(g.id);
    let user = |name: &str| Op::CreateUser { username: name.into(), password_hash: "h".into(), now: 0 };
    let (jobs, answers): (Vec<_>, Vec<_>) = [
        Op::Append(new_msg(conv, 1, "x1")),
        Op::AddMember { group: g.id, user: UserId(2), role: Role::Member, cap: 1 },
        Op::Append(new_msg(conv, 1, "x2")),
        Op::Append(new_msg(conv, 1, "x1")),
        user("alice"),
        user("alice"),
        Op::JoinRoom { room: RoomId(9), user: UserId(1) },
        Op::AddMember { group: GroupId(9), user: UserId(2), role: Role::Member, cap: 9 },
        Op::AddMember { group: g.id, user: UserId(3), role: Role::Member, cap: 2 },
        Op::Flush,
    ]
    .into_iter()
    .map(job)
    .unzip();
    // Exactly one transaction for all of them, as the writer would run it
    // (a second writer on the same database, with a log of its own).
    let (log, _) = MessageLog::open(&dir.path().join("other.log")).unwrap();
    let (second, _) = MessageLog::open(&dir.path().join("other.log2")).unwrap();
    Writer::new(s.db.clone(), [log, second], Arc::new(Visibility::default()), Default::default(), TAIL_AGE)
        .unwrap()
        .run_batch(jobs);
    let mut got = Vec::new();
    for a in answers {
        got.push(a.await.unwrap());
    }
    let appended = |r: &StoreResult<Reply>| match r {
        Ok(Reply::Appended(a)) => (a.message.id, a.duplicate),
        other => panic!("not appended: {other:?}"),
    };
    assert_eq!(appended(&got[0]), (1, false));
    assert!(matches!(got[1], Err(StoreError::GroupFull)));
    assert_eq!(appended(&got[2]), (2, false));
    assert_eq!(appended(&got[3]), (1, true), "duplicate within one batch");
    assert!(matches!(&got[4], Ok(Reply::User(u)) if u.id == UserId(1)));
    assert!(matches!(got[5], Err(StoreError::Conflict)));
    assert!(matches!(got[6], Err(StoreError::NotFound)));
    assert!(matches!(got[7], Err(StoreError::NotFound)));
    assert!(matches!(got[8], Ok(Reply::Bool(true))));
    assert!(matches!(got[9], Ok(Reply::Unit)));
    // Committed: everything but the refused requests.
    assert_eq!(s.heads(&[conv]).await.unwrap(), vec![2]);
    let ids: Vec<_> = s.members(g.id).await.unwrap().iter().map(|m| m.user.0).collect();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(s.user_by_name("alice").await.unwrap().map(|u| u.id), Some(UserId(1)));
    assert_eq!(s.create_user("bob", "h", 0).await.unwrap().id, UserId(2));
}

/// A closed store holding message 1 of group 1: its directory, file,
/// conversation and the conversation's key.
pub(super) async fn closed_store_with_one_message(
) -> (tempfile::TempDir, std::path::PathBuf, ConversationId, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("im.redb");
    let conv = ConversationId::Group(GroupId(1));
    {
        let s = EmbeddedStore::open(&path).unwrap();
        s.append(new_msg(conv, 1, "m1")).await.unwrap();
    }
    (dir, path, conv, conv.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_replays_a_log_left_by_a_crash() {
    let (_dir, path, conv, c) = closed_store_with_one_message().await;
    // What a crash after two logged batches leaves: the log holds message 1
    // (already durable, as when a checkpoint's new epoch was not begun) and
    // messages 2 and 3, which redb lost with its non-durable commits; then
    // message 4, cut short by the crash (never acknowledged).
    let log_path = MessageLog::path_for(&path);
    {
        let (mut log, old) = MessageLog::open(&log_path).unwrap();
        assert!(old.is_empty(), "a clean shutdown leaves an empty log");
        for (id, cmid) in [(1, "m1"), (2, "m2"), (3, "m3")] {
            let value = logged_value(cmid);
            log.push(&c, id, &value);
        }
        log.write().unwrap();
        let torn_at = 16 + log.len() as usize;
        let value = logged_value("m9");
        log.push(&c, 4, &value);
        log.write().unwrap();
        drop(log);
        let mut bytes = std::fs::read(&log_path).unwrap();
        bytes[torn_at + 20..torn_at + 30].fill(0);
        std::fs::write(&log_path, bytes).unwrap();
    }
    assert_eq!(EmbeddedStore::logged_appends(&path).unwrap(), 3);

    let s = EmbeddedStore::open(&path).unwrap();
    let stored = s.after(conv, 0, 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|m| (m.id, m.body.as_str())).collect::<Vec<_>>(),
        [(1, "m1"), (2, "m2"), (3, "m3")]
    );
    assert_eq!(EmbeddedStore::logged_appends(&path).unwrap(), 0, "replayed, and a new epoch begun");
    // Replay raises the sender's read id and indexes the sender, as the append did.
    assert_eq!(s.read_ids(UserId(1), &[conv]).await.unwrap(), vec![3]);
    let sent = s.message_erasure().unwrap().sent_by(UserId(1), None, 10).await.unwrap();
    assert_eq!(sent, vec![(conv, 1), (conv, 2), (conv, 3)]);
    // The replayed idempotency keys work; ids continue after the replay.
    let dup = s.append(new_msg(conv, 1, "m3")).await.unwrap();
    assert_eq!((dup.message.id, dup.duplicate), (3, true));
    assert_eq!(s.append(new_msg(conv, 1, "m4")).await.unwrap().message.id, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_that_does_not_match_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("im.redb");
    let conv = ConversationId::Group(GroupId(1));
    {
        let s = EmbeddedStore::open(&path).unwrap();
        s.append(new_msg(conv, 1, "m1")).await.unwrap();
    }
    let value = |cmid: &str| logged_value(cmid);
    let log_with = |records: &[(u64, &str)]| {
        let log_path = MessageLog::path_for(&path);
        std::fs::remove_file(&log_path).unwrap();
        let (mut log, _) = MessageLog::open(&log_path).unwrap();
        for (id, cmid) in records {
            log.push(&conv.to_string(), *id, &value(cmid));
        }
        log.write().unwrap();
    };
    // A gap: message 3 without 2.
    log_with(&[(3, "m3")]);
    let err = EmbeddedStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("does not follow"), "{err}");
    // Another message under a stored id.
    log_with(&[(1, "other")]);
    let err = EmbeddedStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("another message"), "{err}");
    // Nothing was changed by the refusals; the matching log opens.
    log_with(&[(1, "m1"), (2, "m2")]);
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.heads(&[conv]).await.unwrap(), vec![2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_marks_become_durable_with_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("im.redb");
    let conv = ConversationId::Group(GroupId(1));
    {
        let s = EmbeddedStore::open(&path).unwrap();
        for i in 1..=3 {
            s.append(new_msg(conv, 1, &format!("m{i}"))).await.unwrap();
        }
        let mark = s.mark_read(UserId(2), conv, Some("phone"), 2).await.unwrap();
        assert_eq!(mark, ReadMark { read: 2, raised: true });
        // Left to the idle checkpoint, not to the shutdown's.
        let deadline = std::time::Instant::now() + CHECKPOINT_INTERVAL * 10;
        while EmbeddedStore::logged_appends(&path).unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint");
            tokio::time::sleep(CHECKPOINT_INTERVAL / 5).await;
        }
        // A batch of only a read mark is checkpointed too — not at once
        // (a copy taken right away lacks it), but within the interval.
        s.mark_read(UserId(2), conv, Some("laptop"), 3).await.unwrap();
        std::fs::copy(&path, dir.path().join("early.redb")).unwrap();
        tokio::time::sleep(CHECKPOINT_INTERVAL * 3).await;
        // What a crash now would keep: the database file as it is on disk.
        std::fs::copy(&path, dir.path().join("copy.redb")).unwrap();
    }
    let early = EmbeddedStore::open(dir.path().join("early.redb")).unwrap();
    assert_eq!(
        early.read_ids(UserId(2), &[conv]).await.unwrap(),
        vec![2],
        "not durable before the checkpoint"
    );
    drop(early);
    let s = EmbeddedStore::open(dir.path().join("copy.redb")).unwrap();
    assert_eq!(s.read_ids(UserId(2), &[conv]).await.unwrap(), vec![3]);
    assert_eq!(s.read_ids(UserId(1), &[conv]).await.unwrap(), vec![3]);
    assert_eq!(s.device_reads(UserId(2), conv).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn logged_appends_are_checkpointed_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("im.redb");
    let s = EmbeddedStore::open(&path).unwrap();
    let conv = ConversationId::Room(RoomId(1));
    for i in 0..5 {
        s.append(new_msg(conv, 1, &format!("m{i}"))).await.unwrap();
    }
    assert_eq!(EmbeddedStore::logged_appends(&path).unwrap(), 5, "appends go to the log first");
    let deadline = std::time::Instant::now() + CHECKPOINT_INTERVAL * 10;
    while EmbeddedStore::logged_appends(&path).unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint within {:?}", CHECKPOINT_INTERVAL * 10);
        tokio::time::sleep(CHECKPOINT_INTERVAL / 5).await;
    }
    assert_eq!(s.heads(&[conv]).await.unwrap(), vec![5]);
}

/// `cargo test -p im-server --release --lib append_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, not a check"]
async fn append_throughput() {
    const TASKS: u64 = 64;
    const EACH: u64 = 500;
    let (_dir, s) = temp_store();
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let conv = ConversationId::Room(RoomId(t + 1));
                for i in 0..EACH {
                    s.append(new_msg(conv, t + 1, &format!("m{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{} appends in {secs:.2}s: {:.0}/s", TASKS * EACH, (TASKS * EACH) as f64 / secs);
}

/// Latency of one append (with the two membership reads a group send
/// makes) at about 400 sends/s, checkpoints included:
/// `cargo test -p im-server --release --lib append_latency_at_low_rate -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, not a check"]
async fn append_latency_at_low_rate() {
    let (_dir, s) = temp_store();
    let conv = ConversationId::Group(GroupId(1));
    let g = s.create_group("g", UserId(1), 0).await.unwrap();
    for u in 2..500 {
        s.add_member(g.id, UserId(u), Role::Member, 500).await.unwrap();
    }
    let mut lat = Vec::new();
    for i in 0..1000 {
        let start = std::time::Instant::now();
        s.member_role(g.id, UserId(7)).await.unwrap();
        assert_eq!(s.members(g.id).await.unwrap().len(), 499);
        let read = start.elapsed();
        s.append(new_msg(conv, 1, &format!("m{i}"))).await.unwrap();
        lat.push(start.elapsed());
        if start.elapsed() > std::time::Duration::from_millis(20) {
            println!("slow #{i}: reads {read:?}, total {:?}", start.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let mut sorted = lat.clone();
    sorted.sort();
    println!("p50 {:?} p99 {:?} max {:?}", sorted[500], sorted[990], sorted[999]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_before_read_state_starts_at_the_heads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("im.redb");
    let (alice, bob) = (UserId(1), UserId(2));
    let (g, d) = (ConversationId::Group(GroupId(1)), ConversationId::direct(alice, bob));
    {
        let s = EmbeddedStore::open(&path).unwrap();
        s.create_user("alice", "h", 0).await.unwrap();
        s.create_user("bob", "h", 0).await.unwrap();
        let group = s.create_group("g", alice, 0).await.unwrap();
        s.add_member(group.id, bob, crate::model::Role::Member, 10).await.unwrap();
        s.add_direct(alice, bob).await.unwrap();
        for i in 0..3 {
            s.append(new_msg(g, 1, &format!("g{i}"))).await.unwrap();
            s.append(new_msg(d, 1, &format!("d{i}"))).await.unwrap();
        }
    }
    // What a file of an older version looks like: no read-state table.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(reads::READS).unwrap();
        txn.commit().unwrap();
    }
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.read_ids(bob, &[g, d]).await.unwrap(), vec![3, 3]);
    assert_eq!(s.read_ids(alice, &[g, d]).await.unwrap(), vec![3, 3]);
    // Opening again does not backfill over real read state.
    s.append(new_msg(g, 1, "g3")).await.unwrap();
    drop(s);
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.read_ids(bob, &[g]).await.unwrap(), vec![3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_before_the_sender_index_is_indexed_once() {
    use redb::TableHandle as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("im.redb");
    let (alice, bob) = (UserId(1), UserId(2));
    let (g, d) = (ConversationId::Group(GroupId(1)), ConversationId::direct(alice, bob));
    {
        let s = EmbeddedStore::open(&path).unwrap();
        for i in 0..3 {
            s.append(new_msg(g, alice.0, &format!("g{i}"))).await.unwrap();
            s.append(new_msg(d, bob.0, &format!("d{i}"))).await.unwrap();
        }
        s.append(new_msg(d, alice.0, "d-alice")).await.unwrap();
    }
    // What a file of an older version looks like: no index, no marker, and
    // (written by the version that indexed every message) the per-message
    // index with its marker.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(erasure::SENDER_CONVS).unwrap());
        let mut counters = txn.open_table(COUNTERS).unwrap();
        assert!(counters.remove(erasure::INDEXED).unwrap().is_some());
        counters.insert(erasure::OLD_INDEXED, 1).unwrap();
        drop(counters);
        let mut old = txn.open_table(erasure::OLD_SENT_BY).unwrap();
        old.insert((alice.0, g.to_string().as_str(), 1), ()).unwrap();
        drop(old);
        txn.commit().unwrap();
    }
    let s = EmbeddedStore::open(&path).unwrap();
    let e = s.message_erasure().unwrap();
    assert_eq!(e.sent_by(alice, None, 10).await.unwrap(), vec![(d, 4), (g, 1), (g, 2), (g, 3)]);
    assert_eq!(e.sent_by(bob, None, 10).await.unwrap(), vec![(d, 1), (d, 2), (d, 3)]);
    assert_eq!(e.sent_by(alice, Some((d, 4)), 2).await.unwrap(), vec![(g, 1), (g, 2)]);
    // A cursor past a conversation's end, or at the largest id, goes on with the next.
    assert_eq!(e.sent_by(alice, Some((d, 99)), 10).await.unwrap(), vec![(g, 1), (g, 2), (g, 3)]);
    assert_eq!(e.sent_by(alice, Some((d, u64::MAX)), 1).await.unwrap(), vec![(g, 1)]);
    assert_eq!(e.sent_by(alice, None, 0).await.unwrap(), vec![]);
    // New messages are indexed as they come.
    s.append(new_msg(g, bob.0, "g-bob")).await.unwrap();
    s.append(new_msg(g, alice.0, "g-alice")).await.unwrap();
    s.append(new_msg(g, bob.0, "g-bob-2")).await.unwrap();
    assert_eq!(e.sent_by(bob, Some((d, 3)), 10).await.unwrap(), vec![(g, 4), (g, 6)]);
    assert_eq!(e.sent_by(alice, Some((g, 3)), 10).await.unwrap(), vec![(g, 5)]);
    drop(s);
    // The per-message index and its marker are gone.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn.list_tables().unwrap().map(|t| t.name().to_owned()).collect();
        assert!(!names.iter().any(|n| n == "sent_by"), "{names:?}");
        assert!(names.iter().any(|n| n == "sender_convs"), "{names:?}");
        assert!(txn.open_table(COUNTERS).unwrap().get(erasure::OLD_INDEXED).unwrap().is_none());
    }
    // Indexed once: a later open does not scan the messages again (a row
    // taken out behind its back stays out).
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let mut index = txn.open_table(erasure::SENDER_CONVS).unwrap();
        assert!(index.remove((bob.0, g.to_string().as_str())).unwrap().is_some());
        drop(index);
        txn.commit().unwrap();
    }
    let s = EmbeddedStore::open(&path).unwrap();
    let e = s.message_erasure().unwrap();
    assert_eq!(e.sent_by(bob, None, 10).await.unwrap(), vec![(d, 1), (d, 2), (d, 3)]);
}

/// The writer's memory of the sender index: a pair is written once, is
/// trusted only after its batch committed, and a failed batch's pairs are
/// forgotten (so the next batch writes them again).
#[test]
fn the_sender_memory_trusts_only_committed_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("im.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    tables::create_tables(&txn).unwrap();
    txn.commit().unwrap();
    let mut senders = erasure::SenderConvs::remembering(5);
    let has = |db: &redb::Database, pair: (u64, &str)| {
        let txn = db.begin_read().unwrap();
        let index = txn.open_table(erasure::SENDER_CONVS).unwrap();
        index.get(pair).unwrap().is_some()
    };
    // A batch that fails: its pair is not in the table, nor remembered.
    let txn = db.begin_write().unwrap();
    senders.note(&mut txn.open_table(erasure::SENDER_CONVS).unwrap(), 1, "g:1").unwrap();
    txn.abort().unwrap();
    senders.discard();
    assert!(!has(&db, (1, "g:1")));
    // The next batch writes it; once committed, it is remembered.
    let txn = db.begin_write().unwrap();
    senders.note(&mut txn.open_table(erasure::SENDER_CONVS).unwrap(), 1, "g:1").unwrap();
    txn.commit().unwrap();
    senders.committed();
    assert!(has(&db, (1, "g:1")));
    // Remembered: the writer no longer looks at the table for it (shown by
    // taking the row out behind its back), but does for another pair.
    let txn = db.begin_write().unwrap();
    {
        let mut index = txn.open_table(erasure::SENDER_CONVS).unwrap();
        index.remove((1, "g:1")).unwrap();
        senders.note(&mut index, 1, "g:1").unwrap();
        senders.note(&mut index, 2, "g:1").unwrap();
        senders.note(&mut index, 1, "r:1").unwrap();
    }
    txn.commit().unwrap();
    senders.committed();
    assert!(!has(&db, (1, "g:1")));
    assert!(has(&db, (2, "g:1")) && has(&db, (1, "r:1")));
    // Past its bound the memory starts over: the table is consulted again.
    let txn = db.begin_write().unwrap();
    {
        let mut index = txn.open_table(erasure::SENDER_CONVS).unwrap();
        for user in 0..3 {
            senders.note(&mut index, 1_000 + user, "r:2").unwrap();
        }
    }
    txn.commit().unwrap();
    senders.committed();
    let txn = db.begin_write().unwrap();
    senders.note(&mut txn.open_table(erasure::SENDER_CONVS).unwrap(), 1, "g:1").unwrap();
    txn.commit().unwrap();
    senders.committed();
    assert!(has(&db, (1, "g:1")), "forgotten, so written again");
}
