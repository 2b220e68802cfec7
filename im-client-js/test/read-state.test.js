// Tests of read state (read-state.js): the read book (unread counts), the
// read-mark queue (offline marks, highest wins, resent after reconnects),
// `received` pacing and the inbox walk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReadBook, ReadSync, Owner, RECEIPT_INTERVAL_MS } from '../read-state.js';

const G = 'g:1';
const R = 'r:1';
const rids = () => {
  let n = 0;
  return () => ++n;
};

test('unread follows messages, marks and own sends', () => {
  const book = new ReadBook();
  assert.equal(book.get(G), null);
  let c = book.message(G, 1, false);
  assert.deepEqual([c.state.unread, c.readRose, c.unreadChanged], [1, false, true]);
  book.message(G, 2, false);
  assert.deepEqual(book.get(G), { head: 2, read: 0, unread: 2 });
  assert.equal(book.message(G, 2, false), null, 'a duplicate changes nothing');
  c = book.read(G, 1);
  assert.deepEqual([c.state.unread, c.readRose], [1, true]);
  assert.equal(book.read(G, 1), null, 'an older mark moves nothing');
  c = book.message(G, 3, true);
  assert.deepEqual(c.state, { head: 3, read: 3, unread: 0 }, 'one’s own message reads everything up to it');
  assert.deepEqual(book.read(G, 5).state, { head: 5, read: 5, unread: 0 }, 'a mark above the head: the server knows more');
  assert.equal(book.inbox({ conv: R, head: 10, read: 4, unread: 6 }).state.unread, 6);
  assert.equal(book.inbox({ conv: R, head: 8, read: 2, unread: 6 }), null, 'the inbox only raises');
  assert.equal(book.totalUnread(), 6);
  assert.deepEqual(book.all().map(([conv]) => conv), [G, R]);
});

test('marks made offline go out after the reconnect, and the highest wins', () => {
  const rs = new ReadSync();
  rs.mark(G, 3);
  rs.mark(G, 7);
  rs.mark(G, 5);
  assert.deepEqual(rs.pendingMarks(), { [G]: 7 });
  assert.deepEqual(rs.frames(10, 1, 0, rids()), [], 'a version-1 connection gets none');
  assert.deepEqual(rs.frames(10, 2, 0, rids()), [{ type: 'read', rid: 1, conv: G, id: 7 }]);
  assert.equal(rs.unanswered(), 1);
  // Lost with the connection: queued again, merged with newer (lower) marks.
  rs.disconnected();
  rs.mark(G, 6);
  assert.deepEqual(rs.frames(10, 2, 0, rids()), [{ type: 'read', rid: 1, conv: G, id: 7 }]);
  // Refused for a passing reason: again; for good: dropped.
  assert.equal(rs.answered(1, 'rate_limited'), Owner.DONE);
  assert.equal(rs.frames(10, 2, 0, rids()).length, 1);
  assert.equal(rs.answered(1, 'invalid_field'), Owner.DONE);
  assert.deepEqual(rs.frames(10, 2, 0, rids()), []);
  assert.equal(rs.answered(99, null), Owner.NONE);
  assert.equal(rs.unanswered(), 0);
});

test('marks of several conversations respect the budget and are not lost', () => {
  const rs = new ReadSync();
  rs.mark('g:2', 1);
  rs.mark('d:1:2', 4);
  rs.mark(G, 9);
  const first = rs.frames(2, 2, 0, rids());
  assert.deepEqual(first.map((f) => f.conv), ['d:1:2', G], 'in conversation order, within the budget');
  assert.deepEqual(rs.frames(5, 2, 0, rids()).map((f) => [f.conv, f.id]), [['g:2', 1]]);
});

test('received reports are paced to one per second and skip rooms; the inbox is walked page by page', () => {
  const rs = new ReadSync();
  rs.delivered(G, 4);
  rs.delivered(R, 9);
  rs.delivered(G, 5);
  assert.deepEqual(rs.frames(10, 2, 1000, rids()), [{ type: 'received', rid: 1, cursors: { [G]: 5 } }]);
  rs.delivered(G, 6);
  assert.deepEqual(rs.frames(10, 2, 1500, rids()), [], 'paced');
  const later = 1000 + RECEIPT_INTERVAL_MS;
  assert.deepEqual(rs.frames(10, 2, later, rids()), [{ type: 'received', rid: 1, cursors: { [G]: 6 } }]);

  rs.synced();
  assert.deepEqual(rs.frames(10, 2, later, rids()), [{ type: 'inbox', rid: 1 }]);
  assert.deepEqual(rs.frames(10, 2, later, rids()), [], 'one page at a time');
  assert.equal(rs.inboxPage(1, G, true), Owner.INBOX);
  assert.deepEqual(rs.frames(10, 2, later, rids()), [{ type: 'inbox', rid: 1, after: G }]);
  assert.equal(rs.inboxPage(1, null, false), Owner.INBOX);
  assert.deepEqual(rs.frames(10, 2, later, rids()), []);
  assert.equal(rs.inboxPage(5, null, false), Owner.NONE);
  rs.synced();
  assert.deepEqual(rs.frames(10, 2, later, rids()), [], 'a gap-filling sync does not walk again');
  rs.disconnected();
  rs.synced();
  assert.equal(rs.frames(10, 2, later, rids()).length, 1, 'the next connection walks again');
});

