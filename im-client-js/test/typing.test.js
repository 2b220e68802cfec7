// Tests of typing (typing.js): throttle, refresh and idle stop of one's own
// typing; expiry of others'.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TYPING_EXPIRY_MS, TypingIn, TypingOut } from '../typing.js';

const G = 'g:1';

test('typing out is throttled, refreshed while typing, and stopped after a pause', () => {
  const out = new TypingOut();
  assert.equal(out.call(G, true, 0), true);
  assert.equal(out.call(G, true, 500), null, 'keystrokes within the interval send nothing');
  assert.deepEqual(out.tick(1000), []);
  assert.equal(out.call(G, true, 2900), null);
  assert.deepEqual(out.tick(3000), [[G, true]], 'still typing 3 s later: refreshed');
  assert.deepEqual(out.tick(6000), [[G, true]], 'refreshed while the pause is short');
  assert.deepEqual(out.tick(7900), [[G, false]], 'stopped by itself 5 s after the last keystroke');
  assert.deepEqual(out.tick(9000), []);
  // Stopping explicitly sends false once; a message ends it silently.
  assert.equal(out.call(G, true, 10_000), true);
  assert.equal(out.call(G, false, 10_100), false);
  assert.equal(out.call(G, false, 10_200), null);
  assert.equal(out.call(G, true, 11_000), true);
  out.sentMessage(G);
  assert.deepEqual(out.tick(20_000), []);
  // A keystroke 3 s after the last `true` sends at once.
  assert.equal(out.call(G, true, 30_000), true);
  assert.equal(out.call(G, true, 33_000), true);
  out.clear();
  assert.deepEqual(out.tick(40_000), [], 'a disconnect forgets everything');
});

test('typing in expires without a refresh, ends on a message, and clears on a disconnect', () => {
  const inn = new TypingIn();
  inn.heard(G, 1, true, 0);
  inn.heard(G, 2, true, 0);
  inn.heard(G, 1, true, 4000); // 1 refreshed
  assert.deepEqual(inn.expired(5000), []);
  assert.deepEqual(inn.expired(TYPING_EXPIRY_MS), [[G, 2]]);
  assert.equal(inn.messageFrom(G, 1), true);
  assert.equal(inn.messageFrom(G, 1), false);
  inn.heard(G, 2, true, 0);
  inn.heard(G, 2, false, 0);
  inn.heard('d:1:2', 3, true, 0);
  assert.deepEqual(inn.clear(), [['d:1:2', 3]]);
  assert.deepEqual(inn.expired(1e9), []);
});
