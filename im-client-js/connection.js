// connection.js — one WebSocket connection to an `im` node.
//
// * The handshake: open the socket asking for a protocol version and wait for
//   `hello`, classifying a failure as an AttemptError (retry, token refused,
//   or stop, by the close code).
// * The live connection (Connection): reading and writing JSON frames, the
//   heartbeat (`ping`) and dead-peer detection, and closing; its end is
//   reported once, with how it ended.
//
// It holds no client state: the client's frame handling, pacing and tick are
// callbacks. connect.js runs the handshake; im-client.js runs the connection.

import { closeCodeName, closeReaction, Reaction } from './backoff.js';

/** The newest protocol version this client speaks, and the oldest it falls back to. */
export const PROTOCOL_VERSION = 2;
export const MIN_PROTOCOL_VERSION = 1;

/** The server's default limits (protocol §12), used until `hello` says otherwise. */
export const DEFAULT_LIMITS = Object.freeze({
  max_frame_bytes: 65536,
  max_body_bytes: 16384,
  sync_page_max: 500,
  history_page_max: 200,
  rate_per_sec: 50,
  rate_burst: 200,
  max_in_flight: 64,
  edit_window_ms: 24 * 3600 * 1000,
  recall_window_ms: 24 * 3600 * 1000,
});

/** Why an attempt failed: `stop` (do not retry), `token` (token refused), `retry` (back off, then the dispatcher). */
export class AttemptError extends Error {
  constructor(kind, reason, message) {
    super(message ?? kind);
    this.kind = kind;
    this.reason = reason;
  }
}

/** The limits a `hello` announces, over the defaults. */
export function helloLimits(hello) {
  const limits = { ...DEFAULT_LIMITS, ...(hello.limits ?? {}) };
  // A server that announces no max_in_flight (older) gets one at a time.
  if (hello.limits && hello.limits.max_in_flight == null) limits.max_in_flight = 1;
  // A server without events announces no windows: no edits or recalls.
  if (hello.limits && hello.limits.edit_window_ms == null) limits.edit_window_ms = 0;
  if (hello.limits && hello.limits.recall_window_ms == null) limits.recall_window_ms = 0;
  return limits;
}

/** The ping interval: the configured one, or the server's `heartbeat_interval_ms` when shorter. */
export function heartbeatInterval(hello, configuredMs) {
  const serverBeat = Math.max(1, hello.heartbeat_interval_ms ?? Infinity);
  return Math.min(serverBeat, configuredMs);
}

/**
 * Opens the socket asking for `version` and waits for `hello`; resolves with
 * `{ws, hello}`. `tokenRefused()` (a Promise of a boolean) is asked when the
 * socket closes before it opened, since browsers hide a refusal's HTTP status.
 *
 * @param {{WebSocket: Function, url: string, device: string|null, token: string, version: number,
 *   tokenInQuery: boolean, tokenRefused: () => Promise<boolean>, signal: AbortSignal}} p
 */
export function handshake({ WebSocket, url: baseUrl, device, token, version, tokenInQuery, tokenRefused, signal }) {
  const full = new URL(baseUrl);
  if (device) full.searchParams.set('device', device);
  full.searchParams.set('v', String(version));
  if (tokenInQuery) full.searchParams.set('token', token);
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    let ws;
    try {
      ws = new WebSocket(full.href);
    } catch (e) {
      return reject(new AttemptError('retry', null, `cannot open ${baseUrl}: ${e?.message ?? e}`));
    }
    let opened = false;
    let settled = false;
    const detach = () => {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Keep swallowing errors: closing a socket that is still connecting
      // makes the `ws` package emit one, fatal to Node without a listener.
      ws.onerror = () => {};
      signal.removeEventListener('abort', onAbort);
    };
    const fail = (err) => {
      if (settled) return;
      settled = true;
      detach();
      try {
        ws.close();
      } catch {
        // already closed
      }
      reject(err);
    };
    const onAbort = () => fail(signal.reason);
    signal.addEventListener('abort', onAbort);
    ws.onopen = () => {
      opened = true;
    };
    ws.onerror = () => {}; // a close event follows
    ws.onmessage = (ev) => {
      if (settled || typeof ev.data !== 'string') return;
      let f;
      try {
        f = JSON.parse(ev.data);
      } catch {
        return fail(new AttemptError('retry', null, 'undecodable first frame'));
      }
      if (f?.type !== 'hello') return fail(new AttemptError('retry', null, `first frame was ${f?.type}, not hello`));
      settled = true;
      detach();
      resolve({ ws, hello: f });
    };
    ws.onclose = (ev) => {
      if (settled) return;
      const code = ev?.code;
      if (!opened) {
        // The handshake failed: unreachable node, or an HTTP refusal we cannot see.
        settled = true;
        detach();
        tokenRefused().then((refused) =>
          reject(
            refused
              ? new AttemptError('token', { kind: 'unauthorized' }, 'token refused')
              : new AttemptError('retry', null, `connect to ${baseUrl} failed (close ${code})`),
          ),
        );
        return;
      }
      const stop = { kind: 'closed', code, name: closeCodeName(code), reason: ev?.reason ?? '' };
      if (code === 4000) fail(new AttemptError('token', stop, 'token refused (4000)'));
      else if (closeReaction(code) === Reaction.STOP && code != null) fail(new AttemptError('stop', stop, `closed ${code}`));
      else fail(new AttemptError('retry', null, `closed with ${code} before hello`));
    };
  });
}

