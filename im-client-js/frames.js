// frames.js — what each frame from the server does to an ImClient
// (frames.rs): messages offered to the sync state and on to the app, acks
// settling sends, sync pages, replies to requests, refusals (resend,
// retry the sync, or fail the request), presence, membership, typing, read
// state and receipts, and the events each of them emits.
//
// Functions of the client, like connect.js: they never assign its fields;
// they drive its parts (`_outbox`, `_sync`, `_readSync`, `_book`,
// `_typingIn`, `_typingOut`, `_store`, `_backoff`, the `_quiet` and
// `_inFlight` request tables), use `_me`, `_now` and `_log`, and call its
// `_emit`, `_reply` and `_flushStore`. ImClient hands every frame of a
// connection to `handleFrame`.

import { ImError } from './errors.js';
import { isEvent } from './events.js';
import { draftMessage } from './outbox.js';
import { Owner, TRANSIENT_CODES } from './read-state.js';
import { offer } from './sync-state.js';

/** A message as the app gets it: the wire fields without `type`. */
function asMessage(frame) {
  const { type: _type, ...m } = frame;
  return m;
}

/** What server frame `f` does to `client`'s state, and the events it emits. */
export function handleFrame(client, f) {
  const rid = f.rid;
  switch (f.type) {
    case 'message':
      offerMessage(client, asMessage(f));
      break;
    case 'ack': {
      const sent = client._outbox.take(rid);
      if (sent) {
        offerMessage(client, draftMessage(sent.draft, f.conv, f.id, client._me ?? 0, f.cmid ?? sent.cmid, f.ts ?? 0));
        sent.reply.resolve({ id: f.id, duplicate: !!f.duplicate });
      }
      break;
    }
    case 'sync_page':
      if (client._sync.isSync(rid)) {
        for (const m of f.messages ?? []) offerMessage(client, m);
        if (client._sync.pageDone(rid, !!f.has_more)) {
          client._flushStore();
          client._readSync.synced();
          // A healthy connection: the next outage starts from the initial delay.
          client._backoff.reset();
          client._emit({ type: 'synced' });
        }
      }
      break;
    case 'ok':
      if (client._quiet.delete(rid)) break;
      if (client._readSync.answered(rid, null) !== Owner.NONE) break;
      client._reply(rid, f);
      break;
    case 'error':
      if (rid == null) client._log.warn('error frame without rid', f.code, f.message);
      else if (client._quiet.delete(rid)) client._log.debug('typing refresh refused', f.code);
      else if (client._readSync.answered(rid, f.code) !== Owner.NONE) {
        // a read mark, report or inbox page: handled there
      } else refused(client, rid, f.code, f.message);
      break;
    case 'inbox_page': {
      const entries = f.entries ?? [];
      if (client._readSync.inboxPage(rid, entries.at(-1)?.conv ?? null, !!f.has_more) === Owner.INBOX) {
        for (const e of entries) changed(client, e.conv, client._book.inbox(e), true);
      } else client._reply(rid, f);
      break;
    }
    case 'history_page':
    case 'presence_list':
    case 'receipt_list':
      client._reply(rid, f);
      break;
    case 'presence':
      client._emit({ type: 'presence', presence: { user: f.user, status: f.status, last_active_at: f.last_active_at } });
      break;
    case 'contact': // a request arrived or was sent elsewhere, was accepted, or ended
      client._emit({ type: 'contact', user: f.user, state: f.state });
      break;
    case 'member':
      if (f.change === 'added' && f.user === client._me) client._sync.noteGap(); // a new group: its past comes with a sync
      client._emit({ type: 'member', group: f.group, user: f.user, change: f.change, by: f.by });
      break;
    case 'user_typing':
      client._typingIn.heard(f.conv, f.user, !!f.typing, client._now());
      client._emit({ type: 'typing', conv: f.conv, user: f.user, typing: !!f.typing });
      break;
    case 'read_up_to': {
      const change = client._book.read(f.conv, f.id);
      client._emit({ type: 'readUpTo', conv: f.conv, id: f.id });
      changed(client, f.conv, change, false);
      break;
    }
    case 'receipt':
      client._emit({ type: 'receipt', conv: f.conv, user: f.user, read: f.read, delivered: f.delivered });
      break;
    default:
      // pong, hello, and frame types of later revisions: ignored (protocol §2)
      break;
  }
}

/** An `error` answering request `rid`. */
function refused(client, rid, code, message) {
  if (client._outbox.isSend(rid)) {
    // Not processed, or maybe not stored: resend later with the same cmid.
    if (TRANSIENT_CODES.has(code)) client._outbox.requeue(rid);
    else client._outbox.take(rid)?.reply.reject(new ImError('rejected', `refused by the server: ${code}: ${message}`, { code, serverMessage: message }));
  } else if (client._sync.isSync(rid)) {
    client._log.warn('sync refused; retrying shortly', code, message);
    client._sync.syncFailed(rid);
  } else {
    const req = client._inFlight.get(rid);
    if (req) {
      client._inFlight.delete(rid);
      req.reject(new ImError('rejected', `refused by the server: ${code}: ${message}`, { code, serverMessage: message }));
    }
  }
}

/** A message from any source: handed to the app if it is the next one (sync-state.js decides). */
function offerMessage(client, m) {
  offer(client._sync, m, (msg) => {
    client._emit({ type: 'message', message: msg });
    afterDelivery(client, msg);
    try {
      const r = client._store.save(msg.conv, msg.id);
      if (r && typeof r.catch === 'function') r.catch((e) => client._log.warn('saving a sync cursor failed', e));
    } catch (e) {
      client._log.warn('saving a sync cursor failed', e);
    }
  });
}

/**
 * A message reached the app: counts, receipts and typing follow. An event
 * (a reaction, edit, recall or notice) raises the head but does not count
 * as unread.
 */
function afterDelivery(client, m) {
  const own = client._me !== null && m.from === client._me;
  if (own) client._typingOut.sentMessage(m.conv);
  else {
    client._readSync.delivered(m.conv, m.id);
    if (client._typingIn.messageFrom(m.conv, m.from)) client._emit({ type: 'typing', conv: m.conv, user: m.from, typing: false });
  }
  changed(client, m.conv, client._book.message(m.conv, m.id, own, isEvent(m)), false);
}

/** Tells the app about a read-state change: `readUpTo` when `announceRead` and the read id rose, `unread` when the count changed. */
function changed(client, conv, change, announceRead) {
  if (!change) return;
  if (announceRead && change.readRose) client._emit({ type: 'readUpTo', conv, id: change.state.read });
  if (change.unreadChanged) client._emit({ type: 'unread', conv, unread: change.state.unread, read: change.state.read });
}
