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
//! - `RoomMembership`, `SessionRevoked` and `UserDisconnected`: to the user's nodes, like users.
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
//! [`EventSink::events_lost`] once: what was published meanwhile is gone
//! from pub/sub, so the hub tells its connections to reconnect and sync
//! (history is stored, nothing is lost).

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
/// How often the subscription connection is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
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
        sub = reconnect(&shared).await;
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

/// Opens a new subscription, retrying with jittered exponential backoff.
async fn reconnect(shared: &Shared) -> Subscription {
    let mut delay = RECONNECT_MIN;
    loop {
        match Subscription::open(shared).await {
            Ok(sub) => return sub,
            Err(e) => {
                tracing::warn!(node = %shared.node, error = %e, retry_in = ?delay, "broker reconnect failed");
            }
        }
        // Between half and all of `delay`: nodes that lost Redis together
        // do not come back in lockstep.
        let jittered = delay.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        tokio::time::sleep(jittered).await;
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
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use im_protocol::{ClientMsgId, ConversationId, Message, MessageId, ServerFrame, UserId};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::broadcast;

    use super::*;
    use crate::broker::{Audience, ConnRef};
    use crate::redis::{delete_test_keys, test_redis, RedisConfig};

    /// Records what a node's hub would receive.
    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<(Instant, Event)>>,
        lost: AtomicUsize,
    }

    impl EventSink for Recorder {
        fn handle(&self, event: Event) {
            self.events.lock().unwrap().push((Instant::now(), event));
        }
        fn events_lost(&self) {
            self.lost.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Recorder {
        fn events(&self) -> Vec<Event> {
            self.events.lock().unwrap().iter().map(|(_, e)| e.clone()).collect()
        }
        fn len(&self) -> usize {
            self.events.lock().unwrap().len()
        }
        /// Waits (up to 5 s) until `n` events are recorded.
        async fn wait_len(&self, n: usize) -> Vec<Event> {
            wait_until(|| self.len() >= n).await;
            self.events()
        }
    }

    async fn wait_until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "condition not met within 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn message(id: MessageId) -> ServerFrame {
        ServerFrame::Message(Message::new(
            ConversationId::direct(UserId(1), UserId(2)),
            id,
            UserId(2),
            ClientMsgId::new(format!("c{id}")).unwrap(),
            format!("m{id}"),
            0,
        ))
    }

    fn to_users(users: &[u64], id: MessageId) -> Event {
        Event::Deliver {
            to: Audience::Users(users.iter().map(|&u| UserId(u)).collect()),
            frame: message(id),
            skip: None,
        }
    }

    fn to_room(room: u64, id: MessageId) -> Event {
        Event::Deliver { to: Audience::Room(RoomId(room)), frame: message(id), skip: None }
    }

    /// The message ids of the deliveries among `events`.
    fn ids(events: &[Event]) -> Vec<MessageId> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Deliver { frame: ServerFrame::Message(m), .. } => Some(m.id),
                _ => None,
            })
            .collect()
    }

    /// Places `user`'s connection 1 on `node` in the route table for a minute.
    async fn place(redis: &Redis, user: u64, node: &str) {
        let now = redis.server_time_ms().await.unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(redis.key(format!("pconn:{user}")))
            .arg(now + 60_000)
            .arg(format!("{node}|1"))
            .query_async(&mut redis.conn())
            .await
            .unwrap();
    }

    async fn node(redis: &Redis, name: &str) -> (RedisBroker, Arc<Recorder>) {
        let broker = RedisBroker::new(redis, name);
        let rec = Arc::new(Recorder::default());
        broker.subscribe(rec.clone()).await.unwrap();
        (broker, rec)
    }

    /// Subscribers of `channel` (under the prefix).
    async fn numsub(redis: &Redis, channel: &str) -> i64 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(redis.key(channel))
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        n
    }

    async fn wait_numsub(redis: &Redis, channel: &str, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while numsub(redis, channel).await != n {
            assert!(Instant::now() < deadline, "{channel}: never {n} subscribers");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Publishes a marker to `user` (placed on `node`'s recorder `rec`) and
    /// waits for it: everything published before it on the same connection
    /// has been delivered by then. Returns the events before the marker.
    async fn fence(from: &RedisBroker, user: u64, rec: &Recorder) -> Vec<Event> {
        const MARK: MessageId = 999_999;
        from.publish(to_users(&[user], MARK)).await.unwrap();
        wait_until(|| ids(&rec.events()).contains(&MARK)).await;
        let mut events = rec.events();
        let at = events.iter().position(|e| ids(std::slice::from_ref(e)) == [MARK]).unwrap();
        events.truncate(at);
        rec.events.lock().unwrap().clear();
        events
    }

    #[tokio::test]
    async fn users_reach_only_their_nodes_in_order() {
        let Some((redis, _)) = test_redis().await else { return };
        let (a, ra) = node(&redis, "a").await;
        let (_b, rb) = node(&redis, "b").await;
        let (_c, rc) = node(&redis, "c").await;
        place(&redis, 1, "b").await;
        place(&redis, 3, "c").await;

        for id in 1..=200 {
            a.publish(to_users(&[1, 2], id)).await.unwrap();
        }
        let got = rb.wait_len(200).await;
        assert_eq!(ids(&got), (1..=200).collect::<Vec<_>>());
        // b gets only its own user; c gets nothing at all.
        assert!(got
            .iter()
            .all(|e| matches!(e, Event::Deliver { to: Audience::Users(u), .. } if u == &[UserId(1)])));
        // The publisher's own sink saw every event, at once.
        assert_eq!(ids(&ra.events()), (1..=200).collect::<Vec<_>>());
        assert_eq!(fence(&a, 3, &rc).await, vec![]);
        delete_test_keys(&redis).await;
    }

    #[tokio::test]
    async fn local_users_are_delivered_directly() {
        let Some((redis, _)) = test_redis().await else { return };
        let (a, ra) = node(&redis, "a").await;
        let (_b, rb) = node(&redis, "b").await;
        place(&redis, 1, "a").await;
        place(&redis, 2, "b").await;

        let skip = Some(ConnRef { node: "a".into(), conn: 7 });
        let event = Event::Deliver { to: Audience::Users(vec![UserId(1)]), frame: message(1), skip };
        a.publish(event.clone()).await.unwrap();
        // Synchronously, before publish returned: no Redis round trip.
        assert_eq!(ra.events(), vec![event]);
        // Nothing went to b, and a did not get a second copy through Redis.
        assert_eq!(fence(&a, 2, &rb).await, vec![]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ra.len(), 2); // the event and the fence (delivered locally too)
        delete_test_keys(&redis).await;
    }

    #[tokio::test]
    async fn rooms_reach_interested_nodes_until_interest_ends() {
        let Some((redis, _)) = test_redis().await else { return };
        let (a, ra) = node(&redis, "a").await;
        let (b, rb) = node(&redis, "b").await;
        let (_c, rc) = node(&redis, "c").await;
        place(&redis, 2, "b").await;
        place(&redis, 3, "c").await;

        a.room_interest(RoomId(7), true);
        b.room_interest(RoomId(7), true);
        wait_numsub(&redis, "room:7", 2).await;
        a.publish(to_room(7, 1)).await.unwrap();
        assert_eq!(ids(&fence(&a, 2, &rb).await), [1]);
        assert_eq!(fence(&a, 3, &rc).await, vec![]);
        // a has its local copy only, not its own echo from the room channel.
        assert_eq!(ids(&ra.events()), [1, 999_999, 999_999]);

        b.room_interest(RoomId(7), false);
        wait_numsub(&redis, "room:7", 1).await;
        a.publish(to_room(7, 2)).await.unwrap();
        assert_eq!(fence(&a, 2, &rb).await, vec![]);
        delete_test_keys(&redis).await;
    }

    #[tokio::test]
    async fn membership_and_revocation_reach_the_users_node() {
        let Some((redis, _)) = test_redis().await else { return };
        let (a, _ra) = node(&redis, "a").await;
        let (_b, rb) = node(&redis, "b").await;
        let (_c, rc) = node(&redis, "c").await;
        place(&redis, 5, "c").await;
        place(&redis, 2, "b").await;

        let revoked = Event::SessionRevoked { user: UserId(5), session: "s1".into() };
        let joined = Event::RoomMembership { room: RoomId(9), user: UserId(5), joined: true };
        a.publish(revoked.clone()).await.unwrap();
        a.publish(joined.clone()).await.unwrap();
        // Unknown user: nowhere to route, not an error.
        a.publish(Event::SessionRevoked { user: UserId(404), session: "s".into() }).await.unwrap();
        assert_eq!(fence(&a, 5, &rc).await, vec![revoked, joined]);
        assert_eq!(fence(&a, 2, &rb).await, vec![]);
        delete_test_keys(&redis).await;
    }

    #[tokio::test]
    async fn expired_routes_are_ignored() {
        let Some((redis, _)) = test_redis().await else { return };
        let (a, _ra) = node(&redis, "a").await;
        let (_b, rb) = node(&redis, "b").await;
        place(&redis, 2, "b").await;
        let now = redis.server_time_ms().await.unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(redis.key("pconn:1"))
            .arg(now - 1)
            .arg("b|9")
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        a.publish(to_users(&[1], 1)).await.unwrap();
        assert_eq!(fence(&a, 2, &rb).await, vec![]);
        delete_test_keys(&redis).await;
    }

    #[tokio::test]
    async fn room_queue_overflow_resubscribes_everything() {
        let Some((redis, _)) = test_redis().await else { return };
        let (b, _rb) = node(&redis, "b").await;
        let rooms = ROOM_QUEUE as u64 * 3;
        for r in 0..rooms {
            b.room_interest(RoomId(r), true);
        }
        b.room_interest(RoomId(0), false);
        let pattern = redis.key("room:*");
        let count = || async {
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg(&pattern)
                .query_async(&mut redis.conn())
                .await
                .unwrap();
            channels.len() as u64
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while count().await != rooms - 1 {
            assert!(Instant::now() < deadline, "rooms never all subscribed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(numsub(&redis, "room:0").await, 0);
        for r in 0..rooms {
            b.room_interest(RoomId(r), false);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while count().await != 0 {
            assert!(Instant::now() < deadline, "rooms never all unsubscribed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn subscribe_twice_fails_and_drop_ends_the_subscription() {
        let Some((redis, _)) = test_redis().await else { return };
        let (b, _rb) = node(&redis, "b").await;
        let again = b.subscribe(Arc::new(Recorder::default())).await;
        assert!(matches!(again, Err(BrokerError::AlreadySubscribed)));
        wait_numsub(&redis, "node:b", 1).await;
        drop(b);
        wait_numsub(&redis, "node:b", 0).await;
    }

    #[tokio::test]
    async fn pings_keep_a_healthy_subscription() {
        let Some((redis, _)) = test_redis().await else { return };
        let (a, _ra) = node(&redis, "a").await;
        let b = RedisBroker::new(&redis, "b").with_ping_interval(Duration::from_millis(20));
        let rb = Arc::new(Recorder::default());
        b.subscribe(rb.clone()).await.unwrap();
        place(&redis, 1, "b").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.publish(to_users(&[1], 1)).await.unwrap();
        assert_eq!(ids(&rb.wait_len(1).await), [1]);
        assert_eq!(rb.lost.load(Ordering::SeqCst), 0, "a ping in subscribed mode failed the connection");
        delete_test_keys(&redis).await;
    }

    /// A TCP proxy to Redis whose connections the test can cut, and which
    /// can be taken down (new connections are closed at once).
    struct Proxy {
        url: String,
        cut: broadcast::Sender<()>,
        down: Arc<AtomicBool>,
    }

    async fn proxy(redis: &Redis) -> Option<Proxy> {
        let info = redis.client().get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            eprintln!("SKIPPED: the test Redis is not plain TCP; no proxy");
            return None;
        };
        let target = format!("{host}:{port}");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let settings = info.redis_settings();
        let auth = match (settings.username(), settings.password()) {
            (Some(u), Some(p)) => format!("{u}:{p}@"),
            (None, Some(p)) => format!(":{p}@"),
            _ => String::new(),
        };
        let url = format!("redis://{auth}{}/{}", listener.local_addr().unwrap(), settings.db());
        let (cut, _) = broadcast::channel(1);
        let cuts = cut.clone();
        let down = Arc::new(AtomicBool::new(false));
        let is_down = down.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        Some(Proxy { url, cut, down })
    }

    #[tokio::test]
    async fn lost_subscription_reconnects_and_reports_lost_events() {
        let Some((redis, prefix)) = test_redis().await else { return };
        let Some(proxy) = proxy(&redis).await else { return };
        let via_proxy = Redis::connect(&RedisConfig { url: proxy.url.clone(), prefix }).await.unwrap();
        let (a, _ra) = node(&redis, "a").await;
        let (b, rb) = node(&via_proxy, "b").await;
        place(&redis, 1, "b").await;
        b.room_interest(RoomId(4), true);
        wait_numsub(&redis, "room:4", 1).await;

        a.publish(to_users(&[1], 1)).await.unwrap();
        rb.wait_len(1).await;
        assert_eq!(rb.lost.load(Ordering::SeqCst), 0);

        proxy.cut.send(()).unwrap();
        wait_until(|| rb.lost.load(Ordering::SeqCst) == 1).await;
        // Resubscribed (node and room) before reporting.
        assert_eq!(numsub(&redis, "node:b").await, 1);
        assert_eq!(numsub(&redis, "room:4").await, 1);
        a.publish(to_users(&[1], 2)).await.unwrap();
        a.publish(to_room(4, 3)).await.unwrap();
        assert_eq!(ids(&rb.wait_len(3).await), [1, 2, 3]);
        assert_eq!(rb.lost.load(Ordering::SeqCst), 1);
        drop(b);
        delete_test_keys(&redis).await;
    }

    #[tokio::test]
    async fn events_redis_did_not_take_are_published_in_order_once_it_is_back() {
        let Some((redis, prefix)) = test_redis().await else { return };
        let Some(proxy) = proxy(&redis).await else { return };
        let via_proxy = Redis::connect(&RedisConfig { url: proxy.url.clone(), prefix }).await.unwrap();
        // `a` publishes through the proxy; `b` holds the recipients.
        let (a, _ra) = node(&via_proxy, "a").await;
        let (b, rb) = node(&redis, "b").await;
        place(&redis, 1, "b").await;
        b.room_interest(RoomId(4), true);
        wait_numsub(&redis, "room:4", 1).await;
        a.publish(to_users(&[1], 1)).await.unwrap();
        assert_eq!(ids(&rb.wait_len(1).await), [1]);

        // Redis goes away for `a`: its publishes are kept, none is lost.
        proxy.down.store(true, Ordering::SeqCst);
        proxy.cut.send(()).unwrap();
        for id in 2..=7 {
            let event = if id % 2 == 0 { to_users(&[1], id) } else { to_room(4, id) };
            a.publish(event).await.expect("kept for a retry");
        }
        assert!(a.backlog_len() > 0, "the events wait in the backlog");
        assert_eq!(ids(&rb.events()), [1], "nothing reached b while Redis was away");

        // Back: the backlog goes out in publish order, then empties.
        proxy.down.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while rb.len() < 7 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ids(&rb.events()), [1, 2, 3, 4, 5, 6, 7], "every kept event, in order, once");
        wait_until(|| a.backlog_len() == 0).await;
        // Publishing goes straight to Redis again.
        a.publish(to_users(&[1], 8)).await.unwrap();
        assert_eq!(ids(&rb.wait_len(8).await), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(a.backlog_dropped(), 0);
        delete_test_keys(&redis).await;
    }

    fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        (at(0.50), at(0.99))
    }

    /// Throwaway measurement (not a timed assertion): run with
    /// `cargo test -p im-server --features redis --lib redis::broker -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement; prints figures"]
    async fn measure_latency() {
        let Some((redis, _)) = test_redis().await else { return };
        let (a, ra) = node(&redis, "a").await;
        let (_b, rb) = node(&redis, "b").await;
        place(&redis, 1, "b").await;
        place(&redis, 2, "a").await;
        const N: usize = 1000;
        for (user, rec, label) in [(1, &rb, "a -> b via Redis"), (2, &ra, "a -> a local")] {
            let (mut receive, mut call) = (Vec::with_capacity(N), Vec::with_capacity(N));
            rec.events.lock().unwrap().clear();
            for i in 0..N {
                let start = Instant::now();
                a.publish(to_users(&[user], i as u64)).await.unwrap();
                call.push(start.elapsed());
                while rec.len() <= i {
                    assert!(start.elapsed() < Duration::from_secs(5), "event {i} not received");
                    tokio::task::yield_now().await;
                }
                receive.push(rec.events.lock().unwrap()[i].0 - start);
            }
            let (p50, p99) = percentiles(receive);
            let (c50, c99) = percentiles(call);
            println!(
                "{label}: publish->sink p50 {p50:?} p99 {p99:?}; publish() call p50 {c50:?} p99 {c99:?}"
            );
        }
        delete_test_keys(&redis).await;
    }
}
