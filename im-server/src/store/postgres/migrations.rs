//! Versioned schema migrations, run by [`super::PgStore::connect`].
//!
//! Each migration runs once per schema, in version order, and is recorded in
//! `im_schema_migrations`. All pending migrations run in one transaction that
//! first takes a transaction-scoped advisory lock keyed by the schema name,
//! so several nodes starting at once apply them exactly once (the others
//! wait, then find nothing to do), and a failed migration leaves nothing
//! behind. Migrations are append-only: never edit one that has shipped, add
//! the next version instead.

use tokio_postgres::Client;

use super::{db_err, describe, q};
use crate::store::{StoreError, StoreResult};

/// One schema change. `{S}` in `sql` stands for the quoted schema name.
pub(super) struct Migration {
    /// Applied in ascending order; never reused.
    pub(super) version: i32,
    /// A short description, recorded with the version.
    pub(super) name: &'static str,
    /// One or more statements.
    pub(super) sql: &'static str,
}

/// Every migration, in version order.
///
/// Times are `bigint` milliseconds since the Unix epoch (the model's `u64`,
/// saturated at `i64::MAX`). User, group and room ids come from
/// `im_counters` rather than sequences, so that a refused insert (a taken
/// username) consumes no id, as the trait contract asks.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sql: r"
CREATE TABLE {S}.im_counters (
    name    text PRIMARY KEY,
    last_id bigint NOT NULL
);
INSERT INTO {S}.im_counters (name, last_id) VALUES ('users', 0), ('groups', 0), ('rooms', 0);

CREATE TABLE {S}.users (
    id            bigint PRIMARY KEY,
    username      text   NOT NULL CONSTRAINT users_username_key UNIQUE,
    password_hash text   NOT NULL,
    created_at    bigint NOT NULL
);

