//! [`S3Attachments`]: attachments in an S3-compatible object store (AWS
//! S3, MinIO, Ceph, Garage, …), feature `s3`. Clients upload to and
//! download from presigned URLs, so the bytes never pass through a node;
//! every node of a cluster sees the same attachments.
//!
//! Objects, under the configured prefix (path-style URLs,
//! `ENDPOINT/BUCKET/KEY`):
//!
//! ```text
//! PREFIX/blobs/at_…                   the bytes (uploaded by the client)
//! PREFIX/pending/at_….json            an announced upload not yet completed
//! PREFIX/meta/at_….json               a completed attachment's metadata
//! PREFIX/refs/at_…/CONV               CONV's members may download it
//! PREFIX/refs/at_…/CONV/ID            message ID of CONV references it
//! ```
//!
//! References are objects of their own, so nodes adding references to one
//! attachment at once never overwrite each other.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use im_protocol::{ConversationId, UserId};

use super::{
    new_attachment_id, AttachmentError, AttachmentMeta, AttachmentStore, ByteStream, NewAttachment,
    Reference, UploadMode, UploadTicket,
};

mod list;
mod sigv4;

use sigv4::{amz_date, sha256_hex, uri_encode, Signer, ToSign, EMPTY_SHA256};

/// How long the server's own requests to the object store may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the object store is and how to sign for it.
#[derive(Clone)]
pub struct S3Config {
    /// The endpoint the server calls, e.g. `https://s3.eu-central-1.amazonaws.com`
    /// or `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// The endpoint clients reach, if not the same (it is part of the
    /// presigned URLs' signature).
    pub public_endpoint: Option<String>,
    /// The bucket (it must exist; see [`S3Attachments::create_bucket`]).
    pub bucket: String,
    /// The region of the signature (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Prefix of every key, e.g. `im/`.
    pub prefix: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("public_endpoint", &self.public_endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Attachments in an S3-compatible bucket.
pub struct S3Attachments {
    cfg: S3Config,
    signer: Signer,
    /// `host[:port]` and base path of the server's endpoint.
    host: String,
    base_path: String,
    /// The same for the endpoint in presigned URLs.
    public_origin: String,
    public_host: String,
    public_base_path: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for S3Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Attachments").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// `(origin, host, base path)` of an endpoint URL.
fn split_endpoint(endpoint: &str) -> Result<(String, String, String), AttachmentError> {
    let bad = || {
        AttachmentError::Storage(format!(
            "bad S3 endpoint {endpoint:?}: expected http(s)://host[:port][/path]"
        ))
    };
    let (scheme, rest) = endpoint.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((format!("{scheme}://{host}"), host.to_owned(), path.to_owned()))
}

/// The base64 form of a hex digest (S3's checksum headers take base64).
fn hex_to_base64(hex: &str) -> Option<String> {
    use base64::Engine as _;
    if hex.len() != 64 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..32).map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    Some(base64::engine::general_purpose::STANDARD.encode(bytes?))
}

fn storage(e: impl std::fmt::Display) -> AttachmentError {
    AttachmentError::Storage(e.to_string())
}

impl S3Attachments {
    /// A store on `cfg`'s bucket. Checks the bucket is reachable.
    pub async fn connect(cfg: S3Config) -> Result<Self, AttachmentError> {
        let store = Self::new(cfg)?;
        let status = store.call("HEAD", "", &[], Vec::new(), None).await?.status();
        if !status.is_success() {
            return Err(AttachmentError::Storage(format!(
                "S3 bucket {:?} at {} answered HTTP {} (does it exist, are the keys right?)",
                store.cfg.bucket,
                store.cfg.endpoint,
                status.as_u16()
            )));
        }
        Ok(store)
    }

    fn new(cfg: S3Config) -> Result<Self, AttachmentError> {
        let (_, host, base_path) = split_endpoint(&cfg.endpoint)?;
        let public = cfg.public_endpoint.clone().unwrap_or_else(|| cfg.endpoint.clone());
        let (public_origin, public_host, public_base_path) = split_endpoint(&public)?;
        let signer = Signer {
            access_key: cfg.access_key.clone(),
            secret_key: cfg.secret_key.clone(),
            region: cfg.region.clone(),
        };
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(storage)?;
        Ok(Self { cfg, signer, host, base_path, public_origin, public_host, public_base_path, http })
    }

    /// Creates the bucket (for development and tests; production buckets
    /// are made by their operator).
    pub async fn create_bucket(cfg: &S3Config) -> Result<(), AttachmentError> {
        let store = Self::new(cfg.clone())?;
        let resp = store.call("PUT", "", &[], Vec::new(), None).await?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) || status == 409 {
            return Ok(());
        }
        Err(AttachmentError::Storage(format!("creating the bucket answered HTTP {status}")))
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.cfg.prefix)
    }

