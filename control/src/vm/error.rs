//! What a VM use case fails with. Every variant names the VM (or volume, file, image) and
//! the way out on one line; [`VmError::kind`] is the one place each gets its kind.

use std::path::PathBuf;

use platter_launcher::LauncherError;

use crate::error::{ControlError, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("platter serve is not running for store {}: VMs need it to serve their disks (start `platter --store {} serve`)", dir.display(), dir.display())]
    NotServing { dir: PathBuf },

    #[error("vm {name} already exists in store {}; delete it first (`platter vm delete {name}`) or pick another name", dir.display())]
    Exists { name: String, dir: PathBuf },

    #[error("vm {vm}: volume {volume} does not exist")]
    NoSuchVolume { vm: String, volume: String },

    #[error(
        "cannot delete {target}: vm {vm} uses it (delete the vm first: `platter vm delete {vm}`)"
    )]
    VolumeInUse { target: String, vm: String },

    #[error("cannot delete vm {vm}: its throw-away disk {disk} has clones that depend on it ({clones}); delete them first")]
    DiskHasClones {
        vm: String,
        disk: String,
        clones: String,
    },

    #[error("vm {vm}: image {image} is a disk image, not an ISO: --volume with --image attaches an ISO as a CD-ROM next to the volume; boot a disk image with --image alone")]
    NotIso { vm: String, image: String },

    #[error("vm name {vm} is too long for its disk's name")]
    NameTooLong { vm: String },

    #[error("{option} {}: {reason}", path.display())]
    File {
        option: &'static str,
        path: PathBuf,
        reason: String,
        kind: ErrorKind,
    },

    #[error("vm record of {vm} is damaged: {detail}")]
    Record { vm: String, detail: String },

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A step of `vm create` on the way to its disks failed (resolving, importing or
    /// snapshotting the image, making the throw-away clone); `source` keeps its kind.
    #[error("{step}: {source}")]
    Step {
        step: String,
        source: Box<ControlError>,
    },

    #[error(transparent)]
    Launcher(#[from] LauncherError),
}

impl VmError {
    /// The kind and object of this error as the control API reports it.
    pub fn kind(&self) -> (ErrorKind, Option<String>) {
        match self {
            VmError::NotServing { dir } => {
                (ErrorKind::Unavailable, Some(dir.display().to_string()))
            }
            VmError::Exists { name, .. } => (ErrorKind::AlreadyExists, Some(format!("vm {name}"))),
            VmError::NoSuchVolume { volume, .. } => {
                (ErrorKind::NotFound, Some(format!("volume {volume}")))
            }
            VmError::VolumeInUse { target, .. } => (ErrorKind::InUse, Some(target.clone())),
            VmError::DiskHasClones { disk, .. } => {
                (ErrorKind::InUse, Some(format!("volume {disk}")))
            }
            VmError::NotIso { image, .. } => (ErrorKind::Invalid, Some(image.clone())),
            VmError::NameTooLong { vm } => (ErrorKind::Invalid, Some(format!("vm {vm}"))),
            VmError::File { path, kind, .. } => (*kind, Some(path.display().to_string())),
            VmError::Record { vm, .. } => (ErrorKind::Damaged, Some(format!("vm {vm}"))),
            VmError::Io { path, source, .. } => (
                match source.kind() {
                    std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                    _ => ErrorKind::Failed,
                },
                Some(path.display().to_string()),
            ),
            VmError::Step { source, .. } => {
                let f = source.failure();
                (f.kind, f.object)
            }
            VmError::Launcher(e) => launcher_kind(e),
        }
    }
}

/// Every launcher error by variant: a new variant must be given its kind here.
fn launcher_kind(e: &LauncherError) -> (ErrorKind, Option<String>) {
    let vm = |name: &str| Some(format!("vm {name}"));
    match e {
        LauncherError::Unreachable { uri, .. } => (ErrorKind::Unavailable, Some(uri.clone())),
        LauncherError::DomainExists { name } => (ErrorKind::AlreadyExists, vm(name)),
        LauncherError::NoSuchVm { name } => (ErrorKind::NotFound, vm(name)),
        LauncherError::AlreadyRunning { name } | LauncherError::NotPlatter { name } => {
            (ErrorKind::Failed, vm(name))
        }
        LauncherError::InvalidSpec { name, .. } => (ErrorKind::Invalid, vm(name)),
        LauncherError::Libvirt { name, .. } => (ErrorKind::Failed, vm(name)),
        LauncherError::Connection { .. } | LauncherError::DomainXml(_) => (ErrorKind::Failed, None),
        LauncherError::Io { path, .. }
        | LauncherError::NotAccessible { path, .. }
        | LauncherError::SeedIso { path, .. } => {
            (ErrorKind::Failed, Some(path.display().to_string()))
        }
        LauncherError::UserDataTooLarge { path, .. } => {
            (ErrorKind::Invalid, Some(path.display().to_string()))
        }
    }
}
