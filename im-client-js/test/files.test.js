// Attachments: upload (direct and presigned flows, progress through fetch
// and through XMLHttpRequest, errors with the server's codes, the config
// asked once), download (progress, errors), attachmentUrl, and the message
// content of an attachment sent with `send` — against an in-memory fake of
// the HTTP API and an object store (no network). Every wait is bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import {
  attachmentContent, attachmentDraft, attachmentKind, attachmentMatches, ImClient, ImError, isAttachmentId, MemoryCursorStore, sha256Hex,
} from '../im-client.js';
import { FakeServer, silentLogger, waitFor } from '../test-support/fake-server.js';

const API = 'http://chat.test';
const TOKEN = 'tok';
const hex = (bytes) => createHash('sha256').update(bytes).digest('hex');
const idOf = (n) => `at_${String(n).padStart(22, 'A')}`;

async function bytesOf(body) {
  if (body == null) return new Uint8Array(0);
  if (typeof body === 'string') return new TextEncoder().encode(body);
  if (body instanceof Uint8Array) return new Uint8Array(body);
  if (typeof body.arrayBuffer === 'function') return new Uint8Array(await body.arrayBuffer());
  throw new Error(`unexpected body ${body}`);
}

const lower = (headers) => Object.fromEntries(Object.entries(headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));

/**
 * The attachment endpoints of http-api.md §13 and a presigned object store
 * (`https://s3.test/…`), in memory. `calls` records every request
 * `{method, path, query, headers, body}`; `answer` can override one
 * (return a Response-like `{status, body}`) before the fake handles it.
 */
class FakeFiles {
  constructor({ mode = 'direct', maxBytes = 1024 * 1024, types = ['image/*', 'text/plain', 'application/octet-stream'] } = {}) {
    this.mode = mode;
    this.maxBytes = maxBytes;
    this.types = types;
    this.calls = [];
    this.files = new Map(); // id -> {meta, bytes}
    this.tickets = new Map(); // id -> announced
    this.objects = new Map(); // id -> bytes at the object store
    this.answer = null;
    this.next = 1;
    this.fetch = (url, init = {}) => this.handle(url, init);
  }

  async handle(url, init) {
    const u = new URL(url);
    const method = (init.method ?? 'GET').toUpperCase();
    const headers = lower(init.headers);
    const body = await bytesOf(init.body);
    const call = { method, url: u.href, host: u.host, path: u.pathname, query: Object.fromEntries(u.searchParams), headers, body };
    this.calls.push(call);
    const override = this.answer?.(call);
    if (override) return respond(override.status, override.body, override.headers);
    const json = (status, obj) => respond(status, JSON.stringify(obj), { 'content-type': 'application/json' });
    const error = (status, code) => json(status, { code, message: `${code} (fake)` });

    if (u.host === 's3.test') {
      const id = u.pathname.split('/').at(-1);
      const t = this.tickets.get(id);
      if (!t || headers.authorization) return respond(403, '<Error><Code>AccessDenied</Code></Error>');
      if (headers['content-type'] !== t.mime) return respond(403, '<Error><Code>SignatureDoesNotMatch</Code></Error>');
      this.objects.set(id, body);
      return respond(200, '');
    }
    if (headers.authorization !== `Bearer ${TOKEN}`) return error(401, 'unauthorized');
    const path = u.pathname;
    if (method === 'GET' && path === '/api/v1/attachments/config') {
      return json(200, { upload: this.mode, max_bytes: this.maxBytes, types: this.types });
    }
    if (method === 'POST' && path === '/api/v1/attachments') {
      if (this.mode !== 'direct') return error(409, 'conflict');
      const mime = headers['content-type'];
      if (!mime || !this.allowed(mime)) return error(415, 'unsupported_media_type');
      if (body.length > this.maxBytes) return error(413, 'body_too_large');
      const meta = this.store(mime, body, call.query);
      return json(201, meta);
    }
    if (method === 'POST' && path === '/api/v1/attachments/uploads') {
      if (this.mode !== 'presigned') return error(409, 'conflict');
      const a = JSON.parse(new TextDecoder().decode(body));
      if (!this.allowed(a.mime)) return error(415, 'unsupported_media_type');
      if (a.size > this.maxBytes) return error(413, 'body_too_large');
      const id = idOf(this.next++);
      this.tickets.set(id, a);
      return json(201, {
        id,
        url: `https://s3.test/bucket/im/blobs/${id}?X-Amz-Signature=secret-signature`,
        method: 'PUT',
        headers: { 'content-type': a.mime, 'content-length': String(a.size) },
        expires_at_ms: 1,
      });
    }
    const complete = /^\/api\/v1\/attachments\/(at_[\w-]{22})\/complete$/.exec(path);
    if (method === 'POST' && complete) {
      const t = this.tickets.get(complete[1]);
      const bytes = this.objects.get(complete[1]);
      if (!t) return error(404, 'no_such_attachment');
      if (!bytes || bytes.length !== t.size) return error(400, 'invalid_field');
      const meta = { id: complete[1], owner: 1, mime: t.mime, size: t.size, sha256: t.sha256, created_at_ms: 5 };
      for (const k of ['name', 'width', 'height', 'duration_ms']) if (t[k] != null) meta[k] = t[k];
      this.files.set(meta.id, { meta, bytes });
      return json(201, meta);
    }
    const info = /^\/api\/v1\/attachments\/(at_[\w-]{22})\/info$/.exec(path);
    if (method === 'GET' && info) {
      const f = this.files.get(info[1]);
      return f ? json(200, f.meta) : error(404, 'no_such_attachment');
    }
    const dl = /^\/api\/v1\/attachments\/(at_[\w-]{22})$/.exec(path);
    if (method === 'GET' && dl) {
      const f = this.files.get(dl[1]);
      if (!f) return error(404, 'no_such_attachment');
      // In pieces of 4 bytes, as a network delivers them.
      const chunks = [];
      for (let i = 0; i < f.bytes.length; i += 4) chunks.push(f.bytes.slice(i, i + 4));
      const stream = new ReadableStream({
        pull(c) {
          if (chunks.length) c.enqueue(chunks.shift());
          else c.close();
        },
      });
      return new Response(stream, { status: 200, headers: { 'content-type': f.meta.mime, 'content-length': String(f.bytes.length) } });
    }
    return respond(404, '');
  }

