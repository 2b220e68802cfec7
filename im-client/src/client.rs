//! [`Client`]: the cheap, clonable handle. It talks to the connection task
//! (the driver) over a channel; it never touches the socket itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use im_protocol::{
    ClientFrame, ConversationId, InboxEntry, Message, MessageId, Presence, Receipt, RequestId, RoomId,
    ServerFrame, UserId,
};
use tokio::sync::{mpsc, oneshot};

use crate::draft::Draft;
use crate::error::{RequestError, SendError};
use crate::files::{Attachment, FileError, Files};
use crate::options::ClientBuilder;
use crate::read_book::{ConversationState, ReadBook};

/// A request the driver sends for a handle and answers through `reply`.
pub(crate) enum Command {
    /// The draft is boxed: structured content makes it far larger than the other commands.
    Send {
        conv: ConversationId,
        draft: Box<Draft>,
        reply: oneshot::Sender<Result<SendReceipt, SendError>>,
    },
    Request {
        request: Request,
        reply: ReplyTx,
    },
    MarkRead {
        conv: ConversationId,
        id: MessageId,
    },
    Typing {
        conv: ConversationId,
        typing: bool,
        reply: ReplyTx,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

pub(crate) type ReplyTx = oneshot::Sender<Result<ServerFrame, RequestError>>;

/// A request/response exchange correlated by `rid`.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    Join(RoomId),
    Leave(RoomId),
    History { conv: ConversationId, before: Option<MessageId>, limit: Option<u32> },
    Presence(Vec<UserId>),
    Typing { conv: ConversationId, typing: bool },
    Inbox { after: Option<ConversationId>, limit: Option<u32> },
    Receipts(ConversationId),
}

impl Request {
    pub(crate) fn frame(&self, rid: RequestId) -> ClientFrame {
        match self {
            Request::Join(room) => ClientFrame::Join { rid, room: *room },
            Request::Leave(room) => ClientFrame::Leave { rid, room: *room },
            Request::History { conv, before, limit } => {
                ClientFrame::History { rid, conv: *conv, before: *before, limit: *limit }
            }
            Request::Presence(users) => ClientFrame::QueryPresence { rid, users: users.clone() },
            Request::Typing { conv, typing } => ClientFrame::Typing { rid, conv: *conv, typing: *typing },
            Request::Inbox { after, limit } => ClientFrame::Inbox { rid, after: *after, limit: *limit },
            Request::Receipts(conv) => ClientFrame::Receipts { rid, conv: *conv },
        }
    }
}

/// The outcome of [`Client::send_detailed`]: the stored message's id, and
/// whether the server already had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReceipt {
    /// The id the server assigned to the message.
    pub id: MessageId,
    /// The server had already stored this message (same client message id):
    /// an earlier attempt was stored but its `ack` was lost with the
    /// connection, and this resend stored nothing new (the protocol's
    /// `duplicate: true`). The message is stored once either way.
    pub duplicate: bool,
}

/// One page of a conversation's history (ascending ids).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryPage {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
    /// Older messages exist: ask again with `before` = the first id here.
    pub has_more: bool,
}

/// One page of the inbox (see [`Client::inbox_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboxPage {
    /// Conversations in ascending conversation id order.
    pub entries: Vec<InboxEntry>,
    /// More follow: ask again with `after` = the last entry's `conv`.
    pub has_more: bool,
}

/// Most inbox pages [`Client::inbox`] reads (200 conversations each).
const INBOX_PAGES_MAX: usize = 1000;

/// The handle of a running client: clone it freely, use it from any task.
///
/// Created with [`Client::builder`]. The client stops when
/// [`shutdown`](Self::shutdown) is called, when every handle is dropped, when
/// the event stream is dropped, or when the server ends the session for good.
#[derive(Debug, Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    request_timeout: Duration,
    book: Arc<Mutex<ReadBook>>,
    files: Arc<Files>,
}

impl Client {
    pub(crate) fn new(
        tx: mpsc::Sender<Command>,
        request_timeout: Duration,
        book: Arc<Mutex<ReadBook>>,
        files: Arc<Files>,
    ) -> Self {
        Self { tx, request_timeout, book, files }
    }

