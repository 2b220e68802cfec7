//! Encoding and decoding frames, with errors a server can answer precisely.
//!
//! Hot path: a well-formed frame is parsed once, straight into its type. Only
//! when that fails is the text looked at again to tell *why* (not JSON, no or
//! unknown `type`, a bad field) and to recover the `rid` for the error reply.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ErrorCode;
use crate::frame::{ClientFrame, ServerFrame};
use crate::ids::RequestId;

/// Client frame types this version understands (for `unknown_type` errors).
pub const CLIENT_FRAME_TYPES: &[&str] = &[
    "send",
    "sync",
    "history",
    "join",
    "leave",
    "query_presence",
    "typing",
    "read",
    "inbox",
    "received",
    "receipts",
    "ping",
];

/// Server frame types this version sends.
pub const SERVER_FRAME_TYPES: &[&str] = &[
    "hello",
    "ack",
    "message",
    "sync_page",
    "history_page",
    "ok",
    "presence_list",
    "presence",
    "member",
    "user_typing",
    "read_up_to",
    "inbox_page",
    "receipt",
    "receipt_list",
    "contact",
    "error",
    "pong",
];

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct DecodeError {
    /// `bad_frame`, `unknown_type` or `invalid_field`.
    pub code: ErrorCode,
    /// The request id, if the frame had a readable one.
    pub rid: Option<RequestId>,
    /// What was wrong (safe to send back: it quotes no payload).
    pub detail: String,
}

/// Decodes a frame sent by a client.
pub fn decode_client(text: &str) -> Result<ClientFrame, DecodeError> {
    decode(text, CLIENT_FRAME_TYPES)
}

/// Decodes a frame sent by a server.
pub fn decode_server(text: &str) -> Result<ServerFrame, DecodeError> {
    decode(text, SERVER_FRAME_TYPES)
}

/// Encodes a client frame as JSON text.
pub fn encode_client(frame: &ClientFrame) -> String {
    encode(frame)
}

/// Encodes a server frame as JSON text.
pub fn encode_server(frame: &ServerFrame) -> String {
    encode(frame)
}

fn encode<T: Serialize>(frame: &T) -> String {
    // Frames hold only strings, numbers, maps with string keys and sequences:
    // serialization cannot fail.
    serde_json::to_string(frame).expect("frames always serialize")
}

fn decode<T: DeserializeOwned>(text: &str, known_types: &[&str]) -> Result<T, DecodeError> {
    match serde_json::from_str::<T>(text) {
        Ok(frame) => Ok(frame),
        Err(first) => Err(classify(text, known_types, &first)),
    }
}

/// Works out why `text` failed to decode. Cold path.
fn classify(text: &str, known_types: &[&str], err: &serde_json::Error) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            return DecodeError { code: ErrorCode::BadFrame, rid: None, detail: "not valid JSON".into() }
        }
    };
    let Some(obj) = value.as_object() else {
        return DecodeError {
            code: ErrorCode::BadFrame,
            rid: None,
            detail: "a frame must be a JSON object".into(),
        };
    };
    let rid = obj.get("rid").and_then(|r| r.as_u64());
    match obj.get("type").and_then(|t| t.as_str()) {
        None => {
            DecodeError { code: ErrorCode::UnknownType, rid, detail: "missing string field \"type\"".into() }
        }
        Some(t) if !known_types.contains(&t) => DecodeError {
            code: ErrorCode::UnknownType,
            rid,
            detail: format!("unknown frame type {:?}", truncate(t, 32)),
        },
        Some(_) => DecodeError { code: ErrorCode::InvalidField, rid, detail: err.to_string() },
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConversationId, GroupId};

    #[test]
    fn decodes_a_send() {
        let f = decode_client(r#"{"type":"send","rid":1,"conv":"g:2","cmid":"c1","body":"hi"}"#).unwrap();
        match f {
            ClientFrame::Send { rid, conv, cmid, body, mentions, .. } => {
                assert!(mentions.is_empty(), "absent mentions are none");
                assert_eq!(rid, 1);
                assert_eq!(conv, ConversationId::Group(GroupId(2)));
                assert_eq!(cmid.as_str(), "c1");
                assert_eq!(body, "hi");
            }
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn classifies_failures() {
        let cases = [
            ("nope", ErrorCode::BadFrame, None),
            ("[1,2]", ErrorCode::BadFrame, None),
            (r#"{"rid":4}"#, ErrorCode::UnknownType, Some(4)),
            (r#"{"type":"shout","rid":5}"#, ErrorCode::UnknownType, Some(5)),
            (
                r#"{"type":"send","rid":6,"conv":"g:0","cmid":"a","body":""}"#,
                ErrorCode::InvalidField,
                Some(6),
            ),
            (r#"{"type":"send","rid":7,"conv":"g:1","body":"x"}"#, ErrorCode::InvalidField, Some(7)),
            (r#"{"type":"join","rid":8,"room":-1}"#, ErrorCode::InvalidField, Some(8)),
        ];
        for (text, code, rid) in cases {
            let e = decode_client(text).unwrap_err();
            assert_eq!((e.code, e.rid), (code, rid), "{text}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let f = decode_client(r#"{"type":"ping","rid":3,"future":true}"#).unwrap();
        assert_eq!(f, ClientFrame::Ping { rid: Some(3) });
    }

    #[test]
    fn frame_type_lists_match_the_enums() {
        // Every listed type name decodes to a frame whose type_name() is that name.
        let ping = encode_client(&ClientFrame::Ping { rid: None });
        assert!(ping.contains("\"ping\""));
        let err = ServerFrame::error(Some(1), ErrorCode::Internal, "x");
        assert!(SERVER_FRAME_TYPES.contains(&err.type_name()));
        assert_eq!(decode_server(&encode_server(&err)).unwrap(), err);
    }
}
