// sync-state.js — the sync state machine, apart from any I/O (a port of
// im-client's state.rs): per-conversation cur_max_message_id cursors,
// dedupe by id, gaps, messages held ahead of a gap, and the sync run
// (protocol §8). The client feeds it every message — live, from a sync
// page, or its own acknowledged send — through `offer`, and sends the
// `sync` frames `nextSync` hands out.
//
// Invariants: a cursor only moves in `delivered`, which the client calls
// only once the app has the message; it moves forward one id at a time, so
// each message reaches the app exactly once and in order.
//
// Rooms are special (as in the protocol): a room is synced only when named,
// and a device does not want a busy room's whole past when it first sees
// it. A room without a cursor therefore starts at the first message seen
// (live or acked) and is named in every sync after that.

import { convKind } from './conv.js';

/** Most live messages held back waiting for a gap to fill; beyond, they are dropped (the sync brings them). */
export const MAX_AHEAD = 1024;

/** What to do with a message. */
export const Verdict = Object.freeze({
  /** `id == cursor + 1`: hand it to the app, then call `delivered`. */
  DELIVER: 'deliver',
  /** `id <= cursor`: already handed to the app; drop it. */
  DUPLICATE: 'duplicate',
  /** `id > cursor + 1`: messages are missing before it; `hold` it, a sync fills the gap. */
  GAP: 'gap',
});

export class SyncState {
  /** @param {Record<string, number>} [cursors] cursors a store loaded */
  constructor(cursors = {}) {
    /** @type {Map<string, number>} */
    this._cursors = new Map();
    for (const [conv, id] of Object.entries(cursors)) {
      // `@…` keys are the client's own bookkeeping (the cursors' owner); a
      // cursor of 0 is the same as none (a cleared entry).
      if (!conv.startsWith('@') && Number.isSafeInteger(id) && id > 0) this._cursors.set(conv, id);
    }
    this._inFlight = null; // rid of the one `sync` in flight
    this._wanted = false; // a sync (or another page) is wanted
    this._paused = false; // after a failed sync, wait for retrySync()
    /** @type {Map<string, Map<number, object>>} messages ahead of a gap, per conversation */
    this._ahead = new Map();
    this._aheadLen = 0;
    /**
     * The held messages when the sync in flight was sent: a sync that ends
     * with one of them still held was not given its conversation (the user
     * left the group or the room), so the gap cannot fill.
     * @type {Array<[string, number]>}
     */
    this._covered = [];
  }

  /** A copy of every cursor. */
  cursors() {
    return Object.fromEntries(this._cursors);
  }

  /** The cursor of `conv` (0: nothing delivered yet). */
  cursor(conv) {
    return this._cursors.get(conv) ?? 0;
  }

  /** What to do with message `id` of `conv`. */
  classify(conv, id) {
    let cursor = this._cursors.get(conv);
    if (cursor === undefined) {
      if (convKind(conv) === 'room') return Verdict.DELIVER;
      cursor = 0;
    }
    if (id <= cursor) return Verdict.DUPLICATE;
    if (id === cursor + 1) return Verdict.DELIVER;
    return Verdict.GAP;
  }

  /** The app has message `id` of `conv` (it was classified DELIVER). */
  delivered(conv, id) {
    const c = this._cursors.get(conv) ?? 0;
    if (id > c || !this._cursors.has(conv)) this._cursors.set(conv, Math.max(c, id));
  }

  /** A gap (or a new group) was seen: sync as soon as no sync is in flight. */
  noteGap() {
    this._wanted = true;
  }

  /**
   * Keeps a message that came ahead of a gap, so that it is delivered as
   * soon as the gap fills (usually by the sync in flight) instead of being
   * fetched again. Asks for a sync unless one is in flight; if that one does
   * not fill the gap, `pageDone` asks again.
   */
  hold(m) {
    if (this._inFlight === null) this._wanted = true;
    if (this._aheadLen >= MAX_AHEAD) {
      this._wanted = true; // dropped: the sync brings it
      return;
    }
    let held = this._ahead.get(m.conv);
    if (!held) this._ahead.set(m.conv, (held = new Map()));
    if (!held.has(m.id)) {
      held.set(m.id, m);
      this._aheadLen += 1;
    }
  }

