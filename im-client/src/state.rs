//! The sync state machine, apart from any I/O (after rumqtt's `state.rs`):
//! per-conversation cursors, message dedupe, gaps and the sync run
//! ([`SyncState`]). A plain struct, tested without sockets; the driver feeds
//! it messages and does what it says.

use std::collections::BTreeMap;

use im_protocol::{ClientFrame, ConversationId, ConversationKind, Message, MessageId, RequestId};

/// Most live messages held back waiting for a gap to fill (beyond it they
/// are dropped; the sync brings them).
const MAX_AHEAD: usize = 1024;

/// What to do with a message (live, from a sync page, or our own acked send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It is the next one (`id == cursor + 1`): hand it to the app, then
    /// call [`SyncState::delivered`].
    Deliver,
    /// Already handed to the app (`id <= cursor`): drop it.
    Duplicate,
    /// Messages are missing before it (`id > cursor + 1`): give it to
    /// [`SyncState::hold`]; a sync fills the gap.
    Gap,
}

/// Per-conversation `cur_max_message_id` cursors and the sync run.
///
/// Invariants: a cursor only moves when [`delivered`](Self::delivered) is
/// called, which the driver does only once the message is in the app's event
/// channel; it only moves forward, one id at a time, so each message reaches
/// the app exactly once and in order.
///
/// Rooms are special (as in the protocol): a room is synced only when named,
/// and a device does not want a busy room's whole past when it first sees it.
/// A room without a cursor therefore starts at the first message seen live
/// (or acked), and is named in every sync after that.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    cursors: BTreeMap<ConversationId, MessageId>,
    /// The `rid` of the `sync` in flight (one at a time, per the spec).
    in_flight: Option<RequestId>,
    /// A sync (or another page) is wanted.
    wanted: bool,
    /// After a failed `sync`, wait for [`retry_sync`](Self::retry_sync).
    paused: bool,
    /// Messages that arrived ahead of a gap, per conversation, by id.
    ahead: BTreeMap<ConversationId, BTreeMap<MessageId, Message>>,
    ahead_len: usize,
    /// The held messages when the sync in flight was sent: a sync that
    /// ends with one of them still held was not given its conversation
    /// (the user left the group or the room), so the gap cannot fill.
    covered: Vec<(ConversationId, MessageId)>,
}

impl SyncState {
    /// Starts from the cursors a store loaded.
    pub(crate) fn new(cursors: BTreeMap<ConversationId, MessageId>) -> Self {
        Self { cursors, ..Self::default() }
    }

    /// The cursors.
    #[cfg(test)]
    pub(crate) fn cursors(&self) -> &BTreeMap<ConversationId, MessageId> {
        &self.cursors
    }

    /// The cursor of `conv` (`0`: nothing delivered yet).
    #[cfg(test)]
    pub(crate) fn cursor(&self, conv: ConversationId) -> MessageId {
        self.cursors.get(&conv).copied().unwrap_or(0)
    }

    /// What to do with message `id` of `conv`.
    pub(crate) fn classify(&self, conv: ConversationId, id: MessageId) -> Verdict {
        let cursor = match self.cursors.get(&conv) {
            Some(c) => *c,
            None if conv.kind() == ConversationKind::Room => return Verdict::Deliver,
            None => 0,
        };
        if id <= cursor {
            Verdict::Duplicate
        } else if id == cursor + 1 {
            Verdict::Deliver
        } else {
            Verdict::Gap
        }
    }

    /// The app has message `id` of `conv` (it was classified [`Verdict::Deliver`]).
    pub(crate) fn delivered(&mut self, conv: ConversationId, id: MessageId) {
        let c = self.cursors.entry(conv).or_insert(0);
        if id > *c {
            *c = id;
        }
    }

    /// A gap was seen: sync as soon as no sync is in flight.
    pub(crate) fn note_gap(&mut self) {
        self.wanted = true;
    }

    /// Keeps a message that came ahead of a gap, so that it is delivered
    /// as soon as the gap fills (usually by the sync in flight) instead of
    /// being fetched again. Asks for a sync unless one is in flight; if that
    /// one does not fill the gap, [`page_done`](Self::page_done) asks again.
    pub(crate) fn hold(&mut self, m: Message) {
        if self.in_flight.is_none() {
            self.wanted = true;
        }
        if self.ahead_len >= MAX_AHEAD {
            // Dropped: the sync brings it.
            self.wanted = true;
            return;
        }
        if self.ahead.entry(m.conv).or_default().insert(m.id, m).is_none() {
            self.ahead_len += 1;
        }
    }

    /// The held message that is now next in `conv`, if any (call after
    /// each [`delivered`](Self::delivered)). Held ones the cursor has passed
    /// are dropped as duplicates.
    pub(crate) fn take_next(&mut self, conv: ConversationId) -> Option<Message> {
        let cursor = self.cursors.get(&conv).copied().unwrap_or(0);
        let held = self.ahead.get_mut(&conv)?;
        let mut found = None;
        while let Some(entry) = held.first_entry() {
            if *entry.key() > cursor + 1 {
                break;
            }
            let m = entry.remove();
            self.ahead_len -= 1;
            if m.id == cursor + 1 {
                found = Some(m);
                break;
            }
        }
        if held.is_empty() {
            self.ahead.remove(&conv);
        }
        found
    }

