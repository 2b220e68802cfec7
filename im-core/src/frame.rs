//! Frames: one JSON object per WebSocket text message, tagged by `type`.
//!
//! [`ClientFrame`] is what a client sends, [`ServerFrame`] what a server
//! sends. Every client request carries a request id `rid` which the reply
//! echoes (`ack`, `ok`, `sync_page`, `history_page`, `presence_list`,
//! `error`); pushes from the server (`message`, `presence`, `member`) carry
//! none. `docs/protocol.md` shows every frame with an example.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{ClientMsgId, ConversationId, GroupId, MessageId, RequestId, RoomId, UserId};
use crate::limits::WireLimits;
use crate::message::Message;

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientFrame {
    /// Store a message in a conversation; answered by `ack` once stored.
    Send {
        /// Request id.
        rid: RequestId,
        /// Target conversation.
        conv: ConversationId,
        /// The sender's idempotency key for this message.
        cmid: ClientMsgId,
        /// The content.
        body: String,
        /// Users the message mentions (at most
        /// [`crate::limits::MAX_MENTIONS`], each once, members of the
        /// conversation): a mention is pushed even when the user muted the
        /// conversation. Absent: none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<UserId>,
        /// The kind when not plain text (`location`, `image`, `file`,
        /// `audio`, `video`, or an app's `x-…`; see [`crate::content`]);
        /// `body` is then a short fallback text. Absent: `text`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        /// The content object of that kind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<serde_json::Value>,
        /// An earlier message of the same conversation this one replies to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
        /// For an event kind (`reaction`, `edit`, `recall`; see
        /// [`crate::events`]): the message of this conversation it changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<MessageId>,
    },
    /// Fetch what this device missed: every message with an id above the
    /// cursor, per conversation. Conversations of groups and direct chats the
    /// user belongs to are included even when not named (from cursor 0);
    /// rooms only when named. Answered by one `sync_page`; send `sync` again
    /// with the advanced cursors while `has_more` is true.
    Sync {
        /// Request id.
        rid: RequestId,
        /// `cur_max_message_id` per conversation.
        #[serde(default)]
        cursors: BTreeMap<ConversationId, MessageId>,
        /// Page size (capped by the server's `sync_page_max`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// One page of a conversation's history, newest first from `before`.
    History {
        /// Request id.
        rid: RequestId,
        /// The conversation.
        conv: ConversationId,
        /// Return messages with ids below this one (absent: the newest).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<MessageId>,
        /// Page size (capped by the server's `history_page_max`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Join an open room (persisted: the user stays joined across reconnects).
    Join {
        /// Request id.
        rid: RequestId,
        /// The room.
        room: RoomId,
    },
    /// Leave a room.
    Leave {
        /// Request id.
        rid: RequestId,
        /// The room.
        room: RoomId,
    },
    /// Ask for the presence of some users; answered by `presence_list`.
    QueryPresence {
        /// Request id.
        rid: RequestId,
        /// The users (at most [`crate::limits::MAX_PRESENCE_QUERY`]).
        users: Vec<UserId>,
    },
    /// The user started or stopped typing in a direct chat or group
    /// (protocol version 2); answered by `ok`. Never stored.
    Typing {
        /// Request id.
        rid: RequestId,
        /// The conversation (not a room).
        conv: ConversationId,
        /// `true`: typing (refresh every few seconds while it lasts);
        /// `false`: stopped.
        typing: bool,
    },
    /// Marks `conv` read up to message `id` for the user and this device
    /// (protocol version 2); answered by `ok`. The user's read id only
    /// grows: an id at or below it changes nothing.
    Read {
        /// Request id.
        rid: RequestId,
        /// The conversation.
        conv: ConversationId,
        /// The newest message read (at most the conversation's head).
        id: MessageId,
    },
    /// Every conversation of the user with its head, read id, unread count
    /// and last message, one page at a time (protocol version 2); answered
    /// by `inbox_page`.
    Inbox {
        /// Request id.
        rid: RequestId,
        /// Start after this conversation (the last one of the previous
        /// page); absent: from the first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<ConversationId>,
        /// Page size (capped by [`crate::limits::INBOX_PAGE_MAX`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// This device has received every message up to these ids (protocol
    /// version 2; direct chats and groups, others are ignored); answered by
    /// `ok`. Raises the user's delivered id, which the other members see
    /// in receipts. A client sends it at most about once a second, for the
    /// conversations that advanced since its last report.
    Received {
        /// Request id.
        rid: RequestId,
        /// The highest id received, per conversation.
        cursors: BTreeMap<ConversationId, MessageId>,
    },
    /// How far each member of a direct chat or group has read and received
    /// (protocol version 2); answered by `receipt_list`.
    Receipts {
        /// Request id.
        rid: RequestId,
        /// The conversation (not a room).
        conv: ConversationId,
    },
    /// Application-level heartbeat; answered by `pong`.
    Ping {
        /// Optional request id, echoed by `pong`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<RequestId>,
    },
}

impl ClientFrame {
    /// A `send` of plain text: no kind, content, reply or mentions.
    pub fn send(rid: RequestId, conv: ConversationId, cmid: ClientMsgId, body: impl Into<String>) -> Self {
        ClientFrame::Send {
            rid,
            conv,
            cmid,
            body: body.into(),
            mentions: Vec::new(),
            kind: None,
            content: None,
            reply_to: None,
            target: None,
        }
    }

    /// The request id, if the frame has one.
    pub fn rid(&self) -> Option<RequestId> {
        match self {
            ClientFrame::Send { rid, .. }
            | ClientFrame::Sync { rid, .. }
            | ClientFrame::History { rid, .. }
            | ClientFrame::Join { rid, .. }
            | ClientFrame::Leave { rid, .. }
            | ClientFrame::QueryPresence { rid, .. }
            | ClientFrame::Typing { rid, .. }
            | ClientFrame::Read { rid, .. }
            | ClientFrame::Inbox { rid, .. }
            | ClientFrame::Received { rid, .. }
            | ClientFrame::Receipts { rid, .. } => Some(*rid),
            ClientFrame::Ping { rid } => *rid,
        }
    }

    /// The protocol version that introduced this frame type: a server
    /// answers it with `unknown_type` on a connection of an older version.
    pub fn since_version(&self) -> u32 {
        match self {
            ClientFrame::Typing { .. }
            | ClientFrame::Read { .. }
            | ClientFrame::Inbox { .. }
            | ClientFrame::Received { .. }
            | ClientFrame::Receipts { .. } => 2,
            _ => 1,
        }
    }

    /// The wire name of the frame's type, e.g. `"send"` (for logs and metrics).
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientFrame::Send { .. } => "send",
            ClientFrame::Sync { .. } => "sync",
            ClientFrame::History { .. } => "history",
            ClientFrame::Join { .. } => "join",
            ClientFrame::Leave { .. } => "leave",
            ClientFrame::QueryPresence { .. } => "query_presence",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Read { .. } => "read",
            ClientFrame::Inbox { .. } => "inbox",
            ClientFrame::Received { .. } => "received",
            ClientFrame::Receipts { .. } => "receipts",
            ClientFrame::Ping { .. } => "ping",
        }
    }
}

/// Online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one live connection (or within the grace period after the last one closed).
    Online,
    /// No connection for longer than the grace period.
    Offline,
}

