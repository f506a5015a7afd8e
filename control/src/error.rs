//! Control errors: [`ControlError`] (what a request fails with, wrapping the store's,
//! the importer's and the VM records' errors) and [`Failure`], its typed form on the
//! wire: a [`ErrorKind`], the object concerned and the message.
//!
//! The message of a [`Failure`] is exactly the error's `Display` text, so a CLI prints
//! the same line whether it handled the request itself or a `platter serve` did; the
//! kind lets a caller decide (retry, ignore a missing object, exit status) without ever
//! matching on that text. Mapping only: no IO, no logging.

use serde::{Deserialize, Deserializer, Serialize};

use platter_formats::error::FormatError;
use platter_importer::oci::manifest::ManifestError;
use platter_importer::tar::TarError;
use platter_importer::ImportError;
use platter_snapshotter::StoreError;

use crate::export::ExportError;
use crate::transfer::ParamError;
use crate::vm::VmError;
use crate::vms::VmRecordError;

/// What kind of failure, for a caller to act on. On the wire in snake_case
/// (`"not_found"`); a kind this version does not know is read as [`ErrorKind::Failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The object named does not exist (a volume, snapshot, VM record, file, URL).
    NotFound,
    /// An object of that name exists already.
    AlreadyExists,
    /// Refused because other objects depend on this one (clones of a volume or snapshot).
    InUse,
    /// The request itself is wrong: a bad name, size, option, source or destination, a
    /// format that the data is not, a write to a read-only snapshot. The CLI exits with
    /// status 2 (a usage error) on it.
    Invalid,
    /// The request is fine but asks for something this platter does not do: an image
    /// feature or format it does not take (encryption, an image with no disk, a tar
    /// entry it cannot place), a newer store format, a limit such as the chain depth.
    Unsupported,
    /// Stored or received data is corrupt: a damaged store or VM record, a corrupt
    /// image, a checksum or size that does not match.
    Damaged,
    /// Something needed cannot be had now (the store is locked by another process, the
    /// server or a registry cannot be reached, HTTP 429/5xx); trying later may work.
    Unavailable,
    /// Stopped on request (Ctrl-C, SIGTERM, the client went away); nothing was left.
    Cancelled,
    /// Anything else: an IO error, a registry or libvirt refusal, a broken protocol.
    Failed,
}

impl ErrorKind {
    /// Every kind, in declaration order (for tests and documentation).
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::InUse,
        ErrorKind::Invalid,
        ErrorKind::Unsupported,
        ErrorKind::Damaged,
        ErrorKind::Unavailable,
        ErrorKind::Cancelled,
        ErrorKind::Failed,
    ];

    /// The kind of an OS error, where it says more than "failed".
    fn of_io(e: &std::io::Error) -> ErrorKind {
        match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            _ => ErrorKind::Failed,
        }
    }
}

/// A failed request as it crosses the control socket:
/// `{"kind":"not_found","object":"volume a","message":"volume a does not exist"}`.
///
/// `object` names what the failure is about the way the message does (`volume a`,
/// `snapshot a@s1`, `vm web`, a path, a URL, a registry reference, an option such as
/// `--creds`); it is absent when the message names nothing in particular.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    #[serde(deserialize_with = "kind_or_failed")]
    pub kind: ErrorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, object: Option<String>, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            object,
            message: message.into(),
        }
    }

    /// What an older server's plain-text error (`{"error":"…"}`) becomes.
    pub fn from_text(message: impl Into<String>) -> Failure {
        Failure::new(ErrorKind::Failed, None, message)
    }
}

/// A newer server may send a kind this client does not know: it is a failure all the
/// same, never a reply the client cannot read.
fn kind_or_failed<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorKind, D::Error> {
    let text = String::deserialize(d)?;
    Ok(ErrorKind::deserialize(
        serde::de::value::StrDeserializer::<serde::de::value::Error>::new(&text),
    )
    .unwrap_or(ErrorKind::Failed))
}

