//! Where a device keeps its `cur_max_message_id` cursors between runs.
//!
//! The driver calls [`CursorStore::save`] each time a message is handed to
//! the app, and [`CursorStore::flush`] at quiet moments (after a sync run,
//! every half second while messages flow) and when the client shuts down.
//! A store may therefore make `save` cheap (in memory) and `flush` durable.
//! A crash between the two loses only cursor progress, never a message: the
//! next sync fetches again what the app was last known to have.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use im_protocol::{ConversationId, MessageId};
use serde::{Deserialize, Serialize};

/// Durable storage of a device's sync cursors (one per conversation).
///
/// Implementations must be cheap to call from an async task: `save` is
/// called once per delivered message; `flush` is where slow I/O belongs.
pub trait CursorStore: Send + Sync + 'static {
    /// Every stored cursor (empty for a fresh device).
    fn load(&self) -> io::Result<BTreeMap<ConversationId, MessageId>>;
    /// Records that the app has every message of `conv` up to `id`.
    fn save(&self, conv: ConversationId, id: MessageId) -> io::Result<()>;
    /// Makes every saved cursor durable. The default does nothing.
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Cursors kept in memory only: a new process starts from nothing (and gets
/// the whole history of its direct chats and groups on its first sync).
#[derive(Debug, Default)]
pub struct MemoryCursorStore {
    cursors: Mutex<BTreeMap<ConversationId, MessageId>>,
}

impl MemoryCursorStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store starting from `cursors`.
    pub fn with_cursors(cursors: BTreeMap<ConversationId, MessageId>) -> Self {
        Self { cursors: Mutex::new(cursors) }
    }
}

impl CursorStore for MemoryCursorStore {
    fn load(&self) -> io::Result<BTreeMap<ConversationId, MessageId>> {
        Ok(self.cursors.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn save(&self, conv: ConversationId, id: MessageId) -> io::Result<()> {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner()).insert(conv, id);
        Ok(())
    }
}

/// Cursors in a JSON file, replaced atomically (write a temporary file, sync
/// it, rename it over the old one), so a crash leaves either the old or the
/// new cursors, never a torn file.
///
/// `save` only updates memory; `flush` writes the file when something
/// changed. The client flushes after each sync run, every half second while
/// messages arrive, and on [`Client::shutdown`](crate::Client::shutdown);
/// dropping the store flushes too.
#[derive(Debug)]
pub struct FileCursorStore {
    path: PathBuf,
    state: Mutex<FileState>,
}

#[derive(Debug, Default)]
struct FileState {
    cursors: BTreeMap<ConversationId, MessageId>,
    dirty: bool,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    cursors: BTreeMap<ConversationId, MessageId>,
}

impl FileCursorStore {
    /// Opens (or prepares to create) the cursor file at `path`. A missing
    /// file means a fresh device; an unreadable or corrupt one is an error.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let cursors = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: FileFormat = serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                f.cursors
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self { path, state: Mutex::new(FileState { cursors, dirty: false }) })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, cursors: &BTreeMap<ConversationId, MessageId>) -> io::Result<()> {
        let json =
            serde_json::to_vec_pretty(&FileFormat { cursors: cursors.clone() }).map_err(io::Error::other)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        // Make the rename itself durable where the platform allows it.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl CursorStore for FileCursorStore {
    fn load(&self) -> io::Result<BTreeMap<ConversationId, MessageId>> {
        Ok(self.state.lock().unwrap_or_else(|p| p.into_inner()).cursors.clone())
    }

    fn save(&self, conv: ConversationId, id: MessageId) -> io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.cursors.insert(conv, id) != Some(id) {
            s.dirty = true;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let snapshot = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !s.dirty {
                return Ok(());
            }
            s.dirty = false;
            s.cursors.clone()
        };
        let written = self.write(&snapshot);
        if written.is_err() {
            self.state.lock().unwrap_or_else(|p| p.into_inner()).dirty = true;
        }
        written
    }
}

impl Drop for FileCursorStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "flushing sync cursors failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use im_protocol::{GroupId, UserId};

    use super::*;

    #[test]
    fn file_store_survives_reopen_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursors.json");
        let g = ConversationId::Group(GroupId(4));
        let d = ConversationId::direct(UserId(2), UserId(1));
        {
            let s = FileCursorStore::open(&path).unwrap();
            assert!(s.load().unwrap().is_empty());
            s.save(g, 10).unwrap();
            s.save(d, 3).unwrap();
            s.flush().unwrap();
            s.save(g, 12).unwrap();
            // dropped: flushes
        }
        let s = FileCursorStore::open(&path).unwrap();
        assert_eq!(s.load().unwrap(), BTreeMap::from([(g, 12), (d, 3)]));
        assert!(!dir.path().join("cursors.json.tmp").exists());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(FileCursorStore::open(&path).is_err(), "corruption is reported, not silently reset");
    }

    #[test]
    fn memory_store_round_trips() {
        let s = MemoryCursorStore::new();
        let g = ConversationId::Group(GroupId(1));
        s.save(g, 2).unwrap();
        assert_eq!(s.load().unwrap().get(&g), Some(&2));
    }
}
