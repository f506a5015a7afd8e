//! A layer's journal: the durable list of "blocks X..Y now live at physical block P of this
//! layer's data file" (or "read as zero") records from which the layer's index is rebuilt.
//!
//! Layout (version 1, little endian):
//! - two header slots of 4 KiB at offsets 0 and 4096, written alternately so a torn header
//!   write always leaves the other intact: magic `PLTRJNL1`, version u32, block size u32,
//!   sequence u64, committed length u64 (bytes of records that a flush made durable), CRC-32C;
//! - 32-byte records from offset 8192: kind u8, 3 reserved bytes, CRC-32C of the record with
//!   this field zero, start block u64, length in blocks u64, physical block u64.
//!
//! Records inside the committed length must all be valid, or the layer is damaged.
//! Records past it were appended to spare memory but never committed by a flush: recovery
//! ignores them (their writes were never acknowledged as durable) and overwrites them.
//!
//! The encoding and decoding here is pure; `JournalFile` is the thin IO wrapper.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::extent_map::Target;

pub const MAGIC: &[u8; 8] = b"PLTRJNL1";
pub const VERSION: u32 = 1;
pub const HEADER_SLOT: u64 = 4096;
pub const RECORDS_START: u64 = 2 * HEADER_SLOT;
pub const RECORD_LEN: usize = 32;
/// The only block size of format version 1.
pub const BLOCK_SIZE: u32 = 4096;
const HEADER_LEN: usize = 36;

/// What one record says about a run of blocks of this layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The run is in the data file at `phys`.
    Data { phys: u64 },
    /// The run reads as zero (masking lower layers).
    Zero { unmapped: bool },
    /// The run is no longer held by this layer (reads fall through to the layers below).
    Clear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub start: u64,
    pub len: u64,
    pub kind: RecordKind,
}

