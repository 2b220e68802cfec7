// im-client.js — the `im` chat client for browsers and Node (entry module).
//
// A JavaScript port of the Rust crate im-client, with the same semantics:
//
// * finding a node: a dispatcher URL (`http(s)://…/dispatch`) is asked before
//   every connect that the close code sends back to the dispatcher; a fixed
//   WebSocket URL (`ws(s)://…/ws`) is used as is;
// * protocol version 2 first, falling back to 1 when the server closes 4003;
// * heartbeat: a `ping` every heartbeat interval; a connection that says
//   nothing within the pong timeout of a ping is dead;
// * delay-retry reconnect: exponential backoff with jitter, obeying the close
//   code classes (same node / via dispatcher / stop), logging in again on
//   4000 (and, if asked, 4001) when a username and password were given;
// * incremental sync with persisted per-conversation cursors: every message
//   reaches the app exactly once, in order (sync-state.js);
// * an outbox resent with the same cmid after reconnects (outbox.js), paced
//   under the server's rate limit and `max_in_flight` (pacer.js);
// * read state, inbox walk, `received` reports (read-state.js) and typing
//   (typing.js);
// * attachments over HTTP (files.rs): upload with progress by the flow the
//   server names (direct or presigned), download, URLs for <img>, and the
//   content of a message carrying one.
//
// The state machines live in the sibling modules, free of I/O. This module
// is the public ImClient: options, public methods, events, and what frames
// do to the client's state (and which frames go out). connection.js holds
// one WebSocket connection (handshake, heartbeat, frames, closing);
// connect.js the run and reconnect loop, login and the dispatcher lookup.

import { Backoff } from './backoff.js';
import { run, STOPPED } from './connect.js';
import { Connection, DEFAULT_LIMITS, heartbeatInterval, helloLimits, MIN_PROTOCOL_VERSION } from './connection.js';
import { isConversationId } from './conv.js';
import { defaultCursorStore } from './cursor-store.js';
import { CmidGen, draftFrame, draftMessage, normalizeDraft, Outbox } from './outbox.js';
import { Pacer, sendBudget } from './pacer.js';
import { Owner, ReadBook, ReadSync, TRANSIENT_CODES } from './read-state.js';
import { offer, SyncState } from './sync-state.js';
import { TypingIn, TypingOut } from './typing.js';

export { Backoff, CloseCode, closeCodeName, closeReaction, DEFAULT_RECONNECT, Reaction } from './backoff.js';
export { DEFAULT_LIMITS, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from './connection.js';
export { compareConv, convKind, directConv, groupConv, isConversationId, roomConv } from './conv.js';
export { IndexedDBCursorStore, MemoryCursorStore, WebStorageCursorStore, defaultCursorStore } from './cursor-store.js';
export { CmidGen, Outbox } from './outbox.js';
export { Pacer, sendBudget } from './pacer.js';
export { ReadBook, ReadSync, RECEIPT_INTERVAL_MS } from './read-state.js';
export { MAX_AHEAD, offer, SyncState, Verdict } from './sync-state.js';
export { TYPING_EXPIRY_MS, TYPING_IDLE_MS, TYPING_REFRESH_MS, TypingIn, TypingOut } from './typing.js';

const DEFAULTS = Object.freeze({
  heartbeatIntervalMs: 20_000,
  pongTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
  requestTimeoutMs: 10_000,
  sendQueue: 1000,
  syncPageLimit: null,
  tickMs: 500,
  tokenInQuery: true,
  reloginOnRevoked: false,
  probeTokenOnFailure: true,
});

/** Most inbox pages `inbox()` reads (200 conversations each). */
const INBOX_PAGES_MAX = 1000;

/**
 * Every failure of the client's promises. `kind` is one of:
 * `rejected` (the server refused: `code`, `serverMessage`; from the HTTP
 * calls of attachments also `status`), `body_too_large` (`len`, `max`),
 * `queue_full`, `stopped`, `timeout`, `disconnected`, `unexpected_reply`
 * (`frameType`), `invalid_argument`, and for attachments `not_signed_in`
 * (no token yet), `transport` (the request did not get through, or the
 * answer was garbled), `aborted` (its `signal` fired), `unsupported` (no
 * fetch, or no WebCrypto for a presigned upload's hash).
 */
export class ImError extends Error {
  constructor(kind, message, extra = {}) {
    super(message);
    this.name = 'ImError';
    this.kind = kind;
    Object.assign(this, extra);
  }
}

const utf8 = new TextEncoder();
const byteLen = (s) => utf8.encode(s).length;
const isDeviceId = (d) => typeof d === 'string' && /^[!-~]{1,64}$/.test(d);

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A message as the app gets it: the wire fields without `type`. */
function asMessage(frame) {
  const { type: _type, ...m } = frame;
  return m;
}

// ------------------------------------------------------------ attachments
//
// Files travel over HTTP, never over the WebSocket (http-api.md §13): the
// client uploads one (through the server, or straight to the object store
// with a presigned URL — whichever GET /api/v1/attachments/config says),
// then sends a message whose content names it (protocol §13). A port of
// im-client's files.rs; the helpers below are free of I/O.

const ATTACHMENT_ID_RE = /^at_[A-Za-z0-9_-]{22}$/;

/** Whether `id` is an attachment id (`at_` and 22 base64url characters), as `im_core::content::is_attachment_id`. */
export function isAttachmentId(id) {
  return typeof id === 'string' && ATTACHMENT_ID_RE.test(id);
}

/** The message kind for a file of type `mime`: `image`, `audio` or `video` by its family, else `file`. */
export function attachmentKind(mime) {
  const family = String(mime ?? '').split('/')[0].trim().toLowerCase();
  return family === 'image' || family === 'audio' || family === 'video' ? family : 'file';
}

/** The media content fields an attachment fills in (protocol §13), in order. */
const MEDIA_FIELDS = ['mime', 'size', 'sha256', 'name', 'width', 'height', 'duration_ms'];

/**
 * `{kind, content}` of a message carrying `attachment` (what `upload`
 * resolved with): the kind by its MIME type (image, audio, video, else
 * file) and `{attachment: id, mime, size, sha256, name?, width?, height?,
 * duration_ms?}` — im-client's `Attachment::content()`. The server checks
 * it and overwrites `mime`, `size` and `sha256` with what it measured.
 */
export function attachmentContent(attachment) {
  if (!attachment || !isAttachmentId(attachment.id)) {
    throw new ImError('invalid_argument', 'not an attachment: expected an object with an `at_…` id, as upload() resolves');
  }
  const content = { attachment: attachment.id };
  for (const f of MEDIA_FIELDS) if (attachment[f] != null) content[f] = attachment[f];
  return { kind: attachmentKind(attachment.mime), content };
}

/**
 * A draft for `send` carrying `attachment`: `{body, kind, content}` (and
 * `replyTo`, `mentions` when given). `body` is the fallback text older
 * clients show; default `[image]`, `[audio]`, `[video]` or `[file]`.
 */
export function attachmentDraft(attachment, { body, replyTo, mentions } = {}) {
  const { kind, content } = attachmentContent(attachment);
  const draft = { body: body ?? `[${kind}]`, kind, content };
  if (replyTo != null) draft.replyTo = replyTo;
  if (mentions != null) draft.mentions = mentions;
  return draft;
}

/** Lowercase hex SHA-256 of `data` (Blob, ArrayBuffer or typed array), with WebCrypto. */
export async function sha256Hex(data) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new ImError('unsupported', 'SHA-256 needs WebCrypto (crypto.subtle); browsers offer it on https:// and localhost pages only');
  }
  const src = uploadSource(data);
  if (!src) throw new ImError('invalid_argument', 'sha256Hex(data): data must be a Blob, an ArrayBuffer or a typed array');
  const digest = new Uint8Array(await subtle.digest('SHA-256', await sourceBytes(src)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Whether `bytes` are `attachment`'s: the same size and SHA-256 (im-client's `Attachment::matches`). */
export async function attachmentMatches(attachment, bytes) {
  const src = uploadSource(bytes);
  return !!src && src.size === attachment?.size && (await sha256Hex(src.body)) === attachment.sha256;
}

/** What `upload` can send: `{body, size, type, name}`, or null for anything else. */
function uploadSource(data) {
  if (data instanceof ArrayBuffer) return { body: new Uint8Array(data), size: data.byteLength, type: '', name: null };
  if (ArrayBuffer.isView(data)) {
    return { body: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), size: data.byteLength, type: '', name: null };
  }
  if (data && typeof data.arrayBuffer === 'function' && typeof data.size === 'number') {
    // A Blob, or a File (which has a name).
    return { body: data, size: data.size, type: typeof data.type === 'string' ? data.type : '', name: typeof data.name === 'string' && data.name ? data.name : null };
  }
  return null;
}

