//! A TCP proxy that can blackhole: while cut, it forwards nothing in either
//! direction but keeps every connection open (and accepts new ones without
//! reaching the target), as a network partition looks to both ends; when
//! healed, what was held back flows on, as TCP's retransmissions would
//! deliver it after a short partition.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The proxy; stops (dropping every connection) when dropped.
pub struct BlackholeProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `true` while traffic flows.
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl BlackholeProxy {
    /// Forwards connections on a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> BlackholeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (open, _) = watch::channel(true);
        let opened = open.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let mut flowing = opened.subscribe();
                conns.spawn(async move {
                    // A connection made during the partition reaches nothing until it heals.
                    if flowing.wait_for(|o| *o).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, flowing.clone());
                    let down = pump(server_read, client_write, flowing);
                    tokio::join!(up, down);
                });
                while conns.try_join_next().is_some() {}
            }
        });
        BlackholeProxy { addr, open, task }
    }

    /// `redis://` and the proxy's address.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// From now on nothing passes.
    pub fn cut(&self) -> std::time::Instant {
        self.open.send_replace(false);
        std::time::Instant::now()
    }

    /// From now on everything passes again, what was held back first.
    pub fn heal(&self) -> std::time::Instant {
        self.open.send_replace(true);
        std::time::Instant::now()
    }
}

impl Drop for BlackholeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` while the proxy is open; a chunk read just as the
/// cut came is held until it heals.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut open: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if open.wait_for(|o| *o).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if open.wait_for(|o| *o).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}
