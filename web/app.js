// app.js — the entry module of the chat page: the session (token in
// sessionStorage, a stable device id in localStorage), the screens, and
// the ImClient (/js/im-client.js) whose events feed the state in
// ui/store.js. Rendering lives in ui/sidebar.js and ui/pane.js, dialogs in
// ui/dialogs.js, the sign-in screen in ui/auth.js, HTTP in ui/api.js;
// contacts in ui/contacts.js, blocks in ui/blocks.js, moderation in
// ui/moderation.js.

import { ImClient } from '/js/im-client.js';
import * as api from './ui/api.js';
import { initAuth, showAuth } from './ui/auth.js';
import { initBlocks, loadBlocks } from './ui/blocks.js';
import { contactEvent, initContacts, loadContacts, resetContacts } from './ui/contacts.js';
import { browseRooms, leaveConv, loadGroupInfo, newDirectChat, newGroup, newRoom, showMembers } from './ui/dialogs.js';
import { $, toast } from './ui/dom.js';
import { initModeration, noteNotice, resetModeration } from './ui/moderation.js';
import { initPane, markReadIfVisible, messageArrived, openConv, renderPane } from './ui/pane.js';
import { initSidebar, renderConn, renderList, renderMe, renderTitle } from './ui/sidebar.js';
import {
  addMessage, applyInbox, convTitle, ensureConv, noteRead, noteState, notify, onRender, peerOf, refreshGroups, refreshRooms,
  removeConv, resetState, S,
} from './ui/store.js';

const SESSION_KEY = 'im.session'; // sessionStorage: {token, user_id, username, expires_at}
const DEVICE_KEY = 'im.device'; // localStorage: this browser's device id
const CONV_RE = /^(?:d:[1-9]\d*:[1-9]\d*|g:[1-9]\d*|r:[1-9]\d*)$/;

// ------------------------------------------------------------- session

