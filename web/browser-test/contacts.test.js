// contacts.test.js — contacts, blocks and moderation in the web chat, in a
// real browser (see chat.test.js), two users on two pages:
//
// * alice adds bob as a contact by username in the Contacts tab; bob's
//   page shows the request live (the tab's badge, a row with Accept) and
//   he accepts; both pages show the other as a contact, online; bob's page
//   goes away and alice sees him go offline, then come back online;
// * from the contact row alice opens the direct chat; bob blocks her from
//   its header: the contact ends live on alice's page, her next message is
//   refused with a visible reason (and not stored), so is his; once he
//   unblocks, Retry delivers both;
// * in a group its owner sees Mute 10 min / Kick / Ban on the member's
//   message (the member sees none), mutes him: both pages show the notice
//   with its end time, the member's next send shows the muted error and is
//   not stored; unmuted, Retry delivers it; banned, the member's page drops
//   the group and adding him back is refused with `banned`.
//
// Every page must run without a script error, CSP violation or HTTP error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

import { freePort, startServer } from '../../im-client-js/test-support/im-server.js';
import {
  api, CHROMIUM, groupOf, openConv, PASSWORD, send, signIn, stop, storedBodies, waitForTexts, WAIT_MS, within,
} from './support.js';

const launch = () => chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: WAIT_MS });

/** Accepts the next confirm() of `page`; resolves with its text. */
function acceptNextDialog(page) {
  return within(WAIT_MS, new Promise((resolve) => {
    page.once('dialog', async (d) => {
      const text = d.message();
      await d.accept();
      resolve(text);
    });
  }), 'a confirm dialog');
}

/** The row of `user` in the Contacts tab's `section` (incoming, contacts, outgoing, blocked). */
const contactRow = (page, section, user) => page.locator(`#contacts-${section} .contact-row`, { hasText: user });

/** The message row (bubble with its actions) whose text is `text`. */
const msgRow = (page, text) => page.locator('#msg-list .msg', { has: page.locator('.text', { hasText: text }) });

/** The moderation actions a page offers on the message `text` (hovered, so they show). */
async function modTools(page, text) {
  const row = msgRow(page, text);
  await row.hover();
  return row.locator('.mod-tool').allTextContents();
}

/** Clicks the moderation action `action` (data-action) of the message `text`, waiting until it is offered. */
async function moderate(page, text, action) {
  const row = msgRow(page, text);
  const tool = row.locator(`.mod-tool[data-action="${action}"]`);
  await tool.waitFor({ state: 'attached' });
  await row.hover();
  await tool.click();
}

/** The status line of the page's (only) failed send, once it failed. */
async function failedStatus(page) {
  const status = page.locator('#msg-list .msg-group.pending .send-status.failed');
  await status.waitFor();
  return status.textContent();
}

