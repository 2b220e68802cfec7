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
// * attachments over HTTP (files.js, a port of files.rs): upload with
//   progress by the flow the server names (direct or presigned), download,
//   URLs for <img>, and the content of a message carrying one;
// * events (events.js, a port of im_protocol::events): reactions, edits and
//   recalls sent through the outbox like any message, `applyEvent` to change
//   a shown message in place; events never count as unread.
//
// The state machines live in the sibling modules, free of I/O. This module
// is the public ImClient: options, public methods, events, requests and
// which frames go out, and the glue between the parts. connection.js holds
// one WebSocket connection (handshake, heartbeat, frames, closing);
// connect.js the run and reconnect loop, login and the dispatcher lookup;
// frames.js what each server frame does to the client's state; files.js
// the HTTP calls of attachments; errors.js ImError.

import { Backoff } from './backoff.js';
import { run, STOPPED } from './connect.js';
import { Connection, DEFAULT_LIMITS, heartbeatInterval, helloLimits, MIN_PROTOCOL_VERSION } from './connection.js';
import { isConversationId } from './conv.js';
import { defaultCursorStore } from './cursor-store.js';
import { ImError } from './errors.js';
import { editDraft, reactionDraft, recallDraft } from './events.js';
import { Files } from './files.js';
import { handleFrame } from './frames.js';
import { CmidGen, draftFrame, normalizeDraft, Outbox } from './outbox.js';
import { Pacer, sendBudget } from './pacer.js';
import { ReadBook, ReadSync } from './read-state.js';
import { SyncState } from './sync-state.js';
import { TypingIn, TypingOut } from './typing.js';

export { Backoff, CloseCode, closeCodeName, closeReaction, DEFAULT_RECONNECT, Reaction } from './backoff.js';
export { DEFAULT_LIMITS, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from './connection.js';
export { compareConv, convKind, directConv, groupConv, isConversationId, roomConv } from './conv.js';
export { IndexedDBCursorStore, MemoryCursorStore, WebStorageCursorStore, defaultCursorStore } from './cursor-store.js';
export { ImError } from './errors.js';
export {
  applyEvent, EDIT, editDraft, EVENT_KINDS, eventChange, isEvent, isEventKind, isRecalled, isValidEmoji, MAX_EMOJI_LEN,
  MAX_EMOJIS_PER_MESSAGE, MAX_REACTIONS_PER_MESSAGE, REACTION, reactionDraft, RECALL, recallDraft, recallMessage, SYSTEM,
  SYSTEM_MEMBER_ADDED, SYSTEM_MEMBER_BANNED, SYSTEM_MEMBER_KICKED, SYSTEM_MEMBER_LEFT, SYSTEM_MEMBER_MUTED,
  SYSTEM_MEMBER_REMOVED, SYSTEM_MEMBER_UNBANNED, SYSTEM_MEMBER_UNMUTED, SYSTEM_ROLE_CHANGED,
} from './events.js';
export { attachmentContent, attachmentDraft, attachmentKind, attachmentMatches, isAttachmentId, sha256Hex } from './files.js';
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
    this._files = new Files({
      apiBase: this._apiBase,
      token: () => this._token ?? this._auth.token, // the current connection's, or the configured one
      fetch: this._fetch,
      // Uploads go through XMLHttpRequest where there is one (browsers), for
      // its upload progress; `XMLHttpRequest: null` makes them use fetch.
      XMLHttpRequest: o.XMLHttpRequest !== undefined ? o.XMLHttpRequest : (globalThis.XMLHttpRequest ?? null),
      onCallbackError: (e) => this._listenerFailed(e),
    });
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
          this._listenerFailed(e);
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
   * mentions?, target?}`, `target` for events only) and resolves with `{id,
   * duplicate}` once it is stored. It waits in the outbox until
   * acknowledged, across reconnects, and is resent with the same cmid, so
   * it is stored exactly once. The device's own message also appears as a
   * `message` event at its place in the order.
   */
  send(conv, bodyOrDraft) {
    return this._enqueue(conv, () => normalizeDraft(bodyOrDraft));
  }

  /**
   * Adds this user's `emoji` reaction to message `target` of `conv`. Like
   * the edits and recalls below, an event sent as `send` sends (same
   * outbox, cmid and resends; resolves with the event's `{id, duplicate}`),
   * and it also arrives as a `message` event: apply it with `applyEvent`.
   */
  react(conv, target, emoji) {
    return this._enqueue(conv, () => normalizeDraft(reactionDraft(target, emoji)));
  }

  /** Takes back this user's `emoji` reaction to message `target`. */
  unreact(conv, target, emoji) {
    return this._enqueue(conv, () => normalizeDraft(reactionDraft(target, emoji, true)));
  }

  /**
   * Replaces the body of this user's message `target` (and its mentions,
   * none unless given; and its content object, for `location` and app
   * kinds) within the server's `limits.edit_window_ms`.
   */
  edit(conv, target, body, options = {}) {
    return this._enqueue(conv, () => normalizeDraft(editDraft(target, body, options)));
  }

  /** Recalls message `target` (this user's, within `limits.recall_window_ms`; a group owner or admin: any). */
  recall(conv, target) {
    return this._enqueue(conv, () => normalizeDraft(recallDraft(target)));
  }

  /** Queues the draft `makeDraft()` returns (throwing: `invalid_argument`) in the outbox; resolves on its ack. */
  _enqueue(conv, makeDraft) {
    if (this._stopped || this._stopRequest) return Promise.reject(new ImError('stopped', 'the client has stopped'));
    if (!isConversationId(conv)) return Promise.reject(new ImError('invalid_argument', `bad conversation id ${conv}`));
    let draft;
    try {
      draft = makeDraft();
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
  // Over HTTP, by files.js (Files): these need a token, not the WebSocket.

  /** How this server takes uploads (GET /api/v1/attachments/config), asked once per client. */
  uploadConfig() {
    return this._files.uploadConfig();
  }

  /** Uploads a file by the server's flow and resolves with the attachment; send it with `attachmentDraft`. */
  upload(data, options = {}) {
    return this._files.upload(data, options);
  }

  /** Downloads attachment `id`: its bytes (a Uint8Array), with progress. */
  download(id, options = {}) {
    return this._files.download(id, options);
  }

  /** The metadata of attachment `id` (GET /api/v1/attachments/{id}/info): the object `upload` resolved with. */
  attachmentInfo(id) {
    return this._files.info(id);
  }

  /** A URL of attachment `id` for `<img src>`, `<a href>`: the download URL with the token in its query. */
  attachmentUrl(id) {
    return this._files.url(id);
  }

  /** What a listener (or an `onProgress` callback) threw: to `onListenerError`, else the console. */
  _listenerFailed(e) {
    (this._opts.onListenerError ?? ((err) => console.error('[im-client] listener failed:', err)))(e);
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

  /** Runs one connection (made by connect.js) until it ends; resolves with how: `{kind: 'closed'|'lost'|'stop', code?, reason}`. */
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
        handleFrame(this, f);
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
}

export default ImClient;
