// Integration tests of ImClient against the in-memory fake network and
// server (test-support/fake-server.js): no sockets, no network. Timers are
// real but short; every wait is bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryCursorStore } from '../im-client.js';
import { FakeServer, waitFor } from '../test-support/fake-server.js';
import { fast, makeClient } from '../test-support/make-client.js';


const messages = (events, conv) => events.filter((e) => e.type === 'message' && (!conv || e.message.conv === conv)).map((e) => e.message.id);
const count = (events, type) => events.filter((e) => e.type === type).length;

test('connects through the dispatcher with device, v=2 and the token; syncs page by page in order', async () => {
  const server = new FakeServer({ limits: { sync_page_max: 2 } });
  for (let i = 0; i < 5; i++) server.post('g:1', 2, `g${i}`, { live: false });
  for (let i = 0; i < 2; i++) server.post('d:1:2', 2, `d${i}`, { live: false });
  const store = new MemoryCursorStore({ 'g:1': 1 });
  const { client, events } = makeClient(server, { cursorStore: store });
  client.start();
  await waitFor(() => count(events, 'synced') === 1, 2000, 'synced');
  const url = new URL(server.urls[0]);
  assert.equal(url.host, 'node-a.test');
  assert.equal(url.searchParams.get('v'), '2');
  assert.equal(url.searchParams.get('device'), 'laptop-1');
  assert.equal(url.searchParams.get('token'), 'tok');
  assert.equal(server.dispatchCount, 1);
  assert.deepEqual(events[0], { type: 'connected', node: 'node-a', user: 1, device: 'laptop-1', protocol: 2 });
  assert.deepEqual(messages(events, 'g:1'), [2, 3, 4, 5], 'from the stored cursor');
  assert.deepEqual(messages(events, 'd:1:2'), [1, 2]);
  const syncs = server.peer.received.filter((f) => f.type === 'sync');
  assert.equal(syncs.length, 3, 'pages of 2 + the last one');
  assert.deepEqual(syncs[0].cursors, { 'g:1': 1 });
  assert.deepEqual(syncs[1].cursors, { 'g:1': 1, 'd:1:2': 2 }, 'the next page asks with the advanced cursors');
  assert.deepEqual(store.load(), { '@user': 1, 'g:1': 5, 'd:1:2': 2 }, 'cursors persisted, with their owner');
  assert.equal(client.readState('g:1').head, 5);
  await client.close();
  assert.equal(events.at(-1).type, 'stopped');
  assert.deepEqual(events.at(-1).reason, { kind: 'shutdown' });
});

test('live messages overlapping a sync and a live gap reach the app once, in order', async () => {
  const server = new FakeServer();
  server.post('g:1', 2, 'a', { live: false });
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  // The live copy of #2 arrives, then #3 is "missed" and #4 arrives live: a gap.
  server.post('g:1', 2, 'b');
  server.post('g:1', 2, 'c', { live: false });
  server.post('g:1', 2, 'd');
  server.peer.send({ type: 'message', ...server.logs.get('g:1')[1] }); // a duplicate of #2
  await waitFor(() => messages(events, 'g:1').length === 4, 2000, 'gap filled');
  assert.deepEqual(messages(events, 'g:1'), [1, 2, 3, 4]);
  assert.equal(count(events, 'synced'), 2, 'the gap caused a catch-up sync');
  await client.close();
});

test('an unacked send is resent with the same cmid after a same-node reconnect and resolves {id, duplicate}', async () => {
  const server = new FakeServer();
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  // The server stores the message but the ack is lost with the connection (3001).
  server.intercept = (peer, f) => {
    if (f.type !== 'send') return false;
    server.store(f.conv, server.user, f.body, f.cmid);
    server.intercept = null;
    peer.close(3001, 'slow consumer');
    return true;
  };
  const sent = client.send('g:1', 'hello');
  const receipt = await sent;
  assert.deepEqual(receipt, { id: 1, duplicate: true }, 'deduplicated by the server');
  const sends = server.peers.flatMap((p) => p.received.filter((f) => f.type === 'send'));
  assert.equal(sends.length, 2);
  assert.equal(sends[0].cmid, sends[1].cmid, 'same cmid');
  assert.equal(server.peers.length, 2, 'the resend went out on the new connection');
  assert.equal(server.dispatchCount, 1, '3001: same node, no dispatcher');
  assert.equal(new URL(server.urls[1]).host, 'node-a.test');
  assert.deepEqual(messages(events, 'g:1'), [1], 'the own message appears once');
  assert.equal(server.logs.get('g:1').length, 1, 'stored once');
  const disc = events.find((e) => e.type === 'disconnected');
  assert.deepEqual(disc, { type: 'disconnected', code: 3001, reason: 'slow consumer' });
  assert.ok(events.some((e) => e.type === 'reconnecting' && e.attempt === 1));
  assert.equal(client.pendingSends, 0);
  await client.close();
});

