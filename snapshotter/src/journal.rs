//! A layer's journal: the durable list of "blocks X..Y now live at physical block P of this
//! layer's data file" (or "read as zero") records from which the layer's index is rebuilt.
//!
//! Layout (version 2, little endian; version 1 files are read and continued):
//! - two header slots of 4 KiB at offsets 0 and 4096, written alternately (`seq % 2`) so a
//!   torn header write always leaves the other intact: magic `PLTRJNL1`, version u32, block
//!   size u32, sequence u64, committed length u64 (bytes of records that flushes made
//!   durable), start u64 (where this commit's records begin; version 2 only), CRC-32C;
//! - 32-byte records from offset 8192: kind u8, the low 24 bits of the sequence of the
//!   commit that wrote it (its *tag*; zero in version 1), CRC-32C of the record with this
//!   field zero, start block u64, length in blocks u64, physical block u64.
//!
//! A commit appends its records, writes its header and syncs once. A power cut during that
//! sync may leave any subset of those pages on disk, so recovery ([`recover`]) checks the
//! newest header's own records (`start..committed`): each must carry the header's tag. One
//! that reads as zeros, or as a valid record of another commit, was simply not written:
//! the commit never completed (no flush acknowledged it), and recovery falls back to the
//! other slot. A record that fails its CRC is damage, as is any bad record before `start`
//! (those were synced by earlier commits). Records past the committed length were appended
//! to spare memory and never committed: ignored and overwritten.
//!
//! Sequence numbers after an open for writing skip ahead (see [`JournalFile::open`]) so a
//! new commit never carries the tag of records a crashed process left behind, and lands in
//! the slot that does not hold the header recovery chose.
//!
//! The encoding and decoding here is pure; `JournalFile` is the thin IO wrapper.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::extent_map::Target;

pub const MAGIC: &[u8; 8] = b"PLTRJNL1";
pub const VERSION: u32 = 2;
pub const HEADER_SLOT: u64 = 4096;
pub const RECORDS_START: u64 = 2 * HEADER_SLOT;
pub const RECORD_LEN: usize = 32;
/// The most blocks whose byte offsets fit in a file offset (journals of another block
/// size are refused on open).
const MAX_BLOCKS: u64 = (i64::MAX as u64) / BLOCK_SIZE as u64;
/// The only block size of format version 1.
pub const BLOCK_SIZE: u32 = 4096;
/// Header bytes (version 1 had no `start` and was 36 bytes long).
const HEADER_LEN: usize = 44;
const HEADER_LEN_V1: usize = 36;
/// Bits of the commit sequence a record carries.
const TAG_MASK: u64 = 0xFF_FFFF;

