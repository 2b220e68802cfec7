//! The embedded store's [`ModerationStore`]: three tables the writer keeps
//! (its `Ban` op removes the membership in the same transaction), read in
//! one read transaction each.

use async_trait::async_trait;
use im_protocol::{ConversationId, RoomId, UserId};
use redb::TableDefinition;

use super::{role_of, seconds, EmbeddedStore, Op, MEMBERS, ROOM_MEMBERS};
use crate::store::{Access, ModerationStore, Sanction, StoreResult};

/// `(conv, user)` → muted until (ms).
pub(super) const MEMBER_MUTES: TableDefinition<(&str, u64), u64> = TableDefinition::new("member_mutes");
/// `(conv, user)` banned.
pub(super) const BANS: TableDefinition<(&str, u64), ()> = TableDefinition::new("bans");
/// `(room, user)` moderates the room.
pub(super) const ROOM_MODERATORS: TableDefinition<(u64, u64), ()> = TableDefinition::new("room_moderators");

#[async_trait]
impl ModerationStore for EmbeddedStore {
    async fn access(&self, conv: ConversationId, user: UserId) -> StoreResult<Option<Access>> {
        self.read_durable(move |txn| {
            let c = conv.to_string();
            let muted_until =
                txn.open_table(MEMBER_MUTES)?.get((c.as_str(), user.0))?.map_or(0, |g| g.value());
            Ok(match conv {
                ConversationId::Group(g) => match txn.open_table(MEMBERS)?.get((g.0, user.0))? {
                    Some(code) => {
                        Some(Access { role: Some(role_of(code.value())?), moderator: false, muted_until })
                    }
                    None => None,
                },
                ConversationId::Room(r) => match txn.open_table(ROOM_MEMBERS)?.get((r.0, user.0))? {
                    Some(_) => {
                        let moderator = txn.open_table(ROOM_MODERATORS)?.get((r.0, user.0))?.is_some();
                        Some(Access { role: None, moderator, muted_until })
                    }
                    None => None,
                },
                ConversationId::Direct(..) => None,
            })
        })
        .await
    }

    async fn set_muted(&self, conv: ConversationId, user: UserId, until: u64) -> StoreResult<()> {
        self.call(Op::SetMemberMute { conv, user, until }).await.map(drop)
    }

    async fn ban(&self, conv: ConversationId, user: UserId) -> StoreResult<bool> {
        self.call_bool(Op::Ban { conv, user }).await
    }

    async fn unban(&self, conv: ConversationId, user: UserId) -> StoreResult<bool> {
        self.call_bool(Op::Unban { conv, user }).await
    }

    async fn sanctions(&self, conv: ConversationId, now: u64) -> StoreResult<Vec<Sanction>> {
        self.read_durable(move |txn| {
            let c = conv.to_string();
            let mut out: std::collections::BTreeMap<UserId, Sanction> = Default::default();
            for item in txn.open_table(BANS)?.range((c.as_str(), 0)..=(c.as_str(), u64::MAX))? {
                let user = UserId(item?.0.value().1);
                out.insert(user, Sanction { user, banned: true, muted_until: 0 });
            }
            for item in txn.open_table(MEMBER_MUTES)?.range((c.as_str(), 0)..=(c.as_str(), u64::MAX))? {
                let (k, v) = item?;
                let (user, until) = (UserId(k.value().1), v.value());
                if until > now {
                    out.entry(user).or_insert(Sanction { user, banned: false, muted_until: 0 }).muted_until =
                        until;
                }
            }
            Ok(out.into_values().collect())
        })
        .await
    }

    async fn set_room_moderator(&self, room: RoomId, user: UserId, on: bool) -> StoreResult<bool> {
        self.call_bool(Op::SetRoomModerator { room, user, on }).await
    }

    async fn room_moderators(&self, room: RoomId) -> StoreResult<Vec<UserId>> {
        self.read_durable(move |txn| {
            Ok(seconds(txn, ROOM_MODERATORS, room.0)?.into_iter().map(UserId).collect())
        })
        .await
    }
}
