// read-state.js — read state, apart from any I/O (ports of im-client's
// read_book.rs and read_sync.rs, protocol version 2, §5.9–§5.11):
//
// * ReadBook: what the client knows of each conversation — newest id, the
//   user's read id, unread = head − read — raised by every message the app
//   got (one's own raise the read id, as on the server), every read mark
//   (here or on another device) and the inbox. The app reads it any time.
// * ReadSync: what the client sends about read state — read marks (queued
//   while offline, the highest per conversation wins, resent after a
//   reconnect), the inbox walk after the first sync of each connection, and
//   `received` reports (at most one per RECEIPT_INTERVAL_MS).

import { compareConv, convKind } from './conv.js';

/** At most one `received` report per this many ms (protocol §12). */
export const RECEIPT_INTERVAL_MS = 1000;
/** Most cursors in one `received` frame (protocol §12). */
export const MAX_RECEIVED_CURSORS = 10_000;

/** Error codes after which a request is worth sending again (protocol §10). */
export const TRANSIENT_CODES = new Set(['rate_limited', 'internal', 'unavailable']);

const stateOf = (head, read) => ({ head, read, unread: Math.max(0, head - read) });

export class ReadBook {
  constructor() {
    /** @type {Map<string, [number, number]>} conv -> [head, read] */
    this._convs = new Map();
  }

  /** `{head, read, unread}` of `conv`, or null before the client heard of it. */
  get(conv) {
    const e = this._convs.get(conv);
    return e ? stateOf(e[0], e[1]) : null;
  }

  /** Every conversation heard of, in conversation id order: `[conv, state]` pairs. */
  all() {
    return [...this._convs.keys()].sort(compareConv).map((c) => [c, this.get(c)]);
  }

  /** The sum of the unread counts (the app badge). */
  totalUnread() {
    let n = 0;
    for (const [head, read] of this._convs.values()) n += Math.max(0, head - read);
    return n;
  }

  /** A message reached the app (`own`: sent by this user, which marks the conversation read up to it). */
  message(conv, id, own) {
    return this._update(conv, id, own ? id : 0);
  }

  /** The read id is at least `id` (a mark here or elsewhere). */
  read(conv, id) {
    return this._update(conv, id, id);
  }

  /** The server's inbox entry for a conversation. */
  inbox(entry) {
    return this._update(entry.conv, entry.head ?? 0, entry.read ?? 0);
  }

  /**
   * Raises head to at least `head` and read to at least `read`. Returns
   * `{state, readRose, unreadChanged}`, or null when nothing changed.
   */
  _update(conv, head, read) {
    let e = this._convs.get(conv);
    if (!e) this._convs.set(conv, (e = [0, 0]));
    const before = stateOf(e[0], e[1]);
    e[1] = Math.max(e[1], read);
    e[0] = Math.max(e[0], head, e[1]);
    const after = stateOf(e[0], e[1]);
    if (after.head === before.head && after.read === before.read) return null;
    return { state: after, readRose: after.read > before.read, unreadChanged: after.unread !== before.unread };
  }
}

function raise(map, conv, id) {
  map.set(conv, Math.max(map.get(conv) ?? 0, id));
}

/** Who an answer belongs to (`ReadSync#answered`, `#inboxPage`). */
export const Owner = Object.freeze({ NONE: 'none', DONE: 'done', INBOX: 'inbox' });

export class ReadSync {
  constructor() {
    this._pending = new Map(); // read marks not yet sent: the highest per conversation
    this._marks = new Map(); // rid -> [conv, id]: sent, unanswered
    this._unreported = new Map(); // messages of others the app got since the last report
    this._reports = new Map(); // rid -> Map(conv -> id): `received` in flight
    this._lastReport = null; // ms of the last report
    this._inboxWanted = undefined; // undefined: no walk wanted; null or a conv: start after it
    this._inboxRid = null;
    this._inboxWalked = false; // walked (or walking) on this connection
  }

  /** The app marked `conv` read up to `id` (queued; the highest wins). */
  mark(conv, id) {
    raise(this._pending, conv, id);
  }

