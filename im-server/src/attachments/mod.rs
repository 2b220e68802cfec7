//! Attachments: files uploaded over HTTP, referenced by messages, and
//! downloaded by members of a conversation that references them.
//!
//! [`AttachmentStore`] is the seam: it keeps the bytes, their metadata and
//! which conversations reference them. [`FsAttachments`] keeps them in a
//! directory (the data directory's `attachments/` by default). The rules —
//! who may upload what, who may download — live in
//! [`Logic`](crate::logic::Logic) (`logic/attachments.rs`); the endpoints in
//! `http/attachments.rs`. `docs/rich-messages.md` explains the design.

use std::io;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use im_protocol::{ConversationId, MessageId, UserId};
use serde::{Deserialize, Serialize};

mod fs;
#[cfg(feature = "s3")]
pub mod s3;

pub use fs::FsAttachments;
#[cfg(feature = "s3")]
pub use s3::{S3Attachments, S3Config};

/// A stream of bytes: an upload's body, or a download.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What the uploader says about a new attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttachment {
    /// The uploader.
    pub owner: UserId,
    /// The MIME type (the upload's `Content-Type`, lowercased, without parameters).
    pub mime: String,
    /// The file name, if given.
    pub name: Option<String>,
    /// Width in pixels, if the client gives it.
    pub width: Option<u32>,
    /// Height in pixels, if the client gives it.
    pub height: Option<u32>,
    /// Duration in ms, if the client gives it.
    pub duration_ms: Option<u64>,
}

/// A message that references an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The conversation: its members may download the attachment.
    pub conv: ConversationId,
    /// The message, once stored (`None` while its send is in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageId>,
}

/// A stored attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentMeta {
    /// `at_…` ([`im_protocol::content::is_attachment_id`]).
    pub id: String,
    /// The uploader.
    pub owner: UserId,
    /// The MIME type.
    pub mime: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex, computed while receiving them.
    pub sha256: String,
    /// The file name, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Width in pixels, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Duration in ms, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When the upload finished (ms since the epoch).
    pub created_at_ms: u64,
    /// The messages that reference it (none: an orphan, removed after
    /// [`ServerConfig::attachment_orphan_ttl`](crate::ServerConfig::attachment_orphan_ttl)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

impl AttachmentMeta {
    /// A new attachment `id` of `size` bytes hashing to `sha256`, created
    /// now, referenced by nothing yet.
    pub fn new(id: String, new: NewAttachment, size: u64, sha256: String) -> Self {
        AttachmentMeta {
            id,
            owner: new.owner,
            mime: new.mime,
            size,
            sha256,
            name: new.name,
            width: new.width,
            height: new.height,
            duration_ms: new.duration_ms,
            created_at_ms: crate::time::now_ms(),
            references: Vec::new(),
        }
    }
}

/// Why an attachment operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// The upload is larger than allowed; nothing was kept.
    #[error("the upload is larger than {max} bytes")]
    TooLarge {
        /// The limit, in bytes.
        max: u64,
    },
    /// No such attachment.
    #[error("no such attachment")]
    NotFound,
    /// The upload's body failed (the client went away); nothing was kept.
    #[error("the upload was cut off: {0}")]
    Body(String),
    /// The storage failed.
    #[error("attachment storage failed: {0}")]
    Storage(String),
    /// This store takes uploads another way ([`AttachmentStore::upload_mode`]).
    #[error("{0}")]
    WrongUploadMode(&'static str),
    /// A presigned upload was finished but its object does not match what
    /// was announced (missing, or of another size); nothing was kept.
    #[error("the uploaded object does not match: {0}")]
    UploadMismatch(String),
}

/// How clients send an attachment's bytes to a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadMode {
    /// In the body of `POST /api/v1/attachments`, through the server.
    Direct,
    /// To a presigned URL from `POST /api/v1/attachments/uploads`, then
    /// `POST /api/v1/attachments/{id}/complete`: the bytes never pass
    /// through the server.
    Presigned,
}

/// Where and how a client uploads the bytes of a presigned upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadTicket {
    /// The attachment id, for `complete` and for messages.
    pub id: String,
    /// The URL to send the bytes to.
    pub url: String,
    /// The HTTP method (`PUT`).
    pub method: &'static str,
    /// Headers to send exactly so (they are part of the signature).
    pub headers: std::collections::BTreeMap<String, String>,
    /// When the URL stops working (ms since the epoch).
    pub expires_at_ms: u64,
}

impl From<io::Error> for AttachmentError {
    fn from(e: io::Error) -> Self {
        AttachmentError::Storage(e.to_string())
    }
}

