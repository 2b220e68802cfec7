//! Attachment rules: what may be uploaded, who may download, and how a
//! message that names an attachment is checked and completed.

use im_protocol::content::MAX_NAME_LEN;
use im_protocol::{ConversationId, ErrorCode, MessageId, UserId};
use serde_json::Value;

use super::Logic;
use crate::attachments::{
    type_allowed, AttachmentError, AttachmentMeta, ByteStream, NewAttachment, Reference, UploadTicket,
};
use crate::error::{Error, Result};

/// Conversations of an attachment checked for the caller's membership
/// before it counts as not visible (an attachment forwarded into more
/// conversations than this is visible through the first ones).
const MAX_REFERENCES_CHECKED: usize = 32;
/// Orphans removed per sweep.
const SWEEP_BATCH: usize = 1000;
/// How long a presigned upload URL works.
pub const UPLOAD_URL_VALID_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// How long a presigned download URL works (a link shared outside keeps
/// working at most this long).
pub const DOWNLOAD_URL_VALID_FOR: std::time::Duration = std::time::Duration::from_secs(5 * 60);

impl Logic {
    /// Receives an upload from `user`: checks its type against
    /// [`ServerConfig::attachment_types`](crate::ServerConfig::attachment_types),
    /// its name, and its size (`declared_len`, the `Content-Length`, is
    /// refused at once when too large; the bytes are counted either way).
    /// Nothing is kept when it is refused.
    pub async fn upload(
        &self,
        new: NewAttachment,
        declared_len: Option<u64>,
        body: ByteStream,
    ) -> Result<AttachmentMeta> {
        self.check_upload(&new, declared_len)?;
        Ok(self.svc.attachments.put(new, body, self.cfg.max_attachment_bytes).await?)
    }

