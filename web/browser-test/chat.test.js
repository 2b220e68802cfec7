// chat.test.js — the web chat in a real browser: Debian's chromium, driven
// by playwright-core, against a real im-server process on loopback. Two
// users sign in through the page, open their group and exchange messages
// live; the page must run under its Content-Security-Policy without a
// single violation or script error. The server binary comes from
// IM_SERVER_BIN; the browser from CHROMIUM (default /usr/bin/chromium).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

import { freePort, startServer, stopServer } from '../../im-client-js/test-support/im-server.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT_MS = 15_000;

async function api(base, method, path, body, token) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A browser page signed in as `username`, collecting every error it shows. */
async function signIn(browser, base, username) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${new URL(r.url()).pathname}`);
  });
  await page.goto(`${base}/`);
  await page.locator('#auth-form input[name=username]').fill(username);
  await page.locator('#auth-form input[name=password]').fill('password-123');
  await page.locator('#auth-submit').click();
  await page.locator('#app').waitFor({ state: 'visible', timeout: WAIT_MS });
  return { page, problems };
}

test('two people chat through the web page in a real browser', { timeout: 90_000 }, async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = await startServer(port, ['--memory']);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    for (const u of ['alice', 'bob']) await api(base, 'POST', '/api/v1/register', { username: u, password: 'password-123' });
    const login = await api(base, 'POST', '/api/v1/login', { username: 'alice', password: 'password-123' });
    const bobId = (await api(base, 'GET', '/api/v1/users/by-name/bob', null, login.token)).id;
    await api(base, 'POST', '/api/v1/groups', { name: 'team', members: [bobId] }, login.token);

    const alice = await signIn(browser, base, 'alice');
    const bob = await signIn(browser, base, 'bob');
    for (const { page } of [alice, bob]) {
      await page.locator('#conv-list').getByText('team').first().click({ timeout: WAIT_MS });
    }
    await alice.page.locator('#composer-input').fill('Hello from the browser');
    await alice.page.locator('#composer-input').press('Enter');
    await bob.page.locator('#msg-list').getByText('Hello from the browser').waitFor({ timeout: WAIT_MS });
    await bob.page.locator('#composer-input').fill('Hi Alice!');
    await bob.page.locator('#send-btn').click();
    await alice.page.locator('#msg-list').getByText('Hi Alice!').waitFor({ timeout: WAIT_MS });

    // Stored, in order, as both pages showed.
    const history = await api(base, 'GET', `/api/v1/conversations/g:1/messages`, null, login.token);
    assert.deepEqual(
      history.messages.map((m) => m.body),
      ['Hello from the browser', 'Hi Alice!'],
    );
    // User text is text: markup in a body is shown, not run.
    await alice.page.locator('#composer-input').fill('<img src=x onerror=alert(1)>');
    await alice.page.locator('#composer-input').press('Enter');
    await bob.page.locator('#msg-list').getByText('<img src=x onerror=alert(1)>').waitFor({ timeout: WAIT_MS });
    assert.equal(await bob.page.locator('#msg-list img[src="x"]').count(), 0);

    for (const { problems } of [alice, bob]) assert.deepEqual(problems, [], 'no CSP violation or script error');
  } finally {
    await browser.close();
    await stopServer(server);
  }
});
