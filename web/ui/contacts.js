// contacts.js — contacts (docs/http-api.md §9.1) in the sidebar's Contacts
// tab: a field that adds a contact by username (users/by-name, then
// POST /contacts/{id}), incoming requests (Accept / Decline), accepted
// contacts with their presence (Chat, Remove, Block), requests sent
// (Cancel), and the users blocked here (Unblock). Loaded with
// GET /contacts at sign-in and after every connect, kept live by the
// client's `contact` events; the tab's badge counts incoming requests.
// Also the "Add contact" / "Accept request" button of a direct chat's
// header.

import * as api from './api.js';
import { blockBusy, setBlocked } from './blocks.js';
import { $, avatar, h, lastSeen, toast } from './dom.js';
import { openConv } from './pane.js';
import { ensureConv, isOnline, notify, onRender, peerOf, requestUser, S, userName } from './store.js';

const USERNAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;
const busy = new Set(); // users with a contact change on its way
let loading = null; // {seq, events}: a GET /contacts on its way, and the events heard meanwhile
let loadSeq = 0;

export function initContacts() {
  $('#tab-chats').addEventListener('click', () => showSide('chats'));
  $('#tab-contacts').addEventListener('click', () => showSide('contacts'));
  $('#contact-add').addEventListener('submit', (e) => {
    e.preventDefault();
    addByName();
  });
  $('#act-contact').addEventListener('click', () => {
    const c = S.current ? S.convs.get(S.current) : null;
    if (c?.kind === 'direct') ask(peerOf(c.id));
  });
  onRender((parts) => {
    if (!S.me) return;
    if (parts.has('contacts') || parts.has('list')) renderContacts(); // presence changes redraw 'list'
    if (parts.has('contacts') || parts.has('head')) renderContactHead();
  });
}

/** Shows the sidebar's conversation list ('chats') or its contacts ('contacts'). */
export function showSide(view) {
  S.side = view === 'contacts' ? 'contacts' : 'chats';
  for (const [tab, panel, name] of [['#tab-chats', '#chats-view', 'chats'], ['#tab-contacts', '#contacts-view', 'contacts']]) {
    const on = S.side === name;
    $(tab).classList.toggle('active', on);
    $(tab).setAttribute('aria-selected', String(on));
    $(panel).hidden = !on;
  }
  if (S.side === 'contacts') renderContacts();
}

// ------------------------------------------------------------- state

/** Requests and contacts from the server; events heard while it is asked are applied on top. */
export async function loadContacts() {
  const seq = ++loadSeq;
  const mine = { seq, events: [] };
  loading = mine;
  try {
    const r = await api.contacts();
    if (loading !== mine || !S.me) return;
    S.contacts.clear();
    for (const e of r?.contacts ?? []) {
      S.contacts.set(e.user_id, { state: e.state, since: e.since ?? 0 });
      if (e.presence) S.presence.set(e.user_id, e.presence);
      requestUser(e.user_id);
    }
    for (const ev of mine.events) applyState(ev.user, ev.state);
    notify('contacts', 'list', 'head');
  } catch (e) {
    if (e?.code !== 'unauthorized') console.warn('loading contacts failed', e);
  } finally {
    if (loading === mine) loading = null;
  }
}

function applyState(user, state) {
  if (state === 'none') S.contacts.delete(user);
  else if (state === 'requested' || state === 'pending' || state === 'accepted') {
    const was = S.contacts.get(user);
    S.contacts.set(user, { state, since: was?.state === state ? was.since : Date.now() });
  }
}

/** A `contact` event of the client: a request arrived or was sent (here or elsewhere), was accepted, or ended. */
export function contactEvent({ user, state }) {
  if (!Number.isInteger(user) || user === S.me?.id) return;
  const was = S.contacts.get(user)?.state ?? 'none';
  loading?.events.push({ user, state });
  applyState(user, state);
  requestUser(user).then(() => {
    if (state === 'pending' && was !== 'pending') toast(`${userName(user)} wants to be your contact.`, 'info');
    if (state === 'accepted' && was === 'requested') toast(`${userName(user)} accepted your contact request.`, 'info');
    notify('contacts');
  });
  if (state === 'accepted') askPresence(user); // contacts see each other's presence from now on
  notify('contacts', 'head', 'list');
}

function askPresence(user) {
  S.client?.queryPresence([user]).then((list) => {
    for (const p of list) S.presence.set(p.user, p);
    notify('list', 'head', 'contacts');
  }, () => {});
}

// ------------------------------------------------------------- actions

const friendly = (user) => ({ forbidden: `You cannot send ${userName(user)} a contact request.` });

