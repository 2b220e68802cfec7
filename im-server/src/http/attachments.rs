//! Attachments over HTTP: upload (streamed to the store, never held whole
//! in memory), metadata, and download with range requests. Who may do
//! what is [`Logic::upload`](crate::logic::Logic::upload) and
//! [`Logic::attachment`](crate::logic::Logic::attachment).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use im_protocol::{ErrorCode, UserId};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::attachments::{safe_inline, AttachmentMeta, NewAttachment, UploadMode, UploadTicket};
use crate::logic::attachments::DOWNLOAD_URL_VALID_FOR;
use crate::state::AppState;

/// `POST /attachments` query: what the client knows about the file.
#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    duration_ms: Option<u64>,
}

/// An attachment as the API shows it (its references stay inside).
#[derive(Serialize)]
pub(crate) struct AttachmentInfo {
    id: String,
    owner: UserId,
    mime: String,
    size: u64,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    created_at_ms: u64,
}

impl From<AttachmentMeta> for AttachmentInfo {
    fn from(m: AttachmentMeta) -> Self {
        AttachmentInfo {
            id: m.id,
            owner: m.owner,
            mime: m.mime,
            size: m.size,
            sha256: m.sha256,
            name: m.name,
            width: m.width,
            height: m.height,
            duration_ms: m.duration_ms,
            created_at_ms: m.created_at_ms,
        }
    }
}

/// `GET /attachments/config`: how this server takes uploads.
#[derive(Serialize)]
pub(crate) struct UploadConfig {
    upload: UploadMode,
    max_bytes: u64,
    types: Vec<String>,
}

/// `GET /attachments/config` → `{upload, max_bytes, types}`.
pub(crate) async fn config(State(app): State<AppState>, Authed(_): Authed) -> Json<UploadConfig> {
    let cfg = app.config();
    Json(UploadConfig {
        upload: app.logic().services().attachments.upload_mode(),
        max_bytes: cfg.max_attachment_bytes,
        types: cfg.attachment_types.clone(),
    })
}

/// `POST /attachments/uploads` body: the file to be uploaded.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BeginUpload {
    mime: String,
    size: u64,
    sha256: String,
    name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    duration_ms: Option<u64>,
}

/// `POST /attachments/uploads` → 201 `{id, url, method, headers, expires_at_ms}`.
pub(crate) async fn begin(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiJson(b): ApiJson<BeginUpload>,
) -> ApiResult<(StatusCode, Json<UploadTicket>)> {
    let new = NewAttachment {
        owner: s.user,
        mime: b.mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase(),
        name: b.name,
        width: b.width,
        height: b.height,
        duration_ms: b.duration_ms,
    };
    let ticket = app.logic().begin_upload(new, b.size, b.sha256).await?;
    Ok((StatusCode::CREATED, Json(ticket)))
}

/// `POST /attachments/{id}/complete` → 201 with the attachment.
pub(crate) async fn complete(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<AttachmentInfo>)> {
    let meta = app.logic().finish_upload(s.user, &id).await?;
    Ok((StatusCode::CREATED, Json(meta.into())))
}

/// `POST /attachments?name=&width=&height=&duration_ms=` with the file as
/// the body and its type as `Content-Type` → 201 with the attachment.
pub(crate) async fn upload(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<AttachmentInfo>)> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::new(ErrorCode::UnsupportedMediaType, "send the file's type as Content-Type")
        })?;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let new = NewAttachment {
        owner: s.user,
        mime,
        name: q.name,
        width: q.width,
        height: q.height,
        duration_ms: q.duration_ms,
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let meta = app.logic().upload(new, declared, Box::pin(stream)).await?;
    Ok((StatusCode::CREATED, Json(meta.into())))
}

/// `GET /attachments/{id}/info` → the attachment's metadata.
pub(crate) async fn info(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AttachmentInfo>> {
    Ok(Json(app.logic().attachment(s.user, &id).await?.into()))
}

/// `GET /attachments/{id}` → the bytes (`Range: bytes=…` → 206), or a
/// redirect to a presigned URL of the object store.
pub(crate) async fn download(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let meta = app.logic().attachment(s.user, &id).await?;
    let store = &app.logic().services().attachments;
    if let Some(url) = store
        .download_url(&meta, &disposition(&meta), DOWNLOAD_URL_VALID_FOR)
        .await
        .map_err(crate::Error::from)?
    {
        let location = HeaderValue::from_str(&url)
            .map_err(|_| ApiError::new(ErrorCode::Internal, "the object store gave an unusable URL"))?;
        let headers =
            [(header::LOCATION, location), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
        return Ok((StatusCode::FOUND, headers).into_response());
    }
    let etag = format!("\"{}\"", meta.sha256);
    let mut resp_headers = HeaderMap::new();
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(&mut resp_headers, header::ETAG, &etag);
    set(&mut resp_headers, header::ACCEPT_RANGES, "bytes");
    set(&mut resp_headers, header::CACHE_CONTROL, "private, max-age=3600");
    set(&mut resp_headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Never runs as a page of this origin, whatever the bytes are.
    set(&mut resp_headers, header::CONTENT_SECURITY_POLICY, "default-src 'none'; sandbox");
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, resp_headers).into_response());
    }
    set(&mut resp_headers, header::CONTENT_TYPE, &meta.mime);
    set(&mut resp_headers, header::CONTENT_DISPOSITION, &disposition(&meta));

    let requested =
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(|r| byte_range(r, meta.size));
    let (status, range) = match requested {
        Some(RangeAsked::Satisfiable(r)) => {
            let value = format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size);
            set(&mut resp_headers, header::CONTENT_RANGE, &value);
            (StatusCode::PARTIAL_CONTENT, r)
        }
        Some(RangeAsked::Unsatisfiable) => {
            set(&mut resp_headers, header::CONTENT_RANGE, &format!("bytes */{}", meta.size));
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, resp_headers).into_response());
        }
        Some(RangeAsked::Ignored) | None => (StatusCode::OK, 0..meta.size),
    };
    set(&mut resp_headers, header::CONTENT_LENGTH, &(range.end - range.start).to_string());
    let bytes = store.read(&meta.id, range).await.map_err(crate::Error::from)?;
    Ok((status, resp_headers, Body::from_stream(bytes)).into_response())
}

