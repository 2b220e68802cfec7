// test-support/fake-server.js — an in-memory stand-in for the network and an
// `im` server, for the integration tests: a WebSocket constructor with the
// browser API (onopen/onmessage/onclose, send, close, readyState), a fetch
// for login/dispatch/me, and a small server keeping conversation logs with
// cmid dedupe, sync pages, acks, live fan-out, pings and version-2 frames.
// No sockets, no network. (Kept outside test/ so the runner does not run it.)

const tick = () => new Promise((r) => setTimeout(r, 0));
const EVENT_KINDS = ['reaction', 'edit', 'recall', 'system'];

/** Waits until `pred()` is truthy, polling every 5 ms, at most `ms`; throws on timeout. */
export async function waitFor(pred, ms = 2000, what = 'condition') {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export const silentLogger = { debug() {}, info() {}, warn() {} };

/** The server side of one fake socket. */
class Peer {
  constructor(server, ws, url) {
    this.server = server;
    this.ws = ws;
    this.url = new URL(url);
    this.version = Number(this.url.searchParams.get('v') ?? 1);
    this.received = []; // every frame the client sent
    this.closed = false;
    this.silent = false; // true: read frames but answer nothing (a half-open link)
  }
  send(frame) {
    if (this.closed) return;
    const text = JSON.stringify(frame);
    setTimeout(() => {
      if (!this.closed && this.ws.readyState === 1) this.ws.onmessage?.({ data: text });
    }, 0);
  }
  /** The server closes with `code`. */
  close(code, reason = '') {
    if (this.closed) return;
    this.closed = true;
    setTimeout(() => {
      if (this.ws.readyState === 3) return;
      this.ws.readyState = 3;
      this.ws.onclose?.({ code, reason, wasClean: true });
    }, 0);
  }
  /** The link dies without a close frame. */
  kill() {
    this.close(1006);
  }
}

export class FakeServer {
  constructor({ user = 1, maxVersion = 2, limits = {}, heartbeatMs = 20000, node = 'node-a', token = 'tok' } = {}) {
    this.user = user;
    this.maxVersion = maxVersion;
    this.limits = { max_frame_bytes: 65536, max_body_bytes: 16384, sync_page_max: 500, history_page_max: 200,
      rate_per_sec: 50, rate_burst: 200, max_in_flight: 64, ...limits };
    this.heartbeatMs = heartbeatMs;
    this.node = node;
    this.validTokens = new Set([token]);
    this.logs = new Map(); // conv -> messages
    this.byCmid = new Map();
    this.reads = new Map();
    this.peers = [];
    this.urls = [];
    this.refuseHandshake = false; // true: fail the upgrade (as an HTTP refusal looks in a browser)
    this.intercept = null; // (peer, frame) => true to swallow the frame
    this.fetchCalls = [];
    this.loginCount = 0;
    this.dispatchCount = 0;
    this.nextToken = 1;
    this.ts = 1_700_000_000_000;
    const server = this;
    this.WebSocket = class FakeWebSocket {
      static CONNECTING = 0;
      static OPEN = 1;
      static CLOSING = 2;
      static CLOSED = 3;
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        server.urls.push(url);
        setTimeout(() => server._connect(this, url), 0);
      }
      send(text) {
        if (this.readyState === 0) throw new Error('InvalidStateError: still connecting');
        if (this.readyState !== 1) return;
        const peer = this._peer;
        setTimeout(() => peer && !peer.closed && server._frame(peer, JSON.parse(text)), 0);
      }
      close(code = 1005, reason = '') {
        if (this.readyState === 3) return;
        this.readyState = 3;
        if (this._peer) {
          this._peer.closed = true;
          this._peer.closedByClient = code;
        }
        setTimeout(() => this.onclose?.({ code, reason, wasClean: true }), 0);
      }
    };
    this.fetch = async (url, init = {}) => {
      const u = new URL(url);
      this.fetchCalls.push(u.pathname);
      const json = (status, body) => ({ status, ok: status >= 200 && status < 300, json: async () => body });
      if (u.pathname === '/dispatch') {
        this.dispatchCount += 1;
        return json(200, { url: `ws://${this.node}.test/ws`, node: this.node });
      }
      if (u.pathname === '/api/v1/login') {
        this.loginCount += 1;
        const body = JSON.parse(init.body);
        if (body.password !== 'secret') return json(401, { code: 'bad_credentials' });
        const t = `login-${this.nextToken++}`;
        this.validTokens.add(t);
        return json(200, { token: t, user_id: this.user, expires_at: 0 });
      }
      if (u.pathname === '/api/v1/me') {
        const auth = init.headers?.authorization ?? '';
        return json(this.validTokens.has(auth.replace('Bearer ', '')) ? 200 : 401, {});
      }
      return json(404, {});
    };
  }

  /** The newest live peer. */
  get peer() {
    return this.peers.filter((p) => !p.closed).at(-1) ?? null;
  }

  _connect(ws, url) {
    if (ws.readyState === 3) return;
    const token = new URL(url).searchParams.get('token');
    if (this.refuseHandshake || !this.validTokens.has(token)) {
      ws.readyState = 3;
      ws.onerror?.({});
      ws.onclose?.({ code: 1006, reason: '', wasClean: false });
      return;
    }
    ws.readyState = 1;
    const peer = new Peer(this, ws, url);
    ws._peer = peer;
    this.peers.push(peer);
    ws.onopen?.({});
    if (peer.version > this.maxVersion) {
      peer.close(4003, 'unsupported protocol');
      return;
    }
    peer.send({ type: 'hello', protocol: peer.version, user: this.user,
      device: peer.url.searchParams.get('device') ?? 'assigned-1', node: this.node,
      heartbeat_interval_ms: this.heartbeatMs, idle_timeout_ms: this.heartbeatMs * 3, limits: this.limits });
  }

  log(conv) {
    if (!this.logs.has(conv)) this.logs.set(conv, []);
    return this.logs.get(conv);
  }

  /**
   * Stores a message (dedupe by sender+conv+cmid); returns [message,
   * duplicate]. `extra`: its `kind`, `content`, `target`, `mentions`,
   * `reply_to` (events are stored as they come; their targets do not change).
   */
  store(conv, from, body, cmid = `srv-${Math.random().toString(16).slice(2)}`, extra = {}) {
    const key = `${from}|${conv}|${cmid}`;
    if (this.byCmid.has(key)) return [this.byCmid.get(key), true];
    const log = this.log(conv);
    const m = { conv, id: log.length + 1, from, cmid, body, ts: this.ts++ };
    for (const k of ['kind', 'content', 'target', 'mentions', 'reply_to']) if (extra[k] !== undefined) m[k] = extra[k];
    log.push(m);
    this.byCmid.set(key, m);
    if (from === this.user) this.reads.set(conv, Math.max(this.reads.get(conv) ?? 0, m.id));
    return [m, false];
  }

  /** Another user posts; delivered live to every live peer unless `live` is false. */
  post(conv, from, body, { live = true, ...extra } = {}) {
    const [m] = this.store(conv, from, body, undefined, extra);
    if (live) for (const p of this.peers) if (!p.closed) p.send({ type: 'message', ...m });
    return m;
  }

  _frame(peer, f) {
    peer.received.push(f);
    if (this.intercept?.(peer, f)) return;
    if (peer.silent) return;
    const ok = () => peer.send({ type: 'ok', rid: f.rid });
    switch (f.type) {
      case 'ping':
        peer.send(f.rid != null ? { type: 'pong', rid: f.rid } : { type: 'pong' });
        break;
      case 'send': {
        const [m, duplicate] = this.store(f.conv, this.user, f.body, f.cmid, f);
        peer.send({ type: 'ack', rid: f.rid, conv: f.conv, id: m.id, cmid: f.cmid, ts: m.ts, duplicate });
        if (!duplicate) for (const p of this.peers) if (p !== peer && !p.closed) p.send({ type: 'message', ...m });
        break;
      }
      case 'sync': {
        const limit = Math.min(f.limit ?? this.limits.sync_page_max, this.limits.sync_page_max);
        const cursors = f.cursors ?? {};
        const convs = [...this.logs.keys()].filter((c) => c[0] !== 'r' || c in cursors).sort();
        const messages = [];
        let hasMore = false;
        for (const c of convs) {
          for (const m of this.logs.get(c)) {
            if (m.id <= (cursors[c] ?? 0)) continue;
            if (messages.length >= limit) hasMore = true;
            else messages.push(m);
          }
        }
        peer.send({ type: 'sync_page', rid: f.rid, messages, has_more: hasMore });
        break;
      }
      case 'read':
        this.reads.set(f.conv, Math.max(this.reads.get(f.conv) ?? 0, f.id));
        ok();
        break;
      case 'inbox': {
        const entries = [...this.logs.keys()].sort().map((conv) => {
          const log = this.logs.get(conv);
          const head = log.length;
          const read = this.reads.get(conv) ?? 0;
          // Events (reactions, edits, recalls, notices) do not count.
          const unread = log.filter((m) => m.id > read && !EVENT_KINDS.includes(m.kind)).length;
          return { conv, head, read, unread, last: log.at(-1) };
        });
        peer.send({ type: 'inbox_page', rid: f.rid, entries, has_more: false });
        break;
      }
      case 'receipts':
        peer.send({ type: 'receipt_list', rid: f.rid, conv: f.conv, receipts: [] });
        break;
      case 'history': {
        const log = this.log(f.conv).filter((m) => f.before == null || m.id < f.before);
        peer.send({ type: 'history_page', rid: f.rid, conv: f.conv, messages: log.slice(-(f.limit ?? 200)), has_more: false });
        break;
      }
      case 'received':
      case 'typing':
      case 'join':
      case 'leave':
        ok();
        break;
      case 'query_presence':
        peer.send({ type: 'presence_list', rid: f.rid, users: [] });
        break;
      default:
        peer.send({ type: 'error', rid: f.rid, code: 'unknown_type', message: 'unknown' });
    }
  }
}

export { tick };
