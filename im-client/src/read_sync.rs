//! What the client sends about read state, apart from any I/O: read marks
//! (queued while offline, the highest per conversation wins, resent after
//! a reconnect), the inbox fetch after each sync, and the `received`
//! reports (at most one per [`RECEIPT_INTERVAL_MS`]). The driver asks for
//! [`frames`](ReadSync::frames) and reports the answers.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use im_protocol::limits::{DEFAULT_MAX_SYNC_CURSORS, RECEIPT_INTERVAL_MS};
use im_protocol::{ClientFrame, ConversationId, ErrorCode, MessageId, RequestId};

/// Read-state requests waiting to go out, and those in flight.
#[derive(Debug, Default)]
pub(crate) struct ReadSync {
    /// Read marks not yet sent: the highest per conversation.
    pending: BTreeMap<ConversationId, MessageId>,
    /// Read marks sent and not yet answered.
    marks: HashMap<RequestId, (ConversationId, MessageId)>,
    /// Messages of others the app got since the last `received` report.
    unreported: BTreeMap<ConversationId, MessageId>,
    /// `received` reports in flight, with what they reported.
    reports: HashMap<RequestId, BTreeMap<ConversationId, MessageId>>,
    last_report: Option<Instant>,
    /// An inbox walk is wanted (after a sync), starting after this conversation.
    inbox_wanted: Option<Option<ConversationId>>,
    /// The inbox page in flight.
    inbox_rid: Option<RequestId>,
    /// The inbox was walked (or is being walked) on this connection.
    inbox_walked: bool,
}

/// Whose answer a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Not one of ours.
    None,
    /// A read mark or `received` report (nothing more to do).
    Done,
    /// The inbox page being walked.
    Inbox,
}

impl ReadSync {
    /// The app marked `conv` read up to `id`.
    pub(crate) fn mark(&mut self, conv: ConversationId, id: MessageId) {
        let p = self.pending.entry(conv).or_insert(0);
        *p = (*p).max(id);
    }

    /// A message of another user reached the app (rooms have no receipts).
    pub(crate) fn delivered(&mut self, conv: ConversationId, id: MessageId) {
        if !matches!(conv, ConversationId::Room(_)) {
            let u = self.unreported.entry(conv).or_insert(0);
            *u = (*u).max(id);
        }
    }

    /// A sync finished: after the first of a connection, walk the inbox
    /// once, to learn what was read elsewhere while away (later syncs fill
    /// gaps; live `read_up_to` covers the rest).
    pub(crate) fn synced(&mut self) {
        if !self.inbox_walked {
            self.inbox_walked = true;
            self.inbox_wanted = Some(None);
        }
    }

    /// Puts a report's cursors back, to go out with the next one.
    fn unreport(&mut self, cursors: BTreeMap<ConversationId, MessageId>) {
        for (conv, id) in cursors {
            self.delivered(conv, id);
        }
    }

    /// Requests sent and not answered.
    pub(crate) fn unanswered(&self) -> usize {
        self.marks.len() + self.reports.len() + usize::from(self.inbox_rid.is_some())
    }

    /// Up to `budget` frames due now on a connection of `protocol`, with
    /// request ids from `next_rid`.
    pub(crate) fn frames(
        &mut self,
        budget: usize,
        protocol: u32,
        now: Instant,
        mut next_rid: impl FnMut() -> RequestId,
    ) -> Vec<ClientFrame> {
        let mut out = Vec::new();
        if protocol < 2 {
            return out;
        }
        while out.len() < budget {
            let Some((conv, id)) = self.pending.pop_first() else { break };
            let rid = next_rid();
            self.marks.insert(rid, (conv, id));
            out.push(ClientFrame::Read { rid, conv, id });
        }
        if out.len() < budget && self.inbox_rid.is_none() {
            if let Some(after) = self.inbox_wanted.take() {
                let rid = next_rid();
                self.inbox_rid = Some(rid);
                out.push(ClientFrame::Inbox { rid, after, limit: None });
            }
        }
        let interval = Duration::from_millis(RECEIPT_INTERVAL_MS);
        let due = self.last_report.is_none_or(|at| now.duration_since(at) >= interval);
        if out.len() < budget && due && !self.unreported.is_empty() {
            let mut cursors = std::mem::take(&mut self.unreported);
            if let Some(&from) = cursors.keys().nth(DEFAULT_MAX_SYNC_CURSORS) {
                self.unreported = cursors.split_off(&from);
            }
            let rid = next_rid();
            self.reports.insert(rid, cursors.clone());
            self.last_report = Some(now);
            out.push(ClientFrame::Received { rid, cursors });
        }
        out
    }

    /// The server answered `rid` with `ok` (`refused: None`) or an error.
    pub(crate) fn answered(&mut self, rid: RequestId, refused: Option<ErrorCode>) -> Owner {
        if let Some(cursors) = self.reports.remove(&rid) {
            if refused.is_some_and(|c| {
                matches!(c, ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::Unavailable)
            }) {
                self.unreport(cursors);
            }
            return Owner::Done;
        }
        if self.inbox_rid == Some(rid) {
            // A refused page ends the walk for this connection (the next
            // connection walks again; live `read_up_to` still arrives).
            self.inbox_rid = None;
            return Owner::Done;
        }
        let Some((conv, id)) = self.marks.remove(&rid) else { return Owner::None };
        if let Some(code) = refused {
            if matches!(code, ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::Unavailable) {
                self.mark(conv, id);
            } else {
                tracing::warn!(%conv, id, %code, "read mark refused");
            }
        }
        Owner::Done
    }

