// support.js — what the browser tests share: the HTTP API, a signed-in
// page that collects every error it shows, reading the message list and
// the connection line of a page, a loopback TCP proxy whose connections can
// be cut (a network outage for one browser context), and the optional
// screenshot. Not a test file itself (node --test runs *.test.js here).

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { dirname, resolve } from 'node:path';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** The longest any single wait of the browser tests lasts. */
export const WAIT_MS = 15_000;
/** The page size of every browser context (also the screenshot's size). */
export const VIEWPORT = { width: 1100, height: 700 };
export const PASSWORD = 'password-123';

/** One HTTP API call; fails the test on a non-2xx answer. */
export async function api(base, method, path, body, token) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Registers `users`, makes a group `name` owned by the first with the others in it; returns {tokens, group}. */
export async function groupOf(base, name, users) {
  for (const u of users) await api(base, 'POST', '/api/v1/register', { username: u, password: PASSWORD });
  const tokens = {};
  for (const u of users) tokens[u] = (await api(base, 'POST', '/api/v1/login', { username: u, password: PASSWORD })).token;
  const members = [];
  for (const u of users.slice(1)) members.push((await api(base, 'GET', `/api/v1/users/by-name/${u}`, null, tokens[users[0]])).id);
  const group = await api(base, 'POST', '/api/v1/groups', { name, members }, tokens[users[0]]);
  return { tokens, group };
}

/** The bodies of a conversation's stored messages, oldest first (every page). */
export async function storedBodies(base, conv, token) {
  const all = [];
  let before;
  for (let i = 0; i < 100; i++) {
    const q = new URLSearchParams({ limit: '100', ...(before ? { before: String(before) } : {}) });
    const page = await api(base, 'GET', `/api/v1/conversations/${conv}/messages?${q}`, null, token);
    const msgs = page.messages ?? [];
    all.unshift(...msgs);
    if (!page.has_more || msgs.length === 0) break;
    before = msgs[0].id;
  }
  return all.map((m) => m.body);
}

/**
 * Console errors a network outage makes the browser print by itself (a
 * refused or cut connection); `expectOutage` lets them pass. Script
 * errors, CSP violations and HTTP errors fail every test.
 */
const OUTAGE_NOISE = /^Failed to load resource: net::ERR_[A-Z_]+$|^WebSocket connection to '[^']*' failed/;

/**
 * A new browser context signed in as `username` through the form, on
 * `base` (the server, or a proxy in front of it). Returns {context, page,
 * problems}: problems collects page errors, console errors and HTTP errors.
 */
export async function signIn(browser, base, username, { expectOutage = false } = {}) {
  const context = await browser.newContext({ viewport: VIEWPORT });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (expectOutage && OUTAGE_NOISE.test(m.text())) return;
    problems.push(`console error: ${m.text()}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${new URL(r.url()).pathname}`);
  });
  await page.goto(`${base}/`);
  await page.locator('#auth-form input[name=username]').fill(username);
  await page.locator('#auth-form input[name=password]').fill(PASSWORD);
  await page.locator('#auth-submit').click();
  await page.locator('#app').waitFor({ state: 'visible' });
  return { context, page, problems };
}

/** Opens the conversation titled `title` from the sidebar and waits until its history is loaded. */
export async function openConv(page, title) {
  await page.locator('#conv-list .conv-title', { hasText: title }).first().click();
  try {
    await page.locator('#conv-title', { hasText: title }).waitFor();
  } catch (e) {
    const state = await page.evaluate(() => ({
      list: document.querySelector('#conv-list')?.innerText,
      title: document.querySelector('#conv-title')?.innerText,
      paneHidden: document.querySelector('#pane-conv')?.hidden,
      hash: location.hash,
      conn: document.querySelector('#conn')?.innerText,
    }));
    throw new Error(`opening ${title}: ${JSON.stringify(state)}: ${e.message}`);
  }
  await page.waitForFunction(() => {
    const note = document.querySelector('#msg-list .pane-note');
    return !note || note.textContent !== 'Loading messages…';
  });
}

/** Types `text` into the composer and sends it with Enter. */
export async function send(page, text) {
  await page.locator('#composer-input').fill(text);
  await page.locator('#composer-input').press('Enter');
}

/** The text of every stored message the page shows, top to bottom (pending sends excluded). */
export function shownTexts(page) {
  return page.locator('#msg-list .msg-group:not(.pending) .bubble .text').allTextContents();
}

/** The ids of the message rows the page shows (`msg-<id>`), top to bottom. */
export function shownIds(page) {
  return page.locator('#msg-list .bubble[id^="msg-"]').evaluateAll((els) => els.map((e) => e.id));
}