function deviceId() {
  let d = null;
  try {
    d = localStorage.getItem(DEVICE_KEY);
  } catch {
    // storage blocked: a fresh id for this page
  }
  if (!d || !/^[!-~]{1,64}$/.test(d)) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    d = `web-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
    try {
      localStorage.setItem(DEVICE_KEY, d);
    } catch {
      // not persisted
    }
  }
  return d;
}

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null');
    if (s && typeof s.token === 'string' && s.token) {
      if (s.expires_at && s.expires_at < Date.now()) return null;
      return s;
    }
  } catch {
    // unreadable: sign in again
  }
  return null;
}

function saveSession(s) {
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  } catch {
    // the session lasts as long as the page
  }
}

function clearSession() {
  try {
    sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // nothing stored
  }
}

// ------------------------------------------------------------- main screen

async function startMain(me, token) {
  resetState();
  resetContacts();
  resetModeration();
  api.setToken(token);
  S.me = { id: me.id, username: me.username };
  S.token = token;
  $('#boot').hidden = true;
  $('#auth').hidden = true;
  $('#app').hidden = false;
  renderMe();
  openConv(null);
  notify('list', 'conn', 'title');
  startClient();
  await Promise.all([loadInbox(), refreshGroups(true), loadContacts(), loadBlocks()]);
  refreshRooms();
  if (S.client?.connected) queryPresence(S.client); // the peers known now
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (CONV_RE.test(wanted) && S.me && !S.current) {
    if (wanted[0] !== 'd' || wanted.split(':').map(Number).includes(S.me.id)) {
      ensureConv(wanted);
      openConv(wanted);
    }
  }
}

async function loadInbox() {
  let after;
  try {
    for (let i = 0; i < 50; i++) {
      const page = await api.inboxPage(after);
      for (const e of page?.conversations ?? []) applyInbox(e);
      notify('list', 'title');
      after = page?.conversations?.at(-1)?.conv;
      if (!page?.has_more || !after) break;
    }
  } catch (e) {
    if (e?.code !== 'unauthorized') toast(`Could not load your conversations: ${api.describeError(e)}`);
  }
}

/** Ends the session here (after a logout, a revoked or expired token). */
function endSession(message) {
  const client = S.client;
  S.client = null;
  client?.close().catch(() => {});
  clearSession();
  api.setToken(null);
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  openConv(null);
  resetState();
  $('#msg-list').replaceChildren();
  history.replaceState(null, '', location.pathname + location.search);
  document.title = 'im chat';
  showAuth(message);
}

async function logout() {
  const client = S.client;
  S.client = null; // its 4001 close is expected: no "session ended" notice
  try {
    await api.logout();
  } catch {
    // revoked or unreachable: forget the token anyway
  }
  await client?.close().catch(() => {});
  endSession(null);
}

// ------------------------------------------------------------- the client

function startClient() {
  const client = new ImClient({
    url: `${location.origin}/dispatch`,
    token: S.token,
    device: deviceId(),
  });
  S.client = client;
  S.conn = { state: 'connecting', until: 0 };
  const mine = (fn) => (ev) => {
    if (S.client === client) fn(ev);
  };

  client.on('connected', mine(() => {
    S.conn = { state: 'syncing', until: 0 };
    notify('conn', 'messages');
    queryPresence(client);
    // Contact changes while disconnected came as no event: ask again (also the contacts' presence).
    loadContacts();
    loadBlocks();
  }));
  client.on('synced', mine(() => {
    S.conn = { state: 'connected', until: 0 };
    notify('conn', 'messages');
    markReadIfVisible();
  }));
  client.on('message', mine(({ message: m }) => {
    const known = S.convs.has(m.conv);
    const c = addMessage(m);
    c.typing.delete(m.from);
    if (m.kind === 'system') noteNotice(m); // a moderation action: the sanctions known here
    if (!known) {
      if (c.kind === 'group') refreshGroups(true);
      if (c.kind === 'room') refreshRooms(true);
    }
    messageArrived(c, m);
    notify('list', 'title', 'typing');
    if (c.id === S.current) notify('messages');
  }));
  client.on('presence', mine(({ presence: p }) => {
    S.presence.set(p.user, p);
    notify('list', 'head');
  }));
  client.on('member', mine(({ group, user, change }) => {
    const id = `g:${group}`;
    if (user === S.me.id) {
      if (change === 'added') {
        const c = ensureConv(id);
        c.activity = Math.max(c.activity, Date.now());
        refreshGroups(true);
      } else if (S.convs.has(id)) {
        const title = convTitle(S.convs.get(id));
        if (S.current === id) openConv(null);
        removeConv(id);
        toast(`You are no longer a member of ${title}.`, 'info');
      }
    } else if (S.convs.has(id) && (S.current === id || S.groups.get(group)?.members)) {
      loadGroupInfo(S.convs.get(id));
    }
    notify('list', 'head', 'title');
  }));
  client.on('contact', mine(contactEvent));
  client.on('typing', mine(({ conv, user, typing }) => {
    if (user === S.me.id) return;
    const c = S.convs.get(conv);
    if (!c) return;
    if (typing) c.typing.set(user, Date.now());
    else c.typing.delete(user);
    notify('typing', 'list');
  }));
  client.on('readUpTo', mine(({ conv, id }) => {
    const c = S.convs.get(conv);
    if (!c) return;
    noteRead(c, id);
    notify('list', 'title');
  }));
  client.on('unread', mine(({ conv, unread, read }) => {
    const c = ensureConv(conv); // the inbox walk names every conversation of the user
    // The client's count leaves events out (unread ≤ head − read).
    const state = client.readState(conv) ?? { head: read + unread, read, unread };
    noteState(c, state.head, state.read, state.unread);
    notify('list', 'title');
  }));
  client.on('disconnected', mine(() => {
    S.conn = { state: 'connecting', until: 0 };
    for (const c of S.convs.values()) c.typing.clear();
    notify('conn', 'messages', 'typing', 'list');
  }));
  client.on('reconnecting', mine(({ delayMs }) => {
    S.conn = { state: 'reconnecting', until: Date.now() + delayMs };
    notify('conn');
  }));
  client.on('stopped', mine(({ reason }) => onStopped(reason)));
  client.start();
}

function onStopped(reason) {
  const code = reason?.code;
  if (reason?.kind === 'shutdown') return;
  if (reason?.kind === 'unauthorized' || code === 4000 || code === 4001) {
    endSession('Your session has ended. Please sign in again.');
    return;
  }
  if (code === 4002) {
    endSession('This account has been blocked.');
    return;
  }
  let detail = '';
  if (code === 4003) detail = 'this page is out of date, reload it';
  else if (reason?.kind === 'too_many_attempts') detail = 'the server cannot be reached';
  else if (reason?.kind === 'closed') detail = reason.name || `closed (${code})`;
  S.conn = { state: 'offline', until: 0, detail };
  notify('conn', 'messages');
}

/** A new client after the last one stopped (the Reconnect button, the network coming back). */
function reconnect() {
  if (!S.me || !S.token) return;
  if (S.client && S.conn.state !== 'offline') return;
  const old = S.client;
  S.client = null;
  old?.close().catch(() => {});
  startClient();
  notify('conn');
}

/**
 * The network is back, or the page is shown again: a client waiting out a
 * reconnect delay tries at once (reconnectNow; its backoff is not reset,
 * so an attempt that fails waits the next, longer delay). Nothing happens
 * while connected or connecting, and a stopped client is reconnect()'s.
 */
function reconnectSooner() {
  const client = S.client;
  if (!client || S.conn.state !== 'reconnecting') return;
  if (client.reconnectNow()) {
    S.conn = { state: 'connecting', until: 0 }; // no countdown any more: the attempt is under way
    notify('conn');
  }
}

function queryPresence(client) {
  const peers = [...new Set([...S.convs.values()].filter((c) => c.kind === 'direct').map((c) => peerOf(c.id)))].slice(0, 500);
  if (peers.length === 0) return;
  client.queryPresence(peers).then(
    (list) => {
      for (const p of list) S.presence.set(p.user, p);
      notify('list', 'head');
    },
    () => {},
  );
}

// ------------------------------------------------------------- wiring

function openFromList(id) {
  openConv(id);
  history.replaceState(null, '', `#${id}`);
}

