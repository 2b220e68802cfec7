// typing.js — typing indicators, apart from any I/O (a port of im-client's
// typing.rs, protocol version 2, §5.8/§6.12):
//
// * TypingOut: what this user's typing makes the client send — the app calls
//   typing(conv, true) on every keystroke; a `true` goes out at most once per
//   TYPING_REFRESH_MS, is refreshed while calls keep coming, and a `false`
//   goes out by itself TYPING_IDLE_MS after the last call.
// * TypingIn: how long others' typing lasts — a `true` not refreshed within
//   TYPING_EXPIRY_MS expires.

import { compareConv } from './conv.js';

/** A `true` expires on the receivers after this long (protocol §12). */
export const TYPING_EXPIRY_MS = 6000;
/** While the user keeps typing, `true` is sent again this often (protocol §12). */
export const TYPING_REFRESH_MS = 3000;
/** The client sends `false` by itself this long after the app's last `typing(conv, true)`. */
export const TYPING_IDLE_MS = 5000;
/** Most (conversation, user) pairs whose typing is tracked; beyond, new ones pass without expiry tracking. */
const TYPING_IN_MAX = 10_000;

export class TypingOut {
  constructor() {
    /** @type {Map<string, {sent: number, call: number}>} */
    this._convs = new Map();
  }

  /**
   * The app says the user types (`true`) or stopped, at `nowMs`. Returns what
   * to send now: `true`, `false`, or null (nothing: throttled, or already stopped).
   */
  call(conv, typing, nowMs) {
    if (!typing) return this._convs.delete(conv) ? false : null;
    const e = this._convs.get(conv);
    if (!e) {
      this._convs.set(conv, { sent: nowMs, call: nowMs });
      return true;
    }
    e.call = nowMs;
    if (nowMs - e.sent >= TYPING_REFRESH_MS) {
      e.sent = nowMs;
      return true;
    }
    return null;
  }

  /** What is due at `nowMs`: `[conv, true]` refreshes while typing, `[conv, false]` after a pause. */
  tick(nowMs) {
    const due = [];
    for (const [conv, e] of this._convs) {
      if (nowMs - e.call >= TYPING_IDLE_MS) {
        due.push([conv, false]);
        this._convs.delete(conv);
      } else if (nowMs - e.sent >= TYPING_REFRESH_MS) {
        e.sent = nowMs;
        due.push([conv, true]);
      }
    }
    return due;
  }

  /** The user sent a message in `conv`: receivers hide the indicator on the message, so nothing more is sent. */
  sentMessage(conv) {
    this._convs.delete(conv);
  }

  /** The connection ended: typing is not worth resending. */
  clear() {
    this._convs.clear();
  }
}

const key = (conv, user) => `${conv}\u0000${user}`;
const unkey = (k) => {
  const i = k.indexOf('\u0000');
  return [k.slice(0, i), Number(k.slice(i + 1))];
};
const byConvThenUser = (a, b) => compareConv(a[0], b[0]) || a[1] - b[1];

export class TypingIn {
  constructor() {
    /** @type {Map<string, number>} "conv\0user" -> expiry (ms) */
    this._until = new Map();
  }

  /** `user` started or stopped typing in `conv` at `nowMs`. */
  heard(conv, user, typing, nowMs) {
    const k = key(conv, user);
    if (!typing) this._until.delete(k);
    else if (this._until.size < TYPING_IN_MAX || this._until.has(k)) this._until.set(k, nowMs + TYPING_EXPIRY_MS);
  }

  /** A message from `user` arrived in `conv`: whether they were shown typing (now cleared). */
  messageFrom(conv, user) {
    return this._until.delete(key(conv, user));
  }

  /** The indicators that expired by `nowMs` (removed), as sorted `[conv, user]` pairs. */
  expired(nowMs) {
    const gone = [];
    for (const [k, until] of this._until) {
      if (until <= nowMs) {
        gone.push(unkey(k));
        this._until.delete(k);
      }
    }
    return gone.sort(byConvThenUser);
  }

  /** The connection ended: nobody is shown typing any more. Returns who was. */
  clear() {
    const gone = [...this._until.keys()].map(unkey).sort(byConvThenUser);
    this._until.clear();
    return gone;
  }
}
