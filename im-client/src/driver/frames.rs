//! What each server frame does to the client's state.

use im_protocol::{ErrorCode, MemberChangeKind, Message, RequestId, ServerFrame, UserId};

use super::{Driver, Ended};
use crate::client::SendReceipt;
use crate::error::{RequestError, SendError};
use crate::events::Event;
use crate::read_sync::Owner;
use crate::state::Verdict;

impl Driver {
    /// Handles one server frame. `Err` when the client must stop.
    pub(super) async fn frame(&mut self, frame: ServerFrame) -> Result<(), Ended> {
        match frame {
            ServerFrame::Message(m) => self.offer(m).await?,
            ServerFrame::Ack { rid, conv, id, cmid, ts, duplicate } => {
                if let Some(sent) = self.outbox.take(rid) {
                    tracing::trace!(%conv, id, duplicate, "ack");
                    let from = self.me.unwrap_or(UserId(0));
                    self.offer(sent.draft.message(conv, id, from, cmid, ts)).await?;
                    let _ = sent.reply.send(Ok(SendReceipt { id, duplicate }));
                }
            }
            ServerFrame::SyncPage { rid, messages, has_more } => {
                if self.sync.is_sync(rid) {
                    for m in messages {
                        self.offer(m).await?;
                    }
                    if self.sync.page_done(rid, has_more) {
                        self.flush_store();
                        self.read_sync.synced();
                        // A healthy connection: the next outage starts from the initial delay.
                        self.backoff.reset();
                        self.emit_or_stop(Event::Synced).await?;
                    }
                }
            }
            ServerFrame::Ok { rid } if self.quiet.remove(&rid) => {}
            ServerFrame::Error { rid: Some(rid), code, message } if self.quiet.remove(&rid) => {
                tracing::debug!(%code, %message, "typing refresh refused");
            }
            ServerFrame::Ok { rid } if self.read_sync.answered(rid, None) != Owner::None => {}
            ServerFrame::Error { rid: Some(rid), code, .. }
                if self.read_sync.answered(rid, Some(code)) != Owner::None => {}
            ServerFrame::InboxPage { rid, entries, has_more }
                if self.read_sync.inbox_page(rid, entries.last().map(|e| e.conv), has_more)
                    == Owner::Inbox =>
            {
                self.inbox_entries(&entries).await?
            }
            ServerFrame::Error { rid: Some(rid), code, message } => self.refused(rid, code, message),
            ServerFrame::Error { rid: None, code, message } => {
                tracing::warn!(%code, %message, "error frame without rid");
            }
            reply @ (ServerFrame::Ok { .. }
            | ServerFrame::HistoryPage { .. }
            | ServerFrame::PresenceList { .. }
            | ServerFrame::InboxPage { .. }
            | ServerFrame::ReceiptList { .. }) => {
                if let Some(rid) = reply_rid(&reply) {
                    if let Some(tx) = self.in_flight.remove(&rid) {
                        let _ = tx.send(Ok(reply));
                    }
                }
            }
            ServerFrame::Presence(p) => self.emit_or_stop(Event::Presence(p)).await?,
            ServerFrame::Contact { user, state } => self.emit_or_stop(Event::Contact { user, state }).await?,
            ServerFrame::Member { group, user, change, by } => {
                if change == MemberChangeKind::Added && Some(user) == self.me {
                    // A new group: its past comes with a sync (from cursor 0).
                    self.sync.note_gap();
                }
                self.emit_or_stop(Event::Member { group, user, change, by }).await?;
            }
            ServerFrame::UserTyping { conv, user, typing } => self.heard_typing(conv, user, typing).await?,
            ServerFrame::ReadUpTo { conv, id } => self.read_elsewhere(conv, id).await?,
            ServerFrame::Receipt { conv, user, read, delivered } => {
                self.emit_or_stop(Event::Receipt { conv, user, read, delivered }).await?
            }
            ServerFrame::Pong { .. } | ServerFrame::Hello { .. } => {}
            other => tracing::debug!(frame = other.type_name(), "unexpected frame ignored"),
        }
        Ok(())
    }

    /// An `error` answering request `rid`.
    fn refused(&mut self, rid: RequestId, code: ErrorCode, message: String) {
        if self.outbox.is_send(rid) {
            match code {
                // Not processed, or maybe not stored: resend later with the same cmid.
                ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::Unavailable => {
                    self.outbox.requeue(rid)
                }
                _ => {
                    if let Some(sent) = self.outbox.take(rid) {
                        let _ = sent.reply.send(Err(SendError::Rejected { code, message }));
                    }
                }
            }
        } else if self.sync.is_sync(rid) {
            tracing::warn!(%code, %message, "sync refused; retrying shortly");
            self.sync.sync_failed(rid);
        } else if let Some(tx) = self.in_flight.remove(&rid) {
            let _ = tx.send(Err(RequestError::Rejected { code, message }));
        }
    }

    /// A message from any source: hand it to the app if it is the next one.
    async fn offer(&mut self, m: Message) -> Result<(), Ended> {
        let mut next = Some(m);
        while let Some(m) = next.take() {
            match self.sync.classify(m.conv, m.id) {
                Verdict::Deliver => {
                    let (conv, id) = (m.conv, m.id);
                    let delivered = m.clone();
                    self.emit_or_stop(Event::Message(m)).await?;
                    self.after_delivery(&delivered).await?;
                    // Only now does the app have it: advance the cursor.
                    self.sync.delivered(conv, id);
                    if let Err(e) = self.store.save(conv, id) {
                        tracing::warn!(error = %e, "saving a sync cursor failed");
                    }
                    // A message held behind this gap may be next now.
                    next = self.sync.take_next(conv);
                }
                Verdict::Duplicate => {}
                Verdict::Gap => self.sync.hold(m),
            }
        }
        Ok(())
    }
}

fn reply_rid(f: &ServerFrame) -> Option<RequestId> {
    match f {
        ServerFrame::Ok { rid }
        | ServerFrame::HistoryPage { rid, .. }
        | ServerFrame::PresenceList { rid, .. }
        | ServerFrame::InboxPage { rid, .. }
        | ServerFrame::ReceiptList { rid, .. } => Some(*rid),
        _ => None,
    }
}
