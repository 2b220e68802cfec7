//! The conformance suite's part for contacts and blocks: requests seen
//! from both sides, acceptance (also by asking back), removal for both,
//! and blocks that end a relation and refuse requests either way.

use std::sync::Arc;

use im_protocol::ContactState::{Accepted, Pending, Requested};

use super::{Contact, ContactRefusal, Directory};

/// Runs the contact checks against `store`.
pub(crate) async fn contacts<S: Directory>(store: Arc<S>) {
    let mut ids = Vec::new();
    for name in ["ann", "ben", "cat"] {
        ids.push(store.create_user(name, "x", 0).await.unwrap().id);
    }
    let (ann, ben, cat) = (ids[0], ids[1], ids[2]);

    // Display names (kept with the user; here because these are the users).
    assert!(store.set_display_name(ann, Some("Ann Arbor")).await.unwrap());
    assert_eq!(store.user(ann).await.unwrap().unwrap().display_name.as_deref(), Some("Ann Arbor"));
    assert_eq!(store.user_by_name("ann").await.unwrap().unwrap().display_name.as_deref(), Some("Ann Arbor"));
    assert!(store.set_display_name(ann, None).await.unwrap());
    assert_eq!(store.user(ann).await.unwrap().unwrap().display_name, None);
    assert!(!store.set_display_name(im_protocol::UserId(999_999), Some("x")).await.unwrap(), "no such user");
    let c = store.contacts().expect("a built-in store keeps contacts");

    assert_eq!(c.request_contact(ann, ben, 10).await.unwrap(), Ok(Requested));
    assert_eq!(c.request_contact(ann, ben, 11).await.unwrap(), Ok(Requested), "asking again changes nothing");
    assert_eq!(c.contacts(ann).await.unwrap(), vec![Contact { user: ben, state: Requested, since: 10 }]);
    assert_eq!(c.contacts(ben).await.unwrap(), vec![Contact { user: ann, state: Pending, since: 10 }]);
    assert_eq!(
        c.accept_contact(ann, ben, 12).await.unwrap(),
        Err(ContactRefusal::NoRequest),
        "ann asked; ben answers"
    );
    assert_eq!(c.accept_contact(ben, ann, 20).await.unwrap(), Ok(()));
    assert_eq!(c.accept_contact(ben, ann, 21).await.unwrap(), Ok(()), "accepting twice is fine");
    assert_eq!(c.contact(ann, ben).await.unwrap(), Some(Contact { user: ben, state: Accepted, since: 20 }));
    assert_eq!(c.contact(ben, ann).await.unwrap().map(|x| x.state), Some(Accepted));

    // Asking back accepts.
    assert_eq!(c.request_contact(cat, ann, 30).await.unwrap(), Ok(Requested));
    assert_eq!(c.request_contact(ann, cat, 31).await.unwrap(), Ok(Accepted));
    let states: Vec<_> = c.contacts(ann).await.unwrap().into_iter().map(|x| (x.user, x.state)).collect();
    assert_eq!(states, vec![(ben, Accepted), (cat, Accepted)]);

    assert!(c.remove_contact(ben, ann).await.unwrap());
    assert!(!c.remove_contact(ann, ben).await.unwrap(), "gone for both");
    assert_eq!(c.contact(ann, ben).await.unwrap(), None);

    // A block ends the relation and refuses requests either way.
    assert!(c.block(cat, ann, 40).await.unwrap());
    assert!(!c.block(cat, ann, 41).await.unwrap(), "already blocked");
    assert_eq!(c.contact(ann, cat).await.unwrap(), None, "the block ended the contact");
    assert_eq!(c.request_contact(ann, cat, 42).await.unwrap(), Err(ContactRefusal::Blocked));
    assert_eq!(
        c.request_contact(cat, ann, 42).await.unwrap(),
        Err(ContactRefusal::Blocked),
        "the blocker too"
    );
    assert_eq!(c.blocks(cat).await.unwrap(), vec![ann]);
    assert_eq!(c.blocks(ann).await.unwrap(), vec![]);
    assert_eq!(c.block_between(ann, cat).await.unwrap(), (false, true));
    assert_eq!(c.block_between(cat, ann).await.unwrap(), (true, false));
    assert!(c.block(ann, ben, 43).await.unwrap());
    assert_eq!(c.blocked_either_way(ann).await.unwrap(), vec![ben, cat]);
    assert!(c.unblock(cat, ann).await.unwrap());
    assert!(!c.unblock(cat, ann).await.unwrap());
    assert_eq!(c.blocked_either_way(ann).await.unwrap(), vec![ben]);
    assert_eq!(c.request_contact(ann, cat, 50).await.unwrap(), Ok(Requested), "unblocked");
}
