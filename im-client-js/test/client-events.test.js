// Tests of events through ImClient against the in-memory fake server
// (test-support/fake-server.js): the send frames of react, unreact, edit and
// recall (outbox, cmid, resend after a reconnect), and unread counts that
// leave events out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyEvent } from '../im-client.js';
import { FakeServer, waitFor } from '../test-support/fake-server.js';
import { makeClient } from '../test-support/make-client.js';


const count = (events, type) => events.filter((e) => e.type === type).length;
const sends = (server) => server.peers.flatMap((p) => p.received.filter((f) => f.type === 'send'));
const strip = ({ rid: _rid, cmid: _cmid, ...f }) => f;

test('react, unreact, edit and recall send event frames with a target; the own events come back as messages', async () => {
  const server = new FakeServer();
  server.post('g:42', 2, 'Lunch at noon?', { live: false });
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1, 2000, 'synced');
  const mine = await client.send('g:42', 'See you at 12');
  assert.deepEqual(await client.react('g:42', 1, '👍'), { id: 3, duplicate: false });
  assert.deepEqual(await client.unreact('g:42', 1, '👍'), { id: 4, duplicate: false });
  assert.deepEqual(await client.edit('g:42', mine.id, 'See you at 12:30', { mentions: [2] }), { id: 5, duplicate: false });
  await client.edit('g:42', mine.id, 'pin', { content: { lat: 1, lon: 2 } });
  await client.recall('g:42', mine.id);
  const frames = sends(server);
  assert.deepEqual(frames.slice(1).map(strip), [
    { type: 'send', conv: 'g:42', body: '', kind: 'reaction', target: 1, content: { emoji: '👍' } },
    { type: 'send', conv: 'g:42', body: '', kind: 'reaction', target: 1, content: { emoji: '👍', remove: true } },
    { type: 'send', conv: 'g:42', body: 'See you at 12:30', kind: 'edit', target: 2, mentions: [2] },
    { type: 'send', conv: 'g:42', body: 'pin', kind: 'edit', target: 2, content: { content: { lat: 1, lon: 2 } } },
    { type: 'send', conv: 'g:42', body: '', kind: 'recall', target: 2 },
  ]);
  assert.equal(new Set(frames.map((f) => f.cmid)).size, frames.length, 'a cmid each');
  assert.ok(frames.every((f) => Number.isInteger(f.rid)));
  // Each comes back as a `message` event, at its place, and applies to the message shown.
  await waitFor(() => count(events, 'message') === 7, 2000, 'seven messages');
  const got = events.filter((e) => e.type === 'message').map((e) => e.message);
  assert.deepEqual(got.map((m) => [m.id, m.kind ?? 'text', m.target]), [
    [1, 'text', undefined], [2, 'text', undefined], [3, 'reaction', 1], [4, 'reaction', 1], [5, 'edit', 2], [6, 'edit', 2], [7, 'recall', 2],
  ]);
  const shown = { 1: { ...got[0] }, 2: { ...got[1] } };
  for (const m of got.slice(2)) assert.equal(applyEvent(shown[m.target], m), true, `event ${m.id}`);
  assert.equal(shown[1].reactions, undefined, 'reacted, then taken back');
  assert.deepEqual(shown[2], { ...got[1], body: '', recalled: 7 });
  // One's own events mark read, as one's own messages do.
  assert.deepEqual(client.readState('g:42'), { head: 7, read: 7, unread: 0 });
  await client.close();
});

test('bad event arguments reject at once with invalid_argument; send() takes a draft with a target', async () => {
  const server = new FakeServer();
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1, 2000, 'synced');
  const invalid = { kind: 'invalid_argument' };
  await assert.rejects(client.react('g:1', 0, '👍'), invalid);
  await assert.rejects(client.react('g:1', 1, 'two words'), invalid);
  await assert.rejects(client.react('x:1', 1, '👍'), invalid);
  await assert.rejects(client.edit('g:1', 1, 42), invalid);
  await assert.rejects(client.recall('g:1', -3), invalid);
  await assert.rejects(client.send('g:1', { body: '', kind: 'recall' }), invalid, 'an event needs a target');
  await assert.rejects(client.send('g:1', { body: 'hi', target: 1 }), invalid, 'a target is only for events');
  assert.equal(sends(server).length, 0, 'nothing went out');
  server.post('g:1', 2, 'hi', { live: false });
  await client.send('g:1', { body: '', kind: 'reaction', target: 1, content: { emoji: '🎉' } });
  assert.deepEqual(strip(sends(server)[0]), { type: 'send', conv: 'g:1', body: '', kind: 'reaction', target: 1, content: { emoji: '🎉' } });
  await client.close();
});

