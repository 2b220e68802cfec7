//! Attachments from the client's side: upload a file (through the server,
//! or straight to the object store with a presigned URL — whichever the
//! server says), and download one, each with progress.
//!
//! ```no_run
//! use im_client::{Client, Draft};
//! use im_client::core::{ConversationId, GroupId};
//!
//! # async fn run(client: Client) -> Result<(), Box<dyn std::error::Error>> {
//! let photo = std::fs::read("cat.png")?;
//! let attachment = client
//!     .upload_with_progress(photo, "image/png", Some("cat.png"), |sent, total| {
//!         println!("{sent}/{total} bytes");
//!     })
//!     .await?;
//! let conv = ConversationId::Group(GroupId(42));
//! client.send_draft(conv, Draft::content(attachment.content(), "[image]")).await?;
//! // On another device, from the message's content:
//! let bytes = client.download(&attachment.id).await?;
//! assert!(attachment.matches(&bytes));
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use im_protocol::content::{Content, Media};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

/// Bytes per chunk of an upload, and how often progress is reported.
const CHUNK: usize = 64 * 1024;
/// Largest download kept in memory (a server's uploads are far smaller:
/// 25 MiB by default).
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// An uploaded attachment, as the server measured it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// `at_…`: what a message's content names.
    pub id: String,
    /// The MIME type.
    pub mime: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// The file name, if one was given.
    #[serde(default)]
    pub name: Option<String>,
    /// Width in pixels, if given.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height in pixels, if given.
    #[serde(default)]
    pub height: Option<u32>,
    /// Duration in ms, if given.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

impl Attachment {
    /// Media content naming this attachment.
    pub fn media(&self) -> Media {
        Media {
            attachment: Some(self.id.clone()),
            mime: Some(self.mime.clone()),
            size: Some(self.size),
            sha256: Some(self.sha256.clone()),
            name: self.name.clone(),
            width: self.width,
            height: self.height,
            duration_ms: self.duration_ms,
            ..Media::default()
        }
    }

    /// The content of a message carrying it: an image, audio clip or video
    /// by its type, else a file.
    pub fn content(&self) -> Content {
        let media = self.media();
        match self.mime.split('/').next() {
            Some("image") => Content::Image(media),
            Some("audio") => Content::Audio(media),
            Some("video") => Content::Video(media),
            _ => Content::File(media),
        }
    }

    /// Whether `bytes` are this attachment's (size and SHA-256).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        bytes.len() as u64 == self.size && sha256_hex(bytes) == self.sha256
    }
}

/// Why an upload or download failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The client has no token yet (password login: wait for
    /// [`Event::Connected`](crate::Event::Connected)).
    #[error("not signed in yet")]
    NotSignedIn,
    /// The server (or the object store) said no.
    #[error("refused with HTTP {status} {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error code (`body_too_large`, `unsupported_media_type`,
        /// `no_such_attachment`, …), empty if the answer had none.
        code: String,
        /// The detail.
        message: String,
    },
    /// The request did not get through (network, TLS, a garbled answer).
    #[error("{0}")]
    Transport(String),
}

/// What the handles share for HTTP calls: the API base, the HTTP client
/// with the TLS options, and the latest token.
pub(crate) struct Files {
    api_base: Url,
    http: reqwest::Client,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").field("api_base", &self.api_base).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct UploadConfig {
    upload: String,
}

#[derive(Deserialize)]
struct Ticket {
    id: String,
    url: String,
    method: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn transport(e: reqwest::Error) -> FileError {
    FileError::Transport(crate::http::describe(&e))
}

/// `data` as a stream of chunks that reports progress as each is taken.
fn body_with_progress(data: Arc<Vec<u8>>, progress: Arc<Mutex<dyn FnMut(u64, u64) + Send>>) -> reqwest::Body {
    let total = data.len() as u64;
    let chunks = futures::stream::iter((0..data.len().div_ceil(CHUNK)).map(move |i| {
        let end = ((i + 1) * CHUNK).min(data.len());
        let chunk = data[i * CHUNK..end].to_vec();
        if let Ok(mut report) = progress.lock() {
            report(end as u64, total);
        }
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::Body::wrap_stream(chunks)
}

async fn refused(resp: reqwest::Response) -> FileError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => FileError::Refused { status, code: b.code, message: b.message },
        Err(_) => {
            FileError::Refused { status, code: String::new(), message: text.chars().take(300).collect() }
        }
    }
}

impl Files {
    pub(crate) fn new(api_base: Url, http: reqwest::Client, token: Option<String>) -> Self {
        Self { api_base, http, token: Mutex::new(token) }
    }

    /// Remembers the token of the latest connection.
    pub(crate) fn set_token(&self, token: &str) {
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token.to_owned());
        }
    }