function boot() {
  api.setUnauthorizedHandler(() => {
    if (S.me) endSession('Your session has ended. Please sign in again.');
  });
  onRender((parts) => {
    if (!S.me) return;
    if (parts.has('list')) renderList();
    if (parts.has('conn')) renderConn();
    if (parts.has('title') || parts.has('list')) renderTitle();
    renderPane(parts);
  });
  initAuth(async (session, username) => {
    const s = { token: session.token, user_id: session.user_id, username, expires_at: session.expires_at };
    saveSession(s);
    await startMain({ id: session.user_id, username }, session.token);
  });
  initSidebar({ open: openFromList, retry: reconnect });
  initContacts();
  initBlocks();
  initModeration();
  initPane({
    leave: leaveConv,
    members: showMembers,
    groupInfo: loadGroupInfo,
    back: () => {
      openConv(null);
      history.replaceState(null, '', location.pathname + location.search);
    },
  });
  $('#btn-new-chat').addEventListener('click', newDirectChat);
  $('#btn-new-group').addEventListener('click', newGroup);
  $('#btn-new-room').addEventListener('click', newRoom);
  $('#btn-browse').addEventListener('click', browseRooms);
  $('#btn-logout').addEventListener('click', logout);
  $('#boot-retry').addEventListener('click', resume);

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      // Shown again after being hidden (timers may have been throttled
      // meanwhile): retry now rather than after the rest of the delay.
      if (navigator.onLine !== false) reconnectSooner();
      markReadIfVisible();
      notify('list', 'head', 'messages', 'conn', 'title');
    }
  });
  window.addEventListener('focus', () => markReadIfVisible());
  window.addEventListener('online', () => {
    notify('conn');
    reconnect(); // a client that gave up: a new one
    reconnectSooner(); // a client waiting out a backoff delay: now
  });
  window.addEventListener('offline', () => notify('conn'));
  setInterval(() => {
    if (S.conn.state === 'reconnecting') notify('conn');
  }, 1000);
  setInterval(() => notify('head', 'list'), 60_000); // "last seen 5 min ago", list times

  resume();
}

/** Picks up the session of this tab, if any. */
async function resume() {
  const s = loadSession();
  if (!s) {
    showAuth();
    return;
  }
  $('#boot-text').textContent = 'Signing in…';
  $('#boot-retry').hidden = true;
  api.setToken(s.token);
  try {
    const me = await api.me();
    await startMain(me, s.token);
  } catch (e) {
    if (e?.code === 'unauthorized') {
      clearSession();
      api.setToken(null);
      showAuth('Your session has ended. Please sign in again.');
    } else {
      $('#boot-text').textContent = api.describeError(e);
      $('#boot-retry').hidden = false;
    }
  }
}

boot();
