// store.js — the page's state: the signed-in user, conversations (inbox
// entries, messages in memory, pending sends, typing), names of users,
// groups and rooms (fetched lazily from the HTTP API), presence, and the
// connection state. Changes call notify(); renders are batched per frame.

import * as api from './api.js';

export const PAGE = 50; // messages per history page / per "load older" step

export const S = {
  me: null, // {id, username}
  token: null, // the session token
  client: null, // the ImClient
  convs: new Map(), // conv id -> Conv
  users: new Map(), // user id -> {id, username}
  groups: new Map(), // group id -> {id, name, owner, members?}
  rooms: new Map(), // room id -> {id, name}
  presence: new Map(), // user id -> {status, last_active_at}
  current: null, // the open conversation id
  conn: { state: 'connecting', until: 0 }, // connecting | syncing | connected | reconnecting | offline
  filter: '',
};

export function resetState() {
  S.me = null;
  S.token = null;
  S.client = null;
  S.convs.clear();
  S.users.clear();
  S.groups.clear();
  S.rooms.clear();
  S.presence.clear();
  S.current = null;
  S.conn = { state: 'connecting', until: 0 };
  S.filter = '';
  userFetches.clear();
  groupsFetchedAt = 0;
  roomsFetchedAt = 0;
}

// ------------------------------------------------------------- render batching

const renderers = [];
const dirty = new Set();
let scheduled = false;

/** `onRender(fn)`: fn(dirtySet) runs once per batch. */
export function onRender(fn) {
  renderers.push(fn);
}

/** Marks parts dirty: 'list', 'conn', 'head', 'messages', 'typing', 'title'. */
export function notify(...parts) {
  for (const p of parts) dirty.add(p);
  if (scheduled) return;
  scheduled = true;
  // requestAnimationFrame does not run in background tabs; the title (unread
  // count) should still update there.
  if (document.hidden) setTimeout(flush, 50);
  else requestAnimationFrame(flush);
}

function flush() {
  scheduled = false;
  const parts = new Set(dirty);
  dirty.clear();
  for (const fn of renderers) {
    try {
      fn(parts);
    } catch (e) {
      console.error('render failed', e);
    }
  }
}

// ------------------------------------------------------------- conversations

function kindOf(id) {
  return id[0] === 'd' ? 'direct' : id[0] === 'g' ? 'group' : 'room';
}

export const convNumber = (id) => Number(id.slice(2));

/** The other user of a direct chat `d:A:B`. */
export function peerOf(id) {
  const [, a, b] = id.split(':').map(Number);
  return a === S.me?.id ? b : a;
}

export function ensureConv(id) {
  let c = S.convs.get(id);
  if (!c) {
    c = {
      id,
      kind: kindOf(id),
      head: 0,
      read: 0,
      last: null,
      activity: 0, // ms: the last message's time, or when it was opened/created here
      messages: new Map(), // id -> message
      pending: [], // local sends awaiting their ack
      historyLoaded: false,
      loadingOlder: false,
      hasMore: true,
      shown: PAGE, // how many of the newest messages are rendered
      typing: new Map(), // user -> time heard
      unreadMarker: 0, // the read id when the conversation was opened (a "new messages" line after it)
      mutedUntil: 0,
    };
    S.convs.set(id, c);
    if (c.kind === 'direct') requestUser(peerOf(id));
  }
  return c;
}

export function removeConv(id) {
  S.convs.delete(id);
  if (S.current === id) S.current = null;
}

/** An inbox entry (HTTP or the client's inbox walk). */
export function applyInbox(e) {
  const c = ensureConv(e.conv);
  noteRead(c, e.read ?? 0, e.head ?? 0);
  c.mutedUntil = e.muted_until ?? 0;
  if (e.last) noteLast(c, e.last);
  return c;
}

function noteLast(c, m) {
  if (!c.last || m.id >= c.last.id) {
    c.last = m;
    if (m.ts) c.activity = Math.max(c.activity, m.ts);
  }
  c.head = Math.max(c.head, m.id);
}