test('contacts by username, accepted live, with presence; a block refuses direct messages until lifted', { timeout: 90_000 }, async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let server;
  let browser;
  try {
    // A short presence grace period: an offline page shows as offline within a second.
    server = await startServer(port, ['--memory', '--presence-grace-secs', '1']);
    browser = await launch();
    for (const u of ['alice', 'bob']) await api(base, 'POST', '/api/v1/register', { username: u, password: PASSWORD });
    const tokens = {};
    for (const u of ['alice', 'bob']) tokens[u] = (await api(base, 'POST', '/api/v1/login', { username: u, password: PASSWORD })).token;
    const ids = {
      alice: (await api(base, 'GET', '/api/v1/users/by-name/alice', null, tokens.bob)).id,
      bob: (await api(base, 'GET', '/api/v1/users/by-name/bob', null, tokens.alice)).id,
    };

    const alice = await signIn(browser, base, 'alice');
    let bob = await signIn(browser, base, 'bob');
    for (const { page } of [alice, bob]) await page.locator('#conn.conn-connected').waitFor();

    // alice asks bob by username.
    await alice.page.locator('#tab-contacts').click();
    assert.equal(await alice.page.locator('#chats-view').isHidden(), true, 'the Contacts tab replaces the conversation list');
    await alice.page.locator('#contacts-view .conv-empty', { hasText: 'No contacts yet' }).waitFor();
    await alice.page.locator('#contact-add-input').fill('bob');
    await alice.page.locator('#contact-add-btn').click();
    const sent = contactRow(alice.page, 'outgoing', 'bob');
    await sent.locator('.contact-sub', { hasText: 'request sent' }).waitFor();
    assert.deepEqual(await sent.locator('button').allTextContents(), ['Cancel']);
    assert.equal(await alice.page.locator('#contact-add-input').inputValue(), '', 'the field is cleared');

    // bob's page shows it live: the badge, then the request with Accept / Decline.
    await bob.page.locator('#contacts-badge', { hasText: '1' }).waitFor();
    await bob.page.locator('#tab-contacts').click();
    const request = contactRow(bob.page, 'incoming', 'alice');
    await request.locator('.contact-sub', { hasText: 'sent you a request' }).waitFor();
    assert.deepEqual(await request.locator('button').allTextContents(), ['Accept', 'Decline']);
    await request.locator('button', { hasText: 'Accept' }).click();

    // Both are contacts now, each seen online by the other.
    for (const [page, other] of [[alice.page, 'bob'], [bob.page, 'alice']]) {
      const row = contactRow(page, 'contacts', other);
      await row.locator('.contact-sub', { hasText: /^online$/ }).waitFor();
      await row.locator('.presence-dot.online').waitFor();
      assert.deepEqual(await row.locator('button').allTextContents(), ['Chat', 'Remove', 'Block']);
    }
    await alice.page.locator('#contacts-outgoing').waitFor({ state: 'hidden' });
    await bob.page.locator('#contacts-badge').waitFor({ state: 'hidden' });
    const listed = await api(base, 'GET', '/api/v1/contacts', null, tokens.alice);
    assert.deepEqual(listed.contacts.map((c) => [c.user_id, c.state]), [[ids.bob, 'accepted']]);

    // Presence live: bob's page goes away, then he is back on a new one.
    assert.deepEqual(bob.problems, [], 'bob: no script error, CSP violation or HTTP error');
    await bob.context.close();
    const bobRow = contactRow(alice.page, 'contacts', 'bob');
    await bobRow.locator('.presence-dot.offline').waitFor();
    assert.match(await bobRow.locator('.contact-sub').textContent(), /^(last seen .+|offline)$/);
    bob = await signIn(browser, base, 'bob');
    await bobRow.locator('.contact-sub', { hasText: /^online$/ }).waitFor();

    // From the contact row to the direct chat.
    await bobRow.locator('button', { hasText: 'Chat' }).click();
    await alice.page.locator('#conv-title', { hasText: 'bob' }).waitFor();
    assert.equal(await alice.page.locator('#tab-chats').getAttribute('aria-selected'), 'true', 'back to the conversation list');
    assert.equal(await alice.page.locator('#act-contact').isHidden(), true, 'no "Add contact" for a contact');
    assert.equal(await alice.page.locator('#act-block').textContent(), 'Block');
    const said = ['Hi bob, we are contacts now!'];
    await send(alice.page, said[0]);
    await waitForTexts(alice.page, said, 'alice');
    await openConv(bob.page, 'alice');
    await waitForTexts(bob.page, said, 'bob');

    // bob blocks alice from the chat's header.
    const asked = acceptNextDialog(bob.page);
    await bob.page.locator('#act-block').click();
    assert.match(await asked, /^Block alice\?/);
    await bob.page.locator('#blocked-bar', { hasText: 'You blocked alice' }).waitFor();
    await bob.page.locator('#act-block', { hasText: 'Unblock' }).waitFor();
    assert.deepEqual(await api(base, 'GET', '/api/v1/blocks', null, tokens.bob), { blocks: [ids.alice] });

    // The contact ended on alice's page, live; her chat offers "Add contact" again.
    await alice.page.locator('#act-contact', { hasText: 'Add contact' }).waitFor();
    await alice.page.locator('#tab-contacts').click();
    await alice.page.locator('#contacts-view .conv-empty', { hasText: 'No contacts yet' }).waitFor();
    assert.equal(await alice.page.locator('#contacts-contacts').isHidden(), true);
    await alice.page.locator('#tab-chats').click();

    // Her message is refused, visibly, and not stored; so is his.
    await send(alice.page, 'Are you still there?');
    assert.equal(await failedStatus(alice.page), 'Not sent — bob cannot receive your messages. Retry · Delete');
    await send(bob.page, 'Sorry, busy week.');
    assert.equal(await failedStatus(bob.page), 'Not sent — You blocked alice: unblock them to send messages. Retry · Delete');
    assert.deepEqual(await storedBodies(base, `d:${Math.min(ids.alice, ids.bob)}:${Math.max(ids.alice, ids.bob)}`, tokens.alice), said);
    assert.deepEqual(await msgRow(bob.page, 'Are you still there?').count(), 0, 'bob did not get it');

    // Unblocked: Retry delivers both, and each page shows the whole chat.
    await bob.page.locator('#blocked-unblock').click();
    await bob.page.locator('#blocked-bar').waitFor({ state: 'hidden' });
    await bob.page.locator('#act-block', { hasText: /^Block$/ }).waitFor();
    await bob.page.locator('#msg-list .send-status.failed button', { hasText: 'Retry' }).click();
    said.push('Sorry, busy week.');
    await waitForTexts(bob.page, said, 'bob');
    await alice.page.locator('#msg-list .send-status.failed button', { hasText: 'Retry' }).click();
    said.push('Are you still there?');
    await waitForTexts(alice.page, said, 'alice');
    await waitForTexts(bob.page, said, 'bob');
    assert.deepEqual(await storedBodies(base, `d:${Math.min(ids.alice, ids.bob)}:${Math.max(ids.alice, ids.bob)}`, tokens.bob), said);

    for (const { problems } of [alice, bob]) assert.deepEqual(problems, [], 'no script error, CSP violation or HTTP error');
  } finally {
    await within(WAIT_MS, browser?.close(), 'closing the browser').catch(() => {});
    await stop(server);
  }
});