test('sends respect max_in_flight and go out in order; refusals reject; rate_limited is retried with the same cmid', async () => {
  const server = new FakeServer({ limits: { max_in_flight: 2 } });
  const held = [];
  let maxOutstanding = 0;
  let limited = false;
  server.intercept = (peer, f) => {
    if (f.type !== 'send') return false;
    if (f.body === 'bad') {
      peer.send({ type: 'error', rid: f.rid, code: 'not_member', message: 'no' });
      return true;
    }
    if (f.body === 'm1' && !limited) {
      limited = true;
      peer.send({ type: 'error', rid: f.rid, code: 'rate_limited', message: 'slow down' });
      return true;
    }
    held.push(f);
    maxOutstanding = Math.max(maxOutstanding, held.length);
    // Answer later, so that the window fills.
    setTimeout(() => {
      held.splice(held.indexOf(f), 1);
      const [m, duplicate] = server.store(f.conv, server.user, f.body, f.cmid);
      peer.send({ type: 'ack', rid: f.rid, conv: f.conv, id: m.id, cmid: f.cmid, ts: m.ts, duplicate });
    }, 10);
    return true;
  };
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  const results = await Promise.all(
    ['m0', 'm1', 'm2', 'm3', 'm4'].map((b) => client.send('d:1:2', b)),
  );
  assert.ok(maxOutstanding <= 2, `at most max_in_flight unanswered (${maxOutstanding})`);
  assert.deepEqual(results.map((r) => r.duplicate), [false, false, false, false, false]);
  assert.deepEqual(new Set(results.map((r) => r.id)).size, 5);
  const m1 = server.peer.received.filter((f) => f.type === 'send' && f.body === 'm1');
  assert.equal(m1.length, 2, 'm1 resent after rate_limited');
  assert.equal(m1[0].cmid, m1[1].cmid);
  assert.deepEqual(messages(events, 'd:1:2'), [1, 2, 3, 4, 5], 'own messages in id order, once');
  await assert.rejects(client.send('d:1:2', 'bad'), (e) => e.kind === 'rejected' && e.code === 'not_member');
  await assert.rejects(client.send('d:1:2', 'x'.repeat(20000)), (e) => e.kind === 'body_too_large');
  await assert.rejects(client.send('d:2:1', 'x'), (e) => e.kind === 'invalid_argument');
  await client.close();
});

test('close codes: 3501 goes back to the dispatcher, 4002 stops, sends pending at the stop are rejected', async () => {
  const server = new FakeServer();
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  server.peer.close(3501, 'drain');
  await waitFor(() => count(events, 'synced') === 2, 2000, 'reconnected');
  assert.equal(server.dispatchCount, 2, 'asked the dispatcher again');
  server.intercept = (peer, f) => f.type === 'send'; // never acked
  const pending = client.send('g:1', 'never acked');
  await waitFor(() => server.peer?.received.some((f) => f.type === 'send'));
  server.peer.close(4002, 'banned');
  await assert.rejects(pending, (e) => e.kind === 'stopped');
  await waitFor(() => count(events, 'stopped') === 1);
  assert.deepEqual(events.at(-1).reason, { kind: 'closed', code: 4002, name: 'banned', reason: 'banned' });
  assert.equal(server.peers.length, 2, 'no reconnect after a terminal code');
});

test('falls back to protocol 1 when the server closes 4003; no version-2 frames go out', async () => {
  const server = new FakeServer({ maxVersion: 1 });
  server.post('g:1', 2, 'x', { live: false });
  const { client, events } = makeClient(server);
  client.markRead('g:1', 1);
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  assert.deepEqual(server.urls.map((u) => new URL(u).searchParams.get('v')), ['2', '1']);
  assert.equal(client.protocol, 1);
  await new Promise((r) => setTimeout(r, 60));
  const types = new Set(server.peer.received.map((f) => f.type));
  assert.ok(!types.has('read') && !types.has('inbox') && !types.has('received'), [...types].join());
  await client.close();
});

