//! [`MessageStore`] for PostgreSQL: appends (one statement; an event in
//! one transaction with its target's row lock), pages, heads.

use async_trait::async_trait;
use im_protocol::{ClientMsgId, ConversationId, Message, MessageId, UserId};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use deadpool_postgres::GenericClient;

use super::{bound, col, db_err, key, limit, time, unkey, untime, violates, PgStore};
use crate::store::{Appended, MessageStore, NewMessage, StoreError, StoreResult};

/// A message from a row of [`MSG_COLS`].
fn message(conv: ConversationId, row: &Row) -> StoreResult<Message> {
    message_at(conv, row, 0)
}

/// A message from the [`MSG_COLS`] of `row`, starting at column `at`.
fn message_at(conv: ConversationId, row: &Row, at: usize) -> StoreResult<Message> {
    let cmid: String = col(row, at + 2)?;
    let cmid = ClientMsgId::new(cmid)
        .map_err(|_| StoreError::Backend("invalid client message id stored in messages".into()))?;
    let json = |text: Option<String>, what: &str| -> StoreResult<Option<serde_json::Value>> {
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Backend(format!("invalid {what} stored in messages: {e}")))
    };
    let reactions = match json(col(row, at + 12)?, "reactions")? {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| StoreError::Backend(format!("invalid reactions stored in messages: {e}")))?,
        None => Vec::new(),
    };
    Ok(Message {
        mentions: col::<Vec<i64>>(row, at + 5)?.into_iter().map(|u| UserId(unkey(u))).collect(),
        kind: Some(col::<String>(row, at + 6)?).filter(|k| k != im_protocol::content::TEXT),
        content: json(col(row, at + 7)?, "content")?,
        reply_to: col::<Option<i64>>(row, at + 8)?.map(unkey),
        target: col::<Option<i64>>(row, at + 9)?.map(unkey),
        edited: col::<Option<i64>>(row, at + 10)?.map(unkey),
        recalled: col::<Option<i64>>(row, at + 11)?.map(unkey),
        reactions,
        ..Message::new(
            conv,
            unkey(col(row, at)?),
            UserId(unkey(col(row, at + 1)?)),
            cmid,
            col::<String>(row, at + 3)?,
            untime(col(row, at + 4)?),
        )
    })
}

const MSG_COLS: &str =
    "id, sender_id, cmid, body, ts, mentions, kind, content, reply_to, target, edited, recalled, reactions";

/// One statement: bumps the head (and the event count), inserts the
/// message with its countable ordinal, raises the sender's read id.
const INSERT: &str = "WITH head AS (
         INSERT INTO {S}.conversations AS c (conv, last_id, events) VALUES ($1, 1, $11)
         ON CONFLICT (conv) DO UPDATE SET last_id = c.last_id + 1, events = c.events + EXCLUDED.events
         RETURNING last_id, events)
     , msg AS (
         INSERT INTO {S}.messages
             (conv, id, sender_id, cmid, body, ts, mentions, kind, content, reply_to, target, countable)
         SELECT $1, last_id, $2, $3, $4, $5, $6, $7, $8, $9, $10, last_id - events FROM head
         RETURNING id)
     , sender_read AS (
         INSERT INTO {S}.read_state AS r (user_id, conv, read_id)
         SELECT $2, $1, id FROM msg
         ON CONFLICT (user_id, conv) DO UPDATE SET read_id = GREATEST(r.read_id, EXCLUDED.read_id))
     SELECT id FROM msg";

/// The columns an event changes on a stored message.
const UPDATE_STATE: &str = "UPDATE {S}.messages SET body = $3, kind = $4, content = $5, mentions = $6, \
     reply_to = $7, edited = $8, recalled = $9, reactions = $10 WHERE conv = $1 AND id = $2";

/// What the insert of `msg` was answered with.
enum Inserted {
    New(MessageId),
    Duplicate,
}

