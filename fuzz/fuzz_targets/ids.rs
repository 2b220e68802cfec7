//! Every string parser of im-protocol's ids and names, on arbitrary text.
//!
//! Properties (each parser must also never panic):
//! * `ConversationId: FromStr`: a parsed id displays as exactly the input
//!   (one spelling per id), parses again to itself, serializes as that JSON
//!   string, and the serde path (`"…"` in JSON) accepts exactly what
//!   `FromStr` accepts; a direct chat has two distinct users, smaller first.
//! * `ClientMsgId::new`: accepts exactly 1 to `MAX_CLIENT_MSG_ID_LEN`
//!   printable ASCII characters; `as_str`, `Display` and JSON give the input
//!   back, and JSON deserialization agrees with `new`.
//! * `content::is_attachment_id`: exactly `at_` and 22 of `A-Z a-z 0-9 - _`.
//! * `content::check_kind`: exactly `text`, the built-in and event kinds,
//!   and `x-` plus 1 to 30 of `a-z 0-9 - _ .`.
//! * `ErrorCode` and `ContactState` from their JSON names: accepted only
//!   for a wire name, which `as_str` gives back.
#![no_main]

use im_protocol::content::{self, check_kind, is_attachment_id, ATTACHMENT_ID_PREFIX, MAX_KIND_LEN};
use im_protocol::events::is_event_kind;
use im_protocol::limits::MAX_CLIENT_MSG_ID_LEN;
use im_protocol::{ClientMsgId, ContactState, ConversationId, ConversationKind, ErrorCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // The same text as a JSON string, for the serde paths.
    let json = serde_json::to_string(s).expect("a str serializes");
    conversation_id(s, &json);
    client_msg_id(s, &json);
    attachment_id(s);
    kind(s);
    wire_names(&json);
});

fn conversation_id(s: &str, json: &str) {
    let parsed = s.parse::<ConversationId>();
    let via_serde = serde_json::from_str::<ConversationId>(json);
    assert_eq!(parsed.is_ok(), via_serde.is_ok(), "FromStr and Deserialize disagree on {s:?}");
    let Ok(id) = parsed else {
        let err = parsed.unwrap_err();
        // The error quotes at most 64 characters of the input.
        assert!(err.0.chars().count() <= 64 && s.starts_with(&err.0), "error quotes {:?} for {s:?}", err.0);
        return;
    };
    assert_eq!(via_serde.unwrap(), id, "Deserialize gives another id than FromStr for {s:?}");
    let shown = id.to_string();
    assert_eq!(shown, s, "a conversation id has one spelling: {s:?} displays as {shown:?}");
    assert_eq!(shown.parse::<ConversationId>().as_ref(), Ok(&id), "Display does not parse back: {shown:?}");
    assert_eq!(serde_json::to_string(&id).unwrap(), json, "serializes otherwise than its spelling");
    match (id, id.kind()) {
        (ConversationId::Direct(a, b), ConversationKind::Direct) => {
            assert!(a < b, "direct chat not canonical: {s:?}");
            assert_eq!(ConversationId::direct(b, a), id);
            assert_eq!((id.peer_of(a), id.peer_of(b)), (Some(b), Some(a)));
            assert!(a.0 > 0 && s.starts_with("d:"));
        }
        (ConversationId::Group(g), ConversationKind::Group) => assert!(g.0 > 0 && s.starts_with("g:")),
        (ConversationId::Room(r), ConversationKind::Room) => assert!(r.0 > 0 && s.starts_with("r:")),
        (id, kind) => panic!("{id:?} has kind {kind:?}"),
    }
}

fn client_msg_id(s: &str, json: &str) {
    let expected =
        (1..=MAX_CLIENT_MSG_ID_LEN).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    let made = ClientMsgId::new(s);
    let via_serde = serde_json::from_str::<ClientMsgId>(json);
    assert_eq!(made.is_ok(), expected, "ClientMsgId::new({s:?}) = {made:?}");
    assert_eq!(via_serde.is_ok(), expected, "ClientMsgId from JSON {json} = {via_serde:?}");
    if let Ok(id) = made {
        assert_eq!(id.as_str(), s);
        assert_eq!(id.to_string(), s);
        assert_eq!(serde_json::to_string(&id).unwrap(), json);
        assert_eq!(via_serde.unwrap(), id);
        assert_eq!(ClientMsgId::new(id.to_string()).as_ref(), Ok(&id));
    }
}

fn attachment_id(s: &str) {
    let expected = s.len() == ATTACHMENT_ID_PREFIX.len() + 22
        && s.as_bytes().starts_with(b"at_")
        && s.as_bytes()[3..].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    assert_eq!(is_attachment_id(s), expected, "is_attachment_id({s:?})");
}

fn kind(s: &str) {
    const BUILT_IN: &[&str] = &[content::TEXT, "location", "image", "file", "audio", "video"];
    let app_kind = s.len() <= MAX_KIND_LEN
        && s.len() > 2
        && s.starts_with("x-")
        && s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    let expected = BUILT_IN.contains(&s) || is_event_kind(s) || app_kind;
    assert_eq!(check_kind(s).is_ok(), expected, "check_kind({s:?})");
    assert_eq!(
        is_event_kind(s),
        matches!(s, "reaction" | "edit" | "recall" | "system"),
        "is_event_kind({s:?})"
    );
}

fn wire_names(json: &str) {
    if let Ok(code) = serde_json::from_str::<ErrorCode>(json) {
        assert!(ErrorCode::ALL.contains(&code));
        assert_eq!(serde_json::to_string(&code).unwrap(), json);
        assert_eq!(format!("\"{}\"", code.as_str()), json);
        assert!((400..600).contains(&code.http_status()));
    }
    if let Ok(state) = serde_json::from_str::<ContactState>(json) {
        assert_eq!(format!("\"{}\"", state.as_str()), json);
        assert_eq!(state.mirrored().mirrored(), state);
    }
}
