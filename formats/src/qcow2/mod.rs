//! qcow2: the QEMU copy-on-write image format, versions 2 and 3 (compat 0.10 and 1.1).
//!
//! - [`header`]: the header and its extensions, parsed and validated from bytes.
//! - [`l2`]: layout math and L1/L2 entry decoding into a "where is this cluster" enum.
//! - [`compress`]: zlib (raw deflate) and zstd cluster (de)compression, bounded.
//! - [`refcount`]: the writer's append-only host-cluster allocator and refcount blocks.
//! - [`reader`]: [`Qcow2Image`], a [`crate::DiskImage`] over any [`crate::ReadAt`].
//! - [`writer`]: [`Qcow2Writer`], a streaming qcow2 v3 writer.
//! - [`seq`]: [`SeqPlan`]/[`SeqLayout`], a qcow2 laid out up front (exact length) and
//!   emitted in file order, for streaming into a tar without a temporary file.
//! - [`stream`]: [`Qcow2Stream`], decodes an image from a forward-only byte stream.
//!
//! The format is described in QEMU's `docs/interop/qcow2.txt`. Nothing here trusts a
//! number read from an image before bounding it, and nothing here follows a backing file
//! by name: the caller opens backing images itself and passes them in.

pub mod compress;
pub mod header;
pub mod l2;
pub mod reader;
mod refcount;
pub mod seq;
pub mod stream;
pub mod writer;

#[cfg(test)]
mod tests;

pub use compress::Compression;
pub use header::{CompressionType, Header, HeaderExtensions};
pub use l2::{ClusterMap, Geometry};
pub use reader::{read_header, Qcow2Image};
pub use seq::{Piece, Pieces, SeqLayout, SeqPlan};
pub use stream::{
    CompressedCluster, Qcow2Stream, StreamHandler, StreamInfo, StreamLimits, StreamStats,
};
pub use writer::{ClusterPreparer, PreparedCluster, Qcow2Writer, WriterOptions};

/// The format name used in errors.
pub(crate) const FORMAT: &str = "qcow2";

/// Largest virtual size accepted (64 PiB: the L2 entry offset field is 56 bits).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 56;

/// Largest active L1 table accepted, in bytes (QEMU's own limit, 32 MiB).
pub const MAX_L1_BYTES: u64 = 32 << 20;

/// Largest refcount table the writer produces, in bytes (QEMU's own limit, 8 MiB).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;

/// Smallest and largest cluster_bits accepted (512 B .. 2 MiB, as QEMU).
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