/**
 * Read state, merged from every source (HTTP inbox, the client's `unread`
 * and `readUpTo`, own messages, own marks): both ids only rise, and unread
 * is exactly head − read (protocol §5.9).
 */
export function noteRead(c, read, head = 0) {
  c.head = Math.max(c.head, head, read);
  c.read = Math.max(c.read, read);
}

export const unreadOf = (c) => Math.max(0, c.head - c.read);

/** A message from the client, history or the inbox. Returns its conversation. */
export function addMessage(m) {
  const c = ensureConv(m.conv);
  if (!c.messages.has(m.id)) c.messages.set(m.id, m);
  noteLast(c, m);
  if (S.me && m.from === S.me.id) noteRead(c, m.id); // one's own messages are read
  return c;
}

/** Messages in id order (ids are the only order; `ts` is for display). */
export function sortedMessages(c) {
  return [...c.messages.values()].sort((a, b) => a.id - b.id);
}

export function lowestId(c) {
  let low = Infinity;
  for (const id of c.messages.keys()) if (id < low) low = id;
  return low === Infinity ? null : low;
}

export function highestId(c) {
  let high = 0;
  for (const id of c.messages.keys()) if (id > high) high = id;
  return Math.max(high, c.head);
}

/** Conversations for the sidebar, newest activity first. */
export function sortedConvs() {
  return [...S.convs.values()].sort((a, b) => b.activity - a.activity || (a.id < b.id ? -1 : 1));
}

export function totalUnread() {
  let n = 0;
  for (const c of S.convs.values()) n += unreadOf(c);
  return n;
}

// ------------------------------------------------------------- names

const userFetches = new Map();
let groupsFetchedAt = 0;
let roomsFetchedAt = 0;

export function requestUser(id) {
  if (!id || S.users.has(id) || id === S.me?.id) return Promise.resolve(S.users.get(id) ?? null);
  if (userFetches.has(id)) return userFetches.get(id);
  const p = api
    .userById(id)
    .then((u) => {
      S.users.set(id, u);
      notify('list', 'head', 'messages', 'typing');
      return u;
    })
    .catch(() => {
      setTimeout(() => userFetches.delete(id), 30_000); // try again later
      return null;
    });
  userFetches.set(id, p);
  return p;
}

export function userName(id) {
  if (id === S.me?.id) return S.me.username;
  const u = S.users.get(id);
  if (u) return u.username;
  requestUser(id);
  return `user ${id}`;
}

/** The groups of the user (names); again at most every 5 s unless forced. */
export async function refreshGroups(force = false) {
  if (!force && Date.now() - groupsFetchedAt < 5000) return;
  groupsFetchedAt = Date.now();
  try {
    const list = await api.myGroups();
    for (const g of list ?? []) S.groups.set(g.id, { ...S.groups.get(g.id), ...g });
    notify('list', 'head');
  } catch (e) {
    console.warn('loading groups failed', e);
  }
}

/** Names of rooms: pages through the room list until `wanted` are all named. */
export async function refreshRooms(force = false) {
  if (!force && Date.now() - roomsFetchedAt < 5000) return;
  roomsFetchedAt = Date.now();
  const wanted = () => [...S.convs.values()].some((c) => c.kind === 'room' && !S.rooms.has(convNumber(c.id)));
  try {
    let after = 0;
    for (let i = 0; i < 25 && (force || wanted()); i++) {
      const page = await api.listRooms(after, 200);
      if (!page?.length) break;
      for (const r of page) S.rooms.set(r.id, r);
      after = page.at(-1).id;
      if (page.length < 200) break;
    }
    notify('list', 'head');
  } catch (e) {
    console.warn('loading rooms failed', e);
  }
}

export function convTitle(c) {
  if (c.kind === 'direct') return userName(peerOf(c.id));
  const n = convNumber(c.id);
  if (c.kind === 'group') {
    const g = S.groups.get(n);
    if (!g) refreshGroups();
    return g?.name ?? `Group ${n}`;
  }
  const r = S.rooms.get(n);
  if (!r) refreshRooms();
  return r?.name ?? `Room ${n}`;
}

export function isOnline(user) {
  return S.presence.get(user)?.status === 'online';
}
