//! Drives one WebSocket connection of a scenario, for any [`Proto`].
//!
//! A connection always reads (deliveries, acks, pings); a sending connection
//! also sends message frames, either paced at a rate (open loop: it does not
//! wait for acks, like a chat publisher) or one at a time, each waiting for
//! its ack (closed loop when the rate is unbounded, else paced). The
//! scenario steers every connection through one [`Plan`] (a `watch`
//! channel): the rate, the measurement window and the stop signal.
//!
//! Messages are counted by their **send time**: a delivery, ack or send
//! counts for the window only when the message was sent inside it, so late
//! deliveries of one ladder step never count for the next.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::now_ns;
use crate::proto::{write_body, ConnSpec, Handshake, Incoming, Proto};

/// A connected WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Most frames sent in one burst (then one flush) when catching up a pace.
const BURST: usize = 64;
/// A sender further behind its schedule than this skips the missed slots
/// (it is saturated; the step then fails on its send rate).
const MAX_LAG: Duration = Duration::from_millis(100);
/// A send whose ack has not come after this long is given up (counted as
/// the error `ack_timeout`), so a lost ack cannot stall a sender for good.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection of a scenario does now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Messages per second per sending connection: 0 = none,
    /// `f64::INFINITY` = as fast as acks allow (closed loop).
    pub rate: f64,
    /// Start of the measurement window ([`now_ns`] clock).
    pub win_start: u64,
    /// End of the measurement window (exclusive).
    pub win_end: u64,
    /// Close the connection.
    pub stop: bool,
}

impl Plan {
    /// Nothing sent, no window.
    pub const IDLE: Plan = Plan { rate: 0.0, win_start: 0, win_end: 0, stop: false };

    fn in_window(&self, sent_ns: u64) -> bool {
        self.win_start <= sent_ns && sent_ns < self.win_end
    }
}

/// What a connection does in its scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Role {
    /// Sends messages at the plan's rate.
    pub sends: bool,
    /// Each send waits for its ack before the next.
    pub wait_ack: bool,
    /// Phase of this sender's schedule, as a fraction of its interval (so
    /// that many senders do not fire together).
    pub offset: f64,
}

/// Counters of one connection, read and reset by the scenario.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Messages sent in the window.
    pub sent: u64,
    /// Deliveries received of messages sent in the window.
    pub delivered: u64,
    /// Their latencies (receive − send), microseconds.
    pub lat_us: Vec<u32>,
    /// Acks received for sends of the window.
    pub acked: u64,
    /// Their latencies (ack − send), microseconds.
    pub ack_lat_us: Vec<u32>,
    /// Error frames received (all time).
    pub errors: u64,
    /// The last error code.
    pub last_error: Option<String>,
    /// Deliveries whose message id was not above the previous one (all time).
    pub order_violations: u64,
    /// Deliveries carrying a message id (all time).
    pub ordered_checked: u64,
    /// Set when the connection ended before the scenario stopped it.
    pub closed: Option<String>,
}

/// Connects to `addr` and completes the protocol's handshake.
pub async fn open(proto: &dyn Proto, addr: SocketAddr, spec: &ConnSpec) -> Result<Ws, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let url = format!("ws://{addr}{}", proto.path(spec));
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    if proto.ready_at_open() {
        return Ok(ws);
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match proto.handshake(t.as_str()) {
                Handshake::Wait => {}
                Handshake::Send(reply) => {
                    ws.send(Message::text(reply)).await.map_err(|e| format!("handshake: {e}"))?
                }
                Handshake::Ready => return Ok(ws),
                Handshake::Fail(why) => return Err(why),
            },
            Some(Ok(Message::Close(c))) => return Err(format!("closed during handshake: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("handshake: {e}")),
            None => return Err("closed during handshake".into()),
        }
    }
}

