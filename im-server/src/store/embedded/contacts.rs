//! The embedded store's [`ContactStore`]: `contacts` (both sides of each
//! relation, the state packed with its time), `blocks` and its reverse
//! index `blocked_by`, all changed by the writer in one transaction.

use async_trait::async_trait;
use im_protocol::{ContactState, UserId};
use redb::{ReadableTable, TableDefinition};

use super::tables::Tables;
use super::{seconds, DbError, EmbeddedStore, Op, Reply};
use crate::store::{Contact, ContactRefusal, ContactStore, StoreResult};

/// `(user, other)` → `since << 2 | state` from `user`'s side.
pub(super) const CONTACTS: TableDefinition<(u64, u64), u64> = TableDefinition::new("contacts");
/// `(blocker, blocked)` → since.
pub(super) const BLOCKS: TableDefinition<(u64, u64), u64> = TableDefinition::new("blocks");
/// `(blocked, blocker)`.
pub(super) const BLOCKED_BY: TableDefinition<(u64, u64), ()> = TableDefinition::new("blocked_by");

fn pack(state: ContactState, since: u64) -> u64 {
    let code = match state {
        ContactState::Requested => 0,
        ContactState::Pending => 1,
        _ => 2,
    };
    (since << 2) | code
}

fn unpack(v: u64) -> (ContactState, u64) {
    let state = match v & 3 {
        0 => ContactState::Requested,
        1 => ContactState::Pending,
        _ => ContactState::Accepted,
    };
    (state, v >> 2)
}

fn blocked(t: &mut Tables<'_>, a: UserId, b: UserId) -> Result<bool, DbError> {
    let blocks = t.blocks.open()?;
    Ok(blocks.get((a.0, b.0))?.is_some() || blocks.get((b.0, a.0))?.is_some())
}

fn relate(t: &mut Tables<'_>, a: UserId, b: UserId, state: ContactState, now: u64) -> Result<(), DbError> {
    t.contacts.open()?.insert((a.0, b.0), pack(state, now))?;
    t.contacts.open()?.insert((b.0, a.0), pack(state.mirrored(), now))?;
    Ok(())
}

/// Ends the relation of `a` and `b`; whether there was one.
pub(super) fn unrelate(t: &mut Tables<'_>, a: UserId, b: UserId) -> Result<bool, DbError> {
    let was = t.contacts.open()?.remove((a.0, b.0))?.is_some();
    t.contacts.open()?.remove((b.0, a.0))?;
    Ok(was)
}

/// The writer's side of [`ContactStore::request_contact`].
pub(super) fn request(
    t: &mut Tables<'_>,
    from: UserId,
    to: UserId,
    now: u64,
) -> Result<Result<ContactState, ContactRefusal>, DbError> {
    if blocked(t, from, to)? {
        return Ok(Err(ContactRefusal::Blocked));
    }
    let current = t.contacts.open()?.get((from.0, to.0))?.map(|g| unpack(g.value()).0);
    Ok(Ok(match current {
        Some(ContactState::Pending) => {
            relate(t, from, to, ContactState::Accepted, now)?;
            ContactState::Accepted
        }
        Some(state) => state,
        None => {
            relate(t, from, to, ContactState::Requested, now)?;
            ContactState::Requested
        }
    }))
}

/// The writer's side of [`ContactStore::accept_contact`].
pub(super) fn accept(
    t: &mut Tables<'_>,
    user: UserId,
    from: UserId,
    now: u64,
) -> Result<Result<(), ContactRefusal>, DbError> {
    let current = t.contacts.open()?.get((user.0, from.0))?.map(|g| unpack(g.value()).0);
    Ok(match current {
        Some(ContactState::Pending) => {
            relate(t, user, from, ContactState::Accepted, now)?;
            Ok(())
        }
        Some(ContactState::Accepted) => Ok(()),
        _ => Err(ContactRefusal::NoRequest),
    })
}

/// The writer's side of [`ContactStore::block`].
pub(super) fn block(t: &mut Tables<'_>, user: UserId, other: UserId, now: u64) -> Result<bool, DbError> {
    unrelate(t, user, other)?;
    t.blocked_by.open()?.insert((other.0, user.0), ())?;
    Ok(t.blocks.open()?.insert((user.0, other.0), now)?.is_none())
}

fn contact_reply(r: Reply) -> StoreResult<Result<ContactState, ContactRefusal>> {
    match r {
        Reply::Contact(c) => Ok(c),
        r => Err(super::unexpected(r)),
    }
}

#[async_trait]
impl ContactStore for EmbeddedStore {
    async fn request_contact(
        &self,
        from: UserId,
        to: UserId,
        now: u64,
    ) -> StoreResult<Result<ContactState, ContactRefusal>> {
        contact_reply(self.call(Op::RequestContact { from, to, now }).await?)
    }

    async fn accept_contact(
        &self,
        user: UserId,
        from: UserId,
        now: u64,
    ) -> StoreResult<Result<(), ContactRefusal>> {
        Ok(contact_reply(self.call(Op::AcceptContact { user, from, now }).await?)?.map(drop))
    }

    async fn remove_contact(&self, user: UserId, other: UserId) -> StoreResult<bool> {
        self.call_bool(Op::RemoveContact { user, other }).await
    }

    async fn contacts(&self, user: UserId) -> StoreResult<Vec<Contact>> {
        self.read_durable(move |txn| {
            let t = txn.open_table(CONTACTS)?;
            let mut out = Vec::new();
            for item in t.range((user.0, 0)..=(user.0, u64::MAX))? {
                let (k, v) = item?;
                let (state, since) = unpack(v.value());
                out.push(Contact { user: UserId(k.value().1), state, since });
            }
            Ok(out)
        })
        .await
    }

    async fn contact(&self, user: UserId, other: UserId) -> StoreResult<Option<Contact>> {
        self.read_durable(move |txn| {
            Ok(txn.open_table(CONTACTS)?.get((user.0, other.0))?.map(|g| {
                let (state, since) = unpack(g.value());
                Contact { user: other, state, since }
            }))
        })
        .await
    }

    async fn block(&self, user: UserId, other: UserId, now: u64) -> StoreResult<bool> {
        self.call_bool(Op::Block { user, other, now }).await
    }

    async fn unblock(&self, user: UserId, other: UserId) -> StoreResult<bool> {
        self.call_bool(Op::Unblock { user, other }).await
    }

    async fn blocks(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        self.read_durable(move |txn| Ok(seconds(txn, BLOCKS, user.0)?.into_iter().map(UserId).collect()))
            .await
    }

    async fn blocked_either_way(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        self.read_durable(move |txn| {
            let mut out = seconds(txn, BLOCKS, user.0)?;
            out.extend(seconds(txn, BLOCKED_BY, user.0)?);
            out.sort_unstable();
            out.dedup();
            Ok(out.into_iter().map(UserId).collect())
        })
        .await
    }

    async fn block_between(&self, a: UserId, b: UserId) -> StoreResult<(bool, bool)> {
        self.read_durable(move |txn| {
            let t = txn.open_table(BLOCKS)?;
            Ok((t.get((a.0, b.0))?.is_some(), t.get((b.0, a.0))?.is_some()))
        })
        .await
    }
}
