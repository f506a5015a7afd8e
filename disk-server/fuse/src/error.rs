//! The crate's error type ([`FuseError`], for the caller of `mount`) and the mapping of
//! store errors to the errno a process sees on the mounted files.
//!
//! The errno mapping must never hide a failure as success: anything unexpected is `EIO`.

use std::io;
use std::path::PathBuf;

use fuser::Errno;
use platter_snapshotter::StoreError;

/// Why mounting, serving or unmounting failed.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("mount point {dir}: {source}")]
    MountPoint { dir: PathBuf, source: io::Error },
    #[error("mount point {dir} is not a directory")]
    NotADirectory { dir: PathBuf },
    #[error("mount FUSE at {dir}: {source}")]
    Mount { dir: PathBuf, source: io::Error },
    #[error("unmount FUSE at {dir}: {source}")]
    Unmount { dir: PathBuf, source: io::Error },
    #[error("FUSE session at {dir} failed: {detail}")]
    Session { dir: PathBuf, detail: String },
    #[error("flush of {volume} on unmount of {dir}: {source}")]
    Flush {
        dir: PathBuf,
        volume: String,
        source: StoreError,
    },
}

/// The errno for a store error, as a read, write, flush or seek reports it.
pub fn errno(e: &StoreError) -> Errno {
    match e {
        StoreError::ReadOnly(_) => Errno::EROFS,
        StoreError::OutOfRange { .. } => Errno::ENOSPC,
        StoreError::NoSuchVolume(_) | StoreError::NoSuchSnapshot(_) => Errno::ENOENT,
        StoreError::Deleted(_) => Errno::ESTALE,
        StoreError::Io { source, .. } => source
            .raw_os_error()
            .map(Errno::from_i32)
            .unwrap_or(Errno::EIO),
        _ => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platter_types::VolumeRef;

    #[test]
    fn mapping() {
        let r = VolumeRef::parse("a@s").unwrap();
        assert_eq!(errno(&StoreError::ReadOnly(r)), Errno::EROFS);
        assert_eq!(errno(&StoreError::NoSuchVolume("a".into())), Errno::ENOENT);
        assert_eq!(errno(&StoreError::Deleted("a".into())), Errno::ESTALE);
        let io = StoreError::Io {
            op: "read",
            path: "/x".into(),
            source: io::Error::from_raw_os_error(28),
        };
        assert_eq!(errno(&io), Errno::ENOSPC);
        let other = StoreError::Io {
            op: "read",
            path: "/x".into(),
            source: io::Error::other("x"),
        };
        assert_eq!(errno(&other), Errno::EIO);
        assert_eq!(
            errno(&StoreError::Damaged {
                path: "/x".into(),
                detail: "d".into()
            }),
            Errno::EIO
        );
    }
}
