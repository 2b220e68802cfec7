//! Appends that go to the tail (write-behind, see `tail.rs`): what the
//! tables' append does, looked up in the batch, the tails and a read
//! snapshot of redb instead of a write transaction.

use redb::{Database, ReadOnlyTable};

use super::log::MessageLog;
use super::ops::Reply;
use super::tables::last_id;
use super::tail::{Entry, Tail, Tails};
use super::*;

/// The tables an append to the tail looks up, in a read snapshot of redb.
pub(super) struct Snapshot {
    messages: ReadOnlyTable<(&'static str, u64), &'static [u8]>,
    keys: ReadOnlyTable<(&'static str, u64, &'static str), u64>,
    event_counts: ReadOnlyTable<&'static str, u64>,
}

impl Snapshot {
    pub(super) fn open(db: &Database) -> Result<Self, DbError> {
        use redb::ReadableDatabase as _;
        let txn = db.begin_read()?;
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            keys: txn.open_table(MSG_KEYS)?,
            event_counts: txn.open_table(EVENT_COUNTS)?,
        })
    }
}

/// What [`Tables`]'s append does, for the tail: a resend is answered with
/// the stored message (looked for in this batch, the tail, then redb);
/// anything else gets the conversation's next id, its record in the log
/// and its place in `staged`.
pub(super) fn append_behind(
    redb: &Snapshot,
    tail: &Tails,
    staged: &mut Tail,
    log: &mut MessageLog,
    m: NewMessage,
) -> Result<StoreResult<Reply>, DbError> {
    let c = m.conv.to_string();
    let held =
        staged.sent(&c, m.from.0, m.cmid.as_str()).or_else(|| tail.sent(&c, m.from.0, m.cmid.as_str()));
    if let Some((id, value)) = held {
        let message = decode_msg(m.conv, id, &value)?;
        return Ok(Ok(Reply::Appended(Box::new(Appended { message, duplicate: true }))));
    }
    if let Some(id) = redb.keys.get((c.as_str(), m.from.0, m.cmid.as_str()))?.map(|g| g.value()) {
        let stored = redb.messages.get((c.as_str(), id))?;
        return Ok(match stored.map(|g| decode_msg(m.conv, id, g.value())) {
            Some(Ok(message)) => Ok(Reply::Appended(Box::new(Appended { message, duplicate: true }))),
            Some(Err(e)) => Err(e.into()),
            None => Err(StoreError::Backend(format!("idempotency key of {c} names missing message {id}"))),
        });
    }
    let newer = staged.conv(&c);
    let head = match newer.and_then(|t| t.head()).or_else(|| tail.head(&c)) {
        Some(head) => head,
        None => last_id(&redb.messages, &c)?,
    };
    let events = match newer.and_then(|t| t.events()).or_else(|| tail.events(&c)) {
        Some(events) => events,
        None => redb.event_counts.get(c.as_str())?.map_or(0, |g| g.value()),
    };
    let id = head + 1;
    let message = m.into_message(id);
    let event = message.is_event();
    let events = events + u64::from(event);
    let value = encode_msg(&message, id - events)?;
    log.push(&c, id, &value);
    let cmid = message.cmid.as_str().to_owned();
    staged.push(Entry { conv: c, id, from: message.from, cmid, value, events: event.then_some(events) });
    Ok(Ok(Reply::Appended(Box::new(Appended { message, duplicate: false }))))
}
