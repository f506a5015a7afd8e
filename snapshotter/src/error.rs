//! The store's one error type: every variant names the object and the cause.

use std::io;
use std::path::PathBuf;

use platter_types::{NameError, VolumeRef};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("store {dir} is in use by another process{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { dir: PathBuf, pid: Option<u32> },
    #[error("store {dir} has format version {found}, newer than this platter supports ({supported}); upgrade platter")]
    NewerFormat {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("store is damaged: {path}: {detail}")]
    Damaged { path: PathBuf, detail: String },
    #[error("volume {0} does not exist")]
    NoSuchVolume(String),
    #[error("snapshot {0} does not exist")]
    NoSuchSnapshot(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("cannot delete {target}: {dependants} (delete the clones first)")]
    HasDependants { target: String, dependants: String },
    #[error("invalid size {size} for {object}: {reason}")]
    BadSize {
        object: String,
        size: u64,
        reason: String,
    },
    #[error("cannot shrink volume {name} from {from} to {to} bytes: volumes only grow")]
    Shrink { name: String, from: u64, to: u64 },
    /// The store was opened for reading only (this user may not write it, or its
    /// filesystem is mounted read-only): every change is refused.
    #[error("store {dir} is open read-only (this user cannot write it, or its filesystem is read-only): only reads and exports work")]
    StoreReadOnly { dir: PathBuf },
    #[error("{0} is a read-only snapshot")]
    ReadOnly(VolumeRef),
    #[error("{object}: range {offset}+{len} is outside the volume (size {size})")]
    OutOfRange {
        object: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("volume {volume} takes no writes or flushes: a sync failed ({cause}), so its writes since the last successful flush may not be on disk; it is usable again once every client has closed it")]
    Fenced { volume: String, cause: String },
    #[error("{0} was deleted")]
    Deleted(String),
    /// A volume that must not be open for the operation (a rollback) is: served to a VM
    /// or an NBD client, or mounted through FUSE.
    #[error(
        "volume {0} is open (a running VM, an NBD client or a FUSE mount uses it); stop that first"
    )]
    Open(String),
    #[error("volume {volume}: layer chain is {depth} deep, the most is {max}")]
    ChainTooDeep {
        volume: String,
        depth: usize,
        max: usize,
    },
    #[error("{kind} {name} does not exist")]
    NoSuchRecord { kind: String, name: String },
    /// `record` is the kind and the name, quoted.
    #[error("record {record}: {reason}")]
    BadRecord { record: String, reason: String },
    /// The metadata database failed in a way that is neither an IO error nor damage.
    #[error("metadata database {path}: {op}: {detail}")]
    Database {
        op: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("export of {object} to {path}: {detail}")]
    Export {
        object: String,
        path: PathBuf,
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    pub(crate) fn damaged(path: impl Into<PathBuf>, detail: impl Into<String>) -> StoreError {
        StoreError::Damaged {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// The object this error is about, as its message names it: `volume a`,
    /// `snapshot a@s1`, or a path. `None` when it names none (an invalid name is about
    /// the text given, which the message quotes).
    pub fn object(&self) -> Option<String> {
        let volume_or_snapshot = |r: &str| match r.contains('@') {
            true => format!("snapshot {r}"),
            false => format!("volume {r}"),
        };
        match self {
            StoreError::Io { path, .. }
            | StoreError::Damaged { path, .. }
            | StoreError::Database { path, .. } => Some(path.display().to_string()),
            StoreError::NoSuchRecord { kind, name } => Some(format!("{kind} {name}")),
            StoreError::BadRecord { record, .. } => Some(format!("record {record}")),
            StoreError::Locked { dir, .. }
            | StoreError::NewerFormat { dir, .. }
            | StoreError::StoreReadOnly { dir } => Some(dir.display().to_string()),
            StoreError::NoSuchVolume(name) | StoreError::Open(name) => {
                Some(format!("volume {name}"))
            }
            StoreError::NoSuchSnapshot(r) => Some(format!("snapshot {r}")),
            // Already "volume a" or "snapshot a@s1".
            StoreError::Exists(object) => Some(object.clone()),
            StoreError::HasDependants { target, .. } => Some(volume_or_snapshot(target)),
            StoreError::BadSize { object, .. } => Some(format!("volume {object}")),
            StoreError::Shrink { name, .. } => Some(format!("volume {name}")),
            StoreError::ReadOnly(r) => Some(volume_or_snapshot(&r.to_string())),
            StoreError::OutOfRange { object, .. } | StoreError::Deleted(object) => {
                Some(volume_or_snapshot(object))
            }
            StoreError::ChainTooDeep { volume, .. } | StoreError::Fenced { volume, .. } => {
                Some(format!("volume {volume}"))
            }
            StoreError::Name(_) => None,
            StoreError::Export { object, .. } => Some(volume_or_snapshot(object)),
        }
    }
}
