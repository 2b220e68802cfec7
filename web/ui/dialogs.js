// dialogs.js — modal dialogs (<dialog>): start a direct chat by username,
// create a group (members by username, resolved with users/by-name),
// create a room, browse and join rooms, a group's members (add/remove for
// its owner and admins), and leaving a group or room.

import * as api from './api.js';
import { avatar, h, toast } from './dom.js';
import { openConv } from './pane.js';
import { convNumber, convTitle, ensureConv, notify, removeConv, S } from './store.js';

const USERNAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;

/** A dialog with a form; `onSubmit(values)` may throw (ApiError or a string) to show an error. */
function formDialog({ title, intro, fields, submitLabel, onSubmit, body }) {
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const inputs = {};
  const submit = h('button', { type: 'submit', class: 'btn primary' }, submitLabel);
  const dlg = h('dialog', { class: 'dlg' });
  const form = h(
    'form',
    { class: 'dlg-form', novalidate: true },
    h('h2', { class: 'dlg-title' }, title),
    intro ? h('p', { class: 'dlg-intro' }, intro) : null,
    fields.map((f) => {
      const input = h('input', { name: f.name, type: 'text', placeholder: f.placeholder ?? '', autocomplete: 'off', spellcheck: 'false', maxlength: f.maxlength ?? null, autocapitalize: 'off' });
      inputs[f.name] = input;
      return h('label', { class: 'field' }, h('span', { class: 'field-label' }, f.label), input, f.hint ? h('span', { class: 'field-hint' }, f.hint) : null);
    }),
    body ?? null,
    error,
    h('div', { class: 'dlg-actions' }, h('button', { type: 'button', class: 'btn', onclick: () => dlg.close() }, 'Cancel'), submit),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const values = Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
    error.hidden = true;
    submit.disabled = true;
    form.classList.add('busy');
    try {
      await onSubmit(values);
      dlg.close();
    } catch (err) {
      error.textContent = typeof err === 'string' ? err : api.describeError(err);
      error.hidden = false;
    } finally {
      submit.disabled = false;
      form.classList.remove('busy');
    }
  });
  dlg.append(form);
  showDialog(dlg);
  Object.values(inputs)[0]?.focus();
  return dlg;
}

function showDialog(dlg) {
  dlg.addEventListener('close', () => dlg.remove());
  dlg.addEventListener('click', (e) => {
    if (e.target === dlg) dlg.close(); // a click on the backdrop
  });
  document.body.append(dlg);
  dlg.showModal();
}

const directId = (a, b) => (a < b ? `d:${a}:${b}` : `d:${b}:${a}`);

/** Opens a conversation that was just created or joined here. */
function openNew(id) {
  const c = ensureConv(id);
  c.activity = Math.max(c.activity, Date.now());
  notify('list');
  openConv(id);
}

async function resolveUser(name) {
  if (!USERNAME_RE.test(name)) throw `"${name}" is not a valid username.`;
  try {
    const u = await api.userByName(name);
    S.users.set(u.id, u);
    return u;
  } catch (e) {
    if (e?.code === 'no_such_user') throw `There is no user named "${name}".`;
    throw e;
  }
}

export function newDirectChat() {
  formDialog({
    title: 'New chat',
    intro: 'Start a direct conversation with someone.',
    fields: [{ name: 'username', label: 'Username', placeholder: 'e.g. alice', maxlength: 32 }],
    submitLabel: 'Start chat',
    async onSubmit({ username }) {
      if (!username) throw 'Enter a username.';
      if (username === S.me.username) throw 'That is you — pick someone else.';
      const u = await resolveUser(username);
      openNew(directId(S.me.id, u.id));
    },
  });
}

