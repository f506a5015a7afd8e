//! VM image formats: detection by magic bytes, readers that map guest offsets to bytes of
//! an image file, and the qcow2 writer used by `platter volume export` and `platter push`.
//!
//! IO is injected: readers see the image only through [`ReadAt`] (a local file, an HTTP
//! Range reader, a buffer), so every parser is testable on bytes in memory. Nothing here
//! opens files by path, touches the network or the environment.
#![forbid(unsafe_code)]

mod blockmap;
pub mod detect;
pub mod error;
mod fields;
pub mod probe;
pub mod qcow2;
pub mod raw;
pub mod readat;
pub mod streammap;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

pub use detect::{detect, Format};
pub use error::FormatError;
pub use probe::{declared_virtual_size, probe};
pub use raw::RawImage;
pub use readat::{MemImage, ReadAt, WriteAt};

/// What a guest range holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Bytes stored in the image (may still happen to be zero).
    Data,
    /// Known to read as zero (unallocated, or a zero cluster).
    Zero,
}

/// A run of guest bytes of one kind, starting at the offset that was asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    pub kind: ExtentKind,
}

/// A disk image opened for reading: guest offsets in, guest bytes out.
pub trait DiskImage: Send + Sync {
    /// The format this reader understands.
    fn format(&self) -> Format;
    /// The guest-visible size in bytes.
    fn virtual_size(&self) -> u64;
    /// Describes the guest range starting at `offset`: its kind and how far it reaches
    /// (at least 1 byte, at most `max_len`, never past the virtual size).
    fn map(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError>;
    /// Reads guest bytes; unallocated ranges read as zeros. `offset + buf.len()` must not
    /// pass the virtual size.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), FormatError>;
}
