// Unit tests of connection.js: hello → limits and heartbeat, the handshake's
// classification of failures, and the live Connection (frames in and out,
// how it ends, dead-peer detection), over a minimal stand-in socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttemptError, Connection, DEFAULT_LIMITS, handshake, heartbeatInterval, helloLimits } from '../connection.js';

/** A socket with the browser API; the test drives its events. */
class StubSocket {
  static last = null;
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closedWith = null;
    this.failWrites = false;
    StubSocket.last = this;
  }
  send(text) {
    if (this.failWrites) throw new Error('socket gone');
    this.sent.push(JSON.parse(text));
  }
  close(code, reason) {
    this.closedWith = { code, reason };
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function live(hooks = {}) {
  const ws = new StubSocket('wss://n1.test/ws');
  const frames = [];
  const ends = [];
  const log = {
    warned: 0,
    warn() {
      this.warned++;
    },
  };
  const conn = new Connection(ws, 'wss://n1.test/ws', {
    onFrame: (f) => frames.push(f),
    onEnd: (e) => ends.push(e),
    log,
    ...hooks,
  });
  return { ws, conn, frames, ends, log };
}

test('hello limits and heartbeat interval', () => {
  assert.deepEqual(helloLimits({}), DEFAULT_LIMITS);
  assert.equal(helloLimits({ limits: { max_body_bytes: 10, max_in_flight: 8 } }).max_body_bytes, 10);
  assert.equal(helloLimits({ limits: { max_body_bytes: 10, max_in_flight: 8 } }).max_in_flight, 8);
  // A server that announces limits without max_in_flight gets one at a time.
  assert.equal(helloLimits({ limits: { max_body_bytes: 10 } }).max_in_flight, 1);
  assert.equal(heartbeatInterval({}, 20_000), 20_000);
  assert.equal(heartbeatInterval({ heartbeat_interval_ms: 5_000 }, 20_000), 5_000);
  assert.equal(heartbeatInterval({ heartbeat_interval_ms: 30_000 }, 20_000), 20_000);
  assert.equal(heartbeatInterval({ heartbeat_interval_ms: 0 }, 20_000), 1);
});

test('frames in: JSON objects only; a bad frame is logged and ignored', () => {
  const { ws, frames, log } = live();
  ws.onmessage({ data: '{"type":"pong"}' });
  ws.onmessage({ data: new Uint8Array([1]) });
  ws.onmessage({ data: '42' });
  ws.onmessage({ data: 'not json' });
  assert.deepEqual(frames, [{ type: 'pong' }]);
  assert.equal(log.warned, 1);
});

test('how a connection ends: close codes, a failed write, end() once', async () => {
  {
    const { ws, conn, ends } = live();
    ws.onclose({ code: 1006, reason: '' });
    assert.deepEqual(await conn.done, { kind: 'lost', code: null, reason: 'connection ended without a close code' });
    assert.equal(ends.length, 1);
    assert.equal(ws.onmessage, null);
    assert.equal(ws.closedWith, null);
  }
  {
    const { ws, conn } = live();
    ws.onclose({ code: 3000, reason: 'move' });
    assert.deepEqual(await conn.done, { kind: 'closed', code: 3000, reason: 'move' });
  }
  {
    const { ws, conn, ends } = live();
    conn.write({ type: 'ping' });
    assert.deepEqual(ws.sent, [{ type: 'ping' }]);
    ws.failWrites = true;
    conn.write({ type: 'ping' });
    assert.equal((await conn.done).kind, 'lost');
    assert.deepEqual(ws.closedWith, { code: 1000, reason: 'dead connection' });
    conn.end({ kind: 'stop', reason: null }, true);
    conn.write({ type: 'ping' });
    assert.equal(ends.length, 1);
  }
  {
    const { ws, conn } = live();
    conn.end({ kind: 'stop', reason: { kind: 'shutdown' } }, true);
    assert.deepEqual(ws.closedWith, { code: 1000, reason: 'client stopped' });
    assert.equal(conn.ended, true);
  }
});

test('heartbeat: pings, a frame clears the watch, silence ends the connection', async () => {
  const { ws, conn, frames } = live();
  let pings = 0;
  conn.heartbeat(10, 100, () => pings++);
  const ticks = [];
  conn.every(10, () => ticks.push(1));
  // Answer every ping for a while: the connection stays up.
  for (let i = 0; i < 6; i++) {
    await sleep(10);
    ws.onmessage({ data: '{"type":"pong"}' });
  }
  assert.equal(conn.ended, false);
  assert.ok(pings >= 2 && ws.sent.every((f) => f.type === 'ping'));
  // Then silence: ended as lost within the pong timeout of a ping.
  const ended = await conn.done;
  assert.deepEqual(ended, { kind: 'lost', code: null, reason: 'no frame within 100 ms of a ping' });
  assert.deepEqual(ws.closedWith, { code: 1000, reason: 'dead connection' });
  const after = [pings, ticks.length];
  await sleep(30);
  assert.deepEqual([pings, ticks.length], after); // timers stopped
  assert.ok(frames.length >= 6);
});

function shake(extra = {}) {
  const ac = new AbortController();
  let probed = 0;
  const p = handshake({
    WebSocket: StubSocket,
    url: 'wss://n1.test/ws',
    device: 'laptop-1',
    token: 't k',
    version: 2,
    tokenInQuery: true,
    tokenRefused: async () => {
      probed++;
      return extra.refused ?? false;
    },
    signal: ac.signal,
    ...extra,
  });
  return { p, ws: StubSocket.last, ac, probed: () => probed };
}

test('handshake: the URL, hello, and how failures are classified', async () => {
  {
    const { p, ws } = shake();
    const url = new URL(ws.url);
    assert.deepEqual(Object.fromEntries(url.searchParams), { device: 'laptop-1', v: '2', token: 't k' });
    ws.onopen();
    ws.onmessage({ data: '{"type":"hello","protocol":2,"user":7}' });
    const { ws: got, hello } = await p;
    assert.equal(got, ws);
    assert.equal(hello.user, 7);
    assert.equal(ws.onmessage, null);
  }
  {
    const { p, ws } = shake({ tokenInQuery: false, device: null });
    assert.deepEqual(Object.fromEntries(new URL(ws.url).searchParams), { v: '2' });
    ws.onopen();
    ws.onmessage({ data: '{"type":"pong"}' });
    await assert.rejects(p, (e) => e instanceof AttemptError && e.kind === 'retry');
  }
  {
    // Closed before it opened: the token probe decides.
    const { p, ws, probed } = shake({ refused: true });
    ws.onclose({ code: 1006 });
    await assert.rejects(p, (e) => e.kind === 'token' && e.reason.kind === 'unauthorized');
    assert.equal(probed(), 1);
  }
  {
    const { p, ws } = shake();
    ws.onclose({ code: 1006 });
    await assert.rejects(p, (e) => e.kind === 'retry');
  }
  {
    const { p, ws } = shake();
    ws.onopen();
    ws.onclose({ code: 4003, reason: 'old' });
    await assert.rejects(p, (e) => e.kind === 'stop' && e.reason.code === 4003 && e.reason.kind === 'closed');
  }
  {
    const { p, ws } = shake();
    ws.onopen();
    ws.onclose({ code: 4000 });
    await assert.rejects(p, (e) => e.kind === 'token' && e.reason.code === 4000);
  }
  {
    const { p, ws } = shake();
    ws.onopen();
    ws.onclose({ code: 3000 });
    await assert.rejects(p, (e) => e.kind === 'retry');
  }
  {
    const { p, ws, ac } = shake();
    const why = new AttemptError('retry', null, 'timeout');
    ac.abort(why);
    await assert.rejects(p, (e) => e === why);
    assert.ok(ws.closedWith);
  }
});
