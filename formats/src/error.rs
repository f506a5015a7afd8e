//! The one error type of `platter-formats`: every reader, the detector and the qcow2
//! writer report failures through [`FormatError`], each variant naming the format, the
//! structure and (where known) the file offset involved.
//!
//! Variants are deliberately generic so every format module can use them. This module
//! must never grow IO or parsing logic.

use std::io;

/// Everything that can go wrong while reading or writing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// An IO call on the underlying image failed.
    #[error("I/O error while {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    /// The image ends before a structure it declares.
    #[error("image truncated: {what} at offset {offset} is past the end of the file")]
    Truncated { what: String, offset: u64 },

    /// The magic bytes are not those of the expected format.
    #[error("not a {format} image: bad magic")]
    BadMagic { format: &'static str },

    /// A valid image uses a feature this reader does not implement (or refuses).
    #[error("unsupported {format} image: {what}")]
    Unsupported { format: &'static str, what: String },

    /// The image's metadata is inconsistent or points where it must not.
    #[error("corrupt {format} image: {detail}")]
    Corrupt {
        format: &'static str,
        detail: String,
    },

    /// A size declared by the image (or asked for by a caller) exceeds a safety bound.
    #[error("{format}: {what} is too large ({value} > limit {limit})")]
    TooLarge {
        format: &'static str,
        what: String,
        value: u64,
        limit: u64,
    },

    /// The image depends on a backing file, which the caller did not allow.
    #[error("image has a backing file {path:?}; refusing to follow it")]
    BackingFile { path: String },

    /// The image is encrypted.
    #[error("{format} image is encrypted ({method}); encrypted images are not supported")]
    Encrypted {
        format: &'static str,
        method: String,
    },

    /// A guest read or map request reaches past the virtual size.
    #[error("guest range {offset}+{len} is outside the virtual size {virtual_size}")]
    OutOfRange {
        offset: u64,
        len: u64,
        virtual_size: u64,
    },

    /// A caller of a writer broke its contract (e.g. cluster indexes not increasing).
    #[error("invalid use of {format} writer: {detail}")]
    InvalidInput {
        format: &'static str,
        detail: String,
    },
}

impl FormatError {
    /// Wraps an IO error with a description of what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        FormatError::Io {
            what: what.into(),
            source,
        }
    }

    /// Shorthand for [`FormatError::Corrupt`].
    pub fn corrupt(format: &'static str, detail: impl Into<String>) -> Self {
        FormatError::Corrupt {
            format,
            detail: detail.into(),
        }
    }

    /// Shorthand for [`FormatError::Unsupported`].
    pub fn unsupported(format: &'static str, what: impl Into<String>) -> Self {
        FormatError::Unsupported {
            format,
            what: what.into(),
        }
    }
}
