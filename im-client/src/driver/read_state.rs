//! The driver's side of read state and typing: keeping the app-visible
//! [`ReadBook`](crate::read_book::ReadBook) current and telling the app
//! what changed.

use im_protocol::{ConversationId, InboxEntry, Message, MessageId, UserId};

use super::{Driver, Ended};
use crate::events::Event;
use crate::read_book::{Change, ReadBook};

impl Driver {
    fn book(&self) -> std::sync::MutexGuard<'_, ReadBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The app marked `conv` read up to `id`: the book follows at once,
    /// the mark goes out when a connection can take it. An id above the
    /// newest message known is lowered to it (what was not received
    /// cannot have been read).
    pub(super) fn mark_read(&mut self, conv: ConversationId, id: MessageId) {
        let head = self.book().get(conv).map_or(0, |s| s.head);
        let id = if head > 0 { id.min(head) } else { id };
        if id == 0 {
            return;
        }
        let change = self.book().read(conv, id);
        self.read_sync.mark(conv, id);
        if let Some(c) = change.filter(|c| c.unread_changed) {
            self.pending_unread.push((conv, c));
        }
    }

    /// A message reached the app: counts, receipts and typing follow.
    pub(super) async fn after_delivery(&mut self, m: &Message) -> Result<(), Ended> {
        let own = Some(m.from) == self.me;
        if own {
            self.typing_out.sent_message(m.conv);
        } else {
            self.read_sync.delivered(m.conv, m.id);
            if self.typing_in.message_from(m.conv, m.from) {
                self.emit_or_stop(Event::Typing { conv: m.conv, user: m.from, typing: false }).await?;
            }
        }
        let change = self.book().message(m.conv, m.id, own, m.is_event());
        self.changed(m.conv, change, false).await
    }

    /// The user's read id rose elsewhere (`read_up_to`).
    pub(super) async fn read_elsewhere(&mut self, conv: ConversationId, id: MessageId) -> Result<(), Ended> {
        let change = self.book().read(conv, id);
        self.emit_or_stop(Event::ReadUpTo { conv, id }).await?;
        self.changed(conv, change, false).await
    }

    /// A page of the inbox walk after a sync.
    pub(super) async fn inbox_entries(&mut self, entries: &[InboxEntry]) -> Result<(), Ended> {
        for e in entries {
            let change = self.book().inbox(e);
            self.changed(e.conv, change, true).await?;
        }
        Ok(())
    }

    /// Unread counts changed by local marks, told to the app now.
    pub(super) async fn flush_unread(&mut self) -> Result<(), Ended> {
        for (conv, c) in std::mem::take(&mut self.pending_unread) {
            self.emit_or_stop(Event::Unread { conv, unread: c.state.unread, read: c.state.read }).await?;
        }
        Ok(())
    }

    /// Tells the app about a change: `ReadUpTo` when `announce_read` and
    /// the read id rose, `Unread` when the count changed.
    async fn changed(
        &mut self,
        conv: ConversationId,
        change: Option<Change>,
        announce_read: bool,
    ) -> Result<(), Ended> {
        let Some(c) = change else { return Ok(()) };
        if announce_read && c.read_rose {
            self.emit_or_stop(Event::ReadUpTo { conv, id: c.state.read }).await?;
        }
        if c.unread_changed {
            self.emit_or_stop(Event::Unread { conv, unread: c.state.unread, read: c.state.read }).await?;
        }
        Ok(())
    }

    /// Others' typing that expired: told to the app as stopped.
    pub(super) async fn expire_typing(&mut self) -> Result<(), Ended> {
        for (conv, user) in self.typing_in.expired(std::time::Instant::now()) {
            self.emit_or_stop(Event::Typing { conv, user, typing: false }).await?;
        }
        Ok(())
    }

    /// `user` started or stopped typing in `conv`.
    pub(super) async fn heard_typing(
        &mut self,
        conv: ConversationId,
        user: UserId,
        typing: bool,
    ) -> Result<(), Ended> {
        self.typing_in.heard(conv, user, typing, std::time::Instant::now());
        self.emit_or_stop(Event::Typing { conv, user, typing }).await
    }
}
