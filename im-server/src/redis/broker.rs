//! [`RedisBroker`]: the [`Broker`] of a cluster, on Redis pub/sub, routed to
//! the nodes that actually hold recipients.
//!
//! # Channels
//!
//! | channel | carries |
//! |---|---|
//! | `{prefix}:node:{node}` | events for users connected to `node` (only their subset of the audience) |
//! | `{prefix}:room:{room}` | room deliveries; subscribed by the nodes with a local member of the room |
//!
//! (Pub/sub channels and keys are separate namespaces in Redis: the channel
//! `{prefix}:node:{node}` does not collide with the registry's key of the
//! same name.)
//!
//! # Routing
//!
//! - `Deliver` to [`Audience::Users`](crate::broker::Audience::Users): the users' nodes are read from the
//!   presence route table `{prefix}:pconn:{user}` (members `"{node}|{conn}"`,
//!   live while their score, an expiry on the Redis server's clock, is in
//!   the future) with one script call per batch of users. Each *other* node
//!   gets one `PUBLISH` to its node channel carrying only its users.
//! - `Deliver` to [`Audience::Room`](crate::broker::Audience::Room): one `PUBLISH` to the room channel.
//! - `RoomMembership`, `SessionRevoked`, `SessionDisconnected` and `UserDisconnected`: to the
//!   user's nodes, like users.
//!
//! Every event is also handed to this node's own sink directly, at once and
//! without a Redis round trip: the hub ignores users it holds no connection
//! of, and a connection that registered here just before its route was
//! written is not missed. Messages carry the origin node, so a node drops
//! the copy of a room event it published itself.
//!
//! # Order
//!
//! Publishing goes over the node's one multiplexed command connection and
//! [`publish`](Broker::publish) returns only once Redis has taken every
//! `PUBLISH` of the event, or once the event is in the node's publish
//! backlog, so the events one task publishes (the logic holds a
//! per-conversation lock around store-then-publish) reach each node in
//! publish order; Redis delivers a connection's publications to a subscriber
//! in that order, across channels too.
//!
//! # Redis away while publishing
//!
//! An event Redis does not take (unreachable, or no answer within 2 s) is
//! kept in a bounded backlog and published again, oldest first, by a task
//! with backoff; while the backlog is not empty, new events queue behind it
//! (see the `publisher` module). So other nodes' clients get what was stored
//! during a short outage live, in order, once Redis is back, instead of at
//! their next gap sync.
//!
//! # Subscription loss
//!
//! One dedicated pub/sub connection per node, owned by a task spawned in
//! [`subscribe`](Broker::subscribe). It pings Redis every
//! [`PING_INTERVAL`] (a half-open connection is noticed too; see
//! [`RedisBroker::with_ping_interval`]). When the
//! connection is lost it reconnects with jittered backoff from
//! [`RECONNECT_MIN`] doubling to [`RECONNECT_MAX`], subscribes the node
//! channel and every room of interest again, and then calls
//! [`EventSink::events_lost`]: what was published meanwhile is gone
//! from pub/sub, so the hub tells its connections to reconnect and sync
//! (history is stored, nothing is lost). When Redis stays out of reach for
//! [`LOST_NOTICE_AFTER`], [`EventSink::isolated`] is called once already
//! then (the hub closes its connections with 3502, "reconnect via the
//! dispatcher"), so that they do not sit on a node that misses other nodes'
//! events.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use im_protocol::RoomId;
use redis::aio::{PubSubSink, PubSubStream};
use redis::Client;
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;

use super::publisher::{node_channel, Publisher};
use super::Redis;
use crate::broker::{Broker, BrokerError, Event, EventSink};

/// First delay before a reconnect attempt that follows a failed one.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest delay between reconnect attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How long the subscription may stay lost before this node's connections
/// are told to move ([`EventSink::isolated`]) without waiting for
/// Redis: while it is lost they miss other nodes' events, and through the
/// dispatcher they find a node that has Redis (this one's registry entry
/// expires meanwhile). They are told once more when the subscription is
/// back.
pub const LOST_NOTICE_AFTER: Duration = Duration::from_secs(5);
/// How often the subscription connection is pinged: a connection cut off
/// without being closed (a partition, a half-open socket) is noticed within
/// this plus the 5 s a ping may take.
pub const PING_INTERVAL: Duration = Duration::from_secs(3);
/// A ping, connect or (un)subscribe that takes longer fails the connection.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Room interest changes queued for the subscriber task; beyond that the
/// task rebuilds its room set from the shared desired set.
const ROOM_QUEUE: usize = 1024;
/// Channels per `SUBSCRIBE` / `UNSUBSCRIBE` command.
const CHANNELS_PER_COMMAND: usize = 512;

