//! platter-importer: brings VM images into platter and sends volumes out again.
//!
//! Import is one streaming pass: a source (local file, `-`, HTTP(S), an OCI registry or
//! an OCI layout) is read once, hashed as downloaded, unwrapped (gz, xz, zstd, bz2,
//! tar/OVA), decoded (raw, qcow2, vmdk, vhd, vhdx, vdi, iso) and written zero-aware into a
//! [`sink::Sink`] (a sparse file, a block device or a temporary store volume). The stages
//! run on their own threads joined by bounded channels, so memory stays bounded for any
//! image size. Imports are atomic: the sink only becomes visible in `finish`.
//!
//! Push builds a KubeVirt containerDisk (one layer with `disk/disk.img`) from any
//! [`push::PushVolume`] and sends it to a registry or writes an OCI layout.
//!
//! This crate must never leave a partial result behind, never trust a length from a file
//! or a socket without bounding it, and never touch a volume other than its own sink.
#![forbid(unsafe_code)]

pub mod checksum;
pub mod error;
pub mod import;
pub mod oci;
pub mod options;
pub mod pipeline;
pub mod progress;
pub mod push;
pub mod sink;
pub mod source;
pub mod tar;

mod runtime;
mod spool;
mod stream;
mod writer;

pub use checksum::{Checksum, ChecksumAlgo};
pub use error::ImportError;
pub use import::{extract_files, import, resolve_digest, ImportReport};
pub use oci::files::{ExtractedFile, WantedFile};
pub use options::{
    CancelFlag, Credentials, Headers, ImportOptions, Platform, RegistryOptions, TlsOptions,
};
pub use progress::{NoProgress, Progress, ProgressEvent};
pub use push::{
    push, DiskFormat, LayerCompression, PushExtent, PushOptions, PushReport, PushVolume,
};
pub use sink::{DeviceSink, FileSink, Sink, StoreSink};
pub use source::tls::check_ca_certificate;
pub use source::SourceSpec;
