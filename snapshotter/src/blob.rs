//! A blob: the files that hold one layer's blocks (`data`, sparse, addressed by physical
//! block) and the journal that maps logical blocks to them.
//!
//! Blobs live in `STORE/blobs/<name>/`: `w-<id>` while writable or frozen, `sha256-<hex>`
//! once sealed. Reads and writes of block contents go through this type only, so that a
//! blob fetched lazily from a registry can later take the place of a local file.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{fadvise, fallocate, Advice, FallocateFlags};

use crate::error::{Result, StoreError};
use crate::journal::{JournalFile, Record};

pub const DATA_FILE: &str = "data";
pub const JOURNAL_FILE: &str = "journal";
/// Largest single write to a data file (see [`Blob::write_at`]).
const WRITE_PIECE: usize = 64 << 10;

pub struct Blob {
    dir: PathBuf,
    data: File,
    /// Highest data offset written through this handle, and how far writeback was started
    /// (see [`Blob::start_writeback`]).
    written_end: AtomicU64,
    writeback_mark: AtomicU64,
}

impl Blob {
    /// Creates a new, empty, writable blob directory.
    pub fn create(blobs_dir: &Path, name: &str, block_size: u32) -> Result<(Blob, JournalFile)> {
        let dir = blobs_dir.join(name);
        std::fs::create_dir(&dir).map_err(StoreError::io("create blob directory", &dir))?;
        let data_path = dir.join(DATA_FILE);
        let data = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&data_path)
            .map_err(StoreError::io("create blob data", &data_path))?;
        let journal = JournalFile::create(&dir.join(JOURNAL_FILE), block_size)?;
        // The directory entries are synced before any metadata commit names this blob:
        // else a power cut could keep the commit and lose the blob's directory or files
        // (the store would then be damaged). Their contents need no sync: a data file
        // that lost its writes is what an empty layer holds, and a journal whose header
        // never reached the disk reads as empty (`journal::recover`).
        sync_dir(&dir)?;
        sync_dir(blobs_dir)?;
        Ok((Blob::new(dir, data), journal))
    }

    /// Opens a blob and reads its records. `writable` for the top layer of a volume.
    pub fn open(
        blobs_dir: &Path,
        name: &str,
        writable: bool,
    ) -> Result<(Blob, JournalFile, Vec<Record>)> {
        let dir = blobs_dir.join(name);
        let data_path = dir.join(DATA_FILE);
        let data = File::options()
            .read(true)
            .write(writable)
            .open(&data_path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    StoreError::damaged(&data_path, "blob data file is missing")
                }
                _ => StoreError::io("open blob data", &data_path)(e),
            })?;
        let (journal, records) = JournalFile::open(&dir.join(JOURNAL_FILE), writable)?;
        Ok((Blob::new(dir, data), journal, records))
    }

    fn new(dir: PathBuf, data: File) -> Blob {
        // No readahead: it fills the cache with folios up to 2 MiB, and every later 4 KiB
        // write into one walks all its buffer heads (ext4): in-place 4 KiB writes after a
        // cold sequential read ran at 24k instead of 140k IOPS. Guests read ahead for
        // themselves (and qemu's usual cache=none has no host readahead at all); the
        // price is cold 1 MiB sequential reads, 0.75 instead of 1.1 GiB/s here. A hint:
        // a kernel that refuses it changes nothing else.
        let _ = fadvise(&data, 0, 0, Advice::Random);
        Blob {
            dir,
            data,
            written_end: AtomicU64::new(0),
            writeback_mark: AtomicU64::new(0),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads block contents; bytes past the end of the data file read as zeros (a run
    /// whose tail was punched or never reached the file).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = match self.data.read_at(&mut buf[done..], offset + done as u64) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("read blob", self.dir.join(DATA_FILE))(e)),
            };
            if n == 0 {
                buf[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }

    /// Writes block contents in pieces of at most [`WRITE_PIECE`] bytes: the page cache
    /// sizes a new folio after the write that creates it, and on ext4 every later write
    /// into a folio walks all of its buffer heads, so a 4 KiB overwrite of data that went
    /// in as one 1 MiB write costs 256 times the bookkeeping (measured: 38k vs 105k
    /// in-place 4 KiB writes per second through NBD).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        for (i, piece) in buf.chunks(WRITE_PIECE).enumerate() {
            self.write_bulk(piece, offset + (i * WRITE_PIECE) as u64)?;
        }
        Ok(())
    }

    /// Writes block contents in one piece: large folios make a bulk write (an import)
    /// cheaper. Imports are snapshotted and cloned far more often than rewritten in
    /// place, and clones write to layers of their own.
    pub fn write_bulk(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.data
            .write_all_at(buf, offset)
            .map_err(StoreError::io("write blob", self.dir.join(DATA_FILE)))?;
        self.written_end
            .fetch_max(offset + buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Starts (does not wait for) writeback of the data written since the last call, so a
    /// bulk writer's final flush has little left to do and the disk works while the
    /// writer produces more. Only the new range is named: pages written back earlier stay
    /// cached (`DONTNEED` drops clean pages only, and the new ones are still dirty).
    pub fn start_writeback(&self) -> Result<()> {
        let end = self.written_end.load(Ordering::Relaxed);
        let from = self.writeback_mark.swap(end, Ordering::Relaxed).min(end);
        if end == from {
            return Ok(());
        }
        fadvise(&self.data, from, end - from, Advice::DontNeed).map_err(|e| {
            StoreError::io("start writeback of blob", self.dir.join(DATA_FILE))(e.into())
        })
    }

    pub fn sync(&self) -> Result<()> {
        let injected = crate::failpoint_err!("blob-data-sync");
        injected
            .map_or_else(|| self.data.sync_data(), Err)
            .map_err(StoreError::io("sync blob", self.dir.join(DATA_FILE)))
    }

    /// Gives the space of a byte range back to the filesystem.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        fallocate(
            &self.data,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .map_err(|e| StoreError::io("punch hole in blob", self.dir.join(DATA_FILE))(e.into()))
    }

    /// Bytes the filesystem has allocated for this blob's data and journal.
    pub fn allocated_bytes(&self) -> u64 {
        let data = self.data.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
        let journal = std::fs::metadata(self.dir.join(JOURNAL_FILE))
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        data + journal
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync directory", dir))
}

/// Bytes allocated below a directory (for `gc` reports).
pub fn dir_allocated_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_allocated_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}