export function newGroup() {
  formDialog({
    title: 'New group',
    intro: 'A group is managed by you: you add and remove its members.',
    fields: [
      { name: 'name', label: 'Group name', placeholder: 'e.g. Weekend trip', maxlength: 100 },
      { name: 'members', label: 'Members', placeholder: 'alice, bob', hint: 'Usernames, separated by commas or spaces. You can add more later.' },
    ],
    submitLabel: 'Create group',
    async onSubmit({ name, members }) {
      if (!name) throw 'Give the group a name.';
      const names = [...new Set(members.split(/[\s,;]+/).map((s) => s.replace(/^@/, '')).filter(Boolean))].filter((n) => n !== S.me.username);
      const results = await Promise.allSettled(names.map(resolveUser));
      const problems = results.filter((r) => r.status === 'rejected').map((r) => (typeof r.reason === 'string' ? r.reason : api.describeError(r.reason)));
      if (problems.length) throw problems.join(' ');
      const ids = results.map((r) => r.value.id);
      const g = await api.createGroup(name, ids);
      S.groups.set(g.id, g);
      openNew(`g:${g.id}`);
    },
  });
}

export function newRoom() {
  formDialog({
    title: 'New room',
    intro: 'A room is open: anyone can find it and join.',
    fields: [{ name: 'name', label: 'Room name', placeholder: 'e.g. lobby', maxlength: 100 }],
    submitLabel: 'Create room',
    async onSubmit({ name }) {
      if (!name) throw 'Give the room a name.';
      const r = await api.createRoom(name);
      S.rooms.set(r.id, r);
      openNew(`r:${r.id}`);
    },
  });
}

export function browseRooms() {
  const dlg = h('dialog', { class: 'dlg dlg-wide' });
  const search = h('input', { type: 'search', placeholder: 'Filter rooms', autocomplete: 'off', 'aria-label': 'Filter rooms' });
  const list = h('ul', { class: 'room-list' });
  const status = h('p', { class: 'dlg-intro' }, 'Loading rooms…');
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'Load more');
  const rooms = [];
  let after = 0;

  const render = () => {
    const f = search.value.trim().toLowerCase();
    const shown = rooms.filter((r) => !f || r.name.toLowerCase().includes(f));
    list.replaceChildren(
      ...shown.map((r) => {
        const joined = S.convs.has(`r:${r.id}`);
        const btn = h('button', { type: 'button', class: `btn small${joined ? '' : ' primary'}` }, joined ? 'Open' : 'Join');
        btn.addEventListener('click', async () => {
          if (!joined) {
            btn.disabled = true;
            try {
              await api.joinRoom(r.id);
            } catch (e) {
              btn.disabled = false;
              toast(`Could not join: ${api.describeError(e)}`);
              return;
            }
          }
          dlg.close();
          openNew(`r:${r.id}`);
        });
        return h('li', { class: 'room-row' }, avatar(r.name, `r:${r.id}`, 'room'), h('span', { class: 'room-name' }, r.name), btn);
      }),
    );
    status.textContent = rooms.length === 0 ? 'No rooms yet. Create the first one!' : shown.length === 0 ? 'No room matches.' : '';
    status.hidden = !status.textContent;
  };

  const load = async () => {
    more.disabled = true;
    try {
      const page = (await api.listRooms(after, 200)) ?? [];
      for (const r of page) {
        S.rooms.set(r.id, r);
        rooms.push(r);
      }
      if (page.length) after = page.at(-1).id;
      more.hidden = page.length < 200;
    } catch (e) {
      status.textContent = `Could not load rooms: ${api.describeError(e)}`;
      status.hidden = false;
      return;
    } finally {
      more.disabled = false;
    }
    render();
  };

  search.addEventListener('input', render);
  more.addEventListener('click', load);
  dlg.append(
    h(
      'div',
      { class: 'dlg-form' },
      h('h2', { class: 'dlg-title' }, 'Browse rooms'),
      search,
      status,
      list,
      h('div', { class: 'dlg-actions' }, more, h('button', { type: 'button', class: 'btn', onclick: () => dlg.close() }, 'Close')),
    ),
  );
  showDialog(dlg);
  search.focus();
  load();
}

