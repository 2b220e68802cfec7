//! The message log: a file next to the redb file that makes appends durable
//! between two durable redb commits.
//!
//! A batch made only of appends is written here, its redb transaction
//! commits *without* durability, and the syncer thread (`syncer.rs`)
//! `fdatasync`s the log (once for every batch written meanwhile) before the
//! batch is answered or readable; a durable redb commit (a checkpoint) then
//! starts a new epoch of the log. A durable redb commit costs 3–5× the CPU of a
//! non-durable one (copy-on-write pages written and freed per commit), so
//! this is what lets the store keep up with many small conversations'
//! group commits; see `docs/benchmarks.md`.
//!
//! On open, the records of the current epoch are replayed into redb (those
//! not there yet) in one durable commit. Acks and reads wait for a
//! record's sync, so anything a reader or an ack ever saw is in the log or
//! durable in redb; a torn record at the end (a crash during the
//! write) fails its checksum and ends the replay, and it was never
//! acknowledged.
//!
//! **Layout.** The file is preallocated with zeros ([`PREALLOCATE`] bytes,
//! grown the same way when needed) and written in place, so a batch's
//! `fdatasync` writes its data only, not the inode as appending to a file
//! would (one synchronous write instead of two). A header `"imlog001"` +
//! `epoch: u64 LE` starts the file; records follow: `len: u32 LE`,
//! `crc32(payload): u32 LE`, then `len` bytes of payload: `epoch: u64 LE`,
//! `conv_len: u16 LE`, the conversation's string form, `id: u64 LE`, and the
//! message's value exactly as the messages table stores it. A checkpoint
//! bumps the epoch in the header (synced) and writes again from the start,
//! so what follows the current epoch's last record — zeros, or records of
//! older epochs, all durable in redb — is never replayed.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Zeros written ahead of the records (and added at a time when full).
pub(super) const PREALLOCATE: u64 = 4 << 20;
/// Largest payload a record may have; a longer length field means a
/// corrupt (torn) record.
const MAX_PAYLOAD: usize = 64 << 20;
const MAGIC: &[u8; 8] = b"imlog001";
const FILE_HEADER: u64 = 16;
const RECORD_HEADER: usize = 8;
/// Epoch, conversation length, id.
const MIN_PAYLOAD: usize = 8 + 2 + 8;

/// One logged append: a message's key and stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    /// The conversation's string form (the key's first part).
    pub conv: String,
    /// The message id (the key's second part).
    pub id: u64,
    /// The stored value.
    pub value: Vec<u8>,
}

/// The open log file, with the records of the batch being built.
pub(super) struct MessageLog {
    file: File,
    epoch: u64,
    /// End of the current epoch's synced records.
    len: u64,
    /// End of everything written in the current epoch (a rollback zeroes
    /// from its mark up to here).
    high: u64,
    /// Bytes in the file (zeros past `len`).
    capacity: u64,
    /// End of everything any epoch may have written since the last
    /// [`erase`](Self::erase) (the whole file after opening).
    dirty: u64,
    /// Encoded records of the current batch, not written yet.
    pending: Vec<u8>,
    pending_records: usize,
    /// A sync through this handle failed. The file's write-error state is
    /// shared with the syncer's handle and reported once, so the syncer
    /// may never hear of it: the store must stop.
    sync_failed: bool,
}

