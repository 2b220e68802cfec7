// pane.js — the open conversation: header (name, presence or member
// count, actions), messages grouped by sender with day separators and a
// "new messages" line, "load older" scroll-back, pending and failed sends,
// the typing line, the composer (Enter sends, Shift+Enter is a newline;
// the paperclip, dropping files on the conversation or pasting them
// attaches files: uploaded with progress, then sent as image/file
// messages), and marking read while the conversation is open and the page
// visible. Reactions, edits, recalls and notices: message-events.js.

import { attachmentDraft } from '/js/im-client.js';
import { describeError, historyPage } from './api.js';
import { sendErrorOverrides } from './blocks.js';
import { $, avatar, fileSize, fullTime, h, lastSeen, sameDay, setChildren, timeShort, toast, dayLabel } from './dom.js';
import { INLINE_IMAGES, renderBody } from './message.js';
import {
  cancelEdit, editedMark, eventKey, initMessageEvents, messageRow, noticeRow, recalledBody, renderEditBar, startEdit, submitEdit,
} from './message-events.js';
import {
  addMessage, changesMessage, convNumber, convTitle, isOnline, lowestId, noteRead, notify, PAGE, peerOf, S, sortedMessages, unreadOf, userName,
} from './store.js';

const GROUP_GAP_MS = 5 * 60_000; // a new sender group after 5 minutes of silence
let actions = { leave() {}, members() {}, back() {} };
let pendingScroll = null; // 'bottom' | 'prepend' | 'marker' | null: what the next render does to the scroll position
let pendingSeq = 0;
const bubbles = new Map(); // `${id}|${names}` -> element, for the open conversation

const current = () => (S.current ? S.convs.get(S.current) : null);
const utf8 = new TextEncoder();
let stuckToBottom = true; // the list was at its newest messages after the last scroll or render
const PREVIEW_MAX_BYTES = 4 * 1024 * 1024; // a local preview of an image being uploaded, up to this size

export function initPane(a) {
  actions = { ...actions, ...a };
  const input = $('#composer-input');
  const box = $('#messages');
  $('#composer').addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    }
  });
  input.addEventListener('input', () => {
    fitRows();
    const c = current();
    if (!c || c.editing) return;
    c.draft = input.value;
    if (c.kind !== 'room' && S.client?.connected) {
      S.client.typing(c.id, input.value.trim() !== '').catch(() => {});
    }
  });
  $('#older-btn').addEventListener('click', () => loadOlder());
  box.addEventListener('scroll', () => {
    stuckToBottom = nearBottom();
    if (box.scrollTop < 120) {
      const c = current();
      if (c && c.historyLoaded && canLoadOlder(c) && !c.loadingOlder) loadOlder();
    }
    updateJump();
    if (nearBottom()) markReadIfVisible();
  }, { passive: true });
  $('#jump-btn').addEventListener('click', () => {
    box.scrollTop = box.scrollHeight;
    updateJump();
  });
  // An image that loads grows the list: keep the newest in view if it was.
  $('#msg-list').addEventListener('load', (e) => {
    if (e.target instanceof HTMLImageElement && stuckToBottom) box.scrollTop = box.scrollHeight;
  }, true);
  initAttach();
  initMessageEvents();
  $('#conv-back').addEventListener('click', () => actions.back());
  $('#act-leave').addEventListener('click', () => current() && actions.leave(current()));
  $('#act-members').addEventListener('click', () => current() && actions.members(current()));
}

function fitRows() {
  const input = $('#composer-input');
  const lines = input.value.split('\n').length;
  input.rows = Math.min(6, Math.max(1, lines));
}