/** Asks `user` to be contacts, or accepts their request. */
async function ask(user) {
  if (busy.has(user)) return;
  busy.add(user);
  notify('contacts', 'head');
  try {
    const r = await api.askContact(user);
    applyState(user, r?.state ?? 'requested');
    if (r?.state === 'accepted') askPresence(user);
    return r;
  } catch (e) {
    toast(api.describeError(e, friendly(user)));
    return null;
  } finally {
    busy.delete(user);
    notify('contacts', 'head', 'list');
  }
}

/** Declines, cancels or removes (for both sides). */
async function end(user, confirmText) {
  if (busy.has(user)) return;
  if (confirmText && !window.confirm(confirmText)) return;
  busy.add(user);
  notify('contacts', 'head');
  try {
    await api.endContact(user);
    S.contacts.delete(user);
  } catch (e) {
    toast(`Could not do that: ${api.describeError(e)}`);
  } finally {
    busy.delete(user);
    notify('contacts', 'head', 'list');
  }
}

/** The add field: a username, resolved, then asked. */
async function addByName() {
  const input = $('#contact-add-input');
  const error = $('#contact-add-error');
  const btn = $('#contact-add-btn');
  const name = input.value.trim().replace(/^@/, '');
  const fail = (text) => {
    error.textContent = text;
    error.hidden = false;
  };
  error.hidden = true;
  if (!name) return fail('Enter a username.');
  if (!USERNAME_RE.test(name)) return fail(`"${name}" is not a valid username.`);
  if (name === S.me.username) return fail('That is you — pick someone else.');
  btn.disabled = true;
  try {
    let u;
    try {
      u = await api.userByName(name);
    } catch (e) {
      return fail(e?.code === 'no_such_user' ? `There is no user named "${name}".` : api.describeError(e));
    }
    S.users.set(u.id, u);
    if (S.blocks.has(u.id)) return fail(`You blocked ${u.username}: unblock them first.`);
    const was = S.contacts.get(u.id)?.state;
    if (was === 'accepted') return fail(`${u.username} is already a contact.`);
    if (was === 'requested') return fail(`You already asked ${u.username}.`);
    const r = await ask(u.id);
    if (!r) return; // ask() said why
    input.value = '';
    toast(r.state === 'accepted' ? `${u.username} is now a contact.` : `Contact request sent to ${u.username}.`, 'info');
  } finally {
    btn.disabled = false;
  }
}

const directId = (a, b) => (a < b ? `d:${a}:${b}` : `d:${b}:${a}`);

/** Opens the direct chat with `user` (made on the server with its first message). */
function openChat(user) {
  const id = directId(S.me.id, user);
  const c = ensureConv(id);
  c.activity = Math.max(c.activity, Date.now());
  showSide('chats');
  openConv(id);
  history.replaceState(null, '', `#${id}`);
  notify('list');
}

// ------------------------------------------------------------- rendering

const rows = new Map(); // `${section}:${user}` -> {key, li}: rows kept while unchanged (a redraw loses no click)

function presenceText(user) {
  if (isOnline(user)) return 'online';
  const p = S.presence.get(user);
  return p ? lastSeen(p.last_active_at) : 'offline';
}

const btn = (label, cls, onclick, disabled) => h('button', { type: 'button', class: `btn small ${cls}`, onclick, disabled }, label);

/** One person's row in `section`: avatar (with a presence dot for contacts), name, a line, actions. */
function row(section, user) {
  const name = userName(user);
  const wait = busy.has(user) || blockBusy(user);
  let sub;
  let actions;
  if (section === 'incoming') {
    sub = 'sent you a request';
    actions = [btn('Accept', 'primary', () => ask(user), wait), btn('Decline', '', () => end(user), wait)];
  } else if (section === 'contacts') {
    sub = presenceText(user);
    actions = [
      btn('Chat', 'primary', () => openChat(user), false),
      btn('Remove', '', () => end(user, `Remove ${name} from your contacts?`), wait),
      btn('Block', 'danger', () => setBlocked(user, true), wait),
    ];
  } else if (section === 'outgoing') {
    sub = 'request sent';
    actions = [btn('Cancel', '', () => end(user), wait)];
  } else {
    sub = 'blocked';
    actions = [btn('Unblock', '', () => setBlocked(user, false), wait)];
  }
  const online = section === 'contacts' && isOnline(user);
  const key = JSON.stringify([name, sub, online, wait]);
  const id = `${section}:${user}`;
  const kept = rows.get(id);
  if (kept && kept.key === key) return kept.li;
  const av = section === 'contacts'
    ? h('span', { class: 'avatar-wrap' }, avatar(name, user, 'direct', 'small'), h('span', { class: `presence-dot ${online ? 'online' : 'offline'}`, title: online ? 'online' : 'offline' }))
    : avatar(name, user, 'direct', 'small');
  const li = h(
    'li',
    { class: `contact-row contact-${section}`, dataset: { user: String(user) } },
    av,
    h('span', { class: 'contact-main' }, h('span', { class: 'contact-name' }, name), h('span', { class: `contact-sub${online ? ' online' : ''}` }, sub)),
    h('span', { class: 'contact-actions' }, actions),
  );
  rows.set(id, { key, li });
  return li;
}

