//! Structured message content: a message's `kind` and its JSON `content`.
//!
//! A plain text message has kind `text` and no content: its `body` is the
//! text, as it always was. Any other kind carries a JSON object whose
//! fields are documented per built-in kind ([`Location`], [`Media`] for
//! `image`, `file`, `audio` and `video`), or, for an app-defined kind
//! (a name starting with `x-`), any JSON object the app chooses. The
//! `body` of such a message is a short fallback text (a caption, or what a
//! client that does not know the kind should show), so older clients keep
//! working.
//!
//! ```
//! use im_protocol::content::{Content, Location};
//!
//! let pin = Content::Location(Location { lat: 52.52, lon: 13.405, name: Some("Berlin".into()) });
//! let (kind, value) = pin.to_parts();
//! assert_eq!(kind, "location");
//! assert_eq!(Content::from_parts(&kind, value.as_ref()).unwrap(), pin);
//! assert!(Content::from_parts("location", Some(&serde_json::json!({"lat": 91, "lon": 0}))).is_err());
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kind of a plain text message (the default).
pub const TEXT: &str = "text";

/// Longest kind name, in bytes.
pub const MAX_KIND_LEN: usize = 32;

/// Longest URL in media content, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Longest name (file name, place name, MIME type) in built-in content, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Latitude in degrees, -90 to 90.
    pub lat: f64,
    /// Longitude in degrees, -180 to 180.
    pub lon: f64,
    /// A name for the place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Prefix of attachment ids (`at_` and 22 base64url characters).
pub const ATTACHMENT_ID_PREFIX: &str = "at_";

/// Whether `id` is shaped like an attachment id: `at_` and 22 characters
/// of `A-Z a-z 0-9 - _` (128 random bits).
pub fn is_attachment_id(id: &str) -> bool {
    id.len() == ATTACHMENT_ID_PREFIX.len() + 22
        && id.starts_with(ATTACHMENT_ID_PREFIX)
        && id[ATTACHMENT_ID_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An image, file, audio clip or video: an uploaded attachment (see
/// `docs/rich-messages.md`) or bytes somewhere else, by URL. Exactly one of
/// `attachment` and `url` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// An attachment uploaded to the server (`POST /api/v1/attachments`).
    /// The server fills in `mime`, `size` and `sha256` from the upload, so
    /// receivers can trust them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<String>,
    /// Where the bytes are (`https://` or `http://`), for media not uploaded here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// SHA-256 of the bytes, lowercase hex (set by the server for attachments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The MIME type, e.g. `image/png`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The file name (required for `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Width in pixels (images, videos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels (images, videos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Duration in ms (audio, videos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// A message's typed content.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Content {
    /// Plain text: the message's `body` (kind `text`, no content object).
    Text,
    /// `location`.
    Location(Location),
    /// `image`.
    Image(Media),
    /// `file` (with a `name`).
    File(Media),
    /// `audio`.
    Audio(Media),
    /// `video`.
    Video(Media),
    /// An event (`reaction`, `edit`, `recall`, `system`; see [`crate::events`]).
    Event(crate::events::Change),
    /// An app-defined kind (`x-…`) with its JSON object.
    Custom {
        /// The kind, starting with `x-`.
        kind: String,
        /// The content object.
        content: Value,
    },
}

/// Why a kind and content were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ContentError(pub String);

fn err(s: impl Into<String>) -> ContentError {
    ContentError(s.into())
}

impl Content {
    /// The kind and the content object to put on the wire (`None` for text).
    pub fn to_parts(&self) -> (String, Option<Value>) {
        match self {
            Content::Text => (TEXT.into(), None),
            Content::Location(l) => ("location".into(), Some(json(l))),
            Content::Image(m) => ("image".into(), Some(json(m))),
            Content::File(m) => ("file".into(), Some(json(m))),
            Content::Audio(m) => ("audio".into(), Some(json(m))),
            Content::Video(m) => ("video".into(), Some(json(m))),
            Content::Event(change) => event_parts(change),
            Content::Custom { kind, content } => (kind.clone(), Some(content.clone())),
        }
    }

    /// Reads and checks a kind and content object: a known shape for a
    /// built-in kind, an object for an `x-` kind, none for `text`.
    pub fn from_parts(kind: &str, content: Option<&Value>) -> Result<Content, ContentError> {
        check_kind(kind)?;
        if kind == TEXT {
            return match content {
                None => Ok(Content::Text),
                Some(_) => Err(err("a text message has no content object (the text is the body)")),
            };
        }
        if let Some(event) = crate::events::parse(kind, content) {
            return event.map(Content::Event);
        }
        let content = content.ok_or_else(|| err(format!("kind {kind} needs a content object")))?;
        if !content.is_object() {
            return Err(err("content must be a JSON object"));
        }
        let shape = |e: serde_json::Error| err(format!("content of kind {kind}: {e}"));
        match kind {
            "location" => {
                let l: Location = serde_json::from_value(content.clone()).map_err(shape)?;
                if !(-90.0..=90.0).contains(&l.lat) || !(-180.0..=180.0).contains(&l.lon) {
                    return Err(err("lat must be within -90..90 and lon within -180..180"));
                }
                check_name("name", l.name.as_deref())?;
                Ok(Content::Location(l))
            }
            "image" | "file" | "audio" | "video" => {
                let m: Media = serde_json::from_value(content.clone()).map_err(shape)?;
                check_media(kind, &m)?;
                Ok(match kind {
                    "image" => Content::Image(m),
                    "file" => Content::File(m),
                    "audio" => Content::Audio(m),
                    _ => Content::Video(m),
                })
            }
            custom => Ok(Content::Custom { kind: custom.to_owned(), content: content.clone() }),
        }
    }
}

/// A kind is `text`, a built-in name, or `x-` and 1 to 30 more of
/// `a-z 0-9 - _ .`.
pub fn check_kind(kind: &str) -> Result<(), ContentError> {
    const BUILT_IN: &[&str] = &[TEXT, "location", "image", "file", "audio", "video"];
    if BUILT_IN.contains(&kind) || crate::events::is_event_kind(kind) {
        return Ok(());
    }
    let valid = kind.len() <= MAX_KIND_LEN
        && kind.len() > 2
        && kind.starts_with("x-")
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(err(format!(
            "unknown kind {kind:?}: use text, location, image, file, audio, video, an event kind (reaction, edit, recall), or an app kind x-… (a-z 0-9 - _ ., at most {MAX_KIND_LEN} bytes)"
        )))
    }
}

fn check_name(field: &str, name: Option<&str>) -> Result<(), ContentError> {
    match name {
        Some(n) if n.is_empty() || n.len() > MAX_NAME_LEN || n.contains('\0') => {
            Err(err(format!("{field} must be 1 to {MAX_NAME_LEN} bytes without NUL")))
        }
        _ => Ok(()),
    }
}

fn check_media(kind: &str, m: &Media) -> Result<(), ContentError> {
    match (&m.attachment, &m.url) {
        (Some(id), None) if is_attachment_id(id) => {}
        (Some(id), None) => return Err(err(format!("attachment {id:?} is not an attachment id (at_…)"))),
        (None, Some(url)) => {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok
                || url.len() > MAX_URL_LEN
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(err(format!("url must be an http(s) URL of at most {MAX_URL_LEN} bytes")));
            }
        }
        _ => return Err(err("media needs exactly one of attachment and url")),
    }
    if let Some(h) = &m.sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(err("sha256 must be 64 lowercase hex digits"));
        }
    }
    check_name("name", m.name.as_deref())?;
    check_name("mime", m.mime.as_deref())?;
    if kind == "file" && m.name.is_none() && m.attachment.is_none() {
        // An uploaded file's name comes from its upload.
        return Err(err("a file by URL needs a name"));
    }
    if kind == "image" && m.mime.as_deref().is_some_and(|t| !t.starts_with("image/")) {
        return Err(err("an image's mime must be image/…"));
    }
    Ok(())
}

