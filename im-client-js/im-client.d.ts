// im-client.d.ts — TypeScript declarations for im-client.js (the `im` chat
// client): the public API, the events, and the wire frame / message types of
// docs/protocol.md. Wire objects keep the protocol's snake_case field names.
// Everything declared here is exported by im-client.js (some of it re-exported
// from the sibling modules); connection.js, connect.js, frames.js and the
// `Files` class of files.js are internal.

// ------------------------------------------------------------------ ids

/** `"d:A:B"` (A < B), `"g:N"` or `"r:N"` (protocol §4). */
export type ConversationId = string;
export type UserId = number;
export type MessageId = number;
export type GroupId = number;
export type RoomId = number;
export type RequestId = number;

export function isConversationId(s: unknown): s is ConversationId;
export function convKind(conv: ConversationId): 'direct' | 'group' | 'room' | null;
export function directConv(a: UserId, b: UserId): ConversationId;
export function groupConv(n: GroupId): ConversationId;
export function roomConv(n: RoomId): ConversationId;
export function compareConv(a: ConversationId, b: ConversationId): number;

// ------------------------------------------------------------ messages

/** A stored message (protocol §6.3), as in `message`, `sync_page`, `history_page` and the inbox's `last`. */
export interface Message {
  conv: ConversationId;
  id: MessageId;
  from: UserId;
  cmid: string;
  body: string;
  /** Server time of storage, ms since the epoch (display only; never for ordering). */
  ts: number;
  mentions?: UserId[];
  /** Absent for plain text (protocol §13). */
  kind?: string;
  content?: Record<string, unknown>;
  reply_to?: MessageId;
  /** For an event (`reaction`, `edit`, `recall`): the message of this conversation it changes. */
  target?: MessageId;
  /** The newest edit applied (the edit event's id); `body`, `content` and `mentions` are the edited ones. */
  edited?: MessageId;
  /** The recall event that emptied this message: a tombstone (`body` "", no kind, content, mentions, reply or reactions). */
  recalled?: MessageId;
  /** The reactions now, in the order their emojis were first used (absent when none). */
  reactions?: ReactionSummary[];
}

/** The users who reacted to a message with one emoji (`users` ascending; the count is its length). */
export interface ReactionSummary {
  emoji: string;
  users: UserId[];
}

/** What `send` takes besides a plain string. */
export interface Draft {
  /** The text, or the fallback text of another kind. */
  body: string;
  kind?: 'location' | 'image' | 'file' | 'audio' | 'video' | `x-${string}` | 'text' | 'reaction' | 'edit' | 'recall';
  content?: Record<string, unknown>;
  replyTo?: MessageId;
  mentions?: UserId[];
  /** For an event kind (`reaction`, `edit`, `recall`; required there, refused elsewhere): the message it changes. */
  target?: MessageId;
}

// --------------------------------------------------------------- events (events.js)

export const REACTION: 'reaction';
export const EDIT: 'edit';
export const RECALL: 'recall';
export const SYSTEM: 'system';
export const EVENT_KINDS: readonly ['reaction', 'edit', 'recall', 'system'];
/** Longest reaction emoji, in UTF-8 bytes (32). */
export const MAX_EMOJI_LEN: number;
/** Most distinct emojis on one message (50). */
export const MAX_EMOJIS_PER_MESSAGE: number;
/** Most reactions on one message (5000). */
export const MAX_REACTIONS_PER_MESSAGE: number;
export const SYSTEM_MEMBER_ADDED: 'member_added';
export const SYSTEM_MEMBER_REMOVED: 'member_removed';
export const SYSTEM_MEMBER_LEFT: 'member_left';
export const SYSTEM_ROLE_CHANGED: 'role_changed';
export const SYSTEM_MEMBER_MUTED: 'member_muted';
export const SYSTEM_MEMBER_UNMUTED: 'member_unmuted';
export const SYSTEM_MEMBER_KICKED: 'member_kicked';
export const SYSTEM_MEMBER_BANNED: 'member_banned';
export const SYSTEM_MEMBER_UNBANNED: 'member_unbanned';

