//! The conformance suite's part for erasing a user: the sender index pages
//! through exactly what a user sent, read state is forgotten, ownership
//! moves, and the directory keeps nothing of the erased user while their
//! messages stay until the logic recalls them.

use std::collections::BTreeSet;
use std::sync::Arc;

use im_protocol::{ConversationId, UserId};

use super::conformance::new_msg;
use super::{Directory, MessageStore, SentCursor, StoreError};
use crate::model::Role;

/// Every message `user` sent, read page by page (`page` at a time),
/// checking that no page repeats a message and that ids ascend within each
/// conversation.
async fn all_sent<S: MessageStore>(store: &S, user: UserId, page: usize) -> Vec<SentCursor> {
    let e = store.message_erasure().expect("a built-in store indexes senders");
    let (mut out, mut after) = (Vec::new(), None);
    loop {
        let got = e.sent_by(user, after, page).await.unwrap();
        assert!(got.len() <= page, "a page holds at most its limit");
        let Some(&last) = got.last() else { break };
        out.extend(got);
        after = Some(last);
    }
    let unique: BTreeSet<_> = out.iter().collect();
    assert_eq!(unique.len(), out.len(), "no message is listed twice");
    for pair in out.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(pair[0].1 < pair[1].1, "ids ascend within a conversation: {out:?}");
        }
    }
    out
}

fn set(v: &[SentCursor]) -> BTreeSet<SentCursor> {
    v.iter().copied().collect()
}

