// Tests of the sync state machine (sync-state.js): dedupe, gaps, held
// messages, sync runs, rooms, and a seeded randomized simulation of live
// frames, sync pages, duplicates, reorderings and reconnects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_AHEAD, offer, SyncState, Verdict } from '../sync-state.js';

const G = 'g:1';
const R = 'r:7';
const msg = (conv, id) => ({ conv, id, from: 2, cmid: `c${id}`, body: `m${id}`, ts: 0 });

/** Feeds a message the way the client does; returns the ids the app got. */
function feed(s, m, app) {
  offer(s, m, (x) => app.push(x.id));
}

test('the next one is delivered, duplicates dropped, gaps detected', () => {
  const s = new SyncState({ [G]: 3 });
  assert.equal(s.classify(G, 3), Verdict.DUPLICATE);
  assert.equal(s.classify(G, 1), Verdict.DUPLICATE);
  assert.equal(s.classify(G, 5), Verdict.GAP);
  assert.equal(s.classify(G, 4), Verdict.DELIVER);
  s.delivered(G, 4);
  assert.equal(s.cursor(G), 4);
  assert.equal(s.classify(G, 4), Verdict.DUPLICATE, 'the same message again');
  // Unknown groups and direct chats start at 0.
  assert.equal(s.classify('g:2', 2), Verdict.GAP);
  assert.equal(s.classify('g:2', 1), Verdict.DELIVER);
  assert.equal(s.classify('d:1:2', 1), Verdict.DELIVER);
});

test('a room starts at the first message seen, then is strict and named in syncs', () => {
  const s = new SyncState();
  assert.equal(s.classify(R, 4051), Verdict.DELIVER);
  s.delivered(R, 4051);
  assert.equal(s.classify(R, 4053), Verdict.GAP);
  s.connected();
  assert.equal(s.nextSync(1).cursors[R], 4051, 'named in later syncs');
});

test('live and sync overlap deliver each message once, in order', () => {
  // Cursor 2; messages 3..6 exist. Live 4 arrives before the page (held),
  // live 5 in the middle of it, the page brings 3..6.
  const s = new SyncState({ [G]: 2 });
  const app = [];
  s.connected();
  const f = s.nextSync(1);
  assert.deepEqual(f, { type: 'sync', rid: 1, cursors: { [G]: 2 } });
  feed(s, msg(G, 4), app);
  assert.deepEqual(app, [], 'held behind the gap');
  assert.equal(s.heldCount(), 1);
  feed(s, msg(G, 3), app);
  assert.deepEqual(app, [3, 4], 'the gap filled: the held one follows at once');
  for (const id of [4, 5, 5, 6]) feed(s, msg(G, id), app);
  assert.equal(s.pageDone(1, false), true, 'caught up, no resync needed');
  assert.deepEqual(app, [3, 4, 5, 6]);
  assert.equal(s.nextSync(2), null, 'nothing wanted');
});

test('a gap the sync did not fill asks for another sync with advanced cursors', () => {
  const s = new SyncState({ [G]: 2 });
  const app = [];
  s.connected();
  const { rid } = s.nextSync(1);
  feed(s, msg(G, 3), app);
  feed(s, msg(G, 6), app); // stored after the page was made: 4, 5 missing
  assert.equal(s.pageDone(rid, false), false, 'a gap is still open');
  const again = s.nextSync(2);
  assert.equal(again.cursors[G], 3, 'the next sync uses the advanced cursors');
  for (const id of [4, 5, 6]) feed(s, msg(G, id), app);
  assert.equal(s.pageDone(2, false), true);
  assert.deepEqual(app, [3, 4, 5, 6], '6 was held and delivered once, after 5');
  // Outside a sync, a gap asks for one right away.
  feed(s, msg(G, 8), app);
  assert.notEqual(s.nextSync(3), null);
});