/** What an event does (`eventChange`). */
export type EventChange =
  | { type: 'reaction'; emoji: string; remove: boolean }
  /** `content`: the target's new content object, when the edit has one. */
  | { type: 'edit'; content?: Record<string, unknown> }
  | { type: 'recall' }
  | { type: 'system'; event: 'member_added' | 'member_removed' | 'member_left' | 'role_changed' | 'member_muted' | 'member_unmuted' | 'member_kicked' | 'member_banned' | 'member_unbanned' | string; user?: UserId; role?: string; name?: string; until?: number };

export function isEventKind(kind: string | undefined | null): kind is 'reaction' | 'edit' | 'recall' | 'system';
/** Whether `m` is an event (reaction, edit, recall, system notice): not counted as unread, not drawn as a message. */
export function isEvent(m: Pick<Message, 'kind'> | null | undefined): boolean;
export function isRecalled(m: Pick<Message, 'recalled'> | null | undefined): boolean;
/** 1 to 32 UTF-8 bytes, no whitespace or control characters. */
export function isValidEmoji(emoji: unknown): emoji is string;
/** What event `m` does; null when `m` is no event or its content is malformed. */
export function eventChange(m: Pick<Message, 'kind' | 'content'>): EventChange | null;
/**
 * Applies `event` to `message` in place (as the server did when it stored
 * it) and returns whether it changed: ignored unless `event.target ===
 * message.id` (same conversation) and `message` is not recalled; an edit
 * older than `message.edited` is ignored; idempotent. A changed
 * `reactions` array is replaced, not mutated.
 */
export function applyEvent(message: Message, event: Message): boolean;
/** Empties `message` as recall event `by` does. */
export function recallMessage(message: Message, by: MessageId): void;
/** Throw TypeError on a bad target, emoji, body, content or mentions. */
export function reactionDraft(target: MessageId, emoji: string, remove?: boolean): Draft & { kind: 'reaction'; target: MessageId };
export function editDraft(target: MessageId, body: string, opts?: { content?: Record<string, unknown>; mentions?: UserId[] }): Draft & { kind: 'edit'; target: MessageId };
export function recallDraft(target: MessageId): Draft & { kind: 'recall'; target: MessageId };

// ---------------------------------------------------------- attachments

/** An uploaded file as the server measured it (http-api.md §13.1). */
export interface Attachment {
  /** `at_…`: what a message's content names. */
  id: string;
  mime: string;
  /** Bytes. */
  size: number;
  /** SHA-256 of the bytes, lowercase hex. */
  sha256: string;
  name?: string;
  width?: number;
  height?: number;
  duration_ms?: number;
  /** The uploader. */
  owner?: UserId;
  created_at_ms?: number;
}

/** `GET /api/v1/attachments/config`. */
export interface UploadConfig {
  upload: 'direct' | 'presigned';
  max_bytes: number;
  /** `type/subtype` or `type/*`. */
  types: string[];
}

export interface UploadOptions {
  /** The MIME type (default: the Blob's `type`; required for bytes). */
  mime?: string;
  /** The file name (default: the File's `name`). */
  name?: string;
  width?: number;
  height?: number;
  durationMs?: number;
  /** Bytes sent so far and in all: as they go with XMLHttpRequest (browsers), else once at the end. */
  onProgress?: (sent: number, total: number) => void;
  /** Cancels the upload (rejects with kind `aborted`). */
  signal?: AbortSignal;
}

export interface DownloadOptions {
  /** Bytes received so far, and the length the answer declared (null: none). */
  onProgress?: (received: number, total: number | null) => void;
  signal?: AbortSignal;
}

