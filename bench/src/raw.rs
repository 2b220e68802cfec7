//! The raw baseline's protocol ([`crate::proto::Proto`] for `raw-server`):
//! the room in the query string, a frame is the message body itself, and
//! with `ack=1` the server answers each frame with the text `ack`.

use crate::proto::{find_sent_ns, ConnSpec, Handshake, Incoming, Proto};

/// The raw broadcast server's protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Proto for Raw {
    fn path(&self, spec: &ConnSpec) -> String {
        format!("/?room={}&ack={}", spec.room, u8::from(spec.ack))
    }

    fn ready_at_open(&self) -> bool {
        true
    }

    fn handshake(&self, _frame: &str) -> Handshake {
        Handshake::Ready
    }

    fn encode_send(&self, out: &mut String, _spec: &ConnSpec, _seq: u64, body: &str, _want_ack: bool) {
        out.clear();
        out.push_str(body);
    }

    fn decode(&self, frame: &str) -> Incoming {
        if frame == "ack" {
            return Incoming::Ack { rid: 0 };
        }
        match find_sent_ns(frame) {
            Some(sent_ns) => Incoming::Delivery { sent_ns, id: 0 },
            None => Incoming::Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::write_body;

    #[test]
    fn raw_frames() {
        let mut body = String::new();
        write_body(&mut body, 77, 1);
        let mut out = String::new();
        Raw.encode_send(&mut out, &ConnSpec::default(), 1, &body, true);
        assert_eq!(out, body);
        assert_eq!(Raw.decode(&out), Incoming::Delivery { sent_ns: 77, id: 0 });
        assert_eq!(Raw.decode("ack"), Incoming::Ack { rid: 0 });
        let spec = ConnSpec { room: "p3".into(), ack: true, ..ConnSpec::default() };
        assert_eq!(Raw.path(&spec), "/?room=p3&ack=1");
    }
}