test('login: logs in, and logs in again after 4000; 4001 stops unless reloginOnRevoked', async () => {
  const server = new FakeServer();
  const { client, events } = makeClient(server, { token: undefined, login: { username: 'alice', password: 'secret' } });
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  assert.equal(server.loginCount, 1);
  assert.equal(new URL(server.urls[0]).searchParams.get('token'), 'login-1');
  server.peer.close(4000, 'expired');
  await waitFor(() => count(events, 'synced') === 2, 2000, 'relogged');
  assert.equal(server.loginCount, 2);
  assert.equal(new URL(server.urls.at(-1)).searchParams.get('token'), 'login-2');
  server.peer.close(4001, 'revoked');
  await waitFor(() => count(events, 'stopped') === 1);
  assert.equal(events.at(-1).reason.code, 4001);

  const server2 = new FakeServer();
  const c2 = makeClient(server2, { token: undefined, login: { username: 'a', password: 'secret' }, reloginOnRevoked: true });
  c2.client.start();
  await waitFor(() => count(c2.events, 'synced') === 1);
  server2.peer.close(4001, 'revoked');
  await waitFor(() => count(c2.events, 'synced') === 2, 2000, 'relogged after 4001');
  assert.equal(server2.loginCount, 2);
  await c2.client.close();

  const server3 = new FakeServer();
  const c3 = makeClient(server3, { token: undefined, login: { username: 'a', password: 'wrong' } });
  c3.client.start();
  await waitFor(() => count(c3.events, 'stopped') === 1);
  assert.equal(c3.events.at(-1).reason.kind, 'login_failed');
});

test('a refused handshake with a dead token stops (token probe); an unreachable node is retried via the dispatcher', async () => {
  const server = new FakeServer();
  const { client, events } = makeClient(server, { token: 'revoked-token' });
  client.start();
  await waitFor(() => count(events, 'stopped') === 1);
  assert.deepEqual(events.at(-1).reason, { kind: 'unauthorized' });

  const server2 = new FakeServer();
  server2.refuseHandshake = true;
  const c2 = makeClient(server2);
  c2.client.start();
  await waitFor(() => count(c2.events, 'reconnecting') >= 3);
  server2.refuseHandshake = false;
  await waitFor(() => count(c2.events, 'synced') === 1);
  assert.ok(server2.dispatchCount >= 4, 'each retry asks the dispatcher');
  await c2.client.close();

  const server3 = new FakeServer();
  server3.refuseHandshake = true;
  const c3 = makeClient(server3, { reconnect: { ...fast, maxAttempts: 2 } });
  c3.client.start();
  await waitFor(() => count(c3.events, 'stopped') === 1);
  assert.deepEqual(c3.events.at(-1).reason, { kind: 'too_many_attempts', attempts: 2 });
});

test('heartbeat: pings every interval; a silent connection is declared dead and replaced', async () => {
  const server = new FakeServer({ heartbeatMs: 30 });
  const { client, events } = makeClient(server, { pongTimeoutMs: 40 });
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  await waitFor(() => server.peer.received.filter((f) => f.type === 'ping').length >= 2, 2000, 'pings');
  server.peer.silent = true; // half-open: nothing comes back
  await waitFor(() => count(events, 'disconnected') === 1, 2000, 'dead connection noticed');
  const d = events.find((e) => e.type === 'disconnected');
  assert.equal(d.code, null);
  assert.match(d.reason, /no frame within 40 ms/);
  await waitFor(() => count(events, 'synced') === 2, 2000, 'reconnected');
  assert.equal(server.dispatchCount, 2, 'a dead connection goes back to the dispatcher');
  await client.close();
});

