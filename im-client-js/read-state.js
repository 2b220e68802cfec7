// read-state.js — read state, apart from any I/O (ports of im-client's
// read_book.rs and read_sync.rs, protocol version 2, §5.9–§5.11):
//
// * ReadBook: what the client knows of each conversation — newest id, the
//   user's read id, unread = the messages above the read id that are not
//   events (reactions, edits, recalls, notices: they raise the head but do
//   not count, as on the server) — raised by every message the app got (one's
//   own raise the read id, as on the server), every read mark (here or on
//   another device) and the inbox. The app reads it any time.
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

/** Most event ids a conversation's entry remembers above its read id; beyond, the oldest count as unread again. */
export const MAX_SKIPPED = 10_000;

/** The first index of sorted `a` whose value is above `id`. */
function firstAbove(a, id) {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] <= id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * One conversation: `head` and `read` as ids; `skip`, the ids above `read`
 * of events the app got (ascending); `hidden`, events above `read` up to
 * `hiddenTop` the app did not get (counted from the inbox's `unread`, their
 * ids unknown); `low`..`high`, the newest run of ids the app got without a
 * gap (messages reach it in order: after the first, usually all of them).
 * Unread = head − read − the events.
 */
class Entry {
  constructor() {
    this.head = 0;
    this.read = 0;
    this.skip = [];
    this.hidden = 0;
    this.hiddenTop = 0;
    this.low = 0;
    this.high = 0;
  }

  state() {
    return { head: this.head, read: this.read, unread: Math.max(0, this.head - this.read - this.skip.length - this.hidden) };
  }

  /** Ids in (`read`, `top`] the app did not get. */
  unknown(top) {
    const all = Math.max(0, top - this.read);
    if (this.low === 0) return all;
    const got = Math.max(0, Math.min(top, this.high) - Math.max(this.read, this.low - 1));
    return all - got;
  }

  /** Known event ids in (`read`, `top`]. */
  skipped(top) {
    return firstAbove(this.skip, top);
  }

  /** After the read id rose: forget what is read now, keep `hidden` within what it can still be. */
  prune() {
    const gone = firstAbove(this.skip, this.read);
    if (gone > 0) this.skip.splice(0, gone);
    if (this.read >= this.hiddenTop) this.hidden = 0;
    else this.hidden = Math.min(this.hidden, this.unknown(this.hiddenTop));
  }
}

export class ReadBook {
  constructor() {
    /** @type {Map<string, Entry>} */
    this._convs = new Map();
  }

  /** `{head, read, unread}` of `conv`, or null before the client heard of it. */
  get(conv) {
    return this._convs.get(conv)?.state() ?? null;
  }

  /** Every conversation heard of, in conversation id order: `[conv, state]` pairs. */
  all() {
    return [...this._convs.keys()].sort(compareConv).map((c) => [c, this.get(c)]);
  }

  /** The sum of the unread counts (the app badge). */
  totalUnread() {
    let n = 0;
    for (const e of this._convs.values()) n += e.state().unread;
    return n;
  }

  /**
   * A message reached the app (`own`: sent by this user, which marks the
   * conversation read up to it). An `event` (a reaction, edit, recall or
   * notice; see events.js) raises the head but does not count as unread.
   */
  message(conv, id, own, event = false) {
    return this._change(conv, (e) => {
      const fresh = e.low === 0 || id < e.low || id > e.high;
      // The run of ids the app got without a gap, ending at the newest.
      if (e.low === 0 || id > e.high + 1) e.low = e.high = id;
      else if (id === e.high + 1) e.high = id;
      else if (id === e.low - 1) e.low = id;
      if (own) e.read = Math.max(e.read, id);
      e.head = Math.max(e.head, id, e.read);
      if (event && fresh && id > e.read) {
        // An event the inbox counted among the hidden ones is now known.
        if (e.hidden > 0 && id <= e.hiddenTop) e.hidden -= 1;
        const at = firstAbove(e.skip, id);
        if (e.skip[at - 1] !== id) e.skip.splice(at, 0, id);
        if (e.skip.length > MAX_SKIPPED) e.skip.shift();
      }
      e.prune();
    });
  }

  /** The read id is at least `id` (a mark here or elsewhere). */
  read(conv, id) {
    return this._change(conv, (e) => {
      e.read = Math.max(e.read, id);
      e.head = Math.max(e.head, e.read);
      e.prune();
    });
  }

  /**
   * The server's inbox entry for a conversation: raises head and read; its
   * `unread` (which leaves events out) tells how many of the messages up to
   * its head that the app did not get are events. An entry older than one
   * applied before only raises.
   */
  inbox(entry) {
    return this._change(entry.conv, (e) => {
      const head = entry.head ?? 0;
      e.read = Math.max(e.read, entry.read ?? 0);
      e.head = Math.max(e.head, head, e.read);
      e.prune();
      if (!Number.isSafeInteger(entry.unread) || head <= e.read || (head < e.hiddenTop && e.hidden > 0)) return;
      // Events in (read, head]: all but the unread ones (the newest, if the
      // entry's read is below the one known here); those not known are hidden.
      const events = head - e.read - Math.min(entry.unread, head - e.read);
      e.hidden = Math.max(0, Math.min(events - e.skipped(head), e.unknown(head)));
      e.hiddenTop = head;
    });
  }

  /** Applies `fn` to the entry of `conv`. Returns `{state, readRose, unreadChanged}`, or null when nothing changed. */
  _change(conv, fn) {
    let e = this._convs.get(conv);
    if (!e) this._convs.set(conv, (e = new Entry()));
    const before = e.state();
    fn(e);
    const after = e.state();
    if (after.head === before.head && after.read === before.read && after.unread === before.unread) return null;
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