#[derive(Deserialize)]
struct Envelope {
    origin: String,
    event: Event,
}

/// State shared by the broker and its subscriber task (never the broker
/// itself, so dropping the broker ends the task).
struct Shared {
    client: Client,
    node: String,
    node_channel: String,
    /// `{prefix}:room:`
    room_prefix: String,
    /// Rooms with a local member: the subscriptions the task must hold.
    rooms: Mutex<HashSet<RoomId>>,
    /// The room queue overflowed: diff the whole set.
    resync: AtomicBool,
    /// Wakes the task for a resync.
    wake: Notify,
    /// How often the subscription connection is pinged.
    ping_interval: Duration,
    /// How long a lost subscription waits before telling the connections.
    lost_notice_after: Duration,
}

impl Shared {
    fn room_channel(&self, room: RoomId) -> String {
        format!("{}{room}", self.room_prefix)
    }

    fn desired(&self) -> std::sync::MutexGuard<'_, HashSet<RoomId>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Fan-out between the nodes of a cluster over Redis pub/sub.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use im_server::redis::{broker::RedisBroker, Redis, RedisConfig};
///
/// let redis = Redis::connect(&RedisConfig::default()).await?;
/// let broker = Arc::new(RedisBroker::new(&redis, "node-1"));
/// // Hand it to `Server::builder().broker(broker)`: the server subscribes
/// // the hub and reports room interest.
/// # Ok(()) }
/// ```
pub struct RedisBroker {
    shared: Arc<Shared>,
    publisher: Arc<Publisher>,
    rooms_tx: mpsc::Sender<RoomId>,
    rooms_rx: Mutex<Option<mpsc::Receiver<RoomId>>>,
    sink: OnceLock<Arc<dyn EventSink>>,
    task: Mutex<Option<AbortHandle>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node", &self.shared.node)
            .field("backlog", &self.publisher.backlog_len())
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// A broker for node `node` (its name in the cluster: the name the
    /// presence route table and [`ConnRef`](crate::broker::ConnRef)s use),
    /// publishing over `redis`'s shared connection under its key prefix.
    /// Nothing is connected until [`subscribe`](Broker::subscribe).
    pub fn new(redis: &Redis, node: impl Into<String>) -> Self {
        let node = node.into();
        let prefix: Arc<str> = redis.prefix().into();
        let (rooms_tx, rooms_rx) = mpsc::channel(ROOM_QUEUE);
        let shared = Shared {
            client: redis.client().clone(),
            node_channel: node_channel(&prefix, &node),
            room_prefix: format!("{prefix}:room:"),
            node,
            rooms: Mutex::default(),
            resync: AtomicBool::new(false),
            wake: Notify::new(),
            ping_interval: PING_INTERVAL,
            lost_notice_after: LOST_NOTICE_AFTER,
        };
        let publisher = Publisher::new(redis.conn(), prefix, shared.node.clone());
        Self {
            shared: Arc::new(shared),
            publisher,
            rooms_tx,
            rooms_rx: Mutex::new(Some(rooms_rx)),
            sink: OnceLock::new(),
            task: Mutex::new(None),
        }
    }