/**
 * A live connection: a socket whose `hello` arrived. Every decoded frame (a
 * JSON object) goes to `onFrame`; the connection ends once — closed by the
 * server, lost, dead, a failed write, or `end()` — and then calls `onEnd` and
 * resolves `done` with how: `{kind: 'closed'|'lost'|'stop', code?, reason}`.
 */
export class Connection {
  /**
   * @param {WebSocket} ws the open socket
   * @param {string} url the URL it was opened with (without the query)
   * @param {{onFrame: (f: object) => void, onEnd?: (ended: object) => void, log: {warn: Function}}} hooks
   */
  constructor(ws, url, { onFrame, onEnd, log }) {
    this.ws = ws;
    this.url = url;
    this.ended = false;
    this._onFrame = onFrame;
    this._onEnd = onEnd;
    this._log = log;
    this._timers = [];
    this._deadTimer = null; // set when a ping goes out with no frame since
    this.done = new Promise((resolve) => {
      this._resolve = resolve;
    });
    ws.onmessage = (ev) => this._onMessage(ev);
    ws.onclose = (ev) => {
      // 1005 (no code) and 1006 (abnormal) mean the server sent no code.
      const code = ev?.code === 1005 || ev?.code === 1006 || ev?.code == null ? null : ev.code;
      this.end(code == null
        ? { kind: 'lost', code: null, reason: ev?.reason || 'connection ended without a close code' }
        : { kind: 'closed', code, reason: ev?.reason ?? '' });
    };
    ws.onerror = () => {}; // a close event follows
  }

  /**
   * Sends a `ping` every `intervalMs` (`beforePing()` first); a connection
   * that says nothing within `pongTimeoutMs` of a ping is ended as lost and
   * its socket closed. Any frame clears the watch.
   */
  heartbeat(intervalMs, pongTimeoutMs, beforePing) {
    this._timers.push(
      setInterval(() => {
        beforePing();
        this.write({ type: 'ping' });
        if (this._deadTimer === null && !this.ended) {
          this._deadTimer = setTimeout(
            () => this.end({ kind: 'lost', code: null, reason: `no frame within ${pongTimeoutMs} ms of a ping` }, true),
            pongTimeoutMs,
          );
        }
      }, intervalMs),
    );
  }

  /** Calls `fn` every `ms` while the connection lives. */
  every(ms, fn) {
    this._timers.push(setInterval(fn, ms));
  }

  /** Sends a frame; a failed write ends the connection as lost. */
  write(frame) {
    if (this.ended) return;
    try {
      this.ws.send(JSON.stringify(frame));
    } catch (e) {
      this.end({ kind: 'lost', code: null, reason: `write failed: ${e?.message ?? e}` }, true);
    }
  }

  /** Ends the connection once; `closeSocket`: close it from our side (a stop, a dead peer). */
  end(ended, closeSocket = false) {
    if (this.ended) return;
    this.ended = true;
    for (const t of this._timers) clearInterval(t);
    clearTimeout(this._deadTimer);
    this.ws.onmessage = this.ws.onclose = null;
    this.ws.onerror = () => {}; // see handshake: a late error must not be unhandled
    if (closeSocket) {
      try {
        this.ws.close(1000, ended.kind === 'stop' ? 'client stopped' : 'dead connection');
      } catch {
        // already closing
      }
    }
    this._onEnd?.(ended);
    this._resolve(ended);
  }

  _onMessage(ev) {
    if (this.ended) return;
    clearTimeout(this._deadTimer);
    this._deadTimer = null;
    if (typeof ev.data !== 'string') return; // the protocol is text only
    let f;
    try {
      f = JSON.parse(ev.data);
    } catch {
      this._log.warn('undecodable frame from the server ignored');
      return;
    }
    if (f === null || typeof f !== 'object') return;
    this._onFrame(f);
  }
}