function nearBottom() {
  const box = $('#messages');
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function updateJump() {
  const box = $('#messages');
  $('#jump-btn').hidden = box.scrollHeight - box.scrollTop - box.clientHeight < 400;
}

// ------------------------------------------------------------ opening

/** Shows conversation `id` (null: none). */
export function openConv(id) {
  const prev = current();
  const input = $('#composer-input');
  if (prev?.editing) cancelEdit(prev);
  if (prev) prev.draft = input.value;
  S.current = id;
  bubbles.clear();
  const c = current();
  document.body.classList.toggle('conv-open', !!c);
  $('#pane-empty').hidden = !!c;
  $('#pane-conv').hidden = !c;
  if (!c) {
    renderEditBar(null);
    notify('list');
    return;
  }
  c.shown = PAGE;
  c.unreadMarker = unreadOf(c) > 0 ? c.read : 0;
  input.value = c.draft ?? '';
  fitRows();
  renderEditBar(c);
  pendingScroll = c.unreadMarker ? 'marker' : 'bottom';
  if (!c.historyLoaded) loadLatest(c);
  if (c.kind === 'direct' && S.client?.connected) {
    const peer = peerOf(c.id);
    S.client.queryPresence([peer]).then((list) => {
      for (const p of list) S.presence.set(p.user, p);
      notify('head', 'list');
    }, () => {});
  }
  if (c.kind === 'group') actions.groupInfo?.(c);
  notify('head', 'messages', 'typing', 'list');
  markReadIfVisible();
  if (window.matchMedia('(pointer: fine)').matches) input.focus({ preventScroll: true });
}

/** One page of history: over the WebSocket when connected, else over HTTP. */
async function fetchHistory(conv, opts) {
  if (S.client?.connected) {
    try {
      return await S.client.history(conv, opts);
    } catch (e) {
      if (e?.kind === 'rejected') throw e;
      // disconnected or timed out: ask HTTP instead
    }
  }
  const page = await historyPage(conv, opts);
  return { messages: page?.messages ?? [], hasMore: !!page?.has_more };
}

function applyPage(c, page) {
  const lowBefore = lowestId(c);
  for (const m of page.messages) addMessage(m);
  const first = page.messages[0]?.id;
  // has_more speaks for what lies below this page; it matters only if this
  // page reaches lower than what was already known.
  if (first == null || lowBefore == null || first <= lowBefore) c.hasMore = page.hasMore;
}

async function loadLatest(c) {
  c.loadingOlder = true;
  notify('messages');
  try {
    applyPage(c, await fetchHistory(c.id, { limit: PAGE }));
    c.historyLoaded = true;
    c.loadError = null;
  } catch (e) {
    c.loadError = describeError(e);
  } finally {
    c.loadingOlder = false;
    if (S.current === c.id) {
      if (!pendingScroll) pendingScroll = c.unreadMarker ? 'marker' : nearBottom() ? 'bottom' : null;
      notify('messages', 'list');
      markReadIfVisible();
    }
  }
}

function canLoadOlder(c) {
  if (c.messages.size > c.shown) return true;
  const low = lowestId(c);
  return c.hasMore && low !== 1;
}

async function loadOlder() {
  const c = current();
  if (!c || c.loadingOlder) return;
  if (!c.historyLoaded) return loadLatest(c);
  if (c.messages.size > c.shown) {
    c.shown += PAGE;
    pendingScroll = 'prepend';
    notify('messages');
    return;
  }
  if (!canLoadOlder(c)) return;
  c.loadingOlder = true;
  notify('messages');
  try {
    const page = await fetchHistory(c.id, { before: lowestId(c) ?? undefined, limit: PAGE });
    applyPage(c, page);
    c.shown = Math.max(c.shown, c.messages.size);
  } catch (e) {
    toast(`Could not load older messages: ${describeError(e)}`);
  } finally {
    c.loadingOlder = false;
    if (S.current === c.id) {
      pendingScroll = 'prepend';
      notify('messages');
    }
  }
}

// ------------------------------------------------------------ read marks

/** Marks the open conversation read up to its newest loaded message, if the page is visible. */
export function markReadIfVisible() {
  const c = current();
  if (!c || !S.client || document.visibilityState !== 'visible') return;
  const top = c.newest; // events included
  if (top <= c.read) return;
  try {
    S.client.markRead(c.id, top);
  } catch {
    return; // the client stopped; a new one marks again
  }
  noteRead(c, top);
  notify('list', 'title');
}

/** A message arrived for the open conversation. */
export function messageArrived(c, m) {
  if (c.id !== S.current) return;
  if (changesMessage(m)) {
    // A reaction, edit or recall changes a message in place: the view stays where it is.
    if (nearBottom()) markReadIfVisible();
    return;
  }
  if (!pendingScroll) pendingScroll = m.from === S.me.id || nearBottom() ? 'bottom' : null;
  if (nearBottom() || m.from === S.me.id) markReadIfVisible();
}

// ------------------------------------------------------------ sending

function submit() {
  const c = current();
  const input = $('#composer-input');
  const text = input.value;
  if (c?.editing) {
    submitEdit(c, text);
    return;
  }
  if (!c || !text.trim()) return;
  const max = S.client?.limits?.max_body_bytes ?? 4096;
  if (utf8.encode(text).length > max) {
    toast(`This message is too long (at most ${max} bytes).`);
    return;
  }
  input.value = '';
  c.draft = '';
  fitRows();
  send(c, { body: text });
}

async function send(c, draft) {
  const p = { key: `p${++pendingSeq}`, body: draft.body, draft, ts: Date.now(), status: 'sending', error: null };
  c.pending.push(p);
  c.activity = Math.max(c.activity, p.ts);
  if (S.current === c.id) pendingScroll = 'bottom';
  notify('messages', 'list');
  if (!S.client) {
    p.status = 'failed';
    p.error = 'Not connected.';
    notify('messages', 'list');
    return;
  }
  try {
    await S.client.send(c.id, draft);
    c.pending = c.pending.filter((x) => x !== p); // the stored message came as a `message` event
  } catch (e) {
    p.status = 'failed';
    p.error = describeError(e, sendErrorOverrides(c)); // a refused direct message says why (blocks.js)
  }
  notify('messages', 'list');
}

function retry(c, p) {
  c.pending = c.pending.filter((x) => x !== p);
  send(c, p.draft);
}

function discard(c, p) {
  c.pending = c.pending.filter((x) => x !== p);
  notify('messages', 'list');
}

// ------------------------------------------------------------ attachments

function initAttach() {
  const picker = $('#file-input');
  $('#attach-btn').addEventListener('click', () => {
    if (current()) picker.click();
  });
  picker.addEventListener('change', () => {
    const files = [...(picker.files ?? [])];
    picker.value = ''; // the same file can be picked again
    attachFiles(files);
  });
  $('#composer-input').addEventListener('paste', (e) => {
    const files = [...(e.clipboardData?.files ?? [])];
    if (files.length === 0) return;
    e.preventDefault();
    attachFiles(files);
  });
  // Dropping files anywhere on the open conversation.
  const pane = $('#pane-conv');
  const zone = $('#drop-zone');
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
  pane.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth += 1;
    zone.hidden = false;
  });
  pane.addEventListener('dragover', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  pane.addEventListener('dragleave', (e) => {
    if (!hasFiles(e)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.hidden = true;
  });
  pane.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    zone.hidden = true;
    attachFiles([...(e.dataTransfer.files ?? [])]);
  });
}

