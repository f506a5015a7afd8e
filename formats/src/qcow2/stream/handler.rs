//! The streaming decoder's interface: what it reports to its caller
//! ([`StreamHandler`]), what it tells about the image ([`StreamInfo`]), compressed
//! clusters handed over whole ([`CompressedCluster`]), its limits and counters.
//!
//! Types only, plus the decompression helper; no state and no IO.

use crate::qcow2::compress::{self, DecompressError};
use crate::qcow2::header::{CompressionType, Header};
use crate::qcow2::FORMAT;
use crate::FormatError;

/// Bounds on the decoder's own memory (the stash is the handler's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Data/compressed runs kept waiting for their bytes. A table that would pass this
    /// is stashed and decoded at the end instead (24 bytes a run).
    pub max_pending_runs: usize,
    /// Bytes collected at once for L2 tables and compressed clusters that overlap.
    pub max_collect_bytes: u64,
    /// References being served at the same host offset (more only in hostile images).
    pub max_active: usize,
    /// Separate host ranges in the stash (16 bytes each).
    pub max_stash_ranges: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_pending_runs: 1 << 20,
            max_collect_bytes: 32 << 20,
            max_active: 4096,
            max_stash_ranges: 1 << 20,
        }
    }
}

/// What the header says, given to [`StreamHandler::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub virtual_size: u64,
    pub cluster_size: u64,
    pub compression: CompressionType,
    pub header: Header,
}

/// A compressed cluster whose bytes are all in: decompress it with
/// [`CompressedCluster::decompress`] and use the first `len` bytes.
#[derive(Debug, Clone, Copy)]
pub struct CompressedCluster<'a> {
    /// Guest offset of the cluster.
    pub guest: u64,
    /// Guest bytes it holds (a cluster, less at the end of the virtual size).
    pub len: usize,
    /// Where the compressed bytes start in the image (for errors).
    pub host: u64,
    pub input: &'a [u8],
}

impl CompressedCluster<'_> {
    /// Decompresses into `out`, which must be exactly one cluster long.
    pub fn decompress(&self, kind: CompressionType, out: &mut [u8]) -> Result<(), FormatError> {
        decompress_cluster(kind, self.input, out, self.guest, self.host)
    }
}

/// Decompresses one cluster (`out` is one cluster long), with the reader's error text.
pub fn decompress_cluster(
    kind: CompressionType,
    input: &[u8],
    out: &mut [u8],
    guest: u64,
    host: u64,
) -> Result<(), FormatError> {
    compress::decompress(kind, input, out).map_err(|e: DecompressError| {
        let cluster = guest / (out.len().max(1) as u64);
        FormatError::corrupt(
            FORMAT,
            format!("compressed guest cluster {cluster} at host offset {host:#x}: {e}"),
        )
    })
}

/// Receives what the decoder finds. Guest ranges come in host order, not guest order;
/// every guest byte below the virtual size is reported exactly once, as data, zero or
/// part of a compressed cluster.
pub trait StreamHandler {
    type Error: From<FormatError>;
    /// The header is valid; nothing else is called before this.
    fn start(&mut self, info: &StreamInfo) -> Result<(), Self::Error>;
    /// Guest bytes at `guest`.
    fn data(&mut self, guest: u64, bytes: &[u8]) -> Result<(), Self::Error>;
    /// The guest range reads as zeros.
    fn zero(&mut self, guest: u64, len: u64) -> Result<(), Self::Error>;
    fn compressed(&mut self, cluster: CompressedCluster<'_>) -> Result<(), Self::Error>;
    /// Host bytes whose meaning is not known yet: keep them (all-zero parts need not be
    /// stored), [`StreamHandler::recall`] may ask for them.
    fn stash(&mut self, host: u64, bytes: &[u8]) -> Result<(), Self::Error>;
    /// Fills `buf` with stashed bytes from `host` (only ranges given to `stash`).
    fn recall(&mut self, host: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Nothing stashed will be asked for again.
    fn release_stash(&mut self) -> Result<(), Self::Error>;
}

/// Counters, for reporting what the fallback cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Host bytes handed to the stash (zeros included).
    pub stashed: u64,
    /// Bytes asked back from the stash.
    pub recalled: u64,
    /// L2 tables decoded at the end because too many references were waiting.
    pub deferred_tables: u64,
}
