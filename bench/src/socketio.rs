//! Socket.IO v5 over Engine.IO v4, spoken directly over a plain WebSocket
//! (`/socket.io/?EIO=4&transport=websocket`), as much of it as the benchmark
//! needs.
//!
//! Engine.IO packets are one WebSocket text frame each, the first character
//! being the packet type: `0` open (with a JSON payload), `2` ping (the
//! client answers `3` pong), `4` message. A Socket.IO packet is an Engine.IO
//! message: `40` connect (answered by `40{"sid":…}`), `44` connect error,
//! `42["event",…]` an event, `42<id>["event",…]` an event asking for an ack,
//! answered by `43<id>[…]`.
//!
//! The benchmark's server (`bench/socketio/server.js`) joins each socket to
//! the room named by the `room` query parameter and relays the event
//! `msg(room, body[, ack])` with `socket.to(room).emit("msg", body)`.

use std::fmt::Write;

use crate::proto::{find_sent_ns, parse_digits, ConnSpec, Handshake, Incoming, Proto};

/// The Socket.IO protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketIo;

impl Proto for SocketIo {
    fn path(&self, spec: &ConnSpec) -> String {
        format!("/socket.io/?EIO=4&transport=websocket&room={}", spec.room)
    }

    fn ready_at_open(&self) -> bool {
        false
    }

    fn handshake(&self, frame: &str) -> Handshake {
        match frame.as_bytes() {
            [b'0', ..] => Handshake::Send("40"),
            [b'4', b'0', ..] => Handshake::Ready,
            [b'4', b'4', ..] => Handshake::Fail(format!("Socket.IO connect error: {frame}")),
            [b'2'] => Handshake::Send("3"),
            _ => Handshake::Wait,
        }
    }

    fn encode_send(&self, out: &mut String, spec: &ConnSpec, seq: u64, body: &str, want_ack: bool) {
        out.clear();
        out.push_str("42");
        if want_ack {
            let _ = write!(out, "{seq}");
        }
        let _ = write!(out, "[\"msg\",\"{}\",\"{body}\"]", spec.room);
    }

    fn decode(&self, frame: &str) -> Incoming {
        let b = frame.as_bytes();
        match b {
            [b'2'] => Incoming::Reply("3"),
            [b'4', b'2', ..] => match find_sent_ns(frame) {
                Some(sent_ns) => Incoming::Delivery { sent_ns, id: 0 },
                None => Incoming::Ignore,
            },
            [b'4', b'3', rest @ ..] => {
                let end = rest.iter().position(|c| !c.is_ascii_digit()).unwrap_or(rest.len());
                let rid = frame.get(2..2 + end).and_then(parse_digits).unwrap_or(0);
                Incoming::Ack { rid }
            }
            _ => Incoming::Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::write_body;

    #[test]
    fn handshake_packets() {
        let open =
            r#"0{"sid":"x1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(SocketIo.handshake(open), Handshake::Send("40"));
        assert_eq!(SocketIo.handshake(r#"40{"sid":"abc"}"#), Handshake::Ready);
        assert!(matches!(SocketIo.handshake(r#"44{"message":"no"}"#), Handshake::Fail(_)));
        assert_eq!(SocketIo.handshake("2"), Handshake::Send("3"));
    }

    #[test]
    fn event_and_ack_packets() {
        let mut body = String::new();
        write_body(&mut body, 987_654, 3);
        let spec = ConnSpec { room: "r1".into(), ..ConnSpec::default() };
        let mut out = String::new();
        SocketIo.encode_send(&mut out, &spec, 12, &body, true);
        assert_eq!(out, format!("4212[\"msg\",\"r1\",\"{body}\"]"));
        SocketIo.encode_send(&mut out, &spec, 12, &body, false);
        assert_eq!(out, format!("42[\"msg\",\"r1\",\"{body}\"]"));
        // What a receiver gets from `socket.to(room).emit("msg", body)`.
        let relayed = format!("42[\"msg\",\"{body}\"]");
        assert_eq!(SocketIo.decode(&relayed), Incoming::Delivery { sent_ns: 987_654, id: 0 });
        assert_eq!(SocketIo.decode("4312[]"), Incoming::Ack { rid: 12 });
        assert_eq!(SocketIo.decode("43[]"), Incoming::Ack { rid: 0 });
        assert_eq!(SocketIo.decode("2"), Incoming::Reply("3"));
        assert_eq!(SocketIo.decode("41"), Incoming::Ignore);
    }
}
