// live.test.js — the JavaScript client against a real im-server process on
// loopback: login, dispatcher, sync, live delivery in both directions, the
// outbox across a server restart, read marks reaching the user's other
// device, typing. The server binary comes from IM_SERVER_BIN (CI builds it:
// `cargo build -p im-server`); Node 20 has no WebSocket, so the `ws`
// package provides one (`npm ci` in this folder).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';

import { ImClient, MemoryCursorStore } from '../im-client.js';
import { freePort, startServer, stopServer } from '../test-support/im-server.js';

const WAIT_MS = 15_000;

async function register(base, username) {
  const r = await fetch(`${base}/api/v1/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password: 'password-123' }),
  });
  const text = await r.text();
  assert.equal(r.status, 201, text);
  return JSON.parse(text).id;
}

/** Resolves with the first event of `type` matching `pred`, or fails after WAIT_MS. */
function next(client, type, pred = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${WAIT_MS} ms`));
    }, WAIT_MS);
    const off = client.on(type, (e) => {
      if (!pred(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

function client(base, username, device) {
  return new ImClient({
    url: `${base}/dispatch`,
    login: { username, password: 'password-123' },
    device,
    cursorStore: new MemoryCursorStore(),
    WebSocket,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
  });
}

test('the JavaScript client talks to a real server', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'im-js-live-'));
  const base = `http://127.0.0.1:${port}`;
  let server = await startServer(port, ['--data-dir', dir]);
  const clients = [];
  try {
    const alice = await register(base, 'alice');
    const bob = await register(base, 'bob');
    const conv = `d:${Math.min(alice, bob)}:${Math.max(alice, bob)}`;
    const a = client(base, 'alice', 'a-web');
    const b = client(base, 'bob', 'b-web');
    const b2 = client(base, 'bob', 'b-phone');
    clients.push(a, b, b2);
    const synced = [a, b, b2].map((c) => next(c, 'synced'));
    for (const c of [a, b, b2]) c.start();
    await Promise.all(synced);

    // Live delivery both ways, with the server's ids.
    const gotByBob = next(b, 'message', (e) => e.message.body === 'hi bob');
    const sent = await a.send(conv, 'hi bob');
    assert.equal(sent.duplicate, false);
    const m = (await gotByBob).message;
    assert.equal(m.id, sent.id);
    assert.equal(m.from, alice);
    const gotByAlice = next(a, 'message', (e) => e.message.body === 'hi alice');
    const reply = await b.send(conv, 'hi alice');
    assert.equal(reply.id, sent.id + 1);
    await gotByAlice;

    // Bob reads Alice's next message on one device; the other is told
    // (his own reply had already marked the conversation read up to it).
    const third = next(b, 'message', (e) => e.message.body === 'third');
    const t = await a.send(conv, 'third');
    await third;
    const readOnPhone = next(b2, 'readUpTo', (e) => e.conv === conv);
    b.markRead(conv, t.id);
    assert.equal((await readOnPhone).id, t.id);
    assert.equal(b.readState(conv).unread, 0);

    // Typing reaches the peer.
    const typing = next(b, 'typing', (e) => e.conv === conv && e.typing);
    await a.typing(conv, true);
    assert.equal((await typing).user, alice);

    // The server restarts while Alice sends: the send waits in the outbox,
    // goes out after the reconnect, is stored once, and Bob (reconnected
    // and synced) gets it exactly once.
    const seen = [];
    b.on('message', (e) => seen.push(e.message.body));
    // Listening before the send: Bob may get it before Alice's ack.
    const bobGetsIt = next(b, 'message', (e) => e.message.body === 'after the restart');
    await stopServer(server);
    const queued = a.send(conv, 'after the restart');
    server = await startServer(port, ['--data-dir', dir]);
    const afterRestart = await queued;
    assert.equal(afterRestart.id, t.id + 1);
    assert.equal((await bobGetsIt).message.id, afterRestart.id);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(seen, ['after the restart'], 'delivered once');
    const history = await b.history(conv, { limit: 10 });
    assert.deepEqual(
      history.messages.map((x) => x.body),
      ['hi bob', 'hi alice', 'third', 'after the restart'],
    );
  } finally {
    for (const c of clients) await c.close();
    await stopServer(server);
    rmSync(dir, { recursive: true, force: true });
  }
});
