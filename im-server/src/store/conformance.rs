//! The conformance suite every storage back-end must pass.
//!
//! Each function takes a fresh, empty store and checks the contracts written
//! on the traits in [`crate::store`]; a back-end's tests call all of them.

use std::collections::BTreeSet;
use std::sync::Arc;

use im_protocol::{ClientMsgId, ConversationId, GroupId, Message, MessageId, RoomId, UserId};

use super::{DeviceRead, Directory, MessageStore, NewMessage, ReadMark, ReadState, SessionStore, StoreError};
use crate::model::{Member, Role, Session};

/// A plain message to append (shared by every part of the suite).
pub(crate) fn new_msg(conv: ConversationId, from: u64, cmid: &str, body: &str) -> NewMessage {
    NewMessage {
        conv,
        from: UserId(from),
        cmid: ClientMsgId::new(cmid).expect("valid cmid"),
        body: body.to_owned(),
        ts: 1_700_000_000_000 + from,
        mentions: Vec::new(),
        kind: None,
        content: None,
        reply_to: None,
        target: None,
    }
}

fn ids(msgs: &[Message]) -> Vec<MessageId> {
    msgs.iter().map(|m| m.id).collect()
}

/// Ids per conversation, idempotency, paging edges and heads.
pub(crate) async fn messages(store: Arc<dyn MessageStore>) {
    let a = ConversationId::Group(GroupId(1));
    let b = ConversationId::direct(UserId(2), UserId(1));
    let empty = ConversationId::Room(RoomId(9));

    // An empty conversation.
    assert!(store.after(empty, 0, 10).await.unwrap().is_empty());
    assert!(store.before(empty, None, 10).await.unwrap().is_empty());
    assert_eq!(store.heads(&[empty]).await.unwrap(), vec![0]);

    // Ids 1..N per conversation, independent across conversations.
    for i in 1..=5u64 {
        let got = store.append(new_msg(a, 1, &format!("a{i}"), &format!("body a{i}"))).await.unwrap();
        assert!(!got.duplicate);
        assert_eq!(got.message.id, i);
        assert_eq!(got.message.conv, a);
        assert_eq!(got.message.body, format!("body a{i}"));
        if i <= 3 {
            let got = store.append(new_msg(b, 2, &format!("b{i}"), "hi")).await.unwrap();
            assert_eq!((got.message.id, got.duplicate), (i, false));
        }
    }
    assert_eq!(store.heads(&[a, b, empty, a]).await.unwrap(), vec![5, 3, 0, 5]);
    assert_eq!(store.heads(&[]).await.unwrap(), Vec::<MessageId>::new());

    // Contents survive storage.
    let all = store.after(a, 0, 100).await.unwrap();
    assert_eq!(ids(&all), vec![1, 2, 3, 4, 5]);
    let third = &all[2];
    assert_eq!(
        *third,
        Message::new(a, 3, UserId(1), ClientMsgId::new("a3").unwrap(), "body a3", 1_700_000_000_001)
    );

    // Idempotent resend, also after other messages came in: the original, nothing new.
    let dup = store.append(new_msg(a, 1, "a1", "changed body")).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.message, all[0]);
    assert_eq!(store.heads(&[a]).await.unwrap(), vec![5]);
    assert!(store.after(a, 5, 10).await.unwrap().is_empty());
    // The key is (conv, from, cmid): another sender or conversation is a new message.
    let other_sender = store.append(new_msg(a, 7, "a1", "x")).await.unwrap();
    assert_eq!((other_sender.message.id, other_sender.duplicate), (6, false));
    let other_conv = store.append(new_msg(b, 1, "a1", "x")).await.unwrap();
    assert_eq!((other_conv.message.id, other_conv.duplicate), (4, false));
    let dup = store.append(new_msg(b, 1, "a1", "x")).await.unwrap();
    assert_eq!((dup.message.id, dup.duplicate), (4, true));
    assert_eq!(store.heads(&[a, b]).await.unwrap(), vec![6, 4]);

    // after: limit, the head, beyond the head, limit 0, no overflow at the top.
    assert_eq!(ids(&store.after(a, 0, 100).await.unwrap()), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(ids(&store.after(a, 2, 2).await.unwrap()), vec![3, 4]);
    assert_eq!(ids(&store.after(a, 5, 10).await.unwrap()), vec![6]);
    assert!(store.after(a, 6, 10).await.unwrap().is_empty());
    assert!(store.after(a, 100, 10).await.unwrap().is_empty());
    assert!(store.after(a, u64::MAX, 10).await.unwrap().is_empty());
    assert!(store.after(a, 0, 0).await.unwrap().is_empty());
    assert!(store.after(a, 0, 1).await.unwrap().iter().all(|m| m.conv == a));

    // before: newest first page, ascending; below 1 is nothing.
    assert_eq!(ids(&store.before(a, None, 2).await.unwrap()), vec![5, 6]);
    assert_eq!(ids(&store.before(a, None, 100).await.unwrap()), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(ids(&store.before(a, Some(5), 2).await.unwrap()), vec![3, 4]);
    assert_eq!(ids(&store.before(a, Some(3), 10).await.unwrap()), vec![1, 2]);
    assert_eq!(ids(&store.before(a, Some(2), 10).await.unwrap()), vec![1]);
    assert!(store.before(a, Some(1), 10).await.unwrap().is_empty());
    assert!(store.before(a, Some(0), 10).await.unwrap().is_empty());
    assert_eq!(ids(&store.before(a, Some(100), 3).await.unwrap()), vec![4, 5, 6]);
    assert_eq!(ids(&store.before(a, Some(u64::MAX), 1).await.unwrap()), vec![6]);
    assert!(store.before(a, None, 0).await.unwrap().is_empty());
    assert_eq!(ids(&store.before(b, None, 10).await.unwrap()), vec![1, 2, 3, 4]);

    store.flush().await.unwrap();
}

/// Read ids: monotonic per user, raised by the user's own appends, device
/// reports kept (at most `MAX_DEVICE_READS`), `latest` per conversation.
pub(crate) async fn reads(store: Arc<dyn MessageStore>) {
    let g = ConversationId::Group(GroupId(3));
    let d = ConversationId::direct(UserId(1), UserId(2));
    let none = ConversationId::Room(RoomId(5));
    let (alice, bob) = (UserId(1), UserId(2));

    assert_eq!(store.read_ids(alice, &[g, d, none]).await.unwrap(), vec![0, 0, 0]);
    assert!(store.read_ids(alice, &[]).await.unwrap().is_empty());
    assert!(store.device_reads(alice, g).await.unwrap().is_empty());
    assert_eq!(store.latest(&[g, none]).await.unwrap(), vec![None, None]);

    // Bob sends 1..3, Alice sends 4: each sender's read id follows their own messages.
    for i in 1..=3 {
        store.append(new_msg(g, 2, &format!("b{i}"), "from bob")).await.unwrap();
    }
    assert_eq!(store.read_ids(bob, &[g]).await.unwrap(), vec![3]);
    assert_eq!(store.read_ids(alice, &[g]).await.unwrap(), vec![0]);
    let four = store.append(new_msg(g, 1, "a4", "from alice")).await.unwrap().message;
    assert_eq!(store.read_ids(alice, &[g, d]).await.unwrap(), vec![4, 0]);
    assert_eq!(store.read_ids(bob, &[g]).await.unwrap(), vec![3]);
    // A resend stores nothing and moves nothing.
    store.append(new_msg(g, 2, "b1", "from bob")).await.unwrap();
    assert_eq!(store.read_ids(bob, &[g]).await.unwrap(), vec![3]);
    assert_eq!(store.latest(&[none, g]).await.unwrap(), vec![None, Some(four)]);
    // Mentions are stored with the message.
    let mut mentioning = new_msg(g, 9, "x5", "hey @alice @carol");
    mentioning.mentions = vec![alice, UserId(3)];
    let five = store.append(mentioning).await.unwrap().message;
    assert_eq!(five.mentions, vec![alice, UserId(3)]);
    assert_eq!(store.after(g, 4, 10).await.unwrap(), vec![five.clone()]);
    assert_eq!(store.before(g, None, 1).await.unwrap(), vec![five.clone()]);
    assert_eq!(store.latest(&[g]).await.unwrap(), vec![Some(five)]);
    assert!(store.after(g, 0, 1).await.unwrap()[0].mentions.is_empty());
    // So are a kind, its content object and a reply reference.
    let mut pin = new_msg(g, 9, "x6", "📍 Berlin");
    pin.kind = Some("location".into());
    pin.content = Some(serde_json::json!({"lat": 52.52, "lon": 13.405, "name": "Berlin"}));
    pin.reply_to = Some(5);
    let six = store.append(pin).await.unwrap().message;
    assert_eq!((six.id, six.kind(), six.reply_to), (6, "location", Some(5)));
    assert_eq!(store.after(g, 5, 10).await.unwrap(), vec![six.clone()]);
    assert_eq!(store.latest(&[g]).await.unwrap(), vec![Some(six.clone())]);
    let dup = store.append(new_msg(g, 9, "x6", "other")).await.unwrap();
    assert_eq!((dup.duplicate, dup.message), (true, six));
    assert_eq!(store.after(g, 0, 1).await.unwrap()[0].kind, None, "text has no kind stored");

    // Marking: raises, never lowers; the device report is kept on its own.
    let m = store.mark_read(bob, g, Some("phone"), 4).await.unwrap();
    assert_eq!(m, ReadMark { read: 4, raised: true });
    let m = store.mark_read(bob, g, Some("laptop"), 2).await.unwrap();
    assert_eq!(m, ReadMark { read: 4, raised: false });
    let m = store.mark_read(bob, g, Some("phone"), 1).await.unwrap();
    assert_eq!(m, ReadMark { read: 4, raised: false });
    let m = store.mark_read(bob, g, None, 4).await.unwrap();
    assert_eq!(m, ReadMark { read: 4, raised: false });
    assert_eq!(
        store.device_reads(bob, g).await.unwrap(),
        vec![DeviceRead { device: "laptop".into(), read: 2 }, DeviceRead { device: "phone".into(), read: 4 }]
    );
    // Another user's or conversation's state is separate.
    assert!(store.device_reads(alice, g).await.unwrap().is_empty());
    assert!(store.device_reads(bob, d).await.unwrap().is_empty());
    let m = store.mark_read(bob, d, None, 7).await.unwrap();
    assert_eq!(m, ReadMark { read: 7, raised: true });
    assert_eq!(store.read_ids(bob, &[d, g, none]).await.unwrap(), vec![7, 4, 0]);
    // A send below the read id does not lower it.
    store.append(new_msg(d, 2, "d1", "hi")).await.unwrap();
    assert_eq!(store.read_ids(bob, &[d]).await.unwrap(), vec![7]);

    // At most MAX_DEVICE_READS devices: a new one replaces the lowest report.
    let cap = im_protocol::limits::MAX_DEVICE_READS;
    for i in 0..cap {
        store.mark_read(alice, g, Some(&format!("dev{i:02}")), 10 + i as u64).await.unwrap();
    }
    assert_eq!(store.device_reads(alice, g).await.unwrap().len(), cap);
    store.mark_read(alice, g, Some("newest"), 100).await.unwrap();
    let kept = store.device_reads(alice, g).await.unwrap();
    assert_eq!(kept.len(), cap);
    assert!(kept.iter().all(|r| r.device != "dev00"), "the lowest report is the one replaced");
    assert!(kept.contains(&DeviceRead { device: "newest".into(), read: 100 }));
    assert_eq!(store.read_ids(alice, &[g]).await.unwrap(), vec![100]);
    // A known device raising its report replaces nothing.
    store.mark_read(alice, g, Some("dev01"), 50).await.unwrap();
    let kept = store.device_reads(alice, g).await.unwrap();
    assert_eq!(kept.len(), cap);
    assert!(kept.contains(&DeviceRead { device: "dev01".into(), read: 50 }));

    // Delivered ids: raised per conversation, never lowered.
    let carol = UserId(3);
    let pairs = |states: Vec<ReadState>| states.iter().map(|s| (s.read, s.delivered)).collect::<Vec<_>>();
    assert_eq!(pairs(store.reads_in(g, &[carol, bob, alice]).await.unwrap()), vec![(0, 0), (4, 0), (100, 0)]);
    let raised = store.mark_delivered(carol, &[(g, 3), (d, 1)]).await.unwrap();
    assert_eq!(raised, vec![true, true]);
    assert_eq!(store.mark_delivered(carol, &[(d, 1), (g, 2)]).await.unwrap(), vec![false, false]);
    assert_eq!(store.mark_delivered(carol, &[(g, 3), (d, 0)]).await.unwrap(), vec![false, false]);
    assert_eq!(store.mark_delivered(bob, &[(g, 2)]).await.unwrap(), vec![true]);
    assert!(store.mark_delivered(bob, &[]).await.unwrap().is_empty());
    assert_eq!(pairs(store.reads_in(g, &[carol, bob]).await.unwrap()), vec![(0, 3), (4, 2)]);
    assert_eq!(pairs(store.reads_in(d, &[carol]).await.unwrap()), vec![(0, 1)]);
    assert!(store.reads_in(g, &[]).await.unwrap().is_empty());
    // Delivered does not move the read id.
    assert_eq!(store.read_ids(carol, &[g]).await.unwrap(), vec![0]);

    // Sharing receipts: on by default, per user.
    assert_eq!(store.receipts_shared(&[alice, bob]).await.unwrap(), vec![true, true]);
    store.set_receipts_shared(bob, false).await.unwrap();
    store.set_receipts_shared(bob, false).await.unwrap();
    assert_eq!(store.receipts_shared(&[alice, bob, carol]).await.unwrap(), vec![true, false, true]);
    store.set_receipts_shared(bob, true).await.unwrap();
    assert_eq!(store.receipts_shared(&[bob]).await.unwrap(), vec![true]);
    assert!(store.receipts_shared(&[]).await.unwrap().is_empty());

    // Muting: per user and conversation, kept beside the read state, which it leaves alone.
    assert_eq!(store.read_states(carol, &[g]).await.unwrap()[0].muted_until, 0);
    store.mute(carol, g, 1_800_000_000_000).await.unwrap();
    store.mute(carol, d, u64::MAX).await.unwrap();
    store.mute(bob, none, 5).await.unwrap();
    let got = store.read_states(carol, &[g, d, none]).await.unwrap();
    assert_eq!(
        got,
        vec![
            ReadState { read: 0, delivered: 3, muted_until: 1_800_000_000_000 },
            ReadState { read: 0, delivered: 1, muted_until: u64::MAX },
            ReadState::default(),
        ]
    );
    assert_eq!(store.reads_in(none, &[bob, carol]).await.unwrap()[0].muted_until, 5);
    store.mute(carol, g, 0).await.unwrap();
    assert_eq!(
        store.read_states(carol, &[g]).await.unwrap()[0],
        ReadState { read: 0, delivered: 3, muted_until: 0 }
    );
    // A later mark keeps the mute.
    store.mark_read(carol, d, None, 1).await.unwrap();
    assert_eq!(
        store.read_states(carol, &[d]).await.unwrap()[0],
        ReadState { read: 1, delivered: 1, muted_until: u64::MAX }
    );
    store.flush().await.unwrap();
}

/// Concurrent appends to one conversation get distinct, gapless ids, and
/// concurrent resends of one message store it once.
pub(crate) async fn concurrent_appends(store: Arc<dyn MessageStore>) {
    const TASKS: u64 = 50;
    const EACH: u64 = 4;
    let conv = ConversationId::Group(GroupId(77));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let a =
                    store.append(new_msg(conv, t + 1, &format!("c{i}"), &format!("{t}/{i}"))).await.unwrap();
                assert!(!a.duplicate);
                got.push(a.message);
            }
            got
        }));
    }
    let mut assigned = Vec::new();
    for h in handles {
        assigned.extend(h.await.unwrap());
    }
    let mut got_ids: Vec<MessageId> = ids(&assigned);
    got_ids.sort_unstable();
    assert_eq!(got_ids, (1..=TASKS * EACH).collect::<Vec<_>>());
    assert_eq!(store.heads(&[conv]).await.unwrap(), vec![TASKS * EACH]);
    // What each sender was told is what is stored, in id order.
    let mut stored = store.after(conv, 0, 10_000).await.unwrap();
    assigned.sort_by_key(|m| m.id);
    assert_eq!(stored, assigned);
    // Each sender's own messages are in the order it sent them.
    for t in 1..=TASKS {
        let bodies: Vec<_> = stored.iter().filter(|m| m.from == UserId(t)).map(|m| m.body.clone()).collect();
        assert_eq!(bodies, (0..EACH).map(|i| format!("{}/{i}", t - 1)).collect::<Vec<_>>());
    }

    // Twenty concurrent resends of one message: stored once, all told the same id.
    let resends: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.append(new_msg(conv, 999, "same", "once")).await.unwrap() })
        })
        .collect();
    let mut fresh = 0;
    let mut seen = BTreeSet::new();
    for h in resends {
        let a = h.await.unwrap();
        fresh += usize::from(!a.duplicate);
        seen.insert(a.message.id);
    }
    assert_eq!(fresh, 1);
    assert_eq!(seen, BTreeSet::from([TASKS * EACH + 1]));
    stored = store.after(conv, TASKS * EACH, 100).await.unwrap();
    assert_eq!(stored.len(), 1);
}

