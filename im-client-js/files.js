// files.js — attachments over HTTP (http-api.md §13), a port of im-client's
// files.rs.
//
// Files travel over HTTP, never over the WebSocket: the client uploads one
// (through the server, or straight to the object store with a presigned
// URL — whichever GET /api/v1/attachments/config says), then sends a
// message whose content names it (protocol §13).
//
// * the helpers, free of I/O: attachment ids and kinds, the content and
//   draft of a message carrying an attachment, SHA-256 (WebCrypto);
// * `Files`: the HTTP calls — the upload config (asked once), upload in
//   the direct or presigned flow with progress, download, attachment info
//   and URLs. It knows nothing of the client: it is given the API's base
//   URL, a getter of the current token, fetch and XMLHttpRequest, and
//   where a throwing progress callback's error goes. ImClient's `upload`,
//   `download`, `uploadConfig`, `attachmentInfo` and `attachmentUrl`
//   delegate to it.

import { ImError } from './errors.js';

const ATTACHMENT_ID_RE = /^at_[A-Za-z0-9_-]{22}$/;

/** Whether `id` is an attachment id (`at_` and 22 base64url characters), as `im_protocol::content::is_attachment_id`. */
export function isAttachmentId(id) {
  return typeof id === 'string' && ATTACHMENT_ID_RE.test(id);
}

/** The message kind for a file of type `mime`: `image`, `audio` or `video` by its family, else `file`. */
export function attachmentKind(mime) {
  const family = String(mime ?? '').split('/')[0].trim().toLowerCase();
  return family === 'image' || family === 'audio' || family === 'video' ? family : 'file';
}

/** The media content fields an attachment fills in (protocol §13), in order. */
const MEDIA_FIELDS = ['mime', 'size', 'sha256', 'name', 'width', 'height', 'duration_ms'];

/**
 * `{kind, content}` of a message carrying `attachment` (what `upload`
 * resolved with): the kind by its MIME type (image, audio, video, else
 * file) and `{attachment: id, mime, size, sha256, name?, width?, height?,
 * duration_ms?}` — im-client's `Attachment::content()`. The server checks
 * it and overwrites `mime`, `size` and `sha256` with what it measured.
 */
export function attachmentContent(attachment) {
  if (!attachment || !isAttachmentId(attachment.id)) {
    throw new ImError('invalid_argument', 'not an attachment: expected an object with an `at_…` id, as upload() resolves');
  }
  const content = { attachment: attachment.id };
  for (const f of MEDIA_FIELDS) if (attachment[f] != null) content[f] = attachment[f];
  return { kind: attachmentKind(attachment.mime), content };
}

/**
 * A draft for `send` carrying `attachment`: `{body, kind, content}` (and
 * `replyTo`, `mentions` when given). `body` is the fallback text older
 * clients show; default `[image]`, `[audio]`, `[video]` or `[file]`.
 */
export function attachmentDraft(attachment, { body, replyTo, mentions } = {}) {
  const { kind, content } = attachmentContent(attachment);
  const draft = { body: body ?? `[${kind}]`, kind, content };
  if (replyTo != null) draft.replyTo = replyTo;
  if (mentions != null) draft.mentions = mentions;
  return draft;
}