const SECTIONS = [['incoming', 'Requests'], ['contacts', 'Contacts'], ['outgoing', 'Sent requests'], ['blocked', 'Blocked']];
const sections = new Map(); // section id -> {el, head, list}: made once, in this order
let emptyNote = null;

function sectionParts(id, title) {
  let s = sections.get(id);
  if (!s) {
    const head = h('h3', { class: 'contact-head' }, title);
    const list = h('ul', { class: 'contact-list' });
    s = { el: h('section', { class: 'contact-section', id: `contacts-${id}`, 'aria-label': title, hidden: true }, head, list), head, list };
    sections.set(id, s);
  }
  return s;
}

const byName = (a, b) => userName(a).localeCompare(userName(b));

/** Forgets the rows drawn for the last user (a new sign-in), and shows the conversation list. */
export function resetContacts() {
  rows.clear();
  for (const s of sections.values()) s.list.replaceChildren();
  showSide('chats');
}

/**
 * The Contacts tab (and the tab's badge). Sections and rows are kept and
 * moved only where out of place, as in the conversation list: presence
 * changes redraw it, and a row made anew would lose a click pressed
 * across the redraw, and the keyboard focus.
 */
export function renderContacts() {
  const lists = { incoming: [], outgoing: [], contacts: [], blocked: [...S.blocks] };
  for (const [user, { state }] of S.contacts) {
    if (state === 'pending') lists.incoming.push(user);
    else if (state === 'requested') lists.outgoing.push(user);
    else if (state === 'accepted') lists.contacts.push(user);
  }
  const n = lists.incoming.length;
  const badge = $('#contacts-badge');
  badge.hidden = n === 0;
  badge.textContent = n > 99 ? '99+' : String(n);
  badge.setAttribute('aria-label', `${n} contact request${n === 1 ? '' : 's'}`);
  if (S.side !== 'contacts') return;
  lists.incoming.sort(byName);
  lists.outgoing.sort(byName);
  lists.blocked.sort(byName);
  lists.contacts.sort((a, b) => Number(isOnline(b)) - Number(isOnline(a)) || byName(a, b));
  const box = $('#contact-sections');
  if (!emptyNote || emptyNote.parentNode !== box) {
    emptyNote = h('p', { class: 'conv-empty' }, 'No contacts yet. Add someone by their username.');
    box.replaceChildren(...SECTIONS.map(([id, title]) => sectionParts(id, title).el), emptyNote);
  }
  const live = new Set();
  for (const [id, title] of SECTIONS) {
    const s = sectionParts(id, title);
    const users = lists[id];
    s.el.hidden = users.length === 0;
    const text = `${title} · ${users.length}`;
    if (s.head.textContent !== text) s.head.textContent = text;
    const wanted = users.map((u) => {
      live.add(`${id}:${u}`);
      return row(id, u);
    });
    wanted.forEach((li, i) => {
      if (s.list.children[i] !== li) s.list.insertBefore(li, s.list.children[i] ?? null);
    });
    while (s.list.children.length > wanted.length) s.list.lastElementChild.remove();
  }
  emptyNote.hidden = live.size > 0;
  for (const id of rows.keys()) if (!live.has(id)) rows.delete(id);
}

/** "Add contact" / "Accept request" / "Request sent" in a direct chat's header (nothing for a contact or a blocked peer). */
function renderContactHead() {
  const el = $('#act-contact');
  const c = S.current ? S.convs.get(S.current) : null;
  const peer = c?.kind === 'direct' ? peerOf(c.id) : null;
  const state = peer ? S.contacts.get(peer)?.state ?? 'none' : null;
  el.hidden = !peer || state === 'accepted' || S.blocks.has(peer);
  if (el.hidden) return;
  el.textContent = state === 'pending' ? 'Accept request' : state === 'requested' ? 'Request sent' : 'Add contact';
  el.disabled = state === 'requested' || busy.has(peer);
}
