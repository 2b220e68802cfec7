//! Opening the store: the records of the message logs that redb lacks
//! (the appends acknowledged since the last durable commit) are put into
//! it.

use im_protocol::UserId;
use redb::{Database, ReadableTable};

use super::log::Record;
use super::reads::{self, READS};
use super::tables::last_id;
use super::*;

/// A log that does not belong to this database (e.g. an older backup of
/// `im.redb` restored next to a newer log): refuse to open rather than
/// mix histories or leave gaps.
fn mismatch(r: &Record, why: &str) -> DbError {
    DbError(format!(
        "message log does not match the database: record {}#{}: {why}; move the .log and .log2 files away to open without them",
        r.conv, r.id
    ))
}

/// Puts the log's records that redb does not have yet into it, durably.
/// Returns how many were missing.
pub(super) fn replay(db: &Database, records: &[Record]) -> Result<usize, DbError> {
    if records.is_empty() {
        return Ok(0);
    }
    let txn = db.begin_write()?;
    let mut restored = 0;
    {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut keys = txn.open_table(MSG_KEYS)?;
        let mut read = txn.open_table(READS)?;
        let mut sender_convs = txn.open_table(super::erasure::SENDER_CONVS)?;
        let mut event_counts = txn.open_table(EVENT_COUNTS)?;
        // The pairs this replay has made sure of (each is written once).
        let mut seen = std::collections::HashSet::new();
        for r in records {
            if let Some(stored) = messages.get((r.conv.as_str(), r.id))? {
                if stored.value() != r.value.as_slice() {
                    return Err(mismatch(r, "the database holds another message under its id"));
                }
                continue;
            }
            if last_id(&messages, &r.conv)? + 1 != r.id {
                return Err(mismatch(r, "it does not follow the conversation's last message"));
            }
            let m: MsgIn = serde_json::from_slice(&r.value)?;
            messages.insert((r.conv.as_str(), r.id), r.value.as_slice())?;
            keys.insert((r.conv.as_str(), m.f, m.c.as_str()), r.id)?;
            if seen.insert((m.f, r.conv.as_str())) {
                sender_convs.insert((m.f, r.conv.as_str()), ())?;
            }
            reads::raise(&mut read, UserId(m.f), &r.conv, r.id)?;
            // The value counts the countable messages up to it; the rest are events.
            let events = r.id.saturating_sub(m.n.unwrap_or(r.id));
            if events > 0 {
                event_counts.insert(r.conv.as_str(), events)?;
            }
            restored += 1;
        }
    }
    txn.commit()?;
    Ok(restored)
}
