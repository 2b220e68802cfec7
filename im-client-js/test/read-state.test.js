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
