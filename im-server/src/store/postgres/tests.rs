//! Tests of [`PgStore`] against a real server: the conformance suite plus
//! multi-node, migration and failure behaviour. Each test gets its own fresh
//! schema, dropped afterwards (also when the test fails).
//!
//! The server is `IM_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is unreachable the
//! tests print `SKIPPED` and pass, unless `IM_REQUIRE_SERVICES=1`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use im_protocol::{ClientMsgId, ConversationId, GroupId, MessageId, RoomId, UserId};
use tokio_postgres::NoTls;

use super::migrations::{self, MIGRATIONS};
use super::{PgOptions, PgStore};
use crate::model::{Member, Role, Session};
use crate::store::{conformance, Directory, MessageStore, NewMessage, ReadStore, SessionStore, StoreError};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A unique, not yet created schema on the test server; dropped with
/// `DROP SCHEMA … CASCADE` when this is dropped.
pub(crate) struct TestDb {
    url: String,
    schema: String,
}

/// A fresh schema on the test server, or `None` (after a loud `SKIPPED`)
/// when the server is unreachable and `IM_REQUIRE_SERVICES` is not `1`.
pub(crate) async fn test_db() -> Option<TestDb> {
    let url = std::env::var("IM_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let reachable =
        match tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(&url, NoTls)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(super::describe(&e)),
            Err(_) => Err("timed out after 5 s".to_owned()),
        };
    if let Err(why) = reachable {
        if std::env::var("IM_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("PostgreSQL not reachable at {url} ({why}) and IM_REQUIRE_SERVICES=1");
        }
        eprintln!("SKIPPED: PostgreSQL not reachable at {url} ({why}); set IM_POSTGRES_URL, or IM_REQUIRE_SERVICES=1 to fail instead");
        return None;
    }
    Some(TestDb { url, schema: format!("im_test_{:016x}", rand::random::<u64>()) })
}

/// [`test_db`] with a store connected to it.
pub(crate) async fn test_pg() -> Option<(TestDb, PgStore)> {
    let db = test_db().await?;
    let store = db.store(8).await;
    Some((db, store))
}

impl TestDb {
    fn options(&self, pool_size: usize) -> PgOptions {
        PgOptions { pool_size, schema: Some(self.schema.clone()) }
    }

    /// A new store (a new pool, as another node would have) on this schema.
    async fn store(&self, pool_size: usize) -> PgStore {
        PgStore::connect(&self.url, self.options(pool_size)).await.expect("connect to the test schema")
    }

    /// A plain connection, for looking at tables directly.
    async fn raw(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.expect("raw connection");
        tokio::spawn(conn);
        client
    }

    async fn migration_rows(&self) -> Vec<(i32, String)> {
        let sql = format!(
            "SELECT version, applied_at::text FROM \"{}\".im_schema_migrations ORDER BY 1",
            self.schema
        );
        self.raw().await.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Its own thread and runtime: this may run inside (or after) the test's runtime, or while unwinding.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
                tokio::spawn(conn);
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test schema {}: {dropped:?}", self.schema);
        }
    }
}