/** Lowercase hex SHA-256 of `data` (Blob, ArrayBuffer or typed array), with WebCrypto. */
export async function sha256Hex(data) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new ImError('unsupported', 'SHA-256 needs WebCrypto (crypto.subtle); browsers offer it on https:// and localhost pages only');
  }
  const src = uploadSource(data);
  if (!src) throw new ImError('invalid_argument', 'sha256Hex(data): data must be a Blob, an ArrayBuffer or a typed array');
  const digest = new Uint8Array(await subtle.digest('SHA-256', await sourceBytes(src)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Whether `bytes` are `attachment`'s: the same size and SHA-256 (im-client's `Attachment::matches`). */
export async function attachmentMatches(attachment, bytes) {
  const src = uploadSource(bytes);
  return !!src && src.size === attachment?.size && (await sha256Hex(src.body)) === attachment.sha256;
}

/** What `upload` can send: `{body, size, type, name}`, or null for anything else. */
function uploadSource(data) {
  if (data instanceof ArrayBuffer) return { body: new Uint8Array(data), size: data.byteLength, type: '', name: null };
  if (ArrayBuffer.isView(data)) {
    return { body: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), size: data.byteLength, type: '', name: null };
  }
  if (data && typeof data.arrayBuffer === 'function' && typeof data.size === 'number') {
    // A Blob, or a File (which has a name).
    return { body: data, size: data.size, type: typeof data.type === 'string' ? data.type : '', name: typeof data.name === 'string' && data.name ? data.name : null };
  }
  return null;
}

async function sourceBytes(src) {
  return src.body instanceof Uint8Array ? src.body : new Uint8Array(await src.body.arrayBuffer());
}

/** `mime` as the server compares it: without parameters, trimmed, lowercase. */
const bareMime = (mime) => mime.split(';')[0].trim().toLowerCase();

/** A URL for messages: no query (a presigned URL's signature stays out of logs). */
function shortUrl(url) {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '(bad URL)';
  }
}

/** The ImError of a refused HTTP exchange: `rejected` with `status`, and the `code` of a JSON error body (else `http_<status>`). */
function httpRefusal(what, status, text) {
  let code = `http_${status}`;
  let detail = String(text ?? '').slice(0, 300);
  try {
    const body = JSON.parse(text);
    if (typeof body?.code === 'string' && body.code) {
      code = body.code;
      detail = typeof body.message === 'string' ? body.message : '';
    }
  } catch {
    // not JSON (an object store's XML, a proxy's HTML): keep the text
  }
  return new ImError('rejected', `${what} refused with HTTP ${status} ${code}: ${detail}`, { status, code, serverMessage: detail });
}

const abortError = (what) => new ImError('aborted', `${what} was cancelled`);

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    throw new ImError('transport', `${what} is not JSON`);
  }
}

/** An attachment from an answer: an object with an attachment id. */
function parseAttachment(text) {
  const a = parseJson(text, 'the attachment');
  if (!isAttachmentId(a?.id) || typeof a.mime !== 'string') throw new ImError('transport', 'the attachment in the answer is unreadable');
  return a;
}

/** One exchange through XMLHttpRequest (for its upload progress): resolves `{status, text}`. */
function xhrExchange(XHR, { method, url, headers, body, onUpload, signal, what }) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(what));
      return;
    }
    const xhr = new XHR();
    const onAbort = () => xhr.abort();
    const done = () => signal?.removeEventListener('abort', onAbort);
    xhr.open(method, url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    // Listening on `upload` before send() is what makes progress events fire.
    if (onUpload && xhr.upload) xhr.upload.onprogress = (e) => onUpload(e.loaded);
    xhr.onload = () => {
      done();
      resolve({ status: xhr.status, text: typeof xhr.responseText === 'string' ? xhr.responseText : '' });
    };
    xhr.onerror = () => {
      done();
      reject(new ImError('transport', `${what}: ${method} ${shortUrl(url)} failed (network error)`));
    };
    xhr.ontimeout = xhr.onerror;
    xhr.onabort = () => {
      done();
      reject(abortError(what));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    xhr.send(body ?? null);
  });
}

const notAnAttachment = (id) =>
  new ImError('rejected', `${JSON.stringify(id)} is not an attachment id`, {
    status: 404, code: 'no_such_attachment', serverMessage: 'not an attachment id',
  });

