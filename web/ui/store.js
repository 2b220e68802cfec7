// store.js — the page's state: the signed-in user, conversations (inbox
// entries, messages in memory, pending sends, typing), names of users,
// groups and rooms (fetched lazily from the HTTP API), presence, and the
// connection state. Changes call notify(); renders are batched per frame.
// Events (reactions, edits, recalls) change the messages they name in place
// and are kept aside, never shown themselves; system notices are shown.

import { applyEvent, isEvent } from '/js/im-client.js';
import * as api from './api.js';

export const PAGE = 50; // messages per history page / per "load older" step
const EVENTS_KEPT = 1000; // events kept per conversation, for its messages loaded later

export const S = {
  me: null, // {id, username}
  token: null, // the session token
  client: null, // the ImClient
  convs: new Map(), // conv id -> Conv
  users: new Map(), // user id -> {id, username}
  groups: new Map(), // group id -> {id, name, owner, members?}
  rooms: new Map(), // room id -> {id, name}
  presence: new Map(), // user id -> {status, last_active_at}
  contacts: new Map(), // user id -> {state: requested | pending | accepted, since} (contacts.js)
  blocks: new Set(), // the users this user blocks (blocks.js)
  side: 'chats', // the sidebar's view: 'chats' | 'contacts'
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
  S.contacts.clear();
  S.blocks.clear();
  S.side = 'chats';
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

/** Marks parts dirty: 'list', 'conn', 'head', 'messages', 'typing', 'title', 'contacts'. */
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
      unread: 0, // messages of others above `read` that are not events
      last: null,
      activity: 0, // ms: the last message's time, or when it was opened/created here
      messages: new Map(), // id -> message shown (events that change a message are not)
      events: new Map(), // id -> a reaction, edit or recall received (the last EVENTS_KEPT)
      oldest: 0, // the lowest id loaded, events included (where "load older" goes on from)
      newest: 0, // the highest id loaded, events included
      editing: null, // {id, stash}: the composer edits message `id` (`stash`: the draft put aside)
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
  noteState(c, e.head ?? 0, e.read ?? 0, e.unread);
  c.mutedUntil = e.muted_until ?? 0;
  if (e.last) noteLast(c, e.last);
  return c;
}

/** The conversation list's last message: the newest one shown (events only while there is nothing else, as in the server's inbox). */
function noteLast(c, m) {
  if (isEvent(m) && c.last && !isEvent(c.last)) return;
  if (!c.last || m.id >= c.last.id || isEvent(c.last)) {
    c.last = m;
    if (m.ts) c.activity = Math.max(c.activity, m.ts);
  }
  c.head = Math.max(c.head, m.id);
}

/**
 * Read state, merged from every source (HTTP inbox, the client's `unread`
 * and `readUpTo`, own messages, own marks): both ids only rise. Unread
 * counts the messages of others above the read id that are not events
 * (reactions, edits, recalls, notices), so it is at most head − read; the
 * count itself comes from the server's inbox and the client (noteState).
 */
export function noteRead(c, read, head = 0) {
  c.head = Math.max(c.head, head, read);
  c.read = Math.max(c.read, read);
  c.unread = Math.max(0, Math.min(c.unread, c.head - c.read));
}

/**
 * A view of the read state `{head, read, unread}` (the server's inbox, the
 * client's readState): taken when it is at least as new as what is known,
 * else it only raises the read id. Without a count (an older server), every
 * message counts.
 */
export function noteState(c, head, read, unread) {
  const count = Number.isFinite(unread) ? unread : Math.max(0, head - read);
  if (head > c.head || (head === c.head && read >= c.read)) {
    const ahead = c.read > read; // a mark made here the view does not know yet
    c.head = head;
    c.read = Math.max(c.read, read);
    c.unread = Math.max(0, ahead ? Math.min(count, c.head - c.read) : count);
  } else noteRead(c, read);
}

export const unreadOf = (c) => c.unread;

/** Whether `m` changes another message (a reaction, edit or recall) instead of being shown; system notices are shown. */
export const changesMessage = (m) => isEvent(m) && m.kind !== 'system';

/**
 * A message from the client, history or the inbox. Returns its conversation.
 * An event changes the message it names (if loaded) and is kept for it
 * otherwise; a message loaded later gets the kept events that name it.
 */
export function addMessage(m) {
  const c = ensureConv(m.conv);
  const own = S.me && m.from === S.me.id;
  c.oldest = c.oldest ? Math.min(c.oldest, m.id) : m.id;
  c.newest = Math.max(c.newest, m.id);
  if (m.id > c.head) {
    if (!own && !isEvent(m) && m.id > c.read) c.unread += 1;
    c.head = m.id;
  }
  if (changesMessage(m)) {
    keepEvent(c, m);
    const target = c.messages.get(m.target);
    if (target) applyEvent(target, m);
    if (c.last && c.last !== target && c.last.id === m.target) applyEvent(c.last, m);
  } else if (!c.messages.has(m.id)) {
    // A history page shows a message as it was when the page was made:
    // events received since apply on top (again: applying is idempotent,
    // and in id order the newest change wins).
    for (const e of [...c.events.values()].filter((x) => x.target === m.id).sort((a, b) => a.id - b.id)) applyEvent(m, e);
    c.messages.set(m.id, m);
    noteLast(c, m);
  }
  if (own) noteRead(c, m.id); // one's own messages (and events) are read
  return c;
}

function keepEvent(c, m) {
  c.events.set(m.id, m);
  if (c.events.size <= EVENTS_KEPT) return;
  let low = Infinity;
  for (const id of c.events.keys()) if (id < low) low = id;
  c.events.delete(low);
}

/** Messages in id order (ids are the only order; `ts` is for display). */
export function sortedMessages(c) {
  return [...c.messages.values()].sort((a, b) => a.id - b.id);
}

/** The lowest id loaded, events included (null: none). */
export function lowestId(c) {
  return c.oldest || null;
}

export function highestId(c) {
  return Math.max(c.newest, c.head);
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