impl MessageLog {
    /// The log's path for the redb file at `db`: `<db>.log`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".log");
        PathBuf::from(name)
    }

    /// The second log's path (`<db>.log2`): the writer alternates between
    /// the two, so that appends go on into one while a checkpoint makes
    /// the other's records durable in redb.
    pub fn second_path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".log2");
        PathBuf::from(name)
    }

    /// Opens (creating and preallocating) the log and reads the current
    /// epoch's records: every complete, checksummed record from the start
    /// up to the first that is not.
    pub fn open(path: &Path) -> io::Result<(Self, Vec<Record>)> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let capacity = bytes.len() as u64;
        let mut log = Self {
            file,
            epoch: 0,
            len: FILE_HEADER,
            high: FILE_HEADER,
            capacity,
            dirty: capacity,
            pending: Vec::new(),
            pending_records: 0,
            sync_failed: false,
        };
        let Some(epoch) = header_epoch(&bytes) else {
            if bytes.iter().any(|&b| b != 0) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "not an im message log"));
            }
            log.epoch = 1;
            log.write_header()?;
            log.capacity = log.capacity.max(FILE_HEADER);
            log.grow(PREALLOCATE)?;
            return Ok((log, Vec::new()));
        };
        log.epoch = epoch;
        let (records, end) = decode_all(&bytes, FILE_HEADER as usize, log.epoch);
        log.len = end as u64;
        // What follows may be a torn record of this epoch: zero it before
        // records are written after `end`.
        log.high = capacity;
        log.rollback(log.len)?;
        Ok((log, records))
    }

    /// Adds a record to the current batch.
    pub fn push(&mut self, conv: &str, id: u64, value: &[u8]) {
        encode(&mut self.pending, self.epoch, conv, id, value);
        self.pending_records += 1;
    }

    /// Records in the current batch.
    pub fn pending_records(&self) -> usize {
        self.pending_records
    }

    /// Drops the current batch without writing it.
    pub fn discard(&mut self) {
        self.pending.clear();
        self.pending_records = 0;
    }

    /// Writes the current batch and waits until it is on disk. Returns the
    /// end of the log before it, for [`rollback`](Self::rollback). On error
    /// the caller must roll back (a part of the batch may be in the file).
    #[cfg(test)]
    pub fn write(&mut self) -> io::Result<u64> {
        let mark = self.write_unsynced()?;
        self.sync(false)?;
        Ok(mark)
    }

    /// A second handle on the file, for syncing from another thread.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Writes the current batch to the file (the page cache); a
    /// `sync_data` of [`sync_handle`](Self::sync_handle) then makes it
    /// durable. Returns the end of the log before it, for
    /// [`rollback`](Self::rollback). On error the caller must roll back (a
    /// part of the batch may be in the file).
    pub fn write_unsynced(&mut self) -> io::Result<u64> {
        let mark = self.len;
        if self.pending.is_empty() {
            return Ok(mark);
        }
        let end = mark + self.pending.len() as u64;
        let result = (|| {
            if end > self.capacity {
                self.grow(end - self.capacity + PREALLOCATE)?;
            }
            self.high = self.high.max(end);
            self.dirty = self.dirty.max(end);
            self.file.seek(SeekFrom::Start(mark))?;
            self.file.write_all(&self.pending)
        })();
        if result.is_ok() {
            self.len = end;
        }
        self.discard();
        result.map(|()| mark)
    }

    /// Ends the log at `mark` again: a batch that was written but whose
    /// transaction did not commit must not be replayed (its ids will be
    /// given to other messages). Zeroes everything this epoch wrote after
    /// `mark`.
    pub fn rollback(&mut self, mark: u64) -> io::Result<()> {
        self.discard();
        let end = self.high.min(self.capacity);
        if end > mark {
            self.write_zeros(mark, end - mark)?;
            self.sync(false)?;
        }
        self.len = mark;
        self.high = mark;
        Ok(())
    }

    /// Starts a new epoch after a durable redb commit has made every
    /// record of the current one redundant: later records are written
    /// from the start again. If this fails, the log simply goes on in the
    /// current epoch (its records replay harmlessly: their keys are stored).
    pub fn clear(&mut self) -> io::Result<()> {
        self.discard();
        if self.len == FILE_HEADER {
            return Ok(());
        }
        self.epoch += 1;
        if let Err(e) = self.write_header() {
            self.epoch -= 1;
            return Err(e);
        }
        self.len = FILE_HEADER;
        self.high = FILE_HEADER;
        Ok(())
    }

    /// The current epoch (records of a higher epoch are newer).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// [`clear`](Self::clear), and the new epoch is above `other` (the
    /// other log's), so that records written here from now on replay after
    /// the other log's.
    pub fn clear_after(&mut self, other: u64) -> io::Result<()> {
        self.discard();
        let old = self.epoch;
        self.epoch = old.max(other) + 1;
        if let Err(e) = self.write_header() {
            self.epoch = old;
            return Err(e);
        }
        self.len = FILE_HEADER;
        self.high = FILE_HEADER;
        Ok(())
    }

    /// Zeroes every record of every epoch and syncs, after a durable redb
    /// commit has made them redundant, so content erased from redb (a
    /// recalled message) is not left behind in the log's bytes. Costs a
    /// write of what was logged since the last erase.
    pub fn erase(&mut self) -> io::Result<()> {
        self.clear()?;
        let end = self.dirty.min(self.capacity);
        if end > FILE_HEADER {
            self.write_zeros(FILE_HEADER, end - FILE_HEADER)?;
            self.sync(false)?;
        }
        self.dirty = FILE_HEADER;
        Ok(())
    }

    /// Where the next batch will be written (the mark a failed batch is
    /// rolled back to).
    pub fn end(&self) -> u64 {
        self.len
    }

    /// Bytes of the current epoch's records.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.len - FILE_HEADER
    }

    fn write_header(&mut self) -> io::Result<()> {
        let mut header = [0u8; FILE_HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&self.epoch.to_le_bytes());
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&header)?;
        self.sync(false)
    }

    /// Whether a sync through this handle has failed (see the field).
    pub fn sync_failed(&self) -> bool {
        self.sync_failed
    }

    fn sync(&mut self, with_size: bool) -> io::Result<()> {
        let result = if with_size { self.file.sync_all() } else { self.file.sync_data() };
        if result.is_err() {
            self.sync_failed = true;
        }
        result
    }

    /// Appends `more` zero bytes to the file and syncs them (with the size).
    fn grow(&mut self, more: u64) -> io::Result<()> {
        self.write_zeros(self.capacity, more)?;
        self.sync(true)?;
        self.capacity += more;
        Ok(())
    }

    /// Writes `len` zero bytes at `at` (not synced).
    fn write_zeros(&mut self, at: u64, len: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(at))?;
        let zeros = vec![0u8; (64 << 10).min(len as usize)];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            self.file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

