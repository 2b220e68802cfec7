// outbox.js — the ordered, bounded queue of sends that await their `ack`
// (a port of im-client's outbox.rs), the client message ids that make
// resending them safe, and drafts (what a send carries, protocol §5.1/§13;
// events name the message they change in `target`, see events.js).
//
// A send stays in the outbox until acked (or refused for good), across
// reconnects; after each reconnect every entry is sent again, in order,
// with its original `cmid`, which the server deduplicates (protocol §7).

import { checkDraftTarget } from './events.js';

/**
 * Normalizes what the app passed to `send`: a string (plain text) or a
 * draft `{body, kind?, content?, replyTo?, mentions?, target?}`.
 */
export function normalizeDraft(bodyOrDraft) {
  // A deep copy: the app may change its object after send(), but a resend
  // must carry what was sent first (the server keeps that one by cmid).
  const d = typeof bodyOrDraft === 'string' ? { body: bodyOrDraft } : structuredClone(bodyOrDraft);
  if (typeof d.body !== 'string') throw new TypeError('a message needs a string body');
  if (d.kind === 'text') delete d.kind;
  if (d.mentions && !Array.isArray(d.mentions)) throw new TypeError('mentions must be an array of user ids');
  checkDraftTarget(d);
  return d;
}

/** The `send` frame of a draft. */
export function draftFrame(draft, rid, conv, cmid) {
  const f = { type: 'send', rid, conv, cmid, body: draft.body };
  if (draft.kind) f.kind = draft.kind;
  if (draft.content !== undefined) f.content = draft.content;
  if (draft.replyTo != null) f.reply_to = draft.replyTo;
  if (draft.mentions && draft.mentions.length > 0) f.mentions = [...draft.mentions];
  if (draft.target != null) f.target = draft.target;
  return f;
}

/** The message as stored, once acknowledged with `id` at `ts` (for the app's event stream). */
export function draftMessage(draft, conv, id, from, cmid, ts) {
  const m = { conv, id, from, cmid, body: draft.body, ts };
  if (draft.mentions && draft.mentions.length > 0) m.mentions = [...draft.mentions];
  if (draft.kind) m.kind = draft.kind;
  if (draft.content !== undefined) m.content = draft.content;
  if (draft.replyTo != null) m.reply_to = draft.replyTo;
  if (draft.target != null) m.target = draft.target;
  return m;
}

/**
 * Un-acknowledged sends, in the order the app made them, bounded. An entry
 * is `{conv, cmid, draft, rid, held, reply}`: `rid` is its request id on the
 * current connection (null: not sent on it yet), `held` means refused for a
 * passing reason and waiting for `release()`, `reply` is whatever the caller
 * uses to settle the app's promise.
 */
export class Outbox {
  constructor(cap = 1000) {
    this._cap = Math.max(1, cap);
    /** @type {Map<number, object>} insertion-ordered by sequence number */
    this._entries = new Map();
    /** @type {Map<number, number>} rid -> sequence */
    this._byRid = new Map();
    this._seq = 0;
  }

  /** Queues a send; false when the outbox is full. */
  push(conv, cmid, draft, reply) {
    if (this._entries.size >= this._cap) return false;
    this._seq += 1;
    this._entries.set(this._seq, { conv, cmid, draft, rid: null, held: false, reply });
    return true;
  }

  /** Number of sends awaiting an ack. */
  get size() {
    return this._entries.size;
  }

  /** Every entry, in order (read-only use). */
  entries() {
    return [...this._entries.values()];
  }

  /**
   * Assigns request ids (from `nextRid()`) to the first `max` sends not yet
   * sent on this connection and not held, in order, and returns their frames.
   */
  framesToSend(max, nextRid) {
    const frames = [];
    for (const [seq, e] of this._entries) {
      if (frames.length >= max) break;
      if (e.rid !== null || e.held) continue;
      const rid = nextRid();
      e.rid = rid;
      this._byRid.set(rid, seq);
      frames.push(draftFrame(e.draft, rid, e.conv, e.cmid));
    }
    return frames;
  }

  /** Sends written on the current connection and not answered yet. */
  unanswered() {
    return this._byRid.size;
  }

  /** Whether `rid` is one of our unanswered sends. */
  isSend(rid) {
    return this._byRid.has(rid);
  }

  /** Removes and returns the send answered by `rid` (acked, or refused for good); null if not ours. */
  take(rid) {
    const seq = this._byRid.get(rid);
    if (seq === undefined) return null;
    this._byRid.delete(rid);
    const e = this._entries.get(seq) ?? null;
    this._entries.delete(seq);
    return e;
  }

  /** The send of `rid` must go again later (e.g. `rate_limited`): held back until `release()`. */
  requeue(rid) {
    const seq = this._byRid.get(rid);
    if (seq === undefined) return;
    this._byRid.delete(rid);
    const e = this._entries.get(seq);
    if (e) {
      e.rid = null;
      e.held = true;
    }
  }

  /** Lets held-back sends go again (called on the client's periodic tick). */
  release() {
    for (const e of this._entries.values()) e.held = false;
  }

  /** The connection is gone: everything not acked is sent again on the next one. */
  disconnected() {
    this._byRid.clear();
    for (const e of this._entries.values()) e.rid = null;
  }

  /** Empties the outbox (when the client stops), in order. */
  drain() {
    const all = [...this._entries.values()];
    this._entries.clear();
    this._byRid.clear();
    return all;
  }
}

function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  if (globalThis.crypto?.getRandomValues) {
    globalThis.crypto.getRandomValues(buf);
  } else {
    for (let i = 0; i < bytes; i++) buf[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Makes client message ids: a random 128-bit prefix per client plus a
 * counter, unique across devices and restarts without a clock. 32 hex
 * digits + '-' + a counter: always a valid cmid (1–64 printable ASCII).
 */
export class CmidGen {
  constructor(prefix = randomHex(16)) {
    this._prefix = prefix;
    this._counter = 0;
  }

  next() {
    this._counter += 1;
    return `${this._prefix}-${this._counter}`;
  }
}