/** Uploads and sends `files` to the open conversation, each as its own message, in order. */
function attachFiles(files) {
  const c = current();
  if (!c || files.length === 0) return;
  if (!S.client) {
    toast('Not connected.');
    return;
  }
  for (const file of files.slice(0, 20)) {
    const mime = file.type || 'application/octet-stream';
    const image = INLINE_IMAGES.has(mime);
    const p = {
      key: `p${++pendingSeq}`,
      upload: true,
      file,
      name: file.name || 'file',
      mime,
      image,
      size: file.size,
      body: `${image ? '🖼' : '📄'} ${file.name || 'file'}`, // the sidebar's preview
      ts: Date.now(),
      status: 'uploading',
      sent: 0,
      error: null,
      retryable: true,
      attachment: null,
      abort: null,
      preview: null,
      els: null,
      after: c.lastFileQueued ?? Promise.resolve(), // uploads run side by side; the sends go out in order
      queued: null,
    };
    p.turn = new Promise((resolve) => {
      p.queued = resolve;
    });
    c.lastFileQueued = p.turn;
    c.pending.push(p);
    c.activity = Math.max(c.activity, p.ts);
    if (image && file.size <= PREVIEW_MAX_BYTES) makePreview(c, p);
    sendFile(c, p);
  }
  if (files.length > 20) toast('At most 20 files at a time.');
  if (S.current === c.id) pendingScroll = 'bottom';
  notify('messages', 'list');
}

