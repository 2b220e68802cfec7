//! The error every request path returns: a wire [`ErrorCode`] plus detail.
//!
//! The WebSocket gateway turns it into an `error` frame, the HTTP API into a
//! JSON body with the code's HTTP status.

use im_protocol::ErrorCode;

use crate::attachments::AttachmentError;
use crate::store::StoreError;

/// A request failed with a code the client can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable detail; never contains secrets or message bodies.
    pub message: String,
}

/// Result of a request.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code and detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Error::new(ErrorCode::Conflict, "already exists"),
            StoreError::NotFound => Error::new(ErrorCode::InvalidField, "not found"),
            StoreError::GroupFull => Error::new(ErrorCode::GroupFull, "the group has reached its member cap"),
            StoreError::Banned => Error::new(ErrorCode::Banned, "banned from this conversation"),
            StoreError::Backend(detail) => {
                tracing::error!(%detail, "storage back-end failed");
                Error::new(ErrorCode::Unavailable, "storage is unavailable, retry later")
            }
        }
    }
}

impl From<AttachmentError> for Error {
    fn from(e: AttachmentError) -> Self {
        match e {
            AttachmentError::TooLarge { max } => {
                Error::new(ErrorCode::BodyTooLarge, format!("the upload is larger than {max} bytes"))
            }
            AttachmentError::NotFound => Error::new(ErrorCode::NoSuchAttachment, "no such attachment"),
            AttachmentError::Body(why) => {
                Error::new(ErrorCode::InvalidField, format!("upload cut off: {why}"))
            }
            AttachmentError::WrongUploadMode(why) => Error::new(ErrorCode::Conflict, why),
            AttachmentError::UploadMismatch(why) => {
                Error::new(ErrorCode::InvalidField, format!("the uploaded object does not match: {why}"))
            }
            AttachmentError::Storage(why) => {
                tracing::error!(%why, "attachment storage failed");
                Error::new(ErrorCode::Internal, "attachment storage failed")
            }
        }
    }
}
