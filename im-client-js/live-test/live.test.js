// live.test.js — the JavaScript client against a real im-server process on
// loopback: login, dispatcher, sync, live delivery in both directions, the
// outbox across a server restart, read marks reaching the user's other
// device, typing; and files: upload (the direct flow), send, receive and
// download an attachment, with the server's error codes; and events:
// reactions, edits, recalls and a system notice, applied live as the server
// stored them, with its error codes and unread counts that leave them out.
// The server binary comes from IM_SERVER_BIN (CI builds it:
// `cargo build -p im-server`); Node 20 has no WebSocket, so the `ws`
// package provides one (`npm ci` in this folder).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';

import { createHash } from 'node:crypto';

import { applyEvent, attachmentDraft, attachmentMatches, ImClient, ImError, isEvent, MemoryCursorStore } from '../im-client.js';
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

/** A 1×1 PNG (one opaque pixel). */
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
  'base64',
);
const sha256 = (b) => createHash('sha256').update(b).digest('hex');

test('files: upload, send, receive and download an attachment through a real server', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = await startServer(port, ['--memory', '--max-attachment-bytes', '65536']);
  const clients = [];
  try {
    const alice = await register(base, 'alice');
    const bob = await register(base, 'bob');
    const carol = await register(base, 'carol');
    const conv = `d:${Math.min(alice, bob)}:${Math.max(alice, bob)}`;
    const a = client(base, 'alice', 'a-web');
    const b = client(base, 'bob', 'b-web');
    const c = client(base, 'carol', 'c-web');
    clients.push(a, b, c);
    const synced = [a, b, c].map((x) => next(x, 'synced'));
    for (const x of clients) x.start();
    await Promise.all(synced);

    const config = await a.uploadConfig();
    assert.equal(config.upload, 'direct');
    assert.equal(config.max_bytes, 65536);
    assert.ok(config.types.includes('image/*'), JSON.stringify(config));

    // Upload with progress (Node has no XMLHttpRequest: the end only).
    const progress = [];
    const att = await a.upload(new Uint8Array(PNG), { mime: 'image/png', name: 'dot.png', width: 1, height: 1, onProgress: (s, t) => progress.push([s, t]) });
    assert.match(att.id, /^at_[\w-]{22}$/);
    assert.deepEqual(
      { mime: att.mime, size: att.size, sha256: att.sha256, name: att.name, width: att.width, height: att.height, owner: att.owner },
      { mime: 'image/png', size: PNG.length, sha256: sha256(PNG), name: 'dot.png', width: 1, height: 1, owner: alice },
    );
    assert.deepEqual(progress, [[PNG.length, PNG.length]]);
    assert.deepEqual(await a.attachmentInfo(att.id), att);

    // Send it; Bob gets the message with the server-filled content.
    const gotImage = next(b, 'message', (e) => e.message.kind === 'image');
    const sent = await a.send(conv, attachmentDraft(att, { body: 'a dot' }));
    const m = (await gotImage).message;
    assert.equal(m.id, sent.id);
    assert.equal(m.body, 'a dot');
    assert.deepEqual(m.content, {
      attachment: att.id, mime: 'image/png', size: PNG.length, sha256: sha256(PNG), name: 'dot.png', width: 1, height: 1,
    });

    // Bob downloads it (a member of the conversation now), with progress.
    const got = [];
    const bytes = await b.download(m.content.attachment, { onProgress: (r, t) => got.push([r, t]) });
    assert.deepEqual(Buffer.from(bytes), PNG);
    assert.equal(await attachmentMatches(m.content, bytes), true);
    assert.deepEqual(got.at(-1), [PNG.length, PNG.length]);

    // The URL for <img src> carries the token: no header needed.
    const viaUrl = await fetch(b.attachmentUrl(att.id));
    assert.equal(viaUrl.status, 200);
    assert.equal(viaUrl.headers.get('content-type'), 'image/png');
    assert.match(viaUrl.headers.get('content-disposition'), /^inline; filename\*=UTF-8''dot\.png$/);
    assert.deepEqual(Buffer.from(await viaUrl.arrayBuffer()), PNG);
    assert.equal((await fetch(b.attachmentUrl(att.id).replace(/token=[^&]+/, 'token=forged'))).status, 401);

    // Carol is in no conversation with it: for her it does not exist.
    for (const call of [() => c.download(att.id), () => c.attachmentInfo(att.id)]) {
      await assert.rejects(call(), (e) => e instanceof ImError && e.kind === 'rejected' && e.code === 'no_such_attachment' && e.status === 404);
    }

    // A file of another kind: a `file` message, served as a download.
    const notes = new Blob(['packing list: tent, stove\n'], { type: 'text/plain' });
    const file = await a.upload(notes, { name: 'notes.txt' });
    assert.equal(file.mime, 'text/plain');
    const gotFile = next(b, 'message', (e) => e.message.kind === 'file');
    await a.send(conv, attachmentDraft(file));
    const fm = (await gotFile).message;
    assert.equal(fm.body, '[file]');
    assert.equal(fm.content.name, 'notes.txt');
    assert.equal(new TextDecoder().decode(await b.download(fm.content.attachment)), 'packing list: tent, stove\n');
    const fileResp = await fetch(b.attachmentUrl(file.id));
    assert.match(fileResp.headers.get('content-disposition'), /^attachment; /);
    await fileResp.body?.cancel();

    // The server's refusals, with its codes.
    await assert.rejects(a.upload(new Uint8Array(10), { mime: 'text/html' }), (e) => e.kind === 'rejected' && e.code === 'unsupported_media_type' && e.status === 415);
    await assert.rejects(a.upload(new Uint8Array(65537), { mime: 'application/octet-stream' }), (e) => e.code === 'body_too_large' && e.status === 413);
    await assert.rejects(a.upload(new Uint8Array(4), { mime: 'text/plain', name: 'a/b' }), (e) => e.code === 'invalid_field' && e.status === 400);
    // A message naming an attachment Carol cannot see is refused.
    await assert.rejects(c.send(`d:${Math.min(alice, carol)}:${Math.max(alice, carol)}`, attachmentDraft(att)), (e) => e.kind === 'rejected' && e.code === 'invalid_field');

    const history = await b.history(conv, { limit: 10 });
    assert.deepEqual(history.messages.map((x) => [x.kind, x.content?.attachment]), [['image', att.id], ['file', file.id]]);
  } finally {
    for (const x of clients) await x.close();
    await stopServer(server);
  }
});