/// An event's kind and content object.
fn event_parts(change: &crate::events::Change) -> (String, Option<Value>) {
    use crate::events::{Change, EDIT, REACTION, RECALL, SYSTEM};
    match change {
        Change::Reaction(r) => (REACTION.into(), Some(json(r))),
        Change::Edit(e) if e.content.is_none() => (EDIT.into(), None),
        Change::Edit(e) => (EDIT.into(), Some(json(e))),
        Change::Recall => (RECALL.into(), None),
        Change::System(n) => (SYSTEM.into(), Some(json(n))),
    }
}

/// A built-in content struct as a `Value` (these always serialize).
fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn built_in_kinds_round_trip_and_bad_shapes_are_refused() {
        let image = Media {
            url: Some("https://cdn.example/a.png".into()),
            mime: Some("image/png".into()),
            size: Some(1234),
            width: Some(640),
            height: Some(480),
            ..Media::default()
        };
        let uploaded = Media {
            attachment: Some("at_AAAAAAAAAAAAAAAAAAAAAA".into()),
            sha256: Some("ab".repeat(32)),
            name: Some("report.pdf".into()),
            ..Media::default()
        };
        for c in [Content::Text, Content::Image(image.clone()), Content::File(uploaded)] {
            let (kind, value) = c.to_parts();
            assert_eq!(Content::from_parts(&kind, value.as_ref()).unwrap(), c);
        }
        let custom = json!({"amount": 12, "currency": "EUR"});
        assert_eq!(
            Content::from_parts("x-payment", Some(&custom)).unwrap(),
            Content::Custom { kind: "x-payment".into(), content: custom.clone() }
        );
        let bad: &[(&str, Option<Value>)] = &[
            ("text", Some(json!({}))),
            ("image", None),
            ("image", Some(json!([1]))),
            ("image", Some(json!({"url": "ftp://x"}))),
            ("image", Some(json!({"url": "https://x", "mime": "text/plain"}))),
            ("image", Some(json!({"url": "https://x", "colour": "red"}))),
            ("image", Some(json!({}))),
            ("image", Some(json!({"url": "https://x", "attachment": "at_AAAAAAAAAAAAAAAAAAAAAA"}))),
            ("image", Some(json!({"attachment": "at_short"}))),
            ("image", Some(json!({"attachment": "../../etc/passwd"}))),
            ("image", Some(json!({"url": "https://x", "sha256": "ABC"}))),
            ("file", Some(json!({"url": "https://x"}))),
            ("location", Some(json!({"lat": 10, "lon": 200}))),
            ("location", Some(json!({"lat": "north", "lon": 0}))),
            ("sticker", Some(json!({}))),
            ("x-", Some(json!({}))),
            ("X-Big", Some(json!({}))),
            ("x-payment", Some(json!("not an object"))),
        ];
        for (kind, value) in bad {
            assert!(Content::from_parts(kind, value.as_ref()).is_err(), "{kind} {value:?} accepted");
        }
    }
}