    /// Uploads a file (`mime` its type, `name` its file name) and returns
    /// the attachment to put in a message ([`Attachment::content`]). The
    /// bytes go the way the server says: in the body of the upload
    /// request, or straight to its object store through a presigned URL.
    /// Needs a token: with password login, after the first
    /// [`Event::Connected`](crate::Event::Connected).
    pub async fn upload(
        &self,
        data: Vec<u8>,
        mime: &str,
        name: Option<&str>,
    ) -> Result<Attachment, FileError> {
        self.upload_with_progress(data, mime, name, |_, _| {}).await
    }

    /// [`upload`](Self::upload), calling `progress(sent, total)` as the
    /// bytes go out (every 64 KiB).
    pub async fn upload_with_progress(
        &self,
        data: Vec<u8>,
        mime: &str,
        name: Option<&str>,
        progress: impl FnMut(u64, u64) + Send + 'static,
    ) -> Result<Attachment, FileError> {
        let progress: Arc<Mutex<dyn FnMut(u64, u64) + Send>> = Arc::new(Mutex::new(progress));
        self.files.upload(data, mime, name, progress).await
    }

    /// Downloads the attachment `id` (from a message's content); members
    /// of a conversation that references it may. Check the bytes with
    /// [`Attachment::matches`] or the content's `sha256`.
    pub async fn download(&self, id: &str) -> Result<Vec<u8>, FileError> {
        self.files.download(id, |_, _| {}).await
    }

