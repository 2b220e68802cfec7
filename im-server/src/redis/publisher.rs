//! The publishing half of [`RedisBroker`](super::broker::RedisBroker):
//! routing an event to the channels that need it, and a bounded backlog for
//! the events Redis could not take.
//!
//! When a publish fails (Redis unreachable, or no answer within
//! [`SEND_TIMEOUT`]), the event joins the backlog instead of being dropped,
//! and a task publishes the backlog again, oldest first, with backoff, until
//! Redis takes it. While the backlog is not empty every new event joins it
//! behind the others, and an event leaves it only once Redis has taken it,
//! so each conversation's events still reach the other nodes in publish
//! order. Routes (which nodes hold a user) are looked up when the event is
//! finally sent, so users who moved meanwhile are found where they are.
//!
//! The backlog holds at most [`BACKLOG_EVENTS`] events; beyond that new
//! events are dropped and counted, and their recipients catch up as before,
//! by sync when a later message reveals the gap or at their next reconnect.
//! A send that timed out may still have reached Redis, so a retried event
//! can arrive twice; clients drop a message they already have by its id.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use im_protocol::UserId;
use redis::aio::ConnectionManager;
use redis::Script;

use crate::broker::{Audience, BrokerError, Event};

/// Most events kept for a retry while Redis is away.
pub const BACKLOG_EVENTS: usize = 10_000;
/// A publish that Redis has not answered within this goes to the backlog
/// (well within the logic's 5 s publish bound).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait before the backlog is tried again.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between backlog retries.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Users per route-table lookup (one script call each).
const ROUTE_BATCH: usize = 256;

/// The live nodes of each user: for each key, the node parts of the members
/// whose expiry score is above the Redis server's clock (the clock the
/// presence code scores with), so nodes with skewed clocks still agree.
const ROUTES_LUA: &str = r"
local t = redis.call('TIME')
local min = '(' .. string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZRANGEBYSCORE', key, min, '+inf')
end
return out
";

/// What travels on a channel: the event and the node that published it.
#[derive(serde::Serialize)]
struct EnvelopeRef<'a> {
    origin: &'a str,
    event: &'a Event,
}

/// Routes events to Redis channels and keeps the ones Redis could not take.
pub(crate) struct Publisher {
    conn: ConnectionManager,
    prefix: Arc<str>,
    node: String,
    routes: Script,
    backlog: Mutex<Backlog>,
    dropped: AtomicU64,
}

/// Events waiting for Redis, oldest first, and whether a task retries them.
#[derive(Default)]
struct Backlog {
    events: VecDeque<Event>,
    retrying: bool,
}

impl Publisher {
    /// A publisher for node `node` over `conn`, under `prefix`.
    pub(crate) fn new(conn: ConnectionManager, prefix: Arc<str>, node: String) -> Arc<Self> {
        Arc::new(Self {
            conn,
            prefix,
            node,
            routes: Script::new(ROUTES_LUA),
            backlog: Mutex::default(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Publishes `event` to the other nodes that need it, or keeps it for a
    /// retry when Redis does not take it. Returns once Redis has taken it or
    /// it is in the backlog; fails only when it could be neither (the
    /// backlog is full).
    pub(crate) async fn publish(self: &Arc<Self>, event: Event) -> Result<(), BrokerError> {
        // Behind what is already waiting: order first.
        let Some(event) = self.enqueue_if_waiting(event)? else { return Ok(()) };
        match tokio::time::timeout(SEND_TIMEOUT, self.route_and_send(&event)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "broker publish failed: kept for a retry");
                self.keep(event)
            }
            Err(_) => {
                tracing::warn!("broker publish timed out: kept for a retry");
                self.keep(event)
            }
        }
    }

    /// Events waiting for a retry.
    pub(crate) fn backlog_len(&self) -> usize {
        self.lock().events.len()
    }

    /// Events dropped because the backlog was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `event` to a non-empty backlog (returning `None`), or hands
    /// it back to be sent now.
    fn enqueue_if_waiting(self: &Arc<Self>, event: Event) -> Result<Option<Event>, BrokerError> {
        let mut backlog = self.lock();
        if backlog.events.is_empty() {
            return Ok(Some(event));
        }
        self.push(&mut backlog, event)?;
        Ok(None)
    }

    /// Appends `event` to the backlog and makes sure a task retries it.
    fn keep(self: &Arc<Self>, event: Event) -> Result<(), BrokerError> {
        let mut backlog = self.lock();
        self.push(&mut backlog, event)
    }

    fn push(self: &Arc<Self>, backlog: &mut Backlog, event: Event) -> Result<(), BrokerError> {
        if backlog.events.len() >= BACKLOG_EVENTS {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "broker backlog full: event dropped (recipients will sync)");
            }
            return Err(BrokerError::Backend("the publish backlog is full".into()));
        }
        backlog.events.push_back(event);
        if !backlog.retrying {
            backlog.retrying = true;
            tokio::spawn(retry(Arc::downgrade(self)));
        }
        Ok(())
    }

