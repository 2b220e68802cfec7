//! Accepting and serving connections: a cap on open connections per client
//! address, `TCP_NODELAY`, and HTTP/1.1 with a deadline for the request
//! head.
//!
//! Without the deadline a client that trickles its headers a byte at a
//! time (slowloris) holds a connection, a task and its buffers for as long
//! as it likes; without the cap one address could open connections until
//! the process runs out of file descriptors. Both apply before any
//! request is routed, to HTTP and WebSocket connections alike, and, with
//! TLS, before the TLS handshake.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service as _;

use crate::metrics::Metrics;

/// Open connections per client address, capped.
///
/// IPv4 addresses count one by one; IPv6 addresses count by their /64
/// prefix, the block one subscriber usually gets, so rotating addresses
/// within it does not evade the cap. An address with no connection left
/// is forgotten, so the table holds only addresses that are connected.
pub(crate) struct ConnectionsPerIp {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionsPerIp {
    /// A table that allows `cap` connections per address (0: no cap).
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self { cap, open: Mutex::new(HashMap::new()) })
    }

    /// A slot for one more connection from `ip`, or `None` when it already
    /// has `cap` open.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = address_key(ip);
        if self.cap > 0 {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let n = open.entry(key).or_insert(0);
            if *n >= self.cap {
                return None;
            }
            *n += 1;
        }
        Some(IpSlot { table: self.clone(), key })
    }

    /// How many addresses have a connection open.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn release(&self, key: IpAddr) {
        if self.cap == 0 {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

/// The key an address counts under: IPv4 itself (also when mapped into
/// IPv6), IPv6 by its /64 prefix.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One open connection's place in [`ConnectionsPerIp`]; frees it on drop.
pub(crate) struct IpSlot {
    table: Arc<ConnectionsPerIp>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.table.release(self.key);
    }
}

/// A socket that holds its [`IpSlot`] for as long as it is open, also
/// after an upgrade to WebSocket hands it over to the gateway.
pub(crate) struct Counted<S> {
    io: S,
    _slot: IpSlot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accepts TCP connections within the per-address cap, with
/// `TCP_NODELAY` set: chat frames are small and latency-bound, and Nagle's
/// algorithm plus the peer's delayed ACK would hold them for ~40 ms.
pub(crate) struct TcpAcceptor {
    listener: TcpListener,
    per_ip: Arc<ConnectionsPerIp>,
    metrics: Arc<Metrics>,
}

impl TcpAcceptor {
    /// Accepts on `listener`, `per_ip` connections per address at most.
    pub(crate) fn new(listener: TcpListener, per_ip: Arc<ConnectionsPerIp>, metrics: Arc<Metrics>) -> Self {
        Self { listener, per_ip, metrics }
    }
}

impl Listener for TcpAcceptor {
    type Io = Counted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum does.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = self.per_ip.try_acquire(peer.ip()) else {
                // Closed at once, before a byte is read: the cheapest answer.
                tracing::debug!(%peer, "connections per address at their cap: connection closed");
                self.metrics.connection_refused("per_ip_cap");
                continue;
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY could not be set");
            }
            return (Counted { io: tcp, _slot: slot }, peer);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Serves `router` over HTTP/1.1 (with WebSocket upgrades) on every
/// connection `listener` accepts, until `stop` turns true: then it stops
/// accepting, lets each connection finish the request it is in, and
/// returns when all have closed. Aborting the task that runs this drops
/// every HTTP connection at once (upgraded WebSockets live on in the
/// gateway).
pub(crate) async fn serve_http<L>(
    mut listener: L,
    router: axum::Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    L: Listener<Addr = SocketAddr>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            (io, peer) = listener.accept() => {
                let conn = serve_connection(io, peer, router.clone(), header_read_timeout, stop.clone());
                connections.spawn(conn);
            }
            // Reap finished connections so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: axum::Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts, resets and malformed requests: the client's problem.
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_per_address_and_forgets_closed_ones() {
        let table = ConnectionsPerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = table.try_acquire(a).unwrap();
        let _second = table.try_acquire(a).unwrap();
        assert!(table.try_acquire(a).is_none(), "a third connection from one address");
        let _other = table.try_acquire(b).expect("another address has its own count");
        drop(first);
        let _again = table.try_acquire(a).expect("a closed connection frees its slot");
        assert_eq!(table.addresses(), 2);
        drop(_again);
        drop(_second);
        drop(_other);
        assert_eq!(table.addresses(), 0, "addresses with nothing open are forgotten");
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let table = ConnectionsPerIp::new(1);
        let _one = table.try_acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(table.try_acquire("2001:db8:1:2:ffff::9".parse().unwrap()).is_none());
        assert!(table.try_acquire("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = table.try_acquire("192.0.2.7".parse().unwrap()).unwrap();
        assert!(table.try_acquire("::ffff:192.0.2.7".parse().unwrap()).is_none());
    }

    #[test]
    fn no_cap_counts_nothing() {
        let table = ConnectionsPerIp::new(0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..10).map(|_| table.try_acquire(ip).unwrap()).collect();
        assert_eq!(table.addresses(), 0);
        drop(slots);
    }
}