/** Media content of protocol §13 naming an attachment. */
export interface AttachmentContent {
  attachment: string;
  mime?: string;
  size?: number;
  sha256?: string;
  name?: string;
  width?: number;
  height?: number;
  duration_ms?: number;
}

export function isAttachmentId(id: unknown): id is string;
/** `image`, `audio` or `video` by the MIME type's family, else `file`. */
export function attachmentKind(mime: string): 'image' | 'audio' | 'video' | 'file';
/** `{kind, content}` of a message carrying the attachment (im-client's `Attachment::content()`). */
export function attachmentContent(attachment: Attachment): { kind: 'image' | 'audio' | 'video' | 'file'; content: AttachmentContent };
/** A draft for `send`; `body` defaults to `[image]`, `[audio]`, `[video]` or `[file]`. */
export function attachmentDraft(
  attachment: Attachment,
  opts?: { body?: string; replyTo?: MessageId; mentions?: UserId[] },
): Draft & { kind: 'image' | 'audio' | 'video' | 'file'; content: AttachmentContent };
/** Lowercase hex SHA-256 (WebCrypto; rejects with `unsupported` without `crypto.subtle`). */
export function sha256Hex(data: Blob | ArrayBuffer | ArrayBufferView): Promise<string>;
/** Whether `bytes` have the attachment's size and SHA-256. */
export function attachmentMatches(attachment: Pick<Attachment, 'size' | 'sha256'>, bytes: Blob | ArrayBuffer | ArrayBufferView): Promise<boolean>;

export interface Limits {
  max_frame_bytes: number;
  max_body_bytes: number;
  sync_page_max: number;
  history_page_max: number;
  rate_per_sec: number;
  rate_burst: number;
  max_in_flight: number;
  /** How long after sending a message its sender may edit it (0: a server without events). */
  edit_window_ms: number;
  /** How long after sending a message its sender may recall it (owners and admins of a group: any time). */
  recall_window_ms: number;
}
export const DEFAULT_LIMITS: Readonly<Limits>;
export const PROTOCOL_VERSION: 2;
export const MIN_PROTOCOL_VERSION: 1;

export interface Presence {
  user: UserId;
  status: 'online' | 'offline';
  last_active_at: number;
}

export interface InboxEntry {
  conv: ConversationId;
  head: MessageId;
  read: MessageId;
  unread: number;
  last?: Message;
  muted_until?: number;
}

export interface Receipt {
  user: UserId;
  read: MessageId;
  delivered: MessageId;
}

// -------------------------------------------------------------- frames

/** Frames a client sends (protocol §5). */
export type ClientFrame =
  | { type: 'send'; rid: RequestId; conv: ConversationId; cmid: string; body: string; kind?: string; content?: Record<string, unknown>; reply_to?: MessageId; mentions?: UserId[]; target?: MessageId }
  | { type: 'sync'; rid: RequestId; cursors?: Record<ConversationId, MessageId>; limit?: number }
  | { type: 'history'; rid: RequestId; conv: ConversationId; before?: MessageId; limit?: number }
  | { type: 'join'; rid: RequestId; room: RoomId }
  | { type: 'leave'; rid: RequestId; room: RoomId }
  | { type: 'query_presence'; rid: RequestId; users: UserId[] }
  | { type: 'ping'; rid?: RequestId }
  | { type: 'typing'; rid: RequestId; conv: ConversationId; typing: boolean }
  | { type: 'read'; rid: RequestId; conv: ConversationId; id: MessageId }
  | { type: 'inbox'; rid: RequestId; after?: ConversationId; limit?: number }
  | { type: 'received'; rid: RequestId; cursors: Record<ConversationId, MessageId> }
  | { type: 'receipts'; rid: RequestId; conv: ConversationId };

/** Where two users stand, from this user's side (protocol §15). */
export type ContactState = 'requested' | 'pending' | 'accepted' | 'none';

