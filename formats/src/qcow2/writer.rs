//! A streaming qcow2 v3 (compat 1.1) writer: data clusters in, a complete image out.
//!
//! The caller hands over allocated guest clusters in increasing order; the writer
//! appends each one (compressed when asked and when that saves space), writes every L2
//! table as soon as its range is complete, and at [`Qcow2Writer::finish`] writes the L1
//! table, the last refcount blocks, the refcount table and the header. The L1 table's
//! clusters are reserved right after the header and each L2 table's cluster when its
//! range starts, so every table lies before the data it maps: the image can be decoded
//! from a stream (a gzip'ed containerDisk) without a spool. Memory stays at
//! one L2 table, a few refcount blocks and the L1 table, whatever the virtual size.
//! Output goes through [`WriteAt`]: positional writes, no seeking.
//!
//! The result has no backing file, no snapshots, 16-bit refcounts, and passes
//! `qemu-img check` with no errors and no leaks.

use super::compress::{self, Compression};
use super::header::{
    CompressionType, Header, INCOMPAT_COMPRESSION, V3_HEADER_LEN, V3_HEADER_LEN_WITH_COMPRESSION,
};
use super::l2::{OFLAG_COMPRESSED, OFLAG_COPIED, SECTOR};
use super::refcount::{HostAllocator, REFCOUNT_ORDER};
use super::{FORMAT, MAX_CLUSTER_BITS, MAX_L1_BYTES, MAX_VIRTUAL_SIZE, MIN_CLUSTER_BITS};
use crate::{FormatError, WriteAt};
use std::fs::File;

/// How to lay out the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Cluster size in bytes: a power of two from 512 to 2 MiB.
    pub cluster_size: u64,
    pub compression: Compression,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            cluster_size: 64 << 10,
            compression: Compression::None,
        }
    }
}

/// Writes a qcow2 image cluster by cluster. See the module docs.
pub struct Qcow2Writer<W: WriteAt = File> {
    out: W,
    cluster_bits: u32,
    preparer: ClusterPreparer,
    alloc: HostAllocator,
    /// Active L1 table (entries for complete L2 tables are filled in as they are written).
    l1: Vec<u64>,
    /// Where the L1 table goes: reserved right after the header, so that a reader of the
    /// image as a stream meets every table before the data it maps.
    l1_offset: u64,
    /// The L2 table being filled: its L1 index, entries, and the host cluster reserved
    /// for it when its range started (before any of its data).
    l2: Option<(usize, Vec<u64>, u64)>,
    /// Smallest guest cluster index the next `write_cluster` may use.
    next_index: u64,
}

/// What a guest cluster becomes in the image, decided without IO by
/// [`ClusterPreparer::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreparedCluster {
    /// All zeros: not stored (reads as zero).
    Zero,
    /// Stored as is (no compression asked, or it did not save space).
    Raw(Vec<u8>),
    /// Compressed stream, shorter than a cluster.
    Compressed(Vec<u8>),
}

/// The same, borrowing the caller's data when stored raw.
enum Stored<'a> {
    Zero,
    Raw(&'a [u8]),
    Compressed(Vec<u8>),
}

/// The IO-free half of the writer: checks a cluster, spots zeros, compresses. It is
/// `Copy + Send`: give copies to worker threads to compress clusters in parallel, then
/// pass the results to [`Qcow2Writer::write_prepared`] in index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterPreparer {
    cluster_bits: u32,
    virtual_size: u64,
    compression: Option<CompressionType>,
}

impl ClusterPreparer {
    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn guest_clusters(&self) -> u64 {
        self.virtual_size.div_ceil(self.cluster_size())
    }

    /// Decides how guest cluster `index` holding `data` is stored (see
    /// [`Qcow2Writer::write_cluster`] for what `data` may be).
    pub fn prepare(&self, index: u64, data: &[u8]) -> Result<PreparedCluster, FormatError> {
        Ok(match self.classify(index, data)? {
            Stored::Zero => PreparedCluster::Zero,
            Stored::Raw(d) => PreparedCluster::Raw(d.to_vec()),
            Stored::Compressed(c) => PreparedCluster::Compressed(c),
        })
    }