  allowed(mime) {
    const m = mime.split(';')[0].trim().toLowerCase();
    return this.types.some((t) => t === m || (t.endsWith('/*') && m.startsWith(t.slice(0, -1))));
  }

  store(mime, bytes, query) {
    const meta = { id: idOf(this.next++), owner: 1, mime: mime.split(';')[0].trim().toLowerCase(), size: bytes.length, sha256: hex(bytes), created_at_ms: 5 };
    if (query.name) meta.name = query.name;
    for (const k of ['width', 'height', 'duration_ms']) if (query[k]) meta[k] = Number(query[k]);
    this.files.set(meta.id, { meta, bytes });
    return meta;
  }

  count(method, path) {
    return this.calls.filter((c) => c.method === method && c.path === path).length;
  }
}

function respond(status, body = '', headers = {}) {
  return new Response(status === 204 || status === 304 ? null : body, { status, headers });
}

function makeClient(files, extra = {}) {
  return new ImClient({
    url: `${API}/dispatch`,
    token: TOKEN,
    device: 'laptop-1',
    fetch: files.fetch,
    XMLHttpRequest: null,
    cursorStore: new MemoryCursorStore(),
    logger: silentLogger,
    ...extra,
  });
}

/**
 * An XMLHttpRequest over a FakeFiles: the body goes out in 3 steps of
 * upload progress events, then the fake answers. `instances` records each.
 */
function fakeXhr(files) {
  const instances = [];
  class FakeXMLHttpRequest {
    constructor() {
      this.headers = {};
      this.upload = { onprogress: null };
      this.status = 0;
      this.responseText = '';
      this.aborted = false;
      this.progress = [];
      instances.push(this);
    }
    open(method, url) {
      this.method = method;
      this.url = url;
    }
    setRequestHeader(k, v) {
      this.headers[k] = v;
    }
    abort() {
      this.aborted = true;
      setTimeout(() => this.onabort?.(), 0);
    }
    async send(body) {
      const bytes = await bytesOf(body);
      this.sent = bytes;
      for (const part of [1 / 3, 2 / 3, 1]) {
        await new Promise((r) => setTimeout(r, 1));
        if (this.aborted) return;
        const loaded = Math.round(bytes.length * part);
        this.progress.push(loaded);
        this.upload.onprogress?.({ loaded, total: bytes.length, lengthComputable: true });
      }
      const resp = await files.handle(this.url, { method: this.method, headers: this.headers, body: bytes });
      if (this.aborted) return;
      this.status = resp.status;
      this.responseText = await resp.text();
      this.onload?.();
    }
  }
  return { XHR: FakeXMLHttpRequest, instances };
}