/** Error codes (protocol §10). */
export type ErrorCode =
  | 'bad_frame' | 'unknown_type' | 'invalid_field' | 'body_too_large' | 'not_member' | 'no_such_conversation'
  | 'no_such_room' | 'no_such_group' | 'no_such_user' | 'forbidden' | 'group_full' | 'rate_limited'
  | 'unauthorized' | 'bad_credentials' | 'conflict' | 'internal' | 'unavailable'
  /** Event sends only: the target is no message an event can change (none, an event, recalled); its window passed. */
  | 'no_such_message' | 'too_late'
  /** A moderator muted the sender here (not retried); banned from the group or room. */
  | 'muted' | 'banned';

/** Codes of the HTTP calls of attachments (http-api.md §2, §13); `http_<status>` when the answer had none (an object store, a proxy). */
export type HttpErrorCode = ErrorCode | 'unsupported_media_type' | 'no_such_attachment' | `http_${number}`;

/** Frames a server sends (protocol §6). */
export type ServerFrame =
  | { type: 'hello'; protocol: number; user: UserId; device: string; node: string; heartbeat_interval_ms: number; idle_timeout_ms: number; limits: Limits }
  | { type: 'ack'; rid: RequestId; conv: ConversationId; id: MessageId; cmid: string; ts: number; duplicate: boolean }
  | ({ type: 'message' } & Message)
  | { type: 'sync_page'; rid: RequestId; messages: Message[]; has_more: boolean }
  | { type: 'history_page'; rid: RequestId; conv: ConversationId; messages: Message[]; has_more: boolean }
  | { type: 'ok'; rid: RequestId }
  | { type: 'presence_list'; rid: RequestId; users: Presence[] }
  | ({ type: 'presence' } & Presence)
  | { type: 'member'; group: GroupId; user: UserId; change: 'added' | 'removed'; by: UserId }
  | { type: 'contact'; user: UserId; state: ContactState }
  | { type: 'error'; rid?: RequestId; code: ErrorCode; message: string }
  | { type: 'pong'; rid?: RequestId }
  | { type: 'user_typing'; conv: ConversationId; user: UserId; typing: boolean }
  | { type: 'read_up_to'; conv: ConversationId; id: MessageId }
  | { type: 'inbox_page'; rid: RequestId; entries: InboxEntry[]; has_more: boolean }
  | ({ type: 'receipt'; conv: ConversationId } & Receipt)
  | { type: 'receipt_list'; rid: RequestId; conv: ConversationId; receipts: Receipt[] };

// ---------------------------------------------------------- close codes

export const CloseCode: Readonly<{
  RECONNECT: 3000; SLOW_CONSUMER: 3001; HEARTBEAT_TIMEOUT: 3002; SHUTDOWN: 3500; DRAIN: 3501; NODE_ISOLATED: 3502;
  UNAUTHORIZED: 4000; SESSION_REVOKED: 4001; BANNED: 4002; UNSUPPORTED_PROTOCOL: 4003; POLICY_VIOLATION: 4004;
  INVALID_PAYLOAD: 1007; FRAME_TOO_BIG: 1009;
}>;
export const Reaction: Readonly<{ SAME_NODE: 'same_node'; DISPATCHER: 'dispatcher'; STOP: 'stop' }>;
export type ReactionKind = 'same_node' | 'dispatcher' | 'stop';
/** The reaction of protocol §11; `null`/`undefined` (no code) is treated like 1006. */
export function closeReaction(code: number | null | undefined): ReactionKind;
export function closeCodeName(code: number): string;

export interface ReconnectPolicy {
  /** Delay before the first attempt (default 500). */
  initialDelayMs?: number;
  /** Largest delay (default 30000). */
  maxDelayMs?: number;
  /** Growth per attempt, at least 1 (default 2). */
  multiplier?: number;
  /** ± fraction of randomness, 0–1 (default 0.3). */
  jitter?: number;
  /** Stop with `too_many_attempts` after this many consecutive failures; null: forever (default). */
  maxAttempts?: number | null;
}
export const DEFAULT_RECONNECT: Readonly<Required<ReconnectPolicy>>;