/** Loads a group's members (for the header's member count and the members dialog). */
export async function loadGroupInfo(c) {
  const n = convNumber(c.id);
  try {
    const info = await api.groupInfo(n);
    S.groups.set(n, info);
    for (const m of info.members ?? []) if (!S.users.has(m.user) && m.user !== S.me.id) api.userById(m.user).then((u) => { S.users.set(u.id, u); notify('head'); }, () => {});
    notify('head', 'list');
    return info;
  } catch (e) {
    if (e?.code === 'not_member' || e?.code === 'no_such_group') {
      // removed from it: keep the history visible but note it
      toast('You are no longer a member of this group.', 'info');
    }
    return null;
  }
}

const ROLE = { owner: 'owner', admin: 'admin', member: '' };

export async function showMembers(c) {
  const n = convNumber(c.id);
  const dlg = h('dialog', { class: 'dlg dlg-wide' });
  const list = h('ul', { class: 'member-list' });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const wrap = h('div', { class: 'dlg-form' }, h('h2', { class: 'dlg-title' }, `Members of ${convTitle(c)}`), list);
  let myRole = 'member';

  const render = (info) => {
    const members = info?.members ?? [];
    myRole = members.find((m) => m.user === S.me.id)?.role ?? 'member';
    list.replaceChildren(
      ...members.map((m) => {
        const name = m.user === S.me.id ? `${S.me.username} (you)` : S.users.get(m.user)?.username ?? `user ${m.user}`;
        const canRemove = m.user !== S.me.id && m.role !== 'owner' && (myRole === 'owner' || (myRole === 'admin' && m.role === 'member'));
        const rm = canRemove ? h('button', { type: 'button', class: 'btn small danger' }, 'Remove') : null;
        rm?.addEventListener('click', async () => {
          rm.disabled = true;
          try {
            await api.leaveGroup(n, m.user);
            const info = await loadGroupInfo(c);
            if (info) render(info);
          } catch (e) {
            rm.disabled = false;
            toast(api.describeError(e));
          }
        });
        return h('li', { class: 'member-row' }, avatar(name, m.user, 'direct', 'small'), h('span', { class: 'member-name' }, name), ROLE[m.role] ? h('span', { class: 'role' }, ROLE[m.role]) : null, rm);
      }),
    );
    addForm.hidden = !(myRole === 'owner' || myRole === 'admin');
  };

  const addInput = h('input', { type: 'text', placeholder: 'username', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false', 'aria-label': 'Username to add' });
  const addForm = h('form', { class: 'add-member', hidden: true }, addInput, h('button', { type: 'submit', class: 'btn primary small' }, 'Add'));
  addForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    try {
      const u = await resolveUser(addInput.value.trim());
      await api.api('POST', `/api/v1/groups/${n}/members`, { body: { user_id: u.id } });
      addInput.value = '';
      const info = await loadGroupInfo(c);
      if (info) render(info);
    } catch (err) {
      error.textContent = typeof err === 'string' ? err : api.describeError(err);
      error.hidden = false;
    }
  });
  wrap.append(addForm, error, h('div', { class: 'dlg-actions' }, h('button', { type: 'button', class: 'btn', onclick: () => dlg.close() }, 'Close')));
  dlg.append(wrap);
  showDialog(dlg);
  if (S.groups.get(n)?.members) render(S.groups.get(n));
  const info = await loadGroupInfo(c);
  if (info) render(info);
  else if (!S.groups.get(n)?.members) list.replaceChildren(h('li', { class: 'dlg-intro' }, 'Could not load the members.'));
}

export async function leaveConv(c) {
  const title = convTitle(c);
  if (!window.confirm(`Leave ${c.kind === 'room' ? 'the room' : 'the group'} "${title}"?`)) return;
  try {
    if (c.kind === 'room') await api.leaveRoom(convNumber(c.id));
    else await api.leaveGroup(convNumber(c.id), S.me.id);
  } catch (e) {
    toast(e?.code === 'forbidden' && c.kind === 'group' ? 'The owner cannot leave the group.' : api.describeError(e));
    return;
  }
  openConv(null);
  removeConv(c.id);
  notify('list', 'title');
}
