// events.js — events in a conversation's id sequence: reactions, edits,
// recalls and system notices (a port of im_protocol::events).
//
// An event is a message of its own kind with its own id, so sync and dedupe
// deliver it like any message, exactly once and in order. `reaction`,
// `edit` and `recall` name the message they change in `target`; `system`
// notices (a member added, …) stand alone and are shown by their `body`.
// The server applies each change to its target when it stores the event,
// so history pages carry every message in its current state (`edited`,
// `recalled`, `reactions`); an app that gets an event as a `message` event
// applies it to the message it shows with `applyEvent`, by the same rules.
// Events never count as unread.
//
// Also the drafts that `ImClient`'s `react`, `unreact`, `edit` and `recall`
// send (they go through the outbox like any send).

/** Kind of a reaction event: adds or removes the sender's emoji on the target. */
export const REACTION = 'reaction';
/** Kind of an edit event: the target's new body (and mentions, and content). */
export const EDIT = 'edit';
/** Kind of a recall event: empties the target for good (a tombstone). */
export const RECALL = 'recall';
/** Kind of a system notice (made by the server only). */
export const SYSTEM = 'system';
/** Every event kind. */
export const EVENT_KINDS = Object.freeze([REACTION, EDIT, RECALL, SYSTEM]);

/** Longest reaction emoji (or short code), in UTF-8 bytes. */
export const MAX_EMOJI_LEN = 32;
/** Most distinct emojis on one message. */
export const MAX_EMOJIS_PER_MESSAGE = 50;
/** Most reactions (user and emoji pairs) on one message. */
export const MAX_REACTIONS_PER_MESSAGE = 5000;

/** `system` notice events (`content.event`); later servers may add others (show the body). */
export const SYSTEM_MEMBER_ADDED = 'member_added';
export const SYSTEM_MEMBER_REMOVED = 'member_removed';
export const SYSTEM_MEMBER_LEFT = 'member_left';
export const SYSTEM_ROLE_CHANGED = 'role_changed';
/** A moderator muted `user` until `until` (ms); their sends are refused with `muted`. */
export const SYSTEM_MEMBER_MUTED = 'member_muted';
export const SYSTEM_MEMBER_UNMUTED = 'member_unmuted';
/** A moderator removed `user` from a room (in a group: `member_removed`). */
export const SYSTEM_MEMBER_KICKED = 'member_kicked';
/** A moderator banned `user`: removed and kept out until `member_unbanned`. */
export const SYSTEM_MEMBER_BANNED = 'member_banned';
export const SYSTEM_MEMBER_UNBANNED = 'member_unbanned';

const utf8 = new TextEncoder();
const SPACE_OR_CONTROL = /[\p{White_Space}\p{Cc}]/u;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const onlyKeys = (o, keys) => Object.keys(o).every((k) => keys.includes(k));
const isMessageId = (id) => Number.isSafeInteger(id) && id > 0;

/** Whether `kind` is an event kind (`reaction`, `edit`, `recall`, `system`). */
export function isEventKind(kind) {
  return kind === REACTION || kind === EDIT || kind === RECALL || kind === SYSTEM;
}

/** Whether message `m` is an event rather than something said: events do not count as unread, nor are they drawn as messages. */
export function isEvent(m) {
  return m != null && isEventKind(m.kind);
}

/** Whether message `m` was recalled (a tombstone: no body, content or reactions left). */
export function isRecalled(m) {
  return m != null && m.recalled != null;
}

/** Whether `emoji` is a valid reaction: 1 to 32 UTF-8 bytes, no whitespace or control characters. */
export function isValidEmoji(emoji) {
  if (typeof emoji !== 'string' || emoji === '' || SPACE_OR_CONTROL.test(emoji)) return false;
  return utf8.encode(emoji).length <= MAX_EMOJI_LEN;
}

/**
 * What event `m` does, read from its kind and content, or null when it is
 * not an event or its content is malformed:
 * `{type: 'reaction', emoji, remove}`, `{type: 'edit', content?}` (content:
 * the target's new content object, when the edit has one),
 * `{type: 'recall'}`, `{type: 'system', event, user?, role?, name?}`.
 */
export function eventChange(m) {
  const c = m?.content ?? null;
  switch (m?.kind) {
    case REACTION:
      if (!isObject(c) || !onlyKeys(c, ['emoji', 'remove']) || !isValidEmoji(c.emoji)) return null;
      if (c.remove !== undefined && typeof c.remove !== 'boolean') return null;
      return { type: REACTION, emoji: c.emoji, remove: c.remove === true };
    case EDIT: {
      if (c === null) return { type: EDIT };
      if (!isObject(c) || !onlyKeys(c, ['content'])) return null;
      if (c.content == null) return { type: EDIT };
      return isObject(c.content) ? { type: EDIT, content: c.content } : null;
    }
    case RECALL:
      return c === null ? { type: RECALL } : null;
    case SYSTEM:
      if (!isObject(c) || typeof c.event !== 'string') return null;
      return { ...c, type: SYSTEM };
    default:
      return null;
  }
}