test('read state: offline marks go out after connecting (highest wins); inbox walk; read_up_to; received reports', async () => {
  const server = new FakeServer();
  for (let i = 0; i < 6; i++) server.post('g:1', 2, `m${i}`, { live: false });
  server.reads.set('d:1:2', 0);
  for (let i = 0; i < 3; i++) server.post('d:1:2', 2, `d${i}`, { live: false });
  const { client, events } = makeClient(server);
  // Offline, before anything is known of g:1: the first mark sets what is
  // known (the server checks it); later ones are lowered to it; the highest wins.
  client.markRead('g:1', 4);
  client.markRead('g:1', 2);
  client.markRead('g:1', 3);
  assert.deepEqual(client.readState('g:1'), { head: 4, read: 4, unread: 0 });
  client.start();
  await waitFor(() => server.peer?.received.some((f) => f.type === 'inbox'), 2000, 'inbox walk');
  await waitFor(() => server.peer.received.some((f) => f.type === 'read'), 2000, 'read');
  const reads = server.peer.received.filter((f) => f.type === 'read');
  assert.deepEqual(reads.map((f) => [f.conv, f.id]), [['g:1', 4]], 'one mark, the highest');
  const syncAt = server.peer.received.findIndex((f) => f.type === 'sync');
  const inboxAt = server.peer.received.findIndex((f) => f.type === 'inbox');
  assert.ok(inboxAt > syncAt, 'the inbox walk follows the first sync');
  await waitFor(() => client.readState('g:1')?.head === 6);
  assert.equal(client.unreadTotal(), 2 + 3);
  // Another device reads d:1:2 up to 3.
  server.peer.send({ type: 'read_up_to', conv: 'd:1:2', id: 3 });
  await waitFor(() => events.some((e) => e.type === 'readUpTo' && e.conv === 'd:1:2'));
  assert.deepEqual(client.readState('d:1:2'), { head: 3, read: 3, unread: 0 });
  assert.ok(events.some((e) => e.type === 'unread' && e.conv === 'd:1:2' && e.unread === 0));
  // Received reports: one frame for the whole sync, naming the heads.
  await waitFor(() => server.peer.received.some((f) => f.type === 'received'));
  const rec = server.peer.received.filter((f) => f.type === 'received');
  assert.equal(rec.length, 1);
  assert.deepEqual(rec[0].cursors, { 'd:1:2': 3, 'g:1': 6 });
  // Marking locally: lowered to the known head; an unread event follows at once.
  client.markRead('g:1', 100);
  assert.deepEqual(client.readState('g:1'), { head: 6, read: 6, unread: 0 });
  await waitFor(() => server.peer.received.some((f) => f.type === 'read' && f.id === 6));
  assert.equal(server.reads.get('g:1'), 6);
  assert.deepEqual(await client.receipts('g:1'), []);
  const inbox = await client.inbox();
  assert.deepEqual(inbox.map((e) => e.conv), ['d:1:2', 'g:1']);
  await client.close();
});

test('typing: throttled sends, fails offline; others typing ends on their message or on expiry', async () => {
  const server = new FakeServer();
  const { client, events } = makeClient(server);
  await assert.rejects(client.typing('g:1', true), (e) => e.kind === 'disconnected');
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  await client.typing('g:1', true);
  await client.typing('g:1', true); // throttled: resolves at once
  await client.typing('g:1', true);
  const typing = () => server.peer.received.filter((f) => f.type === 'typing');
  assert.deepEqual(typing().map((f) => f.typing), [true], 'one frame per refresh interval');
  await client.typing('g:1', false);
  assert.deepEqual(typing().map((f) => f.typing), [true, false]);
  // Another member types, then sends: the indicator ends with the message.
  server.peer.send({ type: 'user_typing', conv: 'g:1', user: 2, typing: true });
  await waitFor(() => events.some((e) => e.type === 'typing' && e.user === 2 && e.typing));
  server.post('g:1', 2, 'done typing');
  await waitFor(() => events.some((e) => e.type === 'typing' && e.user === 2 && !e.typing));
  const order = events.filter((e) => (e.type === 'typing' && e.user === 2) || e.type === 'message').map((e) => e.type + (e.typing ?? ''));
  assert.deepEqual(order, ['typingtrue', 'message', 'typingfalse']);
  // A third starts typing and the connection drops: shown as stopped.
  server.peer.send({ type: 'user_typing', conv: 'g:1', user: 3, typing: true });
  await waitFor(() => events.some((e) => e.type === 'typing' && e.user === 3 && e.typing));
  server.peer.close(3000);
  await waitFor(() => events.some((e) => e.type === 'typing' && e.user === 3 && !e.typing));
  await client.close();
});

