//! A qcow2 image laid out in full before its first byte and emitted in file order, so
//! its exact length is known up front (a tar header in front of it, a Content-Length)
//! and it can be produced into a pipe: no seeking, no temporary file.
//!
//! [`SeqPlan`] collects which guest clusters hold data (a bitmap per L2 range that has
//! any: 1 KiB per 512 MiB of guest space with 64 KiB clusters, nothing for empty
//! ranges); [`SeqPlan::layout`] fixes every host offset and the file length; and
//! [`SeqLayout::pieces`] yields the image in increasing file offset: metadata clusters
//! as bytes, and runs of data clusters for the caller to supply. The file is
//!
//! ```text
//! header | L1 table | (L2 table, its data clusters)* | refcount blocks | refcount table
//! ```
//!
//! Every table lies before the data it maps and the refcount structures come last, so
//! [`super::Qcow2Stream`] decodes the image without recalling anything: the only bytes of
//! unknown meaning it meets are the zero padding after the L1 table, which a stash keeps
//! nothing of (a refcount block before the last L2 table would be non-zero bytes of
//! unknown meaning). Every cluster is
//! referenced exactly once: the image passes `qemu-img check` with no leaks. Data
//! clusters are stored whole (no compression, no zero detection: the caller decides
//! what counts as data before laying out); a planned cluster that turns out to be zero
//! is simply stored as zeros.
//!
//! Pure: no IO. Shares the header, geometry and table encodings with [`super::writer`].

use super::l2::OFLAG_COPIED;
use super::refcount::{encode_counts, window_bits};
use super::writer::{encode_entries, image_header, HeaderPlacement, ImageGeometry};
use super::{FORMAT, MAX_REFCOUNT_TABLE_BYTES, MAX_VIRTUAL_SIZE};
use crate::FormatError;
use std::collections::BTreeMap;
use std::ops::Bound;

#[cfg(test)]
mod tests;

/// The data clusters of one L2 range (the guest span one L2 table maps).
#[derive(Debug, Clone)]
struct RangeBits {
    /// One bit per guest cluster of the range.
    words: Box<[u64]>,
    /// Bits set.
    count: u64,
    /// Host offset of the range's L2 table (set by [`SeqPlan::layout`]).
    l2_host: u64,
}

impl RangeBits {
    /// The first run of set bits at or after bit `from`: `(start, end)`.
    fn run_from(&self, from: u64) -> Option<(u64, u64)> {
        let start = self.scan(from, false)?;
        let end = self
            .scan(start, true)
            .unwrap_or(self.words.len() as u64 * 64);
        Some((start, end))
    }

    /// The first bit at or after `from` that is set (`clear` false) or clear (`clear` true).
    fn scan(&self, from: u64, clear: bool) -> Option<u64> {
        let mut w = (from / 64) as usize;
        let mut mask = u64::MAX.checked_shl((from % 64) as u32).unwrap_or(0);
        while let Some(&word) = self.words.get(w) {
            let bits = if clear { !word } else { word } & mask;
            if bits != 0 {
                return Some(w as u64 * 64 + u64::from(bits.trailing_zeros()));
            }
            w += 1;
            mask = u64::MAX;
        }
        None
    }

    /// Set bits in increasing order.
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(w as u64 * 64 + u64::from(bit))
            })
        })
    }
}

/// The set of guest clusters an image will hold, before layout. See the module docs.
#[derive(Debug, Clone)]
pub struct SeqPlan {
    geom: ImageGeometry,
    /// By L1 index; only ranges with data.
    ranges: BTreeMap<u64, RangeBits>,
}

fn invalid(detail: String) -> FormatError {
    FormatError::InvalidInput {
        format: FORMAT,
        detail,
    }
}