test('a report lost with the connection or refused for a passing reason goes out again', () => {
  const rs = new ReadSync();
  rs.delivered(G, 4);
  assert.equal(rs.frames(10, 2, 0, rids()).length, 1);
  rs.disconnected();
  const later = RECEIPT_INTERVAL_MS;
  assert.deepEqual(rs.frames(10, 2, later, rids()), [{ type: 'received', rid: 1, cursors: { [G]: 4 } }]);
  assert.equal(rs.answered(1, 'rate_limited'), Owner.DONE);
  const again = later + RECEIPT_INTERVAL_MS;
  assert.equal(rs.frames(10, 2, again, rids()).length, 1);
  assert.equal(rs.answered(1, null), Owner.DONE);
  assert.deepEqual(rs.frames(10, 2, again + 5000, rids()), []);
});

test('events raise the head but do not count as unread; marks and own messages still clear them', () => {
  const book = new ReadBook();
  book.message(G, 1, false);
  let c = book.message(G, 2, false, true);
  assert.deepEqual(c.state, { head: 2, read: 0, unread: 1 }, 'a reaction of another user raises the head only');
  assert.equal(c.unreadChanged, false, 'so no unread event');
  book.message(G, 3, false);
  book.message(G, 4, false, true);
  book.message(G, 5, false, true);
  assert.deepEqual(book.get(G), { head: 5, read: 0, unread: 2 });
  assert.equal(book.message(G, 4, false, true), null, 'a duplicate changes nothing');
  c = book.read(G, 2);
  assert.deepEqual(c.state, { head: 5, read: 2, unread: 1 }, 'message 1 read; the event 2 was never counted');
  assert.deepEqual(book.read(G, 4).state, { head: 5, read: 4, unread: 0 });
  assert.equal(book.message(G, 6, true, true).state.unread, 0, 'one’s own event marks read too');
  assert.deepEqual(book.get(G), { head: 6, read: 6, unread: 0 });
  assert.equal(book.totalUnread(), 0);
});

test('the inbox unread, which leaves events out, counts events the app did not get', () => {
  const book = new ReadBook();
  // After a restart: the sync brings 11..14 (13 an event); the inbox says
  // 10 read, 20 the head, 6 unread: 4 events among 11..20, one of them
  // known (13), three among 15..20 unknown.
  for (const id of [11, 12, 13, 14]) book.message(G, id, false, id === 13);
  assert.equal(book.get(G).unread, 13, 'before the inbox: all but the known event');
  let c = book.inbox({ conv: G, head: 20, read: 10, unread: 6 });
  assert.deepEqual(c.state, { head: 20, read: 10, unread: 6 });
  // The rest arrives: 15..20 with 16, 17 and 19 events.
  for (const id of [15, 16, 17, 18, 19, 20]) book.message(G, id, false, [16, 17, 19].includes(id));
  assert.deepEqual(book.get(G), { head: 20, read: 10, unread: 6 }, 'already counted');
  assert.deepEqual(book.read(G, 16).state, { head: 20, read: 16, unread: 2 }, 'read 11, 12, 14, 15 of the 6');
  // A later message after an inbox whose events the app never got.
  const book2 = new ReadBook();
  book2.inbox({ conv: G, head: 10, read: 0, unread: 4 });
  assert.equal(book2.get(G).unread, 4);
  assert.equal(book2.message(G, 11, false).state.unread, 5);
  assert.equal(book2.message(G, 12, false, true).unreadChanged, false, 'an event above the head: the head only');
  assert.deepEqual(book2.get(G), { head: 12, read: 0, unread: 5 });
  c = book2.read(G, 10);
  assert.deepEqual(c.state, { head: 12, read: 10, unread: 1 }, 'reading past the hidden events drops them');
  // An older inbox entry, after a newer one: it only raises.
  assert.equal(book2.inbox({ conv: G, head: 9, read: 3, unread: 6 }), null);
  // A local mark ahead of the inbox's read: its unread ones are taken as the newest.
  const book3 = new ReadBook();
  book3.read(G, 5);
  c = book3.inbox({ conv: G, head: 10, read: 2, unread: 4 });
  assert.deepEqual(c.state, { head: 10, read: 5, unread: 4 });
});

test('events do not count (the Rust read book’s test)', () => {
  const book = new ReadBook();
  book.message(G, 1, false, false);
  book.message(G, 2, false, true); // a reaction
  book.message(G, 3, false, false);
  assert.deepEqual(book.get(G), { head: 3, read: 0, unread: 2 });
  book.read(G, 2);
  assert.equal(book.get(G).unread, 1);
  book.message(G, 4, false, true);
  assert.equal(book.get(G).unread, 1);
  book.read(G, 4);
  assert.equal(book.get(G).unread, 0);
  // The inbox says 10 above read 4 hold 3 countable messages: 3 hidden events.
  assert.equal(book.inbox({ conv: G, head: 10, read: 4, unread: 3 }).state.unread, 3);
  book.message(G, 11, false, false);
  assert.equal(book.get(G).unread, 4);
  book.read(G, 10);
  assert.equal(book.get(G).unread, 1);
});
