//! Broker: carries events between the nodes of a cluster.
//!
//! Every node publishes what its connections must learn (a stored message,
//! a presence change, a revoked session…) to the broker, and every node's
//! [`Hub`](crate::hub::Hub) receives the events that concern it through its
//! [`EventSink`]. [`LocalBroker`] is the single-process implementation: it
//! hands events straight to the local hub, synchronously, which keeps the
//! publish order. A Redis implementation routes them between nodes.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use im_protocol::{RoomId, ServerFrame, UserId};
use serde::{Deserialize, Serialize};

/// Who an event's frame is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Every connection of these users.
    Users(Vec<UserId>),
    /// Every connection of every user who has joined the room.
    Room(RoomId),
}

/// A connection somewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRef {
    /// Node name.
    pub node: String,
    /// Connection id, unique within the node.
    pub conn: u64,
}

/// What travels through the broker.
// `Deliver` (a frame, 248 bytes) is nearly every event; boxing it would
// add an allocation per event to spare a memcpy on the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Deliver `frame` to the audience's connections, except `skip` (the
    /// connection that caused it, e.g. the sender's, which got an `ack`).
    Deliver {
        /// Recipients.
        to: Audience,
        /// The frame to deliver (encoded once per node).
        frame: ServerFrame,
        /// A connection not to deliver to.
        skip: Option<ConnRef>,
    },
    /// A user joined or left a room: hubs update their room index.
    RoomMembership {
        /// The room.
        room: RoomId,
        /// The user.
        user: UserId,
        /// Joined (`true`) or left.
        joined: bool,
    },
    /// A session was revoked (logout): close its connections with 4001.
    SessionRevoked {
        /// The session's user (to find its connections quickly).
        user: UserId,
        /// The session id.
        session: String,
    },
    /// Close every connection of a user with 3000 (the server API's
    /// disconnect): each reconnects, authenticates and syncs again.
    UserDisconnected {
        /// The user.
        user: UserId,
    },
    /// Close the connections of one session (token) of a user with 3000
    /// (the server API's session disconnect): they reconnect with the same
    /// token, which stays valid, and sync; the user's other sessions stay.
    SessionDisconnected {
        /// The session's user (to find its connections quickly).
        user: UserId,
        /// The session id.
        session: String,
    },
}

/// Receives the events published by any node (this one included).
pub trait EventSink: Send + Sync + 'static {
    /// Handles one event. Must not block: it runs on the broker's path.
    fn handle(&self, event: Event);

    /// The broker lost events it cannot replay (e.g. its subscription
    /// dropped): connections must resynchronize. The hub closes them with
    /// 3000 ("reconnect and sync"); nothing is lost because history is stored.
    fn events_lost(&self) {}

    /// The broker has been out of reach for a while and still is: this
    /// node misses other nodes' events until it is back. The hub closes its
    /// connections with 3502 (`node_isolated`: ask the dispatcher for
    /// another node, then sync). The default treats it as
    /// [`events_lost`](Self::events_lost).
    fn isolated(&self) {
        self.events_lost()
    }
}

/// Why publishing or subscribing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker back-end is unreachable or failed.
    #[error("broker back-end: {0}")]
    Backend(String),
    /// [`Broker::subscribe`] was called twice.
    #[error("already subscribed")]
    AlreadySubscribed,
}

/// Fan-out between nodes.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes an event to every node that needs it. Events published by
    /// one task reach each node's sink in publish order.
    async fn publish(&self, event: Event) -> Result<(), BrokerError>;
    /// Connects this node's sink; called once at start-up, before any publish.
    async fn subscribe(&self, sink: Arc<dyn EventSink>) -> Result<(), BrokerError>;

    /// This node gained its first (`true`) or lost its last (`false`) local
    /// member of `room`: a broker with per-room channels subscribes or
    /// unsubscribes. Must not block.
    fn room_interest(&self, _room: RoomId, _interested: bool) {}

    /// Whether events come from other nodes too, so one conversation's
    /// messages can arrive interleaved and the server puts a
    /// [`Reorder`](crate::reorder::Reorder) step in front of the hub. `true`
    /// unless the broker is in-process only.
    fn spans_nodes(&self) -> bool {
        true
    }
}

/// The in-process broker of a single node.
#[derive(Default)]
pub struct LocalBroker {
    sink: OnceLock<Arc<dyn EventSink>>,
}

impl LocalBroker {
    /// A broker with no sink yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Broker for LocalBroker {
    async fn publish(&self, event: Event) -> Result<(), BrokerError> {
        // Synchronous hand-off: publish order is delivery order.
        if let Some(sink) = self.sink.get() {
            sink.handle(event);
        }
        Ok(())
    }

    async fn subscribe(&self, sink: Arc<dyn EventSink>) -> Result<(), BrokerError> {
        self.sink.set(sink).map_err(|_| BrokerError::AlreadySubscribed)
    }

    fn spans_nodes(&self) -> bool {
        false
    }
}