/// The records a replay of the log file at `path` would read (nothing if
/// there is no such file), without opening it for writing.
pub(super) fn read_records(path: &Path) -> io::Result<Vec<Record>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(match header_epoch(&bytes) {
        Some(epoch) => decode_all(&bytes, FILE_HEADER as usize, epoch).0,
        None => Vec::new(),
    })
}

/// The epoch in the header of a log file's bytes (`None`: not a log).
fn header_epoch(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..FILE_HEADER as usize).filter(|h| h.starts_with(MAGIC))?;
    Some(u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")))
}
fn encode(out: &mut Vec<u8>, epoch: u64, conv: &str, id: u64, value: &[u8]) {
    let conv_len = u16::try_from(conv.len()).expect("conversation ids are short");
    let payload_len = MIN_PAYLOAD + conv.len() + value.len();
    out.reserve(RECORD_HEADER + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let payload_at = out.len();
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&conv_len.to_le_bytes());
    out.extend_from_slice(conv.as_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(value);
    let crc = crc32(&out[payload_at..]);
    out[crc_at..payload_at].copy_from_slice(&crc.to_le_bytes());
}

/// Every valid record of `epoch` from `start` in `bytes`, and where they end.
fn decode_all(bytes: &[u8], start: usize, epoch: u64) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = start;
    while let Some((record, size)) = decode_one(&bytes[at..], epoch) {
        records.push(record);
        at += size;
    }
    (records, at)
}

fn decode_one(bytes: &[u8], epoch: u64) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) {
        return None;
    }
    let payload = bytes.get(RECORD_HEADER..RECORD_HEADER + len)?;
    if crc32(payload) != crc || u64::from_le_bytes(payload[..8].try_into().ok()?) != epoch {
        return None;
    }
    let conv_len = u16::from_le_bytes(payload[8..10].try_into().ok()?) as usize;
    let conv = std::str::from_utf8(payload.get(10..10 + conv_len)?).ok()?.to_owned();
    let id = u64::from_le_bytes(payload.get(10 + conv_len..18 + conv_len)?.try_into().ok()?);
    let value = payload[18 + conv_len..].to_vec();
    Some((Record { conv, id, value }, RECORD_HEADER + len))
}