    /// A new connection is up: whatever was in flight is gone; sync now.
    pub(crate) fn connected(&mut self) {
        self.in_flight = None;
        self.wanted = true;
        self.paused = false;
        self.ahead.clear();
        self.ahead_len = 0;
        self.covered.clear();
    }

    /// The connection is gone.
    pub(crate) fn disconnected(&mut self) {
        self.in_flight = None;
    }

    /// Whether a sync request is unanswered.
    pub(crate) fn sync_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether `rid` is the sync in flight.
    pub(crate) fn is_sync(&self, rid: RequestId) -> bool {
        self.in_flight == Some(rid)
    }

    /// The `sync` frame to send now, if one is wanted and none is in flight.
    pub(crate) fn next_sync(&mut self, rid: RequestId, limit: Option<u32>) -> Option<ClientFrame> {
        if !self.wanted || self.paused || self.in_flight.is_some() {
            return None;
        }
        self.wanted = false;
        self.in_flight = Some(rid);
        self.covered = self.ahead.iter().flat_map(|(c, held)| held.keys().map(|id| (*c, *id))).collect();
        Some(ClientFrame::Sync { rid, cursors: self.cursors.clone(), limit })
    }

    /// The page of sync `rid` was processed. Returns `true` when the device
    /// is caught up: no more pages, and no gap left open (held messages the
    /// sync did not reach mean another sync). Messages held since before
    /// the sync was sent that its last page left held are dropped instead:
    /// the server no longer gives their conversation, and asking again
    /// would loop.
    pub(crate) fn page_done(&mut self, rid: RequestId, has_more: bool) -> bool {
        if self.in_flight != Some(rid) {
            return false;
        }
        self.in_flight = None;
        if !has_more {
            for (conv, id) in std::mem::take(&mut self.covered) {
                let Some(held) = self.ahead.get_mut(&conv) else { continue };
                if held.remove(&id).is_some() {
                    self.ahead_len -= 1;
                    tracing::debug!(%conv, id, "held message dropped: the sync does not give its conversation");
                }
                if held.is_empty() {
                    self.ahead.remove(&conv);
                }
            }
        }
        if has_more || !self.ahead.is_empty() {
            self.wanted = true;
        }
        !self.wanted
    }

    /// The `sync` failed (an `error` frame): try again on the next
    /// [`retry_sync`](Self::retry_sync), not in a tight loop.
    pub(crate) fn sync_failed(&mut self, rid: RequestId) {
        if self.in_flight == Some(rid) {
            self.in_flight = None;
            self.wanted = true;
            self.paused = true;
        }
    }

    /// Lets a paused sync go again (called on the driver's periodic tick).
    pub(crate) fn retry_sync(&mut self) {
        self.paused = false;
    }
}

#[cfg(test)]
mod tests {
    use im_protocol::{GroupId, RoomId};

    use super::*;

    const G: ConversationId = ConversationId::Group(GroupId(1));
    const R: ConversationId = ConversationId::Room(RoomId(7));

    #[test]
    fn next_is_delivered_duplicates_dropped_and_gaps_detected() {
        let mut s = SyncState::new(BTreeMap::from([(G, 3)]));
        assert_eq!(s.classify(G, 3), Verdict::Duplicate);
        assert_eq!(s.classify(G, 1), Verdict::Duplicate);
        assert_eq!(s.classify(G, 5), Verdict::Gap);
        assert_eq!(s.classify(G, 4), Verdict::Deliver);
        s.delivered(G, 4);
        assert_eq!(s.cursor(G), 4);
        assert_eq!(s.classify(G, 4), Verdict::Duplicate, "the same message again");
        assert_eq!(s.classify(G, 5), Verdict::Deliver);
        // Unknown groups and direct chats start at 0.
        let other = ConversationId::Group(GroupId(2));
        assert_eq!(s.classify(other, 2), Verdict::Gap);
        assert_eq!(s.classify(other, 1), Verdict::Deliver);
    }

    #[test]
    fn a_room_starts_at_the_first_message_seen_then_is_strict() {
        let mut s = SyncState::default();
        assert_eq!(s.classify(R, 4051), Verdict::Deliver);
        s.delivered(R, 4051);
        assert_eq!(s.classify(R, 4053), Verdict::Gap);
        assert!(s.cursors().contains_key(&R), "named in later syncs");
    }

    fn msg(conv: ConversationId, id: MessageId) -> Message {
        Message::new(
            conv,
            id,
            im_protocol::UserId(1),
            im_protocol::ClientMsgId::new(format!("c{id}")).unwrap(),
            format!("m{id}"),
            0,
        )
    }