impl PgStore {
    /// Runs [`INSERT`] for `msg` on `client` (a connection or a transaction).
    async fn insert(&self, client: &impl GenericClient, msg: &NewMessage) -> StoreResult<Inserted> {
        let insert = client.prepare_cached(&self.sql(INSERT)).await.map_err(db_err)?;
        let conv = msg.conv.to_string();
        let (from, ts) = (key(msg.from.0), time(msg.ts));
        let mentions: Vec<i64> = msg.mentions.iter().map(|u| key(u.0)).collect();
        let kind = msg.kind.as_deref().unwrap_or(im_protocol::content::TEXT);
        let content = msg.content.as_ref().map(ToString::to_string);
        let (reply_to, target) = (msg.reply_to.map(key), msg.target.map(key));
        let event = i64::from(im_protocol::events::is_event_kind(kind));
        let params: [&(dyn ToSql + Sync); 11] = [
            &conv,
            &from,
            &msg.cmid.as_str(),
            &msg.body,
            &ts,
            &mentions,
            &kind,
            &content,
            &reply_to,
            &target,
            &event,
        ];
        match client.query_one(&insert, &params).await {
            Ok(row) => Ok(Inserted::New(unkey(col(&row, 0)?))),
            Err(e) if violates(&e, "messages_idempotency_key") => Ok(Inserted::Duplicate),
            Err(e) => Err(db_err(e)),
        }
    }

    /// The original of a resend. It committed before we got the head's
    /// lock (every insert holds it to commit), so a new statement sees it.
    async fn original(&self, msg: &NewMessage) -> StoreResult<Appended> {
        let original = self
            .sent(msg.conv, msg.from, &msg.cmid)
            .await?
            .ok_or_else(|| StoreError::Backend("resent message vanished".into()))?;
        Ok(Appended { message: original, duplicate: true })
    }

    /// Writes the event-changed columns of `m`.
    async fn write_state(&self, client: &impl GenericClient, m: &Message) -> StoreResult<()> {
        let update = client.prepare_cached(&self.sql(UPDATE_STATE)).await.map_err(db_err)?;
        let mentions: Vec<i64> = m.mentions.iter().map(|u| key(u.0)).collect();
        let reactions = (!m.reactions.is_empty())
            .then(|| serde_json::to_string(&m.reactions).unwrap_or_else(|_| "[]".into()));
        let params: [&(dyn ToSql + Sync); 10] = [
            &m.conv.to_string(),
            &key(m.id),
            &m.body,
            &m.kind.as_deref().unwrap_or(im_protocol::content::TEXT),
            &m.content.as_ref().map(ToString::to_string),
            &mentions,
            &m.reply_to.map(key),
            &m.edited.map(key),
            &m.recalled.map(key),
            &reactions,
        ];
        client.execute(&update, &params).await.map_err(db_err)?;
        Ok(())
    }

    /// An event: in one transaction, locks the target's row, inserts the
    /// event, writes the target's new state and, for a recall, empties
    /// the target's edits. Concurrent events of one target (from any node)
    /// apply one after another.
    async fn append_event(&self, msg: NewMessage, target: MessageId) -> StoreResult<Appended> {
        let conv = msg.conv.to_string();
        let mut client = self.conn().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let lock = tx
            .prepare_cached(&self.sql(&format!(
                "SELECT {MSG_COLS} FROM {{S}}.messages WHERE conv = $1 AND id = $2 FOR UPDATE"
            )))
            .await
            .map_err(db_err)?;
        let Some(row) = tx.query_opt(&lock, &[&conv, &key(target)]).await.map_err(db_err)? else {
            tx.rollback().await.map_err(db_err)?;
            return Err(StoreError::NotFound);
        };
        let mut old = message(msg.conv, &row)?;
        let id = match self.insert(&tx, &msg).await? {
            Inserted::New(id) => id,
            Inserted::Duplicate => {
                tx.rollback().await.map_err(db_err)?;
                drop(client);
                return self.original(&msg).await;
            }
        };
        let mut event = msg.into_message(id);
        let effect = crate::store::apply_event(&mut old, &mut event);
        if effect.target_changed {
            self.write_state(&tx, &old).await?;
        }
        if event.recalled.is_some() {
            // An edit of a message recalled meanwhile: stored empty.
            self.write_state(&tx, &event).await?;
        }
        if effect.recalled {
            let scrub = tx
                .prepare_cached(&self.sql(
                    "UPDATE {S}.messages SET body = '', content = NULL, mentions = '{}', recalled = $3 \
                     WHERE conv = $1 AND target = $2 AND kind = 'edit' AND id <> $3",
                ))
                .await
                .map_err(db_err)?;
            tx.execute(&scrub, &[&conv, &key(target), &key(id)]).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Appended { message: event, duplicate: false })
    }
}