    /// Pings the subscription connection every `every` instead of
    /// [`PING_INTERVAL`] (a dead connection is noticed within about
    /// `every` + 5 s). Call before [`subscribe`](Broker::subscribe).
    pub fn with_ping_interval(mut self, every: Duration) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.ping_interval = every.max(Duration::from_millis(10));
        }
        self
    }

    /// Tells the connections to reconnect once the subscription has been
    /// lost for `after` instead of [`LOST_NOTICE_AFTER`]. Call before
    /// [`subscribe`](Broker::subscribe).
    pub fn with_lost_notice_after(mut self, after: Duration) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.lost_notice_after = after;
        }
        self
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Events waiting to be published again after Redis failed to take
    /// them (the module docs, "Redis away while publishing").
    pub fn backlog_len(&self) -> usize {
        self.publisher.backlog_len()
    }

    /// Events dropped because the publish backlog was full.
    pub fn backlog_dropped(&self) -> u64 {
        self.publisher.dropped()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, event: Event) -> Result<(), BrokerError> {
        // Local recipients first, straight to the hub: no round trip.
        if let Some(sink) = self.sink.get() {
            sink.handle(event.clone());
        }
        self.publisher.publish(event).await
    }

    async fn subscribe(&self, sink: Arc<dyn EventSink>) -> Result<(), BrokerError> {
        let Some(rooms_rx) = self.rooms_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(BrokerError::AlreadySubscribed);
        };
        // The node channel is subscribed before this returns: nothing
        // published to this node after start-up is missed.
        let conn = match Subscription::open(&self.shared).await {
            Ok(conn) => conn,
            Err(e) => {
                *self.rooms_rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(rooms_rx);
                return Err(backend(e));
            }
        };
        let _ = self.sink.set(sink.clone());
        let task = tokio::spawn(run(self.shared.clone(), sink, rooms_rx, conn));
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        Ok(())
    }

    fn room_interest(&self, room: RoomId, interested: bool) {
        // The desired set is the truth; the queue only says where to look.
        let mut rooms = self.shared.desired();
        let changed = if interested { rooms.insert(room) } else { rooms.remove(&room) };
        if !changed {
            return;
        }
        match self.rooms_tx.try_send(room) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.resync.store(true, Ordering::Release);
                self.shared.wake.notify_one();
            }
        }
    }
}

/// The pub/sub connection and what it is subscribed to.
struct Subscription {
    sink: PubSubSink,
    stream: PubSubStream,
    rooms: HashSet<RoomId>,
}

impl Subscription {
    /// Connects and subscribes the node channel and every desired room.
    async fn open(shared: &Shared) -> redis::RedisResult<Self> {
        let pubsub = tokio::time::timeout(IO_TIMEOUT, shared.client.get_async_pubsub())
            .await
            .map_err(|_| timeout_error("connecting"))??;
        let (sink, stream) = pubsub.split();
        let mut sub = Self { sink, stream, rooms: HashSet::new() };
        // Everything desired from here on is in the snapshot or in the queue.
        shared.resync.store(false, Ordering::Release);
        let rooms: Vec<RoomId> = shared.desired().iter().copied().collect();
        sub.command(true, vec![shared.node_channel.clone()]).await?;
        sub.change(shared, rooms, Vec::new()).await?;
        Ok(sub)
    }

    /// One `SUBSCRIBE` or `UNSUBSCRIBE` per chunk of channels.
    async fn command(&mut self, subscribe: bool, channels: Vec<String>) -> redis::RedisResult<()> {
        for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
            let done = if subscribe {
                tokio::time::timeout(IO_TIMEOUT, self.sink.subscribe(chunk)).await
            } else {
                tokio::time::timeout(IO_TIMEOUT, self.sink.unsubscribe(chunk)).await
            };
            done.map_err(|_| timeout_error("subscribing"))??;
        }
        Ok(())
    }

    async fn change(
        &mut self,
        shared: &Shared,
        add: Vec<RoomId>,
        remove: Vec<RoomId>,
    ) -> redis::RedisResult<()> {
        if !add.is_empty() {
            self.command(true, add.iter().map(|&r| shared.room_channel(r)).collect()).await?;
            self.rooms.extend(add);
        }
        if !remove.is_empty() {
            self.command(false, remove.iter().map(|&r| shared.room_channel(r)).collect()).await?;
            for r in remove {
                self.rooms.remove(&r);
            }
        }
        Ok(())
    }

    /// Brings `rooms` (or, when `None`, every room) in line with the desired set.
    async fn sync_rooms(&mut self, shared: &Shared, rooms: Option<Vec<RoomId>>) -> redis::RedisResult<()> {
        let (add, remove) = {
            let desired = shared.desired();
            let candidates: Vec<RoomId> = match rooms {
                Some(rooms) => rooms,
                None => desired.iter().chain(self.rooms.iter()).copied().collect(),
            };
            let mut seen = HashSet::new();
            let (mut add, mut remove) = (Vec::new(), Vec::new());
            for room in candidates {
                if !seen.insert(room) {
                    continue;
                }
                match (desired.contains(&room), self.rooms.contains(&room)) {
                    (true, false) => add.push(room),
                    (false, true) => remove.push(room),
                    _ => {}
                }
            }
            (add, remove)
        };
        self.change(shared, add, remove).await
    }
}

