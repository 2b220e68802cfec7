//! What the client knows of each conversation's read state: its newest
//! message id, the user's read id and the unread count, kept from every
//! message the app got, every read mark (this device's, the user's other
//! devices', the server's inbox) — readable by the app at any moment
//! through [`Client::read_state`](crate::Client::read_state).

use std::collections::{BTreeMap, BTreeSet};

use im_protocol::{ConversationId, InboxEntry, MessageId};

/// One conversation's read state as this client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConversationState {
    /// The newest message id known (delivered to the app, or announced by the inbox).
    pub head: MessageId,
    /// The user's read id (the highest marked on any device).
    pub read: MessageId,
    /// Messages of others above the read id, leaving events out
    /// (reactions, edits, recalls and notices do not count; the user's own
    /// messages raise the read id, as on the server).
    pub unread: u64,
}

/// How one update changed a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    /// The state after the update.
    pub(crate) state: ConversationState,
    /// The read id rose.
    pub(crate) read_rose: bool,
    /// The unread count changed.
    pub(crate) unread_changed: bool,
}

/// What the book keeps of one conversation.
#[derive(Debug, Default, Clone)]
struct Conv {
    head: MessageId,
    read: MessageId,
    /// Events (reactions, edits, recalls, notices) above `read` that
    /// reached the app: they do not count as unread.
    events: BTreeSet<MessageId>,
    /// Events the server's inbox left out of its count but the app has
    /// not seen, all at or below `inbox_head`.
    hidden_events: u64,
    inbox_head: MessageId,
}

impl Conv {
    fn state(&self) -> ConversationState {
        let above = self.head.saturating_sub(self.read);
        let hidden = if self.read < self.inbox_head { self.hidden_events } else { 0 };
        let unread = above.saturating_sub(self.events.len() as u64).saturating_sub(hidden);
        ConversationState { head: self.head, read: self.read, unread }
    }

    fn raise_read(&mut self, read: MessageId) {
        if read <= self.read {
            return;
        }
        self.read = read;
        self.events = self.events.split_off(&(read + 1));
        // The hidden events lie in (old read, inbox head]: at most that
        // many of them can still be above the new read id.
        self.hidden_events = self.hidden_events.min(self.inbox_head.saturating_sub(read));
    }
}

/// Every conversation's head, read id and the events that do not count.
#[derive(Debug, Default)]
pub(crate) struct ReadBook {
    convs: BTreeMap<ConversationId, Conv>,
}

impl ReadBook {
    /// The state of `conv`, if the client has heard of it.
    pub(crate) fn get(&self, conv: ConversationId) -> Option<ConversationState> {
        self.convs.get(&conv).map(Conv::state)
    }

    /// Every conversation heard of, by id.
    pub(crate) fn all(&self) -> Vec<(ConversationId, ConversationState)> {
        self.convs.iter().map(|(&c, v)| (c, v.state())).collect()
    }

    /// The sum of the unread counts.
    pub(crate) fn total_unread(&self) -> u64 {
        self.convs.values().map(|v| v.state().unread).sum()
    }

    /// A message reached the app (`own`: sent by this user, which marks
    /// the conversation read up to it; `event`: a reaction, edit, recall or
    /// notice, which does not count as unread).
    pub(crate) fn message(
        &mut self,
        conv: ConversationId,
        id: MessageId,
        own: bool,
        event: bool,
    ) -> Option<Change> {
        self.update(conv, |c| {
            if own {
                c.raise_read(id);
            } else if event && id > c.read {
                c.events.insert(id);
            }
            c.head = c.head.max(id);
        })
    }

    /// The read id is at least `id` (a mark here or elsewhere).
    pub(crate) fn read(&mut self, conv: ConversationId, id: MessageId) -> Option<Change> {
        self.update(conv, |c| {
            c.raise_read(id);
            c.head = c.head.max(id);
        })
    }