/// The tag records written by commit `seq` carry.
pub fn tag_of(seq: u64) -> u32 {
    (seq & TAG_MASK) as u32
}

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

    /// The record's bytes, tagged with commit `tag` (see [`tag_of`]).
    pub fn encode(&self, tag: u32) -> [u8; RECORD_LEN] {
        let (kind, phys) = match self.kind {
            RecordKind::Data { phys } => (1u8, phys),
            RecordKind::Zero { unmapped: false } => (2, 0),
            RecordKind::Zero { unmapped: true } => (3, 0),
            RecordKind::Clear => (4, 0),
        };
        let mut b = [0u8; RECORD_LEN];
        b[0] = kind;
        b[1..4].copy_from_slice(&tag.to_le_bytes()[..3]);
        b[8..16].copy_from_slice(&self.start.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b[24..32].copy_from_slice(&phys.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one record; `None` for anything that is not a valid record.
    pub fn decode(b: &[u8]) -> Option<Record> {
        Record::decode_tagged(b).map(|(r, _)| r)
    }

    /// Decodes one record and the tag of the commit that wrote it.
    pub fn decode_tagged(b: &[u8]) -> Option<(Record, u32)> {
        let b: &[u8; RECORD_LEN] = b.get(..RECORD_LEN)?.try_into().ok()?;
        let mut copy = *b;
        copy[4..8].fill(0);
        if crc32c::crc32c(&copy) != u32_at(b, 4) {
            return None;
        }
        let tag = u32::from_le_bytes([b[1], b[2], b[3], 0]);
        let (start, len, phys) = (u64_at(b, 8), u64_at(b, 16), u64_at(b, 24));
        // Blocks are addressed as byte offsets of a file (an i64): a run that ends past that
        // is damage, not a position to wrap around to.
        let fits = |first: u64| first.checked_add(len).is_some_and(|end| end <= MAX_BLOCKS);
        if len == 0 || !fits(start) {
            return None;
        }
        let kind = match (b[0], phys) {
            (1, p) if fits(p) => RecordKind::Data { phys: p },
            (2, 0) => RecordKind::Zero { unmapped: false },
            (3, 0) => RecordKind::Zero { unmapped: true },
            (4, 0) => RecordKind::Clear,
            _ => return None,
        };
        Some((Record { start, len, kind }, tag))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub block_size: u32,
    pub seq: u64,
    pub committed: u64,
    /// Where the records of the commit that wrote this header begin (0 in version 1).
    pub start: u64,
}

impl Header {
    /// A version 2 header.
    pub fn new(block_size: u32, seq: u64, committed: u64, start: u64) -> Header {
        Header {
            version: VERSION,
            block_size,
            seq,
            committed,
            start,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.committed.to_le_bytes());
        b[32..40].copy_from_slice(&self.start.to_le_bytes());
        let crc = crc32c::crc32c(&b[..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header slot (version 1 or 2). `Err` carries why it is not usable.
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        let head = b.get(..HEADER_LEN_V1).ok_or("header slot truncated")?;
        if &head[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        let version = u32_at(head, 8);
        let (len, start) = match version {
            1 => (HEADER_LEN_V1, 0),
            2 => {
                let b = b.get(..HEADER_LEN).ok_or("header slot truncated")?;
                (HEADER_LEN, u64_at(b, 32))
            }
            v => {
                return Err(format!(
                    "journal version {v} is not supported (this platter knows 1 and {VERSION})"
                ))
            }
        };
        if crc32c::crc32c(&b[..len - 4]) != u32_at(b, len - 4) {
            return Err("header checksum mismatch".into());
        }
        let committed = u64_at(b, 24);
        if !committed.is_multiple_of(RECORD_LEN as u64)
            || !start.is_multiple_of(RECORD_LEN as u64)
            || start > committed
        {
            return Err(format!(
                "committed length {committed} or start {start} is not a whole number of records"
            ));
        }
        Ok(Header {
            version,
            block_size: u32_at(b, 12),
            seq: u64_at(b, 16),
            committed,
            start,
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

/// What recovery found: the header to use, its records, and whether the newest header
/// was passed over because its commit never completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub header: Header,
    pub records: Vec<Record>,
    pub fell_back: bool,
    /// The highest sequence either slot holds (valid or passed over).
    pub newest_seq: u64,
}

/// How one header's records checked out.
enum Check {
    Good(Vec<Record>),
    /// Some of its own records were never written: its commit did not complete.
    Incomplete(String),
}

/// Picks the header and records to use from the two header slots and the record area
/// (the bytes from offset 8192 to the end of the file, or as many as the headers cover).
pub fn recover(slot_a: &[u8], slot_b: &[u8], area: &[u8]) -> Result<Recovered, String> {
    // A journal whose creation never reached the disk (its file exists, its first header
    // write was lost with a power failure) is an empty journal, not a damaged one.
    if slot_a.iter().chain(slot_b).all(|&b| b == 0) {
        return Ok(Recovered {
            header: Header::new(BLOCK_SIZE, 0, 0, 0),
            records: Vec::new(),
            fell_back: false,
            newest_seq: 0,
        });
    }
    let mut valid: Vec<Header> = Vec::new();
    let mut why = String::new();
    for slot in [slot_a, slot_b] {
        match Header::decode(slot) {
            Ok(h) => valid.push(h),
            Err(e) => why = e,
        }
    }
    valid.sort_by_key(|h| std::cmp::Reverse(h.seq));
    let Some(newest) = valid.first().copied() else {
        return Err(format!("no valid journal header ({why})"));
    };
    let mut last_problem = String::new();
    for (i, h) in valid.iter().enumerate() {
        match check(h, area)? {
            Check::Good(records) => {
                return Ok(Recovered {
                    header: *h,
                    records,
                    fell_back: i > 0,
                    newest_seq: newest.seq,
                })
            }
            Check::Incomplete(problem) => last_problem = problem,
        }
    }
    Err(format!(
        "the newest commit is incomplete ({last_problem}) and no older header holds"
    ))
}

/// Checks a header's records: those before its `start` must all be valid (earlier
/// commits synced them); its own must carry its tag, or read as never written.
fn check(h: &Header, area: &[u8]) -> Result<Check, String> {
    let start = usize::try_from(h.start).map_err(|_| "journal too large")?;
    let end = usize::try_from(h.committed).map_err(|_| "journal too large")?;
    let earlier = area.get(..start).ok_or_else(|| {
        format!(
            "journal is truncated: {} bytes of records, header says {start} were committed before seq {}",
            area.len(),
            h.seq
        )
    })?;
    let mut records = parse_records(earlier)?;
    if h.version == 1 {
        // No tags: every committed record must be valid.
        let own = area.get(start..end).ok_or_else(|| {
            format!(
                "journal is truncated: {} bytes of records, header says {end} were committed",
                area.len()
            )
        })?;
        records.extend(parse_records(own).map_err(|e| shift(&e, start))?);
        return Ok(Check::Good(records));
    }
    let tag = tag_of(h.seq);
    for at in (start..end).step_by(RECORD_LEN) {
        // Past the end of the file: the file's growth was not written either.
        let bytes = area.get(at..at + RECORD_LEN).unwrap_or(&[0u8; RECORD_LEN]);
        match Record::decode_tagged(bytes) {
            Some((r, t)) if t == tag => records.push(r),
            Some((_, t)) => {
                return Ok(Check::Incomplete(format!(
                    "record at byte {at} is from commit {t}, not {tag}"
                )))
            }
            None if bytes.iter().all(|&b| b == 0) => {
                return Ok(Check::Incomplete(format!(
                    "record at byte {at} was never written"
                )))
            }
            None => return Err(format!("record at byte {at} is corrupt")),
        }
    }
    Ok(Check::Good(records))
}

fn shift(e: &str, by: usize) -> String {
    format!("{e} (after byte {by})")
}

/// Parses records that must all be valid.
pub fn parse_records(area: &[u8]) -> Result<Vec<Record>, String> {
    if !area.len().is_multiple_of(RECORD_LEN) {
        return Err(format!(
            "record area of {} bytes is not whole records",
            area.len()
        ));
    }
    area.chunks_exact(RECORD_LEN)
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
        let header = Header::new(block_size, 1, 0, 0);
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
        // Read as much of the record area as either header covers (no more than the file).
        let covered = [a, b]
            .iter()
            .filter_map(|s| Header::decode(s).ok())
            .map(|h| h.committed)
            .max()
            .unwrap_or(0)
            .min(len - RECORDS_START);
        let covered =
            usize::try_from(covered).map_err(|_| StoreError::damaged(path, "journal too large"))?;
        let mut area = vec![0u8; covered];
        file.read_exact_at(&mut area, RECORDS_START)
            .map_err(StoreError::io("read journal", path))?;
        let found = recover(a, b, &area).map_err(|e| StoreError::damaged(path, e))?;
        if found.fell_back {
            tracing::warn!(journal = %path.display(), seq = found.newest_seq, "the newest commit did not complete before a crash; using the one before it");
        }
        if found.header.block_size != BLOCK_SIZE {
            return Err(StoreError::damaged(
                path,
                format!(
                    "block size {} (this platter uses {BLOCK_SIZE})",
                    found.header.block_size
                ),
            ));
        }
        // The next commit is newest + 2 or + 3, whichever lands in the slot that does not
        // hold the header chosen: never the tag of records a crashed writer left past the
        // committed end (at most newest + 1), never over the header recovery relies on.
        let mut header = found.header;
        header.seq = found.header.seq + 2;
        let end = header.committed;
        Ok((
            JournalFile {
                path: path.to_path_buf(),
                file,
                header,
                end,
            },
            found.records,
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
        let tag = tag_of(self.header.seq + 1);
        let mut buf = Vec::with_capacity(records.len() * RECORD_LEN);
        for r in records {
            buf.extend_from_slice(&r.encode(tag));
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
            self.header.version = VERSION;
            self.header.seq += 1;
            self.header.start = self.header.committed;
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

    /// Writes the committed records and then the header again, syncing each: after a
    /// failed sync of this file, the pages that held them may be clean in the page cache
    /// without being on disk, and only writing them again makes them durable.
    pub fn rewrite_committed(&mut self) -> Result<()> {
        let len = usize::try_from(self.header.committed)
            .map_err(|_| StoreError::damaged(&self.path, "journal too large"))?;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, RECORDS_START)
            .map_err(StoreError::io("read journal", &self.path))?;
        self.file
            .write_all_at(&buf, RECORDS_START)
            .map_err(StoreError::io("rewrite journal", &self.path))?;
        self.sync()?;
        // Then the header recovery chose, again in its own slot: a torn write of it leaves
        // the other slot, whose commit came before. A version 1 header becomes version 2
        // with every record counted as earlier (version 1 records carry no tag).
        let next = self.header;
        self.header.seq -= 2;
        if self.header.version == 1 {
            self.header.start = self.header.committed;
        }
        let written = self.write_header();
        self.header = next;
        written?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(i: u64) -> Record {
        Record {
            start: i,
            len: 1,
            kind: RecordKind::Data { phys: i },
        }
    }

    fn slot(h: &Header) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SLOT as usize];
        b[..HEADER_LEN].copy_from_slice(&h.encode());
        b
    }

    /// The record area after commits of `sizes` records each (commit k has seq k + 2,
    /// as after creation), and the headers of the last two commits.
    fn journal(sizes: &[u64]) -> (Vec<u8>, Vec<Header>) {
        let mut area = Vec::new();
        let mut headers = vec![Header::new(BLOCK_SIZE, 1, 0, 0)];
        let mut n = 0;
        for (k, &size) in sizes.iter().enumerate() {
            let seq = k as u64 + 2;
            let start = area.len() as u64;
            for _ in 0..size {
                area.extend_from_slice(&rec(n).encode(tag_of(seq)));
                n += 1;
            }
            headers.push(Header::new(BLOCK_SIZE, seq, area.len() as u64, start));
        }
        (area, headers)
    }

    fn recover_last_two(area: &[u8], headers: &[Header]) -> Result<Recovered, String> {
        let (a, b) = (&headers[headers.len() - 1], &headers[headers.len() - 2]);
        let (even, odd) = if a.seq % 2 == 0 { (a, b) } else { (b, a) };
        recover(&slot(even), &slot(odd), area)
    }

    /// A record whose CRC checks out but whose run ends past any file offset is damage:
    /// before, physical block 2^62 wrapped to byte offset 0.
    #[test]
    fn runs_past_a_file_offset_are_not_records() {
        let far = Record {
            start: 0,
            len: 1,
            kind: RecordKind::Data { phys: 1 << 62 },
        };
        assert_eq!(Record::decode_tagged(&far.encode(1)), None);
        let high = Record {
            start: MAX_BLOCKS,
            len: 1,
            kind: RecordKind::Zero { unmapped: true },
        };
        assert_eq!(Record::decode_tagged(&high.encode(1)), None);
        let last = Record {
            start: MAX_BLOCKS - 1,
            len: 1,
            kind: RecordKind::Data {
                phys: MAX_BLOCKS - 1,
            },
        };
        assert_eq!(Record::decode_tagged(&last.encode(1)), Some((last, 1)));
    }

    #[test]
    fn records_round_trip_with_their_tag() {
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
            assert_eq!(
                Record::decode_tagged(&r.encode(0xAB_CDEF)),
                Some((r, 0xAB_CDEF))
            );
        }
        assert_eq!(tag_of(0x0123_4567), 0x0023_4567);
    }

    #[test]
    fn flipped_bits_are_detected() {
        let r = rec(1).encode(7);
        for bit in 0..RECORD_LEN * 8 {
            let mut b = r;
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Record::decode(&b), None, "bit {bit}");
        }
    }

    #[test]
    fn headers_round_trip_and_version_1_is_read() {
        let h = Header::new(4096, 9, 320, 64);
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        // Version 1: 36 bytes, no start.
        let mut v1 = [0u8; HEADER_LEN_V1];
        v1[0..8].copy_from_slice(MAGIC);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        v1[12..16].copy_from_slice(&4096u32.to_le_bytes());
        v1[16..24].copy_from_slice(&5u64.to_le_bytes());
        v1[24..32].copy_from_slice(&64u64.to_le_bytes());
        let crc = crc32c::crc32c(&v1[..32]);
        v1[32..36].copy_from_slice(&crc.to_le_bytes());
        let d = Header::decode(&v1).unwrap();
        assert_eq!((d.version, d.seq, d.committed, d.start), (1, 5, 64, 0));
        // A version 1 journal's records (tag 0) all count.
        let area: Vec<u8> = (0..2).flat_map(|i| rec(i).encode(0)).collect();
        let r = recover(&v1, &[0u8; 64], &area).unwrap();
        assert_eq!(r.records.len(), 2);
        let mut bad = h.encode();
        bad[20] ^= 1;
        assert!(Header::decode(&bad).is_err());
    }

    #[test]
    fn a_complete_commit_is_used() {
        let (area, headers) = journal(&[3, 2]);
        let r = recover_last_two(&area, &headers).unwrap();
        assert_eq!((r.header.seq, r.records.len(), r.fell_back), (3, 5, false));
    }

    /// A power cut during the newest commit's sync: its header reached the disk, some of
    /// its records did not (zeros, or the file never grew). The commit before it is used.
    #[test]
    fn an_incomplete_newest_commit_falls_back_to_the_one_before() {
        let (area, headers) = journal(&[3, 2]);
        for lost in [3 * 32, 4 * 32] {
            let mut torn = area.clone();
            torn[lost..lost + 32].fill(0);
            let r = recover_last_two(&torn, &headers).unwrap();
            assert_eq!(
                (r.header.seq, r.records.len(), r.fell_back),
                (2, 3, true),
                "{lost}"
            );
            assert_eq!(r.newest_seq, 3);
        }
        let r = recover_last_two(&area[..3 * 32], &headers).unwrap();
        assert_eq!(
            (r.header.seq, r.records.len()),
            (2, 3),
            "the file's growth was lost"
        );
    }

    /// Records a crashed writer appended past the committed end carry another commit's
    /// tag: where the newest commit's own records should be, they mean it is incomplete.
    #[test]
    fn stale_records_of_another_commit_are_never_taken() {
        let (mut area, headers) = journal(&[3, 2]);
        area[3 * 32..4 * 32].copy_from_slice(&rec(99).encode(tag_of(7)));
        let r = recover_last_two(&area, &headers).unwrap();
        assert!(r.fell_back && r.records.len() == 3);
        assert!(!r.records.contains(&rec(99)));
    }

    #[test]
    fn corruption_is_damage_and_the_tail_is_ignored() {
        let (mut area, headers) = journal(&[3, 2]);
        // A corrupt record of the newest commit (not zeros, not another commit's).
        let mut bad = area.clone();
        bad[3 * 32 + 9] ^= 1;
        assert!(recover_last_two(&bad, &headers)
            .unwrap_err()
            .contains("corrupt"));
        // A bad record of an earlier commit: synced long ago, so damage.
        let mut bad = area.clone();
        bad[32..64].fill(0);
        assert!(recover_last_two(&bad, &headers).is_err());
        // Bytes past the committed end are never read.
        area.extend_from_slice(&[0xEE; 64]);
        assert_eq!(recover_last_two(&area, &headers).unwrap().records.len(), 5);
        // No valid header at all.
        assert!(recover(&[1u8; 64], &[2u8; 64], &area).is_err());
        // Never created on disk: empty, not damaged.
        assert!(recover(&[0u8; 64], &[0u8; 64], &[])
            .unwrap()
            .records
            .is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Record::decode(&bytes);
            let _ = Header::decode(&bytes);
            let _ = parse_records(&bytes);
            let third = bytes.len() / 3;
            let _ = recover(&bytes[..third], &bytes[third..2 * third], &bytes[2 * third..]);
        }

        /// Any subset of the newest commit's record pages lost: recovery gives the newest
        /// commit whole or the one before it whole, never a mix.
        #[test]
        fn a_torn_commit_is_all_or_nothing(first in 1u64..300, second in 1u64..300, lost in proptest::collection::vec(any::<bool>(), 0..80)) {
            let (area, headers) = journal(&[first, second]);
            let mut torn = area.clone();
            let first_page = (first * 32) as usize / 4096;
            for (i, l) in lost.iter().enumerate() {
                let page = first_page + i;
                if *l && page * 4096 < torn.len() {
                    let from = (page * 4096).max(first as usize * 32);
                    let to = ((page + 1) * 4096).min(torn.len());
                    torn[from..to].fill(0);
                }
            }
            let r = recover_last_two(&torn, &headers).unwrap();
            let want = if torn == area { first + second } else { first };
            prop_assert_eq!(r.records.len() as u64, want);
        }
    }
}
