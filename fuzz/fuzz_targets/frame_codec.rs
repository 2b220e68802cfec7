//! Arbitrary text through the frame codec, as client and as server frame.
//!
//! Properties:
//! * decoding never panics;
//! * a frame that decodes encodes to JSON that decodes to an equal frame,
//!   and that encoding is stable (encode(decode(encode(f))) == encode(f));
//! * the encoded frame carries `"type"` = [`type_name`], one of the
//!   frame types the codec lists;
//! * no text is both a client and a server frame (the type sets are disjoint);
//! * a decode error carries a code of [`ErrorCode::ALL`], and one of the three
//!   the codec documents (`bad_frame`, `unknown_type`, `invalid_field`),
//!   consistent with the text: `unknown_type` only for an object whose
//!   `type` is missing or not a known one, `invalid_field` only for an
//!   object with a known `type`, and a `rid` only when the object has that
//!   `rid`;
//! * the typed content of a `send` or `message` (kind + content) that the
//!   content checks accept converts back to the same kind and content.
#![no_main]

use im_protocol::codec::{self, DecodeError, CLIENT_FRAME_TYPES, SERVER_FRAME_TYPES};
use im_protocol::content::Content;
use im_protocol::{ClientFrame, ErrorCode, ServerFrame};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let client = codec::decode_client(text);
    let server = codec::decode_server(text);
    assert!(!(client.is_ok() && server.is_ok()), "decodes both as a client and as a server frame: {text:?}");
    match client {
        Ok(frame) => client_round_trip(&frame),
        Err(e) => check_error(text, &e, CLIENT_FRAME_TYPES),
    }
    match server {
        Ok(frame) => server_round_trip(&frame),
        Err(e) => check_error(text, &e, SERVER_FRAME_TYPES),
    }
});

fn client_round_trip(frame: &ClientFrame) {
    let encoded = codec::encode_client(frame);
    let again = codec::decode_client(&encoded)
        .unwrap_or_else(|e| panic!("re-encoded client frame does not decode ({e}): {encoded}"));
    assert_eq!(&again, frame, "client frame changed by a round trip through {encoded}");
    assert_eq!(codec::encode_client(&again), encoded, "client frame encoding is not stable");
    check_type(&encoded, frame.type_name(), CLIENT_FRAME_TYPES);
    if let ClientFrame::Send { kind, content, .. } = frame {
        check_content(kind.as_deref().unwrap_or(im_protocol::content::TEXT), content.as_ref());
    }
}

fn server_round_trip(frame: &ServerFrame) {
    let encoded = codec::encode_server(frame);
    let again = codec::decode_server(&encoded)
        .unwrap_or_else(|e| panic!("re-encoded server frame does not decode ({e}): {encoded}"));
    assert_eq!(&again, frame, "server frame changed by a round trip through {encoded}");
    assert_eq!(codec::encode_server(&again), encoded, "server frame encoding is not stable");
    check_type(&encoded, frame.type_name(), SERVER_FRAME_TYPES);
    if let ServerFrame::Message(m) = frame {
        check_content(m.kind(), m.content.as_ref());
    }
}

/// The encoded JSON is an object whose `type` is the frame's type name.
fn check_type(encoded: &str, type_name: &str, known: &[&str]) {
    assert!(known.contains(&type_name), "type_name {type_name:?} is not among the listed frame types");
    let value: Value = serde_json::from_str(encoded).expect("an encoded frame is JSON");
    assert_eq!(
        value.get("type").and_then(Value::as_str),
        Some(type_name),
        "encoded frame's \"type\" is not its type_name: {encoded}"
    );
}

/// Accepted typed content survives `to_parts` → `from_parts`.
fn check_content(kind: &str, content: Option<&Value>) {
    let Ok(typed) = Content::from_parts(kind, content) else { return };
    let (kind2, content2) = typed.to_parts();
    let again = Content::from_parts(&kind2, content2.as_ref())
        .unwrap_or_else(|e| panic!("content of kind {kind} refused after to_parts ({e}): {content2:?}"));
    assert_eq!(again, typed, "content of kind {kind} changed by to_parts/from_parts");
}

fn check_error(text: &str, e: &DecodeError, known: &[&str]) {
    assert!(ErrorCode::ALL.contains(&e.code), "decode error with a code not in ErrorCode::ALL: {e:?}");
    assert!(
        matches!(e.code, ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::InvalidField),
        "decode error with an undocumented code: {e:?}"
    );
    assert!(!e.detail.is_empty(), "decode error without detail: {e:?}");
    // What the text is, looked at independently of the codec (serde_json
    // applies the same recursion limit, so a too-deep text fails here too).
    let value = serde_json::from_str::<Value>(text).ok();
    let obj = value.as_ref().and_then(Value::as_object);
    match e.code {
        ErrorCode::BadFrame => {
            assert!(obj.is_none(), "bad_frame for a JSON object: {e:?}");
            assert_eq!(e.rid, None, "bad_frame with a rid: {e:?}");
        }
        ErrorCode::UnknownType => {
            let obj = obj.unwrap_or_else(|| panic!("unknown_type for a text that is not an object: {e:?}"));
            let ty = obj.get("type").and_then(Value::as_str);
            assert!(ty.is_none_or(|t| !known.contains(&t)), "unknown_type for known type {ty:?}: {e:?}");
        }
        ErrorCode::InvalidField => {
            let obj = obj.unwrap_or_else(|| panic!("invalid_field for a text that is not an object: {e:?}"));
            let ty = obj.get("type").and_then(Value::as_str);
            assert!(ty.is_some_and(|t| known.contains(&t)), "invalid_field for type {ty:?}: {e:?}");
        }
        _ => unreachable!(),
    }
    if let Some(rid) = e.rid {
        let given = obj.and_then(|o| o.get("rid")).and_then(Value::as_u64);
        assert_eq!(given, Some(rid), "decode error reports a rid the frame does not have: {e:?}");
    }
}