/// Why a subscription session ended.
enum Ended {
    /// The connection failed: reconnect.
    Lost(String),
    /// The broker is gone.
    Shutdown,
}

/// The subscriber task: serves a subscription, replaces it when lost.
async fn run(
    shared: Arc<Shared>,
    sink: Arc<dyn EventSink>,
    mut rooms: mpsc::Receiver<RoomId>,
    mut sub: Subscription,
) {
    loop {
        match serve(&shared, &*sink, &mut rooms, &mut sub).await {
            Ended::Shutdown => return,
            Ended::Lost(why) => {
                tracing::warn!(node = %shared.node, %why, "broker subscription lost; reconnecting")
            }
        }
        sub = reconnect(&shared, &*sink).await;
        tracing::info!(node = %shared.node, "broker subscription restored");
        sink.events_lost();
    }
}

/// Delivers incoming events and applies room interest until the connection fails.
async fn serve(
    shared: &Shared,
    sink: &dyn EventSink,
    rooms: &mut mpsc::Receiver<RoomId>,
    sub: &mut Subscription,
) -> Ended {
    let every = shared.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Not biased: a steady inbound stream must not starve room
        // (un)subscriptions or the ping.
        tokio::select! {
            msg = sub.stream.next() => match msg {
                Some(msg) => deliver(shared, sink, &msg),
                None => return Ended::Lost("connection closed".into()),
            },
            room = rooms.recv() => {
                let Some(room) = room else { return Ended::Shutdown };
                let mut batch = vec![room];
                while batch.len() < CHANNELS_PER_COMMAND {
                    match rooms.try_recv() {
                        Ok(room) => batch.push(room),
                        Err(_) => break,
                    }
                }
                if let Err(e) = sub.sync_rooms(shared, Some(batch)).await {
                    return Ended::Lost(e.to_string());
                }
            }
            () = shared.wake.notified() => {
                if shared.resync.swap(false, Ordering::AcqRel) {
                    if let Err(e) = sub.sync_rooms(shared, None).await {
                        return Ended::Lost(e.to_string());
                    }
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(IO_TIMEOUT, sub.sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::Lost(format!("ping: {e}")),
                    Err(_) => return Ended::Lost("ping timed out".into()),
                }
            }
        }
    }
}

/// Hands one pub/sub message to the sink (skipping this node's own).
fn deliver(shared: &Shared, sink: &dyn EventSink, msg: &redis::Msg) {
    match serde_json::from_slice::<Envelope>(msg.get_payload_bytes()) {
        Ok(envelope) if envelope.origin == shared.node => {}
        Ok(envelope) => sink.handle(envelope.event),
        Err(e) => {
            tracing::warn!(channel = msg.get_channel_name(), error = %e, "undecodable broker event dropped")
        }
    }
}

/// Opens a new subscription, retrying with jittered exponential backoff;
/// once it has been lost for `lost_notice_after`, tells `sink` (once).
async fn reconnect(shared: &Shared, sink: &dyn EventSink) -> Subscription {
    let notice_at = tokio::time::Instant::now() + shared.lost_notice_after;
    let mut told = false;
    let mut delay = RECONNECT_MIN;
    loop {
        // Between half and all of `delay`: nodes that lost Redis together
        // do not come back in lockstep.
        let pause = delay.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        let retry_in = delay;
        let attempt = async move {
            match Subscription::open(shared).await {
                Ok(sub) => Some(sub),
                Err(e) => {
                    tracing::warn!(node = %shared.node, error = %e, ?retry_in, "broker reconnect failed");
                    tokio::time::sleep(pause).await;
                    None
                }
            }
        };
        tokio::pin!(attempt);
        let opened = loop {
            tokio::select! {
                opened = &mut attempt => break opened,
                () = tokio::time::sleep_until(notice_at), if !told => {
                    told = true;
                    tracing::warn!(node = %shared.node, after = ?shared.lost_notice_after,
                        "broker still unreachable: connections told to move to another node");
                    sink.isolated();
                }
            }
        };
        if let Some(sub) = opened {
            return sub;
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

fn backend(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Backend(format!("redis: {e}"))
}

fn timeout_error(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out")))
}

#[cfg(test)]
mod tests;