const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

async function rejects(p, check) {
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof ImError, `an ImError, not ${e}`);
    check(e);
    return true;
  });
}

// ---------------------------------------------------------------- upload

test('direct upload: the config is asked once per client; bytes, type, query and token go to POST /attachments', async () => {
  const files = new FakeFiles();
  const client = makeClient(files);
  const progress = [];
  const att = await client.upload(PNG, { mime: 'image/png', name: 'cat 1.png', width: 16, height: 8, durationMs: 0, onProgress: (s, t) => progress.push([s, t]) });
  assert.equal(att.id, idOf(1));
  assert.equal(att.mime, 'image/png');
  assert.equal(att.size, PNG.length);
  assert.equal(att.sha256, hex(PNG));
  assert.equal(att.name, 'cat 1.png');
  assert.deepEqual([att.width, att.height], [16, 8]);
  assert.deepEqual(progress, [[PNG.length, PNG.length]], 'fetch: no intermediate progress, but the end');
  const post = files.calls.find((c) => c.method === 'POST');
  assert.equal(post.path, '/api/v1/attachments');
  assert.deepEqual(post.query, { name: 'cat 1.png', width: '16', height: '8', duration_ms: '0' });
  assert.equal(post.headers['content-type'], 'image/png');
  assert.equal(post.headers.authorization, `Bearer ${TOKEN}`);
  assert.deepEqual(post.body, PNG);

  // A Blob (its type is the default MIME type), an ArrayBuffer, a view into a larger buffer.
  const blobAtt = await client.upload(new Blob(['hello'], { type: 'text/plain' }));
  assert.equal(blobAtt.mime, 'text/plain');
  assert.equal(blobAtt.size, 5);
  const buf = await client.upload(PNG.buffer.slice(0), { mime: 'application/octet-stream' });
  assert.equal(buf.sha256, hex(PNG));
  const view = await client.upload(new Uint8Array(PNG.buffer, 8, 4), { mime: 'application/octet-stream' });
  assert.equal(view.sha256, hex(PNG.slice(8, 12)));
  if (typeof File === 'function') {
    const f = await client.upload(new File(['abc'], 'notes.txt', { type: 'text/plain' }));
    assert.equal(f.name, 'notes.txt', "a File's name is the default name");
  }
  assert.equal(files.count('GET', '/api/v1/attachments/config'), 1, 'asked once');
  assert.deepEqual(await client.uploadConfig(), { upload: 'direct', max_bytes: 1024 * 1024, types: files.types });
  assert.equal(files.count('GET', '/api/v1/attachments/config'), 1);
  await client.close();
});

test('presigned upload: announce with the SHA-256, PUT to the ticket URL with its headers and no token, complete', async () => {
  const files = new FakeFiles({ mode: 'presigned' });
  const client = makeClient(files);
  const progress = [];
  const att = await client.upload(new Blob([PNG], { type: 'image/png' }), { name: 'cat.png', width: 4, onProgress: (s, t) => progress.push([s, t]) });
  const [announce, put, complete] = files.calls.filter((c) => c.method !== 'GET');
  assert.equal(announce.path, '/api/v1/attachments/uploads');
  assert.deepEqual(JSON.parse(new TextDecoder().decode(announce.body)), { mime: 'image/png', size: PNG.length, sha256: hex(PNG), name: 'cat.png', width: 4 });
  assert.equal(put.method, 'PUT');
  assert.equal(put.host, 's3.test');
  assert.equal(put.query['X-Amz-Signature'], 'secret-signature');
  assert.equal(put.headers.authorization, undefined, 'no token to the object store');
  assert.equal(put.headers['content-type'], 'image/png');
  assert.equal(put.headers['content-length'], undefined, 'the runtime sets the length');
  assert.deepEqual(put.body, PNG);
  assert.equal(complete.path, `/api/v1/attachments/${att.id}/complete`);
  assert.equal(complete.headers.authorization, `Bearer ${TOKEN}`);
  assert.deepEqual(att, { id: idOf(1), owner: 1, mime: 'image/png', size: PNG.length, sha256: hex(PNG), name: 'cat.png', width: 4, created_at_ms: 5 });
  assert.deepEqual(progress, [[PNG.length, PNG.length]]);
  assert.equal(await attachmentMatches(att, await client.download(att.id)), true);
  await client.close();
});