/** The HTTP side of attachments: upload, download, info, URLs (one per client). */
export class Files {
  /**
   * @param {object} o
   * @param {string} o.apiBase the API's base URL, without a trailing `/`
   * @param {() => string | null | undefined} o.token the token of the HTTP calls, read at each call (none yet: `not_signed_in`)
   * @param {typeof fetch | null} o.fetch
   * @param {typeof XMLHttpRequest | null} o.XMLHttpRequest used for uploads with progress when given
   * @param {(e: unknown) => void} o.onCallbackError gets what an `onProgress` callback threw
   */
  constructor({ apiBase, token, fetch, XMLHttpRequest, onCallbackError }) {
    this._apiBase = apiBase;
    this._token = token;
    this._fetch = fetch;
    this._XHR = XMLHttpRequest;
    this._onCallbackError = onCallbackError;
    this._config = null; // the promise of GET /api/v1/attachments/config, asked once
  }

  /**
   * How this server takes uploads: `{upload: 'direct'|'presigned',
   * max_bytes, types}` (GET /api/v1/attachments/config), asked once per
   * client (a failed ask is asked again next time).
   */
  uploadConfig() {
    if (!this._config) {
      const p = (async () => {
        const token = this.token();
        const { status, text } = await this._exchange('GET', `${this._apiBase}/api/v1/attachments/config`, {
          token,
          what: 'the upload config',
        });
        if (status !== 200) throw httpRefusal('the upload config', status, text);
        const config = parseJson(text, 'the upload config');
        if (typeof config?.upload !== 'string') throw new ImError('transport', 'the upload config is unreadable');
        return config;
      })();
      this._config = p;
      p.catch(() => {
        if (this._config === p) this._config = null;
      });
    }
    return this._config;
  }

  /**
   * Uploads a file and resolves with the attachment the server made of it,
   * `{id, mime, size, sha256, name?, width?, height?, duration_ms?, …}`;
   * send it with `send(conv, attachmentDraft(attachment))`. `data` is a
   * Blob or File, an ArrayBuffer or a typed array. Options: `mime` (default:
   * the Blob's type), `name` (default: the File's name), `width`,
   * `height`, `durationMs` (stored as given), `onProgress(sent, total)`
   * (bytes; with XMLHttpRequest as the bytes go, else once at the end),
   * `signal` (an AbortSignal). The flow is the server's (`uploadConfig`):
   * `direct` posts the bytes to the server; `presigned` announces them with
   * their SHA-256, PUTs them to the object store's URL (without the token)
   * and completes the upload. Needs a token (not before the first
   * connection of a password login); does not need the WebSocket.
   */
  async upload(data, options = {}) {
    const src = uploadSource(data);
    if (!src) throw new ImError('invalid_argument', 'upload(data): data must be a Blob or File, an ArrayBuffer or a typed array');
    const mime = options.mime ?? src.type;
    if (typeof mime !== 'string' || !bareMime(mime)) {
      throw new ImError('invalid_argument', "upload(): the file's MIME type is unknown: set options.mime");
    }
    const meta = { mime, name: options.name ?? src.name ?? undefined, width: options.width, height: options.height, duration_ms: options.durationMs };
    const token = this.token();
    const progress = this._progress(options.onProgress, src.size);
    let config = await this.uploadConfig();
    for (let attempt = 0; ; attempt++) {
      const max = config.max_bytes;
      if (Number.isFinite(max) && src.size > max) {
        // What the server would answer (413), without sending the bytes.
        throw new ImError('rejected', `the file is ${src.size} bytes, over the server's limit of ${max}`, {
          status: 413, code: 'body_too_large', serverMessage: `larger than ${max} bytes`, len: src.size, max,
        });
      }
      try {
        const att = config.upload === 'presigned'
          ? await this._uploadPresigned(src, meta, token, progress, options.signal)
          : await this._uploadDirect(src, meta, token, progress, options.signal);
        progress(src.size);
        return att;
      } catch (e) {
        // 409 conflict: the wrong flow for this server (it was restarted with
        // another store since the config was asked): ask again, retry once.
        if (attempt === 0 && e instanceof ImError && e.status === 409 && e.code === 'conflict') {
          this._config = null;
          const fresh = await this.uploadConfig();
          if (fresh.upload !== config.upload) {
            config = fresh;
            continue;
          }
        }
        throw e;
      }
    }
  }