test('a gap the sync no longer gives ends the sync instead of looping', () => {
  // Message 2 of a group came ahead of 1, then the user was removed from
  // the group: syncs no longer give it and 1 never comes. (Found by the
  // Rust client's property tests; the same rule here.)
  const s = new SyncState({ [G]: 0 });
  const app = [];
  s.connected();
  feed(s, msg(G, 2), app);
  const { rid } = s.nextSync(1);
  assert.equal(s.pageDone(rid, false), true, 'held since before the sync, which did not fill the gap: dropped');
  assert.equal(s.nextSync(2), null, 'no sync loop');
  assert.equal(s.cursor(G), 0, 'nothing was skipped');
  feed(s, msg(G, 2), app);
  feed(s, msg(G, 1), app);
  assert.deepEqual(app, [1, 2]);
});

test('pages continue while has_more, one at a time; stale pages are ignored; failures pause', () => {
  const s = new SyncState();
  s.connected();
  const { rid } = s.nextSync(10, 50);
  assert.equal(s.nextSync(11), null, 'one sync in flight at a time');
  assert.equal(s.pageDone(99, false), false, 'not our page');
  assert.equal(s.pageDone(rid, true), false);
  assert.equal(s.nextSync(12, 50).limit, 50);
  s.disconnected();
  assert.equal(s.pageDone(12, false), false, 'a page of a dead connection');
  s.connected();
  const f = s.nextSync(13);
  s.syncFailed(f.rid);
  assert.equal(s.nextSync(14), null, 'paused after an error');
  s.retrySync();
  assert.notEqual(s.nextSync(15), null);
});

test('a reconnect forgets held messages (the sync brings them) and asks for a sync', () => {
  const s = new SyncState({ [G]: 1 });
  const app = [];
  feed(s, msg(G, 5), app);
  assert.equal(s.heldCount(), 1);
  s.connected();
  assert.equal(s.heldCount(), 0);
  assert.notEqual(s.nextSync(1), null);
  for (const id of [2, 3, 4, 5]) feed(s, msg(G, id), app);
  assert.deepEqual(app, [2, 3, 4, 5]);
});

test('held messages are bounded; beyond MAX_AHEAD they are dropped and fetched by sync', () => {
  const s = new SyncState({ [G]: 0 });
  const app = [];
  for (let id = 2; id <= MAX_AHEAD + 11; id++) feed(s, msg(G, id), app);
  assert.equal(s.heldCount(), MAX_AHEAD);
  feed(s, msg(G, 1), app);
  assert.equal(app.length, MAX_AHEAD + 1, 'the held run is delivered');
  assert.deepEqual(app.slice(0, 3), [1, 2, 3]);
  assert.equal(s.cursor(G), MAX_AHEAD + 1);
  assert.equal(s.heldCount(), 0);
});

test('cursors loaded from a store are validated', () => {
  const s = new SyncState({ [G]: 4, 'g:2': -1, 'g:3': 'x', 'g:4': 1.5 });
  assert.deepEqual(s.cursors(), { [G]: 4 });
});

// ---------------------------------------------------------------- property

/** A small seeded PRNG (mulberry32) so the randomized test is reproducible. */
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

/**
 * One simulated run: a server with three conversations, a client SyncState,
 * and a network that delays, reorders, duplicates and drops live frames,
 * and loses everything in transit at a disconnect. Returns what the app got.
 */