/** A data: URL of the image being uploaded (the page's CSP allows data: images, not blob:). */
function makePreview(c, p) {
  const reader = new FileReader();
  reader.addEventListener('load', () => {
    if (typeof reader.result !== 'string' || !c.pending.includes(p)) return;
    p.preview = reader.result;
    if (S.current === c.id) notify('messages');
  });
  reader.readAsDataURL(p.file);
}

/** Width and height of an image file, or {} (then the receiver learns them when it loads). */
async function imageSize(file) {
  if (typeof createImageBitmap !== 'function') return {};
  try {
    const bmp = await createImageBitmap(file);
    const size = { width: bmp.width, height: bmp.height };
    bmp.close?.();
    return size;
  } catch {
    return {};
  }
}

async function sendFile(c, p) {
  p.status = p.attachment ? 'sending' : 'uploading';
  p.error = null;
  const client = S.client;
  try {
    if (!client) throw Object.assign(new Error('Not connected.'), { kind: 'stopped' });
    if (!p.attachment) {
      const ac = new AbortController();
      p.abort = ac;
      p.sent = 0;
      const dims = p.image ? await imageSize(p.file) : {};
      p.attachment = await client.upload(p.file, {
        mime: p.mime,
        name: p.name,
        ...dims,
        signal: ac.signal,
        onProgress: (sent) => uploadProgress(p, sent),
      });
      p.abort = null;
      p.status = 'sending';
      notify('messages');
    }
    await p.after; // the file picked before this one is in the outbox (or failed)
    const sent = client.send(c.id, attachmentDraft(p.attachment));
    p.queued();
    await sent;
    c.pending = c.pending.filter((x) => x !== p); // the stored message came as a `message` event
  } catch (e) {
    p.queued();
    p.abort = null;
    if (e?.kind === 'aborted') {
      c.pending = c.pending.filter((x) => x !== p);
    } else {
      p.status = 'failed';
      p.error = uploadError(e, c);
      // A file that is too large or of a refused type stays refused.
      p.retryable = !['body_too_large', 'unsupported_media_type', 'invalid_field'].includes(e?.code);
    }
  }
  notify('messages', 'list');
}

function uploadError(e, c) {
  if (e?.code === 'body_too_large') {
    return Number.isFinite(e.max) ? `the file is too large (at most ${fileSize(e.max)})` : 'the file is too large';
  }
  return describeError(e, sendErrorOverrides(c)).replace(/\.$/, '');
}

/** Progress of an upload: changes its bubble in place (no redraw of the list for every step). */
function uploadProgress(p, sent) {
  p.sent = sent;
  if (!p.els) return;
  p.els.bar.value = sent;
  p.els.meta.textContent = progressText(p);
}

function progressText(p) {
  if (p.status === 'uploading') {
    const pct = p.size > 0 ? Math.floor((p.sent / p.size) * 100) : 100;
    return `${fileSize(p.sent)} of ${fileSize(p.size)} · ${pct}%`;
  }
  return fileSize(p.size);
}

function uploadBubble(c, p) {
  const bar = h('progress', { class: 'upload-bar', max: Math.max(1, p.size), value: p.sent, 'aria-label': `Uploading ${p.name}` });
  const meta = h('span', { class: 'card-meta' }, progressText(p));
  p.els = { bar, meta };
  const thumb = p.preview
    ? h('img', { class: 'upload-thumb', src: p.preview, alt: '' })
    : h('span', { class: 'card-icon', 'aria-hidden': 'true' }, p.image ? '🖼' : '📄');
  let status;
  if (p.status === 'failed') {
    status = h('div', { class: 'send-status failed' }, `Not sent — ${p.error} `,
      p.retryable ? [h('button', { type: 'button', class: 'link-btn', onclick: () => retryFile(c, p) }, 'Retry'), ' · '] : null,
      h('button', { type: 'button', class: 'link-btn', onclick: () => discard(c, p) }, 'Delete'));
  } else if (p.status === 'uploading') {
    status = h('div', { class: 'send-status' }, 'Uploading… ',
      h('button', { type: 'button', class: 'link-btn', onclick: () => p.abort?.abort() }, 'Cancel'));
  } else {
    status = h('div', { class: 'send-status' }, S.client?.connected ? 'Sending…' : 'Waiting for connection…');
  }
  return [
    h('div', { class: `bubble upload ${p.status}`, dataset: { upload: p.status } },
      h('div', { class: 'card upload-card' }, thumb,
        h('span', { class: 'card-text' }, h('span', { class: 'card-title' }, p.name), meta)),
      p.status === 'uploading' ? bar : null),
    status,
  ];
}

