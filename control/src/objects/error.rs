//! Why a request about declarative objects failed.

use platter_api::Kind;
use platter_snapshotter::StoreError;

use crate::error::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The file is not YAML at all.
    #[error("{file}: {detail}; nothing was applied")]
    Syntax { file: String, detail: String },
    /// One or more documents were refused; none of the file's documents was applied.
    #[error("{file}: {}; nothing was applied (a file is applied whole or not at all)", .errors.join("; "))]
    Documents { file: String, errors: Vec<String> },
    #[error("{} {key} does not exist", kind)]
    NotFound { kind: Kind, key: String },
    #[error("{kind:?} is not a kind platter knows (datavolumes/dv, datasources/das, virtualmachines/vm, virtualmachineinstances/vmi, virtualmachinesnapshots/vmsnapshot, virtualmachinerestores/vmrestore, secrets, configmaps/cm)")]
    UnknownKind { kind: String },
    #[error("{what} is in use by {by}: delete {by} first")]
    InUse { what: String, by: String },
    #[error("vm {vm} is made by {object}: delete that instead (`{command}`)")]
    Managed {
        vm: String,
        object: String,
        command: String,
    },
    #[error("{what} cannot be deleted: {detail}")]
    Refused { what: String, detail: String },
    #[error("object {object} in the store is damaged: {detail}")]
    Damaged { object: String, detail: String },
    /// `platter vm start/stop` refused by the VM's run strategy.
    #[error("cannot {verb} VirtualMachine {vm}: {detail}")]
    Request {
        vm: String,
        verb: &'static str,
        detail: String,
    },
    #[error("{object}: no platter name can be made of it: {detail}")]
    LocalName { object: String, detail: String },
    #[error("DataVolume {dv}: {detail}")]
    Upload { dv: String, detail: String },
    #[error("platter serve is not running for store {}: declarative objects are reconciled inside it (start `platter --store {} serve`, then try again)", dir.display(), dir.display())]
    NotServing { dir: std::path::PathBuf },
    /// Something the reconciler needs (libvirt) cannot be reached now; retried next pass.
    #[error("{what} is unavailable: {detail}")]
    Unavailable { what: String, detail: String },
    /// A Secret or ConfigMap a DataVolume names cannot be used (missing, incomplete).
    #[error("{field}: {object} {detail}")]
    Reference {
        object: String,
        field: String,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ObjectError {
    pub fn kind(&self) -> (ErrorKind, Option<String>) {
        match self {
            ObjectError::Syntax { file, .. } | ObjectError::Documents { file, .. } => {
                (ErrorKind::Invalid, Some(file.clone()))
            }
            ObjectError::NotFound { kind, key } => {
                (ErrorKind::NotFound, Some(format!("{kind} {key}")))
            }
            ObjectError::UnknownKind { .. } => (ErrorKind::Invalid, None),
            ObjectError::InUse { what, .. } => (ErrorKind::InUse, Some(what.clone())),
            ObjectError::Managed { vm, .. } => (ErrorKind::InUse, Some(format!("vm {vm}"))),
            ObjectError::Refused { what, .. } => (ErrorKind::InUse, Some(what.clone())),
            ObjectError::Damaged { object, .. } => (ErrorKind::Damaged, Some(object.clone())),
            ObjectError::Request { vm, .. } => {
                (ErrorKind::Invalid, Some(format!("VirtualMachine {vm}")))
            }
            ObjectError::LocalName { object, .. } => (ErrorKind::Invalid, Some(object.clone())),
            ObjectError::Upload { dv, .. } => {
                (ErrorKind::Invalid, Some(format!("DataVolume {dv}")))
            }
            ObjectError::NotServing { dir } => {
                (ErrorKind::Unavailable, Some(dir.display().to_string()))
            }
            ObjectError::Unavailable { what, .. } => (ErrorKind::Unavailable, Some(what.clone())),
            ObjectError::Reference { object, .. } => (ErrorKind::NotFound, Some(object.clone())),
            ObjectError::Store(e) => (crate::error::store_kind(e), e.object()),
        }
    }
}