fn msg(conv: ConversationId, from: u64, cmid: &str, body: &str) -> NewMessage {
    NewMessage {
        conv,
        from: UserId(from),
        cmid: ClientMsgId::new(cmid).unwrap(),
        body: body.into(),
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
    let Some((_db, store)) = test_pg().await else { return };
    conformance::messages(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads() {
    let Some((_db, store)) = test_pg().await else { return };
    conformance::reads(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events() {
    let Some((_db, store)) = test_pg().await else { return };
    crate::store::conformance_events::events(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn contacts() {
    let Some((_db, store)) = test_pg().await else { return };
    crate::store::conformance_contacts::contacts(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn moderation() {
    let Some((_db, store)) = test_pg().await else { return };
    crate::store::conformance_moderation::moderation(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn erasure() {
    let Some((_db, store)) = test_pg().await else { return };
    crate::store::conformance_erasure::erasure(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn feed() {
    let Some((_db, store)) = test_pg().await else { return };
    crate::store::conformance_feed::feed(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends() {
    let Some((_db, store)) = test_pg().await else { return };
    conformance::concurrent_appends(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn directory() {
    let Some((_db, store)) = test_pg().await else { return };
    conformance::directory(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions() {
    let Some((_db, store)) = test_pg().await else { return };
    conformance::sessions(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_counters() {
    let Some((db, store)) = test_pg().await else { return };
    let other = db.store(2).await;
    conformance::shared_counters(Arc::new(store), Arc::new(other)).await;
}

/// Two pools (two nodes) appending to one conversation at once: ids are
/// exactly 1..=N, each sender's messages keep their order, and a message
/// resent through both nodes at once is stored once.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_append_to_one_conversation_without_gaps() {
    const TASKS_PER_NODE: u64 = 12;
    const EACH: u64 = 10;
    let Some((db, node_a)) = test_pg().await else { return };
    let node_b = db.store(8).await;
    let conv = ConversationId::Room(RoomId(5));
    let mut handles = Vec::new();
    for (n, node) in [node_a.clone(), node_b.clone()].into_iter().enumerate() {
        for t in 0..TASKS_PER_NODE {
            let node = node.clone();
            let sender = n as u64 * 100 + t + 1;
            handles.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..EACH {
                    let a = node.append(msg(conv, sender, &format!("m{i}"), &format!("{i}"))).await.unwrap();
                    assert!(!a.duplicate);
                    ids.push(a.message.id);
                }
                ids
            }));
        }
    }
    let mut all = Vec::new();
    for h in handles {
        let ids = h.await.unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "one sender's ids increase: {ids:?}");
        all.extend(ids);
    }
    all.sort_unstable();
    let n = 2 * TASKS_PER_NODE * EACH;
    assert_eq!(all, (1..=n).collect::<Vec<MessageId>>());
    assert_eq!(node_a.heads(&[conv]).await.unwrap(), vec![n]);
    assert_eq!(node_b.after(conv, 0, 10_000).await.unwrap().len() as u64, n);

    // One message resent ten times through each node concurrently.
    let resends: Vec<_> = (0..20)
        .map(|i| {
            let node = if i % 2 == 0 { node_a.clone() } else { node_b.clone() };
            tokio::spawn(async move { node.append(msg(conv, 999, "same", "once")).await.unwrap() })
        })
        .collect();
    let mut fresh = 0;
    let mut ids = BTreeSet::new();
    for h in resends {
        let a = h.await.unwrap();
        fresh += usize::from(!a.duplicate);
        ids.insert(a.message.id);
    }
    assert_eq!((fresh, ids), (1, BTreeSet::from([n + 1])));
    assert_eq!(node_b.heads(&[conv]).await.unwrap(), vec![n + 1]);
}

/// Connecting again runs no migration and changes no migration record.
#[tokio::test(flavor = "multi_thread")]
async fn migrations_twice_are_a_no_op() {
    let Some((db, store)) = test_pg().await else { return };
    let first = db.migration_rows().await;
    assert_eq!(
        first.iter().map(|r| r.0).collect::<Vec<_>>(),
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    store.create_user("alice", "h", 1).await.unwrap();

    let again = db.store(2).await;
    assert_eq!(db.migration_rows().await, first);
    let mut raw = db.raw().await;
    let quoted = format!("\"{}\"", db.schema);
    assert_eq!(migrations::run(&mut raw, &db.schema, &quoted).await.unwrap(), Vec::<i32>::new());
    assert_eq!(db.migration_rows().await, first);
    assert_eq!(again.user_by_name("alice").await.unwrap().map(|u| u.id), Some(UserId(1)));
}

/// Several nodes starting at once on a schema that does not exist yet: all
/// connect, and each migration is applied exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_starting_at_once_migrate_once() {
    let Some(db) = test_db().await else { return };
    let db = Arc::new(db);
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { PgStore::connect(&db.url, db.options(1)).await })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap().expect("every node connects"));
    }
    assert_eq!(db.migration_rows().await.len(), MIGRATIONS.len());
    let alice = stores[0].create_user("alice", "h", 1).await.unwrap();
    assert_eq!(stores[5].user(alice.id).await.unwrap(), Some(alice));
}

/// Dropping every pool and connecting again keeps everything, and ids continue.
#[tokio::test(flavor = "multi_thread")]
async fn reopen_keeps_everything_and_ids_continue() {
    let Some((db, s)) = test_pg().await else { return };
    let conv = ConversationId::Group(GroupId(1));
    let session = Session { id: "5e55".into(), user: UserId(1), created_at: 1, expires_at: 1000 };
    let alice = s.create_user("alice", "ha", 1).await.unwrap();
    let bob = s.create_user("bob", "hb", 2).await.unwrap();
    let group = s.create_group("team", alice.id, 3).await.unwrap();
    assert!(s.add_member(group.id, bob.id, Role::Admin, 10).await.unwrap());
    let room = s.create_room("lobby", bob.id, 4).await.unwrap();
    assert!(s.join_room(room.id, alice.id).await.unwrap());
    s.add_direct(alice.id, bob.id).await.unwrap();
    s.create(&session).await.unwrap();
    for i in 1..=3 {
        s.append(msg(conv, 1, &format!("m{i}"), "x")).await.unwrap();
    }
    s.flush().await.unwrap();
    drop(s);

    let s = db.store(2).await;
    assert_eq!(s.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(s.user_by_name("bob").await.unwrap(), Some(bob.clone()));
    assert_eq!(s.group(group.id).await.unwrap(), Some(group.clone()));
    let members =
        vec![Member { user: alice.id, role: Role::Owner }, Member { user: bob.id, role: Role::Admin }];
    assert_eq!(s.members(group.id).await.unwrap(), members);
    assert_eq!(s.groups_of(bob.id).await.unwrap(), vec![group.id]);
    assert_eq!(s.room(room.id).await.unwrap(), Some(room.clone()));
    assert_eq!(s.rooms_of(alice.id).await.unwrap(), vec![room.id]);
    assert_eq!(s.directs_of(bob.id).await.unwrap(), vec![alice.id]);
    assert_eq!(s.get("5e55").await.unwrap(), Some(session));
    assert_eq!(s.heads(&[conv]).await.unwrap(), vec![3]);
    let dup = s.append(msg(conv, 1, "m2", "again")).await.unwrap();
    assert_eq!((dup.message.id, dup.duplicate), (2, true));
    assert_eq!(s.append(msg(conv, 1, "m4", "x")).await.unwrap().message.id, 4);
    assert_eq!(s.create_user("carol", "hc", 5).await.unwrap().id, UserId(3));
    assert_eq!(s.create_group("g2", bob.id, 6).await.unwrap().id, GroupId(2));
    assert_eq!(s.create_room("r2", bob.id, 7).await.unwrap().id, RoomId(2));
}

/// A statement the server refuses (text cannot hold U+0000) is a `Backend`
/// error that stores nothing and consumes no id.
#[tokio::test(flavor = "multi_thread")]
async fn refused_writes_leave_no_gap() {
    let Some((_db, s)) = test_pg().await else { return };
    let conv = ConversationId::direct(UserId(1), UserId(2));
    assert_eq!(s.append(msg(conv, 1, "a", "ok")).await.unwrap().message.id, 1);
    let err = s.append(msg(conv, 1, "b", "nul\0byte")).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert_eq!(s.heads(&[conv]).await.unwrap(), vec![1]);
    assert_eq!(s.append(msg(conv, 1, "b", "fixed")).await.unwrap().message.id, 2);

    assert!(matches!(s.create_user("bad\0name", "h", 1).await, Err(StoreError::Backend(_))));
    assert!(matches!(s.create_group("bad\0", UserId(1), 1).await, Err(StoreError::Backend(_))));
    assert!(matches!(s.create_room("bad\0", UserId(1), 1).await, Err(StoreError::Backend(_))));
    assert_eq!(s.create_user("fine", "h", 1).await.unwrap().id, UserId(1));
    assert_eq!(s.create_group("fine", UserId(1), 1).await.unwrap().id, GroupId(1));
    assert_eq!(s.create_room("fine", UserId(1), 1).await.unwrap().id, RoomId(1));
}

/// Concurrent adds through two nodes never push a group past its cap, and
/// concurrent registrations of one name make one user.
#[tokio::test(flavor = "multi_thread")]
async fn caps_and_unique_names_hold_under_concurrency() {
    const CAP: usize = 10;
    let Some((db, a)) = test_pg().await else { return };
    let b = db.store(8).await;
    let g = a.create_group("team", UserId(1), 1).await.unwrap();
    let adds: Vec<_> = (0..40u64)
        .map(|i| {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { node.add_member(g.id, UserId(100 + i), Role::Member, CAP).await })
        })
        .collect();
    let (mut added, mut full) = (0, 0);
    for h in adds {
        match h.await.unwrap() {
            Ok(true) => added += 1,
            Err(StoreError::GroupFull) => full += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((added, full), (CAP - 1, 40 - (CAP - 1)));
    assert_eq!(b.members(g.id).await.unwrap().len(), CAP);

    let regs: Vec<_> = (0..10)
        .map(|i| {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { node.create_user("same", &format!("h{i}"), i).await })
        })
        .collect();
    let mut ok = 0;
    for h in regs {
        match h.await.unwrap() {
            Ok(u) => {
                ok += 1;
                assert_eq!(u.id, UserId(1));
            }
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(a.create_user("next", "h", 1).await.unwrap().id, UserId(2));
}

/// Bad settings and an unreachable server are `Backend` errors, not panics.
#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_and_unreachable_server_are_errors() {
    let bad = |e: Result<PgStore, StoreError>| matches!(e, Err(StoreError::Backend(_)));
    assert!(bad(PgStore::connect("postgres://postgres@127.0.0.1:1/test", PgOptions::default()).await));
    assert!(bad(PgStore::connect("not a url ://", PgOptions::default()).await));
    for schema in ["", "1abc", "a-b", "a\"b", "a b", &"x".repeat(64)] {
        let opts = PgOptions { pool_size: 1, schema: Some(schema.to_owned()) };
        assert!(bad(PgStore::connect(DEFAULT_URL, opts).await), "schema {schema:?}");
    }
}

/// Ids beyond `i64::MAX` match nothing and never overflow a query.
#[tokio::test(flavor = "multi_thread")]
async fn huge_ids_match_nothing() {
    let Some((_db, s)) = test_pg().await else { return };
    s.create_user("alice", "h", 1).await.unwrap();
    assert_eq!(s.user(UserId(u64::MAX)).await.unwrap(), None);
    assert_eq!(s.group(GroupId(u64::MAX)).await.unwrap(), None);
    assert!(matches!(
        s.add_member(GroupId(u64::MAX), UserId(1), Role::Member, 5).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(s.join_room(RoomId(1 << 63), UserId(1)).await, Err(StoreError::NotFound)));
    assert!(s.groups_of(UserId(u64::MAX)).await.unwrap().is_empty());
    let sess = Session { id: "ff".into(), user: UserId(u64::MAX), created_at: 0, expires_at: u64::MAX };
    s.create(&sess).await.unwrap();
    assert_eq!(s.get("ff").await.unwrap().map(|x| x.user), Some(UserId(u64::MAX)));
    assert_eq!(s.purge_expired(u64::MAX).await.unwrap(), 0, "a session that never expires stays");
}

/// A schema written before read state (version 1) gets read ids at every
/// conversation's head for its members when migrated, not a backlog.
#[tokio::test(flavor = "multi_thread")]
async fn upgrading_starts_read_state_at_the_heads() {
    let Some(db) = test_db().await else { return };
    let raw = db.raw().await;
    let quoted = format!("\"{}\"", db.schema);
    let v1 = &MIGRATIONS[0];
    assert_eq!(v1.version, 1);
    raw.batch_execute(&format!(
        "CREATE SCHEMA {quoted};
         CREATE TABLE {quoted}.im_schema_migrations (
             version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
         {}
         INSERT INTO {quoted}.im_schema_migrations (version, name) VALUES (1, 'initial schema');
         INSERT INTO {quoted}.groups VALUES (1, 'g', 1, 0);
         INSERT INTO {quoted}.group_members VALUES (1, 1, 'owner'), (1, 2, 'member');
         INSERT INTO {quoted}.rooms VALUES (7, 'r', 1, 0);
         INSERT INTO {quoted}.room_members VALUES (7, 3);
         INSERT INTO {quoted}.directs VALUES (2, 5), (5, 2);
         INSERT INTO {quoted}.conversations VALUES ('g:1', 12), ('r:7', 40), ('d:2:5', 3);",
        super::q(v1.sql, &quoted)
    ))
    .await
    .unwrap();
    let store = db.store(2).await;
    let (g, r, d) = (
        ConversationId::Group(GroupId(1)),
        ConversationId::Room(RoomId(7)),
        ConversationId::direct(UserId(2), UserId(5)),
    );
    assert_eq!(store.read_ids(UserId(1), &[g, r, d]).await.unwrap(), vec![12, 0, 0]);
    assert_eq!(store.read_ids(UserId(2), &[g, r, d]).await.unwrap(), vec![12, 0, 3]);
    assert_eq!(store.read_ids(UserId(3), &[g, r, d]).await.unwrap(), vec![0, 40, 0]);
    assert_eq!(store.read_ids(UserId(5), &[d]).await.unwrap(), vec![3]);
}

/// A schema from before the sender index (version 11) gets it when
/// migrated, over the messages already stored.
#[tokio::test(flavor = "multi_thread")]
async fn upgrading_indexes_stored_messages_by_sender() {
    let Some(db) = test_db().await else { return };
    let quoted = format!("\"{}\"", db.schema);
    let before: Vec<_> = MIGRATIONS.iter().take_while(|m| m.version < 12).collect();
    assert_eq!(before.len(), 11);
    let mut sql = format!(
        "CREATE SCHEMA {quoted}; CREATE TABLE {quoted}.im_schema_migrations (
        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());"
    );
    for m in &before {
        sql.push_str(&super::q(m.sql, &quoted));
        sql.push_str(&format!(
            ";INSERT INTO {quoted}.im_schema_migrations VALUES ({}, '{}');",
            m.version, m.name
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO {quoted}.messages (conv, id, sender_id, cmid, body, ts)
         VALUES ('r:2', 1, 7, 'a', 'x', 0), ('g:1', 1, 8, 'b', 'x', 0), ('g:1', 2, 7, 'c', 'x', 0);"
    ));
    db.raw().await.batch_execute(&sql).await.unwrap();
    let store = db.store(2).await;
    let indexes: Vec<String> = db
        .raw()
        .await
        .query("SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 ORDER BY 1", &[&db.schema])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(indexes.iter().any(|i| i == "messages_by_sender"), "{indexes:?}");
    assert!(indexes.iter().any(|i| i == "sanctions_by_user"), "{indexes:?}");
    let e = store.message_erasure().unwrap();
    let (g, r) = (ConversationId::Group(GroupId(1)), ConversationId::Room(RoomId(2)));
    assert_eq!(e.sent_by(UserId(7), None, 10).await.unwrap(), vec![(g, 2), (r, 1)]);
    assert_eq!(e.sent_by(UserId(7), Some((g, 2)), 10).await.unwrap(), vec![(r, 1)]);
}
