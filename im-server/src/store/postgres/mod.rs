//! PostgreSQL implementation of every storage trait, for deployments where
//! many nodes share history, the directory and sessions.
//!
//! [`PgStore::connect`] opens a connection pool ([`deadpool_postgres`] over
//! [`tokio_postgres`], no TLS) and runs the versioned migrations (see
//! `migrations.rs`): idempotent, in one transaction, under an advisory lock,
//! so any number of nodes may start at once. With [`PgOptions::schema`] set,
//! every table lives in that schema (created if missing); every statement
//! names its tables with the schema, so no `search_path` is involved.
//!
//! # Message ids
//!
//! `conversations (conv, last_id)` holds each conversation's head. An append
//! is a single statement, hence one transaction and one round trip: it bumps
//! the head (`INSERT … ON CONFLICT (conv) DO UPDATE SET last_id = last_id + 1
//! RETURNING last_id`) and inserts the message with the new id. The head's
//! row lock, held to commit, serializes appends to one conversation across
//! every node and pool; different conversations never contend. If the
//! idempotency key `(conv, sender_id, cmid)` is taken, the insert violates
//! `messages_idempotency_key`, the whole statement (bump included) rolls
//! back, and the original — committed before the lock was granted — is read
//! and returned as the duplicate. Any other failure rolls back the same way,
//! so ids stay gapless. The same statement raises the sender's row of
//! `read_state` to the new id. User, group and room ids work alike on
//! `im_counters` rows, so a taken username consumes no id and an erased
//! user's id is never given again.
//!
//! # Value mapping
//!
//! Ids are `bigint` holding the `u64` bit for bit (the ids this store assigns
//! never exceed `i64::MAX`; a larger id a caller passes simply matches
//! nothing). Times are `bigint` milliseconds, saturated at `i64::MAX`.
//! Conversations are stored in their wire form (`"g:42"`). PostgreSQL `text`
//! cannot hold U+0000, so a body or name containing it is refused with
//! [`StoreError::Backend`] and nothing is stored.

mod contacts;
mod directory;
mod erasure;
mod feed;
mod messages;
mod migrations;
mod moderation;
mod reads;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use im_protocol::UserId;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{NoTls, Row};

use super::{SessionStore, StoreError, StoreResult};
use crate::model::{Role, Session};

/// Pool size of [`PgOptions::default`].
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Connect timeout when the URL sets none; also bounds opening a pooled connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call waits for a free pooled connection before failing with `Backend`.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of [`PgStore::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// Most connections the pool holds open (at least 1; default
    /// [`DEFAULT_POOL_SIZE`]). Calls beyond it wait for a free connection.
    pub pool_size: usize,
    /// Schema holding every table, created if missing; `None` is `public`.
    /// ASCII letters, digits and `_`, not starting with a digit, at most 63
    /// bytes; case is kept.
    pub schema: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self { pool_size: DEFAULT_POOL_SIZE, schema: None }
    }
}

/// Stores messages, the directory and sessions in PostgreSQL.
///
/// Cheap to clone: clones share one pool. Several `PgStore`s (on one node or
/// many) on the same database and schema see one consistent store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The schema, quoted for SQL (`"public"`).
    schema: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .field("pool_size", &status.size)
            .field("pool_max_size", &status.max_size)
            .finish()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:pass@host:port/db`
    /// or `host=… user=… dbname=…`) and brings its schema up to date.
    ///
    /// Fails with [`StoreError::Backend`] when the URL or schema name is
    /// invalid, the server is unreachable, or a migration fails.
    pub async fn connect(url: &str, opts: PgOptions) -> StoreResult<PgStore> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("im-server");
        }
        let name = opts.schema.as_deref().unwrap_or("public");
        if !valid_schema(name) {
            return Err(StoreError::Backend(format!(
                "invalid schema name {name:?}: 1 to 63 of A-Z a-z 0-9 _, not starting with a digit"
            )));
        }
        let manager =
            Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(WAIT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL pool: {e}")))?;
        let store = PgStore { pool, schema: format!("\"{name}\"") };
        let mut client = store.conn().await?;
        migrations::run(&mut client, name, &store.schema).await?;
        Ok(store)
    }

    /// A pooled connection.
    async fn conn(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// `template` with `{S}` replaced by this store's schema.
    fn sql(&self, template: &str) -> String {
        q(template, &self.schema)
    }

    /// Runs one statement (prepared once per connection) and returns its rows.
    async fn rows(&self, template: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let client = self.conn().await?;
        let stmt = client.prepare_cached(&self.sql(template)).await.map_err(db_err)?;
        client.query(&stmt, params).await.map_err(db_err)
    }

    /// Runs one statement and returns the number of rows it affected.
    async fn exec(&self, template: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let client = self.conn().await?;
        let stmt = client.prepare_cached(&self.sql(template)).await.map_err(db_err)?;
        client.execute(&stmt, params).await.map_err(db_err)
    }
}

