//! [`FsAttachments`]: attachments as files in a directory.
//!
//! ```text
//! ROOT/tmp/at_….part         an upload in progress (removed if it fails)
//! ROOT/blobs/xy/at_…xy…      the bytes (xy: two characters of the id)
//! ROOT/blobs/xy/at_…xy….json the metadata and references
//! ```
//!
//! An upload is written to `tmp/`, flushed to disk, then renamed into
//! `blobs/` and its metadata written (to a temporary file, renamed), so a
//! crash leaves either a whole attachment or a stray file in `tmp/`, which
//! the next start removes. Reference updates take one lock per store.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::{
    new_attachment_id, AttachmentError, AttachmentMeta, AttachmentStore, ByteStream, NewAttachment, Reference,
};

/// Bytes read from disk per chunk of a download.
const READ_CHUNK: usize = 64 * 1024;

/// Attachments in a directory on local disk (or a shared mount).
pub struct FsAttachments {
    root: PathBuf,
    /// Serializes metadata updates (references) and deletions.
    meta_lock: Mutex<()>,
    /// Remove `root` when dropped (a temporary store).
    remove_on_drop: bool,
}

impl std::fmt::Debug for FsAttachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsAttachments").field("root", &self.root).finish_non_exhaustive()
    }
}

impl FsAttachments {
    /// Keeps attachments under `root` (created if missing). Stray partial
    /// uploads of an earlier run are removed.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Self { root, meta_lock: Mutex::new(()), remove_on_drop: false })
    }

    /// A store in a fresh directory under the system's temporary directory,
    /// removed when the store is dropped (for `--memory` servers and tests).
    pub fn temporary() -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("im-attachments-{}", &new_attachment_id()[3..]));
        let mut store = Self::open(dir)?;
        store.remove_on_drop = true;
        Ok(store)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Paths of the bytes and the metadata of `id`, after checking its shape
    /// (so an id from a request can never name another file).
    fn paths(&self, id: &str) -> Result<(PathBuf, PathBuf), AttachmentError> {
        if !im_protocol::content::is_attachment_id(id) {
            return Err(AttachmentError::NotFound);
        }
        let dir = self.root.join("blobs").join(&id[3..5]);
        Ok((dir.join(id), dir.join(format!("{id}.json"))))
    }

    async fn read_meta(path: &Path) -> Result<Option<AttachmentMeta>, AttachmentError> {
        match tokio::fs::read(path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| AttachmentError::Storage(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_meta(&self, path: &Path, meta: &AttachmentMeta) -> Result<(), AttachmentError> {
        let tmp = self.root.join("tmp").join(format!("{}.json", meta.id));
        let json = serde_json::to_vec(meta).map_err(|e| AttachmentError::Storage(e.to_string()))?;
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(&json).await?;
        file.sync_data().await?;
        tokio::fs::rename(&tmp, path).await?;
        Ok(())
    }

    /// Streams `body` into `file`, hashing; the size and the hash.
    async fn receive(
        file: &mut tokio::fs::File,
        mut body: ByteStream,
        max_bytes: u64,
    ) -> Result<(u64, String), AttachmentError> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| AttachmentError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(AttachmentError::TooLarge { max: max_bytes });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_data().await?;
        let hash = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((size, hash))
    }
}

/// Removes an attachment's files: metadata first, so a crash in between
/// leaves bytes nobody can reach rather than metadata pointing at nothing.
async fn remove_files(meta: &Path, blob: &Path) -> Result<(), AttachmentError> {
    for path in [meta, blob] {
        match tokio::fs::remove_file(path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Drop for FsAttachments {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[async_trait]
impl AttachmentStore for FsAttachments {
    async fn put(
        &self,
        new: NewAttachment,
        body: ByteStream,
        max_bytes: u64,
    ) -> Result<AttachmentMeta, AttachmentError> {
        let id = new_attachment_id();
        let part = self.root.join("tmp").join(format!("{id}.part"));
        let mut file = tokio::fs::File::create(&part).await?;
        let received = Self::receive(&mut file, body, max_bytes).await;
        drop(file);
        let (size, sha256) = match received {
            Ok(r) => r,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        let (blob, meta_path) = self.paths(&id)?;
        if let Some(dir) = blob.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let meta = AttachmentMeta::new(id, new, size, sha256);
        let stored = async {
            tokio::fs::rename(&part, &blob).await?;
            self.write_meta(&meta_path, &meta).await
        }
        .await;
        if let Err(e) = stored {
            let _ = tokio::fs::remove_file(&part).await;
            let _ = tokio::fs::remove_file(&blob).await;
            return Err(e);
        }
        Ok(meta)
    }

    async fn meta(&self, id: &str) -> Result<Option<AttachmentMeta>, AttachmentError> {
        let Ok((_, meta_path)) = self.paths(id) else { return Ok(None) };
        Self::read_meta(&meta_path).await
    }

    async fn read(&self, id: &str, range: Range<u64>) -> Result<ByteStream, AttachmentError> {
        let (blob, _) = self.paths(id)?;
        let mut file = match tokio::fs::File::open(&blob).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AttachmentError::NotFound),
            Err(e) => return Err(e.into()),
        };
        file.seek(SeekFrom::Start(range.start)).await?;
        let remaining = range.end.saturating_sub(range.start);
        let chunks = futures::stream::try_unfold((file, remaining), |(mut file, left)| async move {
            if left == 0 {
                return Ok(None);
            }
            let mut buf = vec![0u8; READ_CHUNK.min(left as usize)];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "attachment shorter than its metadata",
                ));
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), (file, left - n as u64))))
        });
        Ok(Box::pin(chunks))
    }

    async fn add_reference(&self, id: &str, reference: Reference) -> Result<(), AttachmentError> {
        let (_, meta_path) = self.paths(id)?;
        let _guard = self.meta_lock.lock().await;
        let mut meta = Self::read_meta(&meta_path).await?.ok_or(AttachmentError::NotFound)?;
        if meta.references.contains(&reference) {
            return Ok(());
        }
        if reference.message.is_some() {
            // The stored message replaces its pending reference.
            let pending = Reference { conv: reference.conv, message: None };
            if let Some(slot) = meta.references.iter_mut().find(|r| **r == pending) {
                *slot = reference;
                return self.write_meta(&meta_path, &meta).await;
            }
        } else if meta.references.iter().any(|r| r.conv == reference.conv) {
            // The conversation already grants access.
            return Ok(());
        }
        meta.references.push(reference);
        self.write_meta(&meta_path, &meta).await
    }

    async fn delete(&self, id: &str) -> Result<bool, AttachmentError> {
        let (blob, meta_path) = self.paths(id)?;
        let _guard = self.meta_lock.lock().await;
        let existed = Self::read_meta(&meta_path).await?.is_some();
        remove_files(&meta_path, &blob).await?;
        Ok(existed)
    }

    async fn delete_orphan(&self, id: &str, created_before_ms: u64) -> Result<bool, AttachmentError> {
        let (blob, meta_path) = self.paths(id)?;
        let _guard = self.meta_lock.lock().await;
        match Self::read_meta(&meta_path).await? {
            Some(meta) if meta.references.is_empty() && meta.created_at_ms < created_before_ms => {
                remove_files(&meta_path, &blob).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn remove_reference(&self, id: &str, reference: Reference) -> Result<bool, AttachmentError> {
        let (blob, meta_path) = self.paths(id)?;
        let _guard = self.meta_lock.lock().await;
        let Some(mut meta) = Self::read_meta(&meta_path).await? else { return Ok(false) };
        meta.references.retain(|r| *r != reference);
        if meta.references.is_empty() {
            remove_files(&meta_path, &blob).await?;
            return Ok(true);
        }
        self.write_meta(&meta_path, &meta).await?;
        Ok(false)
    }

    async fn orphans(&self, created_before_ms: u64, limit: usize) -> Result<Vec<String>, AttachmentError> {
        let mut found = Vec::new();
        let mut shards = tokio::fs::read_dir(self.root.join("blobs")).await?;
        while let Some(shard) = shards.next_entry().await? {
            if !shard.file_type().await?.is_dir() {
                continue;
            }
            let mut files = tokio::fs::read_dir(shard.path()).await?;
            while let Some(file) = files.next_entry().await? {
                let path = file.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let Some(meta) = Self::read_meta(&path).await? else { continue };
                if meta.references.is_empty() && meta.created_at_ms < created_before_ms {
                    found.push(meta.id);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use im_protocol::{ConversationId, GroupId, UserId};

    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> ByteStream {
        Box::pin(futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))))
    }

    fn new() -> NewAttachment {
        NewAttachment {
            owner: UserId(1),
            mime: "text/plain".into(),
            name: Some("a.txt".into()),
            width: None,
            height: None,
            duration_ms: None,
        }
    }

    async fn read_all(s: &FsAttachments, id: &str, range: Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stream = s.read(id, range).await.unwrap();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    fn files_in(dir: &Path) -> usize {
        walk(dir).len()
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[tokio::test]
    async fn uploads_are_whole_or_nothing_and_read_back_by_range() {
        let store = FsAttachments::temporary().unwrap();
        let meta = store.put(new(), body(vec![b"hello ", b"world"]), 100).await.unwrap();
        assert_eq!(meta.size, 11);
        assert_eq!(meta.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(store.meta(&meta.id).await.unwrap().unwrap(), meta);
        assert_eq!(read_all(&store, &meta.id, 0..11).await, b"hello world");
        assert_eq!(read_all(&store, &meta.id, 6..9).await, b"wor");

        // Too large, or a body that fails: nothing left anywhere.
        let before = files_in(store.root());
        let err = store.put(new(), body(vec![b"0123456789", b"0123456789"]), 15).await.unwrap_err();
        assert!(matches!(err, AttachmentError::TooLarge { max: 15 }), "{err:?}");
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(io::Error::other("client went away")),
        ]));
        assert!(matches!(store.put(new(), failing, 100).await, Err(AttachmentError::Body(_))));
        assert_eq!(files_in(store.root()), before, "no partial files left behind");

        // Ids that are not attachment ids never reach the file system.
        assert!(store.meta("../../etc/passwd").await.unwrap().is_none());
        assert!(matches!(store.read("at_../../../../etc/pa", 0..1).await, Err(AttachmentError::NotFound)));
    }

    #[tokio::test]
    async fn references_make_an_attachment_no_orphan_and_delete_removes_everything() {
        let store = FsAttachments::temporary().unwrap();
        let kept = store.put(new(), body(vec![b"kept"]), 100).await.unwrap();
        let orphan = store.put(new(), body(vec![b"orphan"]), 100).await.unwrap();
        let conv = ConversationId::Group(GroupId(7));
        store.add_reference(&kept.id, Reference { conv, message: None }).await.unwrap();
        store.add_reference(&kept.id, Reference { conv, message: Some(3) }).await.unwrap();
        store.add_reference(&kept.id, Reference { conv, message: None }).await.unwrap();
        let refs = store.meta(&kept.id).await.unwrap().unwrap().references;
        assert_eq!(
            refs,
            vec![Reference { conv, message: Some(3) }],
            "the stored message replaced its pending reference"
        );

        let later = crate::time::now_ms() + 1;
        assert_eq!(store.orphans(later, 10).await.unwrap(), vec![orphan.id.clone()]);
        assert!(store.orphans(orphan.created_at_ms, 10).await.unwrap().is_empty(), "young orphans are kept");
        assert!(!store.delete_orphan(&kept.id, later).await.unwrap(), "a referenced upload is no orphan");
        assert!(!store.delete_orphan(&orphan.id, orphan.created_at_ms).await.unwrap(), "too young");
        assert!(store.delete_orphan(&orphan.id, later).await.unwrap());
        assert!(!store.delete(&orphan.id).await.unwrap());
        assert!(store.delete(&kept.id).await.unwrap());
        assert!(store.meta(&orphan.id).await.unwrap().is_none());
        let left: Vec<String> = walk(store.root())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(left.iter().all(|f| !f.contains(&orphan.id)), "{left:?}");
        let root = store.root().to_path_buf();
        drop(store);
        assert!(!root.exists(), "a temporary store removes its directory");
    }
}