/// Runs a connected connection until the plan says stop or the server closes.
pub async fn drive(
    mut ws: Ws,
    proto: Arc<dyn Proto>,
    spec: ConnSpec,
    role: Role,
    mut plans: watch::Receiver<Plan>,
    stats: Arc<Mutex<ConnStats>>,
) {
    let mut plan = *plans.borrow_and_update();
    let mut interval = interval_of(plan.rate);
    let mut next_send = Instant::now() + interval.mul_f64(role.offset);
    let mut inflight: Option<(u64, u64)> = None;
    let mut ack_deadline = Instant::now();
    let mut seq = 0u64;
    let mut last_id = 0u64;
    let mut body = String::with_capacity(128);
    let mut frame = String::with_capacity(256);

    loop {
        let can_send = role.sends && plan.rate > 0.0 && !(role.wait_ack && inflight.is_some());
        tokio::select! {
            biased;
            changed = plans.changed() => {
                if changed.is_err() {
                    break;
                }
                let new = *plans.borrow_and_update();
                if new.stop {
                    break;
                }
                if new.rate != plan.rate {
                    interval = interval_of(new.rate);
                    next_send = Instant::now() + interval.mul_f64(role.offset);
                }
                plan = new;
            }
            _ = tokio::time::sleep_until(next_send), if can_send => {
                let now = Instant::now();
                if now.duration_since(next_send) > MAX_LAG {
                    next_send = now;
                }
                let mut n = 0;
                while next_send <= now && n < BURST && !(role.wait_ack && inflight.is_some()) {
                    seq += 1;
                    let sent_ns = now_ns();
                    write_body(&mut body, sent_ns, seq);
                    proto.encode_send(&mut frame, &spec, seq, &body, role.wait_ack);
                    if ws.feed(Message::text(frame.as_str())).await.is_err() {
                        break;
                    }
                    if plan.in_window(sent_ns) {
                        stats.lock().expect("stats lock").sent += 1;
                    }
                    if role.wait_ack {
                        inflight = Some((seq, sent_ns));
                        ack_deadline = Instant::now() + ACK_TIMEOUT;
                    }
                    next_send += interval;
                    n += 1;
                }
                if ws.flush().await.is_err() {
                    stats.lock().expect("stats lock").closed = Some("write failed".into());
                    return;
                }
            }
            _ = tokio::time::sleep_until(ack_deadline), if inflight.is_some() => {
                inflight = None;
                next_send = Instant::now();
                let mut st = stats.lock().expect("stats lock");
                st.errors += 1;
                st.last_error = Some("ack_timeout".into());
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => {
                        let why = c.map(|c| format!("closed by server: {} {}", u16::from(c.code), c.reason));
                        stats.lock().expect("stats lock").closed = Some(why.unwrap_or_else(|| "closed".into()));
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        stats.lock().expect("stats lock").closed = Some(format!("read: {e}"));
                        return;
                    }
                    None => {
                        stats.lock().expect("stats lock").closed = Some("eof".into());
                        return;
                    }
                };
                match proto.decode(text.as_str()) {
                    Incoming::Delivery { sent_ns, id } => {
                        let mut st = stats.lock().expect("stats lock");
                        if plan.in_window(sent_ns) {
                            st.delivered += 1;
                            st.lat_us.push(us_since(sent_ns));
                        }
                        if id > 0 {
                            st.ordered_checked += 1;
                            if id <= last_id {
                                st.order_violations += 1;
                            }
                            last_id = id;
                        }
                    }
                    Incoming::Ack { rid } => {
                        if let Some((s, sent_ns)) = inflight {
                            if rid == s || rid == 0 {
                                inflight = None;
                                if plan.in_window(sent_ns) {
                                    let mut st = stats.lock().expect("stats lock");
                                    st.acked += 1;
                                    st.ack_lat_us.push(us_since(sent_ns));
                                }
                                if plan.rate.is_infinite() {
                                    next_send = Instant::now();
                                }
                            }
                        }
                    }
                    Incoming::Error { rid, code } => {
                        if matches!(inflight, Some((s, _)) if s == rid || rid == 0) {
                            inflight = None;
                        }
                        let mut st = stats.lock().expect("stats lock");
                        st.errors += 1;
                        st.last_error = Some(code);
                    }
                    Incoming::Reply(r) => {
                        if ws.send(Message::text(r)).await.is_err() {
                            return;
                        }
                    }
                    Incoming::Ignore => {}
                }
            }
        }
    }
}

/// The interval between sends at `rate` per second (zero when unbounded).
fn interval_of(rate: f64) -> Duration {
    if rate.is_finite() && rate > 0.0 {
        Duration::from_secs_f64(1.0 / rate)
    } else {
        Duration::ZERO
    }
}

/// Microseconds from `sent_ns` to now, saturating.
fn us_since(sent_ns: u64) -> u32 {
    (now_ns().saturating_sub(sent_ns) / 1_000).min(u64::from(u32::MAX)) as u32
}