impl SeqPlan {
    /// An empty plan for an image of `virtual_size` bytes (rounded up to 512, as the
    /// writer does) with `cluster_size`-byte clusters (a power of two, 512 B to 2 MiB).
    pub fn new(virtual_size: u64, cluster_size: u64) -> Result<SeqPlan, FormatError> {
        Ok(SeqPlan {
            geom: ImageGeometry::new(virtual_size, cluster_size)?,
            ranges: BTreeMap::new(),
        })
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.geom.cluster_bits
    }

    /// The virtual size written to the header (the requested size rounded up to 512).
    pub fn virtual_size(&self) -> u64 {
        self.geom.virtual_size
    }

    /// Number of guest clusters (the last may be partial).
    pub fn guest_clusters(&self) -> u64 {
        self.geom.virtual_size.div_ceil(self.cluster_size())
    }

    /// Guest clusters marked as data so far.
    pub fn data_clusters(&self) -> u64 {
        self.ranges.values().map(|r| r.count).sum()
    }

    fn l2_bits(&self) -> u32 {
        self.geom.cluster_bits - 3
    }

    /// Marks guest clusters `first..first + count` as data (marking one twice is fine).
    pub fn add_clusters(&mut self, first: u64, count: u64) -> Result<(), FormatError> {
        let end = first
            .checked_add(count)
            .filter(|&e| e <= self.guest_clusters())
            .ok_or_else(|| {
                invalid(format!(
                    "clusters {first}+{count} are past the virtual size ({} clusters)",
                    self.guest_clusters()
                ))
            })?;
        let l2_bits = self.l2_bits();
        let words = (1usize << l2_bits) / 64;
        let mut at = first;
        while at < end {
            let key = at >> l2_bits;
            let range_end = ((key + 1) << l2_bits).min(end);
            let r = self.ranges.entry(key).or_insert_with(|| RangeBits {
                words: vec![0u64; words].into_boxed_slice(),
                count: 0,
                l2_host: 0,
            });
            let (lo, hi) = (at - (key << l2_bits), range_end - (key << l2_bits));
            let mut bit = lo;
            while bit < hi {
                let w = (bit / 64) as usize;
                let n = (64 - bit % 64).min(hi - bit);
                let mask = (u64::MAX >> (64 - n)) << (bit % 64);
                if let Some(word) = r.words.get_mut(w) {
                    r.count += u64::from((mask & !*word).count_ones());
                    *word |= mask;
                }
                bit += n;
            }
            at = range_end;
        }
        Ok(())
    }

    /// Marks every guest cluster overlapping bytes `offset..offset + len` as data (bytes
    /// past the virtual size are refused).
    pub fn add_bytes(&mut self, offset: u64, len: u64) -> Result<(), FormatError> {
        if len == 0 {
            return Ok(());
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.geom.virtual_size)
            .ok_or_else(|| {
                invalid(format!(
                    "bytes {offset}+{len} are past the virtual size {}",
                    self.geom.virtual_size
                ))
            })?;
        let bits = self.geom.cluster_bits;
        let first = offset >> bits;
        self.add_clusters(first, (end - 1) / self.cluster_size() + 1 - first)
    }