function retryFile(c, p) {
  c.pending = c.pending.filter((x) => x !== p);
  c.pending.push(p);
  p.after = Promise.resolve(); // a retry waits for nothing
  sendFile(c, p);
  notify('messages', 'list');
}

// ------------------------------------------------------------ rendering

export function renderPane(parts) {
  const c = current();
  if (!c) return;
  if (parts.has('head') || parts.has('conn')) renderHead(c);
  if (parts.has('messages')) renderMessages(c);
  if (parts.has('typing') || parts.has('messages')) renderTyping(c);
}

function renderHead(c) {
  const title = convTitle(c);
  let sub;
  let av;
  if (c.kind === 'direct') {
    const peer = peerOf(c.id);
    const p = S.presence.get(peer);
    sub = isOnline(peer) ? 'online' : p ? lastSeen(p.last_active_at) : '';
    av = h('span', { class: 'avatar-wrap' }, avatar(title, peer, 'direct'), h('span', { class: `presence-dot ${isOnline(peer) ? 'online' : 'offline'}` }));
  } else if (c.kind === 'group') {
    const g = S.groups.get(convNumber(c.id));
    sub = g?.members ? `${g.members.length} member${g.members.length === 1 ? '' : 's'}` : 'Group';
    av = avatar(title, c.id, 'group');
  } else {
    sub = 'Public room';
    av = avatar(title, c.id, 'room');
  }
  setChildren($('#conv-avatar'), av);
  $('#conv-title').textContent = title;
  $('#conv-sub').textContent = sub;
  $('#conv-sub').classList.toggle('online', c.kind === 'direct' && isOnline(peerOf(c.id)));
  $('#act-members').hidden = c.kind !== 'group';
  $('#act-leave').hidden = c.kind === 'direct';
  $('#composer-input').placeholder = `Message ${c.kind === 'direct' ? title : c.kind === 'room' ? `#${title}` : title}`;
}

function replyQuote(c, m) {
  const target = c.messages.get(m.reply_to);
  const said = target?.recalled != null ? 'This message was recalled' : target?.body;
  const text = target ? `${userName(target.from)}: ${said}` : 'an earlier message';
  return h(
    'button',
    {
      type: 'button',
      class: 'reply-quote',
      onclick: () => document.getElementById(`msg-${m.reply_to}`)?.scrollIntoView({ behavior: 'smooth', block: 'center' }),
    },
    h('span', { class: 'reply-arrow', 'aria-hidden': 'true' }, '↩ '),
    text,
  );
}

/** A message's row (its bubble with reactions and actions), or a system notice's line; kept while unchanged. */
function bubble(c, m) {
  const quoted = m.reply_to ? c.messages.get(m.reply_to) : null;
  const quoteKey = m.reply_to ? `${!!quoted}:${quoted?.edited ?? ''}:${quoted?.recalled ?? ''}` : '';
  const key = `${m.id}|${S.users.size}|${quoteKey}|${eventKey(c, m)}`;
  const cached = bubbles.get(m.id);
  if (cached && cached.key === key) return cached.el;
  let el;
  if (m.kind === 'system') el = noticeRow(m, fullTime(m.ts));
  else {
    const mentioned = Array.isArray(m.mentions) && m.mentions.includes(S.me.id);
    const recalled = m.recalled != null;
    const b = h(
      'div',
      { class: `bubble${mentioned ? ' mentioned' : ''}${recalled ? ' recalled' : ''}${m.kind && m.kind !== 'text' ? ` kind-${m.kind.replace(/[^a-z0-9-]/g, '')}` : ''}`, id: `msg-${m.id}`, title: fullTime(m.ts) },
      recalled ? recalledBody() : [m.reply_to ? replyQuote(c, m) : null, renderBody(m), editedMark(m)],
    );
    el = messageRow(c, m, b, startEdit);
  }
  bubbles.set(m.id, { key, el });
  return el;
}