export class Backoff {
  constructor(policy?: ReconnectPolicy, random?: () => number);
  next(): { attempt: number; delayMs: number } | null;
  reset(): void;
}

// -------------------------------------------------------- cursor stores

/** Where a device keeps its sync cursors; each method may return a Promise. */
export interface CursorStore {
  load(): Record<ConversationId, MessageId> | Promise<Record<ConversationId, MessageId>>;
  save(conv: ConversationId, id: MessageId): void | Promise<void>;
  flush?(): void | Promise<void>;
}
export class MemoryCursorStore implements CursorStore {
  constructor(cursors?: Record<ConversationId, MessageId>);
  load(): Record<ConversationId, MessageId>;
  save(conv: ConversationId, id: MessageId): void;
  flush(): void;
}
export class WebStorageCursorStore implements CursorStore {
  constructor(storage: Pick<Storage, 'getItem' | 'setItem'>, key?: string);
  load(): Record<ConversationId, MessageId>;
  save(conv: ConversationId, id: MessageId): void;
  flush(): void;
}
/** Browser only; not covered by the Node tests. */
export class IndexedDBCursorStore implements CursorStore {
  constructor(dbName?: string, storeName?: string, idb?: IDBFactory);
  load(): Promise<Record<ConversationId, MessageId>>;
  save(conv: ConversationId, id: MessageId): void;
  flush(): Promise<void>;
}
export function defaultCursorStore(device?: string): CursorStore;

// -------------------------------------------------------------- options