/// CRC-32 (IEEE 802.3, reflected), as zlib computes it.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(path: &Path) -> Vec<(u64, Vec<u8>)> {
        MessageLog::open(path).unwrap().1.into_iter().map(|r| (r.id, r.value)).collect()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = MessageLog::path_for(&dir.path().join("im.redb"));
        assert!(path.ends_with("im.redb.log"));
        {
            let (mut log, records) = MessageLog::open(&path).unwrap();
            assert!(records.is_empty());
            assert_eq!(std::fs::metadata(&path).unwrap().len(), FILE_HEADER + PREALLOCATE, "preallocated");
            log.push("g:1", 1, b"{\"b\":\"one\"}");
            log.push("d:1:2", 7, b"");
            assert_eq!(log.pending_records(), 2);
            assert_eq!(log.write().unwrap(), FILE_HEADER);
            log.push("r:3", 2, "ünïcode".as_bytes());
            log.write().unwrap();
        }
        let full = std::fs::read(&path).unwrap();
        assert_eq!(full.len() as u64, FILE_HEADER + PREALLOCATE, "written in place");
        let expected = vec![
            Record { conv: "g:1".into(), id: 1, value: b"{\"b\":\"one\"}".to_vec() },
            Record { conv: "d:1:2".into(), id: 7, value: Vec::new() },
            Record { conv: "r:3".into(), id: 2, value: "ünïcode".as_bytes().to_vec() },
        ];
        let (log, records) = MessageLog::open(&path).unwrap();
        assert_eq!(records, expected);
        let end = (FILE_HEADER + log.len()) as usize;
        let last_start = end - (RECORD_HEADER + MIN_PAYLOAD + 3 + "ünïcode".len());
        drop(log);
        // A write cut short at every possible byte (the rest still zeros, or
        // the file ending there): only whole records count.
        for cut in last_start..end {
            let mut torn = full.clone();
            torn[cut..end].fill(0);
            std::fs::write(&path, &torn).unwrap();
            let (log, records) = MessageLog::open(&path).unwrap();
            assert_eq!(records, expected[..2], "cut at {cut}");
            assert_eq!(FILE_HEADER + log.len(), last_start as u64);
            std::fs::write(&path, &full[..cut]).unwrap();
            assert_eq!(MessageLog::open(&path).unwrap().1, expected[..2], "file ends at {cut}");
        }
        // A flipped byte inside a record ends the replay before it.
        let mut corrupt = full.clone();
        corrupt[last_start + RECORD_HEADER + 11] ^= 0x40;
        std::fs::write(&path, &corrupt).unwrap();
        assert_eq!(MessageLog::open(&path).unwrap().1, expected[..2]);
    }

    #[test]
    fn rollback_and_new_epochs_leave_only_what_should_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (mut log, _) = MessageLog::open(&path).unwrap();
        log.push("g:1", 1, b"a");
        log.write().unwrap();
        log.push("g:1", 2, b"b");
        log.push("g:1", 3, b"b");
        let end = log.end();
        let mark = log.write().unwrap();
        assert_eq!(mark, end, "write returns where it began");
        log.rollback(mark).unwrap();
        assert_eq!(replayed(&path), vec![(1, b"a".to_vec())], "rolled back");
        log.push("g:1", 2, b"c");
        log.write().unwrap();
        assert_eq!(replayed(&path), vec![(1, b"a".to_vec()), (2, b"c".to_vec())]);
        // A new epoch: the old records are still in the file but never replayed.
        log.clear().unwrap();
        assert_eq!(log.len(), 0);
        assert!(replayed(&path).is_empty());
        log.push("g:1", 3, b"d");
        log.write().unwrap();
        assert_eq!(replayed(&path), vec![(3, b"d".to_vec())]);
        // Reopening continues the epoch and the end it found.
        drop(log);
        let (mut log, _) = MessageLog::open(&path).unwrap();
        log.push("g:1", 4, b"e");
        log.write().unwrap();
        assert_eq!(replayed(&path), vec![(3, b"d".to_vec()), (4, b"e".to_vec())]);
    }

    #[test]
    fn grows_past_the_preallocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (mut log, _) = MessageLog::open(&path).unwrap();
        let big = vec![7u8; 1 << 20];
        for id in 1..=6 {
            log.push("r:1", id, &big);
            log.write().unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() > FILE_HEADER + PREALLOCATE);
        let ids: Vec<u64> = replayed(&path)
            .into_iter()
            .map(|(id, v)| {
                assert_eq!(v, big);
                id
            })
            .collect();
        assert_eq!(ids, (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn refuses_a_file_that_is_not_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, b"something else entirely").unwrap();
        assert_eq!(MessageLog::open(&path).err().map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
    }
}