function groupEl(c, from, ts, own, pending = false) {
  const body = h('div', { class: 'group-body' });
  const name = !own && c.kind !== 'direct' ? h('span', { class: 'sender' }, userName(from)) : null;
  const el = h(
    'div',
    { class: `msg-group ${own ? 'own' : 'other'}${pending ? ' pending' : ''}` },
    !own ? avatar(userName(from), from, 'direct', 'small') : null,
    h('div', { class: 'group-main' }, h('div', { class: 'group-head' }, name, h('time', { class: 'stamp', datetime: new Date(ts || Date.now()).toISOString(), title: fullTime(ts) }, timeShort(ts))), body),
  );
  return { el, body, from, lastTs: ts };
}

function pendingBubble(c, p) {
  const status =
    p.status === 'failed'
      ? h('div', { class: 'send-status failed' }, `Not sent — ${p.error} `,
          h('button', { type: 'button', class: 'link-btn', onclick: () => retry(c, p) }, 'Retry'), ' · ',
          h('button', { type: 'button', class: 'link-btn', onclick: () => discard(c, p) }, 'Delete'))
      : h('div', { class: 'send-status' }, S.client?.connected ? 'Sending…' : 'Waiting for connection…');
  return [h('div', { class: `bubble ${p.status}` }, h('div', { class: 'text' }, p.body)), status];
}

const pendingItem = (c, p) => (p.upload ? uploadBubble(c, p) : pendingBubble(c, p));

function renderMessages(c) {
  const box = $('#messages');
  const list = $('#msg-list');
  const wasBottom = nearBottom();
  const fromBottom = box.scrollHeight - box.scrollTop;
  const all = sortedMessages(c);
  const shown = all.slice(Math.max(0, all.length - c.shown));

  const olderBtn = $('#older-btn');
  const more = canLoadOlder(c);
  $('#older').hidden = !(c.loadingOlder || (c.historyLoaded && more) || c.loadError);
  olderBtn.disabled = c.loadingOlder;
  olderBtn.textContent = c.loadingOlder ? 'Loading…' : c.loadError ? `Could not load messages (${c.loadError}) — try again` : 'Load older messages';

  const nodes = [];
  let group = null;
  let prev = null;
  for (const m of shown) {
    if (!prev || !sameDay(prev.ts, m.ts)) {
      nodes.push(h('div', { class: 'day-sep', role: 'separator' }, h('span', null, dayLabel(m.ts))));
      group = null;
    }
    if (c.unreadMarker && prev && prev.id <= c.unreadMarker && m.id > c.unreadMarker) {
      nodes.push(h('div', { class: 'unread-sep', id: 'unread-marker', role: 'separator' }, h('span', null, 'New messages')));
      group = null;
    }
    if (m.kind === 'system') {
      nodes.push(bubble(c, m));
      group = null;
      prev = m;
      continue;
    }
    if (!group || group.from !== m.from || m.ts - group.lastTs > GROUP_GAP_MS) {
      group = groupEl(c, m.from, m.ts, m.from === S.me.id);
      nodes.push(group.el);
    }
    group.body.append(bubble(c, m));
    group.lastTs = m.ts;
    prev = m;
  }
  if (c.pending.length) {
    const g = groupEl(c, S.me.id, c.pending[0].ts, true, true);
    for (const p of c.pending) g.body.append(...pendingItem(c, p));
    nodes.push(g.el);
  }
  if (nodes.length === 0) {
    nodes.push(h('div', { class: 'pane-note' }, c.historyLoaded ? 'No messages yet. Say hello!' : c.loadError ? '' : 'Loading messages…'));
  }
  setChildren(list, nodes);

  const mode = pendingScroll;
  pendingScroll = null;
  if (mode === 'marker' && document.getElementById('unread-marker')) {
    document.getElementById('unread-marker').scrollIntoView({ block: 'center' });
  } else if (mode === 'bottom' || mode === 'marker' || (wasBottom && mode !== 'prepend')) {
    box.scrollTop = box.scrollHeight;
  } else if (mode === 'prepend') {
    box.scrollTop = box.scrollHeight - fromBottom;
  }
  stuckToBottom = nearBottom();
  updateJump();
}

function renderTyping(c) {
  const el = $('#typing');
  const names = [...c.typing.keys()].filter((u) => u !== S.me.id).map(userName);
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  el.textContent = text;
  el.classList.toggle('active', !!text);
}

