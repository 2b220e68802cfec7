// offline.test.js — the web chat across outages, in a real browser (see
// chat.test.js): two users chat in a group; then
//
// * the server process dies (SIGKILL) and comes back on the same port with
//   the same data directory (embedded store): both pages show that they
//   are reconnecting, get back by themselves (no reload), and every message
//   is there exactly once, in order — the ones acknowledged before the
//   crash, one in flight at the crash, one written while the server was
//   down and one after;
// * one user's network goes away (`context.setOffline` plus a loopback
//   proxy that cuts that page's connections, since offline emulation leaves
//   an open WebSocket alone): the page says it is offline, the other user
//   sends 20 messages, and once the network is back the page reconnects
//   within 5 s — its `online` event cuts short a backoff wait that had
//   grown longer than that — and shows all 20 exactly once, in order, as
//   the server's history has them.
//
// The list of message texts each page shows is compared as a whole, and no
// message id may have two rows.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

import { freePort, startServer } from '../../im-client-js/test-support/im-server.js';
import {
  CHROMIUM, connLine, crash, cuttableProxy, groupOf, openConv, send, shownTexts, signIn, stop, storedBodies, waitForConn,
  waitForTexts, WAIT_MS, within,
} from './support.js';

/** How long a page may take to get back by itself: the client's backoff grows to 30 s between attempts. */
const RECOVER_MS = 40_000;
/**
 * How long a page may take to get back once the browser says the network is
 * back: its `online` event cuts the client's backoff wait short
 * (reconnectNow), so it need not wait out a delay of up to 30 s.
 */
const ONLINE_MS = 5_000;

const launch = () => chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: WAIT_MS });

/** Marks the page's window, to tell later that it was not reloaded. */
const mark = (page) => page.evaluate(() => {
  window.imTestMark = 'not reloaded';
});
const marked = (page) => page.evaluate(() => window.imTestMark);

/**
 * The page's connection state, from ui/store.js (a dynamic import of the
 * module the page loaded gives that same instance): `waitMs` is how long
 * its client still waits before the next attempt, while reconnecting.
 */
const connState = (page) => page.evaluate(async () => {
  const { S } = await import('/ui/store.js');
  return { state: S.conn.state, waitMs: S.conn.state === 'reconnecting' ? S.conn.until - Date.now() : 0 };
});

/** The status lines of the page's pending sends. */
const pendingStatus = (page) => page.locator('#msg-list .msg-group.pending .send-status').allTextContents();