    fn check_index(&self, index: u64) -> Result<(), FormatError> {
        if index >= self.guest_clusters() {
            return Err(invalid(format!(
                "cluster {index} is past the virtual size ({} clusters)",
                self.guest_clusters()
            )));
        }
        Ok(())
    }

    fn classify<'a>(&self, index: u64, data: &'a [u8]) -> Result<Stored<'a>, FormatError> {
        self.check_index(index)?;
        let cs = self.cluster_size();
        if data.len() as u64 > cs {
            return Err(invalid(format!(
                "cluster {index}: {} bytes is more than a cluster",
                data.len()
            )));
        }
        let in_image = self.virtual_size - index * cs;
        let data = &data[..data
            .len()
            .min(usize::try_from(in_image).unwrap_or(usize::MAX))];
        if is_zero(data) {
            return Ok(Stored::Zero);
        }
        let Some(kind) = self.compression else {
            return Ok(Stored::Raw(data));
        };
        // QEMU compresses whole clusters; pad a short last one with zeros.
        let padded;
        let full = if (data.len() as u64) < cs {
            let mut p = data.to_vec();
            p.resize(cs as usize, 0);
            padded = p;
            &padded[..]
        } else {
            data
        };
        Ok(match compress::compress(kind, full, cs as usize - 1) {
            Some(packed) => Stored::Compressed(packed),
            None => Stored::Raw(data),
        })
    }
}

fn invalid(detail: String) -> FormatError {
    FormatError::InvalidInput {
        format: FORMAT,
        detail,
    }
}