/// Where attachments are kept. Implementations must make an upload all or
/// nothing (a failed or oversized upload leaves no bytes and no metadata
/// behind) and keep reference updates of one attachment serialized.
#[async_trait]
pub trait AttachmentStore: Send + Sync + 'static {
    /// Receives `body` into a new attachment with a fresh unguessable id,
    /// hashing it on the way; fails with [`AttachmentError::TooLarge`] as
    /// soon as it passes `max_bytes`.
    async fn put(
        &self,
        new: NewAttachment,
        body: ByteStream,
        max_bytes: u64,
    ) -> Result<AttachmentMeta, AttachmentError>;

    /// The metadata of `id`, or `None`.
    async fn meta(&self, id: &str) -> Result<Option<AttachmentMeta>, AttachmentError>;

    /// The bytes `range` of `id` (within its size).
    async fn read(&self, id: &str, range: Range<u64>) -> Result<ByteStream, AttachmentError>;

    /// Records that a message of `reference.conv` references `id`. A
    /// reference with a message id replaces the same conversation's
    /// pending one (`message: None`).
    async fn add_reference(&self, id: &str, reference: Reference) -> Result<(), AttachmentError>;

    /// Removes `id`, bytes and metadata; `false` if it did not exist.
    async fn delete(&self, id: &str) -> Result<bool, AttachmentError>;

    /// Up to `limit` attachments created before `created_before_ms` that no
    /// message references.
    async fn orphans(&self, created_before_ms: u64, limit: usize) -> Result<Vec<String>, AttachmentError>;

    /// Origins (`scheme://host[:port]`) a browser page must be allowed to
    /// connect to for uploads and downloads: the object store's, for a
    /// presigned store (default: none, everything goes to the server).
    fn client_origins(&self) -> Vec<String> {
        Vec::new()
    }

    /// How clients upload to this store (default [`UploadMode::Direct`]).
    fn upload_mode(&self) -> UploadMode {
        UploadMode::Direct
    }

    /// Starts a presigned upload of exactly `size` bytes hashing to
    /// `sha256` (lowercase hex), valid for `valid_for`.
    async fn begin_upload(
        &self,
        _new: NewAttachment,
        _size: u64,
        _sha256: String,
        _valid_for: std::time::Duration,
    ) -> Result<UploadTicket, AttachmentError> {
        Err(AttachmentError::WrongUploadMode(
            "this server takes uploads in the body of POST /api/v1/attachments",
        ))
    }

    /// Finishes the presigned upload `id` of `owner`: checks the object
    /// against what was announced, and makes it an attachment.
    async fn finish_upload(&self, _id: &str, _owner: UserId) -> Result<AttachmentMeta, AttachmentError> {
        Err(AttachmentError::WrongUploadMode(
            "this server takes uploads in the body of POST /api/v1/attachments",
        ))
    }

    /// A URL the client downloads `meta`'s bytes from directly (with this
    /// `Content-Disposition`), or `None` when the server serves them.
    async fn download_url(
        &self,
        _meta: &AttachmentMeta,
        _disposition: &str,
        _valid_for: std::time::Duration,
    ) -> Result<Option<String>, AttachmentError> {
        Ok(None)
    }

    /// Removes `id` only if it is still an orphan created before
    /// `created_before_ms`, atomically with respect to
    /// [`add_reference`](Self::add_reference); whether it was removed.
    async fn delete_orphan(&self, id: &str, created_before_ms: u64) -> Result<bool, AttachmentError>;

    /// Removes the reference of message `reference.message` of
    /// `reference.conv` to `id` (a recalled message), and the
    /// conversation's access when no other message of it references `id`;
    /// when no reference is left at all, removes the attachment too and
    /// returns `true`. Serialized with [`add_reference`](Self::add_reference).
    async fn remove_reference(&self, id: &str, reference: Reference) -> Result<bool, AttachmentError>;
}

/// A fresh attachment id: `at_` and 128 random bits in base64url.
pub fn new_attachment_id() -> String {
    use base64::Engine as _;
    let bits: [u8; 16] = rand::random();
    format!(
        "{}{}",
        im_protocol::content::ATTACHMENT_ID_PREFIX,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bits)
    )
}

/// Whether `mime` is one media type `type/subtype` as RFC 6838 spells it
/// (restricted names of `A-Z a-z 0-9 ! # $ & ^ _ . + -`, at most 127
/// characters each, starting with a letter or digit): no parameters, no
/// lists, nothing a browser could read as another type.
pub fn valid_mime(mime: &str) -> bool {
    let name = |s: &str| {
        (1..=127).contains(&s.len())
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    matches!(mime.split_once('/'), Some((t, sub)) if name(t) && name(sub))
}

/// Whether `mime` matches one of `allowed` (`type/subtype` exactly, or
/// `type/*`), case-insensitively.
pub fn type_allowed(mime: &str, allowed: &[String]) -> bool {
    let mime = mime.to_ascii_lowercase();
    let Some((kind, _)) = mime.split_once('/') else { return false };
    allowed.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        a == mime || a.strip_suffix("/*").is_some_and(|t| t == kind) || a == "*/*"
    })
}

/// MIME types a browser may show inline without risk: raster images,
/// audio and video. Everything else is served as a download
/// (`Content-Disposition: attachment`), so an uploaded HTML or SVG file
/// never runs as a page of this origin.
pub fn safe_inline(mime: &str) -> bool {
    matches!(mime, "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/avif")
        || mime.starts_with("audio/")
        || mime.starts_with("video/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_and_distinct() {
        let (a, b) = (new_attachment_id(), new_attachment_id());
        assert!(im_protocol::content::is_attachment_id(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn types_match_exactly_or_by_wildcard() {
        let allowed = vec!["image/*".to_string(), "application/pdf".to_string()];
        assert!(type_allowed("image/png", &allowed));
        assert!(type_allowed("IMAGE/JPEG", &allowed));
        assert!(type_allowed("application/pdf", &allowed));
        assert!(!type_allowed("application/pdfx", &allowed));
        assert!(!type_allowed("text/html", &allowed));
        assert!(!type_allowed("image", &allowed));
        assert!(safe_inline("image/png") && !safe_inline("image/svg+xml") && !safe_inline("text/html"));
        for ok in [
            "image/png",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "audio/x-wav",
        ] {
            assert!(valid_mime(ok), "{ok}");
        }
        for bad in [
            "audio/x, text/html",
            "image/png; x=1",
            "image",
            "/png",
            "image/",
            "image/p ng",
            "text/html\r\nx: y",
        ] {
            assert!(!valid_mime(bad), "{bad}");
        }
        assert!(!valid_mime(&format!("image/{}", "x".repeat(200))));
    }
}
