// sidebar.js — the left column: who is signed in, the connection state,
// the actions (new chat / group / room, browse rooms), a filter, and the
// conversation list (newest activity first) with unread badges, previews,
// typing and presence dots.

import { $, avatar, h, listTime, setChildren } from './dom.js';
import { previewText } from './message.js';
import { convTitle, isOnline, peerOf, S, sortedConvs, totalUnread, unreadOf, userName } from './store.js';

let onOpen = () => {};
let onRetry = () => {};

export function initSidebar({ open, retry }) {
  onOpen = open;
  onRetry = retry;
  $('#conv-filter').addEventListener('input', (e) => {
    S.filter = e.target.value.trim().toLowerCase();
    renderList();
  });
}

/** The me block at the top. */
export function renderMe() {
  const el = $('#me');
  setChildren(el, avatar(S.me.username, S.me.id, 'direct'), h('span', { class: 'me-name', title: `Signed in as ${S.me.username}` }, S.me.username));
}

let connParts = null; // the connection line's dot, text and button, made once

/**
 * "connected", "reconnecting in 2 s", "offline" (with a Reconnect button).
 * Updated in place: the line is redrawn every second while reconnecting,
 * and a button made anew each time would lose a click pressed across a
 * redraw, and the keyboard focus.
 */
export function renderConn() {
  const el = $('#conn');
  const c = S.conn;
  let text;
  let cls = c.state;
  switch (c.state) {
    case 'connected': text = 'connected'; break;
    case 'syncing': text = 'syncing…'; break;
    case 'connecting': text = 'connecting…'; break;
    case 'reconnecting': {
      const s = Math.ceil((c.until - Date.now()) / 1000);
      text = s > 0 ? `reconnecting in ${s} s` : 'connecting…';
      break;
    }
    default: text = c.detail ? `offline — ${c.detail}` : 'offline'; cls = 'offline';
  }
  if (c.state !== 'offline' && navigator.onLine === false) {
    text = 'offline — waiting for network';
    cls = 'offline';
  }
  if (!connParts || connParts.text.parentNode !== el) {
    connParts = {
      dot: h('span', { class: 'conn-dot', 'aria-hidden': 'true' }),
      text: h('span', { class: 'conn-text' }),
      // Only a stopped client can be restarted from here; one that is
      // reconnecting does so by itself (and at once when the network comes
      // back or the page is shown again: app.js calls reconnectNow).
      retry: h('button', { type: 'button', class: 'link-btn', hidden: true, onclick: () => onRetry() }, 'Reconnect'),
    };
    setChildren(el, connParts.dot, connParts.text, connParts.retry);
  }
  el.className = `conn conn-${cls}`;
  if (connParts.text.textContent !== text) connParts.text.textContent = text;
  connParts.retry.hidden = c.state !== 'offline';
}

function typingLine(c) {
  const names = [...c.typing.keys()].map(userName);
  if (names.length === 0) return null;
  if (c.kind === 'direct') return 'typing…';
  return names.length === 1 ? `${names[0]} is typing…` : `${names.length} people are typing…`;
}

function preview(c) {
  const t = typingLine(c);
  if (t) return h('span', { class: 'preview typing-preview' }, t);
  const pendingLast = c.pending.at(-1);
  if (pendingLast) return h('span', { class: 'preview' }, `You: ${pendingLast.body}`);
  const m = c.last;
  if (!m) {
    return h('span', { class: 'preview muted' }, c.kind === 'room' ? 'Room · no messages yet' : c.kind === 'group' ? 'Group · no messages yet' : 'Say hello 👋');
  }
  // A system notice says who did what itself.
  const who = m.kind === 'system' ? '' : m.from === S.me.id ? 'You: ' : c.kind === 'direct' ? '' : `${userName(m.from)}: `;
  return h('span', { class: 'preview' }, who + previewText(m));
}

/** A row's button as it should look now (its content; renderList keeps one button per row). */
function rowButton(c) {
  const title = convTitle(c);
  const unread = unreadOf(c);
  const muted = c.mutedUntil && c.mutedUntil > Date.now();
  let av;
  if (c.kind === 'direct') {
    const peer = peerOf(c.id);
    av = h('span', { class: 'avatar-wrap' }, avatar(title, peer, 'direct'), h('span', { class: `presence-dot ${isOnline(peer) ? 'online' : 'offline'}`, title: isOnline(peer) ? 'online' : 'offline' }));
  } else {
    av = h('span', { class: 'avatar-wrap' }, avatar(title, c.id, c.kind));
  }
  const time = c.last ? listTime(c.last.ts) : '';
  return h(
    'button',
    {
      type: 'button',
      class: `conv-btn${S.current === c.id ? ' active' : ''}${unread > 0 ? ' has-unread' : ''}`,
      'aria-current': S.current === c.id ? 'true' : null,
    },
    av,
    h(
      'span',
      { class: 'conv-main' },
      h('span', { class: 'conv-top' }, h('span', { class: 'conv-title' }, title), h('span', { class: 'conv-time' }, time)),
      h(
        'span',
        { class: 'conv-bottom' },
        preview(c),
        muted ? h('span', { class: 'muted-icon', title: 'muted' }, '🔕') : null,
        unread > 0 ? h('span', { class: `badge${muted ? ' badge-muted' : ''}`, 'aria-label': `${unread} unread` }, unread > 99 ? '99+' : String(unread)) : null,
      ),
    ),
  );
}

const rows = new Map(); // conv id -> {li, btn, html}: the list's rows, kept across renders

/**
 * The conversation list. Rows are kept per conversation and changed in
 * place only where they differ: the list is redrawn on every message,
 * typing and presence change, and rows made anew each time would lose a
 * click pressed across a redraw (mousedown and mouseup on different
 * elements make no click) and the keyboard focus.
 */
export function renderList() {
  const list = $('#conv-list');
  const f = S.filter;
  const convs = sortedConvs().filter((c) => !f || convTitle(c).toLowerCase().includes(f));
  const wanted = [];
  for (const c of convs) {
    const fresh = rowButton(c);
    let row = rows.get(c.id);
    if (!row) {
      const btn = h('button', { type: 'button', onclick: () => onOpen(c.id) });
      row = { li: h('li', { class: 'conv-item' }, btn), btn, html: null };
      rows.set(c.id, row);
    }
    const html = fresh.outerHTML;
    if (row.html !== html) {
      row.html = html;
      for (const a of [...row.btn.attributes]) if (!fresh.hasAttribute(a.name)) row.btn.removeAttribute(a.name);
      for (const a of [...fresh.attributes]) if (row.btn.getAttribute(a.name) !== a.value) row.btn.setAttribute(a.name, a.value);
      row.btn.replaceChildren(...fresh.childNodes);
    }
    wanted.push(row.li);
  }
  for (const id of rows.keys()) if (!S.convs.has(id)) rows.delete(id); // left or signed out
  // Move only what is out of place: a row that stays is not touched.
  wanted.forEach((li, i) => {
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
  });
  while (list.children.length > wanted.length) list.lastElementChild.remove();
  const empty = $('#conv-empty');
  empty.hidden = convs.length > 0;
  empty.textContent = f ? 'No conversation matches.' : 'No conversations yet. Start a chat, create a group or join a room.';
}

export function renderTitle() {
  const n = totalUnread();
  document.title = n > 0 ? `(${n > 99 ? '99+' : n}) im chat` : 'im chat';
}