  /**
   * The held message that is now next in `conv`, if any (call after each
   * `delivered`). Held ones the cursor has passed are dropped as duplicates.
   */
  takeNext(conv) {
    const held = this._ahead.get(conv);
    if (!held) return null;
    const cursor = this.cursor(conv);
    let found = null;
    for (const id of [...held.keys()].sort((a, b) => a - b)) {
      if (id > cursor + 1) break;
      const m = held.get(id);
      held.delete(id);
      this._aheadLen -= 1;
      if (id === cursor + 1) {
        found = m;
        break;
      }
    }
    if (held.size === 0) this._ahead.delete(conv);
    return found;
  }

  /** Number of messages held ahead of gaps. */
  heldCount() {
    return this._aheadLen;
  }

  /** A new connection is up: whatever was in flight is gone; sync now. */
  connected() {
    this._inFlight = null;
    this._wanted = true;
    this._paused = false;
    this._ahead.clear();
    this._aheadLen = 0;
    this._covered = [];
  }

  /** The connection is gone. */
  disconnected() {
    this._inFlight = null;
  }

  /** Whether a sync request is unanswered. */
  syncInFlight() {
    return this._inFlight !== null;
  }

  /** Whether `rid` is the sync in flight. */
  isSync(rid) {
    return this._inFlight !== null && this._inFlight === rid;
  }

  /** The `sync` frame to send now (with request id `rid`), or null. */
  nextSync(rid, limit) {
    if (!this._wanted || this._paused || this._inFlight !== null) return null;
    this._wanted = false;
    this._inFlight = rid;
    this._covered = [];
    for (const [conv, held] of this._ahead) for (const id of held.keys()) this._covered.push([conv, id]);
    const frame = { type: 'sync', rid, cursors: this.cursors() };
    if (limit != null) frame.limit = limit;
    return frame;
  }

  /**
   * The page of sync `rid` was processed. Returns true when the device is
   * caught up: no more pages and no gap left open (held messages the sync
   * did not reach mean another sync). Messages held since before the sync
   * was sent that its last page left held are dropped instead: the server
   * no longer gives their conversation, and asking again would loop (the
   * cursor stays, so nothing is skipped).
   */
  pageDone(rid, hasMore) {
    if (!this.isSync(rid)) return false;
    this._inFlight = null;
    if (!hasMore) {
      for (const [conv, id] of this._covered) {
        const held = this._ahead.get(conv);
        if (!held) continue;
        if (held.delete(id)) this._aheadLen -= 1;
        if (held.size === 0) this._ahead.delete(conv);
      }
      this._covered = [];
    }
    if (hasMore || this._ahead.size > 0) this._wanted = true;
    return !this._wanted;
  }

  /** The sync failed (an `error` frame): try again on the next `retrySync`, not in a tight loop. */
  syncFailed(rid) {
    if (this.isSync(rid)) {
      this._inFlight = null;
      this._wanted = true;
      this._paused = true;
    }
  }

  /** Lets a paused sync go again (called on the client's periodic tick). */
  retrySync() {
    this._paused = false;
  }
}

/**
 * Offers a message (live, from a page, or an acked own send) to `state`:
 * `deliver(m)` is called for it and for every held message that follows it,
 * in order, each exactly once; the cursor moves after each `deliver` returns.
 * Returns the number of messages delivered.
 */
export function offer(state, m, deliver) {
  let next = m;
  let n = 0;
  while (next) {
    const cur = next;
    next = null;
    switch (state.classify(cur.conv, cur.id)) {
      case Verdict.DELIVER:
        deliver(cur);
        n += 1;
        // Only now does the app have it: advance the cursor.
        state.delivered(cur.conv, cur.id);
        // A message held behind this gap may be next now.
        next = state.takeNext(cur.conv);
        break;
      case Verdict.GAP:
        state.hold(cur);
        break;
      default: // duplicate: dropped
        break;
    }
  }
  return n;
}