async function sourceBytes(src) {
  return src.body instanceof Uint8Array ? src.body : new Uint8Array(await src.body.arrayBuffer());
}

/** `mime` as the server compares it: without parameters, trimmed, lowercase. */
const bareMime = (mime) => mime.split(';')[0].trim().toLowerCase();

/** A URL for messages: no query (a presigned URL's signature stays out of logs). */
function shortUrl(url) {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '(bad URL)';
  }
}

/** The ImError of a refused HTTP exchange: `rejected` with `status`, and the `code` of a JSON error body (else `http_<status>`). */
function httpRefusal(what, status, text) {
  let code = `http_${status}`;
  let detail = String(text ?? '').slice(0, 300);
  try {
    const body = JSON.parse(text);
    if (typeof body?.code === 'string' && body.code) {
      code = body.code;
      detail = typeof body.message === 'string' ? body.message : '';
    }
  } catch {
    // not JSON (an object store's XML, a proxy's HTML): keep the text
  }
  return new ImError('rejected', `${what} refused with HTTP ${status} ${code}: ${detail}`, { status, code, serverMessage: detail });
}

const abortError = (what) => new ImError('aborted', `${what} was cancelled`);

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    throw new ImError('transport', `${what} is not JSON`);
  }
}

/** An attachment from an answer: an object with an attachment id. */
function parseAttachment(text) {
  const a = parseJson(text, 'the attachment');
  if (!isAttachmentId(a?.id) || typeof a.mime !== 'string') throw new ImError('transport', 'the attachment in the answer is unreadable');
  return a;
}

/** One exchange through XMLHttpRequest (for its upload progress): resolves `{status, text}`. */
function xhrExchange(XHR, { method, url, headers, body, onUpload, signal, what }) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(what));
      return;
    }
    const xhr = new XHR();
    const onAbort = () => xhr.abort();
    const done = () => signal?.removeEventListener('abort', onAbort);
    xhr.open(method, url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    // Listening on `upload` before send() is what makes progress events fire.
    if (onUpload && xhr.upload) xhr.upload.onprogress = (e) => onUpload(e.loaded);
    xhr.onload = () => {
      done();
      resolve({ status: xhr.status, text: typeof xhr.responseText === 'string' ? xhr.responseText : '' });
    };
    xhr.onerror = () => {
      done();
      reject(new ImError('transport', `${what}: ${method} ${shortUrl(url)} failed (network error)`));
    };
    xhr.ontimeout = xhr.onerror;
    xhr.onabort = () => {
      done();
      reject(abortError(what));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    xhr.send(body ?? null);
  });
}

