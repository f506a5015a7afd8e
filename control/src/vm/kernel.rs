//! Kernel boot from a container image (`firmware.kernelBoot.container`): the kernel and
//! initrd are taken out of the image, as KubeVirt copies them out of its kernel-boot
//! container, into `vms/NAME.boot/` in the store, which is the VM's alone and goes with
//! it. They are taken once; a VM that has them boots from them again.

use std::path::PathBuf;

use platter_importer::{CancelFlag, NoProgress, WantedFile};
use platter_snapshotter::Store;
use platter_types::{Name, StoreLayout};

use crate::api::{ImportParams, RegistryParams};
use crate::error::ControlError;
use crate::transfer::import_options;

use super::VmError;

/// The largest kernel or initrd taken out of an image.
pub const MAX_BOOT_FILE: u64 = 1 << 30;

/// The VM's kernel-boot directory in `store` (absolute: libvirt is given its files).
fn boot_dir(store: &Store, vm: &Name) -> Result<PathBuf, VmError> {
    Ok(StoreLayout::new(super::create::store_dir(store)?).boot_dir(vm))
}

/// Removes the VM's kernel-boot files, if it has any.
pub fn remove_boot_files(store: &Store, vm: &Name) {
    if let Ok(d) = boot_dir(store, vm) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The files of a VM's kernel boot: `kernel`, and `initrd` when the VM names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
}

impl BootFiles {
    pub fn of(store: &Store, vm: &Name, with_initrd: bool) -> Result<BootFiles, VmError> {
        let d = boot_dir(store, vm)?;
        Ok(BootFiles {
            kernel: d.join("kernel"),
            initrd: with_initrd.then(|| d.join("initrd")),
        })
    }

    /// Both are there (a VM's files are written whole or not at all).
    pub fn present(&self) -> bool {
        self.kernel.is_file() && self.initrd.as_ref().is_none_or(|i| i.is_file())
    }
}

/// Takes `kernel_path` (and `initrd_path`) out of `image` into the VM's boot directory
/// in `store`, unless they are there already.
pub fn ensure_boot_files(
    store: &Store,
    vm: &Name,
    image: &str,
    kernel_path: &str,
    initrd_path: Option<&str>,
    registry: &RegistryParams,
    cancel: CancelFlag,
) -> Result<BootFiles, ControlError> {
    let files = BootFiles::of(store, vm, initrd_path.is_some())?;
    if files.present() {
        return Ok(files);
    }
    let bdir = boot_dir(store, vm)?;
    std::fs::create_dir_all(&bdir).map_err(|source| VmError::Io {
        what: "creating",
        path: bdir.clone(),
        source,
    })?;
    let mut wanted = vec![WantedFile {
        path: kernel_path.to_string(),
        dest: files.kernel.clone(),
        max_size: MAX_BOOT_FILE,
    }];
    if let (Some(path), Some(dest)) = (initrd_path, &files.initrd) {
        wanted.push(WantedFile {
            path: path.to_string(),
            dest: dest.clone(),
            max_size: MAX_BOOT_FILE,
        });
    }
    let mut opts = import_options(&ImportParams {
        registry: registry.clone(),
        ..ImportParams::default()
    })?;
    opts.cancel = cancel;
    platter_importer::extract_files(image, &wanted, &opts, &NoProgress).map_err(|e| {
        let _ = std::fs::remove_dir_all(&bdir);
        VmError::Step {
            step: format!("taking the kernel out of {image}"),
            source: Box::new(e.into()),
        }
    })?;
    Ok(files)
}