/// A user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The user.
    pub user: UserId,
    /// Online or offline.
    pub status: PresenceStatus,
    /// Last time the user was seen active (a frame or heartbeat), ms since the
    /// Unix epoch; `0` if never.
    pub last_active_at: u64,
}

/// How a group's membership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChangeKind {
    /// The user was added (or created the group).
    Added,
    /// The user was removed or left.
    Removed,
}

/// One conversation of a user as the inbox lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// The conversation.
    pub conv: ConversationId,
    /// Its newest message id (0: no message yet).
    pub head: MessageId,
    /// The user's read id: every message up to it counts as read.
    pub read: MessageId,
    /// Messages above the read id (`head - read`; the user's own messages
    /// never count, because sending marks the conversation read).
    pub unread: u64,
    /// The newest message, absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Message>,
    /// Pushes of this conversation are muted for the user until this time
    /// (ms since the Unix epoch; `u64::MAX`: for good); absent when not muted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<u64>,
}

/// How far one member has read and received a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The member.
    pub user: UserId,
    /// Their read id: every message up to it was seen.
    pub read: MessageId,
    /// Every message up to this id reached at least one of their devices
    /// (never below `read`).
    pub delivered: MessageId,
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame {
    /// First frame on every connection.
    Hello {
        /// Protocol version spoken ([`crate::PROTOCOL_VERSION`]).
        protocol: u32,
        /// The authenticated user.
        user: UserId,
        /// This connection's device id (from the `device` query parameter, or assigned).
        device: String,
        /// Name of the node serving this connection.
        node: String,
        /// How often the client should send `ping`, in ms.
        heartbeat_interval_ms: u64,
        /// The server closes a connection silent for this long (3002), in ms.
        idle_timeout_ms: u64,
        /// The limits in force.
        limits: WireLimits,
    },
    /// A `send` was stored (or had been stored before, `duplicate: true`).
    Ack {
        /// Request id of the `send`.
        rid: RequestId,
        /// The conversation.
        conv: ConversationId,
        /// The server-assigned message id.
        id: MessageId,
        /// The client message id of the `send`.
        cmid: ClientMsgId,
        /// Server time of storage, ms since the Unix epoch.
        ts: u64,
        /// `true` when the message had already been stored by an earlier send
        /// with the same `cmid` (nothing new was stored).
        duplicate: bool,
    },
    /// A message delivered live (to every connection of every recipient,
    /// the sender's other devices included).
    Message(Message),
    /// One page of a sync.
    SyncPage {
        /// Request id of the `sync`.
        rid: RequestId,
        /// Missed messages, grouped by conversation, ascending ids within each.
        messages: Vec<Message>,
        /// `true`: more are waiting; sync again with the advanced cursors.
        has_more: bool,
    },
    /// One page of history, ascending ids.
    HistoryPage {
        /// Request id of the `history`.
        rid: RequestId,
        /// The conversation.
        conv: ConversationId,
        /// Messages in ascending id order.
        messages: Vec<Message>,
        /// `true`: older messages exist (ask with `before` = the first id here).
        has_more: bool,
    },
    /// A request without a payload succeeded (`join`, `leave`).
    Ok {
        /// Request id.
        rid: RequestId,
    },
    /// Answer to `query_presence`.
    PresenceList {
        /// Request id.
        rid: RequestId,
        /// One entry per queried user that exists.
        users: Vec<Presence>,
    },
    /// A user someone cares about (a fellow group member or direct peer) went
    /// online or offline.
    Presence(Presence),
    /// A group's membership changed (sent to its members and to the user concerned).
    Member {
        /// The group.
        group: GroupId,
        /// The user added or removed.
        user: UserId,
        /// Added or removed.
        change: MemberChangeKind,
        /// Who made the change.
        by: UserId,
    },
    /// A contact relation of this user changed (protocol version 2): a
    /// request arrived (`pending`) or was sent from another device
    /// (`requested`), was accepted, or ended (`none`).
    Contact {
        /// The other user.
        user: crate::UserId,
        /// The relation now, from this user's side.
        state: crate::ContactState,
    },
    /// A fellow member started or stopped typing (protocol version 2; sent
    /// only to connections of version 2 or later). A `typing: true` that is
    /// not refreshed expires after [`crate::limits::TYPING_EXPIRY_MS`].
    UserTyping {
        /// The conversation.
        conv: ConversationId,
        /// Who is typing.
        user: UserId,
        /// Typing or stopped.
        typing: bool,
    },
    /// The user's read id in a conversation rose, because one of their
    /// other devices (or the HTTP API) marked it read (protocol version 2).
    ReadUpTo {
        /// The conversation.
        conv: ConversationId,
        /// The user's read id now.
        id: MessageId,
    },
    /// One page of the inbox (protocol version 2).
    InboxPage {
        /// Request id of the `inbox`.
        rid: RequestId,
        /// Conversations in ascending conversation id order (direct chats,
        /// then groups, then rooms).
        entries: Vec<InboxEntry>,
        /// `true`: more follow; ask with `after` = the last `conv` here.
        has_more: bool,
    },
    /// A fellow member of a direct chat or group read or received further
    /// (protocol version 2). Sent at most about once a second per member
    /// and conversation, carrying the latest state; groups above the
    /// server's live-receipt size get none (ask with `receipts`).
    Receipt {
        /// The conversation.
        conv: ConversationId,
        /// The member.
        user: UserId,
        /// Their read id.
        read: MessageId,
        /// Their delivered id (never below `read`).
        delivered: MessageId,
    },
    /// Answer to `receipts`.
    ReceiptList {
        /// Request id of the `receipts`.
        rid: RequestId,
        /// The conversation.
        conv: ConversationId,
        /// One entry per member who shares receipts, by user id.
        receipts: Vec<Receipt>,
    },
    /// A request failed; the connection stays open.
    Error {
        /// Request id, when the failed frame had a readable one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<RequestId>,
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail (never contains secrets).
        message: String,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's request id, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<RequestId>,
    },
}