/** Waits until the page shows exactly `texts` (and no pending send), then checks the rows are distinct. */
export async function waitForTexts(page, texts, who = 'page') {
  const deadline = Date.now() + WAIT_MS;
  let shown;
  for (;;) {
    shown = await shownTexts(page);
    const pending = await page.locator('#msg-list .msg-group.pending').count();
    if (pending === 0 && shown.length === texts.length && shown.every((t, i) => t === texts[i])) break;
    if (Date.now() > deadline) break;
    await page.waitForTimeout(100);
  }
  assert.deepEqual(shown, texts, `the messages ${who} shows`);
  const ids = await shownIds(page);
  assert.equal(new Set(ids).size, ids.length, `${who}: no message row twice`);
  assert.equal(ids.length, texts.length, `${who}: one row per message`);
}

/** The connection line of the sidebar: {state: its conn-… class, text}. */
export async function connLine(page) {
  return page.locator('#conn').evaluate((el) => ({
    state: [...el.classList].find((c) => c.startsWith('conn-'))?.slice(5) ?? '',
    text: el.querySelector('.conn-text')?.textContent ?? '',
  }));
}

/** Waits until the connection line's state matches `states` (an array); returns the line. */
export async function waitForConn(page, states, who = 'page', waitMs = WAIT_MS) {
  try {
    await page.waitForFunction(
      (wanted) => wanted.some((s) => document.querySelector('#conn')?.classList.contains(`conn-${s}`)),
      states,
      { timeout: waitMs },
    );
  } catch (e) {
    const line = await connLine(page);
    throw new Error(`${who}: connection line ${JSON.stringify(line)}, wanted ${states.join(' or ')}: ${e.message}`);
  }
  return connLine(page);
}

/**
 * A loopback TCP proxy to `127.0.0.1:targetPort`, for one browser context:
 * the page is opened through it, so its HTTP and (the dispatcher answering
 * with the Host it was asked on) its WebSocket go through it too.
 * `offline()` is a network outage: every open connection is reset on the
 * browser's side while the server's side is left open and unanswered (the
 * server learns nothing, as when a network goes away: what it pushes meanwhile
 * is lost on the way), and new connections are refused until `online()`.
 * Playwright's `context.setOffline` alone would leave an open WebSocket
 * working (microsoft/playwright#4910).
 */
export async function cuttableProxy(targetPort) {
  const pairs = new Set();
  const dead = new Set(); // server sides left hanging by an outage
  let up = true;
  const server = createServer((client) => {
    client.on('error', () => {});
    if (!up) {
      client.resetAndDestroy();
      return;
    }
    const upstream = createConnection({ host: '127.0.0.1', port: targetPort });
    upstream.on('error', () => {});
    const pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      if (!pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', res);
  });
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    offline() {
      up = false;
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        pair.client.unpipe(pair.upstream);
        pair.upstream.unpipe(pair.client);
        pair.upstream.resume(); // read and drop what the server still sends
        dead.add(pair.upstream);
        pair.client.resetAndDestroy();
      }
    },
    online() {
      up = true;
    },
    async close() {
      up = false;
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      for (const s of dead) s.destroy();
      await new Promise((res) => server.close(() => res()));
    },
  };
}

/**
 * The screenshot for the documentation: written only when IM_SCREENSHOT
 * names a file (relative to the repository root), e.g.
 * IM_SCREENSHOT=docs/images/web-chat.png, so that test runs leave the
 * working tree alone. Returns the file written, or null.
 */
export async function screenshotIfAsked(page) {
  const target = process.env.IM_SCREENSHOT;
  if (!target) return null;
  const file = resolve(new URL('../../', import.meta.url).pathname, target);
  await mkdir(dirname(file), { recursive: true });
  await page.screenshot({ path: file, animations: 'disabled', caret: 'hide', timeout: WAIT_MS });
  return file;
}

/** Resolves with `p`, or fails after `ms` saying what did not happen. */
export function within(ms, p, what) {
  let timer;
  const late = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Kills the server process at once (SIGKILL: no shutdown, as in a crash) and waits for it to be gone. */
export async function crash(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await within(WAIT_MS, exited, 'im-server exiting after SIGKILL');
}

/** Stops the server process gracefully (SIGTERM), killing it if that takes longer than `ms`. */
export async function stop(child, ms = 10_000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  try {
    await within(ms, exited, 'im-server stopping after SIGTERM');
  } catch {
    await crash(child);
  }
}
