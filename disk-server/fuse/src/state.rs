//! What the mounted filesystem knows and does, as plain methods that answer `Result<_,
//! Errno>`: inode table, open file and directory handles, attributes, and the IO of each
//! request against the store's volumes. `fs` only adapts these to fuser's reply objects.
//!
//! Locks here guard small tables and are never held across volume IO, so requests on
//! different files (and reads of one file) run in parallel on fuser's worker threads.
//! Nothing a process sends may panic: lengths are bounded, sums checked.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use parking_lot::Mutex;
use platter_snapshotter::{Kind, Store, StoreError, Volume, VolumeInfo, BLOCK};
use platter_types::VolumeRef;

use crate::error::errno;
use crate::names::{self, Inodes, ROOT_INO};
use crate::ranges::{clamp_len, find_in_extents, SeekTarget};

/// Largest read or write served in one request. The kernel sends at most `max_pages`
/// (1 MiB by default) per request; anything larger is refused, not allocated.
pub const MAX_IO: u64 = 16 << 20;
/// First window of a SEEK_DATA/SEEK_HOLE scan; it doubles across sparse stretches so a
/// seek over a huge empty volume takes few block-status calls, while the extents of one
/// call stay bounded by what a window of mostly data can hold.
const SEEK_WINDOW: u64 = 1 << 30;
const SEEK_WINDOW_MAX: u64 = 1 << 40;

/// One open file: the volume (or snapshot) and whether it was opened for writing.
pub struct OpenFile {
    pub r: VolumeRef,
    pub volume: Volume,
    pub writable: bool,
}

/// One directory entry of an `opendir` listing.
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileType,
    pub name: String,
}

#[derive(Default)]
struct Handles {
    files: HashMap<u64, Arc<OpenFile>>,
    dirs: HashMap<u64, Arc<Vec<DirEntry>>>,
    next: u64,
}

impl Handles {
    fn next_fh(&mut self) -> u64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }
}

/// State shared by every worker thread of one mount and by its `MountHandle`.
pub struct Shared {
    store: Store,
    inodes: Mutex<Inodes>,
    handles: Mutex<Handles>,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

fn io_err(e: StoreError) -> Errno {
    errno(&e)
}

impl Shared {
    pub fn new(store: Store, uid: u32, gid: u32) -> Shared {
        Shared {
            store,
            inodes: Mutex::new(Inodes::default()),
            handles: Mutex::new(Handles::default()),
            uid,
            gid,
            mounted_at: SystemTime::now(),
        }
    }

    pub fn root_attr(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo(ROOT_INO),
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        }
    }

    fn file_attr(&self, ino: u64, info: &VolumeInfo) -> FileAttr {
        let t = UNIX_EPOCH + Duration::from_secs(info.created);
        FileAttr {
            ino: INodeNo(ino),
            size: info.size,
            // Allocated bytes of the whole chain: `du` and sparse-aware copy tools see
            // how little of a thin volume is stored.
            blocks: info.chain_allocated.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: FileType::RegularFile,
            perm: if info.kind == Kind::Snapshot {
                0o444
            } else {
                0o644
            },
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        }
    }

    fn resolve(&self, ino: u64) -> Result<VolumeRef, Errno> {
        self.inodes.lock().get(ino).cloned().ok_or(Errno::ENOENT)
    }