export interface Logger {
  debug(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
}

export interface ImClientOptions {
  /** A dispatcher (`http(s)://host/dispatch`) or a fixed WebSocket URL (`ws(s)://host/ws`). */
  url: string;
  /** A session token from an earlier login (or give `login`). */
  token?: string;
  /** Log in through the business API (`POST {apiBase}/api/v1/login`), and again after 4000. */
  login?: { username: string; password: string };
  /** The business API's base URL; default: the origin of `url` (ws→http, wss→https). */
  apiBase?: string;
  /** This device's id (1–64 printable ASCII); default: the server assigns one. Keep it stable. */
  device?: string;
  /** Default: localStorage when present (key per device), else memory. */
  cursorStore?: CursorStore;
  /** Ping interval; the server's `heartbeat_interval_ms` wins when shorter (default 20000). */
  heartbeatIntervalMs?: number;
  /** A connection silent this long after a ping is dead (default 10000). */
  pongTimeoutMs?: number;
  /** Login + dispatcher + handshake + hello must finish within this (default 10000). */
  connectTimeoutMs?: number;
  /** Requests (history, join, …) fail with `timeout` after this (default 10000). */
  requestTimeoutMs?: number;
  reconnect?: ReconnectPolicy;
  /** Most unacknowledged sends (default 1000). */
  sendQueue?: number;
  /** `limit` of each `sync` (default: the server's `sync_page_max`). */
  syncPageLimit?: number | null;
  /** Put the token in the `token` query parameter (default true); false: rely on the `im_token` cookie. */
  tokenInQuery?: boolean;
  /** Also log in again after 4001 session_revoked (default false: a revoked session stops, as in im-client). */
  reloginOnRevoked?: boolean;
  /** After a failed handshake, ask `GET {apiBase}/api/v1/me` whether the token was refused (default true). */
  probeTokenOnFailure?: boolean;
  /** A WebSocket constructor with the browser API (default: the global `WebSocket`). */
  WebSocket?: new (url: string) => WebSocket;
  /** A fetch (default: the global `fetch`): dispatcher, login, probe, attachments. */
  fetch?: typeof fetch;
  /**
   * For uploads with progress (default: the global `XMLHttpRequest`, in
   * browsers); null: uploads use fetch (progress only at the end).
   */
  XMLHttpRequest?: (new () => XMLHttpRequest) | null;
  /** Period of the internal tick: typing, cursor flush, retries (default 500). */
  tickMs?: number;
  /** Clock in ms (default `Date.now`). */
  now?: () => number;
  /** Uniform random in [0, 1) for jitter (default `Math.random`). */
  random?: () => number;
  logger?: Logger;
  /** Called when an event listener throws (default: console.error). */
  onListenerError?: (err: unknown) => void;
}

// --------------------------------------------------------------- events

export type StopReason =
  | { kind: 'shutdown' }
  | { kind: 'closed'; code: number; name: string; reason: string }
  | { kind: 'unauthorized' }
  | { kind: 'login_failed'; message: string }
  | { kind: 'too_many_attempts'; attempts: number }
  | { kind: 'cursor_store'; message: string }
  | { kind: 'internal'; message: string };

export interface ConversationState {
  head: MessageId;
  read: MessageId;
  /** Messages of others above `read` that are not events (at most `head - read`). */
  unread: number;
}

export interface EventMap {
  connected: { type: 'connected'; node: string; user: UserId; device: string; protocol: number };
  synced: { type: 'synced' };
  message: { type: 'message'; message: Message };
  presence: { type: 'presence'; presence: Presence };
  member: { type: 'member'; group: GroupId; user: UserId; change: 'added' | 'removed'; by: UserId };
  /** A contact relation changed (protocol 2): a request arrived (`pending`), was sent elsewhere (`requested`), was accepted, or ended (`none`). */
  contact: { type: 'contact'; user: UserId; state: ContactState };
  typing: { type: 'typing'; conv: ConversationId; user: UserId; typing: boolean };
  readUpTo: { type: 'readUpTo'; conv: ConversationId; id: MessageId };
  unread: { type: 'unread'; conv: ConversationId; unread: number; read: MessageId };
  receipt: { type: 'receipt'; conv: ConversationId; user: UserId; read: MessageId; delivered: MessageId };
  disconnected: { type: 'disconnected'; code: number | null; reason: string };
  reconnecting: { type: 'reconnecting'; attempt: number; delayMs: number };
  stopped: { type: 'stopped'; reason: StopReason };
}
export type ImEvent = EventMap[keyof EventMap];
export type Listener<E> = ((event: E) => void) | { handleEvent(event: E): void };

export type ImErrorKind =
  | 'rejected' | 'body_too_large' | 'queue_full' | 'stopped' | 'timeout' | 'disconnected' | 'unexpected_reply' | 'invalid_argument'
  /** Attachments: no token yet, the request did not get through, cancelled, no fetch / no WebCrypto. */
  | 'not_signed_in' | 'transport' | 'aborted' | 'unsupported';

export class ImError extends Error {
  kind: ImErrorKind;
  /** For `rejected`: the server's error code. */
  code?: HttpErrorCode;
  serverMessage?: string;
  /** For `rejected` by an HTTP call (attachments): the status. */
  status?: number;
  /** For `body_too_large` (and an upload over the server's `max_bytes`). */
  len?: number;
  max?: number;
  /** For `unexpected_reply`. */
  frameType?: string;
}

// --------------------------------------------------------------- client

export class ImClient {
  constructor(options: ImClientOptions);
  /** `new ImClient(options).start()`. */
  static connect(options: ImClientOptions): ImClient;

  /** Starts connecting in the background (idempotent). */
  start(): this;
  /** Closes (1000), flushes cursors, rejects pending sends with `stopped`, emits `stopped`. */
  close(): Promise<void>;
  /**
   * While waiting out a reconnect delay (after a `reconnecting` event), starts
   * that attempt at once and returns true; otherwise (not started, connected,
   * connecting, stopped) does nothing and returns false. The backoff is not
   * reset: if the early attempt fails, the next delay is the next, longer one;
   * it counts against `maxAttempts`.
   */
  reconnectNow(): boolean;

