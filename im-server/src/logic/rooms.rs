//! Rooms: open membership, no cap, live delivery to joined members.

use im_protocol::{ErrorCode, RoomId, UserId};

use super::Logic;
use crate::broker::Event;
use crate::error::{Error, Result};
use crate::model::Room;
use crate::store::StoreError;
use crate::time::now_ms;

const MAX_ROOM_NAME: usize = 100;
/// Largest page of the room list.
pub const ROOM_LIST_MAX: usize = 200;

impl Logic {
    /// Creates a room; its creator joins it.
    pub async fn create_room(&self, user: UserId, name: &str) -> Result<Room> {
        let name = name.trim();
        if name.is_empty() || name.contains('\0') || name.chars().count() > MAX_ROOM_NAME {
            return Err(Error::new(ErrorCode::InvalidField, "name must be 1 to 100 characters"));
        }
        let room = self.svc.directory.create_room(name, user, now_ms()).await?;
        self.join_room(user, room.id).await?;
        Ok(room)
    }

    /// Rooms with ids above `after`, at most `limit` (capped at [`ROOM_LIST_MAX`]).
    pub async fn list_rooms(&self, after: RoomId, limit: usize) -> Result<Vec<Room>> {
        Ok(self.svc.directory.rooms(after, limit.clamp(1, ROOM_LIST_MAX)).await?)
    }

    /// Joins a room (idempotent). Persisted: the user stays joined across
    /// reconnects, and every connection of theirs starts receiving it. A
    /// new join starts the user's read id at the room's head (history from
    /// before does not count as unread); joining again changes nothing.
    pub async fn join_room(&self, user: UserId, room: RoomId) -> Result<()> {
        match self.svc.directory.join_room(room, user).await {
            Ok(true) => self.read_from_head(user, im_protocol::ConversationId::Room(room)).await,
            Ok(false) => {}
            Err(StoreError::NotFound) => return Err(Error::new(ErrorCode::NoSuchRoom, "no such room")),
            Err(e) => return Err(e.into()),
        }
        self.publish(Event::RoomMembership { room, user, joined: true }).await;
        self.tell_hooks(|| crate::hooks::Notice::Joined(user, im_protocol::ConversationId::Room(room)));
        Ok(())
    }

    /// Leaves a room (idempotent).
    pub async fn leave_room(&self, user: UserId, room: RoomId) -> Result<()> {
        if self.svc.directory.room(room).await?.is_none() {
            return Err(Error::new(ErrorCode::NoSuchRoom, "no such room"));
        }
        self.svc.directory.leave_room(room, user).await?;
        self.announce_left(room, user).await;
        Ok(())
    }

    /// What a user's leaving a room changes besides the store: every node
    /// stops delivering it to their connections, and the hooks are told.
    pub(super) async fn announce_left(&self, room: RoomId, user: UserId) {
        self.publish(Event::RoomMembership { room, user, joined: false }).await;
        self.tell_hooks(|| crate::hooks::Notice::Left(user, im_protocol::ConversationId::Room(room)));
    }

    /// The rooms `user` has joined.
    pub async fn my_rooms(&self, user: UserId) -> Result<Vec<RoomId>> {
        Ok(self.svc.directory.rooms_of(user).await?)
    }
}