test('events as an async iterator end after stopped; requests time out and fail on disconnect', async () => {
  const server = new FakeServer();
  server.intercept = (peer, f) => f.type === 'history'; // never answered
  const { client } = makeClient(server, { requestTimeoutMs: 50 });
  const seen = [];
  const reader = (async () => {
    for await (const e of client.events()) {
      seen.push(e.type);
      if (e.type === 'synced') {
        await assert.rejects(client.history('g:1'), (err) => err.kind === 'timeout');
        assert.deepEqual(await client.queryPresence([2]), []);
        await client.join(7);
        client.close();
      }
    }
  })();
  client.start();
  await reader;
  assert.deepEqual(seen.slice(0, 2), ['connected', 'synced']);
  assert.equal(seen.at(-1), 'stopped');
  await assert.rejects(client.send('g:1', 'late'), (e) => e.kind === 'stopped');
});

test('a room starts at the first message seen and is named in later syncs', async () => {
  const server = new FakeServer();
  for (let i = 0; i < 10; i++) server.post('r:7', 2, `old${i}`, { live: false });
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  assert.deepEqual(messages(events, 'r:7'), [], 'rooms are not synced unless named');
  await client.join(7);
  server.post('r:7', 2, 'new');
  await waitFor(() => messages(events, 'r:7').length === 1);
  assert.deepEqual(messages(events, 'r:7'), [11]);
  server.post('r:7', 2, 'missed', { live: false });
  server.peer.close(3000);
  await waitFor(() => count(events, 'synced') === 2);
  assert.deepEqual(messages(events, 'r:7'), [11, 12]);
  const lastSync = server.peer.received.find((f) => f.type === 'sync');
  assert.equal(lastSync.cursors['r:7'], 11);
  await client.close();
});

test('being added to a group triggers a sync that brings its past; presence and member events pass through', async () => {
  const server = new FakeServer();
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  server.post('g:9', 2, 'before you joined', { live: false });
  server.post('g:9', 2, 'welcome', { live: false });
  server.peer.send({ type: 'member', group: 9, user: 1, change: 'added', by: 2 });
  server.peer.send({ type: 'presence', user: 2, status: 'online', last_active_at: 5 });
  await waitFor(() => messages(events, 'g:9').length === 2, 2000, 'group past synced');
  assert.deepEqual(messages(events, 'g:9'), [1, 2]);
  assert.ok(events.some((e) => e.type === 'member' && e.group === 9 && e.change === 'added' && e.by === 2));
  assert.ok(events.some((e) => e.type === 'presence' && e.presence.user === 2 && e.presence.status === 'online'));
  await client.close();
});

test("another user's stored cursors are not used: the client syncs from the start", async () => {
  const server = new FakeServer({});
  for (let i = 0; i < 3; i++) server.post('g:1', 2, `g${i}`, { live: false });
  // Cursors left in this browser by user 7; the fake server signs in user 1.
  const store = new MemoryCursorStore({ '@user': 7, 'g:1': 3 });
  const { client, events } = makeClient(server, { cursorStore: store });
  client.start();
  await waitFor(() => count(events, 'synced') === 1, 2000, 'synced');
  assert.deepEqual(messages(events, 'g:1'), [1, 2, 3], "user 7's cursor skipped nothing");
  assert.deepEqual(store.load(), { '@user': 1, 'g:1': 3 });
  await client.close();
});

test('draft content is copied at send: changing the object afterwards changes nothing sent', async () => {
  const server = new FakeServer({});
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1, 2000, 'synced');
  const content = { lat: 1, lon: 2 };
  const sent = client.send('g:1', { body: 'pin', kind: 'location', content });
  content.lat = 50;
  await sent;
  const frame = server.peer.received.find((f) => f.type === 'send');
  assert.deepEqual(frame.content, { lat: 1, lon: 2 });
  await client.close();
});


