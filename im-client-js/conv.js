// conv.js — conversation ids (protocol §4): validation, kind and a total
// order (direct chats, then groups, then rooms, each by number), the same
// order the server uses for the inbox and im-client uses for its maps.

const CONV_RE = /^(?:d:([1-9]\d*):([1-9]\d*)|g:([1-9]\d*)|r:([1-9]\d*))$/;

/** Whether `s` is the one valid spelling of a conversation id. */
export function isConversationId(s) {
  if (typeof s !== 'string') return false;
  const m = CONV_RE.exec(s);
  if (!m) return false;
  if (m[1] !== undefined) return Number(m[1]) < Number(m[2]); // smaller user first, distinct
  return true;
}

/** `'direct' | 'group' | 'room'` by the id's prefix (`null` when invalid). */
export function convKind(conv) {
  switch (typeof conv === 'string' ? conv[0] : '') {
    case 'd': return 'direct';
    case 'g': return 'group';
    case 'r': return 'room';
    default: return null;
  }
}

/** The direct chat of users `a` and `b` (any order). */
export function directConv(a, b) {
  const [x, y] = a < b ? [a, b] : [b, a];
  return `d:${x}:${y}`;
}
/** Group `n`'s conversation id. */
export const groupConv = (n) => `g:${n}`;
/** Room `n`'s conversation id. */
export const roomConv = (n) => `r:${n}`;

const KIND_ORDER = { d: 0, g: 1, r: 2 };

/** Total order of conversation ids (for sorted output; `Array#sort` comparator). */
export function compareConv(a, b) {
  const ka = KIND_ORDER[a[0]] ?? 3;
  const kb = KIND_ORDER[b[0]] ?? 3;
  if (ka !== kb) return ka - kb;
  const na = a.slice(2).split(':').map(Number);
  const nb = b.slice(2).split(':').map(Number);
  for (let i = 0; i < Math.max(na.length, nb.length); i++) {
    const d = (na[i] ?? 0) - (nb[i] ?? 0);
    if (d !== 0) return d;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}