  on<K extends keyof EventMap>(type: K, listener: Listener<EventMap[K]>): () => void;
  on(type: '*', listener: Listener<ImEvent>): () => void;
  off(type: keyof EventMap | '*', listener: Listener<any>): void;
  addEventListener<K extends keyof EventMap>(type: K, listener: Listener<EventMap[K]>): void;
  addEventListener(type: '*', listener: Listener<ImEvent>): void;
  removeEventListener(type: keyof EventMap | '*', listener: Listener<any>): void;
  /** Every event from now on; ends after `stopped`. */
  events(): AsyncIterableIterator<ImEvent>;

  readonly connected: boolean;
  readonly user: UserId | null;
  readonly device: string | null;
  readonly protocol: number;
  readonly limits: Limits;
  readonly pendingSends: number;

  /** Resolves once stored; resent with the same cmid across reconnects until acknowledged. */
  send(conv: ConversationId, body: string | Draft): Promise<{ id: MessageId; duplicate: boolean }>;
  /** Events, sent as `send` sends (outbox, cmid, resends); resolve with the event's id. Refusals: `no_such_message`, `too_late`, `forbidden`, `invalid_field`. */
  react(conv: ConversationId, target: MessageId, emoji: string): Promise<{ id: MessageId; duplicate: boolean }>;
  unreact(conv: ConversationId, target: MessageId, emoji: string): Promise<{ id: MessageId; duplicate: boolean }>;
  /** This user's message, within `limits.edit_window_ms`; `content` only for `location` and `x-…` kinds. */
  edit(conv: ConversationId, target: MessageId, body: string, opts?: { content?: Record<string, unknown>; mentions?: UserId[] }): Promise<{ id: MessageId; duplicate: boolean }>;
  /** This user's message within `limits.recall_window_ms`, or any message of a group the user owns or admins. */
  recall(conv: ConversationId, target: MessageId): Promise<{ id: MessageId; duplicate: boolean }>;
  join(room: RoomId): Promise<void>;
  leave(room: RoomId): Promise<void>;
  history(conv: ConversationId, opts?: { before?: MessageId; limit?: number }): Promise<{ messages: Message[]; hasMore: boolean }>;
  queryPresence(users: UserId[]): Promise<Presence[]>;
  /** Call with `true` on every keystroke; throttled, refreshed and stopped by the client (protocol 2). */
  typing(conv: ConversationId, typing: boolean): Promise<void>;
  /** Queued (also offline); the highest mark per conversation goes out (protocol 2). */
  markRead(conv: ConversationId, id: MessageId): void;
  readState(conv: ConversationId): ConversationState | null;
  readStates(): Array<[ConversationId, ConversationState]>;
  unreadTotal(): number;
  inboxPage(opts?: { after?: ConversationId; limit?: number }): Promise<{ entries: InboxEntry[]; hasMore: boolean }>;
  inbox(): Promise<InboxEntry[]>;
  receipts(conv: ConversationId): Promise<Receipt[]>;

