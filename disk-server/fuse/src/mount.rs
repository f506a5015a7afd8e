//! Mounting and unmounting: [`mount`] starts a background FUSE session on a directory and
//! returns a [`MountHandle`]; [`MountHandle::unmount`] (or dropping the handle) unmounts,
//! waits for the session's threads, and flushes every volume still open for writing (files
//! closed earlier were flushed by their `close`).
//!
//! Unmounting must never hang and never lose an acknowledged write: when files are still
//! open the mount is aborted and detached (their users get `ENOTCONN`), and every write
//! that was answered had already reached the store, which the final flush makes durable.
//! It must never unmount anything but our own mount: nothing is unmounted once the session
//! has ended (someone else unmounted it, and the directory may hold a new mount).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use platter_snapshotter::Store;
use rustix::mount::{unmount, UnmountFlags};

use crate::error::FuseError;
use crate::fs::PlatterFs;
use crate::state::Shared;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Worker threads answering requests (at least 1). Reads and writes of different
    /// files, and concurrent reads of one file, run in parallel up to this many.
    pub threads: usize,
    /// Let users other than the mounting one in (`allow_other`; needs `user_allow_other`
    /// in /etc/fuse.conf when not root). Mode bits (0644 volumes, 0444 snapshots, owned by
    /// the mounting user) are enforced by the kernel either way.
    pub allow_other: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            threads: 4,
            allow_other: false,
        }
    }
}

/// A mounted store. Dropping it unmounts (logging failures); call
/// [`MountHandle::unmount`] to see them.
pub struct MountHandle {
    dir: PathBuf,
    session: Option<BackgroundSession>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("dir", &self.dir)
            .field("mounted", &self.session.is_some())
            .finish()
    }
}

/// Mounts `store` on `dir`: each volume is `dir/NAME.img` (read-write, mode 0644), each
/// snapshot `dir/NAME@SNAP.img` (read-only, mode 0444). Returns once the kernel has
/// completed the FUSE handshake, so the files are visible when it returns. A stale FUSE
/// mount left on `dir` by a killed process is detached first.
pub fn mount(store: Store, dir: &Path, options: &MountOptions) -> Result<MountHandle, FuseError> {
    let dir = prepare_mount_point(dir)?;
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let shared = Arc::new(Shared::new(store, uid, gid));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("platter".into()),
        MountOption::Subtype("platter".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads.clamp(1, 64));
    config.clone_fd = true;
    let mount_err = |source| FuseError::Mount {
        dir: dir.clone(),
        source,
    };
    let session =
        fuser::Session::new(PlatterFs(shared.clone()), &dir, &config).map_err(mount_err)?;
    let session = session.spawn().map_err(mount_err)?;
    tracing::info!(dir = %dir.display(), "store mounted");
    Ok(MountHandle {
        dir,
        session: Some(session),
        shared,
    })
}

/// Checks `dir` and returns its canonical path, clearing a dead FUSE mount on it.
fn prepare_mount_point(dir: &Path) -> Result<PathBuf, FuseError> {
    let point_err = |source| FuseError::MountPoint {
        dir: dir.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(dir = %dir.display(), "detaching a dead FUSE mount left on the mount point");
            unmount(dir, UnmountFlags::DETACH).map_err(|e| point_err(e.into()))?;
            std::fs::metadata(dir).map_err(point_err)?
        }
        r => r.map_err(point_err)?,
    };
    if !meta.is_dir() {
        return Err(FuseError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    dir.canonicalize().map_err(point_err)
}

impl MountHandle {
    /// The mount point (canonical path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the session has ended without [`MountHandle::unmount`], e.g. because
    /// someone ran `umount` on the directory.
    pub fn is_finished(&self) -> bool {
        match &self.session {
            Some(s) => s.guard.is_finished(),
            None => true,
        }
    }

    /// Unmounts, waits for in-flight requests, and flushes every volume still open for
    /// writing through the mount. Blocking (call it from `spawn_blocking` in async code).
    /// Open files do not block it: their mount is aborted.
    pub fn unmount(mut self) -> Result<(), FuseError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), FuseError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let mut result = Ok(());
        if !session.guard.is_finished() {
            if let Err(source) = detach(&self.dir) {
                // The session still runs; joining it would hang. Flush what we can.
                result = Err(FuseError::Unmount {
                    dir: self.dir.clone(),
                    source,
                });
            }
        }
        if result.is_ok() {
            if let Err(e) = session.join() {
                result = Err(FuseError::Session {
                    dir: self.dir.clone(),
                    detail: e.to_string(),
                });
            }
        }
        for (r, source) in self.shared.flush_all() {
            if result.is_ok() {
                result = Err(FuseError::Flush {
                    dir: self.dir.clone(),
                    volume: r.to_string(),
                    source,
                });
            } else {
                tracing::warn!(volume = %r, error = %source, "flush at unmount failed");
            }
        }
        if result.is_ok() {
            tracing::info!(dir = %self.dir.display(), "store unmounted");
        }
        result
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "unmount on drop failed");
        }
    }
}

/// Takes the mount off `dir`. A busy mount (files still open) is aborted and detached so
/// shutdown cannot hang on a process holding a file; without the right to unmount (not
/// root) `fusermount3 -u -z` does it.
fn detach(dir: &Path) -> io::Result<()> {
    match unmount(dir, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::BUSY) => {
            tracing::warn!(dir = %dir.display(), "files are still open on the mount: aborting them");
            unmount(dir, UnmountFlags::FORCE | UnmountFlags::DETACH).map_err(io::Error::from)
        }
        // Already gone: the session is about to see it and end.
        Err(rustix::io::Errno::INVAL) => Ok(()),
        Err(rustix::io::Errno::PERM) => fusermount_unmount(dir),
        Err(e) => Err(e.into()),
    }
}

fn fusermount_unmount(dir: &Path) -> io::Result<()> {
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg("--")
        .arg(dir)
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "fusermount3 -u: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