test('with XMLHttpRequest, upload progress is reported as the bytes go, in both flows', async () => {
  for (const mode of ['direct', 'presigned']) {
    const files = new FakeFiles({ mode });
    const { XHR, instances } = fakeXhr(files);
    const client = makeClient(files, { XMLHttpRequest: XHR });
    const progress = [];
    const att = await client.upload(PNG, { mime: 'image/png', onProgress: (s, t) => progress.push([s, t]) });
    assert.equal(att.sha256, hex(PNG));
    assert.equal(instances.length, 1, `${mode}: only the body-carrying request goes through XMLHttpRequest`);
    const x = instances[0];
    assert.equal(x.method, mode === 'direct' ? 'POST' : 'PUT');
    assert.equal(x.headers.authorization, mode === 'direct' ? `Bearer ${TOKEN}` : undefined);
    assert.deepEqual(x.sent, PNG);
    assert.deepEqual(progress, [[6, 18], [12, 18], [18, 18]], `${mode}: progress`);
    await client.close();
  }
});

test('upload errors carry the server\'s code and status; nothing is sent over the limit', async () => {
  const files = new FakeFiles({ maxBytes: 10 });
  let client = makeClient(files);
  await rejects(client.upload(PNG, { mime: 'image/png' }), (e) => {
    assert.equal(e.kind, 'rejected');
    assert.equal(e.code, 'body_too_large');
    assert.equal(e.status, 413);
    assert.equal(e.max, 10);
  });
  assert.equal(files.count('POST', '/api/v1/attachments'), 0, 'refused before sending the bytes');

  await client.close();

  files.maxBytes = 1 << 20;
  client = makeClient(files); // a new client asks the config again
  await rejects(client.upload(PNG, { mime: 'text/html' }), (e) => {
    assert.equal(e.kind, 'rejected');
    assert.equal(e.code, 'unsupported_media_type');
    assert.equal(e.status, 415);
    assert.match(e.serverMessage, /fake/);
  });
  // The server's own 413 (e.g. its limit is lower than the config said).
  files.answer = (c) => (c.method === 'POST' ? { status: 413, body: JSON.stringify({ code: 'body_too_large', message: 'too big' }) } : null);
  await rejects(client.upload(PNG, { mime: 'image/png' }), (e) => {
    assert.deepEqual([e.kind, e.code, e.status, e.serverMessage], ['rejected', 'body_too_large', 413, 'too big']);
  });
  // An answer without a JSON code (a proxy's page).
  files.answer = (c) => (c.method === 'POST' ? { status: 502, body: '<html>bad gateway</html>' } : null);
  await rejects(client.upload(PNG, { mime: 'image/png' }), (e) => {
    assert.deepEqual([e.kind, e.code, e.status], ['rejected', 'http_502', 502]);
  });
  files.answer = null;
  await rejects(client.upload('not bytes', { mime: 'text/plain' }), (e) => assert.equal(e.kind, 'invalid_argument'));
  await rejects(client.upload(PNG), (e) => assert.equal(e.kind, 'invalid_argument', 'no MIME type'));
  await client.close();
});

test('upload: a network failure is `transport`, a cancelled one `aborted`, no token yet `not_signed_in`', async () => {
  const files = new FakeFiles();
  const failing = makeClient(files, {
    fetch: (url, init) => (init?.method === 'POST' ? Promise.reject(new TypeError('fetch failed')) : files.fetch(url, init)),
  });
  await rejects(failing.upload(PNG, { mime: 'image/png' }), (e) => {
    assert.equal(e.kind, 'transport');
    assert.match(e.message, /fetch failed/);
  });
  await failing.close();

  // Cancelled while XMLHttpRequest sends.
  const { XHR, instances } = fakeXhr(files);
  const client = makeClient(files, { XMLHttpRequest: XHR });
  const ac = new AbortController();
  const p = client.upload(PNG, { mime: 'image/png', signal: ac.signal, onProgress: () => ac.abort() });
  await rejects(p, (e) => assert.equal(e.kind, 'aborted'));
  assert.equal(instances[0].aborted, true);
  assert.equal(files.count('POST', '/api/v1/attachments'), 0, 'the request never reached the server');
  await rejects(client.upload(PNG, { mime: 'image/png', signal: AbortSignal.abort() }), (e) => assert.equal(e.kind, 'aborted'));
  await client.close();

  const password = makeClient(files, { token: undefined, login: { username: 'alice', password: 'secret' } });
  await rejects(password.upload(PNG, { mime: 'image/png' }), (e) => assert.equal(e.kind, 'not_signed_in'));
  await rejects(password.download(idOf(1)), (e) => assert.equal(e.kind, 'not_signed_in'));
  assert.throws(() => password.attachmentUrl(idOf(1)), (e) => e.kind === 'not_signed_in');
  assert.equal(files.calls.filter((c) => c.path.includes('/attachments')).length, 2, 'nothing asked without a token');
  await password.close();
});