CREATE TABLE {S}.groups (
    id         bigint PRIMARY KEY,
    name       text   NOT NULL,
    owner_id   bigint NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE {S}.group_members (
    group_id bigint NOT NULL REFERENCES {S}.groups (id) ON DELETE CASCADE,
    user_id  bigint NOT NULL,
    role     text   NOT NULL CHECK (role IN ('member', 'admin', 'owner')),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON {S}.group_members (user_id, group_id);

CREATE TABLE {S}.rooms (
    id         bigint PRIMARY KEY,
    name       text   NOT NULL,
    created_by bigint NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE {S}.room_members (
    room_id bigint NOT NULL REFERENCES {S}.rooms (id) ON DELETE CASCADE,
    user_id bigint NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_by_user ON {S}.room_members (user_id, room_id);

-- Both directions are stored, so directs_of is one primary-key range scan.
CREATE TABLE {S}.directs (
    user_id bigint NOT NULL,
    peer_id bigint NOT NULL,
    PRIMARY KEY (user_id, peer_id)
);

CREATE TABLE {S}.sessions (
    id         text   PRIMARY KEY,
    user_id    bigint NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX sessions_by_expiry ON {S}.sessions (expires_at);

-- The head of each conversation; its row lock serializes appends to it.
CREATE TABLE {S}.conversations (
    conv    text   PRIMARY KEY,
    last_id bigint NOT NULL
);

CREATE TABLE {S}.messages (
    conv      text   NOT NULL,
    id        bigint NOT NULL,
    sender_id bigint NOT NULL,
    cmid      text   NOT NULL,
    body      text   NOT NULL,
    ts        bigint NOT NULL,
    PRIMARY KEY (conv, id),
    CONSTRAINT messages_idempotency_key UNIQUE (conv, sender_id, cmid)
);
",
    },
    Migration {
        version: 2,
        name: "read state",
        sql: r"
-- The user's read id per conversation (only ever raised: GREATEST).
CREATE TABLE {S}.read_state (
    user_id bigint NOT NULL,
    conv    text   NOT NULL,
    read_id bigint NOT NULL,
    PRIMARY KEY (user_id, conv)
);

-- Conversations that existed before read state: everything up to now
-- counts as read for their members (not as a sudden backlog).
INSERT INTO {S}.read_state (user_id, conv, read_id)
SELECT m.user_id, c.conv, c.last_id
  FROM {S}.group_members m JOIN {S}.conversations c ON c.conv = 'g:' || m.group_id
UNION ALL
SELECT m.user_id, c.conv, c.last_id
  FROM {S}.room_members m JOIN {S}.conversations c ON c.conv = 'r:' || m.room_id
UNION ALL
SELECT d.user_id, c.conv, c.last_id
  FROM {S}.directs d
  JOIN {S}.conversations c
    ON c.conv = 'd:' || LEAST(d.user_id, d.peer_id) || ':' || GREATEST(d.user_id, d.peer_id)
ON CONFLICT DO NOTHING;

-- Each device's own report (at most MAX_DEVICE_READS per user and conversation).
CREATE TABLE {S}.device_reads (
    user_id bigint NOT NULL,
    conv    text   NOT NULL,
    device  text   NOT NULL,
    read_id bigint NOT NULL,
    PRIMARY KEY (user_id, conv, device)
);
",
    },
    Migration {
        version: 3,
        name: "receipts",
        sql: r"
-- The highest id that reached one of the user's devices (only ever raised).
ALTER TABLE {S}.read_state ADD COLUMN delivered_id bigint NOT NULL DEFAULT 0;

-- Users who do not show their read and delivered ids to others.
CREATE TABLE {S}.receipts_off (
    user_id bigint PRIMARY KEY
);
",
    },
    Migration {
        version: 4,
        name: "muted conversations",
        sql: r"
-- Pushes of the conversation are muted for the user until this time (ms; 0: not muted).
ALTER TABLE {S}.read_state ADD COLUMN muted_until bigint NOT NULL DEFAULT 0;
",
    },
    Migration {
        version: 5,
        name: "mentions",
        sql: r"
-- Users a message mentions (pushed even when they muted the conversation).
ALTER TABLE {S}.messages ADD COLUMN mentions bigint[] NOT NULL DEFAULT '{}';
",
    },
    Migration {
        version: 6,
        name: "structured content and replies",
        sql: r"
-- The kind ('text' for plain text), its content object as JSON text, and
-- the id of the message of the same conversation this one replies to.
ALTER TABLE {S}.messages ADD COLUMN kind text NOT NULL DEFAULT 'text';
ALTER TABLE {S}.messages ADD COLUMN content text;
ALTER TABLE {S}.messages ADD COLUMN reply_to bigint;
",
    },
    Migration {
        version: 7,
        name: "events: reactions, edits, recalls, countable ordinals",
        sql: r"
-- An event's target; a message's newest edit and its recall (event ids);
-- its reactions as a JSON array; and the number of countable (non-event)
-- messages up to it (NULL in rows stored before: all countable, so the id).
ALTER TABLE {S}.messages ADD COLUMN target bigint;
ALTER TABLE {S}.messages ADD COLUMN edited bigint;
ALTER TABLE {S}.messages ADD COLUMN recalled bigint;
ALTER TABLE {S}.messages ADD COLUMN reactions text;
ALTER TABLE {S}.messages ADD COLUMN countable bigint;
CREATE INDEX messages_by_target ON {S}.messages (conv, target) WHERE target IS NOT NULL;
-- Events stored per conversation, for the countable ordinal of the next.
ALTER TABLE {S}.conversations ADD COLUMN events bigint NOT NULL DEFAULT 0;
",
    },
    Migration {
        version: 8,
        name: "message feed cursors",
        sql: "
-- The durable message feed: the newest id delivered per conversation, and
-- which node delivers it until when (ms; a lapsed claim may be taken).
CREATE TABLE {S}.feed_cursors (
    conv       text   PRIMARY KEY,
    delivered  bigint NOT NULL DEFAULT 0,
    holder     text   NOT NULL DEFAULT '',
    held_until bigint NOT NULL DEFAULT 0
);
",
    },
    Migration {
        version: 9,
        name: "moderation",
        sql: "
-- Mutes and bans per (group or room, user); they outlive membership.
CREATE TABLE {S}.sanctions (
    conv        text    NOT NULL,
    user_id     bigint  NOT NULL,
    muted_until bigint  NOT NULL DEFAULT 0,
    banned      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (conv, user_id)
);
-- Room moderators are members; leaving ends it.
ALTER TABLE {S}.room_members ADD COLUMN moderator boolean NOT NULL DEFAULT false;
",
    },
    Migration {
        version: 10,
        name: "contacts and blocks",
        sql: "
-- Both sides of each contact relation: state from user_id's side
-- (requested, pending, accepted). Changes lock both users' rows.
CREATE TABLE {S}.contacts (
    user_id bigint NOT NULL,
    peer_id bigint NOT NULL,
    state   text   NOT NULL,
    since   bigint NOT NULL,
    PRIMARY KEY (user_id, peer_id)
);
CREATE TABLE {S}.blocks (
    user_id    bigint NOT NULL,
    blocked_id bigint NOT NULL,
    since      bigint NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
);
CREATE INDEX blocks_by_blocked ON {S}.blocks (blocked_id, user_id);
",
    },
    Migration {
        version: 11,
        name: "display names",
        sql: "ALTER TABLE {S}.users ADD COLUMN display_name text;",
    },
    Migration {
        version: 12,
        name: "erasure indexes",
        sql: "
-- What a user sent, in (conversation, id) order: erasure pages through it.
-- IF NOT EXISTS: an operator may build it beforehand, CONCURRENTLY (docs/deploy.md).
CREATE INDEX IF NOT EXISTS messages_by_sender ON {S}.messages (sender_id, conv, id);
-- A user's mutes and bans everywhere, removed when the user is erased.
CREATE INDEX IF NOT EXISTS sanctions_by_user ON {S}.sanctions (user_id);
",
    },
    Migration {
        version: 13,
        name: "shared counters",
        sql: "
-- Counts shared by the nodes (failed logins per username and address),
-- each until the end of its window (ms).
CREATE TABLE {S}.shared_counters (
    key        text   PRIMARY KEY,
    n          bigint NOT NULL,
    expires_at bigint NOT NULL
);
",
    },
];

/// Applies the pending migrations to `schema` (raw name; `quoted` is its SQL
/// form), creating the schema if it is missing. Returns the versions applied.
pub(super) async fn run(client: &mut Client, schema: &str, quoted: &str) -> StoreResult<Vec<i32>> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)]).await.map_err(db_err)?;
    let exists: bool = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[&schema])
        .await
        .map_err(db_err)?
        .get(0);
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {quoted}")).await.map_err(db_err)?;
    }
    tx.batch_execute(&q(
        "CREATE TABLE IF NOT EXISTS {S}.im_schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
        quoted,
    ))
    .await
    .map_err(db_err)?;
    let applied: Vec<i32> = tx
        .query(&q("SELECT version FROM {S}.im_schema_migrations ORDER BY version", quoted), &[])
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(&newest) = applied.last().filter(|&&v| v > known) {
        tracing::warn!(schema, newest, known, "database schema is newer than this build; continuing");
    }
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(&q(m.sql, quoted)).await.map_err(|e| {
            StoreError::Backend(format!("migration {} ({}): {}", m.version, m.name, describe(&e)))
        })?;
        tx.execute(
            &q("INSERT INTO {S}.im_schema_migrations (version, name) VALUES ($1, $2)", quoted),
            &[&m.version, &m.name],
        )
        .await
        .map_err(db_err)?;
        done.push(m.version);
    }
    tx.commit().await.map_err(db_err)?;
    if !done.is_empty() {
        tracing::info!(schema, versions = ?done, "applied PostgreSQL migrations");
    }
    Ok(done)
}

/// The advisory lock key of `schema`'s migrations: FNV-1a of a fixed prefix
/// and the name, so every node computes the same key and different schemas
/// migrate independently.
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "im-server migrations\0".bytes().chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}
