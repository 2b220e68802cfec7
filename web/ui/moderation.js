// moderation.js — moderating a group or room (docs/http-api.md §8.5).
// Among the actions of another user's message, the conversation's
// moderators get Mute 10 min (Unmute while muted), Kick and Ban (Unban
// while banned): POST /conversations/{conv}/sanctions. Who moderates is
// known without asking the server anything it would refuse: a group's
// roles (GET /groups/{id}, loaded when it opens), a room's creator and
// its moderator list (GET /rooms/{id}/moderators). The actions show only
// where the server would take them (a moderator acting on someone they
// outrank); the sanctions list (GET …/sanctions) is asked by moderators
// only, and moderation notices keep it current. A refusal all the same
// (403 forbidden: the role changed meanwhile) is a toast. Also the words
// of a mute notice ("alice muted bob until 14:05").

import * as api from './api.js';
import { fullTime, h, sameDay, timeShort, toast } from './dom.js';
import { convNumber, convTitle, notify, onRender, S, userName } from './store.js';

const MUTE_MS = 10 * 60_000;
const info = new Map(); // conv id -> {mods: Set | null, sanctions: Map(user -> {banned, muted_until}) | null, asked: Set}
const busy = new Set(); // `${conv}|${user}`: an action on its way
let shownFor = null; // the conversation whose info was last (re)loaded
let lastSig = '';

export function initModeration() {
  onRender((parts) => {
    if (!S.me || !(parts.has('head') || parts.has('messages'))) return;
    const c = S.current ? S.convs.get(S.current) : null;
    if (!c || c.kind === 'direct') {
      shownFor = null;
      return;
    }
    if (shownFor !== c.id) {
      shownFor = c.id;
      info.delete(c.id); // asked again each time the conversation is opened
    }
    ensureInfo(c);
    // The moderation actions are part of each message row's key (eventKey): redraw when they change.
    const sig = `${c.id}|${myRank(c)}|${sanctionVersion(c)}`;
    if (sig !== lastSig) {
      lastSig = sig;
      notify('messages');
    }
  });
}

export function resetModeration() {
  info.clear();
  busy.clear();
  shownFor = null;
  lastSig = '';
}

function entry(id) {
  let e = info.get(id);
  if (!e) {
    e = { mods: null, sanctions: null, asked: new Set(), version: 0 };
    info.set(id, e);
  }
  return e;
}

const sanctionVersion = (c) => info.get(c.id)?.version ?? 0;

function ensureInfo(c) {
  const e = entry(c.id);
  const n = convNumber(c.id);
  if (c.kind === 'room' && !e.asked.has('mods')) {
    e.asked.add('mods');
    api.roomModerators(n).then((r) => {
      e.mods = new Set(r?.moderators ?? []);
      notify('head');
    }, () => {});
  }
  if (myRank(c) > 0 && !e.asked.has('sanctions')) {
    e.asked.add('sanctions');
    api.sanctions(c.id).then((r) => {
      e.sanctions = new Map((r?.sanctions ?? []).map((s) => [s.user_id, s]));
      e.version += 1;
      notify('head');
    }, () => {});
  }
}

/** How strongly `user` moderates `c`: 2 a group's owner or a room's creator, 1 a group admin or room moderator, 0 nobody. */
function rankOf(c, user) {
  const n = convNumber(c.id);
  if (c.kind === 'group') {
    const role = S.groups.get(n)?.members?.find((m) => m.user === user)?.role;
    return role === 'owner' ? 2 : role === 'admin' ? 1 : 0;
  }
  if (c.kind === 'room') {
    if (S.rooms.get(n)?.created_by === user) return 2;
    return info.get(c.id)?.mods?.has(user) ? 1 : 0;
  }
  return 0;
}

const myRank = (c) => (S.me ? rankOf(c, S.me.id) : 0);

/** Whether this user may sanction the sender of `m` in `c`. */
function canModerate(c, m) {
  if (c.kind === 'direct' || m.kind === 'system' || !Number.isInteger(m.from) || m.from === S.me?.id) return false;
  const mine = myRank(c);
  return mine > 0 && rankOf(c, m.from) < mine;
}