    /// [`download`](Self::download), calling `progress(received, total)`
    /// for each chunk (`total` when the server says the length).
    pub async fn download_with_progress(
        &self,
        id: &str,
        progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Vec<u8>, FileError> {
        self.files.download(id, progress).await
    }

    /// A builder with default options.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Sends `body` to `conv` and resolves with the id the server assigned,
    /// once the message is stored.
    ///
    /// The message gets a fresh client message id and waits in a bounded,
    /// ordered queue until acknowledged: if the connection drops it is resent
    /// after the reconnect with the same id, which the server deduplicates,
    /// so it is stored exactly once. Dropping the returned future does not
    /// cancel the send.
    ///
    /// This device's own messages also appear in the event stream as
    /// [`Event::Message`](crate::Event::Message), at their place in the
    /// conversation's order (right away when the ack's id is the next one,
    /// otherwise by the sync that fills the gap), so that the stream is the
    /// complete, ordered log of every conversation on every device.
    pub async fn send(&self, conv: ConversationId, body: impl Into<String>) -> Result<MessageId, SendError> {
        self.send_detailed(conv, body).await.map(|r| r.id)
    }

    /// [`send`](Self::send), also telling whether the message had already
    /// been stored by an earlier attempt whose `ack` was lost (a resend after
    /// a reconnect that the server deduplicated).
    pub async fn send_detailed(
        &self,
        conv: ConversationId,
        body: impl Into<String>,
    ) -> Result<SendReceipt, SendError> {
        self.send_mentioning(conv, body, &[]).await
    }

    /// [`send_detailed`](Self::send_detailed) of a message that mentions
    /// `mentions` (members of the conversation, at most
    /// [`MAX_MENTIONS`](crate::core::limits::MAX_MENTIONS)): they are
    /// pushed even when they muted the conversation.
    pub async fn send_mentioning(
        &self,
        conv: ConversationId,
        body: impl Into<String>,
        mentions: &[UserId],
    ) -> Result<SendReceipt, SendError> {
        self.send_draft(conv, Draft::text(body).mention(mentions)).await
    }

    /// Sends a [`Draft`]: text or another kind of content (an image by
    /// URL, a location, an app's `x-…` kind), maybe replying to an earlier
    /// message of `conv` and mentioning users; otherwise as
    /// [`send_detailed`](Self::send_detailed). The server checks the
    /// content's shape for its kind and refuses a reply to a message that
    /// does not exist ([`SendError::Rejected`] with `invalid_field`).
    pub async fn send_draft(&self, conv: ConversationId, draft: Draft) -> Result<SendReceipt, SendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Send { conv, draft: Box::new(draft), reply })
            .await
            .map_err(|_| SendError::Stopped)?;
        rx.await.unwrap_or(Err(SendError::Stopped))
    }

    /// Reacts to message `target` of `conv` with `emoji` (an event in
    /// the conversation's sequence: every device applies it to the message
    /// with [`im_protocol::events::apply`]; history shows the summary).
    pub async fn react(
        &self,
        conv: ConversationId,
        target: MessageId,
        emoji: impl Into<String>,
    ) -> Result<SendReceipt, SendError> {
        self.send_draft(conv, Draft::react(target, emoji)).await
    }

    /// Takes back this user's `emoji` reaction to message `target`.
    pub async fn unreact(
        &self,
        conv: ConversationId,
        target: MessageId,
        emoji: impl Into<String>,
    ) -> Result<SendReceipt, SendError> {
        self.send_draft(conv, Draft::unreact(target, emoji)).await
    }

    /// Replaces the body of this user's message `target` (within the
    /// server's `edit_window_ms`; [`SendError::Rejected`] with `too_late`
    /// after it, `forbidden` for someone else's message).
    pub async fn edit(
        &self,
        conv: ConversationId,
        target: MessageId,
        body: impl Into<String>,
    ) -> Result<SendReceipt, SendError> {
        self.send_draft(conv, Draft::edit(target, body)).await
    }

    /// Recalls message `target`: a tombstone on every device, its content
    /// erased from the server's storage.
    pub async fn recall(&self, conv: ConversationId, target: MessageId) -> Result<SendReceipt, SendError> {
        self.send_draft(conv, Draft::recall(target)).await
    }

    /// Joins an open room; its new messages then arrive live.
    pub async fn join(&self, room: RoomId) -> Result<(), RequestError> {
        match self.request(Request::Join(room)).await? {
            ServerFrame::Ok { .. } => Ok(()),
            other => Err(RequestError::UnexpectedReply(other.type_name())),
        }
    }

    /// Leaves a room.
    pub async fn leave(&self, room: RoomId) -> Result<(), RequestError> {
        match self.request(Request::Leave(room)).await? {
            ServerFrame::Ok { .. } => Ok(()),
            other => Err(RequestError::UnexpectedReply(other.type_name())),
        }
    }

    /// One page of `conv`'s history: the newest messages with ids below
    /// `before` (all: `None`), at most `limit` (server maximum: `None`).
    /// History pages are not part of the event stream and move no cursor.
    pub async fn history(
        &self,
        conv: ConversationId,
        before: Option<MessageId>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, RequestError> {
        match self.request(Request::History { conv, before, limit }).await? {
            ServerFrame::HistoryPage { messages, has_more, .. } => Ok(HistoryPage { messages, has_more }),
            other => Err(RequestError::UnexpectedReply(other.type_name())),
        }
    }

    /// The presence of `users` (those that exist).
    pub async fn query_presence(&self, users: &[UserId]) -> Result<Vec<Presence>, RequestError> {
        match self.request(Request::Presence(users.to_vec())).await? {
            ServerFrame::PresenceList { users, .. } => Ok(users),
            other => Err(RequestError::UnexpectedReply(other.type_name())),
        }
    }

    /// Tells the other members of `conv` (a direct chat or group) that this
    /// user types (`true`) or stopped (`false`); they get
    /// [`Event::Typing`](crate::Event::Typing). Call it with `true` on every
    /// keystroke: the client sends at most one `typing` per
    /// [`TYPING_REFRESH_MS`](crate::core::limits::TYPING_REFRESH_MS), keeps
    /// refreshing while calls keep coming, sends `false` by itself
    /// [`TYPING_IDLE`](crate::TYPING_IDLE) after the last call, and stops
    /// without a frame when the user sends a message there (receivers hide
    /// the indicator on the message). A call that sends is answered by the
    /// server (rooms are refused); a throttled one returns at once. Fails
    /// while disconnected (typing is not worth queueing).
    pub async fn typing(&self, conv: ConversationId, typing: bool) -> Result<(), RequestError> {
        let (reply, rx) = oneshot::channel();
        let exchange = async {
            self.tx.send(Command::Typing { conv, typing, reply }).await.map_err(|_| RequestError::Stopped)?;
            rx.await.unwrap_or(Err(RequestError::Stopped))
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(Ok(ServerFrame::Ok { .. })) => Ok(()),
            Ok(Ok(other)) => Err(RequestError::UnexpectedReply(other.type_name())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RequestError::Timeout),
        }
    }

    /// Marks `conv` read up to message `id` for this user and device
    /// (protocol version 2). Returns at once: the client's
    /// [`read_state`](Self::read_state) follows immediately (with an
    /// [`Event::Unread`](crate::Event::Unread) when the count changes), and
    /// the mark is sent when a connection can take it — after a reconnect
    /// if the client is offline; of several marks of one conversation
    /// only the highest goes out. The server keeps the highest id ever
    /// marked, and the user's other devices get
    /// [`Event::ReadUpTo`](crate::Event::ReadUpTo). An id above the newest
    /// message this client knows is lowered to it (for a conversation the
    /// client knows nothing of yet, the server checks the id). Fails only
    /// once the client has stopped.
    pub async fn mark_read(&self, conv: ConversationId, id: MessageId) -> Result<(), RequestError> {
        self.tx.send(Command::MarkRead { conv, id }).await.map_err(|_| RequestError::Stopped)
    }

    /// What this client knows of `conv`'s read state: newest id, read id,
    /// unread count (`None` before it heard of the conversation). Kept
    /// from the messages the app got, every mark on any of the user's
    /// devices, and the inbox the client reads after each connection's
    /// first sync.
    pub fn read_state(&self, conv: ConversationId) -> Option<ConversationState> {
        self.book.lock().unwrap_or_else(|p| p.into_inner()).get(conv)
    }

    /// [`read_state`](Self::read_state) of every conversation heard of, by id.
    pub fn read_states(&self) -> Vec<(ConversationId, ConversationState)> {
        self.book.lock().unwrap_or_else(|p| p.into_inner()).all()
    }

    /// The unread messages of all conversations together (the app badge).
    pub fn unread_total(&self) -> u64 {
        self.book.lock().unwrap_or_else(|p| p.into_inner()).total_unread()
    }

    /// One page of the inbox (protocol version 2): this user's
    /// conversations after `after` (from the first: `None`), each with its
    /// newest message id, the user's read id, the unread count and the last
    /// message; at most `limit` (server maximum 200: `None`).
    pub async fn inbox_page(
        &self,
        after: Option<ConversationId>,
        limit: Option<u32>,
    ) -> Result<InboxPage, RequestError> {
        match self.request(Request::Inbox { after, limit }).await? {
            ServerFrame::InboxPage { entries, has_more, .. } => Ok(InboxPage { entries, has_more }),
            other => Err(RequestError::UnexpectedReply(other.type_name())),
        }
    }

    /// The whole inbox: every page of [`inbox_page`](Self::inbox_page)
    /// (at most 200,000 conversations), with each last message. (The
    /// client already walks the inbox after the first sync of every
    /// connection to keep
    /// [`read_state`](Self::read_state) current; this is for drawing the
    /// conversation list.)
    pub async fn inbox(&self) -> Result<Vec<InboxEntry>, RequestError> {
        let mut all = Vec::new();
        let mut after = None;
        for _ in 0..INBOX_PAGES_MAX {
            let page = self.inbox_page(after, None).await?;
            after = page.entries.last().map(|e| e.conv);
            all.extend(page.entries);
            if !page.has_more || after.is_none() {
                break;
            }
        }
        Ok(all)
    }

    /// How far each member of `conv` (a direct chat or group) has read and
    /// received it (protocol version 2), by user id; members who do not
    /// share receipts are left out. This client reports what it received
    /// by itself (at most once a second); live changes come as
    /// [`Event::Receipt`](crate::Event::Receipt).
    pub async fn receipts(&self, conv: ConversationId) -> Result<Vec<Receipt>, RequestError> {
        match self.request(Request::Receipts(conv)).await? {
            ServerFrame::ReceiptList { receipts, .. } => Ok(receipts),
            other => Err(RequestError::UnexpectedReply(other.type_name())),
        }
    }

    /// Stops the client: closes the connection (code 1000), makes the
    /// cursors durable, fails unacknowledged sends with
    /// [`SendError::Stopped`], and ends the event stream with
    /// [`Event::Stopped`](crate::Event::Stopped). Returns once that is done.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn request(&self, request: Request) -> Result<ServerFrame, RequestError> {
        let (reply, rx) = oneshot::channel();
        let exchange = async {
            self.tx.send(Command::Request { request, reply }).await.map_err(|_| RequestError::Stopped)?;
            rx.await.unwrap_or(Err(RequestError::Stopped))
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::Timeout),
        }
    }
}
