// dom.js — building elements without HTML strings, and formatting (times,
// sizes, avatars). Text always goes in as text nodes; no `style` attribute
// is ever set (the Content-Security-Policy forbids inline styles).

/**
 * `h('div', {class: 'x', text: 'hi', onclick: fn, title: '…'}, child, …)`.
 * Children: nodes or strings (as text); null/false are skipped.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'style' || k === 'innerHTML' || k === 'srcdoc') throw new Error(`h(): ${k} is not allowed`);
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = String(v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Replaces all children of `el`. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** An `http(s)` URL as a string, or null for anything else (javascript:, data:, relative…). */
export function safeUrl(u) {
  if (typeof u !== 'string' || u.length > 4096) return null;
  try {
    const url = new URL(u);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch {
    return null;
  }
}

// ------------------------------------------------------------ times

const fmtTime = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const fmtWeekday = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const fmtDate = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const fmtDateYear = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
const fmtDay = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });
const fmtFull = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

const DAY = 86_400_000;
const startOfDay = (ts) => {
  const d = new Date(ts);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
};

export const timeShort = (ts) => (ts ? fmtTime.format(ts) : '');
export const fullTime = (ts) => (ts ? fmtFull.format(ts) : '');
export const sameDay = (a, b) => startOfDay(a) === startOfDay(b);

/** "Today", "Yesterday", "Monday 3 March" (a separator in the message list). */
export function dayLabel(ts) {
  const today = startOfDay(Date.now());
  const day = startOfDay(ts);
  if (day === today) return 'Today';
  if (day === today - DAY) return 'Yesterday';
  if (new Date(ts).getFullYear() !== new Date().getFullYear()) return fmtDateYear.format(ts);
  return fmtDay.format(ts);
}

/** The time of a conversation's last message in the list: "14:02", "Tue", "3 Mar". */
export function listTime(ts) {
  if (!ts) return '';
  const today = startOfDay(Date.now());
  const day = startOfDay(ts);
  if (day === today) return fmtTime.format(ts);
  if (today - day < 6 * DAY) return fmtWeekday.format(ts);
  if (new Date(ts).getFullYear() !== new Date().getFullYear()) return fmtDateYear.format(ts);
  return fmtDate.format(ts);
}

/** "last seen 5 min ago" for an offline user. */
export function lastSeen(ts) {
  if (!ts) return 'offline';
  const ago = Date.now() - ts;
  if (ago < 60_000) return 'last seen just now';
  if (ago < 3_600_000) return `last seen ${Math.floor(ago / 60_000)} min ago`;
  if (sameDay(ts, Date.now())) return `last seen at ${fmtTime.format(ts)}`;
  if (sameDay(ts, Date.now() - DAY)) return `last seen yesterday at ${fmtTime.format(ts)}`;
  return `last seen ${fmtDate.format(ts)}`;
}

export function fileSize(n) {
  if (!Number.isFinite(n) || n < 0) return '';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

// ---------------------------------------------------------- avatars

/** One of 8 avatar colour classes, stable for a seed. */
export function avatarClass(seed) {
  let x = 0;
  for (const ch of String(seed)) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return `av-${x % 8}`;
}

export function initials(name) {
  const words = String(name || '?').trim().split(/[\s._-]+/).filter(Boolean);
  const first = [...(words[0] || '?')][0];
  const second = words.length > 1 ? [...words[1]][0] : '';
  return (first + second).toUpperCase();
}

/** A round avatar with initials; `kind` adds a shape for groups and rooms. */
export function avatar(name, seed, kind = 'direct', extra = '') {
  const cls = `avatar ${avatarClass(seed)} avatar-${kind}${extra ? ` ${extra}` : ''}`;
  return h('span', { class: cls, 'aria-hidden': 'true' }, kind === 'room' ? '#' : initials(name));
}

// ----------------------------------------------------------- toasts

/** A short notice at the bottom of the screen (errors of background actions). */
export function toast(text, kind = 'error') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  box.append(el);
  setTimeout(() => el.classList.add('leaving'), 4500);
  setTimeout(() => el.remove(), 5000);
  while (box.children.length > 3) box.firstElementChild.remove();
}
