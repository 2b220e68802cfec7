//! The im wire protocol (`docs/protocol.md`) as the load generator needs it:
//! connect with `?token=…&device=…`, wait for `hello`, send `send` frames,
//! read `ack`, `error` and `message` frames. Received frames are parsed with
//! serde_json into a small borrowed struct (only the fields used).

use std::borrow::Cow;
use std::fmt::Write;

use serde::Deserialize;

use crate::proto::{find_sent_ns, ConnSpec, Handshake, Incoming, Proto};

/// The im protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct Im;

/// The fields of a server frame the generator looks at.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    rid: u64,
    #[serde(default)]
    id: u64,
    #[serde(default, borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

impl Proto for Im {
    fn path(&self, spec: &ConnSpec) -> String {
        format!("/ws?token={}&device={}", spec.token, spec.device)
    }

    fn ready_at_open(&self) -> bool {
        false
    }

    fn handshake(&self, frame: &str) -> Handshake {
        match serde_json::from_str::<Frame>(frame) {
            Ok(f) if f.ty == "hello" => Handshake::Ready,
            Ok(f) if f.ty == "error" => Handshake::Fail(frame.to_owned()),
            _ => Handshake::Wait,
        }
    }

    fn encode_send(&self, out: &mut String, spec: &ConnSpec, seq: u64, body: &str, _want_ack: bool) {
        // im acks every send; a sender that does not wait just ignores it.
        out.clear();
        let _ = write!(
            out,
            r#"{{"type":"send","rid":{seq},"conv":"{}","cmid":"{}-{}-{seq}","body":"{body}"}}"#,
            spec.conv, spec.cmid_tag, spec.index
        );
    }

    fn decode(&self, frame: &str) -> Incoming {
        let Ok(f) = serde_json::from_str::<Frame>(frame) else {
            return Incoming::Ignore;
        };
        match &*f.ty {
            "message" => match f.body.as_deref().and_then(find_sent_ns) {
                Some(sent_ns) => Incoming::Delivery { sent_ns, id: f.id },
                None => Incoming::Ignore,
            },
            "ack" => Incoming::Ack { rid: f.rid },
            "error" => Incoming::Error { rid: f.rid, code: f.code.unwrap_or_default().into_owned() },
            _ => Incoming::Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::write_body;

    #[test]
    fn im_frames() {
        let mut body = String::new();
        write_body(&mut body, 5_000, 9);
        let spec = ConnSpec { conv: "r:7".into(), cmid_tag: "b1".into(), index: 3, ..ConnSpec::default() };
        let mut out = String::new();
        Im.encode_send(&mut out, &spec, 9, &body, true);
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["type"], "send");
        assert_eq!(v["rid"], 9);
        assert_eq!(v["conv"], "r:7");
        assert_eq!(v["cmid"], "b1-3-9");
        assert_eq!(v["body"], body.as_str());

        let msg = format!(
            r#"{{"type":"message","conv":"r:7","id":18,"from":3,"cmid":"c","body":"{body}","ts":1}}"#
        );
        assert_eq!(Im.decode(&msg), Incoming::Delivery { sent_ns: 5_000, id: 18 });
        let ack = r#"{"type":"ack","rid":12,"conv":"r:7","id":18,"cmid":"c","ts":1,"duplicate":false}"#;
        assert_eq!(Im.decode(ack), Incoming::Ack { rid: 12 });
        let err = r#"{"type":"error","rid":4,"code":"rate_limited","message":"slow down"}"#;
        assert_eq!(Im.decode(err), Incoming::Error { rid: 4, code: "rate_limited".into() });
        assert_eq!(Im.decode(r#"{"type":"presence","user":5}"#), Incoming::Ignore);
        assert_eq!(Im.handshake(r#"{"type":"hello","protocol":1}"#), Handshake::Ready);
    }
}
