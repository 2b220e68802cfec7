// api.js — the business HTTP API (docs/http-api.md): one fetch wrapper with
// the bearer token, errors as ApiError {status, code, message}, and the
// wording shown to people for each error code.

let token = null;
let onUnauthorized = null;

/** The token sent as `Authorization: Bearer …` (null: none). */
export function setToken(t) {
  token = t || null;
}

/** Called once when an authenticated request answers 401 unauthorized. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/**
 * `api('POST', '/api/v1/login', {body})` → the parsed JSON answer (null for
 * 204). Throws ApiError; a network failure has status 0 and code `network`.
 */
export async function api(method, path, { body, auth = true, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      signal,
    });
  } catch (e) {
    if (e?.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'network error');
  }
  const text = resp.status === 204 ? '' : await resp.text().catch(() => '');
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const code = typeof data?.code === 'string' ? data.code : `http_${resp.status}`;
    const message = typeof data?.message === 'string' ? data.message : resp.statusText;
    const err = new ApiError(resp.status, code, message);
    if (auth && token && resp.status === 401 && code === 'unauthorized' && onUnauthorized) onUnauthorized(err);
    throw err;
  }
  return data;
}

const FRIENDLY = {
  network: 'Cannot reach the server. Check your connection and try again.',
  bad_credentials: 'Wrong username or password.',
  conflict: 'That username is already taken.',
  unauthorized: 'Your session has ended. Please sign in again.',
  no_such_user: 'There is no user with that name.',
  no_such_group: 'That group does not exist (any more).',
  no_such_room: 'That room does not exist (any more).',
  no_such_conversation: 'That conversation does not exist.',
  not_member: 'You are not a member of this conversation.',
  forbidden: 'You are not allowed to do that.',
  group_full: 'The group is full.',
  body_too_large: 'That is too long.',
  unsupported_media_type: 'Files of this type cannot be sent here.',
  no_such_attachment: 'That file is not available (any more).',
  no_such_message: 'That message is not there any more.',
  too_late: 'It is too late to change that message.',
  muted: 'A moderator has muted you here for now.',
  banned: 'You are banned from this conversation.',
  rate_limited: 'Slow down a little and try again.',
  unavailable: 'The server is busy or unavailable. Try again in a moment.',
  internal: 'Something went wrong on the server. Please try again.',
};

/**
 * Text for people. `invalid_field` and unknown codes carry the server's own
 * message (it says which field); the others have fixed wording.
 */
export function describeError(err, overrides = {}) {
  const code = err?.code;
  if (code && overrides[code]) return overrides[code];
  if (code === 'invalid_field') return `Please check your input: ${err.message}.`.replace(/\.\.$/, '.');
  if (code && FRIENDLY[code]) return FRIENDLY[code];
  // ImError kinds of the client (im-client.d.ts)
  switch (err?.kind) {
    case 'body_too_large': return 'This message is too long to send.';
    case 'queue_full': return 'Too many messages waiting to be sent.';
    case 'stopped': return 'Not connected.';
    case 'timeout': return 'The server did not answer in time.';
    case 'disconnected': return 'The connection dropped. Try again.';
    case 'rejected':
      // An answer without an error code (an object store, a proxy): its text is no message for people.
      if (/^http_\d+$/.test(code ?? '')) return `The server answered HTTP ${err.status ?? code.slice(5)}. Please try again.`;
      return err.serverMessage || 'The server refused this.';
    case 'transport': return FRIENDLY.network;
    case 'not_signed_in': return 'Not signed in yet. Try again in a moment.';
    case 'aborted': return 'Cancelled.';
    case 'unsupported': return 'This browser cannot do that here.';
    default: break;
  }
  if (err?.message) return err.message;
  return 'Something went wrong.';
}

// --------------------------------------------------------- endpoints

export const login = (username, password) =>
  api('POST', '/api/v1/login', { body: { username, password }, auth: false });
export const register = (username, password) =>
  api('POST', '/api/v1/register', { body: { username, password }, auth: false });
export const logout = () => api('POST', '/api/v1/logout');
export const me = () => api('GET', '/api/v1/me');
export const userById = (id) => api('GET', `/api/v1/users/${encodeURIComponent(id)}`);
export const userByName = (name) => api('GET', `/api/v1/users/by-name/${encodeURIComponent(name)}`);
export const myGroups = () => api('GET', '/api/v1/groups');
export const createGroup = (name, members) => api('POST', '/api/v1/groups', { body: { name, members } });
export const leaveGroup = (group, user) => api('DELETE', `/api/v1/groups/${group}/members/${user}`);
export const groupInfo = (group) => api('GET', `/api/v1/groups/${group}`);
export const listRooms = (after = 0, limit = 200) => api('GET', `/api/v1/rooms?after=${after}&limit=${limit}`);
export const createRoom = (name) => api('POST', '/api/v1/rooms', { body: { name } });
export const myRooms = () => api('GET', '/api/v1/me/rooms');
export const joinRoom = (room) => api('POST', `/api/v1/rooms/${room}/join`);
export const leaveRoom = (room) => api('POST', `/api/v1/rooms/${room}/leave`);

export function inboxPage(after) {
  const q = after ? `?after=${encodeURIComponent(after)}&limit=200` : '?limit=200';
  return api('GET', `/api/v1/conversations${q}`);
}

export function historyPage(conv, { before, limit } = {}) {
  const q = new URLSearchParams();
  if (before != null) q.set('before', String(before));
  if (limit != null) q.set('limit', String(limit));
  const qs = q.toString();
  return api('GET', `/api/v1/conversations/${encodeURIComponent(conv)}/messages${qs ? `?${qs}` : ''}`);
}

// Contacts and blocks (§9.1, §9.2), moderation (§8.5).
export const contacts = () => api('GET', '/api/v1/contacts');
export const askContact = (user) => api('POST', `/api/v1/contacts/${encodeURIComponent(user)}`);
export const endContact = (user) => api('DELETE', `/api/v1/contacts/${encodeURIComponent(user)}`);
export const blocks = () => api('GET', '/api/v1/blocks');
export const block = (user) => api('PUT', `/api/v1/blocks/${encodeURIComponent(user)}`);
export const unblock = (user) => api('DELETE', `/api/v1/blocks/${encodeURIComponent(user)}`);
export const roomModerators = (room) => api('GET', `/api/v1/rooms/${encodeURIComponent(room)}/moderators`);
export const sanctions = (conv) => api('GET', `/api/v1/conversations/${encodeURIComponent(conv)}/sanctions`);
export const sanction = (conv, body) => api('POST', `/api/v1/conversations/${encodeURIComponent(conv)}/sanctions`, { body });