    /// Starts a presigned upload of `size` bytes hashing to `sha256` (on a
    /// store whose clients upload directly, e.g. S3): the same checks as
    /// [`upload`](Self::upload), then a URL to send the bytes to.
    pub async fn begin_upload(&self, new: NewAttachment, size: u64, sha256: String) -> Result<UploadTicket> {
        self.check_upload(&new, Some(size))?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::new(ErrorCode::InvalidField, "sha256 must be 64 lowercase hex digits"));
        }
        Ok(self.svc.attachments.begin_upload(new, size, sha256, UPLOAD_URL_VALID_FOR).await?)
    }

    /// Finishes `user`'s presigned upload `id`: the object must be there
    /// with the announced size, else nothing of it is kept.
    pub async fn finish_upload(&self, user: UserId, id: &str) -> Result<AttachmentMeta> {
        Ok(self.svc.attachments.finish_upload(id, user).await?)
    }

    /// Type, name and declared size of an upload.
    fn check_upload(&self, new: &NewAttachment, declared_len: Option<u64>) -> Result<()> {
        if !crate::attachments::valid_mime(&new.mime) {
            return Err(Error::new(
                ErrorCode::UnsupportedMediaType,
                "the type must be one media type/subtype, without parameters",
            ));
        }
        if !type_allowed(&new.mime, &self.cfg.attachment_types) {
            return Err(Error::new(
                ErrorCode::UnsupportedMediaType,
                format!("uploads of type {} are not allowed here", new.mime),
            ));
        }
        if let Some(name) = &new.name {
            if name.is_empty()
                || name.len() > MAX_NAME_LEN
                || name.chars().any(|c| c.is_control() || c == '/' || c == '\\')
            {
                return Err(Error::new(
                    ErrorCode::InvalidField,
                    format!("name must be 1 to {MAX_NAME_LEN} bytes, without control characters or slashes"),
                ));
            }
        }
        let max = self.cfg.max_attachment_bytes;
        if declared_len.is_some_and(|n| n > max) {
            return Err(AttachmentError::TooLarge { max }.into());
        }
        Ok(())
    }

    /// The attachment `id` if `user` may see it: they uploaded it, or they
    /// are in a conversation with a message that references it. Anything
    /// else — also an attachment that exists — is `no_such_attachment`, so
    /// an id reveals nothing to someone who may not have it.
    pub async fn attachment(&self, user: UserId, id: &str) -> Result<AttachmentMeta> {
        let not_found = || Error::new(ErrorCode::NoSuchAttachment, "no such attachment");
        let meta = self.svc.attachments.meta(id).await?.ok_or_else(not_found)?;
        if meta.owner == user {
            return Ok(meta);
        }
        let convs: std::collections::BTreeSet<ConversationId> =
            meta.references.iter().map(|r| r.conv).collect();
        for conv in convs.into_iter().take(MAX_REFERENCES_CHECKED) {
            if self.check_access(user, conv).await.is_ok() {
                return Ok(meta);
            }
        }
        Err(not_found())
    }

    /// For a media message naming an attachment: checks that the sender may
    /// use it and that it fits the kind, and fills in its `mime`, `size` and
    /// `sha256` (and `name` and dimensions the message leaves out) from the
    /// upload. Returns the attachment id to reference, or `None` for any
    /// other message.
    pub(crate) async fn complete_media(
        &self,
        from: UserId,
        kind: Option<&str>,
        content: Option<&mut Value>,
    ) -> Result<Option<String>> {
        let (Some(kind), Some(Value::Object(obj))) = (kind, content) else { return Ok(None) };
        if !matches!(kind, "image" | "file" | "audio" | "video") {
            return Ok(None);
        }
        let Some(id) = obj.get("attachment").and_then(Value::as_str).map(str::to_owned) else {
            return Ok(None);
        };
        let meta = self.attachment(from, &id).await.map_err(|e| match e.code {
            ErrorCode::NoSuchAttachment => Error::new(
                ErrorCode::InvalidField,
                format!("attachment {id}: no such attachment visible to the sender"),
            ),
            _ => e,
        })?;
        let expected = match kind {
            "image" => Some("image/"),
            "audio" => Some("audio/"),
            "video" => Some("video/"),
            _ => None,
        };
        if let Some(prefix) = expected {
            if !meta.mime.starts_with(prefix) {
                return Err(Error::new(
                    ErrorCode::InvalidField,
                    format!("attachment {id} is {}, not {prefix}… as kind {kind} needs", meta.mime),
                ));
            }
        }
        obj.insert("mime".into(), meta.mime.clone().into());
        obj.insert("size".into(), meta.size.into());
        obj.insert("sha256".into(), meta.sha256.clone().into());
        let mut fill = |field: &str, value: Option<Value>| {
            if let Some(v) = value {
                obj.entry(field.to_owned()).or_insert(v);
            }
        };
        fill("name", meta.name.clone().map(Value::from));
        fill("width", meta.width.map(Value::from));
        fill("height", meta.height.map(Value::from));
        fill("duration_ms", meta.duration_ms.map(Value::from));
        Ok(Some(id))
    }

    /// Records that a message of `conv` (`message`, once stored) references
    /// attachment `id`.
    pub(crate) async fn reference_attachment(
        &self,
        id: &str,
        conv: ConversationId,
        message: Option<MessageId>,
    ) -> Result<()> {
        Ok(self.svc.attachments.add_reference(id, Reference { conv, message }).await?)
    }

    /// Lets go of message `message` of `conv`'s use of attachment `id`
    /// (the message was recalled); removes the attachment when no other
    /// message references it. Returns whether it was removed.
    pub(crate) async fn release_attachment(
        &self,
        id: &str,
        conv: ConversationId,
        message: MessageId,
    ) -> Result<bool> {
        Ok(self.svc.attachments.remove_reference(id, Reference { conv, message: Some(message) }).await?)
    }

    /// Removes uploads no message referenced within
    /// [`ServerConfig::attachment_orphan_ttl`](crate::ServerConfig::attachment_orphan_ttl);
    /// returns how many.
    pub async fn sweep_orphan_attachments(&self) -> Result<usize> {
        let ttl = u64::try_from(self.cfg.attachment_orphan_ttl.as_millis()).unwrap_or(u64::MAX);
        let cutoff = crate::time::now_ms().saturating_sub(ttl);
        let store = &self.svc.attachments;
        let mut removed = 0;
        for id in store.orphans(cutoff, SWEEP_BATCH).await? {
            // Referenced meanwhile? Then it stays.
            if store.delete_orphan(&id, cutoff).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