#[async_trait]
impl MessageStore for PgStore {
    async fn append(&self, msg: NewMessage) -> StoreResult<Appended> {
        if let Some(target) = msg.target {
            return self.append_event(msg, target).await;
        }
        let client = self.conn().await?;
        // One statement, so one transaction and one round trip.
        let inserted = self.insert(&client, &msg).await?;
        drop(client); // `original` takes a connection of its own
        match inserted {
            Inserted::New(id) => Ok(Appended { message: msg.into_message(id), duplicate: false }),
            Inserted::Duplicate => self.original(&msg).await,
        }
    }

    async fn sent(
        &self,
        conv: ConversationId,
        from: UserId,
        cmid: &ClientMsgId,
    ) -> StoreResult<Option<Message>> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {MSG_COLS} FROM {{S}}.messages WHERE conv = $1 AND sender_id = $2 AND cmid = $3"
                ),
                &[&conv.to_string(), &key(from.0), &cmid.as_str()],
            )
            .await?;
        rows.first().map(|r| message(conv, r)).transpose()
    }

    async fn after(&self, conv: ConversationId, after: MessageId, n: usize) -> StoreResult<Vec<Message>> {
        let Some(after) = bound(after).filter(|_| n > 0) else { return Ok(Vec::new()) };
        self.rows(
            &format!(
                "SELECT {MSG_COLS} FROM {{S}}.messages WHERE conv = $1 AND id > $2 ORDER BY id LIMIT $3"
            ),
            &[&conv.to_string(), &after, &limit(n)],
        )
        .await?
        .iter()
        .map(|r| message(conv, r))
        .collect()
    }

    async fn before(
        &self,
        conv: ConversationId,
        before: Option<MessageId>,
        n: usize,
    ) -> StoreResult<Vec<Message>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let before = before.map_or(i64::MAX, |b| bound(b).unwrap_or(i64::MAX));
        let mut page = self
            .rows(
                &format!(
                    "SELECT {MSG_COLS} FROM {{S}}.messages WHERE conv = $1 AND id < $2 \
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&conv.to_string(), &before, &limit(n)],
            )
            .await?
            .iter()
            .map(|r| message(conv, r))
            .collect::<StoreResult<Vec<_>>>()?;
        page.reverse();
        Ok(page)
    }

    async fn heads(&self, convs: &[ConversationId]) -> StoreResult<Vec<MessageId>> {
        if convs.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = convs.iter().map(ToString::to_string).collect();
        let rows =
            self.rows("SELECT conv, last_id FROM {S}.conversations WHERE conv = ANY($1)", &[&names]).await?;
        let found = rows
            .iter()
            .map(|r| Ok((col::<String>(r, 0)?, col::<i64>(r, 1)?)))
            .collect::<StoreResult<std::collections::HashMap<_, _>>>()?;
        Ok(names.iter().map(|c| found.get(c).map_or(0, |&v| unkey(v))).collect())
    }

    async fn latest(&self, convs: &[ConversationId]) -> StoreResult<Vec<Option<Message>>> {
        if convs.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = convs.iter().map(ToString::to_string).collect();
        // Each head's message, found by primary key: one round trip.
        let rows = self
            .rows(
                &format!(
                    "SELECT m.conv, {} FROM {{S}}.conversations c
                     JOIN {{S}}.messages m ON m.conv = c.conv AND m.id = c.last_id
                     WHERE c.conv = ANY($1)",
                    MSG_COLS.split(", ").map(|c| format!("m.{c}")).collect::<Vec<_>>().join(", ")
                ),
                &[&names],
            )
            .await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for (row, conv) in rows.iter().map(|r| (r, col::<String>(r, 0))) {
            let conv = conv?;
            let id: ConversationId = conv
                .parse()
                .map_err(|_| StoreError::Backend(format!("invalid conversation {conv:?} stored")))?;
            found.insert(conv, message_at(id, row, 1)?);
        }
        Ok(names.iter().map(|c| found.remove(c)).collect())
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every append committed before it returned.
        Ok(())
    }

    fn feed(&self) -> Option<&dyn crate::store::FeedStore> {
        Some(self)
    }

    fn message_erasure(&self) -> Option<&dyn crate::store::MessageErasure> {
        Some(self)
    }
}