    /// An inbox page arrived: is it ours? Continues the walk when `has_more`.
    pub(crate) fn inbox_page(
        &mut self,
        rid: RequestId,
        last: Option<ConversationId>,
        has_more: bool,
    ) -> Owner {
        if self.inbox_rid != Some(rid) {
            return Owner::None;
        }
        self.inbox_rid = None;
        if has_more && last.is_some() {
            self.inbox_wanted = Some(last);
        }
        Owner::Inbox
    }

    /// The connection ended: unanswered marks go back to the queue (they
    /// may or may not have been applied; marking again is harmless).
    pub(crate) fn disconnected(&mut self) {
        for (_, (conv, id)) in std::mem::take(&mut self.marks) {
            self.mark(conv, id);
        }
        for (_, cursors) in std::mem::take(&mut self.reports) {
            self.unreport(cursors);
        }
        self.inbox_rid = None;
        self.inbox_wanted = None;
        self.inbox_walked = false;
    }
}

#[cfg(test)]
mod tests {
    use im_protocol::{GroupId, RoomId};

    use super::*;

    fn rids() -> impl FnMut() -> RequestId {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn marks_made_offline_go_out_after_reconnect_and_the_highest_wins() {
        let g = ConversationId::Group(GroupId(1));
        let mut rs = ReadSync::default();
        rs.mark(g, 3);
        rs.mark(g, 7);
        rs.mark(g, 5);
        let now = Instant::now();
        assert!(rs.frames(10, 1, now, rids()).is_empty(), "a version-1 connection gets none");
        let frames = rs.frames(10, 2, now, rids());
        assert_eq!(frames, vec![ClientFrame::Read { rid: 1, conv: g, id: 7 }]);
        assert_eq!(rs.unanswered(), 1);
        // Lost with the connection: queued again, still merged with newer marks.
        rs.disconnected();
        rs.mark(g, 6);
        let frames = rs.frames(10, 2, now, rids());
        assert_eq!(frames, vec![ClientFrame::Read { rid: 1, conv: g, id: 7 }]);
        // Refused for a passing reason: again; for good: dropped.
        assert_eq!(rs.answered(1, Some(ErrorCode::RateLimited)), Owner::Done);
        assert_eq!(rs.frames(10, 2, now, rids()).len(), 1);
        assert_eq!(rs.answered(1, Some(ErrorCode::InvalidField)), Owner::Done);
        assert!(rs.frames(10, 2, now, rids()).is_empty());
        assert_eq!(rs.answered(99, None), Owner::None);
        assert_eq!(rs.unanswered(), 0);
    }

    #[test]
    fn reports_are_paced_and_the_inbox_is_walked_page_by_page() {
        let (g, r) = (ConversationId::Group(GroupId(1)), ConversationId::Room(RoomId(1)));
        let mut rs = ReadSync::default();
        let t0 = Instant::now();
        rs.delivered(g, 4);
        rs.delivered(r, 9);
        rs.delivered(g, 5);
        let frames = rs.frames(10, 2, t0, rids());
        assert_eq!(frames, vec![ClientFrame::Received { rid: 1, cursors: BTreeMap::from([(g, 5)]) }]);
        rs.delivered(g, 6);
        assert!(rs.frames(10, 2, t0 + Duration::from_millis(500), rids()).is_empty(), "paced");
        let later = t0 + Duration::from_millis(RECEIPT_INTERVAL_MS);
        assert_eq!(rs.frames(10, 2, later, rids()).len(), 1);

        rs.synced();
        let frames = rs.frames(10, 2, later, rids());
        assert_eq!(frames, vec![ClientFrame::Inbox { rid: 1, after: None, limit: None }]);
        assert!(rs.frames(10, 2, later, rids()).is_empty(), "one page at a time");
        assert_eq!(rs.inbox_page(1, Some(g), true), Owner::Inbox);
        let frames = rs.frames(10, 2, later, rids());
        assert_eq!(frames, vec![ClientFrame::Inbox { rid: 1, after: Some(g), limit: None }]);
        assert_eq!(rs.inbox_page(1, None, false), Owner::Inbox);
        assert!(rs.frames(10, 2, later, rids()).is_empty());
        assert_eq!(rs.inbox_page(5, None, false), Owner::None);
        // Only the first sync of a connection walks the inbox.
        rs.synced();
        assert!(rs.frames(10, 2, later, rids()).is_empty(), "a gap-filling sync does not walk again");
        rs.disconnected();
        rs.synced();
        assert_eq!(rs.frames(10, 2, later, rids()).len(), 1, "the next connection walks again");
    }

    #[test]
    fn a_report_lost_with_the_connection_or_refused_for_a_passing_reason_goes_out_again() {
        let g = ConversationId::Group(GroupId(1));
        let mut rs = ReadSync::default();
        let t0 = Instant::now();
        rs.delivered(g, 4);
        assert_eq!(rs.frames(10, 2, t0, rids()).len(), 1);
        rs.disconnected();
        let later = t0 + Duration::from_millis(RECEIPT_INTERVAL_MS);
        let frames = rs.frames(10, 2, later, rids());
        assert_eq!(frames, vec![ClientFrame::Received { rid: 1, cursors: BTreeMap::from([(g, 4)]) }]);
        assert_eq!(rs.answered(1, Some(ErrorCode::RateLimited)), Owner::Done);
        let again = later + Duration::from_millis(RECEIPT_INTERVAL_MS);
        assert_eq!(rs.frames(10, 2, again, rids()).len(), 1);
        assert_eq!(rs.answered(1, None), Owner::Done);
        assert!(rs.frames(10, 2, again + Duration::from_secs(5), rids()).is_empty());
    }
}
