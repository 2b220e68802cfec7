// files.test.js — attachments in the web chat, in a real browser (Debian's
// chromium driven by playwright-core) against a real im-server process on
// loopback. Alice attaches a PNG and a text file with the paperclip (the
// uploads are held back until her page shows them pending with progress
// bars, then finish in reverse order: the messages keep the order picked)
// and drops another text file on the conversation; Bob's page shows the image inline (it
// loads: naturalWidth > 0) and the text file as a download link with name
// and size; a file over the server's limit is refused before any byte is
// sent. Media by URL show the same way. No CSP violation, console error or HTTP error on either page.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

import { freePort, startServer } from '../../im-client-js/test-support/im-server.js';
import { api, CHROMIUM, groupOf, openConv, signIn, stop, WAIT_MS, within } from './support.js';

/** A 16×16 RGB PNG (a colour gradient), 532 bytes. */
const PNG_16 = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAB20lEQVR42g3Loa6GIACA0ftefzQajUSj21eMjsRIjMRIjORMzsSIRKORSDQa7dfTz9+Pt+PteQdewTvyTrwz78KreA2v4w28K+/Om3j/fjwdT88z8AiekWfimXkWHsVjeBxP4Fl5dp7E84W74+65B27BPXJP3DP3wq24DbfjDtwr986duL/QOlpPG2iCNtIm2kxbaIpmaI4WaCttpyXaF2pH7akDVVBH6kSdqQtVUQ3VUQN1pe7URP3C1XH1XAOX4Bq5Jq6Za+FSXIbLcQWulWvnSlxfODvOnnPgFJwj58Q5cy6citNwOs7AuXLunInzC6Wj9JSBIigjZaLMlIWiKIbiKIGyUnZKonwhd+SePJAFeSRP5Jm8kBXZkB05kFfyTk7kLxwdR88xcAiOkWPimDkWDsVhOBxH4Fg5do7E8YWtY+vZBjbBNrJNbDPbwqbYDJtjC2wr286W2L4QO2JPHIiCOBIn4kxciIpoiI4YiCtxJybiF3yH7/EDXuBH/ISf8Qte4Q3e4QN+xe/4hP+C7bA9dsAK7IidsDN2wSqswTpswK7YHZuwX9AdukcPaIEe0RN6Ri9ohTZohw7oFb2jE/oLskP2yAEpkCNyQs7IBamQBumQAbkid2RC/gNj+J4QV4foLgAAAABJRU5ErkJggg==',
  'base64',
);
const NOTES = 'tent, stove, 2 sleeping bags\n';
const LIMIT = 64 * 1024;

/** Waits until the page shows an attached image that has loaded; returns {src, naturalWidth, naturalHeight}. */
async function loadedImage(page, who) {
  try {
    const handle = await page.waitForFunction(() => {
      const img = document.querySelector('#msg-list .msg-group:not(.pending) .bubble.kind-image .media img');
      return img && img.complete && img.naturalWidth > 0
        ? { src: img.src, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight, broken: !!img.closest('.media.broken') }
        : null;
    });
    return handle.jsonValue();
  } catch (e) {
    const html = await page.locator('#msg-list').innerHTML();
    throw new Error(`${who}: no loaded image in ${html.slice(0, 2000)}: ${e.message}`);
  }
}

