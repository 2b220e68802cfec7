// chat.test.js — the web chat in a real browser: Debian's chromium, driven
// by playwright-core, against a real im-server process on loopback. Two
// users sign in through the page, open their group and exchange messages
// live; the page must run under its Content-Security-Policy without a
// single violation or script error. The server binary comes from
// IM_SERVER_BIN; the browser from CHROMIUM (default /usr/bin/chromium).
// With IM_SCREENSHOT=docs/images/web-chat.png the conversation is also
// saved as the documentation's screenshot (support.js).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

import { freePort, startServer } from '../../im-client-js/test-support/im-server.js';
import {
  api, CHROMIUM, groupOf, openConv, screenshotIfAsked, send, signIn, stop, storedBodies, waitForTexts, WAIT_MS, within,
} from './support.js';

test('two people chat through the web page in a real browser', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let server;
  let browser;
  try {
    server = await startServer(port, ['--memory']);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: WAIT_MS });
    const { tokens, group } = await groupOf(base, 'Weekend trip', ['alice', 'bob']);
    const conv = `g:${group.id}`;
    await api(base, 'POST', '/api/v1/rooms', { name: 'General' }, tokens.alice); // a second entry in alice's sidebar

    const alice = await signIn(browser, base, 'alice');
    const bob = await signIn(browser, base, 'bob');
    // The list is redrawn on every change (here forced by a visibilitychange):
    // a click pressed across a redraw still opens the conversation, and the
    // keyboard focus stays on its row.
    await alice.page.locator('#conn.conn-connected').waitFor();
    const row = alice.page.locator('#conv-list .conv-btn', { hasText: 'Weekend trip' });
    const box = await row.boundingBox();
    await alice.page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await alice.page.mouse.down();
    await alice.page.evaluate(() => new Promise((done) => {
      document.dispatchEvent(new Event('visibilitychange'));
      requestAnimationFrame(() => requestAnimationFrame(done));
    }));
    await alice.page.mouse.up();
    await alice.page.locator('#conv-title', { hasText: 'Weekend trip' }).waitFor();
    await row.focus();
    await alice.page.evaluate(() => new Promise((done) => {
      document.dispatchEvent(new Event('visibilitychange'));
      requestAnimationFrame(() => requestAnimationFrame(done));
    }));
    assert.equal(await row.evaluate((el) => el === document.activeElement), true, 'the focus stays on the row');
    for (const { page } of [alice, bob]) await openConv(page, 'Weekend trip');

    // Both ways, Enter and the send button, one message of two lines
    // (Shift+Enter); each page shows the whole conversation, in order.
    const said = [];
    await send(alice.page, 'Hi Bob! Are we still on for Saturday?');
    said.push('Hi Bob! Are we still on for Saturday?');
    await waitForTexts(bob.page, said, 'bob');
    await bob.page.locator('#composer-input').fill('Yes! I booked the campsite by the lake 🏕️');
    await bob.page.locator('#send-btn').click();
    said.push('Yes! I booked the campsite by the lake 🏕️');
    await send(bob.page, 'Can you bring the tent?');
    said.push('Can you bring the tent?');
    await waitForTexts(alice.page, said, 'alice');
    const input = alice.page.locator('#composer-input');
    await input.fill('Sure, and the stove.');
    await input.press('Shift+Enter');
    await input.pressSequentially('Train at 8:15 — see you at the station!');
    assert.equal(await input.inputValue(), 'Sure, and the stove.\nTrain at 8:15 — see you at the station!');
    await input.press('Enter');
    said.push('Sure, and the stove.\nTrain at 8:15 — see you at the station!');
    await waitForTexts(bob.page, said, 'bob');
    await waitForTexts(alice.page, said, 'alice');

    // Stored, in order, as both pages showed.
    assert.deepEqual(await storedBodies(base, conv, tokens.alice), said);

    // Bob types without sending: alice sees it (and that is the screenshot).
    await bob.page.locator('#composer-input').pressSequentially('Perfect, see y');
    await alice.page.locator('#typing', { hasText: 'bob is typing…' }).waitFor();
    await screenshotIfAsked(alice.page);
    await bob.page.locator('#composer-input').fill('');

    // User text is text: markup in a body is shown, not run.
    await send(alice.page, '<img src=x onerror=alert(1)>');
    said.push('<img src=x onerror=alert(1)>');
    await waitForTexts(bob.page, said, 'bob');
    assert.equal(await bob.page.locator('#msg-list img[src="x"]').count(), 0);

    for (const { problems } of [alice, bob]) assert.deepEqual(problems, [], 'no CSP violation or script error');
  } finally {
    await within(WAIT_MS, browser?.close(), 'closing the browser').catch(() => {});
    await stop(server);
  }
});