/**
 * Applies `event` (a `reaction`, `edit` or `recall` naming `message` in its
 * `target`) to `message` in place, as the server did when it stored the
 * event, and returns whether anything changed. Idempotent and safe in any
 * order: an edit older than the one applied, any event for a recalled
 * message, an edit emptied by a later recall (it has `recalled` set), an
 * event for another message, a system notice and a malformed event change
 * nothing. A changed `reactions` array is replaced, not mutated.
 */
export function applyEvent(message, event) {
  if (message == null || event == null || event.target == null || event.target !== message.id) return false;
  if (event.conv !== undefined && message.conv !== undefined && event.conv !== message.conv) return false;
  // A recalled message changes no more; an edit scrubbed by a recall (it
  // carries `recalled` itself) has nothing left to apply.
  if (isRecalled(message) || isRecalled(event)) return false;
  const change = eventChange(event);
  switch (change?.type) {
    case REACTION:
      return react(message, event.from, change);
    case EDIT:
      if (message.edited != null && message.edited >= event.id) return false;
      message.body = typeof event.body === 'string' ? event.body : '';
      if (Array.isArray(event.mentions) && event.mentions.length > 0) message.mentions = [...event.mentions];
      else delete message.mentions;
      if (change.content !== undefined) message.content = structuredClone(change.content);
      message.edited = event.id;
      return true;
    case RECALL:
      recallMessage(message, event.id);
      return true;
    default:
      return false;
  }
}

/** Empties `message` for good as recall event `by` does: only who sent it when is left. */
export function recallMessage(message, by) {
  message.body = '';
  for (const k of ['kind', 'content', 'mentions', 'reply_to', 'reactions', 'edited']) delete message[k];
  message.recalled = by;
}

function react(message, user, { emoji, remove }) {
  const list = Array.isArray(message.reactions) ? message.reactions : [];
  const i = list.findIndex((r) => r.emoji === emoji);
  const users = i >= 0 && Array.isArray(list[i].users) ? list[i].users : [];
  if (remove) {
    if (i < 0 || !users.includes(user)) return false;
    const left = users.filter((u) => u !== user);
    const next = left.length > 0 ? list.map((r, j) => (j === i ? { ...r, users: left } : r)) : list.filter((_, j) => j !== i);
    if (next.length > 0) message.reactions = next;
    else delete message.reactions;
    return true;
  }
  const total = list.reduce((n, r) => n + (Array.isArray(r.users) ? r.users.length : 0), 0);
  if (total >= MAX_REACTIONS_PER_MESSAGE) return false;
  if (i >= 0) {
    if (users.includes(user)) return false;
    const more = [...users, user].sort((a, b) => a - b);
    message.reactions = list.map((r, j) => (j === i ? { ...r, users: more } : r));
    return true;
  }
  if (list.length >= MAX_EMOJIS_PER_MESSAGE) return false;
  message.reactions = [...list, { emoji, users: [user] }];
  return true;
}

// ---------------------------------------------------------------- drafts

function checkTarget(target) {
  if (!isMessageId(target)) throw new TypeError(`bad target message id ${target}`);
}

function checkEmoji(emoji) {
  if (!isValidEmoji(emoji)) {
    throw new TypeError(`emoji must be 1 to ${MAX_EMOJI_LEN} bytes without whitespace or control characters`);
  }
}

/** The draft of a reaction with `emoji` to message `target` (`remove`: taking this user's back). */
export function reactionDraft(target, emoji, remove = false) {
  checkTarget(target);
  checkEmoji(emoji);
  return { body: '', kind: REACTION, target, content: remove ? { emoji, remove: true } : { emoji } };
}

/**
 * The draft of an edit of message `target`: its new `body`, and its new
 * `mentions` (none when not given) and `content` object (only for
 * `location` and app `x-…` kinds; left unchanged when not given).
 */
export function editDraft(target, body, { content, mentions } = {}) {
  checkTarget(target);
  if (typeof body !== 'string') throw new TypeError('an edit needs a string body');
  if (content !== undefined && !isObject(content)) throw new TypeError("an edit's content must be an object");
  if (mentions != null && !Array.isArray(mentions)) throw new TypeError('mentions must be an array of user ids');
  const d = { body, kind: EDIT, target };
  if (content !== undefined) d.content = { content };
  if (mentions && mentions.length > 0) d.mentions = [...mentions];
  return d;
}

/** The draft of a recall of message `target`. */
export function recallDraft(target) {
  checkTarget(target);
  return { body: '', kind: RECALL, target };
}

/** What `normalizeDraft` checks of a draft's `target` (outbox.js): a target only on events that change a message, and every such event has one. */
export function checkDraftTarget(d) {
  if (d.target != null) checkTarget(d.target);
  const changes = d.kind === REACTION || d.kind === EDIT || d.kind === RECALL;
  if (changes && d.target == null) throw new TypeError(`a ${d.kind} needs a target message id`);
  if (!changes && d.target != null) throw new TypeError('target is only for events (reaction, edit, recall)');
}
