//! The store's lock file: exclusive for the process that opens a store to write it,
//! shared among read-only opens.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use platter_types::StoreLayout;

use crate::error::{Result, StoreError};

/// A shared lock for a read-only open: taken on the lock file opened for reading.
pub(super) fn share_lock(dir: &Path) -> Result<File> {
    let path = StoreLayout::new(dir).lock();
    let f = File::options()
        .read(true)
        .custom_flags(NOFOLLOW)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                StoreError::damaged(&path, "the store has no lock file")
            }
            _ => open_error(&path, e),
        })?;
    if flock(&f, FlockOperation::NonBlockingLockShared).is_err() {
        return Err(locked(dir, &path));
    }
    Ok(f)
}

/// The lock file is opened without following a symlink: one would make the store write its
/// pid into whatever file the link names.
const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

fn open_error(path: &Path, e: std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        return StoreError::damaged(path, "the lock file is a symlink; remove it");
    }
    StoreError::io("open lock", path)(e)
}

fn locked(dir: &Path, lock: &Path) -> StoreError {
    let pid = std::fs::read_to_string(lock)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    StoreError::Locked {
        dir: dir.to_path_buf(),
        pid,
    }
}

pub(super) fn lock_store(dir: &Path) -> Result<File> {
    let path = StoreLayout::new(dir).lock();
    let mut f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(NOFOLLOW)
        .open(&path)
        .map_err(|e| open_error(&path, e))?;
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(locked(dir, &path));
    }
    let _ = f
        .set_len(0)
        .and_then(|_| writeln!(f, "{}", std::process::id()));
    Ok(f)
}