test('the server is killed and restarted: both pages get back by themselves, every message once, in order', { timeout: 120_000 }, async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dataDir = await mkdtemp(join(tmpdir(), 'im-web-restart-'));
  const storage = ['--data-dir', dataDir]; // the embedded store: what was acknowledged must survive
  let server;
  let browser;
  try {
    server = await startServer(port, storage);
    browser = await launch();
    const { tokens, group } = await groupOf(base, 'team', ['alice', 'bob']);
    const conv = `g:${group.id}`;
    const alice = await signIn(browser, base, 'alice', { expectOutage: true });
    const bob = await signIn(browser, base, 'bob', { expectOutage: true });
    for (const { page } of [alice, bob]) await openConv(page, 'team');

    // Acknowledged before the crash (no pending send left on either page).
    const before = ['Is the server up?', 'Yes, all fine here.', 'Then let me restart it…'];
    await send(alice.page, before[0]);
    await waitForTexts(bob.page, before.slice(0, 1), 'bob');
    await send(bob.page, before[1]);
    await waitForTexts(alice.page, before.slice(0, 2), 'alice');
    await send(alice.page, before[2]);
    await waitForTexts(alice.page, before, 'alice');
    await waitForTexts(bob.page, before, 'bob');
    for (const { page } of [alice, bob]) await mark(page);

    // One send in flight at the crash: stored or not, the client resends it
    // with the same cmid, so it shows exactly once either way.
    const inFlight = 'Sent as the server dies';
    await send(alice.page, inFlight);
    await crash(server);

    for (const [who, { page }] of [['alice', alice], ['bob', bob]]) {
      const line = await waitForConn(page, ['reconnecting', 'connecting'], who);
      assert.match(line.text, /^(reconnecting in \d+ s|connecting…)$/, `${who}'s connection line while the server is down`);
    }
    const whileDown = 'Written while the server is down';
    await send(bob.page, whileDown);
    await bob.page.locator('#msg-list .msg-group.pending', { hasText: whileDown }).waitFor();
    assert.deepEqual(await pendingStatus(bob.page), ['Waiting for connection…'], 'bob: the send waits');
    const line = await connLine(bob.page);
    assert.notEqual(line.state, 'connected', 'bob: not connected while the server is down');

    server = await startServer(port, storage);
    for (const [who, { page }] of [['alice', alice], ['bob', bob]]) {
      const back = await waitForConn(page, ['connected'], who, RECOVER_MS);
      assert.equal(back.text, 'connected', `${who}'s connection line once back`);
      await page.locator('#msg-list .msg-group.pending').waitFor({ state: 'detached' });
      assert.equal(await marked(page), 'not reloaded', `${who}'s page got back by itself`);
    }
    const after = 'Back again!';
    await send(alice.page, after);

    // The server's history after the restart: what was acknowledged before
    // the crash first and in order, each later message once, `after` last
    // (the order of the two resent ones is whichever page reconnected first).
    await alice.page.locator('#msg-list .msg-group:not(.pending) .bubble', { hasText: after }).waitFor();
    const stored = await storedBodies(base, conv, tokens.bob);
    assert.deepEqual(stored.slice(0, before.length), before, 'acknowledged before the crash: stored, in order');
    assert.deepEqual([...stored].sort(), [...before, inFlight, whileDown, after].sort(), 'every message stored exactly once');
    assert.equal(stored.at(-1), after);
    await waitForTexts(alice.page, stored, 'alice');
    await waitForTexts(bob.page, stored, 'bob');

    for (const { problems } of [alice, bob]) assert.deepEqual(problems, [], 'no script error, CSP violation or HTTP error');
  } finally {
    await within(WAIT_MS, browser?.close(), 'closing the browser').catch(() => {});
    await stop(server);
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('one page goes offline: 20 messages sent meanwhile show once, in order, when it is back', { timeout: 120_000 }, async () => {
  const N = 20;
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let server;
  let browser;
  let proxy;
  try {
    server = await startServer(port, ['--memory']);
    browser = await launch();
    proxy = await cuttableProxy(port);
    const { tokens, group } = await groupOf(base, 'team', ['alice', 'bob']);
    const conv = `g:${group.id}`;
    const alice = await signIn(browser, base, 'alice');
    const bob = await signIn(browser, proxy.base, 'bob', { expectOutage: true }); // bob's network: the proxy
    for (const { page } of [alice, bob]) await openConv(page, 'team');

    const said = ['Are you there?', 'Yes, but my train goes into a tunnel soon.'];
    await send(alice.page, said[0]);
    await waitForTexts(bob.page, said.slice(0, 1), 'bob');
    await send(bob.page, said[1]);
    await waitForTexts(alice.page, said, 'alice');
    await waitForTexts(bob.page, said, 'bob');
    await mark(bob.page);

    // Bob's network goes away.
    await bob.context.setOffline(true);
    proxy.offline();
    const off = await waitForConn(bob.page, ['offline'], 'bob');
    assert.equal(off.text, 'offline — waiting for network');

    for (let i = 1; i <= N; i++) {
      const text = `Message ${i} of ${N} while you are away`;
      await send(alice.page, text);
      said.push(text);
    }
    await waitForTexts(alice.page, said, 'alice'); // all acknowledged
    const whileAway = 'I am back in a minute.';
    await send(bob.page, whileAway);
    await bob.page.locator('#msg-list .msg-group.pending', { hasText: whileAway }).waitFor();
    assert.deepEqual(await pendingStatus(bob.page), ['Waiting for connection…'], 'bob: the send waits');
    assert.deepEqual(await shownTexts(bob.page), said.slice(0, 2), 'bob: nothing came in while offline');
    assert.equal((await connLine(bob.page)).state, 'offline', 'bob: still offline');
    said.push(whileAway);

    // Offline until bob's client waits longer than ONLINE_MS before its next
    // attempt (its backoff doubling from 0.5 s: about 8 s in), so that
    // getting back within ONLINE_MS shows the wait was cut short.
    const longWait = ONLINE_MS + 1000;
    const waitUntil = Date.now() + 30_000;
    for (let st = await connState(bob.page); !(st.state === 'reconnecting' && st.waitMs > longWait); st = await connState(bob.page)) {
      assert.ok(Date.now() < waitUntil, `bob's client never waited more than ${longWait} ms: ${JSON.stringify(st)}`);
      await bob.page.waitForTimeout(100);
    }

    // Back online: the page reconnects by itself, at once (the `online`
    // event ends the backoff wait: reconnectNow), and catches up.
    const onlineAt = Date.now();
    proxy.online();
    await bob.context.setOffline(false);
    const back = await waitForConn(bob.page, ['connected'], 'bob', ONLINE_MS);
    assert.equal(back.text, 'connected');
    const took = Date.now() - onlineAt;
    assert.ok(took < ONLINE_MS, `bob reconnected ${took} ms after the network came back`);
    const stored = await storedBodies(base, conv, tokens.bob);
    assert.deepEqual(stored, said, 'the server has every message once, in order');
    await waitForTexts(bob.page, stored, 'bob');
    await waitForTexts(alice.page, stored, 'alice');
    assert.equal(await marked(bob.page), 'not reloaded', 'bob caught up without a reload');

    for (const { problems } of [alice, bob]) assert.deepEqual(problems, [], 'no script error, CSP violation or HTTP error');
  } finally {
    await within(WAIT_MS, browser?.close(), 'closing the browser').catch(() => {});
    await proxy?.close().catch(() => {});
    await stop(server);
  }
});