function sanctionOf(c, user) {
  const s = info.get(c.id)?.sanctions?.get(user);
  return { muted: (s?.muted_until ?? 0) > Date.now(), banned: !!s?.banned };
}

/** What the moderation actions of `m` look like, as a string (part of the row's key). */
export function modKey(c, m) {
  if (!canModerate(c, m)) return '';
  const s = sanctionOf(c, m.from);
  return `${s.muted}:${s.banned}:${busy.has(`${c.id}|${m.from}`)}`;
}

/** The moderation buttons for `m`'s row (none unless this user moderates its sender). */
export function modTools(c, m) {
  if (!canModerate(c, m)) return [];
  const user = m.from;
  const { muted, banned } = sanctionOf(c, user);
  const wait = busy.has(`${c.id}|${user}`);
  const tool = (label, action, danger) =>
    h('button', { type: 'button', class: `tool mod-tool${danger ? ' danger' : ''}`, dataset: { action }, disabled: wait, onclick: () => act(c, user, action) }, label);
  const member = c.kind !== 'group' || !!S.groups.get(convNumber(c.id))?.members?.some((x) => x.user === user);
  return [
    muted ? tool('Unmute', 'unmute') : tool('Mute 10 min', 'mute'),
    member && !banned ? tool('Kick', 'kick', true) : null,
    banned ? tool('Unban', 'unban') : tool('Ban', 'ban', true),
  ].filter(Boolean);
}

const CONFIRM = {
  kick: (who, where) => `Remove ${who} from ${where}? They may come back.`,
  ban: (who, where) => `Ban ${who} from ${where}? They are removed and kept out until unbanned.`,
};
const DONE = { mute: 'mute', unmute: 'unmute', kick: 'remove', ban: 'ban', unban: 'unban' };

async function act(c, user, action) {
  const key = `${c.id}|${user}`;
  if (busy.has(key)) return;
  const who = userName(user);
  if (CONFIRM[action] && !window.confirm(CONFIRM[action](who, convTitle(c)))) return;
  busy.add(key);
  notify('messages');
  try {
    const body = { user_id: user, action };
    if (action === 'mute') body.duration_ms = MUTE_MS;
    const r = await api.sanction(c.id, body);
    const e = entry(c.id);
    if (!e.sanctions) e.sanctions = new Map();
    e.sanctions.set(user, { user_id: user, banned: !!r?.banned, muted_until: r?.muted_until ?? 0 });
    e.version += 1;
  } catch (err) {
    toast(`Could not ${DONE[action]} ${who}: ${api.describeError(err, { forbidden: 'You cannot moderate this person here.', not_member: `${who} is not a member (any more).` })}`);
  } finally {
    busy.delete(key);
    notify('messages', 'head');
  }
}

const MOD_EVENTS = new Set(['member_muted', 'member_unmuted', 'member_banned', 'member_unbanned']);

/** A system notice arrived: a moderation action (here or by another moderator) updates the sanctions known. */
export function noteNotice(m) {
  const ct = m?.kind === 'system' && m.content && typeof m.content === 'object' ? m.content : null;
  if (!ct || !MOD_EVENTS.has(ct.event) || !Number.isInteger(ct.user)) return;
  const e = info.get(m.conv);
  if (!e?.sanctions) return; // not known here: asked when the conversation opens
  const s = { user_id: ct.user, banned: false, muted_until: 0, ...e.sanctions.get(ct.user) };
  if (ct.event === 'member_muted') s.muted_until = Number.isFinite(ct.until) ? ct.until : Number.MAX_SAFE_INTEGER;
  else if (ct.event === 'member_unmuted') s.muted_until = 0;
  else s.banned = ct.event === 'member_banned';
  e.sanctions.set(ct.user, s);
  e.version += 1;
  notify('head');
}

/** A notice's text: the server's body, and for a mute until when ("… until 14:05"). */
export function noticeText(m) {
  const body = m.body || 'Group changed';
  const ct = m.content && typeof m.content === 'object' ? m.content : null;
  if (ct?.event !== 'member_muted' || !Number.isFinite(ct.until) || ct.until <= 0 || /\buntil\b/.test(body)) return body;
  const until = sameDay(ct.until, Date.now()) ? timeShort(ct.until) : fullTime(ct.until);
  return `${body} until ${until}`;
}
