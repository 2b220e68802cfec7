// Tests of events (events.js): applying reactions, edits and recalls to a
// message (the rules of im_protocol::events::apply), reading an event's
// content, and the drafts of react/unreact/edit/recall.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  applyEvent, editDraft, eventChange, isEvent, isEventKind, isValidEmoji, MAX_EMOJIS_PER_MESSAGE,
  MAX_REACTIONS_PER_MESSAGE, reactionDraft, recallDraft,
} from '../events.js';

const G = 'g:1';
const msg = (id, from, extra = {}) => ({ conv: G, id, from, cmid: `c${id}`, body: '', ts: 0, ...extra });
const reaction = (id, from, emoji, remove = false, target = 1) =>
  msg(id, from, { kind: 'reaction', target, content: remove ? { emoji, remove: true } : { emoji } });
const edit = (id, body, extra = {}) => msg(id, 3, { kind: 'edit', target: 1, body, ...extra });
const recall = (id, target = 1) => msg(id, 3, { kind: 'recall', target });
const summary = (m) => (m.reactions ?? []).map((r) => [r.emoji, r.users]);

test('reactions add once (users ascending), remove, and keep first-use order', () => {
  const m = msg(1, 3, { body: 'hi' });
  assert.equal(applyEvent(m, reaction(2, 9, '👍')), true);
  assert.equal(applyEvent(m, reaction(3, 4, '🎉')), true);
  assert.equal(applyEvent(m, reaction(4, 4, '👍')), true);
  assert.equal(applyEvent(m, reaction(5, 4, '👍')), false, 'a second add is no change');
  assert.deepEqual(summary(m), [['👍', [4, 9]], ['🎉', [4]]]);
  const before = m.reactions;
  assert.equal(applyEvent(m, reaction(6, 4, '🎉', true)), true);
  assert.notEqual(m.reactions, before, 'a change replaces the array');
  assert.deepEqual(before.map((r) => r.emoji), ['👍', '🎉'], 'the old array is left alone');
  assert.equal(applyEvent(m, reaction(7, 4, '🎉', true)), false, 'removing what is not there');
  assert.deepEqual(summary(m), [['👍', [4, 9]]], 'an emoji nobody uses any more is gone');
  assert.equal(applyEvent(m, reaction(8, 5, '👍', true)), false, 'another user’s reaction is not removed');
  applyEvent(m, reaction(9, 4, '👍', true));
  applyEvent(m, reaction(10, 9, '👍', true));
  assert.equal('reactions' in m, false, 'no reactions left: the field is gone, as on the wire');
  assert.equal(m.body, 'hi');
});

test('applying the same events again changes nothing (idempotent)', () => {
  const events = [reaction(2, 9, '👍'), reaction(3, 4, '🎉'), edit(4, 'hello', { mentions: [4] }), reaction(5, 5, '👍')];
  const m = msg(1, 3, { body: 'helo' });
  for (const e of events) assert.equal(applyEvent(m, e), true);
  const once = structuredClone(m);
  for (const e of events) assert.equal(applyEvent(m, e), false);
  assert.deepEqual(m, once);
  assert.deepEqual(once, { ...msg(1, 3), body: 'hello', mentions: [4], edited: 4, reactions: [{ emoji: '👍', users: [5, 9] }, { emoji: '🎉', users: [4] }] });
  // A history page's message already carries the event's effect.
  const stored = structuredClone(once);
  for (const e of events) assert.equal(applyEvent(stored, e), false);
  assert.deepEqual(stored, once);
});

test('the emoji and reaction caps hold; existing emojis still take users', () => {
  const m = msg(1, 3);
  for (let i = 0; i < MAX_EMOJIS_PER_MESSAGE; i++) assert.equal(applyEvent(m, reaction(2 + i, 9, `:e${i}:`)), true);
  assert.equal(applyEvent(m, reaction(100, 9, ':one-more:')), false);
  assert.equal(applyEvent(m, reaction(101, 10, ':e0:')), true);
  assert.equal(m.reactions.length, MAX_EMOJIS_PER_MESSAGE);

  const full = msg(1, 3, { reactions: [{ emoji: '👍', users: Array.from({ length: MAX_REACTIONS_PER_MESSAGE }, (_, i) => i + 1) }] });
  assert.equal(applyEvent(full, reaction(2, 999_999, '👍')), false, 'at most 5000 reactions');
  assert.equal(applyEvent(full, reaction(3, 999_999, '🎉')), false);
  assert.equal(applyEvent(full, reaction(4, 1, '👍', true)), true, 'removing still works');
  assert.equal(applyEvent(full, reaction(5, 999_999, '🎉')), true);
});

test('edits: body, mentions and content of the newest; an older edit arriving late is ignored', () => {
  const m = msg(1, 3, { body: 'v1', mentions: [7], kind: 'location', content: { lat: 1, lon: 2 } });
  assert.equal(applyEvent(m, edit(5, 'v5', { content: { content: { lat: 3, lon: 4, name: 'Here' } } })), true);
  assert.deepEqual([m.body, m.edited, m.mentions, m.content], ['v5', 5, undefined, { lat: 3, lon: 4, name: 'Here' }]);
  assert.equal(applyEvent(m, edit(4, 'v4', { mentions: [8] })), false, 'older than the applied edit');
  assert.equal(applyEvent(m, edit(5, 'v5 again')), false, 'the same edit');
  assert.equal(m.body, 'v5');
  assert.equal(applyEvent(m, edit(6, 'v6', { mentions: [8] })), true);
  assert.deepEqual([m.body, m.edited, m.mentions, m.content], ['v6', 6, [8], { lat: 3, lon: 4, name: 'Here' }], 'no content: left as it was');
  assert.equal(m.kind, 'location');
  // A message shown from an old history page, edited later: the newest edit wins.
  const old = msg(1, 3, { body: 'v1', edited: 9 });
  assert.equal(applyEvent(old, edit(6, 'v6')), false);
});