  // Attachments (HTTP; need a token, not the WebSocket).
  /** `GET /api/v1/attachments/config`, asked once per client. */
  uploadConfig(): Promise<UploadConfig>;
  /** Uploads by the server's flow (direct or presigned); send the result with `attachmentDraft`. */
  upload(data: Blob | ArrayBuffer | ArrayBufferView, opts?: UploadOptions): Promise<Attachment>;
  /** The bytes (follows a presigned server's redirect). */
  download(id: string, opts?: DownloadOptions): Promise<Uint8Array>;
  /** `GET /api/v1/attachments/{id}/info`. */
  attachmentInfo(id: string): Promise<Attachment>;
  /** A URL for `<img src>` / `<a href>`: the download URL with `?token=`. Throws `invalid_argument`, `not_signed_in`. */
  attachmentUrl(id: string): string;
}
export default ImClient;

// ------------------------------------------ state machines (for tests/tools)

export const Verdict: Readonly<{ DELIVER: 'deliver'; DUPLICATE: 'duplicate'; GAP: 'gap' }>;
export const MAX_AHEAD: number;
export class SyncState {
  constructor(cursors?: Record<ConversationId, MessageId>);
  cursors(): Record<ConversationId, MessageId>;
  cursor(conv: ConversationId): MessageId;
  classify(conv: ConversationId, id: MessageId): 'deliver' | 'duplicate' | 'gap';
  delivered(conv: ConversationId, id: MessageId): void;
  noteGap(): void;
  hold(m: Message): void;
  takeNext(conv: ConversationId): Message | null;
  heldCount(): number;
  connected(): void;
  disconnected(): void;
  syncInFlight(): boolean;
  isSync(rid: RequestId): boolean;
  nextSync(rid: RequestId, limit?: number | null): Extract<ClientFrame, { type: 'sync' }> | null;
  pageDone(rid: RequestId, hasMore: boolean): boolean;
  syncFailed(rid: RequestId): void;
  retrySync(): void;
}
export function offer(state: SyncState, m: Message, deliver: (m: Message) => void): number;

export class Outbox<R = unknown> {
  constructor(cap?: number);
  push(conv: ConversationId, cmid: string, draft: Draft, reply: R): boolean;
  readonly size: number;
  framesToSend(max: number, nextRid: () => RequestId): ClientFrame[];
  unanswered(): number;
  isSend(rid: RequestId): boolean;
  take(rid: RequestId): { conv: ConversationId; cmid: string; draft: Draft; rid: RequestId | null; held: boolean; reply: R } | null;
  requeue(rid: RequestId): void;
  release(): void;
  disconnected(): void;
  drain(): Array<{ conv: ConversationId; cmid: string; draft: Draft; reply: R }>;
}
export class CmidGen {
  constructor(prefix?: string);
  next(): string;
}
export class Pacer {
  constructor(limits: Partial<Limits>, nowMs: number);
  available(nowMs: number): number;
  spend(n: number): void;
}
export function sendBudget(paced: number, maxInFlight: number | undefined, unanswered: number): number;

export const RECEIPT_INTERVAL_MS: number;
export class ReadBook {
  /** `event`: a reaction, edit, recall or notice — raises the head, not the unread count. */
  message(conv: ConversationId, id: MessageId, own: boolean, event?: boolean): { state: ConversationState; readRose: boolean; unreadChanged: boolean } | null;
  read(conv: ConversationId, id: MessageId): { state: ConversationState; readRose: boolean; unreadChanged: boolean } | null;
  inbox(entry: InboxEntry): { state: ConversationState; readRose: boolean; unreadChanged: boolean } | null;
  get(conv: ConversationId): ConversationState | null;
  all(): Array<[ConversationId, ConversationState]>;
  totalUnread(): number;
}
export class ReadSync {
  mark(conv: ConversationId, id: MessageId): void;
  pendingMarks(): Record<ConversationId, MessageId>;
}

export const TYPING_EXPIRY_MS: number;
export const TYPING_REFRESH_MS: number;
export const TYPING_IDLE_MS: number;
export class TypingOut {
  call(conv: ConversationId, typing: boolean, nowMs: number): boolean | null;
  tick(nowMs: number): Array<[ConversationId, boolean]>;
  sentMessage(conv: ConversationId): void;
  clear(): void;
}
export class TypingIn {
  heard(conv: ConversationId, user: UserId, typing: boolean, nowMs: number): void;
  messageFrom(conv: ConversationId, user: UserId): boolean;
  expired(nowMs: number): Array<[ConversationId, UserId]>;
  clear(): Array<[ConversationId, UserId]>;
}