export class ImClient {
  /**
   * @param {import('./im-client.js').ImClientOptions} options see im-client.d.ts
   */
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    if (!o.url) throw new ImError('invalid_argument', 'no server URL: set options.url');
    let url;
    try {
      url = new URL(o.url);
    } catch {
      throw new ImError('invalid_argument', `bad URL ${JSON.stringify(o.url)}`);
    }
    const scheme = url.protocol.replace(':', '');
    if (!['ws', 'wss', 'http', 'https'].includes(scheme)) {
      throw new ImError('invalid_argument', `bad URL ${o.url}: expected ws://, wss://, http:// or https://`);
    }
    this._endpoint = { dispatcher: scheme === 'http' || scheme === 'https', url: url.href };
    if (typeof o.token === 'string' && o.token) this._auth = { token: o.token };
    else if (o.login && typeof o.login.username === 'string' && typeof o.login.password === 'string') {
      this._auth = { username: o.login.username, password: o.login.password };
    } else throw new ImError('invalid_argument', 'no credentials: set options.token or options.login');
    if (o.device != null && !isDeviceId(o.device)) {
      throw new ImError('invalid_argument', 'device id: 1-64 printable ASCII characters');
    }
    const httpScheme = scheme === 'wss' || scheme === 'https' ? 'https:' : 'http:';
    this._apiBase = (o.apiBase ?? `${httpScheme}//${url.host}`).replace(/\/+$/, '');
    this._opts = o;
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    this._fetch = o.fetch ?? (globalThis.fetch ? globalThis.fetch.bind(globalThis) : null);
    // Uploads go through XMLHttpRequest where there is one (browsers), for
    // its upload progress; `XMLHttpRequest: null` makes them use fetch.
    this._XHR = o.XMLHttpRequest !== undefined ? o.XMLHttpRequest : (globalThis.XMLHttpRequest ?? null);
    this._uploadConfig = null; // the promise of GET /api/v1/attachments/config, asked once
    this._now = o.now ?? (() => Date.now());
    this._log = o.logger ?? { debug() {}, info() {}, warn: (...a) => console.warn('[im-client]', ...a) };
    this._store = o.cursorStore ?? defaultCursorStore(o.device);

    this._device = o.device ?? null;
    this._token = null; // the token we hold (null: take the configured one, or log in)
    this._me = null;
    this._node = null;
    this._protocol = MIN_PROTOCOL_VERSION;
    this._limits = { ...DEFAULT_LIMITS };
    this._connected = false;
    this._conn = null; // the live connection

    this._loadedCursors = null; // what the store held, until the first hello checks its owner
    this._sync = new SyncState();
    this._outbox = new Outbox(o.sendQueue);
    this._cmids = new CmidGen();
    this._waiting = []; // requests not yet sent (waiting for a connection / budget)
    this._inFlight = new Map(); // rid -> request sent on this connection
    this._quiet = new Set(); // rids whose answers nobody waits for (typing refreshes)
    this._rid = 0;
    this._book = new ReadBook();
    this._readSync = new ReadSync();
    this._typingOut = new TypingOut();
    this._typingDue = [];
    this._typingIn = new TypingIn();
    this._pacer = new Pacer(this._limits, this._now());
    this._backoff = new Backoff(o.reconnect, o.random);

