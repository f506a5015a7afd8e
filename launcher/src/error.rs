//! The launcher's one error type. Every variant names the VM (or URI, or file) and the
//! cause on one line, because the CLI prints it as is.

use std::path::PathBuf;

use crate::domain::DomainXmlError;

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error(
        "cannot reach libvirtd at {uri}: {message}; start it with `virtlogd -d && libvirtd -d` \
         (there is no systemd here) or run scripts/install.sh"
    )]
    Unreachable { uri: String, message: String },

    #[error("vm {name:?} already exists in libvirt; delete it first or pick another name")]
    DomainExists { name: String },

    #[error("no such vm {name:?} in libvirt")]
    NoSuchVm { name: String },

    #[error("vm {name:?} is already running")]
    AlreadyRunning { name: String },

    #[error("vm {name:?} is not a platter vm (no platter metadata in its libvirt domain)")]
    NotPlatter { name: String },

    #[error("invalid vm {name:?}: {reason}")]
    InvalidSpec { name: String, reason: String },

    #[error("libvirt could not {op} vm {name:?}: {message}")]
    Libvirt {
        op: &'static str,
        name: String,
        message: String,
    },

    #[error("libvirt could not {op}: {message}")]
    Connection { op: &'static str, message: String },

    #[error(transparent)]
    DomainXml(#[from] DomainXmlError),

    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "qemu runs as user {user} and cannot reach {path:?}: {reason}; put it under a directory \
         that user can traverse (e.g. /var/lib/platter or /tmp) or see platter_launcher::access"
    )]
    NotAccessible {
        user: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("cloud-init user-data {path:?} is {size} bytes; the limit is {limit}")]
    UserDataTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },

    #[error("building the cloud-init seed {path:?} failed: {message}")]
    SeedIso { path: PathBuf, message: String },
}

pub type Result<T, E = LauncherError> = std::result::Result<T, E>;