  /** Read marks waiting to go out, as an object (for tests and inspection). */
  pendingMarks() {
    return Object.fromEntries(this._pending);
  }

  /** A message of another user reached the app (rooms have no receipts). */
  delivered(conv, id) {
    if (convKind(conv) !== 'room') raise(this._unreported, conv, id);
  }

  /**
   * A sync finished: after the first of a connection, walk the inbox once,
   * to learn what was read elsewhere while away (later syncs fill gaps;
   * live `read_up_to` covers the rest).
   */
  synced() {
    if (!this._inboxWalked) {
      this._inboxWalked = true;
      this._inboxWanted = null;
    }
  }

  /** Requests sent and not answered. */
  unanswered() {
    return this._marks.size + this._reports.size + (this._inboxRid !== null ? 1 : 0);
  }

  /** Up to `budget` frames due at `nowMs` on a connection of `protocol`, with request ids from `nextRid()`. */
  frames(budget, protocol, nowMs, nextRid) {
    const out = [];
    if (protocol < 2) return out;
    for (const conv of [...this._pending.keys()].sort(compareConv)) {
      if (out.length >= budget) break;
      const id = this._pending.get(conv);
      this._pending.delete(conv);
      const rid = nextRid();
      this._marks.set(rid, [conv, id]);
      out.push({ type: 'read', rid, conv, id });
    }
    if (out.length < budget && this._inboxRid === null && this._inboxWanted !== undefined) {
      const after = this._inboxWanted;
      this._inboxWanted = undefined;
      const rid = nextRid();
      this._inboxRid = rid;
      const f = { type: 'inbox', rid };
      if (after !== null) f.after = after;
      out.push(f);
    }
    const due = this._lastReport === null || nowMs - this._lastReport >= RECEIPT_INTERVAL_MS;
    if (out.length < budget && due && this._unreported.size > 0) {
      const convs = [...this._unreported.keys()].sort(compareConv).slice(0, MAX_RECEIVED_CURSORS);
      const cursors = new Map();
      for (const c of convs) {
        cursors.set(c, this._unreported.get(c));
        this._unreported.delete(c);
      }
      const rid = nextRid();
      this._reports.set(rid, cursors);
      this._lastReport = nowMs;
      out.push({ type: 'received', rid, cursors: Object.fromEntries(cursors) });
    }
    return out;
  }

  /** The server answered `rid` with `ok` (`refusedCode` null) or an error code. */
  answered(rid, refusedCode = null) {
    const report = this._reports.get(rid);
    if (report) {
      this._reports.delete(rid);
      if (refusedCode && TRANSIENT_CODES.has(refusedCode)) this._unreport(report);
      return Owner.DONE;
    }
    if (this._inboxRid !== null && this._inboxRid === rid) {
      // A refused page ends the walk for this connection (the next one walks
      // again; live `read_up_to` still arrives).
      this._inboxRid = null;
      return Owner.DONE;
    }
    const mark = this._marks.get(rid);
    if (!mark) return Owner.NONE;
    this._marks.delete(rid);
    if (refusedCode && TRANSIENT_CODES.has(refusedCode)) this.mark(mark[0], mark[1]);
    // Refused for good (e.g. invalid_field): dropped.
    return Owner.DONE;
  }

  /** An inbox page arrived: is it ours? Continues the walk when `hasMore`. */
  inboxPage(rid, lastConv, hasMore) {
    if (this._inboxRid === null || this._inboxRid !== rid) return Owner.NONE;
    this._inboxRid = null;
    if (hasMore && lastConv) this._inboxWanted = lastConv;
    return Owner.INBOX;
  }

  _unreport(cursors) {
    for (const [conv, id] of cursors) this.delivered(conv, id);
  }

  /**
   * The connection ended: unanswered marks go back to the queue (they may or
   * may not have been applied; marking again is harmless), so do reports.
   */
  disconnected() {
    for (const [conv, id] of this._marks.values()) this.mark(conv, id);
    this._marks.clear();
    for (const cursors of this._reports.values()) this._unreport(cursors);
    this._reports.clear();
    this._inboxRid = null;
    this._inboxWanted = undefined;
    this._inboxWalked = false;
  }
}