fn is_zero(buf: &[u8]) -> bool {
    // OR-folding fixed chunks vectorises well; the early exit keeps data clusters cheap.
    let mut chunks = buf.chunks_exact(256);
    let rest_zero = chunks.remainder().iter().all(|&b| b == 0);
    rest_zero && chunks.all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

impl<W: WriteAt> Qcow2Writer<W> {
    /// Starts an image of `virtual_size` bytes on `out` (which should be empty). The
    /// size is rounded up to a multiple of 512, as `qemu-img` does: QEMU addresses
    /// qcow2 images in whole sectors.
    pub fn new(out: W, virtual_size: u64, opts: WriterOptions) -> Result<Self, FormatError> {
        let cs = opts.cluster_size;
        let ImageGeometry {
            cluster_bits,
            virtual_size,
            l1_entries,
        } = ImageGeometry::new(virtual_size, cs)?;
        let compression = match opts.compression {
            Compression::None => None,
            Compression::Zlib => Some(CompressionType::Zlib),
            Compression::Zstd => Some(CompressionType::Zstd),
        };
        let mut alloc = HostAllocator::new(cluster_bits)?;
        let l1_offset = if l1_entries == 0 {
            0
        } else {
            alloc.alloc_clusters((l1_entries * 8).div_ceil(cs))?
        };
        Ok(Qcow2Writer {
            out,
            cluster_bits,
            preparer: ClusterPreparer {
                cluster_bits,
                virtual_size,
                compression,
            },
            alloc,
            l1: vec![0; l1_entries as usize],
            l1_offset,
            l2: None,
            next_index: 0,
        })
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The virtual size written to the header (the requested size rounded up to 512).
    pub fn virtual_size(&self) -> u64 {
        self.preparer.virtual_size
    }

    /// Number of guest clusters (the last may be partial).
    pub fn guest_clusters(&self) -> u64 {
        self.preparer.guest_clusters()
    }

    fn l2_bits(&self) -> u32 {
        self.cluster_bits - 3
    }

    /// The IO-free preparer matching this writer, for compressing on other threads.
    pub fn preparer(&self) -> ClusterPreparer {
        self.preparer
    }

    /// Stores guest cluster `index`. Indexes must increase from call to call; clusters
    /// never written read as zeros. `data` is at most one cluster (shorter means the rest
    /// is zero); bytes past the virtual size are ignored. All-zero data is not stored.
    pub fn write_cluster(&mut self, index: u64, data: &[u8]) -> Result<(), FormatError> {
        self.check_order(index)?;
        let stored = self.preparer.classify(index, data)?;
        self.place(index, stored)
    }

    /// Stores a cluster prepared by [`ClusterPreparer::prepare`] (same rules on `index`).
    pub fn write_prepared(
        &mut self,
        index: u64,
        cluster: &PreparedCluster,
    ) -> Result<(), FormatError> {
        self.check_order(index)?;
        self.preparer.check_index(index)?;
        let stored = match cluster {
            PreparedCluster::Zero => Stored::Zero,
            PreparedCluster::Raw(d) if d.len() as u64 <= self.cluster_size() => Stored::Raw(d),
            PreparedCluster::Compressed(c)
                if (c.len() as u64) < self.cluster_size() && !c.is_empty() =>
            {
                Stored::Compressed(c.clone())
            }
            _ => {
                return Err(invalid(format!(
                    "prepared cluster {index} does not fit this image's cluster size"
                )))
            }
        };
        self.place(index, stored)
    }

    fn check_order(&self, index: u64) -> Result<(), FormatError> {
        if index < self.next_index {
            return Err(invalid(format!(
                "cluster {index} written after cluster {}",
                self.next_index.saturating_sub(1)
            )));
        }
        Ok(())
    }

    fn place(&mut self, index: u64, stored: Stored<'_>) -> Result<(), FormatError> {
        self.next_index = index + 1;
        let entry = match stored {
            Stored::Zero => return Ok(()),
            Stored::Raw(data) => {
                self.switch_l2(index)?;
                let host = self.alloc.alloc_clusters(1)?;
                self.write(data, host, || format!("data of guest cluster {index}"))?;
                host | OFLAG_COPIED
            }
            Stored::Compressed(packed) => {
                self.switch_l2(index)?;
                self.store_compressed(index, &packed)?
            }
        };
        let entries = 1usize << self.l2_bits();
        if let Some((_, table, _)) = &mut self.l2 {
            table[(index as usize) & (entries - 1)] = entry;
        }
        self.write_finished_blocks()
    }

    /// Makes the L2 table covering `index` current, writing out the previous one.
    fn switch_l2(&mut self, index: u64) -> Result<(), FormatError> {
        let l1_index = (index >> self.l2_bits()) as usize;
        if self.l2.as_ref().is_some_and(|(i, _, _)| *i != l1_index) {
            self.flush_l2()?;
        }
        if self.l2.is_none() {
            let host = self.alloc.alloc_clusters(1)?;
            let entries = 1usize << self.l2_bits();
            self.l2 = Some((l1_index, vec![0; entries], host));
        }
        Ok(())
    }

    fn store_compressed(&mut self, index: u64, packed: &[u8]) -> Result<u64, FormatError> {
        let len = packed.len() as u64;
        let host = self.alloc.alloc_compressed(len)?;
        let offset_bits = 70 - self.cluster_bits;
        if host >= 1 << offset_bits {
            return Err(FormatError::TooLarge {
                format: FORMAT,
                what: "compressed cluster host offset".into(),
                value: host,
                limit: 1 << offset_bits,
            });
        }
        self.write(packed, host, || format!("compressed guest cluster {index}"))?;
        // Sectors beyond the first one holding `host` (which is sector-aligned here).
        let extra_sectors = (len - 1) / SECTOR;
        Ok(OFLAG_COMPRESSED | (extra_sectors << offset_bits) | host)
    }

    fn flush_l2(&mut self) -> Result<(), FormatError> {
        let Some((l1_index, table, host)) = self.l2.take() else {
            return Ok(());
        };
        let bytes = encode_entries(&table);
        self.write(&bytes, host, || format!("L2 table {l1_index}"))?;
        self.l1[l1_index] = host | OFLAG_COPIED;
        self.write_finished_blocks()
    }

    fn write_finished_blocks(&mut self) -> Result<(), FormatError> {
        for (offset, block) in self.alloc.take_finished() {
            self.write(&block, offset, || "refcount block".to_string())?;
        }
        Ok(())
    }

    fn write(
        &mut self,
        buf: &[u8],
        offset: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), FormatError> {
        self.out
            .write_all_at(buf, offset)
            .map_err(|e| FormatError::io(format!("writing qcow2 {} at {offset:#x}", what()), e))
    }

    /// Writes the remaining metadata and the header; returns the output. Does not fsync.
    pub fn finish(mut self) -> Result<W, FormatError> {
        self.flush_l2()?;
        let l1_bytes = encode_entries(&self.l1);
        let l1_offset = self.l1_offset;
        if !l1_bytes.is_empty() {
            self.write(&l1_bytes, l1_offset, || "L1 table".to_string())?;
        }
        self.write_finished_blocks()?;
        let table = self.alloc.finish()?;
        self.write_finished_blocks()?;
        self.write(&table.bytes, table.offset, || "refcount table".to_string())?;
        let header = image_header(&HeaderPlacement {
            cluster_bits: self.cluster_bits,
            virtual_size: self.preparer.virtual_size,
            l1_entries: self.l1.len() as u64,
            l1_offset,
            refcount_offset: table.offset,
            refcount_clusters: table.clusters,
            zstd: self.preparer.compression == Some(CompressionType::Zstd),
        });
        self.write(&header, 0, || "header".to_string())?;
        let end = self.alloc.end();
        self.out
            .set_len(end)
            .map_err(|e| FormatError::io(format!("setting qcow2 image length to {end}"), e))?;
        Ok(self.out)
    }
}

/// Validated image dimensions shared by [`Qcow2Writer`] and [`super::seq`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ImageGeometry {
    pub cluster_bits: u32,
    /// The requested size rounded up to a multiple of 512.
    pub virtual_size: u64,
    pub l1_entries: u64,
}

impl ImageGeometry {
    /// Checks the cluster size (a power of two from 512 to 2 MiB), the virtual size and
    /// the L1 table size against QEMU's limits.
    pub fn new(virtual_size: u64, cs: u64) -> Result<ImageGeometry, FormatError> {
        let cluster_bits = cs.trailing_zeros();
        if !cs.is_power_of_two() || !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(invalid(format!(
                "cluster size {cs} is not a power of two from 512 to 2 MiB"
            )));
        }
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(FormatError::TooLarge {
                format: FORMAT,
                what: "virtual size".into(),
                value: virtual_size,
                limit: MAX_VIRTUAL_SIZE,
            });
        }
        let virtual_size = virtual_size.next_multiple_of(SECTOR);
        let l2_span = 1u64 << (2 * cluster_bits - 3);
        let l1_entries = virtual_size.div_ceil(l2_span);
        if l1_entries * 8 > MAX_L1_BYTES {
            return Err(FormatError::TooLarge {
                format: FORMAT,
                what: format!("L1 table for a {virtual_size}-byte image with {cs}-byte clusters"),
                value: l1_entries * 8,
                limit: MAX_L1_BYTES,
            });
        }
        Ok(ImageGeometry {
            cluster_bits,
            virtual_size,
            l1_entries,
        })
    }
}

