//! Where things live in a store directory: the one place that joins its paths. Pure path
//! arithmetic (nothing here looks at the filesystem); ARCHITECTURE.md draws the tree.

use std::path::{Path, PathBuf};

use crate::Name;

/// The paths of the store rooted at a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayout {
    root: PathBuf,
}

impl StoreLayout {
    pub fn new(root: impl Into<PathBuf>) -> StoreLayout {
        StoreLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `meta.redb`: the metadata database.
    pub fn meta_db(&self) -> PathBuf {
        self.root.join("meta.redb")
    }

    /// `lock`: flock()ed by the process that has the store open.
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// `blobs/`: one directory per layer.
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// `run/`: the sockets of a running `platter serve`.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `run/control.sock`: the control API.
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir().join("control.sock")
    }

    /// `run/nbd.sock`: the NBD server's default unix socket.
    pub fn nbd_socket(&self) -> PathBuf {
        self.run_dir().join("nbd.sock")
    }

    /// `vms/`: the files of VMs that are not volumes (console logs, seeds, boot files).
    pub fn vms_dir(&self) -> PathBuf {
        self.root.join("vms")
    }

    /// `vms/NAME.console.log`: the VM's serial console.
    pub fn console_log(&self, vm: &Name) -> PathBuf {
        self.vms_dir().join(format!("{vm}.console.log"))
    }

    /// `vms/NAME.seed.iso`: the VM's cloud-init NoCloud seed.
    pub fn seed_iso(&self, vm: &Name) -> PathBuf {
        self.vms_dir().join(format!("{vm}.seed.iso"))
    }

    /// `vms/NAME.boot/`: the kernel and initrd a VM boots from a container image.
    pub fn boot_dir(&self, vm: &Name) -> PathBuf {
        self.vms_dir().join(format!("{vm}.boot"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_the_root() {
        let l = StoreLayout::new("/var/lib/platter");
        let vm = Name::new("web").unwrap();
        let s = |p: PathBuf| p.display().to_string();
        assert_eq!(s(l.control_socket()), "/var/lib/platter/run/control.sock");
        assert_eq!(s(l.nbd_socket()), "/var/lib/platter/run/nbd.sock");
        assert_eq!(
            s(l.console_log(&vm)),
            "/var/lib/platter/vms/web.console.log"
        );
        assert_eq!(s(l.seed_iso(&vm)), "/var/lib/platter/vms/web.seed.iso");
        assert_eq!(s(l.boot_dir(&vm)), "/var/lib/platter/vms/web.boot");
        assert_eq!(s(l.meta_db()), "/var/lib/platter/meta.redb");
        assert_eq!(s(l.lock()), "/var/lib/platter/lock");
        assert_eq!(s(l.blobs()), "/var/lib/platter/blobs");
    }
}