test('reconnectNow cuts a backoff wait short; a failed early attempt waits the next, longer delay', async () => {
  const server = new FakeServer();
  // Waits far longer than any wait of this test: only reconnectNow gets it on.
  const slow = { initialDelayMs: 60_000, maxDelayMs: 600_000, multiplier: 2, jitter: 0 };
  const { client, events } = makeClient(server, { reconnect: slow });
  const reconnecting = () => events.filter((e) => e.type === 'reconnecting').map((e) => [e.attempt, e.delayMs]);
  assert.equal(client.reconnectNow(), false, 'not started');
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  assert.equal(client.reconnectNow(), false, 'connected: nothing to cut short');
  assert.equal(server.peers.length, 1);

  // The node goes away: the client waits 60 s before its first attempt.
  server.refuseHandshake = true;
  server.peer.kill();
  await waitFor(() => reconnecting().length === 1, 2000, 'reconnecting');
  assert.deepEqual(reconnecting(), [[1, 60_000]]);
  const dispatched = server.dispatchCount;
  const started = Date.now();
  assert.equal(client.reconnectNow(), true, 'waiting: cut short');
  assert.equal(client.reconnectNow(), false, 'the attempt is under way');
  // The early attempt fails: the backoff was not reset, the next wait is longer.
  await waitFor(() => reconnecting().length === 2, 2000, 'the early attempt failed');
  assert.ok(Date.now() - started < 2000);
  assert.deepEqual(reconnecting(), [[1, 60_000], [2, 120_000]]);
  assert.equal(server.dispatchCount, dispatched + 1, 'a lost connection: the attempt asked the dispatcher');

  // The node is back: the next early attempt connects and syncs.
  server.refuseHandshake = false;
  assert.equal(client.reconnectNow(), true);
  await waitFor(() => count(events, 'synced') === 2, 2000, 'reconnected');
  assert.equal(client.connected, true);
  assert.equal(client.reconnectNow(), false, 'connected again');

  // After that healthy connection the backoff starts over.
  server.peer.close(3000, 'transient');
  await waitFor(() => reconnecting().length === 3, 2000, 'reconnecting again');
  assert.deepEqual(reconnecting().at(-1), [1, 60_000], 'reset by the sync');
  // A 3000 close reuses the node's URL (no dispatcher), cut short or not.
  const before = server.dispatchCount;
  assert.equal(client.reconnectNow(), true);
  await waitFor(() => count(events, 'synced') === 3, 2000, 'reconnected to the same node');
  assert.equal(server.dispatchCount, before, 'same node: the dispatcher was not asked');
  await client.close();
  assert.equal(client.reconnectNow(), false, 'stopped');
});

test('reconnectNow never restarts a stopped client and does not add attempts beyond maxAttempts', async () => {
  const slow = { initialDelayMs: 60_000, maxDelayMs: 600_000, multiplier: 2, jitter: 0 };

  // A terminal close code: stopped, and reconnectNow does nothing.
  const server = new FakeServer();
  const { client, events } = makeClient(server, { reconnect: slow });
  client.start();
  await waitFor(() => count(events, 'synced') === 1);
  server.peer.close(4002, 'banned');
  await waitFor(() => count(events, 'stopped') === 1);
  assert.equal(client.reconnectNow(), false);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(server.urls.length, 1, 'no new connection');

  // close() during a wait: the wait ends with the stop, and reconnectNow does nothing.
  const server2 = new FakeServer();
  server2.refuseHandshake = true;
  const c2 = makeClient(server2, { reconnect: slow });
  c2.client.start();
  await waitFor(() => count(c2.events, 'reconnecting') === 1);
  const closing = c2.client.close();
  assert.equal(c2.client.reconnectNow(), false);
  await closing;
  assert.deepEqual(c2.events.at(-1).reason, { kind: 'shutdown' });
  assert.equal(server2.urls.length, 1, 'no attempt after close()');

  // Early attempts count: with maxAttempts 2, two failed early attempts stop the client.
  const server3 = new FakeServer();
  server3.refuseHandshake = true;
  const c3 = makeClient(server3, { reconnect: { ...slow, maxAttempts: 2 } });
  // A `reconnecting` listener may already cut its wait short.
  c3.client.on('reconnecting', () => assert.equal(c3.client.reconnectNow(), true));
  c3.client.start();
  await waitFor(() => count(c3.events, 'stopped') === 1, 2000, 'gave up');
  assert.deepEqual(c3.events.at(-1).reason, { kind: 'too_many_attempts', attempts: 2 });
  assert.deepEqual(c3.events.filter((e) => e.type === 'reconnecting').map((e) => e.attempt), [1, 2]);
  assert.equal(server3.urls.length, 3, 'the first attempt and the two retries');
  assert.equal(c3.client.reconnectNow(), false);
});
