//! What the client knows of each conversation's read state: its newest
//! message id, the user's read id and the unread count, kept from every
//! message the app got, every read mark (this device's, the user's other
//! devices', the server's inbox) — readable by the app at any moment
//! through [`Client::read_state`](crate::Client::read_state).

use std::collections::BTreeMap;

use im_core::{ConversationId, InboxEntry, MessageId};

/// One conversation's read state as this client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConversationState {
    /// The newest message id known (delivered to the app, or announced by the inbox).
    pub head: MessageId,
    /// The user's read id (the highest marked on any device).
    pub read: MessageId,
    /// `head - read`: messages of others not read yet (the user's own
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

/// Every conversation's `(head, read)`.
#[derive(Debug, Default)]
pub(crate) struct ReadBook {
    convs: BTreeMap<ConversationId, (MessageId, MessageId)>,
}

impl ReadBook {
    /// The state of `conv`, if the client has heard of it.
    pub(crate) fn get(&self, conv: ConversationId) -> Option<ConversationState> {
        self.convs.get(&conv).map(|&(head, read)| state(head, read))
    }

    /// Every conversation heard of, by id.
    pub(crate) fn all(&self) -> Vec<(ConversationId, ConversationState)> {
        self.convs.iter().map(|(&c, &(head, read))| (c, state(head, read))).collect()
    }

    /// The sum of the unread counts.
    pub(crate) fn total_unread(&self) -> u64 {
        self.convs.values().map(|&(head, read)| head.saturating_sub(read)).sum()
    }

    /// A message reached the app (`own`: sent by this user, which marks
    /// the conversation read up to it).
    pub(crate) fn message(&mut self, conv: ConversationId, id: MessageId, own: bool) -> Option<Change> {
        self.update(conv, id, if own { id } else { 0 })
    }

    /// The read id is at least `id` (a mark here or elsewhere).
    pub(crate) fn read(&mut self, conv: ConversationId, id: MessageId) -> Option<Change> {
        self.update(conv, id, id)
    }

    /// The server's inbox entry for a conversation.
    pub(crate) fn inbox(&mut self, e: &InboxEntry) -> Option<Change> {
        self.update(e.conv, e.head, e.read)
    }

    /// Raises head to at least `head` and read to at least `read`.
    fn update(&mut self, conv: ConversationId, head: MessageId, read: MessageId) -> Option<Change> {
        let entry = self.convs.entry(conv).or_insert((0, 0));
        let before = state(entry.0, entry.1);
        entry.1 = entry.1.max(read);
        entry.0 = entry.0.max(head).max(entry.1);
        let after = state(entry.0, entry.1);
        (after != before).then_some(Change {
            state: after,
            read_rose: after.read > before.read,
            unread_changed: after.unread != before.unread,
        })
    }
}

fn state(head: MessageId, read: MessageId) -> ConversationState {
    ConversationState { head, read, unread: head.saturating_sub(read) }
}

#[cfg(test)]
mod tests {
    use im_core::{GroupId, RoomId};

    use super::*;

    #[test]
    fn unread_follows_messages_marks_and_own_sends() {
        let g = ConversationId::Group(GroupId(1));
        let mut book = ReadBook::default();
        assert_eq!(book.get(g), None);
        let c = book.message(g, 1, false).unwrap();
        assert_eq!((c.state.unread, c.read_rose, c.unread_changed), (1, false, true));
        book.message(g, 2, false).unwrap();
        assert_eq!(book.get(g).unwrap(), ConversationState { head: 2, read: 0, unread: 2 });
        // A duplicate changes nothing.
        assert_eq!(book.message(g, 2, false), None);
        // Marking read.
        let c = book.read(g, 1).unwrap();
        assert_eq!((c.state.unread, c.read_rose), (1, true));
        assert_eq!(book.read(g, 1), None, "an older mark moves nothing");
        // One's own message reads everything up to it.
        let c = book.message(g, 3, true).unwrap();
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
}