test("a group's owner mutes, unmutes and bans a member from the member's message", { timeout: 90_000 }, async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let server;
  let browser;
  try {
    server = await startServer(port, ['--memory']);
    browser = await launch();
    const { tokens, group } = await groupOf(base, 'Book club', ['carol', 'dave']);
    const conv = `g:${group.id}`;
    const dave = (await api(base, 'GET', '/api/v1/users/by-name/dave', null, tokens.carol)).id;
    const carolP = await signIn(browser, base, 'carol');
    const daveP = await signIn(browser, base, 'dave');
    for (const { page } of [carolP, daveP]) await openConv(page, 'Book club');

    const said = ['Hello everyone', 'Welcome, dave'];
    await send(daveP.page, said[0]);
    await waitForTexts(carolP.page, said.slice(0, 1), 'carol');
    await send(carolP.page, said[1]);
    await waitForTexts(daveP.page, said, 'dave');
    await waitForTexts(carolP.page, said, 'carol');

    // The owner gets the actions on the member's message, not on her own; the member gets none.
    await msgRow(carolP.page, said[0]).locator('.mod-tool[data-action="mute"]').waitFor({ state: 'attached' });
    assert.deepEqual(await modTools(carolP.page, said[0]), ['Mute 10 min', 'Kick', 'Ban']);
    assert.deepEqual(await modTools(carolP.page, said[1]), [], 'carol: none on her own message');
    assert.deepEqual(await modTools(daveP.page, said[1]), [], 'dave moderates nothing');
    assert.deepEqual(await modTools(daveP.page, said[0]), []);

    // Muted for 10 minutes: the notice says until when, on both pages.
    const before = Date.now();
    await moderate(carolP.page, said[0], 'mute');
    for (const { page } of [carolP, daveP]) {
      await page.locator('#msg-list .notice', { hasText: /^carol muted dave until \S/ }).waitFor();
    }
    await msgRow(carolP.page, said[0]).locator('.mod-tool[data-action="unmute"]').waitFor({ state: 'attached' });
    assert.deepEqual(await modTools(carolP.page, said[0]), ['Unmute', 'Kick', 'Ban']);
    const { sanctions } = await api(base, 'GET', `/api/v1/conversations/${conv}/sanctions`, null, tokens.carol);
    assert.equal(sanctions.length, 1);
    assert.equal(sanctions[0].user_id, dave);
    assert.ok(sanctions[0].muted_until >= before + 10 * 60_000 - 1000 && sanctions[0].muted_until <= Date.now() + 10 * 60_000, 'muted for 10 minutes');

    // The muted member's send is refused with the muted text, and not stored
    // (the stored history has the notices too, by the server's bodies).
    const late = 'Can I still talk?';
    await send(daveP.page, late);
    assert.equal(await failedStatus(daveP.page), 'Not sent — A moderator has muted you here for now. Retry · Delete');
    assert.deepEqual(await storedBodies(base, conv, tokens.carol), [...said, 'carol muted dave']);

    // Unmuted: Retry delivers it.
    await moderate(carolP.page, said[0], 'unmute');
    for (const { page } of [carolP, daveP]) await page.locator('#msg-list .notice', { hasText: /^carol unmuted dave$/ }).waitFor();
    await daveP.page.locator('#msg-list .send-status.failed button', { hasText: 'Retry' }).click();
    said.push(late);
    await waitForTexts(daveP.page, said, 'dave');
    await waitForTexts(carolP.page, said, 'carol');
    assert.deepEqual(await storedBodies(base, conv, tokens.carol), [...said.slice(0, 2), 'carol muted dave', 'carol unmuted dave', late]);

    // Banned (after a confirm): the group leaves dave's page, and he cannot be added back.
    const asked = acceptNextDialog(carolP.page);
    await moderate(carolP.page, said[0], 'ban');
    assert.match(await asked, /^Ban dave from Book club\?/);
    await carolP.page.locator('#msg-list .notice', { hasText: /^carol banned dave$/ }).waitFor();
    await daveP.page.locator('#toasts .toast', { hasText: 'You are no longer a member of Book club.' }).waitFor();
    await daveP.page.locator('#conv-list .conv-title', { hasText: 'Book club' }).waitFor({ state: 'detached' });
    await msgRow(carolP.page, said[0]).locator('.mod-tool[data-action="unban"]').waitFor({ state: 'attached' });
    assert.deepEqual(await modTools(carolP.page, said[0]), ['Mute 10 min', 'Unban'], 'no Kick for a non-member');
    const add = await fetch(`${base}/api/v1/groups/${group.id}/members`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens.carol}` },
      body: JSON.stringify({ user_id: dave }),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    assert.equal(add.status, 403);
    assert.equal((await add.json()).code, 'banned');

    for (const { problems } of [carolP, daveP]) assert.deepEqual(problems, [], 'no script error, CSP violation or HTTP error');
  } finally {
    await within(WAIT_MS, browser?.close(), 'closing the browser').catch(() => {});
    await stop(server);
  }
});