    this._listeners = new Map();
    this._iterators = new Set();
    this._started = false;
    this._stopped = false;
    this._stopRequest = null; // the reason once close() was called
    this._stopSignal = deferred();
    this._stopSignal.promise.catch(() => {});
    this._done = deferred();
    this._attemptAbort = null;
    this._sleepTimer = null;
    this._wake = null; // ends the current backoff wait (set only while waiting; see connect.js)
    this._pumpScheduled = false;
  }

  /** Creates a client and starts it. */
  static connect(options) {
    return new ImClient(options).start();
  }

  // ---------------------------------------------------------------- events

  /** Calls `listener(event)` for every event of `type` (`'*'`: all). Returns a function that removes it. */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  /** Removes a listener added with `on`. */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /** EventTarget-style: `listener` is a function or an object with `handleEvent`. */
  addEventListener(type, listener) {
    this.on(type, listener);
  }

  removeEventListener(type, listener) {
    this.off(type, listener);
  }

  /**
   * Every event from now on as an async iterator; it ends after `stopped`.
   * Events are buffered (unbounded) until read: read steadily.
   */
  events() {
    const queue = [];
    let waiter = null;
    let done = false;
    const it = {
      push: (ev) => {
        if (done) return;
        if (waiter) {
          const w = waiter;
          waiter = null;
          w({ value: ev, done: false });
        } else queue.push(ev);
        if (ev.type === 'stopped') it.end(false);
      },
      end: (dropQueue) => {
        done = true;
        this._iterators.delete(it);
        if (dropQueue) queue.length = 0;
        if (waiter && queue.length === 0) {
          const w = waiter;
          waiter = null;
          w({ value: undefined, done: true });
        }
      },
      next: () => {
        if (queue.length > 0) return Promise.resolve({ value: queue.shift(), done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          waiter = resolve;
        });
      },
      return: () => {
        it.end(true);
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    if (this._stopped) done = true;
    else this._iterators.add(it);
    return it;
  }

  _emit(event) {
    for (const type of [event.type, '*']) {
      const set = this._listeners.get(type);
      if (!set) continue;
      for (const l of [...set]) {
        try {
          if (typeof l === 'function') l(event);
          else l.handleEvent(event);
        } catch (e) {
          (this._opts.onListenerError ?? ((err) => console.error('[im-client] listener failed:', err)))(e);
        }
      }
    }
    for (const it of [...this._iterators]) it.push(event);
  }

  // ----------------------------------------------------------- public API

  /** Starts connecting in the background (once). Returns the client. */
  start() {
    if (!this._started) {
      this._started = true;
      run(this);
    }
    return this;
  }

  /**
   * Stops the client: closes the connection (code 1000), flushes the
   * cursors, fails unacknowledged sends with `stopped`, and emits `stopped`.
   * Resolves once that is done.
   */
  close() {
    if (!this._started) {
      this._started = true;
      this._stopRequest = { kind: 'shutdown' };
      this._finish(this._stopRequest);
      return this._done.promise;
    }
    if (!this._stopRequest) {
      this._stopRequest = { kind: 'shutdown' };
      this._stopSignal.reject(STOPPED);
      this._attemptAbort?.abort(STOPPED);
      clearTimeout(this._sleepTimer);
      this._wake = null;
      if (this._conn) this._conn.end({ kind: 'stop', reason: this._stopRequest }, true);
    }
    return this._done.promise;
  }

  /**
   * Cuts a reconnect wait short: while the client waits out a backoff delay
   * (between a `reconnecting` event and the attempt it announced), the
   * attempt starts at once, and `true` is returned. Otherwise nothing
   * happens and `false` is returned: before `start()`, while connected,
   * while an attempt is already under way, and after a stop (a terminal
   * close code, `close()`, too many attempts) — it never restarts a
   * stopped client. The early attempt is the one the wait was for: it
   * goes where it would have gone (same node or the dispatcher), it counts
   * against `maxAttempts`, and the backoff is not reset, so if it fails
   * the next wait is the next, longer delay (the backoff still starts over
   * only once a connection has finished its sync). Call it when there is
   * reason to think the server is reachable again: the browser's `online`
   * event, the page becoming visible.
   */
  reconnectNow() {
    if (this._stopped || this._stopRequest || !this._wake) return false;
    this._wake();
    return true;
  }

  /** Whether a connection is up (its `hello` arrived). */
  get connected() {
    return this._connected;
  }
  /** The signed-in user (after the first `hello`). */
  get user() {
    return this._me;
  }
  /** This device's id (as configured, or assigned by the server). */
  get device() {
    return this._device;
  }
  /** The protocol version of the current (or last) connection. */
  get protocol() {
    return this._protocol;
  }
  /** The limits in force (the last `hello`'s, or the defaults). */
  get limits() {
    return { ...this._limits };
  }
  /** Sends awaiting their ack. */
  get pendingSends() {
    return this._outbox.size;
  }

  /**
   * Sends a message (a string, or a draft `{body, kind?, content?, replyTo?,
   * mentions?}`) and resolves with `{id, duplicate}` once it is stored. It
   * waits in the outbox until acknowledged, across reconnects, and is resent
   * with the same cmid, so it is stored exactly once. The device's own
   * message also appears as a `message` event at its place in the order.
   */
  send(conv, bodyOrDraft) {
    if (this._stopped || this._stopRequest) return Promise.reject(new ImError('stopped', 'the client has stopped'));
    if (!isConversationId(conv)) return Promise.reject(new ImError('invalid_argument', `bad conversation id ${conv}`));
    let draft;
    try {
      draft = normalizeDraft(bodyOrDraft);
    } catch (e) {
      return Promise.reject(new ImError('invalid_argument', e.message));
    }
    const cmid = this._cmids.next();
    const tooBig = this._checkSize(conv, cmid, draft);
    if (tooBig) return Promise.reject(tooBig);
    const d = deferred();
    if (!this._outbox.push(conv, cmid, draft, d)) {
      return Promise.reject(new ImError('queue_full', 'too many unacknowledged sends'));
    }
    this._schedulePump();
    return d.promise;
  }

  /** Joins an open room; its new messages then arrive live (the room starts at the first one seen). */
  async join(room) {
    await this._request({ type: 'join', room }, 'ok');
  }

  /** Leaves a room. */
  async leave(room) {
    await this._request({ type: 'leave', room }, 'ok');
  }

  /** One page of `conv`'s history (ascending ids; moves no cursor, emits no events). */
  async history(conv, { before, limit } = {}) {
    const f = { type: 'history', conv };
    if (before != null) f.before = before;
    if (limit != null) f.limit = limit;
    const page = await this._request(f, 'history_page');
    return { messages: page.messages ?? [], hasMore: !!page.has_more };
  }

  /** The presence of `users` (those that exist). */
  async queryPresence(users) {
    const r = await this._request({ type: 'query_presence', users: [...users] }, 'presence_list');
    return r.users ?? [];
  }

  /**
   * The user types (`true`) or stopped, in a direct chat or group (protocol 2).
   * Call it with `true` on every keystroke: at most one `typing` goes out per
   * 3 s, it is refreshed while calls keep coming, `false` goes out by itself
   * 5 s after the last call, and nothing is sent when the user sends a message
   * there. A throttled call resolves at once. Fails while disconnected.
   */
  typing(conv, typing) {
    if (this._stopped || this._stopRequest) return Promise.reject(new ImError('stopped', 'the client has stopped'));
    if (!this._connected) return Promise.reject(new ImError('disconnected', 'not connected'));
    const send = this._typingOut.call(conv, !!typing, this._now());
    if (send === null) return Promise.resolve();
    return this._request({ type: 'typing', conv, typing: send }, 'ok').then(() => undefined);
  }

  /**
   * Marks `conv` read up to `id` (protocol 2). Returns at once: `readState`
   * follows immediately (with an `unread` event when the count changes), and
   * the mark goes out when a version-2 connection can take it — after a
   * reconnect if offline; of several marks of one conversation only the
   * highest goes out. An id above the newest message known is lowered to it.
   */
  markRead(conv, id) {
    if (this._stopped || this._stopRequest) throw new ImError('stopped', 'the client has stopped');
    if (!Number.isSafeInteger(id) || id < 0) throw new ImError('invalid_argument', `bad message id ${id}`);
    const head = this._book.get(conv)?.head ?? 0;
    const upTo = head > 0 ? Math.min(id, head) : id;
    if (upTo === 0) return;
    const change = this._book.read(conv, upTo);
    this._readSync.mark(conv, upTo);
    if (change?.unreadChanged) {
      this._emit({ type: 'unread', conv, unread: change.state.unread, read: change.state.read });
    }
    this._schedulePump();
  }

  /** `{head, read, unread}` of `conv` as this client knows it, or null before it heard of it. */
  readState(conv) {
    return this._book.get(conv);
  }

  /** `[conv, state]` of every conversation heard of, in conversation id order. */
  readStates() {
    return this._book.all();
  }

  /** The unread messages of all conversations together (the app badge). */
  unreadTotal() {
    return this._book.totalUnread();
  }

  /** One page of the inbox (protocol 2). */
  async inboxPage({ after, limit } = {}) {
    const f = { type: 'inbox' };
    if (after != null) f.after = after;
    if (limit != null) f.limit = limit;
    const page = await this._request(f, 'inbox_page');
    return { entries: page.entries ?? [], hasMore: !!page.has_more };
  }

  /** The whole inbox: every page (bounded), with each last message. */
  async inbox() {
    const all = [];
    let after;
    for (let i = 0; i < INBOX_PAGES_MAX; i++) {
      const page = await this.inboxPage({ after });
      all.push(...page.entries);
      after = page.entries.at(-1)?.conv;
      if (!page.hasMore || !after) break;
    }
    return all;
  }

  /** How far each member of `conv` (direct chat or group) has read and received it (protocol 2). */
  async receipts(conv) {
    const r = await this._request({ type: 'receipts', conv }, 'receipt_list');
    return r.receipts ?? [];
  }

  // ------------------------------------------------------- attachments

  /**
   * How this server takes uploads: `{upload: 'direct'|'presigned',
   * max_bytes, types}` (GET /api/v1/attachments/config), asked once per
   * client (a failed ask is asked again next time).
   */
  uploadConfig() {
    if (!this._uploadConfig) {
      const p = (async () => {
        const token = this._httpToken();
        const { status, text } = await this._exchange('GET', `${this._apiBase}/api/v1/attachments/config`, {
          token,
          what: 'the upload config',
        });
        if (status !== 200) throw httpRefusal('the upload config', status, text);
        const config = parseJson(text, 'the upload config');
        if (typeof config?.upload !== 'string') throw new ImError('transport', 'the upload config is unreadable');
        return config;
      })();
      this._uploadConfig = p;
      p.catch(() => {
        if (this._uploadConfig === p) this._uploadConfig = null;
      });
    }
    return this._uploadConfig;
  }

  /**
   * Uploads a file and resolves with the attachment the server made of it,
   * `{id, mime, size, sha256, name?, width?, height?, duration_ms?, …}`;
   * send it with `send(conv, attachmentDraft(attachment))`. `data` is a
   * Blob or File, an ArrayBuffer or a typed array. Options: `mime` (default:
   * the Blob's type), `name` (default: the File's name), `width`,
   * `height`, `durationMs` (stored as given), `onProgress(sent, total)`
   * (bytes; with XMLHttpRequest as the bytes go, else once at the end),
   * `signal` (an AbortSignal). The flow is the server's (`uploadConfig`):
   * `direct` posts the bytes to the server; `presigned` announces them with
   * their SHA-256, PUTs them to the object store's URL (without the token)
   * and completes the upload. Needs a token (not before the first
   * connection of a password login); does not need the WebSocket.
   */
  async upload(data, options = {}) {
    const src = uploadSource(data);
    if (!src) throw new ImError('invalid_argument', 'upload(data): data must be a Blob or File, an ArrayBuffer or a typed array');
    const mime = options.mime ?? src.type;
    if (typeof mime !== 'string' || !bareMime(mime)) {
      throw new ImError('invalid_argument', "upload(): the file's MIME type is unknown: set options.mime");
    }
    const meta = { mime, name: options.name ?? src.name ?? undefined, width: options.width, height: options.height, duration_ms: options.durationMs };
    const token = this._httpToken();
    const progress = this._progress(options.onProgress, src.size);
    let config = await this.uploadConfig();
    for (let attempt = 0; ; attempt++) {
      const max = config.max_bytes;
      if (Number.isFinite(max) && src.size > max) {
        // What the server would answer (413), without sending the bytes.
        throw new ImError('rejected', `the file is ${src.size} bytes, over the server's limit of ${max}`, {
          status: 413, code: 'body_too_large', serverMessage: `larger than ${max} bytes`, len: src.size, max,
        });
      }
      try {
        const att = config.upload === 'presigned'
          ? await this._uploadPresigned(src, meta, token, progress, options.signal)
          : await this._uploadDirect(src, meta, token, progress, options.signal);
        progress(src.size);
        return att;
      } catch (e) {
        // 409 conflict: the wrong flow for this server (it was restarted with
        // another store since the config was asked): ask again, retry once.
        if (attempt === 0 && e instanceof ImError && e.status === 409 && e.code === 'conflict') {
          this._uploadConfig = null;
          const fresh = await this.uploadConfig();
          if (fresh.upload !== config.upload) {
            config = fresh;
            continue;
          }
        }
        throw e;
      }
    }
  }

  async _uploadDirect(src, meta, token, progress, signal) {
    const q = new URLSearchParams();
    for (const k of ['name', 'width', 'height', 'duration_ms']) if (meta[k] != null) q.set(k, String(meta[k]));
    const qs = q.toString();
    const { status, text } = await this._exchange('POST', `${this._apiBase}/api/v1/attachments${qs ? `?${qs}` : ''}`, {
      token,
      headers: { 'content-type': meta.mime },
      body: src.body,
      onUpload: progress,
      signal,
      what: 'the upload',
    });
    if (status < 200 || status > 299) throw httpRefusal('the upload', status, text);
    return parseAttachment(text);
  }

  async _uploadPresigned(src, meta, token, progress, signal) {
    const bytes = await sourceBytes(src);
    const announce = { mime: meta.mime, size: src.size, sha256: await sha256Hex(bytes) };
    for (const k of ['name', 'width', 'height', 'duration_ms']) if (meta[k] != null) announce[k] = meta[k];
    const begun = await this._exchange('POST', `${this._apiBase}/api/v1/attachments/uploads`, {
      token,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(announce),
      signal,
      what: 'the upload',
    });
    if (begun.status < 200 || begun.status > 299) throw httpRefusal('the upload', begun.status, begun.text);
    const ticket = parseJson(begun.text, 'the upload ticket');
    if (!isAttachmentId(ticket?.id) || typeof ticket.url !== 'string' || !/^https?:\/\//i.test(ticket.url)) {
      throw new ImError('transport', 'the upload ticket is unreadable');
    }
    // To the object store: its headers (the type is signed), no token —
    // the URL is the authority. Length and Host are the runtime's to set.
    const headers = {};
    for (const [k, v] of Object.entries(ticket.headers ?? {})) {
      if (typeof v === 'string' && !/^(content-length|host|authorization)$/i.test(k)) headers[k] = v;
    }
    const put = await this._exchange(String(ticket.method || 'PUT').toUpperCase(), ticket.url, {
      headers,
      body: bytes,
      onUpload: progress,
      signal,
      what: 'the object store',
    });
    if (put.status < 200 || put.status > 299) throw httpRefusal('the object store', put.status, put.text);
    progress(src.size);
    const done = await this._exchange('POST', `${this._apiBase}/api/v1/attachments/${ticket.id}/complete`, {
      token,
      signal,
      what: 'completing the upload',
    });
    if (done.status < 200 || done.status > 299) throw httpRefusal('completing the upload', done.status, done.text);
    return parseAttachment(done.text);
  }

  /**
   * Downloads attachment `id` and resolves with its bytes (a Uint8Array).
   * `onProgress(received, total)` as they arrive (`total`: the length the
   * answer declared, or null); `signal` cancels. A presigned server
   * redirects to the object store, which fetch follows (dropping the
   * `Authorization` header on the way to another origin). An id that is
   * not an attachment id, or one the user may not see, rejects with
   * `rejected` / `no_such_attachment` (404).
   */
  async download(id, { onProgress, signal } = {}) {
    const token = this._httpToken();
    if (!isAttachmentId(id)) {
      throw new ImError('rejected', `${JSON.stringify(id)} is not an attachment id`, {
        status: 404, code: 'no_such_attachment', serverMessage: 'not an attachment id',
      });
    }
    if (!this._fetch) throw new ImError('unsupported', 'no fetch available: pass options.fetch');
    let resp;
    try {
      resp = await this._fetch(`${this._apiBase}/api/v1/attachments/${id}`, {
        headers: { authorization: `Bearer ${token}` },
        redirect: 'follow',
        signal,
      });
    } catch (e) {
      if (signal?.aborted) throw abortError('the download');
      throw new ImError('transport', `the download failed: ${e?.message ?? e}`);
    }
    if (!resp.ok) throw httpRefusal('the download', resp.status, await resp.text().catch(() => ''));
    const declared = resp.headers?.get?.('content-length');
    const total = declared != null && /^\d+$/.test(declared) ? Number(declared) : null;
    const report = (n) => {
      if (typeof onProgress !== 'function') return;
      try {
        onProgress(n, total);
      } catch (e) {
        this._listenerFailed(e);
      }
    };
    try {
      const reader = resp.body?.getReader?.();
      if (!reader) {
        const all = new Uint8Array(await resp.arrayBuffer());
        report(all.length);
        return all;
      }
      const chunks = [];
      let received = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        received += value.length;
        report(received);
      }
      if (chunks.length === 1) return chunks[0];
      const all = new Uint8Array(received);
      let at = 0;
      for (const c of chunks) {
        all.set(c, at);
        at += c.length;
      }
      if (received === 0) report(0);
      return all;
    } catch (e) {
      if (signal?.aborted) throw abortError('the download');
      throw new ImError('transport', `the download broke off: ${e?.message ?? e}`);
    }
  }

  /** The metadata of attachment `id` (GET /api/v1/attachments/{id}/info): the object `upload` resolved with. */
  async attachmentInfo(id) {
    const token = this._httpToken();
    if (!isAttachmentId(id)) {
      throw new ImError('rejected', `${JSON.stringify(id)} is not an attachment id`, {
        status: 404, code: 'no_such_attachment', serverMessage: 'not an attachment id',
      });
    }
    const { status, text } = await this._exchange('GET', `${this._apiBase}/api/v1/attachments/${id}/info`, { token, what: 'the attachment info' });
    if (status !== 200) throw httpRefusal('the attachment info', status, text);
    return parseAttachment(text);
  }

  /**
   * A URL of attachment `id` for `<img src>`, `<a href>`, `<audio src>`: the
   * API's download URL with the token as the `token` query parameter (the
   * server accepts it there, http-api.md §1; it ends up in that server's
   * logs and the browser's history, as any such URL). Throws
   * `invalid_argument` for a string that is not an attachment id and
   * `not_signed_in` before the client has a token.
   */
  attachmentUrl(id) {
    if (!isAttachmentId(id)) throw new ImError('invalid_argument', `${JSON.stringify(id)} is not an attachment id`);
    return `${this._apiBase}/api/v1/attachments/${id}?token=${encodeURIComponent(this._httpToken())}`;
  }

  /** The token for HTTP calls: the current connection's, or the configured one. */
  _httpToken() {
    const token = this._token ?? this._auth.token;
    if (!token) throw new ImError('not_signed_in', 'no token yet: a password login has one after the first connection (`connected`)');
    return token;
  }

  _listenerFailed(e) {
    (this._opts.onListenerError ?? ((err) => console.error('[im-client] listener failed:', err)))(e);
  }

  /** `report(sent)` calls `onProgress(sent, total)` for each rise of `sent` (0…total). */
  _progress(onProgress, total) {
    let last = -1;
    return (sent) => {
      if (typeof onProgress !== 'function') return;
      const n = Math.min(total, Math.max(0, Math.floor(sent)));
      if (n <= last) return;
      last = n;
      try {
        onProgress(n, total);
      } catch (e) {
        this._listenerFailed(e);
      }
    };
  }

  /**
   * One HTTP exchange of the attachment calls: `{status, text}`. With a body
   * and `onUpload`, through XMLHttpRequest when there is one (its upload
   * progress), else fetch. `token`: sent as `Authorization: Bearer`.
   */
  async _exchange(method, url, { token, headers = {}, body, onUpload, signal, what }) {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined && onUpload && this._XHR) {
      return xhrExchange(this._XHR, { method, url, headers: h, body, onUpload, signal, what });
    }
    if (!this._fetch) throw new ImError('unsupported', 'no fetch available: pass options.fetch');
    if (signal?.aborted) throw abortError(what);
    try {
      const resp = await this._fetch(url, { method, headers: h, body, signal });
      return { status: resp.status, text: await resp.text() };
    } catch (e) {
      if (signal?.aborted) throw abortError(what);
      throw new ImError('transport', `${what}: ${method} ${shortUrl(url)} failed: ${e?.message ?? e}`);
    }
  }

  // -------------------------------------------------------- requests

  /** Queues a request; resolves with its reply frame (of type `expect`). */
  _request(frame, expect) {
    if (this._stopped || this._stopRequest) return Promise.reject(new ImError('stopped', 'the client has stopped'));
    const d = deferred();
    const req = { frame, expect, settled: false, timer: null, resolve: null, reject: null };
    req.resolve = (v) => {
      if (req.settled) return;
      req.settled = true;
      clearTimeout(req.timer);
      d.resolve(v);
    };
    req.reject = (e) => {
      if (req.settled) return;
      req.settled = true;
      clearTimeout(req.timer);
      d.reject(e);
    };
    // A timed-out request that was sent stays counted in the in-flight
    // window until the server answers (it answers each exactly once).
    req.timer = setTimeout(() => {
      req.reject(new ImError('timeout', 'no reply within the request timeout'));
      const i = this._waiting.indexOf(req);
      if (i >= 0) this._waiting.splice(i, 1);
    }, this._opts.requestTimeoutMs);
    this._waiting.push(req);
    this._schedulePump();
    return d.promise;
  }

  _reply(rid, frame) {
    const req = this._inFlight.get(rid);
    if (!req) return;
    this._inFlight.delete(rid);
    if (frame.type === req.expect) req.resolve(frame);
    else req.reject(new ImError('unexpected_reply', `unexpected reply: ${frame.type}`, { frameType: frame.type }));
  }

  /** Refuses a body over `max_body_bytes`, or whose frame would exceed `max_frame_bytes` (the server would close 1009, and resending would loop). */
  _checkSize(conv, cmid, draft) {
    const max = this._limits.max_body_bytes;
    const len = byteLen(draft.body) + (draft.content !== undefined ? byteLen(JSON.stringify(draft.content)) : 0);
    if (len > max) return new ImError('body_too_large', `body of ${len} bytes exceeds the limit of ${max}`, { len, max });
    const frameLen = byteLen(JSON.stringify(draftFrame(draft, Number.MAX_SAFE_INTEGER, conv, cmid)));
    const maxFrame = this._limits.max_frame_bytes;
    if (frameLen > maxFrame) {
      return new ImError('body_too_large', `frame of ${frameLen} bytes exceeds the limit of ${maxFrame}`, {
        len: frameLen,
        max: maxFrame,
      });
    }
    return null;
  }

  // ------------------------------------------------ the run (connect.js)

  /** The end of the run (or a close() before start()): fails what waits, flushes the cursors, emits `stopped`. */
  async _finish(reason) {
    if (this._stopped) return;
    this._stopped = true;
    for (const e of this._outbox.drain()) e.reply.reject(new ImError('stopped', 'the client stopped before the send was acknowledged'));
    for (const r of this._waiting.splice(0)) r.reject(new ImError('stopped', 'the client has stopped'));
    for (const r of this._inFlight.values()) r.reject(new ImError('stopped', 'the client has stopped'));
    this._inFlight.clear();
    await this._flushStore();
    this._log.info('stopped', reason);
    this._emit({ type: 'stopped', reason });
    for (const it of [...this._iterators]) it.end(false);
    this._done.resolve();
  }

  /** Runs one connection (made by connect.js) until it ends; resolves with how: `{kind: 'closed'|'lost'|'stop', code?, reason}`. */
  /**
   * The stored cursors are another user's (one browser, two accounts):
   * start over, or that user's cursors would skip this user's messages.
   * The store remembers its owner under `@user`; cursors saved before
   * that existed are trusted once.
   */
  _checkCursorOwner(user) {
    const loaded = this._loadedCursors;
    if (!loaded || user == null) return;
    this._loadedCursors = null;
    const owner = loaded['@user'];
    if (owner !== undefined && owner !== user) {
      this._log.warn(`the stored sync cursors belong to user ${owner}, not ${user}: syncing from the start`);
      this._sync = new SyncState({});
      for (const [conv, id] of Object.entries(loaded)) if (!conv.startsWith('@') && id > 0) this._store.save(conv, 0);
    }
    if (owner !== user) {
      this._store.save('@user', user);
      Promise.resolve(this._store.flush?.()).catch((e) => this._log.warn('flushing sync cursors failed', e));
    }
  }

  _runConnection({ ws, url, token, hello }) {
    this._token = token;
    this._device = hello.device ?? this._device;
    this._me = hello.user ?? null;
    this._node = hello.node ?? null;
    this._protocol = hello.protocol ?? MIN_PROTOCOL_VERSION;
    this._limits = helloLimits(hello);
    this._pacer = new Pacer(this._limits, this._now());
    this._connected = true;
    this._checkCursorOwner(this._me);
    this._sync.connected();

    const conn = new Connection(ws, url, {
      onFrame: (f) => {
        this._frame(f);
        if (!conn.ended) this._pump();
      },
      onEnd: () => {
        if (this._conn === conn) this._conn = null;
      },
      log: this._log,
    });
    this._conn = conn;
    this._emit({ type: 'connected', node: this._node, user: this._me, device: this._device, protocol: this._protocol });
    if (!conn.ended) {
      const heartbeat = heartbeatInterval(hello, this._opts.heartbeatIntervalMs);
      conn.heartbeat(heartbeat, this._opts.pongTimeoutMs, () => this._pacer.spend(1));
      conn.every(this._opts.tickMs, () => this._tick(conn));
      this._pump();
    }
    return conn.done;
  }

  /** The periodic tick: typing refresh/stop/expiry, cursor flush, retries. */
  _tick(conn) {
    if (conn.ended) return;
    const now = this._now();
    this._typingDue.push(...this._typingOut.tick(now));
    for (const [conv, user] of this._typingIn.expired(now)) this._emit({ type: 'typing', conv, user, typing: false });
    this._flushStore();
    this._sync.retrySync();
    this._outbox.release();
    this._pump();
  }

  _disconnected() {
    this._connected = false;
    this._readSync.disconnected();
    this._typingOut.clear();
    this._typingDue = [];
    this._quiet.clear();
    this._sync.disconnected();
    this._outbox.disconnected();
    for (const r of this._inFlight.values()) r.reject(new ImError('disconnected', 'the connection was lost before the reply'));
    this._inFlight.clear();
    this._flushStore();
  }

  _flushStore() {
    try {
      return Promise.resolve(this._store.flush?.()).catch((e) => this._log.warn('flushing sync cursors failed', e));
    } catch (e) {
      this._log.warn('flushing sync cursors failed', e);
      return Promise.resolve();
    }
  }

  _schedulePump() {
    if (this._pumpScheduled) return;
    this._pumpScheduled = true;
    queueMicrotask(() => {
      this._pumpScheduled = false;
      this._pump();
    });
  }

  /** Sends what is due: the next sync page request, unsent sends, typing, waiting requests, read state. */
  _pump() {
    const conn = this._conn;
    if (!this._connected || !conn || conn.ended) return;
    const unanswered =
      this._outbox.unanswered() +
      this._inFlight.size +
      this._readSync.unanswered() +
      this._quiet.size +
      (this._sync.syncInFlight() ? 1 : 0);
    const budget = sendBudget(this._pacer.available(this._now()), this._limits.max_in_flight, unanswered);
    if (budget === 0) return;
    const nextRid = () => ++this._rid;
    const frames = [];
    const sync = this._sync.nextSync(nextRid(), this._opts.syncPageLimit);
    if (sync) frames.push(sync);
    frames.push(...this._outbox.framesToSend(budget - frames.length, nextRid));
    // Typing the client refreshes or stops by itself goes before the app's
    // own typing calls queued since, so the latest state arrives last.
    for (const [conv, typing] of this._typingDue.splice(0, Math.max(0, budget - frames.length))) {
      const rid = nextRid();
      this._quiet.add(rid);
      frames.push({ type: 'typing', rid, conv, typing });
    }
    this._waiting = this._waiting.filter((r) => !r.settled);
    for (const req of this._waiting.splice(0, Math.max(0, budget - frames.length))) {
      const rid = nextRid();
      this._inFlight.set(rid, req);
      frames.push({ ...req.frame, rid });
    }
    const left = Math.max(0, budget - frames.length);
    frames.push(...this._readSync.frames(left, this._protocol, this._now(), nextRid));
    this._pacer.spend(frames.length);
    for (const f of frames) conn.write(f);
  }

  // ------------------------------------------------------------ frames

  /** What each server frame does to the client's state (frames.rs). */
  _frame(f) {
    const rid = f.rid;
    switch (f.type) {
      case 'message':
        this._offer(asMessage(f));
        break;
      case 'ack': {
        const sent = this._outbox.take(rid);
        if (sent) {
          this._offer(draftMessage(sent.draft, f.conv, f.id, this._me ?? 0, f.cmid ?? sent.cmid, f.ts ?? 0));
          sent.reply.resolve({ id: f.id, duplicate: !!f.duplicate });
        }
        break;
      }
      case 'sync_page':
        if (this._sync.isSync(rid)) {
          for (const m of f.messages ?? []) this._offer(m);
          if (this._sync.pageDone(rid, !!f.has_more)) {
            this._flushStore();
            this._readSync.synced();
            // A healthy connection: the next outage starts from the initial delay.
            this._backoff.reset();
            this._emit({ type: 'synced' });
          }
        }
        break;
      case 'ok':
        if (this._quiet.delete(rid)) break;
        if (this._readSync.answered(rid, null) !== Owner.NONE) break;
        this._reply(rid, f);
        break;
      case 'error':
        if (rid == null) this._log.warn('error frame without rid', f.code, f.message);
        else if (this._quiet.delete(rid)) this._log.debug('typing refresh refused', f.code);
        else if (this._readSync.answered(rid, f.code) !== Owner.NONE) {
          // a read mark, report or inbox page: handled there
        } else this._refused(rid, f.code, f.message);
        break;
      case 'inbox_page': {
        const entries = f.entries ?? [];
        if (this._readSync.inboxPage(rid, entries.at(-1)?.conv ?? null, !!f.has_more) === Owner.INBOX) {
          for (const e of entries) this._changed(e.conv, this._book.inbox(e), true);
        } else this._reply(rid, f);
        break;
      }
      case 'history_page':
      case 'presence_list':
      case 'receipt_list':
        this._reply(rid, f);
        break;
      case 'presence':
        this._emit({ type: 'presence', presence: { user: f.user, status: f.status, last_active_at: f.last_active_at } });
        break;
      case 'member':
        if (f.change === 'added' && f.user === this._me) this._sync.noteGap(); // a new group: its past comes with a sync
        this._emit({ type: 'member', group: f.group, user: f.user, change: f.change, by: f.by });
        break;
      case 'user_typing':
        this._typingIn.heard(f.conv, f.user, !!f.typing, this._now());
        this._emit({ type: 'typing', conv: f.conv, user: f.user, typing: !!f.typing });
        break;
      case 'read_up_to': {
        const change = this._book.read(f.conv, f.id);
        this._emit({ type: 'readUpTo', conv: f.conv, id: f.id });
        this._changed(f.conv, change, false);
        break;
      }
      case 'receipt':
        this._emit({ type: 'receipt', conv: f.conv, user: f.user, read: f.read, delivered: f.delivered });
        break;
      default:
        // pong, hello, and frame types of later revisions: ignored (protocol §2)
        break;
    }
  }

  /** An `error` answering request `rid`. */
  _refused(rid, code, message) {
    if (this._outbox.isSend(rid)) {
      // Not processed, or maybe not stored: resend later with the same cmid.
      if (TRANSIENT_CODES.has(code)) this._outbox.requeue(rid);
      else this._outbox.take(rid)?.reply.reject(new ImError('rejected', `refused by the server: ${code}: ${message}`, { code, serverMessage: message }));
    } else if (this._sync.isSync(rid)) {
      this._log.warn('sync refused; retrying shortly', code, message);
      this._sync.syncFailed(rid);
    } else {
      const req = this._inFlight.get(rid);
      if (req) {
        this._inFlight.delete(rid);
        req.reject(new ImError('rejected', `refused by the server: ${code}: ${message}`, { code, serverMessage: message }));
      }
    }
  }

  /** A message from any source: handed to the app if it is the next one (sync-state.js decides). */
  _offer(m) {
    offer(this._sync, m, (msg) => {
      this._emit({ type: 'message', message: msg });
      this._afterDelivery(msg);
      try {
        const r = this._store.save(msg.conv, msg.id);
        if (r && typeof r.catch === 'function') r.catch((e) => this._log.warn('saving a sync cursor failed', e));
      } catch (e) {
        this._log.warn('saving a sync cursor failed', e);
      }
    });
  }

  /** A message reached the app: counts, receipts and typing follow. */
  _afterDelivery(m) {
    const own = this._me !== null && m.from === this._me;
    if (own) this._typingOut.sentMessage(m.conv);
    else {
      this._readSync.delivered(m.conv, m.id);
      if (this._typingIn.messageFrom(m.conv, m.from)) this._emit({ type: 'typing', conv: m.conv, user: m.from, typing: false });
    }
    this._changed(m.conv, this._book.message(m.conv, m.id, own), false);
  }

  /** Tells the app about a read-state change: `readUpTo` when `announceRead` and the read id rose, `unread` when the count changed. */
  _changed(conv, change, announceRead) {
    if (!change) return;
    if (announceRead && change.readRose) this._emit({ type: 'readUpTo', conv, id: change.state.read });
    if (change.unreadChanged) this._emit({ type: 'unread', conv, unread: change.state.unread, read: change.state.read });
  }
}

export default ImClient;