    /// Sends `event` to every channel that needs it, in one round trip.
    async fn route_and_send(&self, event: &Event) -> Result<(), BrokerError> {
        match event {
            Event::Deliver { to: Audience::Room(room), .. } => {
                let channel = format!("{}:room:{room}", self.prefix);
                self.send(vec![(channel, self.encode(event)?)]).await
            }
            Event::Deliver { to: Audience::Users(users), frame, skip } => {
                let mut messages = Vec::new();
                for (node, users) in self.remote_nodes(users).await? {
                    let part = Event::Deliver {
                        to: Audience::Users(users),
                        frame: frame.clone(),
                        skip: skip.clone(),
                    };
                    messages.push((node_channel(&self.prefix, &node), self.encode(&part)?));
                }
                self.send(messages).await
            }
            Event::RoomMembership { user, .. }
            | Event::SessionRevoked { user, .. }
            | Event::SessionDisconnected { user, .. }
            | Event::UserDisconnected { user } => {
                let nodes = self.remote_nodes(&[*user]).await?;
                if nodes.is_empty() {
                    return Ok(());
                }
                let payload = self.encode(event)?;
                self.send(nodes.keys().map(|n| (node_channel(&self.prefix, n), payload.clone())).collect())
                    .await
            }
        }
    }

    /// The nodes other than this one holding live connections of `users`,
    /// each with its users (in the order given).
    async fn remote_nodes(&self, users: &[UserId]) -> Result<BTreeMap<String, Vec<UserId>>, BrokerError> {
        let mut by_node: BTreeMap<String, Vec<UserId>> = BTreeMap::new();
        let mut conn = self.conn.clone();
        for batch in users.chunks(ROUTE_BATCH) {
            let mut call = self.routes.prepare_invoke();
            for user in batch {
                call.key(format!("{}:pconn:{user}", self.prefix));
            }
            let rows: Vec<Vec<String>> = call.invoke_async(&mut conn).await.map_err(backend)?;
            for (&user, members) in batch.iter().zip(rows) {
                for member in members {
                    let Some((node, _conn)) = member.rsplit_once('|') else { continue };
                    if node == self.node {
                        continue;
                    }
                    let users = by_node.entry(node.to_owned()).or_default();
                    if users.last() != Some(&user) {
                        users.push(user);
                    }
                }
            }
        }
        Ok(by_node)
    }

    /// `PUBLISH`es every `(channel, payload)` in one round trip, in order.
    async fn send(&self, messages: Vec<(String, String)>) -> Result<(), BrokerError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (channel, payload) in messages {
            pipe.publish(channel, payload).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(backend)
    }

    fn encode(&self, event: &Event) -> Result<String, BrokerError> {
        serde_json::to_string(&EnvelopeRef { origin: &self.node, event })
            .map_err(|e| BrokerError::Backend(format!("encoding an event: {e}")))
    }
}

/// Publishes the backlog, oldest first, until it is empty; waits with
/// backoff after a failure. Ends when the publisher is dropped.
async fn retry(publisher: Weak<Publisher>) {
    let mut wait = RETRY_MIN;
    loop {
        tokio::time::sleep(wait).await;
        let Some(p) = publisher.upgrade() else { return };
        loop {
            let Some(event) = p.lock().events.front().cloned() else {
                // Checked and cleared under the lock `push` takes: an event
                // pushed after this spawns a new task.
                let mut backlog = p.lock();
                if backlog.events.is_empty() {
                    backlog.retrying = false;
                    tracing::info!("broker backlog published");
                    return;
                }
                continue;
            };
            match tokio::time::timeout(SEND_TIMEOUT, p.route_and_send(&event)).await {
                Ok(Ok(())) => {
                    // Only now does it leave: a new event queues behind it
                    // until then, so nothing overtakes it.
                    p.lock().events.pop_front();
                    wait = RETRY_MIN;
                }
                _ => {
                    wait = (wait * 2).min(RETRY_MAX);
                    break;
                }
            }
        }
    }
}

/// `{prefix}:node:{node}`: the channel of one node.
pub(crate) fn node_channel(prefix: &str, node: &str) -> String {
    format!("{prefix}:node:{node}")
}

fn backend(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Backend(format!("redis: {e}"))
}