impl ServerFrame {
    /// An `error` frame.
    pub fn error(rid: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error { rid, code, message: message.into() }
    }

    /// The protocol version that introduced this frame type: never sent to
    /// a connection of an older version.
    pub fn since_version(&self) -> u32 {
        match self {
            ServerFrame::UserTyping { .. }
            | ServerFrame::Contact { .. }
            | ServerFrame::ReadUpTo { .. }
            | ServerFrame::InboxPage { .. }
            | ServerFrame::Receipt { .. }
            | ServerFrame::ReceiptList { .. } => 2,
            _ => 1,
        }
    }

    /// The wire name of the frame's type, e.g. `"ack"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerFrame::Hello { .. } => "hello",
            ServerFrame::Ack { .. } => "ack",
            ServerFrame::Message(_) => "message",
            ServerFrame::SyncPage { .. } => "sync_page",
            ServerFrame::HistoryPage { .. } => "history_page",
            ServerFrame::Ok { .. } => "ok",
            ServerFrame::PresenceList { .. } => "presence_list",
            ServerFrame::Presence(_) => "presence",
            ServerFrame::Member { .. } => "member",
            ServerFrame::Contact { .. } => "contact",
            ServerFrame::UserTyping { .. } => "user_typing",
            ServerFrame::ReadUpTo { .. } => "read_up_to",
            ServerFrame::InboxPage { .. } => "inbox_page",
            ServerFrame::Receipt { .. } => "receipt",
            ServerFrame::ReceiptList { .. } => "receipt_list",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Pong { .. } => "pong",
        }
    }
}
