// blocks.js — blocking (docs/http-api.md §9.2): the users this user blocks
// (GET /blocks at sign-in and after every connect), Block / Unblock in a
// direct chat's header (PUT / DELETE /blocks/{id}), a bar over the
// composer while its peer is blocked, and the words for a direct message
// the server refused with `forbidden` (a block either way: the server does
// not say who blocked whom, and neither does the page).

import * as api from './api.js';
import { $, toast } from './dom.js';
import { notify, onRender, peerOf, S, userName } from './store.js';

const busy = new Set(); // users whose block is being changed
let loadSeq = 0;

export function initBlocks() {
  const toggle = () => {
    const c = S.current ? S.convs.get(S.current) : null;
    if (c?.kind === 'direct') setBlocked(peerOf(c.id), !S.blocks.has(peerOf(c.id)));
  };
  $('#act-block').addEventListener('click', toggle);
  $('#blocked-unblock').addEventListener('click', toggle);
  onRender((parts) => {
    if (S.me && (parts.has('head') || parts.has('contacts'))) renderBlockHead();
  });
}

/** The users blocked here, from the server. */
export async function loadBlocks() {
  const seq = ++loadSeq;
  try {
    const r = await api.blocks();
    if (seq !== loadSeq || !S.me) return;
    S.blocks.clear();
    for (const id of r?.blocks ?? []) S.blocks.add(id);
    notify('head', 'contacts');
  } catch (e) {
    if (e?.code !== 'unauthorized') console.warn('loading blocks failed', e);
  }
}

export const isBlocked = (user) => S.blocks.has(user);

/** Blocks `user` (after a confirm) or lifts the block. */
export async function setBlocked(user, on) {
  if (busy.has(user)) return;
  const name = userName(user);
  if (on && !window.confirm(`Block ${name}? Neither of you can send the other direct messages or contact requests, you stop seeing each other's presence, and your contact ends.`)) return;
  busy.add(user);
  notify('head', 'contacts');
  try {
    if (on) await api.block(user);
    else await api.unblock(user);
    loadSeq += 1; // a list asked before this change is out of date
    if (on) {
      S.blocks.add(user);
      S.contacts.delete(user); // the server ends the relation too (a `contact` event with `none`)
      S.presence.delete(user); // no more presence either way
    } else S.blocks.delete(user);
    toast(on ? `You blocked ${name}.` : `You unblocked ${name}.`, 'info');
  } catch (e) {
    toast(`Could not ${on ? 'block' : 'unblock'} ${name}: ${api.describeError(e)}`);
  } finally {
    busy.delete(user);
    notify('head', 'contacts', 'list');
  }
}

export const blockBusy = (user) => busy.has(user);

/** Error wording for a send to `c` (describeError overrides): a refused direct message says why, as far as it is known here. */
export function sendErrorOverrides(c) {
  if (c?.kind !== 'direct') return {};
  const peer = peerOf(c.id);
  return {
    forbidden: S.blocks.has(peer)
      ? `You blocked ${userName(peer)}: unblock them to send messages.`
      : `${userName(peer)} cannot receive your messages.`,
  };
}

/** The header's Block / Unblock button and the "You blocked …" bar of the open direct chat. */
function renderBlockHead() {
  const c = S.current ? S.convs.get(S.current) : null;
  const btn = $('#act-block');
  const bar = $('#blocked-bar');
  if (c?.kind !== 'direct') {
    btn.hidden = true;
    bar.hidden = true;
    return;
  }
  const peer = peerOf(c.id);
  const blocked = S.blocks.has(peer);
  btn.hidden = false;
  btn.disabled = busy.has(peer);
  btn.textContent = blocked ? 'Unblock' : 'Block';
  btn.classList.toggle('danger-text', !blocked);
  bar.hidden = !blocked;
  $('#blocked-text').textContent = `You blocked ${userName(peer)}: no direct messages either way.`;
  $('#blocked-unblock').disabled = busy.has(peer);
}