    /// The server's inbox entry for a conversation (its unread count
    /// leaves events out).
    pub(crate) fn inbox(&mut self, e: &InboxEntry) -> Option<Change> {
        self.update(e.conv, |c| {
            c.raise_read(e.read);
            if e.head >= c.head {
                let above = e.head.saturating_sub(c.read);
                let known = c.events.iter().filter(|&&id| id <= e.head).count() as u64;
                c.hidden_events = above.saturating_sub(e.unread).saturating_sub(known);
                c.inbox_head = e.head;
                c.head = e.head;
            }
        })
    }

    fn update(&mut self, conv: ConversationId, f: impl FnOnce(&mut Conv)) -> Option<Change> {
        let entry = self.convs.entry(conv).or_default();
        let before = entry.state();
        f(entry);
        entry.head = entry.head.max(entry.read);
        let after = entry.state();
        (after != before).then_some(Change {
            state: after,
            read_rose: after.read > before.read,
            unread_changed: after.unread != before.unread,
        })
    }
}

#[cfg(test)]
mod tests {
    use im_protocol::{GroupId, RoomId};

    use super::*;

    #[test]
    fn unread_follows_messages_marks_and_own_sends() {
        let g = ConversationId::Group(GroupId(1));
        let mut book = ReadBook::default();
        assert_eq!(book.get(g), None);
        let c = book.message(g, 1, false, false).unwrap();
        assert_eq!((c.state.unread, c.read_rose, c.unread_changed), (1, false, true));
        book.message(g, 2, false, false).unwrap();
        assert_eq!(book.get(g).unwrap(), ConversationState { head: 2, read: 0, unread: 2 });
        // A duplicate changes nothing.
        assert_eq!(book.message(g, 2, false, false), None);
        // Marking read.
        let c = book.read(g, 1).unwrap();
        assert_eq!((c.state.unread, c.read_rose), (1, true));
        assert_eq!(book.read(g, 1), None, "an older mark moves nothing");
        // One's own message reads everything up to it.
        let c = book.message(g, 3, true, false).unwrap();
        assert_eq!(c.state, ConversationState { head: 3, read: 3, unread: 0 });
        // A mark above the known head: the server knows more.
        assert_eq!(book.read(g, 5).unwrap().state, ConversationState { head: 5, read: 5, unread: 0 });
        // The inbox only raises.
        let r = ConversationId::Room(RoomId(2));
        let entry = InboxEntry { conv: r, head: 10, read: 4, unread: 6, last: None, muted_until: None };
        assert_eq!(book.inbox(&entry).unwrap().state.unread, 6);
        let older = InboxEntry { head: 8, read: 2, unread: 6, ..entry.clone() };
        assert_eq!(book.inbox(&older), None);
        assert_eq!(book.total_unread(), 6);
        assert_eq!(book.all().iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![g, r]);
    }

    #[test]
    fn events_do_not_count() {
        let g = ConversationId::Group(GroupId(1));
        let mut book = ReadBook::default();
        book.message(g, 1, false, false);
        book.message(g, 2, false, true); // a reaction
        book.message(g, 3, false, false);
        assert_eq!(book.get(g).unwrap(), ConversationState { head: 3, read: 0, unread: 2 });
        book.read(g, 2);
        assert_eq!(book.get(g).unwrap().unread, 1);
        book.message(g, 4, false, true);
        assert_eq!(book.get(g).unwrap().unread, 1);
        book.read(g, 4);
        assert_eq!(book.get(g).unwrap().unread, 0);
        // The inbox says 10 above read 4 hold 3 countable messages: 3 hidden events.
        let entry = InboxEntry { conv: g, head: 10, read: 4, unread: 3, last: None, muted_until: None };
        assert_eq!(book.inbox(&entry).unwrap().state.unread, 3);
        book.message(g, 11, false, false);
        assert_eq!(book.get(g).unwrap().unread, 4);
        book.read(g, 10);
        assert_eq!(book.get(g).unwrap().unread, 1);
    }
}
