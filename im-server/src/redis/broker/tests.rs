//! Tests of the Redis broker against the test Redis (`IM_REDIS_URL`).

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
    isolated: AtomicUsize,
}

impl EventSink for Recorder {
    fn handle(&self, event: Event) {
        self.events.lock().unwrap().push((Instant::now(), event));
    }
    fn events_lost(&self) {
        self.lost.fetch_add(1, Ordering::SeqCst);
    }
    fn isolated(&self) {
        self.isolated.fetch_add(1, Ordering::SeqCst);
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
        let channels: Vec<String> =
            redis::cmd("PUBSUB").arg("CHANNELS").arg(&pattern).query_async(&mut redis.conn()).await.unwrap();
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
        println!("{label}: publish->sink p50 {p50:?} p99 {p99:?}; publish() call p50 {c50:?} p99 {c99:?}");
    }
    delete_test_keys(&redis).await;
}

#[tokio::test]
async fn a_long_outage_tells_the_connections_before_redis_is_back_and_again_after() {
    let Some((redis, prefix)) = test_redis().await else { return };
    let Some(proxy) = proxy(&redis).await else { return };
    let via_proxy = Redis::connect(&RedisConfig { url: proxy.url.clone(), prefix }).await.unwrap();
    let rb = Arc::new(Recorder::default());
    let b = RedisBroker::new(&via_proxy, "b").with_lost_notice_after(Duration::from_millis(300));
    b.subscribe(rb.clone()).await.unwrap();
    wait_numsub(&redis, "node:b", 1).await;

    proxy.down.store(true, Ordering::SeqCst);
    proxy.cut.send(()).unwrap();
    // Told to move while Redis is still out of reach, once.
    wait_until(|| rb.isolated.load(Ordering::SeqCst) == 1).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(rb.isolated.load(Ordering::SeqCst), 1, "told once while Redis is away");
    assert_eq!(rb.lost.load(Ordering::SeqCst), 0);
    assert_eq!(numsub(&redis, "node:b").await, 0, "still cut off");
    // And to resync when the subscription is back.
    proxy.down.store(false, Ordering::SeqCst);
    wait_until(|| rb.lost.load(Ordering::SeqCst) == 1).await;
    assert_eq!(rb.isolated.load(Ordering::SeqCst), 1);
    assert_eq!(numsub(&redis, "node:b").await, 1);
    drop(b);
    delete_test_keys(&redis).await;
}