/// Users, groups and membership caps, rooms, directs.
pub(crate) async fn directory(store: Arc<dyn Directory>) {
    // Users: ids from 1, unique names, a conflict consumes no id.
    let alice = store.create_user("alice", "hash-a", 10).await.unwrap();
    assert_eq!(
        (alice.id, alice.username.as_str(), alice.password_hash.as_str()),
        (UserId(1), "alice", "hash-a")
    );
    assert_eq!(alice.created_at, 10);
    assert!(matches!(store.create_user("alice", "other", 11).await, Err(StoreError::Conflict)));
    let bob = store.create_user("bob", "hash-b", 12).await.unwrap();
    assert_eq!(bob.id, UserId(2));
    let carol = store.create_user("carol", "hash-c", 13).await.unwrap();
    assert_eq!(store.user(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user(UserId(99)).await.unwrap(), None);
    assert_eq!(store.user_by_name("bob").await.unwrap(), Some(bob.clone()));
    assert_eq!(store.user_by_name("Bob").await.unwrap(), None);
    assert_eq!(store.user_by_name("nobody").await.unwrap(), None);

    // Groups: the owner is the Owner member.
    let g = store.create_group("team", alice.id, 20).await.unwrap();
    assert_eq!((g.id, g.name.as_str(), g.owner, g.created_at), (GroupId(1), "team", alice.id, 20));
    assert_eq!(store.group(g.id).await.unwrap(), Some(g.clone()));
    assert_eq!(store.group(GroupId(99)).await.unwrap(), None);
    assert_eq!(store.member_role(g.id, alice.id).await.unwrap(), Some(Role::Owner));
    assert_eq!(store.members(g.id).await.unwrap(), vec![Member { user: alice.id, role: Role::Owner }]);
    assert_eq!(store.groups_of(alice.id).await.unwrap(), vec![g.id]);

    // Cap 2: one more member fits, a third is refused and changes nothing.
    assert!(store.add_member(g.id, carol.id, Role::Member, 2).await.unwrap());
    assert!(matches!(store.add_member(g.id, bob.id, Role::Member, 2).await, Err(StoreError::GroupFull)));
    assert_eq!(store.member_role(g.id, bob.id).await.unwrap(), None);
    assert!(store.groups_of(bob.id).await.unwrap().is_empty());
    let full =
        vec![Member { user: alice.id, role: Role::Owner }, Member { user: carol.id, role: Role::Member }];
    assert_eq!(store.members(g.id).await.unwrap(), full);
    // Re-adding an existing member changes the role and does not count against the cap.
    assert!(!store.add_member(g.id, carol.id, Role::Admin, 2).await.unwrap());
    assert_eq!(store.member_role(g.id, carol.id).await.unwrap(), Some(Role::Admin));
    assert_eq!(store.members(g.id).await.unwrap().len(), 2);
    // A missing group.
    assert!(matches!(
        store.add_member(GroupId(99), bob.id, Role::Member, 10).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.members(GroupId(99)).await.unwrap().is_empty());
    // Raising the cap lets bob in; members ordered by user id.
    assert!(store.add_member(g.id, bob.id, Role::Member, 3).await.unwrap());
    assert_eq!(ids_of_members(&store.members(g.id).await.unwrap()), vec![1, 2, 3]);
    // A second group; groups_of is ordered by id.
    let g2 = store.create_group("other", bob.id, 21).await.unwrap();
    assert_eq!(g2.id, GroupId(2));
    assert_eq!(store.groups_of(bob.id).await.unwrap(), vec![g.id, g2.id]);
    // remove_member.
    assert!(store.remove_member(g.id, bob.id).await.unwrap());
    assert!(!store.remove_member(g.id, bob.id).await.unwrap());
    assert!(!store.remove_member(GroupId(99), bob.id).await.unwrap());
    assert_eq!(store.member_role(g.id, bob.id).await.unwrap(), None);
    assert_eq!(store.groups_of(bob.id).await.unwrap(), vec![g2.id]);
    assert_eq!(ids_of_members(&store.members(g.id).await.unwrap()), vec![1, 3]);
    // After a removal there is room again under the old cap.
    assert!(store.add_member(g.id, bob.id, Role::Member, 3).await.unwrap());

    // Rooms: ids from 1, creator not joined, paging by id.
    let mut rooms = Vec::new();
    for i in 1..=5u64 {
        let r = store.create_room(&format!("room{i}"), alice.id, 30 + i).await.unwrap();
        assert_eq!((r.id, r.created_by, r.created_at), (RoomId(i), alice.id, 30 + i));
        rooms.push(r);
    }
    assert_eq!(store.room(RoomId(3)).await.unwrap(), Some(rooms[2].clone()));
    assert_eq!(store.room(RoomId(99)).await.unwrap(), None);
    assert!(!store.in_room(rooms[0].id, alice.id).await.unwrap());
    assert_eq!(store.rooms(RoomId(0), 100).await.unwrap(), rooms);
    assert_eq!(store.rooms(RoomId(0), 2).await.unwrap(), rooms[..2].to_vec());
    assert_eq!(store.rooms(RoomId(2), 2).await.unwrap(), rooms[2..4].to_vec());
    assert_eq!(store.rooms(RoomId(4), 10).await.unwrap(), rooms[4..].to_vec());
    assert!(store.rooms(RoomId(5), 10).await.unwrap().is_empty());
    assert!(store.rooms(RoomId(u64::MAX), 10).await.unwrap().is_empty());
    assert!(store.rooms(RoomId(0), 0).await.unwrap().is_empty());
    // Join and leave.
    assert!(store.join_room(RoomId(3), bob.id).await.unwrap());
    assert!(!store.join_room(RoomId(3), bob.id).await.unwrap());
    assert!(store.join_room(RoomId(1), bob.id).await.unwrap());
    assert!(matches!(store.join_room(RoomId(99), bob.id).await, Err(StoreError::NotFound)));
    assert!(store.in_room(RoomId(3), bob.id).await.unwrap());
    assert!(!store.in_room(RoomId(3), carol.id).await.unwrap());
    assert!(!store.in_room(RoomId(99), bob.id).await.unwrap());
    assert_eq!(store.rooms_of(bob.id).await.unwrap(), vec![RoomId(1), RoomId(3)]);
    assert!(store.rooms_of(carol.id).await.unwrap().is_empty());
    assert!(store.leave_room(RoomId(3), bob.id).await.unwrap());
    assert!(!store.leave_room(RoomId(3), bob.id).await.unwrap());
    assert!(!store.leave_room(RoomId(99), bob.id).await.unwrap());
    assert!(!store.in_room(RoomId(3), bob.id).await.unwrap());
    assert_eq!(store.rooms_of(bob.id).await.unwrap(), vec![RoomId(1)]);

    // Directs: symmetric, idempotent, ordered by id.
    store.add_direct(carol.id, alice.id).await.unwrap();
    store.add_direct(alice.id, carol.id).await.unwrap();
    store.add_direct(alice.id, bob.id).await.unwrap();
    assert_eq!(store.directs_of(alice.id).await.unwrap(), vec![bob.id, carol.id]);
    assert_eq!(store.directs_of(carol.id).await.unwrap(), vec![alice.id]);
    assert_eq!(store.directs_of(bob.id).await.unwrap(), vec![alice.id]);
    assert!(store.directs_of(UserId(99)).await.unwrap().is_empty());

    // Ids continue after all that.
    assert_eq!(store.create_user("dave", "h", 40).await.unwrap().id, UserId(4));
    assert_eq!(store.create_group("third", carol.id, 41).await.unwrap().id, GroupId(3));
    assert_eq!(store.create_room("room6", carol.id, 42).await.unwrap().id, RoomId(6));
}

fn ids_of_members(members: &[Member]) -> Vec<u64> {
    members.iter().map(|m| m.user.0).collect()
}

/// Sessions: create, get, revoke, purge.
pub(crate) async fn sessions(store: Arc<dyn SessionStore>) {
    let session = |id: &str, user: u64, expires_at: u64| Session {
        id: id.to_owned(),
        user: UserId(user),
        created_at: 1,
        expires_at,
    };
    let (s1, s2, s3) = (session("aa01", 1, 100), session("bb02", 2, 200), session("cc03", 1, 300));
    for s in [&s1, &s2, &s3] {
        store.create(s).await.unwrap();
    }
    assert_eq!(store.get("aa01").await.unwrap(), Some(s1.clone()));
    assert_eq!(store.get("cc03").await.unwrap(), Some(s3.clone()));
    assert_eq!(store.get("zz99").await.unwrap(), None);

    assert!(store.revoke("aa01").await.unwrap());
    assert!(!store.revoke("aa01").await.unwrap());
    assert!(!store.revoke("zz99").await.unwrap());
    assert_eq!(store.get("aa01").await.unwrap(), None);

    // Purge: s1 is already gone, s2 expired before 250, s3 has not.
    assert_eq!(store.purge_expired(250).await.unwrap(), 1);
    assert_eq!(store.get("bb02").await.unwrap(), None);
    assert_eq!(store.get("cc03").await.unwrap(), Some(s3.clone()));
    assert_eq!(store.purge_expired(250).await.unwrap(), 0);
    assert!(!store.revoke("bb02").await.unwrap());

    // A revoked session is gone even before it would expire; purge takes the rest.
    let s4 = session("dd04", 3, 50);
    store.create(&s4).await.unwrap();
    assert!(store.revoke("dd04").await.unwrap());
    assert_eq!(store.get("dd04").await.unwrap(), None);
    assert_eq!(store.purge_expired(u64::MAX).await.unwrap(), 1);
    assert_eq!(store.get("cc03").await.unwrap(), None);
}

/// Shared counters of a session store that keeps them
/// ([`SessionStore::bump`]): they count per key, start again after a reset
/// or once their window ends, and are seen through another handle (node).
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) async fn shared_counters(store: Arc<dyn SessionStore>, other_node: Arc<dyn SessionStore>) {
    let now = crate::time::now_ms();
    let later = now + 60_000;
    assert_eq!(store.bump("c:a", later, now).await.unwrap(), Some(1));
    assert_eq!(other_node.bump("c:a", later, now).await.unwrap(), Some(2), "one count for every node");
    assert_eq!(store.bump("c:a", later, now).await.unwrap(), Some(3));
    assert_eq!(store.bump("c:b", later, now).await.unwrap(), Some(1), "per key");
    other_node.reset("c:a").await.unwrap();
    assert_eq!(store.bump("c:a", later, now).await.unwrap(), Some(1), "a reset starts again");
    store.reset("c:never").await.unwrap();

    let now = crate::time::now_ms();
    assert_eq!(store.bump("c:w", now + 150, now).await.unwrap(), Some(1));
    assert_eq!(store.bump("c:w", now + 150, now).await.unwrap(), Some(2));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let now = crate::time::now_ms();
    assert_eq!(store.bump("c:w", now + 60_000, now).await.unwrap(), Some(1), "the window ended");
}
