//! The one error type of the importer. Every variant names the object involved (source,
//! URL, reference, digest, path) so the CLI can print a one-line error as it is.
//!
//! Only data here: no IO, no retries, no logging.

use crate::oci::manifest::ManifestError;
use crate::tar::TarError;
use platter_formats::FormatError;
use std::io;

/// Everything an import or a push can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("invalid source {source_str:?}: {reason}")]
    InvalidSource { source_str: String, reason: String },

    #[error("invalid destination {dest:?}: {reason}")]
    InvalidDestination { dest: String, reason: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("{url}: HTTP {status}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    HttpStatus {
        url: String,
        status: u16,
        detail: String,
    },

    #[error("{url}: {detail}")]
    Network { url: String, detail: String },

    #[error("{url}: the resource changed while downloading (validator mismatch on resume)")]
    SourceChanged { url: String },

    #[error("registry {reference}: {detail}")]
    Registry { reference: String, detail: String },

    #[error("{what}: {source}")]
    Manifest {
        what: String,
        #[source]
        source: ManifestError,
    },

    #[error("auth file {path}: {detail}")]
    AuthFile { path: String, detail: String },

    #[error("{what}: {source}")]
    Tar {
        what: String,
        #[source]
        source: TarError,
    },

    /// A qcow2 overlay imported without its backing image.
    #[error("{what}: the qcow2 image has a backing file {backing:?}; give that image with --backing FILE to import the merged disk")]
    NeedsBacking { what: String, backing: String },

    #[error("{what}: {source}")]
    Format {
        what: String,
        #[source]
        source: FormatError,
    },

    #[error("checksum mismatch for {what}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("{what} exceeds the limit of {limit} bytes ({why})")]
    TooLarge {
        what: String,
        limit: u64,
        why: String,
    },

    #[error("{what}: {detail}")]
    NoDisk { what: String, detail: String },

    /// The input holds no bytes at all (give `--size` for a blank disk).
    #[error("{what} is empty: there is no disk image to import")]
    Empty { what: String },

    /// The registry has no such repository, or no such tag or digest in it.
    #[error("no {what} in {place}")]
    NotInRegistry { what: String, place: String },

    #[error("{what}: {detail}")]
    Unsupported { what: String, detail: String },

    #[error("{target}: {detail}")]
    Sink { target: String, detail: String },

    #[error("cancelled")]
    Cancelled,

    /// A pipeline stage stopped because another stage failed; never the reported error
    /// when the root cause is known.
    #[error("import aborted: {0}")]
    Aborted(&'static str),
}

impl ImportError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> ImportError {
        ImportError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn format(what: impl Into<String>, source: FormatError) -> ImportError {
        match source {
            FormatError::BackingFile { path } => ImportError::NeedsBacking {
                what: what.into(),
                backing: path,
            },
            source => ImportError::Format {
                what: what.into(),
                source,
            },
        }
    }

    /// The object this error is about, as its message names it: the source or
    /// destination, a URL, a registry reference, a file, a layer. `None` for an IO error
    /// (its message says what was being done to what) and for cancellation.
    pub fn object(&self) -> Option<String> {
        match self {
            ImportError::InvalidSource { source_str, .. } => Some(source_str.clone()),
            ImportError::InvalidDestination { dest, .. } => Some(dest.clone()),
            ImportError::HttpStatus { url, .. }
            | ImportError::Network { url, .. }
            | ImportError::SourceChanged { url } => Some(url.clone()),
            ImportError::Registry { reference, .. } => Some(reference.clone()),
            ImportError::AuthFile { path, .. } => Some(path.clone()),
            ImportError::Manifest { what, .. }
            | ImportError::Tar { what, .. }
            | ImportError::NeedsBacking { what, .. }
            | ImportError::Format { what, .. }
            | ImportError::ChecksumMismatch { what, .. }
            | ImportError::SizeMismatch { what, .. }
            | ImportError::TooLarge { what, .. }
            | ImportError::NoDisk { what, .. }
            | ImportError::Unsupported { what, .. }
            | ImportError::Empty { what } => Some(what.clone()),
            ImportError::NotInRegistry { place, .. } => Some(place.clone()),
            ImportError::Sink { target, .. } => Some(target.clone()),
            ImportError::Io { .. } | ImportError::Cancelled | ImportError::Aborted(_) => None,
        }
    }

    /// Whether this is a secondary error caused by another stage's failure.
    pub(crate) fn is_secondary(&self) -> bool {
        matches!(self, ImportError::Aborted(_))
    }
}

/// Wraps an [`ImportError`] as an `io::Error` so it can cross a `Read` boundary and be
/// recovered intact on the other side with [`from_io`].
pub(crate) fn to_io(e: ImportError) -> io::Error {
    io::Error::other(e)
}

/// Recovers an [`ImportError`] that crossed a `Read` boundary, else wraps the IO error.
pub(crate) fn from_io(what: impl Into<String>, e: io::Error) -> ImportError {
    if e.get_ref().is_some_and(|inner| inner.is::<ImportError>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(ie) = inner.downcast::<ImportError>() {
                return *ie;
            }
        }
        return ImportError::Aborted("lost error");
    }
    ImportError::io(what, e)
}