test('recall empties the message for good; events for another message or conversation change nothing', () => {
  const m = msg(1, 3, { body: 'secret', kind: 'x-poll', content: { q: 1 }, mentions: [4], reply_to: 1, reactions: [{ emoji: '👍', users: [4] }] });
  applyEvent(m, edit(2, 'secret 2'));
  assert.equal(applyEvent(m, { ...edit(3, 'x'), target: 2 }), false, 'another target');
  assert.equal(applyEvent(m, { ...edit(3, 'x'), conv: 'g:2' }), false, 'another conversation');
  assert.equal(applyEvent(m, recall(4)), true);
  assert.deepEqual(m, { ...msg(1, 3), body: '', recalled: 4 }, 'only who sent it when is left');
  assert.equal(applyEvent(m, recall(4)), false, 'twice: no change');
  assert.equal(applyEvent(m, recall(6)), false);
  assert.equal(applyEvent(m, edit(7, 'back')), false, 'a recalled message stays empty');
  assert.equal(applyEvent(m, reaction(8, 4, '👍')), false);
  assert.deepEqual(m, { ...msg(1, 3), body: '', recalled: 4 });
  // An edit the server emptied because its target was recalled meanwhile.
  const n = msg(1, 3, { body: 'kept' });
  assert.equal(applyEvent(n, { ...edit(9, ''), recalled: 8 }), false);
  assert.equal(n.body, 'kept');
});

test('system notices and malformed events change nothing; eventChange reads contents', () => {
  const m = msg(1, 3, { body: 'hi' });
  const notice = msg(2, 3, { kind: 'system', body: 'alice added bob', content: { event: 'member_added', user: 5, role: 'member' } });
  assert.equal(applyEvent(m, { ...notice, target: 1 }), false);
  assert.deepEqual(eventChange(notice), { type: 'system', event: 'member_added', user: 5, role: 'member' });
  for (const content of [{}, { emoji: '' }, { emoji: 'a b' }, { emoji: 'x'.repeat(33) }, { emoji: '👍', size: 2 }, { emoji: '👍', remove: 'yes' }, null]) {
    assert.equal(eventChange({ kind: 'reaction', content }), null, JSON.stringify(content));
    assert.equal(applyEvent(m, { ...reaction(3, 4, '👍'), content }), false);
  }
  assert.deepEqual(eventChange(reaction(3, 4, '👍', true)), { type: 'reaction', emoji: '👍', remove: true });
  assert.deepEqual(eventChange({ kind: 'edit' }), { type: 'edit' });
  assert.deepEqual(eventChange({ kind: 'edit', content: { content: { lat: 1, lon: 2 } } }), { type: 'edit', content: { lat: 1, lon: 2 } });
  assert.equal(eventChange({ kind: 'edit', content: { content: 3 } }), null);
  assert.equal(eventChange({ kind: 'edit', content: { body: 'x' } }), null);
  assert.equal(eventChange({ kind: 'recall', content: {} }), null);
  assert.equal(eventChange({ kind: 'image', content: {} }), null);
  assert.equal(applyEvent(m, { ...recall(4), content: {} }), false, 'a recall with content is malformed');
  assert.equal(m.body, 'hi');
  assert.equal(applyEvent(m, msg(5, 3, { body: 'plain', target: 1 })), false, 'not an event');
});

test('isEvent, isEventKind and emoji checks', () => {
  for (const k of ['reaction', 'edit', 'recall', 'system']) assert.equal(isEventKind(k), true);
  for (const k of [undefined, 'text', 'image', 'x-reaction']) assert.equal(isEventKind(k), false);
  assert.equal(isEvent(reaction(2, 4, '👍')), true);
  assert.equal(isEvent(msg(1, 3)), false);
  assert.equal(isEvent(null), false);
  assert.equal(isValidEmoji('👍🏽'), true);
  assert.equal(isValidEmoji(':party:'), true);
  assert.equal(isValidEmoji('👍\n'), false);
  assert.equal(isValidEmoji('\u0007'), false);
  assert.equal(isValidEmoji('é'.repeat(16)), true, '32 bytes');
  assert.equal(isValidEmoji('é'.repeat(17)), false, '34 bytes');
});

test('drafts of react, unreact, edit and recall; bad arguments throw', () => {
  assert.deepEqual(reactionDraft(21, '👍'), { body: '', kind: 'reaction', target: 21, content: { emoji: '👍' } });
  assert.deepEqual(reactionDraft(21, '👍', true), { body: '', kind: 'reaction', target: 21, content: { emoji: '👍', remove: true } });
  assert.deepEqual(editDraft(21, 'See you at 12:30'), { body: 'See you at 12:30', kind: 'edit', target: 21 });
  assert.deepEqual(editDraft(21, 'here', { content: { lat: 1, lon: 2 }, mentions: [5] }), {
    body: 'here', kind: 'edit', target: 21, content: { content: { lat: 1, lon: 2 } }, mentions: [5],
  });
  assert.deepEqual(recallDraft(21), { body: '', kind: 'recall', target: 21 });
  assert.throws(() => reactionDraft(0, '👍'), TypeError);
  assert.throws(() => reactionDraft(1.5, '👍'), TypeError);
  assert.throws(() => reactionDraft(21, ''), TypeError);
  assert.throws(() => editDraft(21, null), TypeError);
  assert.throws(() => editDraft(21, 'x', { content: [1] }), TypeError);
  assert.throws(() => editDraft(21, 'x', { mentions: 5 }), TypeError);
  assert.throws(() => recallDraft('21'), TypeError);
});