    /// Feeds a message the way the driver does; returns what the app got.
    fn feed(s: &mut SyncState, m: Message, app: &mut Vec<MessageId>) {
        let mut next = Some(m);
        while let Some(m) = next.take() {
            match s.classify(m.conv, m.id) {
                Verdict::Deliver => {
                    app.push(m.id);
                    s.delivered(m.conv, m.id);
                    next = s.take_next(m.conv);
                }
                Verdict::Duplicate => {}
                Verdict::Gap => s.hold(m),
            }
        }
    }

    #[test]
    fn live_and_sync_overlap_delivers_each_message_once_in_order() {
        // Cursor 2; messages 3..=6 exist. Live 4 arrives before the page
        // (held), live 5 in the middle of it, the page brings 3..=6.
        let mut s = SyncState::new(BTreeMap::from([(G, 2)]));
        let mut app = Vec::new();
        s.connected();
        let Some(ClientFrame::Sync { rid, cursors, .. }) = s.next_sync(1, None) else { panic!("sync") };
        assert_eq!(cursors.get(&G), Some(&2));
        feed(&mut s, msg(G, 4), &mut app);
        assert!(app.is_empty(), "held behind the gap");
        feed(&mut s, msg(G, 3), &mut app);
        assert_eq!(app, vec![3, 4], "the gap filled: the held one follows at once");
        feed(&mut s, msg(G, 4), &mut app); // the page's copy
        feed(&mut s, msg(G, 5), &mut app); // live, right on time
        feed(&mut s, msg(G, 5), &mut app); // the page's copy
        feed(&mut s, msg(G, 6), &mut app);
        assert!(s.page_done(rid, false), "caught up, no resync needed");
        assert_eq!(app, vec![3, 4, 5, 6]);
        assert!(s.next_sync(2, None).is_none(), "nothing wanted");
    }

    #[test]
    fn a_gap_the_sync_did_not_fill_asks_for_another_sync_with_advanced_cursors() {
        let mut s = SyncState::new(BTreeMap::from([(G, 2)]));
        let mut app = Vec::new();
        s.connected();
        let Some(ClientFrame::Sync { rid, .. }) = s.next_sync(1, None) else { panic!() };
        feed(&mut s, msg(G, 3), &mut app);
        feed(&mut s, msg(G, 6), &mut app); // stored after the page was made: 4, 5 missing
        assert!(!s.page_done(rid, false), "a gap is still open");
        let Some(ClientFrame::Sync { rid, cursors, .. }) = s.next_sync(2, None) else { panic!("resync") };
        assert_eq!(cursors.get(&G), Some(&3), "the next sync uses the advanced cursors");
        for id in [4, 5, 6] {
            feed(&mut s, msg(G, id), &mut app);
        }
        assert!(s.page_done(rid, false));
        assert_eq!(app, vec![3, 4, 5, 6], "6 was held and delivered once, after 5");
        // Outside a sync, a gap asks for one right away.
        feed(&mut s, msg(G, 8), &mut app);
        assert!(s.next_sync(3, None).is_some());
    }

    #[test]
    fn a_gap_the_sync_no_longer_gives_ends_the_sync_instead_of_looping() {
        // Regression (found by `proptests::sync`): message 2 of a group came
        // ahead of 1, then the user was removed from the group, so syncs no
        // longer give it and 1 never comes. Each page left 2 held, and
        // `page_done` asked for another sync, forever.
        let mut s = SyncState::new(BTreeMap::from([(G, 0)]));
        let mut app = Vec::new();
        s.connected();
        feed(&mut s, msg(G, 2), &mut app);
        let Some(ClientFrame::Sync { rid, .. }) = s.next_sync(1, None) else { panic!("sync") };
        assert!(s.page_done(rid, false), "held since before the sync, which did not fill the gap: dropped");
        assert!(s.next_sync(2, None).is_none(), "no sync loop");
        // Nothing was skipped: the cursor stayed, and the messages still come in order.
        assert_eq!(s.cursor(G), 0);
        feed(&mut s, msg(G, 2), &mut app);
        feed(&mut s, msg(G, 1), &mut app);
        assert_eq!(app, vec![1, 2]);
    }

    #[test]
    fn pages_continue_while_has_more_one_at_a_time_and_stale_pages_are_ignored() {
        let mut s = SyncState::default();
        s.connected();
        let Some(ClientFrame::Sync { rid, .. }) = s.next_sync(10, None) else { panic!() };
        assert!(s.next_sync(11, None).is_none(), "one sync in flight at a time");
        assert!(!s.page_done(99, false), "not our page");
        assert!(!s.page_done(rid, true));
        assert!(s.next_sync(12, None).is_some());
        s.disconnected();
        assert!(!s.page_done(12, false), "a page of a dead connection");
        s.connected();
        let Some(ClientFrame::Sync { rid, .. }) = s.next_sync(13, None) else { panic!() };
        s.sync_failed(rid);
        assert!(s.next_sync(14, None).is_none(), "paused after an error");
        s.retry_sync();
        assert!(s.next_sync(15, None).is_some());
    }
}