test('a failed config is asked again; 409 conflict (the server changed its flow) asks again and retries once', async () => {
  const files = new FakeFiles();
  const client = makeClient(files);
  files.answer = (c) => (c.path === '/api/v1/attachments/config' ? { status: 503, body: '{"code":"unavailable","message":"later"}' } : null);
  await rejects(client.upload(PNG, { mime: 'image/png' }), (e) => assert.deepEqual([e.code, e.status], ['unavailable', 503]));
  files.answer = null;
  const first = await client.upload(PNG, { mime: 'image/png' });
  assert.equal(files.count('GET', '/api/v1/attachments/config'), 2);

  files.mode = 'presigned'; // restarted with the S3 store
  const second = await client.upload(PNG, { mime: 'image/png' });
  assert.notEqual(second.id, first.id);
  assert.equal(files.count('GET', '/api/v1/attachments/config'), 3);
  assert.equal(files.count('POST', '/api/v1/attachments/uploads'), 1, 'went the presigned way');
  assert.equal((await client.uploadConfig()).upload, 'presigned');

  // An object store refusing the PUT: its status, a code made from it.
  files.answer = (c) => (c.host === 's3.test' ? { status: 403, body: '<Error><Code>SignatureDoesNotMatch</Code></Error>' } : null);
  await rejects(client.upload(PNG, { mime: 'image/png' }), (e) => {
    assert.deepEqual([e.kind, e.code, e.status], ['rejected', 'http_403', 403]);
    assert.match(e.serverMessage, /SignatureDoesNotMatch/);
    assert.doesNotMatch(e.message, /secret-signature/, 'the presigned URL stays out of the message');
  });
  assert.equal(files.count('POST', `/api/v1/attachments/${idOf(3)}/complete`), 0, 'not completed');
  await client.close();
});

// ---------------------------------------------------------------- download

test('download: the bytes with progress; errors with the server\'s code; attachmentUrl and attachmentInfo', async () => {
  const files = new FakeFiles();
  const client = makeClient(files);
  const att = await client.upload(PNG, { mime: 'image/png', name: 'cat.png' });
  const progress = [];
  const bytes = await client.download(att.id, { onProgress: (r, t) => progress.push([r, t]) });
  assert.ok(bytes instanceof Uint8Array);
  assert.deepEqual(bytes, PNG);
  assert.deepEqual(progress, [[4, 18], [8, 18], [12, 18], [16, 18], [18, 18]]);
  const get = files.calls.at(-1);
  assert.equal(get.headers.authorization, `Bearer ${TOKEN}`);
  assert.equal(await attachmentMatches(att, bytes), true);
  assert.equal(await attachmentMatches(att, bytes.slice(1)), false);

  await rejects(client.download(idOf(99)), (e) => assert.deepEqual([e.kind, e.code, e.status], ['rejected', 'no_such_attachment', 404]));
  const before = files.calls.length;
  await rejects(client.download('../../etc/passwd'), (e) => assert.equal(e.code, 'no_such_attachment'));
  assert.equal(files.calls.length, before, 'not an attachment id: nothing asked');

  assert.deepEqual(await client.attachmentInfo(att.id), att);
  assert.equal(client.attachmentUrl(att.id), `${API}/api/v1/attachments/${att.id}?token=${TOKEN}`);
  assert.throws(() => client.attachmentUrl('at_x'), (e) => e.kind === 'invalid_argument');
  await client.close();

  const odd = makeClient(files, { token: 'a+b/c=d&e' });
  assert.equal(new URL(odd.attachmentUrl(att.id)).searchParams.get('token'), 'a+b/c=d&e', 'the token is encoded');
  await odd.close();
});

