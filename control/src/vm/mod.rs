//! The VM use cases behind the control API: create (with the `--image` cache), start,
//! stop, restart, delete, status and console, run by the one dispatcher.
//!
//! A VM is a libvirt domain (made by `platter-launcher`) whose disks are exports of
//! `platter serve`, plus a record in the store. The use cases that define or boot a VM
//! need the server that serves its disks: in-process (no [`VmHost`]) they check what they
//! can (arguments, files, the record, the volume) and then refuse with
//! [`VmError::NotServing`]. Stop, restart, status and console talk to libvirt alone.
//!
//! Records are read and written only through `records` (one small module), so the store
//! that keeps them can change underneath. Nothing here parses command lines or prints.

mod create;
mod error;
mod image;
mod kernel;
mod lifecycle;
pub(crate) mod records;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use create::{check_params, create, define_prepared, Seed};
pub use error::VmError;
pub use image::{ensure_image, is_cache_name, CachedImage};
pub use kernel::{ensure_boot_files, remove_boot_files, BootFiles};
pub use lifecycle::{console, delete, info, restart, start, status, stop};
pub use records::check_volume_unused;

/// What `platter serve` gives the VM use cases: the NBD socket that serves the disks, and
/// locks that keep two requests from making the same VM or cache entry at once.
#[derive(Debug)]
pub struct VmHost {
    nbd_socket: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// The declarative objects' jobs and the reconciler's bell.
    runtime: crate::objects::Runtime,
}

impl VmHost {
    pub fn new(nbd_socket: PathBuf) -> VmHost {
        VmHost {
            nbd_socket,
            locks: Mutex::new(HashMap::new()),
            runtime: crate::objects::Runtime::default(),
        }
    }

    pub fn runtime(&self) -> &crate::objects::Runtime {
        &self.runtime
    }

    pub fn nbd_socket(&self) -> &Path {
        &self.nbd_socket
    }

    /// The lock of `key` (`vm NAME`, `image KEY`); held while the guard lives.
    fn lock(&self, key: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }
}

/// The lock held while a VM record starts to use a volume, and while `volume delete`
/// checks that none does before it deletes.
pub(crate) const VOLUME_USES: &str = "volume uses";

/// The host, or the error that says to start `platter serve`.
fn serving<'a>(host: Option<&'a VmHost>, store: &Path) -> Result<&'a VmHost, VmError> {
    host.ok_or_else(|| VmError::NotServing {
        dir: store.to_path_buf(),
    })
}

/// Runs `f` holding the lock of `key` (when serving; in-process one process has the store).
pub(crate) fn locked<T>(host: Option<&VmHost>, key: &str, f: impl FnOnce() -> T) -> T {
    match host {
        Some(h) => {
            let lock = h.lock(key);
            let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
            f()
        }
        None => f(),
    }
}