    fn token(&self) -> Result<String, FileError> {
        self.token.lock().ok().and_then(|t| t.clone()).ok_or(FileError::NotSignedIn)
    }

    fn url(&self, path: &str) -> Result<Url, FileError> {
        self.api_base.join(path).map_err(|e| FileError::Transport(format!("bad API URL: {e}")))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
        want: u16,
    ) -> Result<T, FileError> {
        if resp.status().as_u16() != want {
            return Err(refused(resp).await);
        }
        resp.json().await.map_err(transport)
    }

    pub(crate) async fn upload(
        &self,
        data: Vec<u8>,
        mime: &str,
        name: Option<&str>,
        progress: Arc<Mutex<dyn FnMut(u64, u64) + Send>>,
    ) -> Result<Attachment, FileError> {
        let token = self.token()?;
        let config: UploadConfig = Self::json(
            self.http
                .get(self.url("api/v1/attachments/config")?)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(transport)?,
            200,
        )
        .await?;
        let size = data.len();
        let data = Arc::new(data);
        if config.upload == "presigned" {
            let mut announce = serde_json::json!({"mime": mime, "size": size, "sha256": sha256_hex(&data)});
            if let Some(n) = name {
                announce["name"] = n.into();
            }
            let url = self.url("api/v1/attachments/uploads")?;
            let ticket: Ticket = Self::json(
                self.http.post(url).bearer_auth(&token).json(&announce).send().await.map_err(transport)?,
                201,
            )
            .await?;
            let method = reqwest::Method::from_bytes(ticket.method.as_bytes())
                .map_err(|_| FileError::Transport(format!("unusable upload method {:?}", ticket.method)))?;
            // To the object store: no bearer token; the URL is the authority.
            let mut put =
                self.http.request(method, &ticket.url).header(reqwest::header::CONTENT_LENGTH, size);
            for (k, v) in &ticket.headers {
                put = put.header(k.as_str(), v.as_str());
            }
            let resp = put.body(body_with_progress(data, progress)).send().await.map_err(transport)?;
            if !resp.status().is_success() {
                return Err(refused(resp).await);
            }
            let url = self.url(&format!("api/v1/attachments/{}/complete", ticket.id))?;
            return Self::json(self.http.post(url).bearer_auth(&token).send().await.map_err(transport)?, 201)
                .await;
        }
        let mut url = self.url("api/v1/attachments")?;
        if let Some(n) = name {
            url.query_pairs_mut().append_pair("name", n);
        }
        let resp = self
            .http
            .post(url)
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, mime)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body_with_progress(data, progress))
            .send()
            .await
            .map_err(transport)?;
        Self::json(resp, 201).await
    }

    pub(crate) async fn download(
        &self,
        id: &str,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Vec<u8>, FileError> {
        let token = self.token()?;
        if !im_protocol::content::is_attachment_id(id) {
            return Err(FileError::Refused {
                status: 404,
                code: "no_such_attachment".into(),
                message: format!("{id:?} is not an attachment id"),
            });
        }
        // A presigned server redirects to the object store; reqwest follows
        // and drops the Authorization header on the way to another host.
        let resp = self
            .http
            .get(self.url(&format!("api/v1/attachments/{id}"))?)
            .bearer_auth(&token)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(refused(resp).await);
        }
        let total = resp.content_length();
        let too_large = || FileError::Transport(format!("the download is over {MAX_DOWNLOAD_BYTES} bytes"));
        if total.is_some_and(|n| n > MAX_DOWNLOAD_BYTES) {
            return Err(too_large());
        }
        let mut out = Vec::with_capacity(total.unwrap_or(0).min(64 * 1024 * 1024) as usize);
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(transport)?);
            if out.len() as u64 > MAX_DOWNLOAD_BYTES {
                return Err(too_large());
            }
            progress(out.len() as u64, total);
        }
        Ok(out)
    }
}
