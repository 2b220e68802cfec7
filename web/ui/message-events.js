// message-events.js — events shown in place (docs/rich-messages.md): the
// reaction bar under a message (click a reaction to add or take back one's
// own; "+" offers a few emojis), the "edited" marker, the tombstone of a
// recalled message, Edit (in the composer, with an "Editing message" bar)
// and Recall for one's own messages (Recall also for a group's owner and
// admins), and system notices as centered lines. The events themselves are
// never drawn (store.js applies them to the messages they name). All text
// goes in as text nodes. A moderator's Mute / Kick / Ban: moderation.js.

import { describeError } from './api.js';
import { $, h, toast } from './dom.js';
import { modKey, modTools, noticeText } from './moderation.js';
import { convNumber, notify, S, userName } from './store.js';

/** What "+" offers. */
export const QUICK_EMOJIS = ['👍', '❤️', '😂', '🎉', '😮', '😢'];
const MEDIA = new Set(['image', 'file', 'audio', 'video']);
const RECALLED_TEXT = 'This message was recalled';

let openPicker = null; // the emoji picker shown, if any
const inFlight = new Set(); // `${conv}|${id}|${emoji}`: a reaction change on its way

export function initMessageEvents() {
  $('#edit-cancel').addEventListener('click', () => {
    const c = S.current ? S.convs.get(S.current) : null;
    if (c) cancelEdit(c);
  });
  $('#composer-input').addEventListener('keydown', (e) => {
    const c = S.current ? S.convs.get(S.current) : null;
    if (e.key === 'Escape' && c?.editing) {
      e.preventDefault();
      cancelEdit(c);
    }
  });
  document.addEventListener('click', (e) => {
    if (openPicker && !openPicker.closest('.msg')?.contains(e.target)) closePicker();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && openPicker) closePicker();
  });
}

// ------------------------------------------------------------ permissions

const own = (m) => m.from === S.me?.id;
const age = (m) => Date.now() - (m.ts || 0);

function myRole(c) {
  if (c.kind !== 'group') return null;
  return S.groups.get(convNumber(c.id))?.members?.find((x) => x.user === S.me?.id)?.role ?? null;
}

/** One's own message, not recalled, of a kind whose body can change, within the server's edit window. */
export function canEdit(c, m) {
  const limit = S.client?.limits?.edit_window_ms ?? 0;
  return own(m) && m.recalled == null && !MEDIA.has(m.kind) && age(m) < limit;
}

/** One's own message within the recall window; any message for a group's owner or admins. */
export function canRecall(c, m) {
  if (m.recalled != null) return false;
  const role = myRole(c);
  if (role === 'owner' || role === 'admin') return true;
  return own(m) && age(m) < (S.client?.limits?.recall_window_ms ?? 0);
}

/** What a message's row shows besides its body, as a string: a changed key redraws the row. */
export function eventKey(c, m) {
  return [m.edited ?? '', m.recalled ?? '', JSON.stringify(m.reactions ?? null), canEdit(c, m), canRecall(c, m), c.editing?.id === m.id, modKey(c, m)].join('|');
}

// ------------------------------------------------------------ rendering

/** The body of a recalled message (a tombstone). */
export function recalledBody() {
  return h('div', { class: 'text recalled-text' }, RECALLED_TEXT);
}

/** "edited", for a message with an edit applied. */
export function editedMark(m) {
  return m.edited != null && m.recalled == null ? h('span', { class: 'edited-mark', title: 'This message was edited' }, 'edited') : null;
}

/** A system notice ("alice added bob", "alice muted bob until 14:05"): a centered grey line with the server's text. */
export function noticeRow(m, title) {
  return h('div', { class: 'notice', id: `msg-${m.id}`, role: 'note', title }, h('span', null, noticeText(m)));
}

/** A message's row: its bubble, the reaction bar under it, and its actions (shown on hover, focus or a tap). */
export function messageRow(c, m, bubbleEl, onEdit) {
  const row = h('div', { class: `msg${c.editing?.id === m.id ? ' editing' : ''}`, dataset: { id: String(m.id) } }, bubbleEl);
  if (m.recalled != null) return row;
  row.append(...[reactionBar(c, m), tools(c, m, onEdit)].filter(Boolean));
  // A tap on the bubble (not on a link or a button) shows the actions on touch screens.
  bubbleEl.addEventListener('click', (e) => {
    if (!e.target.closest('a, button')) row.classList.toggle('open');
  });
  return row;
}

function whoReacted(r) {
  const names = r.users.slice(0, 12).map((u) => (u === S.me?.id ? 'You' : userName(u)));
  const more = r.users.length - names.length;
  return `${names.join(', ')}${more > 0 ? ` and ${more} more` : ''} reacted with ${r.emoji}`;
}