    /// Fixes every host offset and the file length.
    pub fn layout(mut self) -> Result<SeqLayout, FormatError> {
        let bits = self.geom.cluster_bits;
        let cs = self.cluster_size();
        let l1_clusters = (self.geom.l1_entries * 8).div_ceil(cs);
        // ImageGeometry bounded the virtual size and the L1 table: no overflow below.
        let mut next = 1 + l1_clusters;
        for r in self.ranges.values_mut() {
            r.l2_host = next << bits;
            next += 1 + r.count;
        }
        let before_refcounts = next;
        // Blocks cover every cluster including themselves and the table; the table
        // covers the blocks. Both only grow with the total: iterate to the fixed point.
        let per_block = 1u64 << window_bits(bits);
        let (mut blocks, mut table) = (0u64, 0u64);
        loop {
            let total = before_refcounts + blocks + table;
            let b = total.div_ceil(per_block);
            let t = (b * 8).div_ceil(cs);
            if (b, t) == (blocks, table) {
                break;
            }
            (blocks, table) = (b, t);
        }
        if blocks * 8 > MAX_REFCOUNT_TABLE_BYTES {
            return Err(FormatError::TooLarge {
                format: FORMAT,
                what: "refcount table".into(),
                value: blocks * 8,
                limit: MAX_REFCOUNT_TABLE_BYTES,
            });
        }
        let clusters = before_refcounts + blocks + table;
        // Host offsets live in 56 bits of the table entries.
        if clusters > MAX_VIRTUAL_SIZE >> bits {
            return Err(FormatError::TooLarge {
                format: FORMAT,
                what: "qcow2 file length".into(),
                value: clusters.saturating_mul(cs),
                limit: MAX_VIRTUAL_SIZE,
            });
        }
        Ok(SeqLayout {
            plan: self,
            l1_clusters,
            refblocks_at: before_refcounts,
            refblocks: blocks,
            reftable_at: before_refcounts + blocks,
            reftable_clusters: table,
            clusters,
        })
    }
}

/// A laid-out image: its exact length, and its bytes in file order through
/// [`SeqLayout::pieces`].
#[derive(Debug, Clone)]
pub struct SeqLayout {
    plan: SeqPlan,
    l1_clusters: u64,
    /// First host cluster of the refcount blocks.
    refblocks_at: u64,
    refblocks: u64,
    reftable_at: u64,
    reftable_clusters: u64,
    /// Host clusters in the file.
    clusters: u64,
}

/// One step of the image in file order; see [`SeqLayout::pieces`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// One cluster of metadata, exactly as stored.
    Meta(Vec<u8>),
    /// Guest clusters `first..first + count`, stored one after the other here: the
    /// caller supplies `count` whole clusters of guest data (bytes past the virtual
    /// size, and anything it cannot read as data, as zeros).
    Data { first: u64, count: u64 },
}

impl SeqLayout {
    /// The exact length of the image in bytes.
    pub fn file_len(&self) -> u64 {
        self.clusters << self.plan.geom.cluster_bits
    }

    pub fn cluster_size(&self) -> u64 {
        self.plan.cluster_size()
    }

    pub fn virtual_size(&self) -> u64 {
        self.plan.virtual_size()
    }

    /// Guest clusters stored as data.
    pub fn data_clusters(&self) -> u64 {
        self.plan.data_clusters()
    }

