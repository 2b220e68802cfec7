// pacer.js — client-side pacing under the server's rate limit (a port of
// im-client's pacer.rs). The server answers frames beyond its token bucket
// (`rate_per_sec`, `rate_burst` in `hello`) with `rate_limited` and closes a
// client that keeps flooding with the terminal 4004. After a long outage the
// outbox can hold hundreds of sends that all want to go at once, so the
// client keeps its own, smaller bucket and sends the rest as it refills.

/** Share of the server's rate and burst the client allows itself (room for pings and clock skew). */
const RATE_SHARE = 0.8;
const BURST_SHARE = 0.5;

export class Pacer {
  /** A full bucket below the server's `limits` (`rate_per_sec`, `rate_burst`), at time `nowMs`. */
  constructor(limits, nowMs) {
    this._rate = Math.max(1, (limits.rate_per_sec ?? 50) * RATE_SHARE);
    this._burst = Math.max(1, (limits.rate_burst ?? 200) * BURST_SHARE);
    this._tokens = this._burst;
    this._last = nowMs;
  }

  /** Whole frames that may be sent at `nowMs`. */
  available(nowMs) {
    const elapsed = Math.max(0, nowMs - this._last) / 1000;
    this._last = Math.max(this._last, nowMs);
    this._tokens = Math.min(this._burst, this._tokens + elapsed * this._rate);
    return Math.max(0, Math.floor(this._tokens));
  }

  /** Records `n` frames sent (pings too: they may overdraw the bucket). */
  spend(n) {
    this._tokens -= n;
  }
}

/**
 * How many requests may be written now: what the pacer allows, and no more
 * than the server's `max_in_flight` minus those unanswered (a server that
 * announces none, or 0: one at a time).
 */
export function sendBudget(paced, maxInFlight, unanswered) {
  const window = Math.max(1, maxInFlight || 1);
  return Math.max(0, Math.min(paced, window - unanswered));
}