  async _uploadDirect(src, meta, token, progress, signal) {
    const q = new URLSearchParams();
    for (const k of ['name', 'width', 'height', 'duration_ms']) if (meta[k] != null) q.set(k, String(meta[k]));
    const qs = q.toString();
    const { status, text } = await this._exchange('POST', `${this._apiBase}/api/v1/attachments${qs ? `?${qs}` : ''}`, {
      token,
      headers: { 'content-type': meta.mime },
      body: src.body,
      onUpload: progress,
      signal,
      what: 'the upload',
    });
    if (status < 200 || status > 299) throw httpRefusal('the upload', status, text);
    return parseAttachment(text);
  }

  async _uploadPresigned(src, meta, token, progress, signal) {
    const bytes = await sourceBytes(src);
    const announce = { mime: meta.mime, size: src.size, sha256: await sha256Hex(bytes) };
    for (const k of ['name', 'width', 'height', 'duration_ms']) if (meta[k] != null) announce[k] = meta[k];
    const begun = await this._exchange('POST', `${this._apiBase}/api/v1/attachments/uploads`, {
      token,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(announce),
      signal,
      what: 'the upload',
    });
    if (begun.status < 200 || begun.status > 299) throw httpRefusal('the upload', begun.status, begun.text);
    const ticket = parseJson(begun.text, 'the upload ticket');
    if (!isAttachmentId(ticket?.id) || typeof ticket.url !== 'string' || !/^https?:\/\//i.test(ticket.url)) {
      throw new ImError('transport', 'the upload ticket is unreadable');
    }
    // To the object store: its headers (the type is signed), no token —
    // the URL is the authority. Length and Host are the runtime's to set.
    const headers = {};
    for (const [k, v] of Object.entries(ticket.headers ?? {})) {
      if (typeof v === 'string' && !/^(content-length|host|authorization)$/i.test(k)) headers[k] = v;
    }
    const put = await this._exchange(String(ticket.method || 'PUT').toUpperCase(), ticket.url, {
      headers,
      body: bytes,
      onUpload: progress,
      signal,
      what: 'the object store',
    });
    if (put.status < 200 || put.status > 299) throw httpRefusal('the object store', put.status, put.text);
    progress(src.size);
    const done = await this._exchange('POST', `${this._apiBase}/api/v1/attachments/${ticket.id}/complete`, {
      token,
      signal,
      what: 'completing the upload',
    });
    if (done.status < 200 || done.status > 299) throw httpRefusal('completing the upload', done.status, done.text);
    return parseAttachment(done.text);
  }