/// Runs the erasure checks against `store`.
pub(crate) async fn erasure<S: MessageStore + Directory>(store: Arc<S>) {
    let mut ids = Vec::new();
    for name in ["eve", "fay", "gus"] {
        ids.push(store.create_user(name, "x", 0).await.unwrap().id);
    }
    let (eve, fay, gus) = (ids[0], ids[1], ids[2]);
    let group = store.create_group("g", eve, 0).await.unwrap().id;
    store.add_member(group, fay, Role::Admin, 10).await.unwrap();
    store.add_member(group, gus, Role::Member, 10).await.unwrap();
    let other_group = store.create_group("g2", fay, 0).await.unwrap().id;
    let room = store.create_room("r", eve, 0).await.unwrap().id;
    store.join_room(room, eve).await.unwrap();
    store.join_room(room, fay).await.unwrap();
    store.add_direct(eve, fay).await.unwrap();
    let (g, r) = (ConversationId::Group(group), ConversationId::Room(room));
    let d = ConversationId::direct(eve, fay);

    // What each sent, events included.
    let mut sent: Vec<(ConversationId, UserId)> = Vec::new();
    for (i, (conv, from)) in [(g, eve), (g, fay), (r, eve), (d, fay), (d, eve), (g, eve), (r, fay), (g, gus)]
        .into_iter()
        .enumerate()
    {
        store.append(new_msg(conv, from.0, &format!("m{i}"), "hi")).await.unwrap();
        sent.push((conv, from));
    }
    let mut reaction = new_msg(g, eve.0, "react", "");
    reaction.kind = Some(im_protocol::events::REACTION.into());
    reaction.content = Some(serde_json::json!({ "emoji": "👍" }));
    reaction.target = Some(2);
    let reaction_id = store.append(reaction).await.unwrap().message.id;
    // A resend is a duplicate: nothing new to list.
    store.append(new_msg(g, eve.0, "m0", "hi")).await.unwrap();

    let expected_eve: BTreeSet<SentCursor> =
        [(g, 1), (r, 1), (d, 2), (g, 3), (g, reaction_id)].into_iter().collect();
    let whole = all_sent(&*store, eve, 100).await;
    assert_eq!(set(&whole), expected_eve, "every message and event eve sent, once");
    assert_eq!(all_sent(&*store, eve, 2).await, whole, "pages of two list the same, in the same order");
    assert_eq!(all_sent(&*store, eve, 1).await, whole);
    assert_eq!(set(&all_sent(&*store, fay, 10).await), [(g, 2), (d, 1), (r, 2)].into_iter().collect());
    assert_eq!(all_sent(&*store, UserId(999_999), 10).await, vec![], "nobody sent nothing");
    let e = store.message_erasure().unwrap();
    let last = *whole.last().unwrap();
    assert_eq!(e.sent_by(eve, Some(last), 10).await.unwrap(), vec![], "nothing after the last");

    // Read state: forgotten for eve only.
    store.mark_read(eve, g, Some("phone"), 2).await.unwrap();
    store.mark_read(fay, g, None, 3).await.unwrap();
    store.mute(eve, r, u64::MAX).await.unwrap();
    store.mark_delivered(eve, &[(d, 2)]).await.unwrap();
    store.set_receipts_shared(eve, false).await.unwrap();
    assert!(e.forget_reads(eve).await.unwrap() >= 3, "eve had state in three conversations");
    for state in store.read_states(eve, &[g, r, d]).await.unwrap() {
        assert_eq!(state, super::ReadState::default(), "eve's read state is gone");
    }
    assert!(store.device_reads(eve, g).await.unwrap().is_empty(), "so are her device reports");
    assert_eq!(store.receipts_shared(&[eve]).await.unwrap(), vec![true], "and her receipts setting");
    assert_eq!(store.read_states(fay, &[g]).await.unwrap()[0].read, 3, "fay's state is hers");
    assert_eq!(e.forget_reads(eve).await.unwrap(), 0, "nothing left to forget");

    // Ownership.
    let dir = store.user_erasure().expect("a built-in directory erases users");
    assert!(!dir.transfer_ownership(group, UserId(999_999)).await.unwrap(), "not a member");
    assert_eq!(store.member_role(group, eve).await.unwrap(), Some(Role::Owner), "nothing changed");
    assert!(dir.transfer_ownership(group, eve).await.unwrap(), "the owner already");
    assert!(matches!(
        dir.transfer_ownership(im_protocol::GroupId(999_999), fay).await,
        Err(StoreError::NotFound)
    ));
    assert!(dir.transfer_ownership(group, gus).await.unwrap());
    assert_eq!(store.member_role(group, gus).await.unwrap(), Some(Role::Owner));
    assert_eq!(store.member_role(group, eve).await.unwrap(), Some(Role::Admin), "the owner before: an admin");
    assert_eq!(store.member_role(group, fay).await.unwrap(), Some(Role::Admin), "others keep their roles");
    assert_eq!(store.group(group).await.unwrap().unwrap().owner, gus);
    let owners = store.members(group).await.unwrap().into_iter().filter(|m| m.role == Role::Owner).count();
    assert_eq!(owners, 1, "exactly one owner");
    assert!(!store.remove_member(group, gus).await.unwrap(), "the owner is never removed");
    assert!(!store.add_member(group, gus, Role::Member, 10).await.unwrap());
    assert_eq!(
        store.member_role(group, gus).await.unwrap(),
        Some(Role::Owner),
        "nor demoted by a role change"
    );

    // Relations on every side, then the erasure.
    let c = store.contacts().expect("a built-in store keeps contacts");
    c.request_contact(eve, fay, 1).await.unwrap().unwrap();
    c.accept_contact(fay, eve, 2).await.unwrap().unwrap();
    c.request_contact(eve, gus, 3).await.unwrap().unwrap();
    // Blocks by and of eve, with users she has no other relation with.
    let (hal, ivy) = (
        store.create_user("hal", "x", 0).await.unwrap().id,
        store.create_user("ivy", "x", 0).await.unwrap().id,
    );
    c.block(hal, eve, 4).await.unwrap();
    c.block(eve, ivy, 5).await.unwrap();
    assert_eq!(c.contacts(fay).await.unwrap().len(), 1, "fay's contact stands until the erasure");
    assert_eq!(c.contacts(gus).await.unwrap().len(), 1, "so does gus's request");
    let m = store.moderation().expect("a built-in store keeps moderation");
    m.set_room_moderator(room, eve, true).await.unwrap();
    store.add_member(other_group, eve, Role::Member, 10).await.unwrap();
    m.ban(ConversationId::Group(other_group), eve).await.unwrap();
    m.set_muted(g, eve, u64::MAX).await.unwrap();
    let messages_before = store.after(g, 0, 100).await.unwrap();

    assert!(dir.erase_user(eve).await.unwrap(), "eve existed");
    assert_eq!(store.user(eve).await.unwrap(), None);
    assert_eq!(store.user_by_name("eve").await.unwrap(), None);
    assert_eq!(store.groups_of(eve).await.unwrap(), vec![]);
    assert_eq!(store.member_role(group, eve).await.unwrap(), None);
    assert_eq!(store.members(group).await.unwrap().len(), 2, "fay and gus stay");
    assert_eq!(store.rooms_of(eve).await.unwrap(), vec![]);
    assert!(!store.in_room(room, eve).await.unwrap());
    assert_eq!(m.room_moderators(room).await.unwrap(), vec![], "her moderation ended");
    assert_eq!(store.directs_of(eve).await.unwrap(), vec![]);
    assert_eq!(store.directs_of(fay).await.unwrap(), vec![eve], "fay keeps the conversation");
    assert_eq!(c.contacts(eve).await.unwrap(), vec![]);
    assert_eq!(c.contacts(fay).await.unwrap(), vec![], "the contact is gone for fay");
    assert_eq!(c.contacts(gus).await.unwrap(), vec![], "and the request for gus");
    assert_eq!(c.blocks(hal).await.unwrap(), vec![], "hal's block of eve is gone");
    assert_eq!(c.blocks(eve).await.unwrap(), vec![]);
    assert_eq!(c.block_between(eve, ivy).await.unwrap(), (false, false), "and eve's of ivy");
    assert_eq!(c.blocked_either_way(ivy).await.unwrap(), vec![]);
    assert_eq!(c.blocked_either_way(hal).await.unwrap(), vec![]);
    assert_eq!(m.sanctions(ConversationId::Group(other_group), 0).await.unwrap(), vec![], "her ban is gone");
    assert_eq!(m.sanctions(g, 0).await.unwrap(), vec![], "and her mute");
    assert_eq!(store.after(g, 0, 100).await.unwrap(), messages_before, "messages are the logic's to recall");
    assert_eq!(set(&all_sent(&*store, eve, 10).await), expected_eve, "and still listed by sender");
    assert!(!dir.erase_user(eve).await.unwrap(), "erasing again finds nobody");

    // The name is free again; the new account is someone else.
    let again = store.create_user("eve", "x", 0).await.unwrap();
    assert_ne!(again.id, eve, "ids are never reused");
    assert_eq!(store.groups_of(again.id).await.unwrap(), vec![]);
}