function reactionBar(c, m) {
  const list = Array.isArray(m.reactions) ? m.reactions.filter((r) => Array.isArray(r.users) && r.users.length > 0) : [];
  if (list.length === 0) return null;
  return h(
    'div',
    { class: 'reactions' },
    list.map((r) => {
      const mine = r.users.includes(S.me?.id);
      return h(
        'button',
        {
          type: 'button',
          class: `reaction${mine ? ' mine' : ''}`,
          'aria-pressed': mine ? 'true' : 'false',
          title: whoReacted(r),
          onclick: () => toggleReaction(c, m, r.emoji),
        },
        h('span', { class: 'reaction-emoji' }, r.emoji),
        h('span', { class: 'reaction-count' }, String(r.users.length)),
      );
    }),
  );
}

function tools(c, m, onEdit) {
  const picker = h(
    'div',
    { class: 'react-picker', role: 'group', 'aria-label': 'Pick a reaction', hidden: true },
    QUICK_EMOJIS.map((emoji) =>
      h('button', { type: 'button', class: 'pick', title: emoji, onclick: () => { closePicker(); toggleReaction(c, m, emoji); } }, emoji)),
  );
  const plus = h('button', {
    type: 'button',
    class: 'tool react-add',
    title: 'Add a reaction',
    'aria-label': 'Add a reaction',
    onclick: () => {
      if (openPicker === picker) return closePicker();
      closePicker();
      picker.hidden = false;
      picker.closest('.msg')?.classList.add('picking');
      openPicker = picker;
      picker.querySelector('button')?.focus({ preventScroll: true });
    },
  }, '+');
  return h(
    'div',
    { class: 'msg-tools' },
    plus,
    canEdit(c, m) ? h('button', { type: 'button', class: 'tool', onclick: () => onEdit(c, m) }, 'Edit') : null,
    canRecall(c, m) ? h('button', { type: 'button', class: 'tool danger', onclick: () => recall(c, m) }, 'Recall') : null,
    modTools(c, m),
    picker,
  );
}

function closePicker() {
  if (openPicker) {
    openPicker.hidden = true;
    openPicker.closest('.msg')?.classList.remove('picking');
  }
  openPicker = null;
}

// ------------------------------------------------------------ actions

/** Adds one's `emoji` reaction to `m`, or takes it back if it is there. */
async function toggleReaction(c, m, emoji) {
  const client = S.client;
  if (!client || m.recalled != null) return;
  const key = `${c.id}|${m.id}|${emoji}`;
  if (inFlight.has(key)) return; // the last click's change is still on its way
  const mine = m.reactions?.find((r) => r.emoji === emoji)?.users?.includes(S.me.id);
  inFlight.add(key);
  try {
    if (mine) await client.unreact(c.id, m.id, emoji);
    else await client.react(c.id, m.id, emoji);
  } catch (e) {
    toast(`Could not ${mine ? 'remove the' : 'add a'} reaction: ${describeError(e)}`);
  } finally {
    inFlight.delete(key);
  }
}

async function recall(c, m) {
  const client = S.client;
  if (!client) return toast('Not connected.');
  const whose = own(m) ? 'your message' : `${userName(m.from)}'s message`;
  if (!window.confirm(`Recall ${whose}? It will be removed for everyone.`)) return;
  try {
    await client.recall(c.id, m.id);
  } catch (e) {
    toast(`Could not recall the message: ${describeError(e)}`);
  }
}

// ------------------------------------------------------------ editing in the composer

function fitComposer(input) {
  input.rows = Math.min(6, Math.max(1, input.value.split('\n').length));
}

/** The composer edits message `m` of `c`: its text in the box, the draft put aside, the bar shown. */
export function startEdit(c, m) {
  const input = $('#composer-input');
  if (c.editing) cancelEdit(c);
  c.editing = { id: m.id, stash: input.value };
  input.value = m.body ?? '';
  fitComposer(input);
  renderEditBar(c);
  notify('messages');
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

/** Ends editing: the draft put aside comes back. */
export function cancelEdit(c) {
  if (!c.editing) return;
  const input = $('#composer-input');
  input.value = c.editing.stash ?? '';
  c.editing = null;
  fitComposer(input);
  renderEditBar(c);
  notify('messages');
}

/** The composer was submitted while editing: sends the edit (unless nothing changed). */
export async function submitEdit(c, text) {
  const m = c.messages.get(c.editing.id);
  if (m && m.recalled == null && !text.trim()) {
    toast('A message cannot be empty: recall it instead.');
    return;
  }
  const max = S.client?.limits?.max_body_bytes ?? 4096;
  if (new TextEncoder().encode(text).length > max) {
    toast(`This message is too long (at most ${max} bytes).`);
    return;
  }
  cancelEdit(c);
  if (!m || m.recalled != null || text === m.body) return;
  try {
    if (!S.client) throw Object.assign(new Error('Not connected.'), { kind: 'stopped' });
    // Mentions stay as they were (the page makes none itself).
    await S.client.edit(c.id, m.id, text, { mentions: m.mentions });
  } catch (e) {
    toast(`Could not edit the message: ${describeError(e)}`);
  }
}

/** The "Editing message · Cancel" bar above the composer. */
export function renderEditBar(c) {
  const bar = $('#edit-bar');
  bar.hidden = !c?.editing;
  $('#composer').classList.toggle('editing', !!c?.editing);
}
