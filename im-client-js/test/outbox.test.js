// Tests of the outbox (outbox.js) and the pacer (pacer.js): resends with
// the same cmid after a reconnect, ack matching by rid, requeue after a
// passing refusal, bounds, drafts and cmids.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CmidGen, draftFrame, draftMessage, normalizeDraft, Outbox } from '../outbox.js';
import { Pacer, sendBudget } from '../pacer.js';

const G = 'g:1';
const rids = (start = 0) => {
  let n = start;
  return () => ++n;
};

test('unacked sends are resent in order with the same cmid after a reconnect; the outbox is bounded', () => {
  const o = new Outbox(3);
  const gen = new CmidGen();
  const cmids = [gen.next(), gen.next(), gen.next()];
  cmids.forEach((c, i) => assert.equal(o.push(G, c, { body: `m${i}` }, i), true));
  assert.equal(o.push(G, gen.next(), { body: 'full' }, 9), false, 'full');
  const next = rids();
  const first = o.framesToSend(Infinity, next);
  assert.deepEqual(first.map((f) => [f.rid, f.cmid, f.body]), [[1, cmids[0], 'm0'], [2, cmids[1], 'm1'], [3, cmids[2], 'm2']]);
  assert.deepEqual(o.framesToSend(Infinity, next), [], 'already sent on this connection');
  assert.equal(o.unanswered(), 3);
  // The second is acked; the connection dies.
  assert.equal(o.take(2).reply, 1);
  o.disconnected();
  assert.equal(o.unanswered(), 0);
  const again = o.framesToSend(Infinity, next);
  assert.deepEqual(again.map((f) => [f.rid, f.cmid]), [[4, cmids[0]], [5, cmids[2]]], 'same cmids, new rids, in order');
  assert.equal(o.size, 2);
  assert.deepEqual(o.drain().map((e) => e.reply), [0, 2]);
  assert.equal(o.size, 0);
});

test('acks are matched by rid; a duplicate or stale ack matches nothing', () => {
  const o = new Outbox();
  o.push(G, 'a-1', { body: 'x' }, 'A');
  o.push('g:2', 'a-2', { body: 'y' }, 'B');
  o.framesToSend(10, rids(10));
  assert.equal(o.isSend(11), true);
  assert.equal(o.take(12).reply, 'B', 'acks may overtake each other across conversations');
  assert.equal(o.take(12), null, 'a second ack for the same rid is ignored');
  assert.equal(o.take(99), null, 'not ours');
  o.disconnected();
  assert.equal(o.take(11), null, 'an ack of a dead connection does not match the resend');
  const [resend] = o.framesToSend(10, rids(20));
  assert.deepEqual([resend.rid, resend.cmid], [21, 'a-1']);
  assert.equal(o.take(21).reply, 'A');
});

test('a send refused for a passing reason is held until released; the budget paces', () => {
  const o = new Outbox();
  o.push(G, 'c-1', { body: 'x' }, 0);
  o.push(G, 'c-2', { body: 'y' }, 1);
  o.framesToSend(Infinity, rids());
  o.requeue(1);
  assert.equal(o.isSend(1), false);
  assert.deepEqual(o.framesToSend(Infinity, rids(5)), [], 'held back until released');
  o.release();
  assert.deepEqual(o.framesToSend(0, rids(5)), [], 'paced: nothing allowed');
  const [f] = o.framesToSend(Infinity, rids(5));
  assert.deepEqual([f.rid, f.cmid], [6, 'c-1']);
});

test('cmids are unique, valid and per client', () => {
  const a = new CmidGen();
  const b = new CmidGen();
  const x = a.next();
  assert.notEqual(x, a.next());
  assert.notEqual(x, b.next());
  assert.match(x, /^[!-~]{1,64}$/);
  assert.match(x, /^[0-9a-f]{32}-1$/);
});

test('drafts become send frames and, once acked, messages', () => {
  const d = normalizeDraft({ body: '📍 Tour Eiffel', kind: 'location', content: { lat: 48.8, lon: 2.3 }, replyTo: 18, mentions: [5] });
  assert.deepEqual(draftFrame(d, 7, G, 'c'), {
    type: 'send', rid: 7, conv: G, cmid: 'c', body: '📍 Tour Eiffel', kind: 'location', content: { lat: 48.8, lon: 2.3 }, reply_to: 18, mentions: [5],
  });
  assert.deepEqual(draftFrame(normalizeDraft('hi'), 1, G, 'c'), { type: 'send', rid: 1, conv: G, cmid: 'c', body: 'hi' });
  assert.deepEqual(draftFrame(normalizeDraft({ body: 'x', kind: 'text' }), 1, G, 'c').kind, undefined, 'text is never sent as a kind');
  assert.deepEqual(draftMessage(normalizeDraft('hi'), G, 3, 1, 'c', 99), { conv: G, id: 3, from: 1, cmid: 'c', body: 'hi', ts: 99 });
  assert.throws(() => normalizeDraft({}), TypeError);
});

test('the pacer bursts then refills at its share of the server rate', () => {
  const p = new Pacer({ rate_per_sec: 50, rate_burst: 200 }, 0); // 40/s, burst 100
  assert.equal(p.available(0), 100);
  p.spend(100);
  assert.equal(p.available(0), 0);
  assert.equal(p.available(500), 20);
  p.spend(21); // a ping overdraws
  assert.equal(p.available(500), 0);
  assert.equal(p.available(60_000), 100, 'never above the burst');
});

test('the send budget respects the pacer and the server in-flight window', () => {
  assert.equal(sendBudget(100, 64, 0), 64);
  assert.equal(sendBudget(10, 64, 0), 10);
  assert.equal(sendBudget(100, 64, 60), 4);
  assert.equal(sendBudget(100, 64, 64), 0);
  assert.equal(sendBudget(100, 64, 70), 0, 'after a reconnect more may be pending');
  assert.equal(sendBudget(100, 0, 0), 1, '0 would stall; treated as 1');
  assert.equal(sendBudget(100, undefined, 0), 1, 'an older server: one at a time');
});