/// `inline` for media a browser shows safely, else `attachment`; with
/// the file name (RFC 6266, UTF-8 percent-encoded).
fn disposition(meta: &AttachmentMeta) -> String {
    let kind = if safe_inline(&meta.mime) { "inline" } else { "attachment" };
    match &meta.name {
        Some(name) => {
            let encoded: String = name
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{kind}; filename*=UTF-8''{encoded}")
        }
        None => kind.to_owned(),
    }
}

/// What a `Range` header asks of a representation of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsked {
    /// One satisfiable range (end exclusive).
    Satisfiable(std::ops::Range<u64>),
    /// A valid range that starts past the end: 416.
    Unsatisfiable,
    /// Several ranges, another unit, or nonsense: answered with the whole (RFC 9110 §14.2).
    Ignored,
}

fn byte_range(header: &str, size: u64) -> RangeAsked {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return RangeAsked::Ignored };
    if spec.contains(',') || size == 0 {
        return RangeAsked::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeAsked::Ignored };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeAsked::Unsatisfiable,
            Some(n) => RangeAsked::Satisfiable(size.saturating_sub(n)..size),
            None => RangeAsked::Ignored,
        },
        // bytes=A- : from A to the end.
        (false, true) => match parse(first) {
            Some(a) if a < size => RangeAsked::Satisfiable(a..size),
            Some(_) => RangeAsked::Unsatisfiable,
            None => RangeAsked::Ignored,
        },
        // bytes=A-B, B inclusive and clipped to the end.
        (false, false) => match (parse(first), parse(last)) {
            (Some(a), Some(b)) if a <= b && a < size => {
                RangeAsked::Satisfiable(a..b.saturating_add(1).min(size))
            }
            (Some(a), Some(b)) if a <= b => RangeAsked::Unsatisfiable,
            _ => RangeAsked::Ignored,
        },
        (true, true) => RangeAsked::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeAsked::*;
        assert_eq!(byte_range("bytes=0-9", 100), Satisfiable(0..10));
        assert_eq!(byte_range("bytes=90-200", 100), Satisfiable(90..100));
        assert_eq!(byte_range("bytes=95-", 100), Satisfiable(95..100));
        assert_eq!(byte_range("bytes=-10", 100), Satisfiable(90..100));
        assert_eq!(byte_range("bytes=-500", 100), Satisfiable(0..100));
        assert_eq!(byte_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(byte_range("bytes=100-120", 100), Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(byte_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(byte_range("bytes=9-0", 100), Ignored);
        assert_eq!(byte_range("items=0-1", 100), Ignored);
        assert_eq!(byte_range("bytes=x-y", 100), Ignored);
        assert_eq!(byte_range("bytes=0-0", 0), Ignored);
        assert_eq!(byte_range("bytes=0-18446744073709551615", 100), Satisfiable(0..100));
        assert_eq!(byte_range("bytes=5-18446744073709551615", 100), Satisfiable(5..100));
    }

    #[test]
    fn only_safe_media_is_shown_inline_and_names_are_encoded() {
        let meta = |mime: &str, name: Option<&str>| AttachmentMeta {
            id: "at_AAAAAAAAAAAAAAAAAAAAAA".into(),
            owner: UserId(1),
            mime: mime.into(),
            size: 1,
            sha256: "0".repeat(64),
            name: name.map(Into::into),
            width: None,
            height: None,
            duration_ms: None,
            created_at_ms: 0,
            references: vec![],
        };
        assert_eq!(disposition(&meta("image/png", None)), "inline");
        assert_eq!(disposition(&meta("image/svg+xml", Some("a.svg"))), "attachment; filename*=UTF-8''a.svg");
        assert_eq!(
            disposition(&meta("application/pdf", Some("Bericht für \"Q1\".pdf"))),
            "attachment; filename*=UTF-8''Bericht%20f%C3%BCr%20%22Q1%22.pdf"
        );
    }
}
