//! The spec and the code never disagree.
//!
//! Reads `docs/protocol.md`, decodes every ```json example with `im-protocol`,
//! encodes it again and checks that nothing changed; then checks that the
//! spec covers every frame type, error code and close code, states the
//! protocol version, and that its tables agree with `im-protocol`.
//!
//! Conventions the spec follows (and this test relies on):
//! * a block opened by a line that is exactly ```` ```json ```` holds exactly
//!   one complete frame; anything else goes in ```` ```text ```` or
//!   ```` ```jsonc ```` blocks;
//! * the error-code table has rows `` | `code` | <http status> | … ``;
//! * the close-code table has rows `` | `code` | `name` | <reaction> | … ``
//!   where the reaction starts with `reconnect (same node)`,
//!   `reconnect via dispatcher` or `stop`;
//! * the limits table has rows `` | `limit` | <default> … | … ``.

use im_protocol::close::CloseCode;
use im_protocol::codec::{self, CLIENT_FRAME_TYPES, SERVER_FRAME_TYPES};
use im_protocol::{CloseReaction, ErrorCode, ServerFrame, WireLimits, PROTOCOL_VERSION};
use serde_json::Value;

/// `protocol.md` in this folder links to `docs/protocol.md`, so the packaged
/// crate carries the spec and this test also runs outside the workspace.
const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/protocol.md");

/// Fewest ```json examples the spec must hold (one per frame type, and more).
const MIN_EXAMPLES: usize = 18;

fn spec() -> String {
    std::fs::read_to_string(SPEC_PATH).unwrap_or_else(|e| panic!("cannot read {SPEC_PATH}: {e}"))
}

/// One ```json block: the line its fence opens on (1-based) and its text.
struct Example {
    line: usize,
    text: String,
}

fn json_blocks(doc: &str) -> Vec<Example> {
    let mut blocks = Vec::new();
    let mut open: Option<Example> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim();
        match open.as_mut() {
            None if fence == "```json" => open = Some(Example { line: i + 1, text: String::new() }),
            None => {}
            Some(_) if fence == "```" => blocks.push(open.take().unwrap()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
    }
    if let Some(block) = open {
        panic!("```json block opened at line {} is never closed", block.line);
    }
    blocks
}

/// The cells of the first table row whose first cell is `` `key` ``.
fn table_row<'a>(doc: &'a str, key: &str) -> Option<Vec<&'a str>> {
    let first = format!("`{key}`");
    doc.lines().map(str::trim).filter(|l| l.starts_with('|')).find_map(|l| {
        let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
        (cells.first() == Some(&first.as_str())).then_some(cells)
    })
}

#[test]
fn every_json_example_round_trips_through_im_protocol() {
    let doc = spec();
    let blocks = json_blocks(&doc);
    assert!(
        blocks.len() >= MIN_EXAMPLES,
        "docs/protocol.md has {} ```json examples, expected at least {MIN_EXAMPLES}",
        blocks.len()
    );
    for ty in CLIENT_FRAME_TYPES {
        assert!(!SERVER_FRAME_TYPES.contains(ty), "frame type {ty:?} is both a client and a server type");
    }

    // The frame types the version table lists as added in version 2.
    let v2: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("| client frame `") || l.starts_with("| server frame `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect();
    assert!(v2.len() >= 2, "docs/protocol.md section 2 lists the version-2 frames");
    let since = |ty: &str| if v2.iter().any(|t| t == ty) { 2 } else { 1 };

    let mut seen: Vec<String> = Vec::new();
    for Example { line, text } in &blocks {
        let original: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("line {line}: the ```json block is not one JSON value: {e}"));
        let obj = original.as_object().unwrap_or_else(|| panic!("line {line}: the example is not an object"));
        let ty = obj
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("line {line}: the example has no string \"type\""));

        let encoded = if CLIENT_FRAME_TYPES.contains(&ty) {
            let frame =
                codec::decode_client(text).unwrap_or_else(|e| panic!("line {line}: client frame: {e}"));
            assert_eq!(frame.type_name(), ty, "line {line}");
            assert_eq!(frame.since_version(), since(ty), "line {line}: {ty} is of another version");
            codec::encode_client(&frame)
        } else if SERVER_FRAME_TYPES.contains(&ty) {
            let frame =
                codec::decode_server(text).unwrap_or_else(|e| panic!("line {line}: server frame: {e}"));
            assert_eq!(frame.type_name(), ty, "line {line}");
            assert_eq!(frame.since_version(), since(ty), "line {line}: {ty} is of another version");
            if let ServerFrame::Hello { protocol, .. } = &frame {
                assert_eq!(*protocol, PROTOCOL_VERSION, "line {line}: hello announces another version");
            }
            codec::encode_server(&frame)
        } else {
            panic!("line {line}: {ty:?} is neither a client nor a server frame type");
        };

        let reencoded: Value = serde_json::from_str(&encoded).unwrap();
        assert_eq!(
            reencoded, original,
            "line {line}: the example changes when decoded and encoded again (re-encoded: {encoded})"
        );
        seen.push(ty.to_owned());
    }

    for ty in CLIENT_FRAME_TYPES.iter().chain(SERVER_FRAME_TYPES) {
        assert!(seen.iter().any(|s| s == ty), "docs/protocol.md has no ```json example of {ty:?}");
    }
}