test('an event whose ack was lost is resent with the same cmid after a reconnect, and stored once', async () => {
  const server = new FakeServer();
  server.post('g:1', 2, 'hi', { live: false });
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1, 2000, 'synced');
  server.intercept = (peer, f) => {
    if (f.type !== 'send') return false;
    server.store(f.conv, server.user, f.body, f.cmid, f);
    server.intercept = null;
    peer.close(3001, 'slow consumer');
    return true;
  };
  assert.deepEqual(await client.react('g:1', 1, '❤️'), { id: 2, duplicate: true });
  const frames = sends(server);
  assert.equal(frames.length, 2);
  assert.deepEqual(strip(frames[1]), strip(frames[0]), 'the same frame');
  assert.equal(frames[0].cmid, frames[1].cmid, 'with the same cmid');
  assert.equal(server.logs.get('g:1').length, 2, 'stored once');
  assert.equal(client.pendingSends, 0);
  await client.close();
});

test("others' events do not count as unread (live, by sync, in the inbox walk), but raise the head", async () => {
  const server = new FakeServer();
  server.reads.set('g:1', 0);
  server.post('g:1', 2, 'one', { live: false });
  server.post('g:1', 2, '', { live: false, kind: 'reaction', target: 1, content: { emoji: '👍' } });
  server.post('g:1', 2, 'two', { live: false });
  server.post('g:1', 2, 'alice added bob', { live: false, kind: 'system', content: { event: 'member_added', user: 5 } });
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1, 2000, 'synced');
  await waitFor(() => server.peer.received.some((f) => f.type === 'inbox'), 2000, 'inbox walk');
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(client.readState('g:1'), { head: 4, read: 0, unread: 2 });
  const unreadEvents = () => events.filter((e) => e.type === 'unread' && e.conv === 'g:1').map((e) => e.unread);
  assert.deepEqual(unreadEvents(), [1, 2], 'only the two messages changed the count');
  // Live: an edit and a recall from the other user, then a message.
  server.post('g:1', 2, 'two!', { kind: 'edit', target: 3 });
  server.post('g:1', 2, '', { kind: 'recall', target: 1 });
  server.post('g:1', 2, 'three');
  await waitFor(() => client.readState('g:1').head === 7, 2000, 'live messages');
  assert.deepEqual(client.readState('g:1'), { head: 7, read: 0, unread: 3 });
  assert.deepEqual(unreadEvents(), [1, 2, 3]);
  assert.equal(client.unreadTotal(), 3);
  // Marking read up to the edit: messages 1 and 3 read, 7 left.
  client.markRead('g:1', 5);
  assert.deepEqual(client.readState('g:1'), { head: 7, read: 5, unread: 1 });
  // Events still go to the `received` reports (they were delivered).
  await waitFor(() => server.peer.received.some((f) => f.type === 'received' && f.cursors['g:1'] === 7), 2000, 'received');
  await client.close();
});

test('a contact frame becomes a contact event', async () => {
  const server = new FakeServer();
  const { client, events } = makeClient(server);
  client.start();
  await waitFor(() => count(events, 'synced') === 1, 2000, 'synced');
  server.peer.send({ type: 'contact', user: 7, state: 'pending' });
  server.peer.send({ type: 'contact', user: 7, state: 'accepted' });
  await waitFor(() => count(events, 'contact') === 2, 2000, 'contact events');
  const got = events.filter((e) => e.type === 'contact');
  assert.deepEqual(got, [
    { type: 'contact', user: 7, state: 'pending' },
    { type: 'contact', user: 7, state: 'accepted' },
  ]);
  await client.close();
});
