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

/// Deepest nesting of JSON arrays and objects a frame may have (the frame
/// object itself is level 1); a deeper frame is answered `bad_frame` with
/// the detail "JSON nested deeper than 127 levels". It is the JSON
/// parser's own recursion limit, which also applies to HTTP bodies.
pub const MAX_JSON_DEPTH: usize = 127;

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
        Err(e) if is_depth_limit(&e.to_string()) => {
            return DecodeError {
                code: ErrorCode::BadFrame,
                rid: None,
                detail: format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"),
            }
        }
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

/// Whether a JSON parser error message is the depth limit's
/// ([`MAX_JSON_DEPTH`]): "recursion limit exceeded at line L column
/// C", perhaps after a path. A path, as HTTP body extractors prefix it, holds the input's own
/// keys, so only the end of the message is trusted.
pub fn is_depth_limit(message: &str) -> bool {
    let Some((_, at)) = message.rsplit_once("recursion limit exceeded at line ") else { return false };
    let Some((line, column)) = at.split_once(" column ") else { return false };
    [line, column].iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
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

    /// A `send` frame whose custom content nests to `levels` in all (the
    /// frame object is level 1, `content` level 2), with brackets in a
    /// string that must not count.
    fn nested_send(levels: usize) -> String {
        let inner = levels - 2;
        format!(
            r#"{{"type":"send","rid":1,"conv":"g:1","cmid":"c1","body":"[[{{","kind":"x.deep","content":{{"a":{}{}}}}}"#,
            "[".repeat(inner),
            "]".repeat(inner)
        )
    }

    #[test]
    fn nesting_up_to_the_limit_decodes_and_deeper_is_named_as_such() {
        let frame = decode_client(&nested_send(MAX_JSON_DEPTH)).expect("127 levels decode");
        assert!(matches!(frame, ClientFrame::Send { .. }));
        let err = decode_client(&nested_send(MAX_JSON_DEPTH + 1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
        assert_eq!(err.detail, "JSON nested deeper than 127 levels");
        let err = decode_client(&"[".repeat(100_000)).unwrap_err();
        assert_eq!(err.detail, "JSON nested deeper than 127 levels");
        // Broken JSON that is not deep stays "not valid JSON".
        assert_eq!(decode_client(r#"{"type":"ping","x":"[[[[["#).unwrap_err().detail, "not valid JSON");
    }

    #[test]
    fn only_the_parsers_own_message_counts_as_the_depth_limit() {
        assert!(is_depth_limit("recursion limit exceeded at line 1 column 128"));
        assert!(is_depth_limit("a.b[0]: recursion limit exceeded at line 3 column 9"));
        let forged = "recursion limit exceeded at line 1 column 2: EOF while parsing at line 1 column 30";
        assert!(!is_depth_limit(forged), "a key that spells the message");
        assert!(!is_depth_limit("EOF while parsing a value at line 1 column 1"));
    }

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

    #[test]
    fn numbers_in_content_read_back_exactly_as_sent() {
        // Found by the frame_codec fuzz target: without serde_json's
        // float_roundtrip this read back one ULP off, and moved again on
        // every decode and encode.
        let text = r#"{"type":"send","rid":1,"conv":"g:1","cmid":"c1","body":"","kind":"x-a","content":{"a":1.947700395895162e-169,"lat":43.212230480109156}}"#;
        let frame = decode_client(text).unwrap();
        let ClientFrame::Send { content: Some(content), .. } = &frame else { panic!("{frame:?}") };
        assert_eq!(content["a"].as_f64(), Some(1.947700395895162e-169));
        assert_eq!(content["lat"].as_f64(), Some(43.212230480109156));
        assert_eq!(decode_client(&encode_client(&frame)).unwrap(), frame);
    }
}