    /// `/BASE/BUCKET/KEY`, URI-encoded.
    fn path(base: &str, bucket: &str, key: &str) -> String {
        if key.is_empty() {
            format!("{base}/{}", uri_encode(bucket, false))
        } else {
            format!("{base}/{}/{}", uri_encode(bucket, false), uri_encode(key, true))
        }
    }

    /// One signed request of the server's own to `key` (`""`: the bucket).
    async fn call(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<reqwest::Response, AttachmentError> {
        let path = Self::path(&self.base_path, &self.cfg.bucket, key);
        let query: Vec<(String, String)> =
            query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut headers = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("content-type".to_string(), ct.to_string()));
        }
        let hash = if body.is_empty() { EMPTY_SHA256.to_owned() } else { sha256_hex(&body) };
        let req =
            ToSign { method, host: &self.host, path: &path, query: query.clone(), headers: headers.clone() };
        let signed = self.signer.sign_headers(&req, &amz_date(crate::time::now_ms()), &hash);
        let qs: String = query
            .iter()
            .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
            .collect::<Vec<_>>()
            .join("&");
        let (origin, _, _) = split_endpoint(&self.cfg.endpoint)?;
        let url = if qs.is_empty() { format!("{origin}{path}") } else { format!("{origin}{path}?{qs}") };
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(storage)?;
        let mut builder = self.http.request(method, url);
        for (k, v) in headers.iter().chain(signed.iter()) {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder.body(body).send().await.map_err(|e| AttachmentError::Storage(format!("S3 unreachable: {e}")))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, AttachmentError> {
        let resp = self.call("GET", key, &[], Vec::new(), None).await?;
        match resp.status().as_u16() {
            404 => Ok(None),
            s if (200..300).contains(&s) => {
                let bytes = resp.bytes().await.map_err(storage)?;
                serde_json::from_slice(&bytes).map(Some).map_err(storage)
            }
            s => Err(AttachmentError::Storage(format!("GET {key} answered HTTP {s}"))),
        }
    }

    async fn put_bytes(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), AttachmentError> {
        let resp = self.call("PUT", key, &[], body, Some(content_type)).await?;
        if !resp.status().is_success() {
            return Err(AttachmentError::Storage(format!(
                "PUT {key} answered HTTP {}",
                resp.status().as_u16()
            )));
        }
        Ok(())
    }

    async fn delete_key(&self, key: &str) -> Result<(), AttachmentError> {
        let status = self.call("DELETE", key, &[], Vec::new(), None).await?.status().as_u16();
        if (200..300).contains(&status) || status == 404 {
            return Ok(());
        }
        Err(AttachmentError::Storage(format!("DELETE {key} answered HTTP {status}")))
    }

    /// The keys (and last-modified times, ms) under `prefix`, at most `limit`.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<list::Object>, AttachmentError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let resp = self.call("GET", "", &query, Vec::new(), None).await?;
            if !resp.status().is_success() {
                return Err(AttachmentError::Storage(format!(
                    "listing {prefix} answered HTTP {}",
                    resp.status()
                )));
            }
            let page = list::parse(&resp.text().await.map_err(storage)?);
            out.extend(page.objects);
            if out.len() >= limit || !page.truncated {
                out.truncate(limit);
                return Ok(out);
            }
            token = page.next;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn references(&self, id: &str) -> Result<Vec<Reference>, AttachmentError> {
        let prefix = self.key(&format!("refs/{id}/"));
        let mut refs = Vec::new();
        for obj in self.list(&prefix, 10_000).await? {
            let rest = &obj.key[prefix.len()..];
            let (conv, message) = match rest.split_once('/') {
                Some((c, m)) => (c, m.parse().ok()),
                None => (rest, None),
            };
            if let Ok(conv) = conv.parse::<ConversationId>() {
                refs.push(Reference { conv, message });
            }
        }
        Ok(refs)
    }

    /// A presigned URL for `method` on `key`, signing `headers`.
    fn presigned(
        &self,
        method: &'static str,
        key: &str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        valid_for: Duration,
    ) -> (String, u64) {
        let path = Self::path(&self.public_base_path, &self.cfg.bucket, key);
        let now = crate::time::now_ms();
        let secs = valid_for.as_secs().clamp(1, 7 * 24 * 3600);
        let req = ToSign { method, host: &self.public_host, path: &path, query, headers };
        let qs = self.signer.presign(&req, &amz_date(now), secs);
        (format!("{}{path}?{qs}", self.public_origin), now + secs * 1000)
    }

    async fn remove_everything(&self, id: &str) -> Result<(), AttachmentError> {
        // Metadata first: from then on nobody can see the attachment.
        self.delete_key(&self.key(&format!("meta/{id}.json"))).await?;
        self.delete_key(&self.key(&format!("pending/{id}.json"))).await?;
        self.delete_key(&self.key(&format!("blobs/{id}"))).await?;
        for obj in self.list(&self.key(&format!("refs/{id}/")), 10_000).await? {
            self.delete_key(&obj.key).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl AttachmentStore for S3Attachments {
    async fn put(&self, _: NewAttachment, _: ByteStream, _: u64) -> Result<AttachmentMeta, AttachmentError> {
        Err(AttachmentError::WrongUploadMode(
            "this server takes uploads through presigned URLs: POST /api/v1/attachments/uploads",
        ))
    }

    fn upload_mode(&self) -> UploadMode {
        UploadMode::Presigned
    }

    fn client_origins(&self) -> Vec<String> {
        vec![self.public_origin.clone()]
    }

    async fn begin_upload(
        &self,
        new: NewAttachment,
        size: u64,
        sha256: String,
        valid_for: Duration,
    ) -> Result<UploadTicket, AttachmentError> {
        let id = new_attachment_id();
        // Announced, not completed: the metadata it will have, kept under
        // `pending/` until `finish_upload` finds the bytes.
        let mime = new.mime.clone();
        let pending = AttachmentMeta::new(id.clone(), new, size, sha256);
        // The object store checks the bytes against the announced hash
        // (the header is part of the signature), so what receivers are told
        // is what they get, and the URL cannot be used to swap the bytes.
        let checksum =
            hex_to_base64(&pending.sha256).ok_or_else(|| storage("sha256 must be 64 hex digits"))?;
        let json = serde_json::to_vec(&pending).map_err(storage)?;
        self.put_bytes(&self.key(&format!("pending/{id}.json")), json, "application/json").await?;
        let headers = vec![
            ("content-type".to_string(), mime),
            ("content-length".to_string(), size.to_string()),
            ("x-amz-checksum-sha256".to_string(), checksum),
        ];
        let (url, expires_at_ms) =
            self.presigned("PUT", &self.key(&format!("blobs/{id}")), Vec::new(), headers.clone(), valid_for);
        // Content-Length is set by every HTTP client from the body itself.
        let sent: BTreeMap<String, String> =
            headers.into_iter().filter(|(k, _)| k != "content-length").collect();
        Ok(UploadTicket { id, url, method: "PUT", headers: sent, expires_at_ms })
    }

    async fn finish_upload(&self, id: &str, owner: UserId) -> Result<AttachmentMeta, AttachmentError> {
        if !im_protocol::content::is_attachment_id(id) {
            return Err(AttachmentError::NotFound);
        }
        if let Some(done) = self.meta(id).await? {
            if done.owner == owner {
                return Ok(done); // completed twice: the same answer
            }
            return Err(AttachmentError::NotFound);
        }
        let pending_key = self.key(&format!("pending/{id}.json"));
        let pending: AttachmentMeta = self.get_json(&pending_key).await?.ok_or(AttachmentError::NotFound)?;
        if pending.owner != owner {
            return Err(AttachmentError::NotFound);
        }
        let head = self.call("HEAD", &self.key(&format!("blobs/{id}")), &[], Vec::new(), None).await?;
        let found = match head.status().as_u16() {
            404 => None,
            s if (200..300).contains(&s) => head
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok()),
            s => return Err(AttachmentError::Storage(format!("HEAD of the upload answered HTTP {s}"))),
        };
        if found != Some(pending.size) {
            // Nothing of a mismatched upload is kept.
            self.remove_everything(id).await?;
            return Err(AttachmentError::UploadMismatch(match found {
                None => "no bytes were uploaded".into(),
                Some(n) => format!("{n} bytes uploaded, {} announced", pending.size),
            }));
        }
        let meta = AttachmentMeta { created_at_ms: crate::time::now_ms(), ..pending };
        let json = serde_json::to_vec(&meta).map_err(storage)?;
        self.put_bytes(&self.key(&format!("meta/{id}.json")), json, "application/json").await?;
        self.delete_key(&pending_key).await?;
        Ok(meta)
    }

    async fn download_url(
        &self,
        meta: &AttachmentMeta,
        disposition: &str,
        valid_for: Duration,
    ) -> Result<Option<String>, AttachmentError> {
        let query = vec![
            ("response-content-type".to_string(), meta.mime.clone()),
            ("response-content-disposition".to_string(), disposition.to_owned()),
        ];
        let (url, _) =
            self.presigned("GET", &self.key(&format!("blobs/{}", meta.id)), query, Vec::new(), valid_for);
        Ok(Some(url))
    }

    async fn meta(&self, id: &str) -> Result<Option<AttachmentMeta>, AttachmentError> {
        if !im_protocol::content::is_attachment_id(id) {
            return Ok(None);
        }
        let Some(mut meta) = self.get_json::<AttachmentMeta>(&self.key(&format!("meta/{id}.json"))).await?
        else {
            return Ok(None);
        };
        meta.references = self.references(id).await?;
        Ok(Some(meta))
    }

    async fn read(&self, id: &str, range: Range<u64>) -> Result<ByteStream, AttachmentError> {
        if !im_protocol::content::is_attachment_id(id) || range.is_empty() {
            return Err(AttachmentError::NotFound);
        }
        let bytes = format!("bytes={}-{}", range.start, range.end - 1);
        let path = Self::path(&self.base_path, &self.cfg.bucket, &self.key(&format!("blobs/{id}")));
        let (origin, _, _) = split_endpoint(&self.cfg.endpoint)?;
        let headers = vec![("range".to_string(), bytes.clone())];
        let req = ToSign { method: "GET", host: &self.host, path: &path, query: Vec::new(), headers };
        let signed = self.signer.sign_headers(&req, &amz_date(crate::time::now_ms()), EMPTY_SHA256);
        let mut builder = self.http.get(format!("{origin}{path}")).header("range", bytes);
        for (k, v) in &signed {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let resp =
            builder.send().await.map_err(|e| AttachmentError::Storage(format!("S3 unreachable: {e}")))?;
        match resp.status().as_u16() {
            404 => Err(AttachmentError::NotFound),
            200 | 206 => Ok(Box::pin(resp.bytes_stream().map_err(std::io::Error::other))),
            s => Err(AttachmentError::Storage(format!("GET of the bytes answered HTTP {s}"))),
        }
    }

    async fn add_reference(&self, id: &str, reference: Reference) -> Result<(), AttachmentError> {
        if self.get_json::<AttachmentMeta>(&self.key(&format!("meta/{id}.json"))).await?.is_none() {
            return Err(AttachmentError::NotFound);
        }
        let rest = match reference.message {
            Some(m) => format!("refs/{id}/{}/{m}", reference.conv),
            None => format!("refs/{id}/{}", reference.conv),
        };
        self.put_bytes(&self.key(&rest), Vec::new(), "application/octet-stream").await
    }

    async fn delete(&self, id: &str) -> Result<bool, AttachmentError> {
        if !im_protocol::content::is_attachment_id(id) {
            return Ok(false);
        }
        let existed = self.get_json::<AttachmentMeta>(&self.key(&format!("meta/{id}.json"))).await?.is_some()
            || self.get_json::<AttachmentMeta>(&self.key(&format!("pending/{id}.json"))).await?.is_some();
        self.remove_everything(id).await?;
        Ok(existed)
    }

    async fn orphans(&self, created_before_ms: u64, limit: usize) -> Result<Vec<String>, AttachmentError> {
        let mut found = Vec::new();
        for dir in ["meta/", "pending/", "blobs/"] {
            let prefix = self.key(dir);
            for obj in self.list(&prefix, 10_000).await? {
                if obj.modified_ms.is_none_or(|t| t >= created_before_ms) {
                    continue;
                }
                let name = &obj.key[prefix.len()..];
                let Some(id) = name.strip_suffix(".json").or((dir == "blobs/").then_some(name)) else {
                    continue;
                };
                // Bytes without metadata or announcement: an upload whose
                // completion failed, sent again to a URL still valid.
                let stray = dir == "blobs/"
                    && self
                        .get_json::<AttachmentMeta>(&self.key(&format!("meta/{id}.json")))
                        .await?
                        .is_none()
                    && self
                        .get_json::<AttachmentMeta>(&self.key(&format!("pending/{id}.json")))
                        .await?
                        .is_none();
                if dir == "pending/" || stray || (dir == "meta/" && self.references(id).await?.is_empty()) {
                    found.push(id.to_owned());
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(found)
    }

    async fn remove_reference(&self, id: &str, reference: Reference) -> Result<bool, AttachmentError> {
        if !im_protocol::content::is_attachment_id(id) {
            return Ok(false);
        }
        let conv = reference.conv;
        if let Some(m) = reference.message {
            self.delete_key(&self.key(&format!("refs/{id}/{conv}/{m}"))).await?;
        }
        if self.list(&self.key(&format!("refs/{id}/{conv}/")), 1).await?.is_empty() {
            // No other message of the conversation uses it: its access goes too.
            self.delete_key(&self.key(&format!("refs/{id}/{conv}"))).await?;
        }
        if !self.references(id).await?.is_empty() {
            return Ok(false);
        }
        self.remove_everything(id).await?;
        Ok(true)
    }

    async fn delete_orphan(&self, id: &str, created_before_ms: u64) -> Result<bool, AttachmentError> {
        if !im_protocol::content::is_attachment_id(id) {
            return Ok(false);
        }
        let meta: Option<AttachmentMeta> = self.get_json(&self.key(&format!("meta/{id}.json"))).await?;
        let pending: Option<AttachmentMeta> = self.get_json(&self.key(&format!("pending/{id}.json"))).await?;
        let created = match (&meta, &pending) {
            (Some(m), _) => m.created_at_ms,
            (None, Some(p)) => p.created_at_ms,
            // Stray bytes (see `orphans`): old enough once the URL that
            // could still write them has expired.
            (None, None) => {
                let head =
                    self.call("HEAD", &self.key(&format!("blobs/{id}")), &[], Vec::new(), None).await?;
                if !head.status().is_success() {
                    return Ok(false);
                }
                let valid_ms = crate::logic::attachments::UPLOAD_URL_VALID_FOR.as_millis() as u64;
                created_before_ms.saturating_sub(valid_ms + 1)
            }
        };
        if created >= created_before_ms || (meta.is_some() && !self.references(id).await?.is_empty()) {
            return Ok(false);
        }
        self.remove_everything(id).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_into_origin_host_and_path() {
        assert_eq!(
            split_endpoint("http://127.0.0.1:9000").unwrap(),
            ("http://127.0.0.1:9000".into(), "127.0.0.1:9000".into(), "".into())
        );
        assert_eq!(
            split_endpoint("https://gw.example/s3/").unwrap(),
            ("https://gw.example".into(), "gw.example".into(), "/s3".into())
        );
        assert!(split_endpoint("ftp://x").is_err() && split_endpoint("nohost").is_err());
    }
}
