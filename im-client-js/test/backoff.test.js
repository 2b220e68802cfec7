// Tests of the reconnect policy and close-code reactions (backoff.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, CloseCode, closeCodeName, closeReaction, Reaction } from '../backoff.js';

const policy = (jitter, extra = {}) => ({ initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2, jitter, ...extra });

function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('without jitter delays double up to the cap', () => {
  const b = new Backoff(policy(0));
  const got = Array.from({ length: 7 }, () => b.next().delayMs);
  assert.deepEqual(got, [100, 200, 400, 800, 1000, 1000, 1000]);
});

test('jittered delays stay in their band, vary, and never exceed the cap', () => {
  const rand = prng(42);
  const firsts = new Set();
  for (let run = 0; run < 50; run++) {
    const b = new Backoff(policy(0.5), rand);
    for (let n = 0; n < 8; n++) {
      const { attempt, delayMs } = b.next();
      assert.equal(attempt, n + 1);
      const nominal = Math.min(100 * 2 ** n, 1000);
      assert.ok(delayMs >= nominal * 0.5 - 1 && delayMs <= Math.min(nominal * 1.5 + 1, 1000), `${n}: ${delayMs}`);
      if (n === 0) firsts.add(delayMs);
    }
  }
  assert.ok(firsts.size > 10, `jitter spreads the first delay: ${[...firsts]}`);
});

test('reset starts over and maxAttempts ends the run', () => {
  const b = new Backoff(policy(0, { maxAttempts: 3 }));
  assert.deepEqual(b.next(), { attempt: 1, delayMs: 100 });
  assert.deepEqual(b.next(), { attempt: 2, delayMs: 200 });
  assert.deepEqual(b.next(), { attempt: 3, delayMs: 400 });
  assert.equal(b.next(), null);
  b.reset();
  assert.deepEqual(b.next(), { attempt: 1, delayMs: 100 });
});

test('the default policy starts around half a second and caps at 30 s', () => {
  const b = new Backoff({}, () => 0.5);
  assert.equal(b.next().delayMs, 500);
  let last = 0;
  for (let i = 0; i < 20; i++) last = b.next().delayMs;
  assert.equal(last, 30_000);
});

test('close codes map to the reactions of protocol §11', () => {
  const table = [
    [3000, Reaction.SAME_NODE], [3001, Reaction.SAME_NODE], [3002, Reaction.SAME_NODE], [3499, Reaction.SAME_NODE],
    [1007, Reaction.SAME_NODE], [1009, Reaction.SAME_NODE],
    [3500, Reaction.DISPATCHER], [3501, Reaction.DISPATCHER], [3502, Reaction.DISPATCHER], [3999, Reaction.DISPATCHER],
    [1000, Reaction.DISPATCHER], [1001, Reaction.DISPATCHER], [1006, Reaction.DISPATCHER], [1011, Reaction.DISPATCHER],
    [1012, Reaction.DISPATCHER], [1013, Reaction.DISPATCHER], [null, Reaction.DISPATCHER], [undefined, Reaction.DISPATCHER],
    [4000, Reaction.STOP], [4001, Reaction.STOP], [4002, Reaction.STOP], [4003, Reaction.STOP], [4004, Reaction.STOP], [4999, Reaction.STOP],
  ];
  for (const [code, want] of table) assert.equal(closeReaction(code), want, `code ${code}`);
  assert.equal(closeCodeName(CloseCode.SLOW_CONSUMER), 'slow_consumer');
  assert.equal(closeCodeName(4321), 'other');
});
