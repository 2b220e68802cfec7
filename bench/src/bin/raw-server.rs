//! `raw-server`: the baseline of the benchmark — a minimal broadcast server
//! on tokio-tungstenite, with no authentication, no storage and no protocol
//! beyond "a text frame goes to everybody else in my room".
//!
//! It is written the way a competent user would write such a server, so that
//! it is a fair practical limit for this machine:
//!
//! - TCP_NODELAY on every socket; the same WebSocket buffer sizes as im's
//!   gateway (2 KiB read, 16 KiB write), so memory per connection compares
//!   the rest of the work;
//! - the room comes from the query string: `ws://HOST:PORT/?room=NAME`;
//! - every text frame received is broadcast to every *other* connection of
//!   the room: the frame's bytes are shared (`Utf8Bytes` is reference
//!   counted), each connection has a bounded channel, and a writer task feeds
//!   what is queued (up to a batch) and flushes once;
//! - a connection whose channel is full is a slow reader: it is dropped from
//!   the room and closed (im closes such connections too, with 3001);
//! - with `&ack=1` the sender also gets the text frame `ack` back after each
//!   broadcast, so the acked scenarios have a comparable figure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames queued per connection before it counts as a slow reader.
const QUEUE: usize = 1024;
/// Frames written per flush at most.
const BATCH: usize = 64;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "raw-server",
    about = "Minimal tokio-tungstenite room broadcast server (benchmark baseline)."
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
}

/// One connection as seen by its room.
struct Peer {
    id: u64,
    tx: mpsc::Sender<Message>,
    /// Told when the room drops this connection as a slow reader.
    kick: Arc<Notify>,
}

/// Rooms by name; each room is the list of its connections.
#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Mutex<Vec<Peer>>>>>,
}

impl Rooms {
    fn join(&self, name: &str, peer: Peer) -> Arc<Mutex<Vec<Peer>>> {
        let room = self.rooms.lock().expect("rooms lock").entry(name.to_owned()).or_default().clone();
        room.lock().expect("room lock").push(peer);
        room
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(args.listen))
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("raw-server listening on ws://{}", listener.local_addr()?);
    let rooms = Arc::new(Rooms::default());
    let next_id = AtomicU64::new(1);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Out of file descriptors and the like: keep serving the others.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(stream, id, rooms.clone()));
    }
}

/// Reads `room` and `ack` from a request's query string.
fn parse_query(query: &str) -> (String, bool) {
    let mut room = String::from("default");
    let mut ack = false;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("room", v)) => room = v.to_owned(),
            Some(("ack", v)) => ack = v == "1",
            _ => {}
        }
    }
    (room, ack)
}

// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's
// signature, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, id: u64, rooms: Arc<Rooms>) {
    let _ = stream.set_nodelay(true);
    let mut query = String::new();
    let callback = |req: &Request, resp: Response| {
        query = req.uri().query().unwrap_or("").to_owned();
        Ok(resp)
    };
    let config = WebSocketConfig::default().read_buffer_size(2 * 1024).write_buffer_size(16 * 1024);
    let ws = match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await {
        Ok(ws) => ws,
        Err(_) => return,
    };
    let (room_name, ack) = parse_query(&query);
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let kick = Arc::new(Notify::new());
    let room = rooms.join(&room_name, Peer { id, tx: tx.clone(), kick: kick.clone() });
    let (mut sink, mut stream) = ws.split();

    // Writer: feed everything queued (up to a batch), flush once.
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            let mut n = 1;
            while n < BATCH {
                match rx.try_recv() {
                    Ok(m) => {
                        if sink.feed(m).await.is_err() {
                            return;
                        }
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });

    let ack_frame = Utf8Bytes::from_static("ack");
    loop {
        let msg = tokio::select! {
            _ = kick.notified() => break,
            msg = stream.next() => match msg {
                Some(Ok(msg)) => msg,
                _ => break,
            },
        };
        match msg {
            Message::Text(text) => {
                let frame = Message::Text(text);
                let mut peers = room.lock().expect("room lock");
                // Slow readers (full channel) and closed connections leave the room.
                peers.retain(|p| {
                    let keep = p.id == id || p.tx.try_send(frame.clone()).is_ok();
                    if !keep {
                        p.kick.notify_one();
                    }
                    keep
                });
                drop(peers);
                if ack && tx.try_send(Message::Text(ack_frame.clone())).is_err() {
                    break;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    room.lock().expect("room lock").retain(|p| p.id != id);
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::parse_query;

    #[test]
    fn query_parsing() {
        assert_eq!(parse_query("room=r7&ack=1"), ("r7".to_owned(), true));
        assert_eq!(parse_query(""), ("default".to_owned(), false));
        assert_eq!(parse_query("ack=0&room=x"), ("x".to_owned(), false));
    }
}