#[test]
fn the_hello_example_shows_the_default_limits() {
    let doc = spec();
    let defaults = serde_json::to_value(WireLimits::default()).unwrap();
    let hellos: Vec<Value> = json_blocks(&doc)
        .iter()
        .map(|b| serde_json::from_str::<Value>(&b.text).unwrap())
        .filter(|v| v["type"] == "hello")
        .collect();
    assert!(!hellos.is_empty(), "no hello example");
    assert!(hellos.iter().any(|h| h["limits"] == defaults), "no hello example shows WireLimits::default()");
}

#[test]
fn the_protocol_version_is_stated() {
    let doc = spec();
    let stated = format!("im_protocol::PROTOCOL_VERSION = {PROTOCOL_VERSION}");
    assert!(doc.contains(&stated), "docs/protocol.md does not state `{stated}`");
    let heading = format!("protocol version **{PROTOCOL_VERSION}**");
    assert!(doc.contains(&heading), "docs/protocol.md does not say it describes {heading}");
}

#[test]
fn every_error_code_is_documented_with_its_http_status() {
    let doc = spec();
    for code in ErrorCode::ALL {
        let name = code.as_str();
        assert!(doc.contains(&format!("`{name}`")), "error code `{name}` is not mentioned");
        let row = table_row(&doc, name).unwrap_or_else(|| panic!("error code `{name}` has no table row"));
        assert_eq!(
            row.get(1).copied(),
            Some(code.http_status().to_string().as_str()),
            "error code `{name}`: HTTP status in the table differs from ErrorCode::http_status()"
        );
    }
}

#[test]
fn every_close_code_is_documented_with_its_reaction() {
    let doc = spec();
    for code in CloseCode::NAMED {
        let value = code.0.to_string();
        assert!(doc.contains(&value), "close code {value} is not mentioned");
        let row = table_row(&doc, &value).unwrap_or_else(|| panic!("close code {value} has no table row"));
        assert_eq!(
            row.get(1).copied(),
            Some(format!("`{}`", code.name()).as_str()),
            "close code {value}: name"
        );
        let expected = match code.reaction() {
            CloseReaction::Reconnect => "reconnect (same node)",
            CloseReaction::ReconnectViaDispatcher => "reconnect via dispatcher",
            CloseReaction::Stop => "stop",
        };
        let reaction = row.get(2).copied().unwrap_or_default();
        assert!(
            reaction.starts_with(expected),
            "close code {value}: the table says {reaction:?}, CloseCode::reaction() says {expected:?}"
        );
    }
    for range in ["3000–3499", "3500–3999", "4000–4999"] {
        assert!(doc.contains(&format!("| {range} |")), "the close-code range {range} has no table row");
    }
}

#[test]
fn the_limits_table_shows_the_defaults() {
    let doc = spec();
    let defaults = serde_json::to_value(WireLimits::default()).unwrap();
    let defaults = defaults.as_object().unwrap();
    assert!(!defaults.is_empty());
    for (name, value) in defaults {
        let row = table_row(&doc, name).unwrap_or_else(|| panic!("limit `{name}` has no table row"));
        let cell = row.get(1).copied().unwrap_or_default();
        let shown = cell.split_whitespace().next().unwrap_or_default();
        assert_eq!(shown, value.to_string(), "limit `{name}`: the table's default differs from WireLimits");
    }
}

/// The rows of `doc`'s section starting at `heading` (up to the next `## `)
/// whose first cell is a code in backticks: the code.
fn documented_codes<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    let start = doc.find(heading).unwrap_or_else(|| panic!("no section {heading:?}"));
    let rest = &doc[start + heading.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    section.lines().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split('`').next()).collect()
}

#[test]
fn every_documented_code_exists_in_im_protocol() {
    let doc = spec();
    let errors = documented_codes(&doc, "## 10. Error codes");
    assert!(errors.len() >= ErrorCode::ALL.len(), "the error table was read: {errors:?}");
    for name in errors {
        assert!(
            ErrorCode::ALL.iter().any(|c| c.as_str() == name),
            "docs/protocol.md §10 documents `{name}`, which im_protocol::ErrorCode does not have"
        );
    }
    let closes = documented_codes(&doc, "## 11. Close codes");
    assert!(closes.len() >= CloseCode::NAMED.len(), "the close-code table was read: {closes:?}");
    for value in closes {
        assert!(
            CloseCode::NAMED.iter().any(|c| c.0.to_string() == value),
            "docs/protocol.md §11 documents close code {value}, which im_protocol::CloseCode does not name"
        );
    }
}
