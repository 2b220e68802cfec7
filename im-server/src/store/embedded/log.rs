//! The message log: a file next to the redb file that makes appends durable
//! between two durable redb commits.
//!
//! A batch made only of appends is written here and fsynced (one
//! `fdatasync` for the whole batch) before its redb transaction commits
//! *without* durability; a durable redb commit (a checkpoint) then empties
//! the log. A durable redb commit costs 3–5× the CPU of a non-durable one
//! (copy-on-write pages written and freed per commit), so this is what lets
//! the store keep up with many small conversations' group commits; see
//! `docs/benchmarks.md`.
//!
//! On open, the records of the log are replayed into redb (those not there
//! yet) in one durable commit, and the log is emptied. A record is written
//! before its transaction commits, so anything a reader or an ack ever saw
//! is in the log or durable in redb; a torn record at the end (a crash
//! during the write) fails its checksum and ends the replay, and it was
//! never acknowledged.
//!
//! Record: `len: u32 LE`, `crc32(payload): u32 LE`, then `len` bytes of
//! payload: `conv_len: u16 LE`, the conversation's string form, `id: u64
//! LE`, and the message's value exactly as the messages table stores it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest payload a record may have; a longer length field means a
/// corrupt (torn) record.
const MAX_PAYLOAD: usize = 64 << 20;
const HEADER: usize = 8;

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
    /// Bytes of complete, synced records in the file.
    len: u64,
    /// Encoded records of the current batch, not written yet.
    pending: Vec<u8>,
    pending_records: usize,
}

impl MessageLog {
    /// The log's path for the redb file at `db`: `<db>.log`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".log");
        PathBuf::from(name)
    }

    /// Opens (creating) the log and reads its records: every complete,
    /// checksummed record from the start up to the first that is not.
    pub fn open(path: &Path) -> io::Result<(Self, Vec<Record>)> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, valid) = decode_all(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                ignored_bytes = bytes.len() - valid,
                "message log ends in an incomplete record (a write cut short); it was never acknowledged"
            );
        }
        let log = Self { file, len: valid as u64, pending: Vec::new(), pending_records: 0 };
        Ok((log, records))
    }

    /// Adds a record to the current batch.
    pub fn push(&mut self, conv: &str, id: u64, value: &[u8]) {
        encode(&mut self.pending, conv, id, value);
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
    /// file length before it, for [`rollback`](Self::rollback). On error the
    /// caller must roll back (a part of the batch may be in the file).
    pub fn write(&mut self) -> io::Result<u64> {
        let mark = self.len;
        if self.pending.is_empty() {
            return Ok(mark);
        }
        let result = (|| {
            self.file.seek(SeekFrom::Start(mark))?;
            self.file.write_all(&self.pending)?;
            self.file.sync_data()
        })();
        if result.is_ok() {
            self.len += self.pending.len() as u64;
        }
        self.discard();
        result.map(|()| mark)
    }

    /// Cuts the file back to `mark` (a batch that was written but whose
    /// transaction did not commit must not be replayed: its ids will be
    /// given to other messages).
    pub fn rollback(&mut self, mark: u64) -> io::Result<()> {
        self.discard();
        self.file.set_len(mark)?;
        self.file.sync_data()?;
        self.len = mark;
        Ok(())
    }

    /// Empties the log after a durable redb commit has made every record
    /// in it redundant. Not synced: should the truncation be lost in a
    /// crash, the old records come back and replay skips them (their keys
    /// are stored), and records written after it are synced together with
    /// the new length.
    pub fn clear(&mut self) -> io::Result<()> {
        self.discard();
        if self.len > 0 {
            self.file.set_len(0)?;
            self.len = 0;
        }
        Ok(())
    }

    /// Bytes of records in the file.
    pub fn len(&self) -> u64 {
        self.len
    }
}

fn encode(out: &mut Vec<u8>, conv: &str, id: u64, value: &[u8]) {
    let conv_len = u16::try_from(conv.len()).expect("conversation ids are short");
    let payload_len = 2 + conv.len() + 8 + value.len();
    out.reserve(HEADER + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let payload_at = out.len();
    out.extend_from_slice(&conv_len.to_le_bytes());
    out.extend_from_slice(conv.as_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(value);
    let crc = crc32(&out[payload_at..]);
    out[crc_at..payload_at].copy_from_slice(&crc.to_le_bytes());
}

/// Every valid record from the start of `bytes`, and how many bytes they span.
fn decode_all(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, size)) = decode_one(&bytes[at..]) {
        records.push(record);
        at += size;
    }
    (records, at)
}

fn decode_one(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let payload = bytes.get(HEADER..HEADER + len)?;
    if crc32(payload) != crc {
        return None;
    }
    let conv_len = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?) as usize;
    let conv = std::str::from_utf8(payload.get(2..2 + conv_len)?).ok()?.to_owned();
    let id = u64::from_le_bytes(payload.get(2 + conv_len..10 + conv_len)?.try_into().ok()?);
    let value = payload.get(10 + conv_len..)?.to_vec();
    Some((Record { conv, id, value }, HEADER + len))
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
            log.push("g:1", 1, b"{\"b\":\"one\"}");
            log.push("d:1:2", 7, b"");
            assert_eq!(log.pending_records(), 2);
            assert_eq!(log.write().unwrap(), 0);
            log.push("r:3", 2, "ünïcode".as_bytes());
            log.write().unwrap();
        }
        let full = std::fs::read(&path).unwrap();
        let expected = vec![
            Record { conv: "g:1".into(), id: 1, value: b"{\"b\":\"one\"}".to_vec() },
            Record { conv: "d:1:2".into(), id: 7, value: Vec::new() },
            Record { conv: "r:3".into(), id: 2, value: "ünïcode".as_bytes().to_vec() },
        ];
        assert_eq!(MessageLog::open(&path).unwrap().1, expected);
        // A write cut short at every possible byte: only whole records count.
        let last_start = full.len() - (HEADER + 2 + 3 + 8 + "ünïcode".len());
        for cut in last_start..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (log, records) = MessageLog::open(&path).unwrap();
            assert_eq!(records, expected[..2], "cut at {cut}");
            assert_eq!(log.len(), last_start as u64);
        }
        // A flipped byte inside a record ends the replay before it.
        let mut corrupt = full.clone();
        corrupt[last_start + HEADER + 3] ^= 0x40;
        std::fs::write(&path, &corrupt).unwrap();
        assert_eq!(MessageLog::open(&path).unwrap().1, expected[..2]);
    }

    #[test]
    fn rollback_and_clear_leave_only_what_should_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (mut log, _) = MessageLog::open(&path).unwrap();
        log.push("g:1", 1, b"a");
        log.write().unwrap();
        log.push("g:1", 2, b"b");
        let mark = log.write().unwrap();
        log.rollback(mark).unwrap();
        log.push("g:1", 2, b"c");
        log.write().unwrap();
        let ids: Vec<_> = MessageLog::open(&path).unwrap().1.into_iter().map(|r| (r.id, r.value)).collect();
        assert_eq!(ids, vec![(1, b"a".to_vec()), (2, b"c".to_vec())]);
        log.clear().unwrap();
        assert_eq!(log.len(), 0);
        assert!(MessageLog::open(&path).unwrap().1.is_empty());
        log.push("g:1", 3, b"d");
        log.write().unwrap();
        assert_eq!(MessageLog::open(&path).unwrap().1.len(), 1);
    }
}
