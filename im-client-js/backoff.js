// backoff.js — close codes and their reactions (protocol §11), and the
// reconnect delay policy: exponential backoff with jitter, capped, with an
// optional limit on consecutive attempts (a port of im-client's backoff.rs,
// which uses the `backoff` crate's algorithm). This module only says *how
// long* to wait; the client decides *whether* to retry from the close code.

/** Close codes the server uses (protocol §11). */
export const CloseCode = Object.freeze({
  RECONNECT: 3000,
  SLOW_CONSUMER: 3001,
  HEARTBEAT_TIMEOUT: 3002,
  SHUTDOWN: 3500,
  DRAIN: 3501,
  NODE_ISOLATED: 3502,
  UNAUTHORIZED: 4000,
  SESSION_REVOKED: 4001,
  BANNED: 4002,
  UNSUPPORTED_PROTOCOL: 4003,
  POLICY_VIOLATION: 4004,
  INVALID_PAYLOAD: 1007,
  FRAME_TOO_BIG: 1009,
});

/** What a client does after a close. */
export const Reaction = Object.freeze({
  /** Reconnect to the same node (same URL) after backoff, then sync. */
  SAME_NODE: 'same_node',
  /** Ask the dispatcher again, then reconnect after backoff and sync. */
  DISPATCHER: 'dispatcher',
  /** Terminal: do not reconnect; surface the reason to the app. */
  STOP: 'stop',
});

/**
 * The reaction to close code `code` (protocol §11). A connection that ended
 * without a code (TCP reset, failed handshake, missing pong) is treated like
 * 1006: pass `null`/`undefined` and get DISPATCHER.
 */
export function closeReaction(code) {
  if (code === 1007 || code === 1009) return Reaction.SAME_NODE;
  if (code >= 3000 && code <= 3499) return Reaction.SAME_NODE;
  if (code >= 4000 && code <= 4999) return Reaction.STOP;
  return Reaction.DISPATCHER;
}

const NAMES = {
  3000: 'reconnect', 3001: 'slow_consumer', 3002: 'heartbeat_timeout', 3500: 'shutdown', 3501: 'drain', 3502: 'node_isolated',
  4000: 'unauthorized', 4001: 'session_revoked', 4002: 'banned', 4003: 'unsupported_protocol',
  4004: 'policy_violation', 1007: 'invalid_payload', 1009: 'frame_too_big',
};

/** A short name for logs (`'slow_consumer'`), or `'other'`. */
export function closeCodeName(code) {
  return NAMES[code] ?? 'other';
}

/** The default reconnect policy (as im-client's): 0.5 s doubling to 30 s, ±30 % jitter, forever. */
export const DEFAULT_RECONNECT = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  multiplier: 2,
  jitter: 0.3,
  maxAttempts: null,
});

/**
 * One run of reconnect attempts. The n-th consecutive attempt waits about
 * `initial * multiplier^(n-1)`, randomized by ± jitter and never more than
 * `max`; `reset()` starts over (the client calls it once a connection was
 * healthy: `hello` and its first sync).
 */
export class Backoff {
  /**
   * @param {Partial<typeof DEFAULT_RECONNECT>} [policy]
   * @param {() => number} [random] uniform in [0, 1); injectable for tests
   */
  constructor(policy = {}, random = Math.random) {
    const p = { ...DEFAULT_RECONNECT, ...policy };
    this._initial = Math.max(0, p.initialDelayMs);
    this._max = Math.max(p.maxDelayMs, this._initial);
    this._multiplier = Math.max(1, p.multiplier);
    this._jitter = Math.min(1, Math.max(0, p.jitter));
    this._maxAttempts = p.maxAttempts ?? null;
    this._random = random;
    this.reset();
  }

  /** `{attempt, delayMs}` of the next attempt (attempt is 1-based), or null when the attempts are used up. */
  next() {
    if (this._maxAttempts !== null && this._attempts >= this._maxAttempts) return null;
    this._attempts += 1;
    const interval = this._current;
    const delta = this._jitter * interval;
    const randomized = interval - delta + this._random() * (2 * delta);
    // Grow for the next attempt, never beyond the cap.
    this._current = interval >= this._max / this._multiplier ? this._max : interval * this._multiplier;
    return { attempt: this._attempts, delayMs: Math.round(Math.min(this._max, Math.max(0, randomized))) };
  }

  /** Starts over from the initial delay. */
  reset() {
    this._current = this._initial;
    this._attempts = 0;
  }
}