/// Where the tables of a finished image are, for [`image_header`].
pub(super) struct HeaderPlacement {
    pub cluster_bits: u32,
    pub virtual_size: u64,
    pub l1_entries: u64,
    pub l1_offset: u64,
    pub refcount_offset: u64,
    pub refcount_clusters: u32,
    pub zstd: bool,
}

/// The encoded v3 header of an image without backing file or snapshots, 16-bit
/// refcounts, followed by the zeroed end-of-extensions marker.
pub(super) fn image_header(p: &HeaderPlacement) -> Vec<u8> {
    let header = Header {
        version: 3,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits: p.cluster_bits,
        size: p.virtual_size,
        crypt_method: 0,
        // ImageGeometry bounded the L1 table to MAX_L1_BYTES.
        l1_size: p.l1_entries as u32,
        l1_table_offset: p.l1_offset,
        refcount_table_offset: p.refcount_offset,
        refcount_table_clusters: p.refcount_clusters,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: if p.zstd { INCOMPAT_COMPRESSION } else { 0 },
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: REFCOUNT_ORDER,
        header_length: if p.zstd {
            V3_HEADER_LEN_WITH_COMPRESSION as u32
        } else {
            V3_HEADER_LEN as u32
        },
        compression_type: u8::from(p.zstd),
    };
    let mut head = header.encode();
    head.extend_from_slice(&[0u8; 8]);
    head
}

/// L1/L2 table entries (and refcount table entries) as stored: big-endian u64s.
pub(super) fn encode_entries(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}