test('a password client uses the token of its connection for files', async () => {
  const server = new FakeServer();
  const files = new FakeFiles();
  const client = new ImClient({
    url: 'http://disp.test/dispatch',
    login: { username: 'alice', password: 'secret' },
    device: 'laptop-1',
    WebSocket: server.WebSocket,
    fetch: (url, init) => (new URL(url).pathname.startsWith('/api/v1/attachments') ? files.fetch(url, init) : server.fetch(url, init)),
    XMLHttpRequest: null,
    cursorStore: new MemoryCursorStore(),
    logger: silentLogger,
  });
  const connected = new Promise((r) => client.on('connected', r));
  client.start();
  await connected;
  assert.equal(new URL(client.attachmentUrl(idOf(1))).searchParams.get('token'), 'login-1');
  await rejects(client.upload(PNG, { mime: 'image/png' }), (e) => assert.equal(e.code, 'unauthorized', 'the fake knows only `tok`'));
  assert.equal(files.calls.at(-1).headers.authorization, 'Bearer login-1');
  await client.close();
});

// ------------------------------------------------------- message content

test('attachment content: the kind by MIME type, the fields of the attachment', () => {
  assert.equal(attachmentKind('image/png'), 'image');
  assert.equal(attachmentKind('Image/SVG+xml'), 'image');
  assert.equal(attachmentKind('audio/ogg'), 'audio');
  assert.equal(attachmentKind('video/mp4'), 'video');
  assert.equal(attachmentKind('application/pdf'), 'file');
  assert.equal(attachmentKind('text/plain'), 'file');
  assert.equal(attachmentKind(''), 'file');
  assert.equal(isAttachmentId(idOf(1)), true);
  assert.equal(isAttachmentId('at_short'), false);
  assert.equal(isAttachmentId(`${idOf(1)}x`), false);

  const att = { id: idOf(7), owner: 3, mime: 'image/png', size: 18, sha256: 'ab'.repeat(32), name: 'cat.png', width: 16, height: 16, created_at_ms: 1 };
  assert.deepEqual(attachmentContent(att), {
    kind: 'image',
    content: { attachment: idOf(7), mime: 'image/png', size: 18, sha256: 'ab'.repeat(32), name: 'cat.png', width: 16, height: 16 },
  });
  const clip = { id: idOf(8), mime: 'audio/ogg', size: 5, sha256: 'cd'.repeat(32), duration_ms: 1500 };
  assert.deepEqual(attachmentDraft(clip), {
    body: '[audio]', kind: 'audio', content: { attachment: idOf(8), mime: 'audio/ogg', size: 5, sha256: 'cd'.repeat(32), duration_ms: 1500 },
  });
  assert.deepEqual(attachmentDraft({ ...clip, mime: 'application/pdf' }, { body: 'the report', replyTo: 4, mentions: [2] }), {
    body: 'the report', kind: 'file', content: { attachment: idOf(8), mime: 'application/pdf', size: 5, sha256: 'cd'.repeat(32), duration_ms: 1500 },
    replyTo: 4, mentions: [2],
  });
  assert.throws(() => attachmentContent({ id: 'x' }), (e) => e instanceof ImError && e.kind === 'invalid_argument');
});

test('sha256Hex is WebCrypto SHA-256 in lowercase hex', async () => {
  assert.equal(await sha256Hex(new Uint8Array(0)), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  assert.equal(await sha256Hex(PNG), hex(PNG));
  assert.equal(await sha256Hex(new Blob([PNG])), hex(PNG));
  assert.equal(await sha256Hex(PNG.buffer), hex(PNG));
});

test('an attachment draft goes out with `send` as kind and content, and comes back as the own message', async () => {
  const server = new FakeServer();
  const files = new FakeFiles();
  const events = [];
  const client = new ImClient({
    url: 'http://disp.test/dispatch',
    token: 'tok',
    device: 'laptop-1',
    WebSocket: server.WebSocket,
    fetch: (url, init) => (new URL(url).pathname.startsWith('/api/v1/attachments') ? files.fetch(url, init) : server.fetch(url, init)),
    XMLHttpRequest: null,
    cursorStore: new MemoryCursorStore(),
    logger: silentLogger,
  });
  client.on('message', (e) => events.push(e.message));
  client.start();
  const att = await client.upload(PNG, { mime: 'image/png', name: 'cat.png' });
  const { id } = await client.send('g:1', attachmentDraft(att, { body: 'look' }));
  const frame = server.peer.received.find((f) => f.type === 'send');
  assert.equal(frame.kind, 'image');
  assert.deepEqual(frame.content, { attachment: att.id, mime: 'image/png', size: PNG.length, sha256: hex(PNG), name: 'cat.png' });
  assert.equal(frame.body, 'look');
  await waitFor(() => events.some((m) => m.id === id), 2000, 'the own message');
  const own = events.find((m) => m.id === id);
  assert.equal(own.kind, 'image');
  assert.equal(own.content.attachment, att.id);
  await client.close();
});