test('attachments: an image shown inline and a file as a link, uploaded with progress', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dir = await mkdtemp(join(tmpdir(), 'im-web-files-'));
  let server;
  let browser;
  try {
    server = await startServer(port, ['--memory', '--max-attachment-bytes', String(LIMIT)]);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: WAIT_MS });
    const { tokens, group } = await groupOf(base, 'Photos', ['alice', 'bob']);
    const conv = `g:${group.id}`;
    const pngPath = join(dir, 'gradient.png');
    const bigPath = join(dir, 'too-big.bin');
    const readmePath = join(dir, 'readme.txt');
    await writeFile(pngPath, PNG_16);
    await writeFile(readmePath, 'read me first\n');
    await writeFile(bigPath, Buffer.alloc(LIMIT + 1, 7));

    const alice = await signIn(browser, base, 'alice');
    const bob = await signIn(browser, base, 'bob');
    for (const { page } of [alice, bob]) {
      await page.locator('#conn.conn-connected').waitFor();
      await openConv(page, 'Photos');
    }

    // The paperclip opens the file picker; two files at once. Their uploads
    // are held back until alice's page shows them pending with a progress
    // bar, then let through in reverse order: the messages still go out in
    // the order picked.
    const held = [];
    const isUpload = (url) => url.pathname === '/api/v1/attachments';
    await alice.page.route(isUpload, (route) => {
      held.push(route);
    });
    const chooser = alice.page.waitForEvent('filechooser');
    await alice.page.locator('#attach-btn').click();
    await (await chooser).setFiles([pngPath, readmePath]);
    const pending = alice.page.locator('#msg-list .msg-group.pending .bubble.upload[data-upload="uploading"]');
    for (const deadline = Date.now() + WAIT_MS; held.length < 2;) {
      assert.ok(Date.now() < deadline, `both uploads reaching the server: ${held.length} of 2 within ${WAIT_MS} ms`);
      await alice.page.waitForTimeout(20);
    }
    assert.deepEqual(await pending.locator('.card-title').allTextContents(), ['gradient.png', 'readme.txt']);
    assert.equal(await pending.first().locator('progress.upload-bar').getAttribute('max'), String(PNG_16.length));
    assert.equal(await alice.page.locator('#msg-list .msg-group.pending .send-status', { hasText: 'Uploading… Cancel' }).count(), 2);
    // The local preview is a data: URL (the CSP allows no blob: images).
    await alice.page.waitForFunction(() => document.querySelector('#msg-list .pending .upload-thumb')?.src.startsWith('data:image/png;base64,'));
    const nameOf = (route) => new URL(route.request().url()).searchParams.get('name');
    assert.deepEqual(held.map(nameOf).sort(), ['gradient.png', 'readme.txt']);
    await held.find((r) => nameOf(r) === 'readme.txt').continue();
    // Uploaded, it waits for the file picked before it.
    await alice.page.locator('#msg-list .msg-group.pending .bubble.upload[data-upload="sending"]', { hasText: 'readme.txt' }).waitFor();
    await held.find((r) => nameOf(r) === 'gradient.png').continue();
    await alice.page.unroute(isUpload);

    // Bob sees the image, loaded from this server with the token in its URL.
    const shown = await loadedImage(bob.page, 'bob');
    assert.deepEqual([shown.naturalWidth, shown.naturalHeight, shown.broken], [16, 16, false]);
    const src = new URL(shown.src);
    assert.equal(src.origin, base);
    assert.match(src.pathname, /^\/api\/v1\/attachments\/at_[\w-]{22}$/);
    assert.ok(src.searchParams.get('token'), "bob's page session token");
    assert.equal(await bob.page.locator('#msg-list .bubble.kind-image .media img').getAttribute('width'), '16', 'the size is reserved from the content');
    await loadedImage(alice.page, 'alice'); // her own, once acknowledged
    await alice.page.locator('#msg-list .msg-group.pending').waitFor({ state: 'detached' });
    await bob.page.locator('#msg-list .bubble.kind-file a.file-card', { hasText: 'readme.txt' }).waitFor();

    // A text file dropped on the conversation: a download link with name and size.
    const dropped = await alice.page.evaluateHandle((text) => {
      const dt = new DataTransfer();
      dt.items.add(new File([text], 'packing-list.txt', { type: 'text/plain' }));
      return dt;
    }, NOTES);
    await alice.page.dispatchEvent('#pane-conv', 'dragenter', { dataTransfer: dropped });
    await alice.page.locator('#drop-zone').waitFor({ state: 'visible' });
    await alice.page.dispatchEvent('#pane-conv', 'drop', { dataTransfer: dropped });
    await alice.page.locator('#drop-zone').waitFor({ state: 'hidden' });
    const card = bob.page.locator('#msg-list .msg-group:not(.pending) .bubble.kind-file a.file-card', { hasText: 'packing-list.txt' });
    await card.waitFor();
    assert.equal(await card.locator('.card-title').textContent(), 'packing-list.txt');
    assert.equal(await card.locator('.card-meta').textContent(), `text/plain · ${NOTES.length} B`);
    assert.equal(await card.getAttribute('download'), 'packing-list.txt');
    const href = await card.getAttribute('href');
    assert.match(href, /^http:\/\/127\.0\.0\.1:\d+\/api\/v1\/attachments\/at_[\w-]{22}\?token=/);
    const fetched = await bob.page.request.get(href, { timeout: WAIT_MS });
    assert.equal(fetched.status(), 200);
    assert.equal(await fetched.text(), NOTES);
    assert.match(fetched.headers()['content-disposition'], /^attachment; filename\*=UTF-8''packing-list\.txt$/);
    await bob.page.locator('#conv-list .conv-btn', { hasText: 'Photos' }).locator('.preview', { hasText: '📄 packing-list.txt' }).waitFor();

    // Media by URL are shown the same way: an image inline, a file as a
    // link (sent with the page's own client, as another app would).
    const pngUrl = `${shown.src.split('?')[0]}?token=${encodeURIComponent(tokens.alice)}`;
    await alice.page.evaluate(async ({ conv, pngUrl, fileUrl }) => {
      const { S } = await import('/ui/store.js');
      await S.client.send(conv, { body: 'the same, by URL', kind: 'image', content: { url: pngUrl, width: 16, height: 16 } });
      await S.client.send(conv, { body: '[file]', kind: 'file', content: { url: fileUrl, name: 'style sheet.css', size: 1234 } });
    }, { conv, pngUrl, fileUrl: `${base}/app.css` });
    await bob.page.waitForFunction((url) => {
      const img = [...document.querySelectorAll('#msg-list .bubble.kind-image .media img')].find((i) => i.src === url);
      return img && img.complete && img.naturalWidth === 16;
    }, pngUrl);
    assert.equal(await bob.page.locator('#msg-list .bubble.kind-image .text').last().textContent(), 'the same, by URL');
    const urlCard = bob.page.locator('#msg-list .bubble.kind-file a.file-card', { hasText: 'style sheet.css' });
    await urlCard.waitFor();
    assert.equal(await urlCard.getAttribute('href'), `${base}/app.css`);
    assert.equal(await urlCard.locator('.card-meta').textContent(), '1.2 KB');

    // Over the server's limit: refused on the page, before any byte is sent.
    const before = (await api(base, 'GET', `/api/v1/conversations/${conv}/messages`, null, tokens.alice)).messages.length;
    const chooser2 = alice.page.waitForEvent('filechooser');
    await alice.page.locator('#attach-btn').click();
    await (await chooser2).setFiles(bigPath);
    const failed = alice.page.locator('#msg-list .msg-group.pending .send-status.failed');
    await failed.waitFor();
    assert.match(await failed.textContent(), /^Not sent — the file is too large \(at most 64 KB\) Delete$/);
    await failed.locator('button', { hasText: 'Delete' }).click();
    await alice.page.locator('#msg-list .msg-group.pending').waitFor({ state: 'detached' });

    // The client's upload in the browser goes through XMLHttpRequest, whose
    // upload progress it reports, rising to the total.
    const viaXhr = await alice.page.evaluate(async (size) => {
      const { ImClient } = await import('/js/im-client.js');
      let made = 0;
      class CountingXHR extends XMLHttpRequest {
        constructor() {
          super();
          made += 1;
        }
      }
      const { token } = JSON.parse(sessionStorage.getItem('im.session'));
      const client = new ImClient({ url: `${location.origin}/dispatch`, token, XMLHttpRequest: CountingXHR });
      const progress = [];
      const att = await client.upload(new Uint8Array(size).fill(1), { mime: 'application/octet-stream', onProgress: (s, t) => progress.push([s, t]) });
      await client.close();
      return { made, progress, size: att.size };
    }, LIMIT - 1);
    assert.equal(viaXhr.made, 1);
    assert.equal(viaXhr.size, LIMIT - 1);
    assert.deepEqual(viaXhr.progress.at(-1), [LIMIT - 1, LIMIT - 1]);
    assert.ok(viaXhr.progress.every(([s, t], i) => t === LIMIT - 1 && (i === 0 || s > viaXhr.progress[i - 1][0])), JSON.stringify(viaXhr.progress));

    // Stored: an image and a file naming their attachments, with what the server measured.
    const stored = (await api(base, 'GET', `/api/v1/conversations/${conv}/messages`, null, tokens.alice)).messages;
    assert.equal(stored.length, before);
    assert.deepEqual(stored.map((m) => [m.kind, m.body, m.content.name, m.content.mime, m.content.size]), [
      ['image', '[image]', 'gradient.png', 'image/png', PNG_16.length],
      ['file', '[file]', 'readme.txt', 'text/plain', 14],
      ['file', '[file]', 'packing-list.txt', 'text/plain', NOTES.length],
      ['image', 'the same, by URL', undefined, undefined, undefined],
      ['file', '[file]', 'style sheet.css', undefined, 1234],
    ]);
    assert.deepEqual([stored[0].content.width, stored[0].content.height], [16, 16], 'the page measured the image');
    assert.equal(stored[0].content.attachment, src.pathname.split('/').at(-1));

    for (const { problems } of [alice, bob]) assert.deepEqual(problems, [], 'no CSP violation, script or HTTP error');
  } finally {
    await within(WAIT_MS, browser?.close(), 'closing the browser').catch(() => {});
    await stop(server);
    await rm(dir, { recursive: true, force: true });
  }
});