/// The error of a reply line: the typed [`Failure`], or the plain text older servers
/// send (read as kind `failed`).
pub(crate) fn failure_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Failure, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Typed(Failure),
        Text(String),
    }
    Ok(match Wire::deserialize(d)? {
        Wire::Typed(f) => f,
        Wire::Text(t) => Failure::from_text(t),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(transparent)]
    Transfer(#[from] ImportError),
    /// An import into a name that is taken, refused by the importer before it read
    /// anything; its message is the importer's.
    #[error("{inner}")]
    ImportNameTaken { name: String, inner: ImportError },
    #[error(transparent)]
    Vm(#[from] VmRecordError),
    /// A VM use case (`crate::vm`) refused or failed.
    #[error(transparent)]
    VmOp(#[from] VmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A request about declarative objects (apply, get, delete, upload).
    #[error(transparent)]
    Object(#[from] crate::objects::ObjectError),
    /// An error reported by a server, as it sent it.
    #[error("{0}")]
    Remote(Failure),
    #[error("control socket {path}: {source}")]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {detail}")]
    Protocol {
        path: std::path::PathBuf,
        detail: String,
    },
}

impl ControlError {
    /// This error as it travels: kind, object, and the `Display` text as the message.
    pub fn failure(&self) -> Failure {
        let (kind, object) = match self {
            ControlError::Remote(f) => return f.clone(),
            ControlError::Param(p) => (ErrorKind::Invalid, Some(p.what.to_string())),
            ControlError::Transfer(e) => (import_kind(e), e.object()),
            ControlError::ImportNameTaken { name, .. } => {
                (ErrorKind::AlreadyExists, Some(format!("volume {name}")))
            }
            ControlError::Vm(e) => vm_record(e),
            ControlError::VmOp(e) => e.kind(),
            ControlError::Store(e) => (store_kind(e), e.object()),
            ControlError::Export(e) => export(e),
            ControlError::Object(e) => e.kind(),
            ControlError::Socket { path, source } => (
                match source.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                        ErrorKind::Unavailable
                    }
                    _ => ErrorKind::of_io(source),
                },
                Some(path.display().to_string()),
            ),
            ControlError::Protocol { path, .. } => {
                (ErrorKind::Failed, Some(path.display().to_string()))
            }
        };
        Failure::new(kind, object, self.to_string())
    }

    /// The kind alone (see [`ControlError::failure`]).
    pub fn kind(&self) -> ErrorKind {
        self.failure().kind
    }
}

/// Every store error by variant: a new variant must be given its kind here.
pub fn store_kind(e: &StoreError) -> ErrorKind {
    match e {
        StoreError::Io { source, .. } => ErrorKind::of_io(source),
        StoreError::Locked { .. } => ErrorKind::Unavailable,
        StoreError::NewerFormat { .. } | StoreError::ChainTooDeep { .. } => ErrorKind::Unsupported,
        StoreError::Damaged { .. } => ErrorKind::Damaged,
        StoreError::NoSuchVolume(_)
        | StoreError::NoSuchSnapshot(_)
        | StoreError::Deleted(_)
        | StoreError::NoSuchRecord { .. } => ErrorKind::NotFound,
        StoreError::BadRecord { .. } => ErrorKind::Invalid,
        StoreError::Database { .. } => ErrorKind::Failed,
        StoreError::Exists(_) => ErrorKind::AlreadyExists,
        StoreError::HasDependants { .. } | StoreError::Open(_) => ErrorKind::InUse,
        StoreError::BadSize { .. }
        | StoreError::Shrink { .. }
        | StoreError::ReadOnly(_)
        | StoreError::OutOfRange { .. }
        | StoreError::Name(_) => ErrorKind::Invalid,
        // A sync failed earlier: the volume refuses writes until it is reopened.
        StoreError::Export { .. }
        | StoreError::Fenced { .. }
        | StoreError::StoreReadOnly { .. } => ErrorKind::Failed,
    }
}

/// Import and push errors by variant (the type is `non_exhaustive`: a variant added
/// later is `failed` until it is given its kind here).
pub fn import_kind(e: &ImportError) -> ErrorKind {
    match e {
        ImportError::InvalidSource { .. }
        | ImportError::InvalidDestination { .. }
        | ImportError::AuthFile { .. }
        | ImportError::NeedsBacking { .. } => ErrorKind::Invalid,
        ImportError::TooLarge { .. }
        | ImportError::NoDisk { .. }
        | ImportError::Unsupported { .. } => ErrorKind::Unsupported,
        ImportError::Io { source, .. } => ErrorKind::of_io(source),
        ImportError::HttpStatus { status, .. } => match status {
            404 | 410 => ErrorKind::NotFound,
            408 | 429 | 500..=599 => ErrorKind::Unavailable,
            401 | 403 => ErrorKind::Failed,
            400..=499 => ErrorKind::Invalid,
            _ => ErrorKind::Failed,
        },
        ImportError::Network { .. } => ErrorKind::Unavailable,
        ImportError::NotInRegistry { .. } => ErrorKind::NotFound,
        // An empty input is no disk image: the source given is wrong.
        ImportError::Empty { .. } => ErrorKind::Invalid,
        ImportError::SourceChanged { .. } | ImportError::Registry { .. } => ErrorKind::Failed,
        ImportError::Manifest { source, .. } => match source {
            ManifestError::Json(_) | ManifestError::Digest { .. } => ErrorKind::Damaged,
            ManifestError::TooLarge { .. }
            | ManifestError::Schema(_)
            | ManifestError::MediaType(_)
            | ManifestError::NoLayers
            | ManifestError::TooManyLayers(_) => ErrorKind::Unsupported,
        },
        ImportError::Tar { source, .. } => match source {
            TarError::Header { .. } | TarError::Truncated { .. } => ErrorKind::Damaged,
            TarError::Path { .. }
            | TarError::LinkEscape { .. }
            | TarError::MetaTooLarge { .. }
            | TarError::Sparse { .. } => ErrorKind::Unsupported,
            TarError::Io { source, .. } => ErrorKind::of_io(source),
        },
        ImportError::Format { source, .. } => format_kind(source),
        ImportError::ChecksumMismatch { .. } | ImportError::SizeMismatch { .. } => {
            ErrorKind::Damaged
        }
        // The store's own error is text by now (see StoreSink).
        ImportError::Sink { .. } => ErrorKind::Failed,
        ImportError::Cancelled => ErrorKind::Cancelled,
        ImportError::Aborted(_) => ErrorKind::Failed,
        _ => ErrorKind::Failed,
    }
}

fn format_kind(e: &FormatError) -> ErrorKind {
    match e {
        FormatError::Io { source, .. } => ErrorKind::of_io(source),
        FormatError::Truncated { .. }
        | FormatError::Corrupt { .. }
        | FormatError::OutOfRange { .. } => ErrorKind::Damaged,
        // The data is not the format asked for (--format, or the layer's media type).
        FormatError::BadMagic { .. } => ErrorKind::Invalid,
        FormatError::Unsupported { .. }
        | FormatError::TooLarge { .. }
        | FormatError::BackingFile { .. }
        | FormatError::Encrypted { .. } => ErrorKind::Unsupported,
        FormatError::InvalidInput { .. } => ErrorKind::Failed,
        _ => ErrorKind::Failed,
    }
}

fn vm_record(e: &VmRecordError) -> (ErrorKind, Option<String>) {
    match e {
        VmRecordError::NoSuchVm(name) => (ErrorKind::NotFound, Some(format!("vm {name}"))),
        VmRecordError::Io { path, source } => {
            (ErrorKind::of_io(source), Some(path.display().to_string()))
        }
        VmRecordError::Damaged { path, .. } => {
            (ErrorKind::Damaged, Some(path.display().to_string()))
        }
        VmRecordError::Store(e) => (store_kind(e), e.object()),
    }
}

fn export(e: &ExportError) -> (ErrorKind, Option<String>) {
    match e {
        ExportError::Io { path, source } => {
            (ErrorKind::of_io(source), Some(path.display().to_string()))
        }
        ExportError::Store { source, .. } => (store_kind(source), source.object()),
        ExportError::Format { path, .. } => (ErrorKind::Failed, Some(path.display().to_string())),
        ExportError::Cancelled => (ErrorKind::Cancelled, None),
        ExportError::NoDirectory { dir, .. } => {
            (ErrorKind::NotFound, Some(dir.display().to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platter_types::{Name, VolumeRef};
    use std::io;

    /// The failure of `e`, checked to carry `e`'s Display text as its message.
    fn failure(e: impl Into<ControlError>) -> Failure {
        let e = e.into();
        let f = e.failure();
        assert_eq!(f.message, e.to_string());
        assert_eq!(f.to_string(), e.to_string());
        f
    }

    fn is(e: impl Into<ControlError>, kind: ErrorKind, object: Option<&str>) {
        let f = failure(e);
        assert_eq!((f.kind, f.object.as_deref()), (kind, object), "{f:?}");
    }

    fn io_err(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    #[test]
    fn missing_objects_are_not_found_and_named() {
        let f = failure(StoreError::NoSuchVolume("a".into()));
        assert_eq!(
            f,
            Failure::new(
                ErrorKind::NotFound,
                Some("volume a".into()),
                "volume a does not exist"
            )
        );
        is(
            StoreError::NoSuchSnapshot("a@s1".into()),
            ErrorKind::NotFound,
            Some("snapshot a@s1"),
        );
        is(
            VmRecordError::NoSuchVm("web".into()),
            ErrorKind::NotFound,
            Some("vm web"),
        );
        is(
            StoreError::Deleted("a".into()),
            ErrorKind::NotFound,
            Some("volume a"),
        );
        is(
            ImportError::HttpStatus {
                url: "http://h/x".into(),
                status: 404,
                detail: String::new(),
            },
            ErrorKind::NotFound,
            Some("http://h/x"),
        );
        is(
            ExportError::Io {
                path: "/no/dir/x.partial".into(),
                source: io_err(io::ErrorKind::NotFound),
            },
            ErrorKind::NotFound,
            Some("/no/dir/x.partial"),
        );
    }

    #[test]
    fn taken_names_already_exist() {
        is(
            StoreError::Exists("volume a".into()),
            ErrorKind::AlreadyExists,
            Some("volume a"),
        );
        is(
            StoreError::Exists("snapshot a@s1".into()),
            ErrorKind::AlreadyExists,
            Some("snapshot a@s1"),
        );
        let taken = ControlError::ImportNameTaken {
            name: "a".into(),
            inner: ImportError::InvalidDestination {
                dest: "a".into(),
                reason: "a volume of that name already exists".into(),
            },
        };
        assert_eq!(
            taken.to_string(),
            "invalid destination \"a\": a volume of that name already exists"
        );
        is(taken, ErrorKind::AlreadyExists, Some("volume a"));
    }

    #[test]
    fn dependants_make_it_in_use() {
        is(
            StoreError::HasDependants {
                target: "a@s1".into(),
                dependants: "clone b depends on it".into(),
            },
            ErrorKind::InUse,
            Some("snapshot a@s1"),
        );
        is(
            StoreError::HasDependants {
                target: "a".into(),
                dependants: "clone b depends on it".into(),
            },
            ErrorKind::InUse,
            Some("volume a"),
        );
    }

    #[test]
    fn bad_requests_are_invalid() {
        is(
            StoreError::BadSize {
                object: "a".into(),
                size: 0,
                reason: "zero".into(),
            },
            ErrorKind::Invalid,
            Some("volume a"),
        );
        is(
            StoreError::Shrink {
                name: "a".into(),
                from: 2,
                to: 1,
            },
            ErrorKind::Invalid,
            Some("volume a"),
        );
        is(
            StoreError::ReadOnly(VolumeRef::parse("a@s1").unwrap()),
            ErrorKind::Invalid,
            Some("snapshot a@s1"),
        );
        is(
            StoreError::OutOfRange {
                object: "a".into(),
                offset: 1,
                len: 1,
                size: 1,
            },
            ErrorKind::Invalid,
            Some("volume a"),
        );
        is(
            StoreError::Name(Name::new("../x").unwrap_err()),
            ErrorKind::Invalid,
            None,
        );
        is(
            ParamError {
                what: "--creds",
                detail: "no colon".into(),
            },
            ErrorKind::Invalid,
            Some("--creds"),
        );
        is(
            ImportError::InvalidSource {
                source_str: "ftp://x".into(),
                reason: "unknown scheme".into(),
            },
            ErrorKind::Invalid,
            Some("ftp://x"),
        );
        is(
            ImportError::Format {
                what: "disk.vmdk".into(),
                source: FormatError::BadMagic { format: "vmdk" },
            },
            ErrorKind::Invalid,
            Some("disk.vmdk"),
        );
    }

    #[test]
    fn what_platter_does_not_take_is_unsupported() {
        is(
            StoreError::NewerFormat {
                dir: "/s".into(),
                found: 9,
                supported: 1,
            },
            ErrorKind::Unsupported,
            Some("/s"),
        );
        is(
            ImportError::NoDisk {
                what: "docker://h/r:t".into(),
                detail: "no disk/ entry".into(),
            },
            ErrorKind::Unsupported,
            Some("docker://h/r:t"),
        );
        is(
            ImportError::Format {
                what: "disk.qcow2".into(),
                source: FormatError::Encrypted {
                    format: "qcow2",
                    method: "luks".into(),
                },
            },
            ErrorKind::Unsupported,
            Some("disk.qcow2"),
        );
    }

    #[test]
    fn corrupt_data_is_damaged() {
        is(
            StoreError::Damaged {
                path: "/s/catalog".into(),
                detail: "bad json".into(),
            },
            ErrorKind::Damaged,
            Some("/s/catalog"),
        );
        is(
            VmRecordError::Damaged {
                path: "/s/vms/web.json".into(),
                detail: "bad json".into(),
            },
            ErrorKind::Damaged,
            Some("/s/vms/web.json"),
        );
        is(
            ImportError::ChecksumMismatch {
                what: "http://h/x".into(),
                expected: "sha256:aa".into(),
                actual: "sha256:bb".into(),
            },
            ErrorKind::Damaged,
            Some("http://h/x"),
        );
        is(
            ImportError::Format {
                what: "disk.qcow2".into(),
                source: FormatError::Corrupt {
                    format: "qcow2",
                    detail: "L1 table past the end".into(),
                },
            },
            ErrorKind::Damaged,
            Some("disk.qcow2"),
        );
    }

    #[test]
    fn what_cannot_be_had_now_is_unavailable() {
        is(
            StoreError::Locked {
                dir: "/s".into(),
                pid: Some(7),
            },
            ErrorKind::Unavailable,
            Some("/s"),
        );
        is(
            ImportError::Network {
                url: "https://h/x".into(),
                detail: "connection refused".into(),
            },
            ErrorKind::Unavailable,
            Some("https://h/x"),
        );
        is(
            ImportError::HttpStatus {
                url: "https://h/x".into(),
                status: 503,
                detail: String::new(),
            },
            ErrorKind::Unavailable,
            Some("https://h/x"),
        );
        is(
            ControlError::Socket {
                path: "/s/run/control.sock".into(),
                source: io_err(io::ErrorKind::ConnectionRefused),
            },
            ErrorKind::Unavailable,
            Some("/s/run/control.sock"),
        );
    }

    #[test]
    fn stopped_work_is_cancelled() {
        let f = failure(ImportError::Cancelled);
        assert_eq!(
            (f.kind, f.object, f.message.as_str()),
            (ErrorKind::Cancelled, None, "cancelled")
        );
        is(ExportError::Cancelled, ErrorKind::Cancelled, None);
    }

    #[test]
    fn everything_else_failed() {
        is(
            StoreError::Io {
                op: "write",
                path: "/s/blobs/x/data".into(),
                source: io_err(io::ErrorKind::PermissionDenied),
            },
            ErrorKind::Failed,
            Some("/s/blobs/x/data"),
        );
        is(
            ImportError::Registry {
                reference: "docker://h/r:t".into(),
                detail: "manifest unknown".into(),
            },
            ErrorKind::Failed,
            Some("docker://h/r:t"),
        );
        is(
            ImportError::Sink {
                target: "volume a".into(),
                detail: "no space".into(),
            },
            ErrorKind::Failed,
            Some("volume a"),
        );
        is(
            ControlError::Protocol {
                path: "/s/run/control.sock".into(),
                detail: "bad reply".into(),
            },
            ErrorKind::Failed,
            Some("/s/run/control.sock"),
        );
    }

    #[test]
    fn remote_failures_pass_unchanged() {
        let f = Failure::new(ErrorKind::InUse, Some("volume a".into()), "cannot delete a");
        let e = ControlError::Remote(f.clone());
        assert_eq!(e.failure(), f);
        assert_eq!(e.to_string(), "cannot delete a");
        assert_eq!(e.kind(), ErrorKind::InUse);
    }

    #[test]
    fn every_kind_round_trips_in_snake_case() {
        let names = [
            "not_found",
            "already_exists",
            "in_use",
            "invalid",
            "unsupported",
            "damaged",
            "unavailable",
            "cancelled",
            "failed",
        ];
        for (kind, name) in ErrorKind::ALL.into_iter().zip(names) {
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
            for object in [None, Some("volume a".to_string())] {
                let f = Failure::new(kind, object, "m");
                let s = serde_json::to_string(&f).unwrap();
                assert_eq!(serde_json::from_str::<Failure>(&s).unwrap(), f, "{s}");
                let line = serde_json::to_string(&crate::Reply::Error(f.clone())).unwrap();
                assert_eq!(
                    serde_json::from_str::<crate::Reply>(&line).unwrap(),
                    crate::Reply::Error(f)
                );
            }
        }
    }

    #[test]
    fn the_wire_shape_is_as_documented() {
        let f = failure(StoreError::NoSuchVolume("a".into()));
        assert_eq!(
            serde_json::to_string(&crate::Reply::Error(f)).unwrap(),
            r#"{"error":{"kind":"not_found","object":"volume a","message":"volume a does not exist"}}"#
        );
        let f = Failure::new(ErrorKind::Cancelled, None, "cancelled");
        assert_eq!(
            serde_json::to_string(&crate::Reply::Error(f)).unwrap(),
            r#"{"error":{"kind":"cancelled","message":"cancelled"}}"#
        );
    }

    #[test]
    fn older_servers_and_newer_kinds_are_read() {
        let old: crate::Reply =
            serde_json::from_str(r#"{"error":"volume a does not exist"}"#).unwrap();
        assert_eq!(
            old,
            crate::Reply::Error(Failure::from_text("volume a does not exist"))
        );
        let newer: crate::Reply =
            serde_json::from_str(r#"{"error":{"kind":"quota_exceeded","message":"full"}}"#)
                .unwrap();
        assert_eq!(
            newer,
            crate::Reply::Error(Failure::new(ErrorKind::Failed, None, "full"))
        );
        for bad in [
            r#"{"error":{"kind":"failed"}}"#,
            r#"{"error":{"kind":3,"message":"m"}}"#,
            r#"{"error":7}"#,
            r#"{"error":null}"#,
        ] {
            assert!(serde_json::from_str::<crate::Reply>(bad).is_err(), "{bad}");
        }
    }
}