    /// The image from its first byte to its last, each piece following the previous.
    pub fn pieces(&self) -> Pieces<'_> {
        Pieces {
            layout: self,
            stage: Stage::Header,
        }
    }

    fn cluster(&self, host_cluster: u64) -> u64 {
        host_cluster << self.plan.geom.cluster_bits
    }

    fn header(&self) -> Vec<u8> {
        let g = &self.plan.geom;
        let mut head = image_header(&HeaderPlacement {
            cluster_bits: g.cluster_bits,
            virtual_size: g.virtual_size,
            l1_entries: g.l1_entries,
            l1_offset: if self.l1_clusters == 0 {
                0
            } else {
                self.cluster(1)
            },
            refcount_offset: self.cluster(self.reftable_at),
            // Bounded by MAX_REFCOUNT_TABLE_BYTES in layout.
            refcount_clusters: self.reftable_clusters as u32,
            zstd: false,
        });
        head.resize(self.cluster_size() as usize, 0);
        head
    }

    /// Cluster `j` of the L1 table.
    fn l1(&self, j: u64) -> Vec<u8> {
        let per = self.cluster_size() / 8;
        let lo = j * per;
        let hi = (lo + per).min(self.plan.geom.l1_entries);
        let mut entries = vec![0u64; per as usize];
        for (&key, r) in self.plan.ranges.range(lo..hi) {
            if let Some(e) = entries.get_mut((key - lo) as usize) {
                *e = r.l2_host | OFLAG_COPIED;
            }
        }
        encode_entries(&entries)
    }

    /// The L2 table of a range: its data clusters follow it in guest order.
    fn l2(&self, r: &RangeBits) -> Vec<u8> {
        let cs = self.cluster_size();
        let mut entries = vec![0u64; (cs / 8) as usize];
        let mut host = r.l2_host;
        for bit in r.iter() {
            host += cs;
            if let Some(e) = entries.get_mut(bit as usize) {
                *e = host | OFLAG_COPIED;
            }
        }
        encode_entries(&entries)
    }

    /// Refcount block `b`: every host cluster of the file is referenced once.
    fn refblock(&self, b: u64) -> Vec<u8> {
        let per = 1u64 << window_bits(self.plan.geom.cluster_bits);
        let first = b * per;
        let ones = self.clusters.saturating_sub(first).min(per);
        let mut counts = vec![0u16; per as usize];
        counts[..ones as usize].fill(1);
        encode_counts(&counts)
    }

    /// Cluster `j` of the refcount table.
    fn reftable(&self, j: u64) -> Vec<u8> {
        let per = self.cluster_size() / 8;
        let entries: Vec<u64> = (j * per..(j + 1) * per)
            .map(|e| {
                if e < self.refblocks {
                    self.cluster(self.refblocks_at + e)
                } else {
                    0
                }
            })
            .collect();
        encode_entries(&entries)
    }

    /// What comes after range `key` (or after the L1 table, with `None`).
    fn after(&self, key: Option<u64>) -> Stage {
        let lower = key.map_or(Bound::Unbounded, Bound::Excluded);
        match self.plan.ranges.range((lower, Bound::Unbounded)).next() {
            Some((&k, _)) => Stage::L2(k),
            None => Stage::RefBlock(0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    L1(u64),
    L2(u64),
    /// Range, next bit to look at.
    Data(u64, u64),
    RefBlock(u64),
    RefTable(u64),
    Done,
}

/// Iterator over the pieces of a [`SeqLayout`], in file order.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    layout: &'a SeqLayout,
    stage: Stage,
}

impl Iterator for Pieces<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        let lay = self.layout;
        loop {
            match self.stage {
                Stage::Header => {
                    self.stage = if lay.l1_clusters > 0 {
                        Stage::L1(0)
                    } else {
                        lay.after(None)
                    };
                    return Some(Piece::Meta(lay.header()));
                }
                Stage::L1(j) => {
                    self.stage = if j + 1 < lay.l1_clusters {
                        Stage::L1(j + 1)
                    } else {
                        lay.after(None)
                    };
                    return Some(Piece::Meta(lay.l1(j)));
                }
                Stage::L2(key) => {
                    let r = lay.plan.ranges.get(&key)?;
                    self.stage = Stage::Data(key, 0);
                    return Some(Piece::Meta(lay.l2(r)));
                }
                Stage::Data(key, from) => {
                    let r = lay.plan.ranges.get(&key)?;
                    match r.run_from(from) {
                        Some((start, end)) => {
                            self.stage = Stage::Data(key, end);
                            return Some(Piece::Data {
                                first: (key << lay.plan.l2_bits()) + start,
                                count: end - start,
                            });
                        }
                        None => self.stage = lay.after(Some(key)),
                    }
                }
                Stage::RefBlock(b) => {
                    self.stage = if b + 1 < lay.refblocks {
                        Stage::RefBlock(b + 1)
                    } else {
                        Stage::RefTable(0)
                    };
                    return Some(Piece::Meta(lay.refblock(b)));
                }
                Stage::RefTable(j) => {
                    self.stage = if j + 1 < lay.reftable_clusters {
                        Stage::RefTable(j + 1)
                    } else {
                        Stage::Done
                    };
                    return Some(Piece::Meta(lay.reftable(j)));
                }
                Stage::Done => return None,
            }
        }
    }
}