/// `template` with `{S}` replaced by `schema`.
fn q(template: &str, schema: &str) -> String {
    template.replace("{S}", schema)
}

fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A database error as one line: the server's message and SQLSTATE when it has them.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("PostgreSQL: {} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut out = format!("PostgreSQL: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn db_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(describe(&e))
}

/// Column `i` of `row`. A type mismatch (a hand-altered schema) is a
/// `Backend` error rather than a panic.
fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> StoreResult<T> {
    row.try_get(i).map_err(db_err)
}

/// The first column of every row, an id, wrapped by `wrap`.
fn first_ids<T>(rows: &[Row], wrap: fn(u64) -> T) -> StoreResult<Vec<T>> {
    rows.iter().map(|r| Ok(wrap(unkey(col(r, 0)?)))).collect()
}

/// Whether `e` is a unique violation of `constraint`.
fn violates(e: &tokio_postgres::Error, constraint: &str) -> bool {
    e.as_db_error()
        .is_some_and(|db| *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(constraint))
}

fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => db_err(e),
        e => StoreError::Backend(format!("PostgreSQL pool: {e}")),
    }
}

/// An id as stored: the same 64 bits.
fn key(id: u64) -> i64 {
    id as i64
}

/// A stored id back as `u64`.
fn unkey(v: i64) -> u64 {
    v as u64
}

/// A lower or upper id bound, when it can match a stored id at all.
fn bound(id: u64) -> Option<i64> {
    i64::try_from(id).ok()
}

/// A time as stored, saturated.
fn time(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A stored time back as `u64`.
fn untime(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Admin => "admin",
        Role::Owner => "owner",
    }
}

fn role_of(name: &str) -> StoreResult<Role> {
    match name {
        "member" => Ok(Role::Member),
        "admin" => Ok(Role::Admin),
        "owner" => Ok(Role::Owner),
        other => Err(StoreError::Backend(format!("unknown role {other:?} in group_members"))),
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create(&self, session: &Session) -> StoreResult<()> {
        self.exec(
            "INSERT INTO {S}.sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE
             SET user_id = EXCLUDED.user_id, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at",
            &[&session.id, &key(session.user.0), &time(session.created_at), &time(session.expires_at)],
        )
        .await?;
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        let rows = self
            .rows("SELECT id, user_id, created_at, expires_at FROM {S}.sessions WHERE id = $1", &[&id])
            .await?;
        rows.first()
            .map(|r| {
                Ok(Session {
                    id: col(r, 0)?,
                    user: UserId(unkey(col(r, 1)?)),
                    created_at: untime(col(r, 2)?),
                    expires_at: untime(col(r, 3)?),
                })
            })
            .transpose()
    }

    async fn revoke(&self, id: &str) -> StoreResult<bool> {
        Ok(self.exec("DELETE FROM {S}.sessions WHERE id = $1", &[&id]).await? > 0)
    }

    async fn purge_expired(&self, now: u64) -> StoreResult<usize> {
        self.exec("DELETE FROM {S}.shared_counters WHERE expires_at <= $1", &[&time(now)]).await?;
        let n = self.exec("DELETE FROM {S}.sessions WHERE expires_at < $1", &[&time(now)]).await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// One upsert: a counter whose window ended starts again at 1.
    async fn bump(&self, key: &str, expires_at: u64, now: u64) -> StoreResult<Option<u64>> {
        let rows = self
            .rows(
                "INSERT INTO {S}.shared_counters AS c (key, n, expires_at) VALUES ($1, 1, $2)
                 ON CONFLICT (key) DO UPDATE SET
                     n = CASE WHEN c.expires_at <= $3 THEN 1 ELSE c.n + 1 END,
                     expires_at = CASE WHEN c.expires_at <= $3 THEN EXCLUDED.expires_at ELSE c.expires_at END
                 RETURNING n",
                &[&key, &time(expires_at), &time(now)],
            )
            .await?;
        let n: i64 = rows.first().map(|r| col(r, 0)).transpose()?.unwrap_or(1);
        Ok(Some(u64::try_from(n).unwrap_or(0)))
    }

    async fn reset(&self, key: &str) -> StoreResult<()> {
        self.exec("DELETE FROM {S}.shared_counters WHERE key = $1", &[&key]).await?;
        Ok(())
    }
}