impl Record {
    /// The target this record gives its run in a chain where this layer is at `depth`.
    pub fn target(&self, depth: u16) -> Option<Target> {
        match self.kind {
            RecordKind::Data { phys } => Some(Target::Data { depth, phys }),
            RecordKind::Zero { unmapped } => Some(Target::Zero { unmapped }),
            RecordKind::Clear => None,
        }
    }

    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let (kind, phys) = match self.kind {
            RecordKind::Data { phys } => (1u8, phys),
            RecordKind::Zero { unmapped: false } => (2, 0),
            RecordKind::Zero { unmapped: true } => (3, 0),
            RecordKind::Clear => (4, 0),
        };
        let mut b = [0u8; RECORD_LEN];
        b[0] = kind;
        b[8..16].copy_from_slice(&self.start.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b[24..32].copy_from_slice(&phys.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one record; `None` for anything that is not a valid record.
    pub fn decode(b: &[u8]) -> Option<Record> {
        let b: &[u8; RECORD_LEN] = b.get(..RECORD_LEN)?.try_into().ok()?;
        let mut copy = *b;
        copy[4..8].fill(0);
        if crc32c::crc32c(&copy) != u32_at(b, 4) || b[1..4] != [0, 0, 0] {
            return None;
        }
        let (start, len, phys) = (u64_at(b, 8), u64_at(b, 16), u64_at(b, 24));
        if len == 0 || start.checked_add(len).is_none() {
            return None;
        }
        let kind = match (b[0], phys) {
            (1, p) if p.checked_add(len).is_some() => RecordKind::Data { phys: p },
            (2, 0) => RecordKind::Zero { unmapped: false },
            (3, 0) => RecordKind::Zero { unmapped: true },
            (4, 0) => RecordKind::Clear,
            _ => return None,
        };
        Some(Record { start, len, kind })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub block_size: u32,
    pub seq: u64,
    pub committed: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.committed.to_le_bytes());
        let crc = crc32c::crc32c(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header slot. `Err` carries why it is not usable.
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        let b = b.get(..HEADER_LEN).ok_or("header slot truncated")?;
        if &b[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        if crc32c::crc32c(&b[..32]) != u32_at(b, 32) {
            return Err("header checksum mismatch".into());
        }
        let version = u32_at(b, 8);
        if version != VERSION {
            return Err(format!(
                "journal version {version} is not supported (this platter knows {VERSION})"
            ));
        }
        let committed = u64_at(b, 24);
        if !committed.is_multiple_of(RECORD_LEN as u64) {
            return Err(format!(
                "committed length {committed} is not a whole number of records"
            ));
        }
        Ok(Header {
            block_size: u32_at(b, 12),
            seq: u64_at(b, 16),
            committed,
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Picks the newest valid header of the two slots.
pub fn pick_header(slot_a: &[u8], slot_b: &[u8]) -> Result<Header, String> {
    // A journal whose creation never reached the disk (its file exists, its first header
    // write was lost with a power failure) is an empty journal, not a damaged one.
    if slot_a.iter().chain(slot_b).all(|&b| b == 0) {
        return Ok(Header {
            block_size: BLOCK_SIZE,
            seq: 0,
            committed: 0,
        });
    }
    match (Header::decode(slot_a), Header::decode(slot_b)) {
        (Ok(a), Ok(b)) => Ok(if b.seq > a.seq { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(e), Err(_)) => Err(format!("no valid journal header ({e})")),
    }
}

/// Parses the record area. Returns the records and the byte length of the valid log.
pub fn parse_records(area: &[u8], committed: u64) -> Result<Vec<Record>, String> {
    let committed_area = usize::try_from(committed)
        .ok()
        .and_then(|c| area.get(..c))
        .ok_or_else(|| {
            format!(
                "journal is truncated: {} bytes of records, header says {committed} were committed",
                area.len()
            )
        })?;
    committed_area
        .chunks_exact(RECORD_LEN)
        .enumerate()
        .map(|(i, chunk)| {
            Record::decode(chunk)
                .ok_or_else(|| format!("record at byte {} is corrupt", i * RECORD_LEN))
        })
        .collect()
}

/// Why a [`JournalFile::commit`] did not commit.
#[derive(Debug)]
pub struct CommitError {
    pub error: StoreError,
    /// The journal's sync failed (not a write before it): what the file holds on disk is
    /// no longer known, and retrying the sync proves nothing.
    pub sync_failed: bool,
}

/// The journal file of one layer.
pub struct JournalFile {
    path: PathBuf,
    file: File,
    header: Header,
    /// Byte length of the record area in use (valid log end).
    end: u64,
}

impl JournalFile {
    /// Creates a new, empty journal (and syncs it).
    pub fn create(path: &Path, block_size: u32) -> Result<JournalFile> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(StoreError::io("create journal", path))?;
        let header = Header {
            block_size,
            seq: 1,
            committed: 0,
        };
        file.set_len(RECORDS_START)
            .map_err(StoreError::io("create journal", path))?;
        let mut j = JournalFile {
            path: path.to_path_buf(),
            file,
            header,
            end: 0,
        };
        // Not synced: a lost creation reads back as an empty journal (see `pick_header`).
        j.write_header()?;
        Ok(j)
    }

    /// Opens a journal and reads its records. `writable`: prepare to append.
    pub fn open(path: &Path, writable: bool) -> Result<(JournalFile, Vec<Record>)> {
        let file = File::options()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(StoreError::io("open journal", path))?;
        let len = file
            .metadata()
            .map_err(StoreError::io("stat journal", path))?
            .len();
        if len < RECORDS_START {
            return Err(StoreError::damaged(
                path,
                format!("journal is {len} bytes, shorter than its headers"),
            ));
        }
        let mut slots = vec![0u8; RECORDS_START as usize];
        file.read_exact_at(&mut slots, 0)
            .map_err(StoreError::io("read journal", path))?;
        let (a, b) = slots.split_at(HEADER_SLOT as usize);
        let header = pick_header(a, b).map_err(|e| StoreError::damaged(path, e))?;
        if header.committed > len - RECORDS_START {
            return Err(StoreError::damaged(
                path,
                format!("journal is truncated: header says {} bytes of records were committed, the file holds {}", header.committed, len - RECORDS_START),
            ));
        }
        let committed = usize::try_from(header.committed)
            .map_err(|_| StoreError::damaged(path, "journal too large"))?;
        let mut area = vec![0u8; committed];
        file.read_exact_at(&mut area, RECORDS_START)
            .map_err(StoreError::io("read journal", path))?;
        let records =
            parse_records(&area, header.committed).map_err(|e| StoreError::damaged(path, e))?;
        // Records past the committed end belong to writes no flush acknowledged: they are
        // ignored and overwritten by the next append.
        let end = header.committed;
        Ok((
            JournalFile {
                path: path.to_path_buf(),
                file,
                header,
                end,
            },
            records,
        ))
    }

    pub fn block_size(&self) -> u32 {
        self.header.block_size
    }

    /// Appends records past the committed end without making them count: they take
    /// memory off the writer and are committed (or, after a crash, ignored) later.
    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * RECORD_LEN);
        for r in records {
            buf.extend_from_slice(&r.encode());
        }
        if let Some(e) = crate::failpoint_err!("journal-append") {
            return Err(StoreError::io("append journal", &self.path)(e));
        }
        self.file
            .write_all_at(&buf, RECORDS_START + self.end)
            .map_err(StoreError::io("append journal", &self.path))?;
        self.end += buf.len() as u64;
        Ok(())
    }

    /// Appends records and commits everything appended so far: the header now counts
    /// them, durably. The caller has synced the data they point to. Returns whether
    /// anything new was committed.
    ///
    /// A failed write (say `ENOSPC` while the record area grows) leaves the journal as it
    /// was before the call, so the same records can be committed again later. A failed
    /// sync cannot be retried that way (the kernel may have dropped the pages it could
    /// not write, so a second sync may succeed without them): it says so in
    /// [`CommitError::sync_failed`], and the caller stops using this journal.
    pub fn commit(&mut self, records: &[Record]) -> Result<bool, CommitError> {
        let (end, header) = (self.end, self.header);
        let written = self.append(records).and_then(|()| {
            if self.header.committed == self.end {
                return Ok(false);
            }
            crate::failpoint!("journal-before-header");
            self.header.seq += 1;
            self.header.committed = self.end;
            self.write_header().map(|()| true)
        });
        match written {
            Ok(false) => Ok(false),
            Ok(true) => self.sync().map(|()| true).map_err(|error| CommitError {
                error,
                sync_failed: true,
            }),
            Err(error) => {
                self.end = end;
                self.header = header;
                Err(CommitError {
                    error,
                    sync_failed: false,
                })
            }
        }
    }

    fn sync(&self) -> Result<()> {
        crate::failpoint_err!("journal-sync")
            .map_or_else(|| self.file.sync_data(), Err)
            .map_err(StoreError::io("sync journal", &self.path))
    }

    /// Writes the committed records and the current header again, and syncs them: after
    /// a failed sync of this file, the pages that held them may be clean in the page
    /// cache without being on disk, and only writing them again makes them durable.
    /// `records` are the committed ones, as [`JournalFile::open`] returned them.
    pub fn rewrite_committed(&mut self, records: &[Record]) -> Result<()> {
        let buf: Vec<u8> = records.iter().flat_map(|r| r.encode()).collect();
        if buf.len() as u64 != self.header.committed {
            return Err(StoreError::damaged(
                &self.path,
                format!(
                    "{} records to rewrite, the header commits {} bytes of them",
                    records.len(),
                    self.header.committed
                ),
            ));
        }
        self.file
            .write_all_at(&buf, RECORDS_START)
            .map_err(StoreError::io("rewrite journal", &self.path))?;
        self.write_header()?;
        self.sync()
    }

    fn write_header(&mut self) -> Result<()> {
        if let Some(e) = crate::failpoint_err!("journal-write-header") {
            return Err(StoreError::io("write journal header", &self.path)(e));
        }
        let slot = (self.header.seq % 2) * HEADER_SLOT;
        self.file
            .write_all_at(&self.header.encode(), slot)
            .map_err(StoreError::io("write journal header", &self.path))
    }

    /// Number of records in the log (for compaction decisions).
    pub fn record_count(&self) -> u64 {
        self.end / RECORD_LEN as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip() {
        for kind in [
            RecordKind::Data { phys: 77 },
            RecordKind::Zero { unmapped: true },
            RecordKind::Zero { unmapped: false },
            RecordKind::Clear,
        ] {
            let r = Record {
                start: 5,
                len: 9,
                kind,
            };
            assert_eq!(Record::decode(&r.encode()), Some(r));
        }
    }

    #[test]
    fn flipped_bits_are_detected() {
        let r = Record {
            start: 5,
            len: 9,
            kind: RecordKind::Data { phys: 1 },
        }
        .encode();
        for bit in 0..RECORD_LEN * 8 {
            let mut b = r;
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Record::decode(&b), None, "bit {bit}");
        }
    }

    #[test]
    fn newest_valid_header_wins() {
        let a = Header {
            block_size: 4096,
            seq: 4,
            committed: 64,
        }
        .encode();
        let b = Header {
            block_size: 4096,
            seq: 5,
            committed: 96,
        }
        .encode();
        assert_eq!(pick_header(&a, &b).unwrap().seq, 5);
        let mut torn = b;
        torn[20] ^= 1;
        assert_eq!(pick_header(&a, &torn).unwrap().seq, 4);
        assert!(pick_header(&torn, &torn).is_err());
    }

    #[test]
    fn committed_corruption_is_damage_and_the_tail_is_ignored() {
        let recs: Vec<u8> = (0..4)
            .flat_map(|i| {
                Record {
                    start: i,
                    len: 1,
                    kind: RecordKind::Data { phys: i },
                }
                .encode()
            })
            .collect();
        assert_eq!(parse_records(&recs, 64).unwrap().len(), 2);
        assert_eq!(parse_records(&recs, 128).unwrap().len(), 4);
        let mut bad = recs.clone();
        bad[100] ^= 1;
        assert_eq!(
            parse_records(&bad, 64).unwrap().len(),
            2,
            "uncommitted records are never read"
        );
        assert!(parse_records(&bad, 128).is_err());
        assert!(parse_records(&recs[..40], 64).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), committed in 0u64..400) {
            let _ = Record::decode(&bytes);
            let _ = Header::decode(&bytes);
            let _ = parse_records(&bytes, committed);
            let half = bytes.len() / 2;
            let _ = pick_header(&bytes[..half], &bytes[half..]);
        }
    }
}
