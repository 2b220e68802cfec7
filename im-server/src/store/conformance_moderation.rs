//! The conformance suite's part for moderation: mutes that outlive
//! membership, bans that end it and keep the user out until lifted, and
//! room moderators who stop moderating when they leave.

use std::sync::Arc;

use im_protocol::ConversationId;

use super::{Access, Directory, Sanction, StoreError};
use crate::model::Role;

/// Runs the moderation checks against `store`.
pub(crate) async fn moderation<S: Directory>(store: Arc<S>) {
    let owner = store.create_user("owner", "x", 0).await.unwrap().id;
    let (m1, m2) = (
        store.create_user("m1", "x", 0).await.unwrap().id,
        store.create_user("m2", "x", 0).await.unwrap().id,
    );
    let group = store.create_group("g", owner, 0).await.unwrap().id;
    let room = store.create_room("r", owner, 0).await.unwrap().id;
    let (g, r) = (ConversationId::Group(group), ConversationId::Room(room));
    store.add_member(group, m1, Role::Member, 10).await.unwrap();
    store.join_room(room, m1).await.unwrap();
    let m = store.moderation().expect("a built-in store keeps moderation");

    let member = Access { role: Some(Role::Member), moderator: false, muted_until: 0 };
    assert_eq!(m.access(g, m1).await.unwrap(), Some(member));
    assert_eq!(m.access(g, m2).await.unwrap(), None, "not a member");
    assert_eq!(m.access(r, m1).await.unwrap(), Some(Access { role: None, ..member }));

    m.set_muted(g, m1, 5000).await.unwrap();
    assert_eq!(m.access(g, m1).await.unwrap().unwrap().muted_until, 5000);
    assert_eq!(m.access(r, m1).await.unwrap().unwrap().muted_until, 0, "a mute is per conversation");
    assert_eq!(
        m.sanctions(g, 1000).await.unwrap(),
        vec![Sanction { user: m1, banned: false, muted_until: 5000 }]
    );
    assert_eq!(m.sanctions(g, 6000).await.unwrap(), vec![], "a lapsed mute is not listed");

    assert!(m.ban(g, m1).await.unwrap(), "was a member");
    assert_eq!(store.member_role(group, m1).await.unwrap(), None, "the ban ended the membership");
    assert!(matches!(store.add_member(group, m1, Role::Member, 10).await, Err(StoreError::Banned)));
    assert!(store.add_member(group, m2, Role::Member, 10).await.unwrap(), "others are not affected");
    assert_eq!(
        m.sanctions(g, 1000).await.unwrap(),
        vec![Sanction { user: m1, banned: true, muted_until: 5000 }]
    );
    assert!(m.unban(g, m1).await.unwrap());
    assert!(!m.unban(g, m1).await.unwrap(), "no ban left");
    assert!(store.add_member(group, m1, Role::Member, 10).await.unwrap(), "unbanned: may be added again");
    assert_eq!(m.access(g, m1).await.unwrap().unwrap().muted_until, 5000, "the mute outlived the membership");
    m.set_muted(g, m1, 0).await.unwrap();
    assert_eq!(m.access(g, m1).await.unwrap().unwrap().muted_until, 0, "unmuted");

    assert!(m.set_room_moderator(room, m1, true).await.unwrap());
    assert!(!m.set_room_moderator(room, m2, true).await.unwrap(), "not a member");
    assert_eq!(m.room_moderators(room).await.unwrap(), vec![m1]);
    assert!(m.access(r, m1).await.unwrap().unwrap().moderator);
    store.leave_room(room, m1).await.unwrap();
    assert!(store.join_room(room, m1).await.unwrap());
    assert_eq!(m.room_moderators(room).await.unwrap(), vec![], "leaving ended it");

    assert!(m.ban(r, m1).await.unwrap());
    assert!(!store.in_room(room, m1).await.unwrap());
    assert!(matches!(store.join_room(room, m1).await, Err(StoreError::Banned)));
    assert!(!m.ban(r, m2).await.unwrap(), "banning a non-member keeps them out too");
    assert!(matches!(store.join_room(room, m2).await, Err(StoreError::Banned)));
    assert!(m.unban(r, m1).await.unwrap());
    assert!(store.join_room(room, m1).await.unwrap());
    let banned: Vec<_> = m.sanctions(r, 0).await.unwrap().into_iter().map(|s| (s.user, s.banned)).collect();
    assert_eq!(banned, vec![(m2, true)]);
}