    /// `lookup`: asks the store every time, so volumes created or deleted since appear or
    /// disappear at once.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        if parent != ROOT_INO {
            return Err(Errno::ENOTDIR);
        }
        let r = names::parse_file_name(name).ok_or(Errno::ENOENT)?;
        let info = self.store.inspect(&r).map_err(io_err)?;
        let ino = self.inodes.lock().ino(&r);
        Ok(self.file_attr(ino, &info))
    }

    pub fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        if ino == ROOT_INO {
            return Ok(self.root_attr());
        }
        let r = self.resolve(ino)?;
        let info = self.store.inspect(&r).map_err(io_err)?;
        Ok(self.file_attr(ino, &info))
    }

    /// `setattr`: sizes and owners are fixed. Setting what they already are succeeds
    /// (`touch`, `truncate -s` to the same size); timestamps are accepted and not kept.
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
    ) -> Result<FileAttr, Errno> {
        let attr = self.getattr(ino)?;
        if let Some(size) = size {
            if attr.kind == FileType::Directory {
                return Err(Errno::EISDIR);
            }
            if size > attr.size {
                return Err(Errno::EFBIG);
            }
            if size < attr.size {
                return Err(Errno::EPERM);
            }
        }
        let mode_changes = mode.is_some_and(|m| m & 0o7777 != u32::from(attr.perm));
        if mode_changes || uid.is_some_and(|u| u != attr.uid) || gid.is_some_and(|g| g != attr.gid)
        {
            return Err(Errno::EPERM);
        }
        Ok(attr)
    }

    /// `opendir`: takes the listing once, so paging through it with `readdir` offsets
    /// stays consistent while volumes come and go.
    pub fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        if ino != ROOT_INO {
            return Err(Errno::ENOTDIR);
        }
        let list = self.store.list().map_err(io_err)?;
        let mut entries = vec![
            DirEntry {
                ino: ROOT_INO,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: ROOT_INO,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        {
            let mut inodes = self.inodes.lock();
            for info in list {
                // The store only lists valid names; skip rather than fail on a surprise.
                let Ok(r) = VolumeRef::parse(&info.name) else {
                    continue;
                };
                entries.push(DirEntry {
                    ino: inodes.ino(&r),
                    kind: FileType::RegularFile,
                    name: names::file_name(&r),
                });
            }
        }
        let mut h = self.handles.lock();
        let fh = h.next_fh();
        h.dirs.insert(fh, Arc::new(entries));
        Ok(fh)
    }

    pub fn dir_listing(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>, Errno> {
        self.handles
            .lock()
            .dirs
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().dirs.remove(&fh);
    }

    pub fn open(&self, ino: u64, writable: bool) -> Result<u64, Errno> {
        if ino == ROOT_INO {
            return Err(Errno::EISDIR);
        }
        let r = self.resolve(ino)?;
        if writable && r.is_snapshot() {
            return Err(Errno::EROFS);
        }
        let volume = self.store.open_volume(&r).map_err(io_err)?;
        if writable && volume.read_only() {
            return Err(Errno::EROFS);
        }
        let file = Arc::new(OpenFile {
            r,
            volume,
            writable,
        });
        let mut h = self.handles.lock();
        let fh = h.next_fh();
        h.files.insert(fh, file);
        Ok(fh)
    }

    pub fn file(&self, fh: u64) -> Result<Arc<OpenFile>, Errno> {
        self.handles
            .lock()
            .files
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// `release` (the last close of an open file, mappings included): no write can come
    /// through it any more, so a writable one is flushed once more.
    pub fn release(&self, fh: u64) -> Result<(), Errno> {
        let file = self.handles.lock().files.remove(&fh);
        match file {
            Some(f) if f.writable => f.volume.flush().map_err(io_err),
            _ => Ok(()),
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let f = self.file(fh)?;
        if u64::from(size) > MAX_IO {
            return Err(Errno::EINVAL);
        }
        let n = clamp_len(offset, u64::from(size), f.volume.size());
        let mut buf = vec![0u8; n as usize];
        f.volume.read_at(&mut buf, offset).map_err(io_err)?;
        Ok(buf)
    }

    /// Writes what fits before the end of the volume; a write that starts at or past the
    /// end fails with `ENOSPC`, as on a block device.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let f = self.writable_file(fh)?;
        if data.is_empty() {
            return Ok(0);
        }
        if data.len() as u64 > MAX_IO {
            return Err(Errno::EINVAL);
        }
        let n = clamp_len(offset, data.len() as u64, f.volume.size());
        if n == 0 {
            return Err(Errno::ENOSPC);
        }
        let part = data.get(..n as usize).ok_or(Errno::EIO)?;
        f.volume.write_at(part, offset).map_err(io_err)?;
        u32::try_from(n).map_err(|_| Errno::EIO)
    }

    fn writable_file(&self, fh: u64) -> Result<Arc<OpenFile>, Errno> {
        let f = self.file(fh)?;
        if !f.writable {
            return Err(if f.r.is_snapshot() {
                Errno::EROFS
            } else {
                Errno::EBADF
            });
        }
        Ok(f)
    }

    /// `flush` (every `close`) and `fsync`: completed writes become durable.
    pub fn flush(&self, fh: u64) -> Result<(), Errno> {
        let f = self.file(fh)?;
        if f.writable {
            f.volume.flush().map_err(io_err)?;
        }
        Ok(())
    }

    /// `fallocate`: PUNCH_HOLE discards (trim), ZERO_RANGE zeroes keeping the space,
    /// plain allocation is a no-op within the size (every block of a volume is addressable;
    /// the store allocates on write). Nothing may change the size.
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Result<(), Errno> {
        const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let f = self.writable_file(fh)?;
        if mode & !(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE) != 0
            || (mode & PUNCH_HOLE != 0 && mode & ZERO_RANGE != 0)
        {
            return Err(Errno::EOPNOTSUPP);
        }
        let size = f.volume.size();
        let end = offset.checked_add(len).ok_or(Errno::EFBIG)?;
        if mode & KEEP_SIZE == 0 && end > size {
            return Err(Errno::EFBIG);
        }
        let n = clamp_len(offset, len, size);
        let r = if mode & PUNCH_HOLE != 0 {
            if mode & KEEP_SIZE == 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            f.volume.trim(offset, n)
        } else if mode & ZERO_RANGE != 0 {
            f.volume.write_zeroes(offset, n, false)
        } else {
            Ok(())
        };
        r.map_err(io_err)
    }

    /// `lseek` with SEEK_DATA or SEEK_HOLE, answered from block status.
    pub fn seek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64, Errno> {
        let target = match whence {
            libc::SEEK_DATA => SeekTarget::Data,
            libc::SEEK_HOLE => SeekTarget::Hole,
            _ => return Err(Errno::EINVAL),
        };
        let f = self.file(fh)?;
        let offset = u64::try_from(offset).map_err(|_| Errno::ENXIO)?;
        let found = seek_volume(&f.volume, offset, target).map_err(io_err)?;
        let found = found.ok_or(Errno::ENXIO)?;
        i64::try_from(found).map_err(|_| Errno::EOVERFLOW)
    }

    /// `statfs`: the store's volumes as one device: their sizes and what is stored.
    pub fn statfs(&self) -> Result<(u64, u64, u64), Errno> {
        let list = self.store.list().map_err(io_err)?;
        let total: u64 = list
            .iter()
            .filter(|i| i.kind == Kind::Volume)
            .map(|i| i.size / BLOCK)
            .fold(0, u64::saturating_add);
        let used: u64 = list
            .iter()
            .filter(|i| i.kind == Kind::Volume)
            .map(|i| i.allocated / BLOCK)
            .fold(0, u64::saturating_add);
        Ok((total, total.saturating_sub(used), list.len() as u64))
    }

    /// Flushes every volume open for writing (at unmount); returns the failures.
    pub fn flush_all(&self) -> Vec<(VolumeRef, StoreError)> {
        let mut vols: HashMap<VolumeRef, Volume> = HashMap::new();
        for f in self.handles.lock().files.values().filter(|f| f.writable) {
            vols.entry(f.r.clone()).or_insert_with(|| f.volume.clone());
        }
        vols.into_iter()
            .filter_map(|(r, v)| v.flush().err().map(|e| (r, e)))
            .collect()
    }
}

/// The first offset at or after `offset` holding `target`. `None` for SEEK_DATA past the
/// last data (ENXIO); SEEK_HOLE finds the implicit hole at the end of the volume.
fn seek_volume(vol: &Volume, offset: u64, target: SeekTarget) -> Result<Option<u64>, StoreError> {
    let size = vol.size();
    if offset >= size {
        return Ok(None);
    }
    let mut pos = offset;
    let mut window = SEEK_WINDOW;
    while pos < size {
        let len = window.min(size - pos);
        let extents = vol.block_status(pos, len)?;
        if let Some(found) = find_in_extents(&extents, pos, target) {
            return Ok(Some(found));
        }
        pos += len;
        if extents.len() <= 2 {
            window = (window * 2).min(SEEK_WINDOW_MAX);
        }
    }
    Ok(match target {
        SeekTarget::Data => None,
        SeekTarget::Hole => Some(size),
    })
}