function simulate(seed, steps) {
  const rand = prng(seed);
  const pick = (arr) => arr[Math.floor(rand() * arr.length)];
  const convs = ['d:1:2', 'g:5', 'r:9'];
  const logs = Object.fromEntries(convs.map((c) => [c, []]));
  const s = new SyncState(seed % 3 === 0 ? { 'g:5': 0 } : {});
  const app = Object.fromEntries(convs.map((c) => [c, []]));
  let transit = []; // frames on their way to the client, any order
  let connected = false;
  let rid = 0;
  let caughtUp = false;
  const limit = 1 + Math.floor(rand() * 4);

  const deliver = (m) => {
    const got = app[m.conv];
    // Exactly once, in order: each delivery is the next id (rooms: from the first seen).
    if (got.length > 0) assert.equal(m.id, got.at(-1) + 1, `seed ${seed}: ${m.conv} #${m.id} after #${got.at(-1)}`);
    else if (m.conv[0] !== 'r') assert.equal(m.id, 1, `seed ${seed}: ${m.conv} starts at 1`);
    assert.deepEqual(m, logs[m.conv][m.id - 1], 'the stored message itself');
    got.push(m.id);
  };
  const page = (cursors) => {
    // As the server makes it: d/g always, rooms only when named; by conv, then id.
    const messages = [];
    let hasMore = false;
    for (const c of convs) {
      if (c[0] === 'r' && !(c in cursors)) continue;
      for (const m of logs[c]) {
        if (m.id <= (cursors[c] ?? 0)) continue;
        if (messages.length < limit) messages.push(m);
        else hasMore = true;
      }
    }
    return { kind: 'page', messages, hasMore };
  };
  const pumpSync = () => {
    if (!connected) return;
    const f = s.nextSync(++rid, limit);
    if (f) transit.push({ ...page(f.cursors), rid: f.rid });
  };
  const arrive = (i) => {
    const [fr] = transit.splice(i, 1);
    if (fr.kind === 'live') offer(s, fr.m, deliver);
    else if (s.isSync(fr.rid)) {
      // As the client does: only the page of the sync in flight counts.
      for (const m of fr.messages) offer(s, m, deliver);
      caughtUp = s.pageDone(fr.rid, fr.hasMore);
    }
  };

  for (let step = 0; step < steps; step++) {
    const r = rand();
    if (r < 0.35) {
      const conv = pick(convs);
      const m = { conv, id: logs[conv].length + 1, from: 1 + Math.floor(rand() * 3), cmid: `s${seed}-${step}`, body: `b${step}`, ts: step };
      logs[conv].push(m);
      if (connected && rand() < 0.8) {
        transit.push({ kind: 'live', m });
        if (rand() < 0.15) transit.push({ kind: 'live', m }); // a duplicate
      }
    } else if (r < 0.85) {
      if (transit.length > 0) arrive(Math.floor(rand() * transit.length)); // any order
    } else if (r < 0.93) {
      if (connected) {
        transit = []; // lost with the connection
        s.disconnected();
        connected = false;
      }
    } else if (!connected) {
      s.connected();
      connected = true;
    }
    pumpSync();
  }
  // Settle with one more reconnect (a live message that was dropped with no
  // later one in its conversation is only noticed by the next connection's
  // sync, as in the protocol): frames in flight still arrive, in random
  // order, interleaved with the new connection's pages, until caught up.
  s.disconnected();
  s.connected();
  connected = true;
  caughtUp = false;
  pumpSync();
  for (let i = 0; i < 10_000 && (transit.length > 0 || !caughtUp); i++) {
    if (transit.length === 0) {
      pumpSync();
      if (transit.length === 0) break;
    }
    arrive(Math.floor(rand() * transit.length));
    pumpSync();
  }
  return { app, logs, s, caughtUp, transit };
}

test('randomized: any interleaving of live frames, pages, duplicates, gaps and reconnects yields each message once, in order', () => {
  let totalDelivered = 0;
  let gapsSeen = 0;
  for (let seed = 1; seed <= 300; seed++) {
    const { app, logs, s, caughtUp, transit } = simulate(seed, 250);
    assert.equal(transit.length, 0, `seed ${seed}: settled`);
    assert.ok(caughtUp, `seed ${seed}: caught up`);
    for (const conv of ['d:1:2', 'g:5']) {
      const want = logs[conv].map((m) => m.id);
      assert.deepEqual(app[conv], want, `seed ${seed}: ${conv} complete and in order`);
      assert.equal(s.cursor(conv), want.length);
    }
    // A room starts at the first message seen, then is complete to its head.
    const room = app['r:9'];
    if (room.length > 0) {
      const head = logs['r:9'].length;
      assert.deepEqual(room, Array.from({ length: head - room[0] + 1 }, (_, i) => room[0] + i), `seed ${seed}: room`);
      if (room[0] > 1) gapsSeen += 1;
    }
    totalDelivered += app['d:1:2'].length + app['g:5'].length + room.length;
  }
  assert.ok(totalDelivered > 10_000, `the simulation exercised enough messages (${totalDelivered})`);
  assert.ok(gapsSeen > 0, 'some rooms started after their first message');
});