test('events: reactions, edits, recalls and notices through a real server', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = await startServer(port, ['--memory']);
  const clients = [];
  try {
    const alice = await register(base, 'alice');
    const bob = await register(base, 'bob');
    const carol = await register(base, 'carol');
    const login = await (await fetch(`${base}/api/v1/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password: 'password-123' }),
    })).json();
    const post = (path, body) => fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${login.token}` },
      body: JSON.stringify(body),
    });
    const group = await (await post('/api/v1/groups', { name: 'Lunch', members: [bob] })).json();
    const conv = `g:${group.id}`;
    const a = client(base, 'alice', 'a-web');
    const b = client(base, 'bob', 'b-web');
    clients.push(a, b);
    const got = [];
    b.on('message', (e) => got.push(e.message));
    const synced = [a, b].map((c) => next(c, 'synced'));
    for (const c of [a, b]) c.start();
    await Promise.all(synced);
    assert.ok(a.limits.edit_window_ms > 0 && a.limits.recall_window_ms > 0, 'the hello announces the windows');

    const lunch = await a.send(conv, 'Lunch at 12?');
    const later = await a.send(conv, 'or at 1?');
    await a.react(conv, lunch.id, '👍');
    const bobs = await b.react(conv, lunch.id, '🎉');
    await a.edit(conv, lunch.id, 'Lunch at 12:30?');
    await a.recall(conv, later.id);
    const refused = (code) => (e) => e instanceof ImError && e.kind === 'rejected' && e.code === code;
    await assert.rejects(b.edit(conv, lunch.id, 'mine now'), refused('forbidden'));
    await assert.rejects(b.react(conv, later.id, '👍'), refused('no_such_message'), 'recalled');
    await assert.rejects(b.react(conv, bobs.id, '👍'), refused('no_such_message'), 'an event');
    const noticed = next(b, 'message', (e) => e.message.kind === 'system'); // may come before the answer
    assert.ok((await post(`/api/v1/groups/${group.id}/members`, { user_id: carol })).ok);
    const notice = await noticed;
    assert.equal(notice.message.body, 'alice added carol');
    assert.deepEqual(notice.message.content, { event: 'member_added', user: carol, role: 'member' });

    // What Bob applied live is what the server stored.
    const shown = new Map(got.filter((m) => !isEvent(m)).map((m) => [m.id, structuredClone(m)]));
    for (const m of got) if (isEvent(m) && m.target) applyEvent(shown.get(m.target), m);
    const history = await b.history(conv, { limit: 20 });
    for (const m of history.messages.filter((x) => !isEvent(x))) assert.deepEqual(shown.get(m.id), m, `message ${m.id}`);
    const first = history.messages.find((m) => m.id === lunch.id);
    assert.equal(first.body, 'Lunch at 12:30?');
    assert.deepEqual(first.reactions, [{ emoji: '👍', users: [alice] }, { emoji: '🎉', users: [bob] }]);
    assert.equal(history.messages.find((m) => m.id === later.id).recalled > later.id, true);

    // Unread: Bob's reaction read up to it; what followed are events.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(b.readState(conv).unread, 0);
    const arrives = next(b, 'message', (e) => e.message.body === 'see you there');
    await a.send(conv, 'see you there');
    await arrives;
    assert.equal(b.readState(conv).unread, 1, 'one message since; the edit, recall and notice do not count');
    const [entry] = (await b.inbox()).filter((e) => e.conv === conv);
    assert.equal(entry.unread, 1);
  } finally {
    for (const c of clients) await c.close();
    await stopServer(server);
  }
});