  /**
   * Downloads attachment `id` and resolves with its bytes (a Uint8Array).
   * `onProgress(received, total)` as they arrive (`total`: the length the
   * answer declared, or null); `signal` cancels. A presigned server
   * redirects to the object store, which fetch follows (dropping the
   * `Authorization` header on the way to another origin). An id that is
   * not an attachment id, or one the user may not see, rejects with
   * `rejected` / `no_such_attachment` (404).
   */
  async download(id, { onProgress, signal } = {}) {
    const token = this.token();
    if (!isAttachmentId(id)) throw notAnAttachment(id);
    if (!this._fetch) throw new ImError('unsupported', 'no fetch available: pass options.fetch');
    let resp;
    try {
      resp = await this._fetch(`${this._apiBase}/api/v1/attachments/${id}`, {
        headers: { authorization: `Bearer ${token}` },
        redirect: 'follow',
        signal,
      });
    } catch (e) {
      if (signal?.aborted) throw abortError('the download');
      throw new ImError('transport', `the download failed: ${e?.message ?? e}`);
    }
    if (!resp.ok) throw httpRefusal('the download', resp.status, await resp.text().catch(() => ''));
    const declared = resp.headers?.get?.('content-length');
    const total = declared != null && /^\d+$/.test(declared) ? Number(declared) : null;
    const report = (n) => {
      if (typeof onProgress !== 'function') return;
      try {
        onProgress(n, total);
      } catch (e) {
        this._onCallbackError(e);
      }
    };
    try {
      const reader = resp.body?.getReader?.();
      if (!reader) {
        const all = new Uint8Array(await resp.arrayBuffer());
        report(all.length);
        return all;
      }
      const chunks = [];
      let received = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        received += value.length;
        report(received);
      }
      if (chunks.length === 1) return chunks[0];
      const all = new Uint8Array(received);
      let at = 0;
      for (const c of chunks) {
        all.set(c, at);
        at += c.length;
      }
      if (received === 0) report(0);
      return all;
    } catch (e) {
      if (signal?.aborted) throw abortError('the download');
      throw new ImError('transport', `the download broke off: ${e?.message ?? e}`);
    }
  }

  /** The metadata of attachment `id` (GET /api/v1/attachments/{id}/info): the object `upload` resolved with. */
  async info(id) {
    const token = this.token();
    if (!isAttachmentId(id)) throw notAnAttachment(id);
    const { status, text } = await this._exchange('GET', `${this._apiBase}/api/v1/attachments/${id}/info`, { token, what: 'the attachment info' });
    if (status !== 200) throw httpRefusal('the attachment info', status, text);
    return parseAttachment(text);
  }

  /**
   * A URL of attachment `id` for `<img src>`, `<a href>`, `<audio src>`: the
   * API's download URL with the token as the `token` query parameter (the
   * server accepts it there, http-api.md §1; it ends up in that server's
   * logs and the browser's history, as any such URL). Throws
   * `invalid_argument` for a string that is not an attachment id and
   * `not_signed_in` before the client has a token.
   */
  url(id) {
    if (!isAttachmentId(id)) throw new ImError('invalid_argument', `${JSON.stringify(id)} is not an attachment id`);
    return `${this._apiBase}/api/v1/attachments/${id}?token=${encodeURIComponent(this.token())}`;
  }

  /** The token for HTTP calls (the current connection's, or the configured one), or `not_signed_in`. */
  token() {
    const token = this._token();
    if (!token) throw new ImError('not_signed_in', 'no token yet: a password login has one after the first connection (`connected`)');
    return token;
  }

  /** `report(sent)` calls `onProgress(sent, total)` for each rise of `sent` (0…total). */
  _progress(onProgress, total) {
    let last = -1;
    return (sent) => {
      if (typeof onProgress !== 'function') return;
      const n = Math.min(total, Math.max(0, Math.floor(sent)));
      if (n <= last) return;
      last = n;
      try {
        onProgress(n, total);
      } catch (e) {
        this._onCallbackError(e);
      }
    };
  }

  /**
   * One HTTP exchange of the attachment calls: `{status, text}`. With a body
   * and `onUpload`, through XMLHttpRequest when there is one (its upload
   * progress), else fetch. `token`: sent as `Authorization: Bearer`.
   */
  async _exchange(method, url, { token, headers = {}, body, onUpload, signal, what }) {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined && onUpload && this._XHR) {
      return xhrExchange(this._XHR, { method, url, headers: h, body, onUpload, signal, what });
    }
    if (!this._fetch) throw new ImError('unsupported', 'no fetch available: pass options.fetch');
    if (signal?.aborted) throw abortError(what);
    try {
      const resp = await this._fetch(url, { method, headers: h, body, signal });
      return { status: resp.status, text: await resp.text() };
    } catch (e) {
      if (signal?.aborted) throw abortError(what);
      throw new ImError('transport', `${what}: ${method} ${shortUrl(url)} failed: ${e?.message ?? e}`);
    }
  }
}
