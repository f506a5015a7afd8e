//! The writer's host-cluster allocator and refcount bookkeeping, as pure state.
//!
//! The writer only ever appends: host clusters are handed out in increasing order, and
//! compressed clusters are packed at 512-byte granularity into the most recent host
//! cluster (running on into the next one when contiguous). So a host cluster's refcount
//! is final as soon as allocation has moved past it, and each refcount block (one
//! cluster of 16-bit counts, a "window" of host clusters) can be emitted once its window
//! is behind the allocation point. Memory stays at a few clusters plus 8 bytes per
//! window, however large the image. Each window's refcount block is itself reserved right
//! after the allocation that first touches the window; the refcount table is placed last,
//! sized so it covers itself.
//!
//! No IO: the writer asks for offsets and collects finished blocks to write.

use super::{FORMAT, MAX_REFCOUNT_TABLE_BYTES};
use crate::FormatError;
use std::collections::BTreeMap;

/// Refcount width written: 16 bits (refcount_order 4), QEMU's default.
pub const REFCOUNT_ORDER: u32 = 4;
const SECTOR: u64 = 512;

/// log2 of the host clusters one refcount block (a cluster of 16-bit counts) covers.
pub fn window_bits(cluster_bits: u32) -> u32 {
    cluster_bits + 3 - REFCOUNT_ORDER
}

/// A refcount block as stored: big-endian 16-bit counts.
pub fn encode_counts(counts: &[u16]) -> Vec<u8> {
    counts.iter().flat_map(|c| c.to_be_bytes()).collect()
}

/// Append-only allocator of host clusters and packed compressed ranges.
#[derive(Debug, Clone)]
pub struct HostAllocator {
    cluster_bits: u32,
    /// log2 of refcount entries per block (16-bit entries in one cluster).
    window_bits: u32,
    /// First host cluster never handed out.
    next_cluster: u64,
    /// Where the next compressed cluster may start: a sector-aligned byte offset inside
    /// cluster `next_cluster - 1`, if that cluster holds compressed data with room left.
    compressed_tail: Option<u64>,
    /// Host cluster of the refcount block of each window, in window order.
    blocks: Vec<u64>,
    /// Counts of windows not yet complete.
    open: BTreeMap<u64, Vec<u16>>,
    /// Complete blocks waiting to be written: (byte offset, encoded block).
    finished: Vec<(u64, Vec<u8>)>,
}

/// Where the finishing step put the refcount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefcountTable {
    pub offset: u64,
    pub clusters: u32,
    /// The table's bytes (a whole number of clusters).
    pub bytes: Vec<u8>,
}

fn internal(detail: String) -> FormatError {
    FormatError::InvalidInput {
        format: FORMAT,
        detail,
    }
}

impl HostAllocator {
    /// A fresh allocator with cluster 0 (the header) already allocated.
    pub fn new(cluster_bits: u32) -> Result<Self, FormatError> {
        let mut a = HostAllocator {
            cluster_bits,
            window_bits: window_bits(cluster_bits),
            next_cluster: 0,
            compressed_tail: None,
            blocks: Vec::new(),
            open: BTreeMap::new(),
            finished: Vec::new(),
        };
        a.alloc_clusters(1)?;
        Ok(a)
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Host bytes allocated so far (the file length the image needs).
    pub fn end(&self) -> u64 {
        self.next_cluster << self.cluster_bits
    }

    /// Allocates `n` contiguous fresh clusters; returns the byte offset of the first.
    pub fn alloc_clusters(&mut self, n: u64) -> Result<u64, FormatError> {
        let start = self.next_cluster;
        self.compressed_tail = None;
        self.next_cluster = start
            .checked_add(n)
            .ok_or_else(|| internal("host cluster count overflow".into()))?;
        for c in start..self.next_cluster {
            self.incref(c)?;
        }
        self.reserve_blocks()?;
        self.collect_finished();
        Ok(start << self.cluster_bits)
    }

    /// Allocates `len` bytes (1..cluster size) for a compressed cluster, sector-aligned,
    /// packed after the previous compressed cluster when possible; returns the offset.
    pub fn alloc_compressed(&mut self, len: u64) -> Result<u64, FormatError> {
        if len == 0 || len >= self.cluster_size() {
            return Err(internal(format!("compressed length {len} out of range")));
        }
        let start = self.compressed_tail.unwrap_or(self.end());
        let end = start + len;
        let first = start >> self.cluster_bits;
        let last = (end - 1) >> self.cluster_bits;
        // The tail cluster (if any) gains one more reference; new clusters get their first.
        for c in first..=last {
            self.incref(c)?;
        }
        self.next_cluster = self.next_cluster.max(last + 1);
        let tail = end.next_multiple_of(SECTOR);
        self.compressed_tail = (tail < self.end()).then_some(tail);
        if self.reserve_blocks()? {
            // A refcount block now follows: the next compressed cluster cannot run on.
            self.compressed_tail = None;
        }
        self.collect_finished();
        Ok(start)
    }

    /// Refcount blocks completed since the last call: (byte offset, block bytes).
    pub fn take_finished(&mut self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut self.finished)
    }

    /// Places the refcount table after everything else and completes every block.
    /// Returns the table; [`HostAllocator::take_finished`] then yields the last blocks.
    pub fn finish(&mut self) -> Result<RefcountTable, FormatError> {
        self.compressed_tail = None;
        let cs = self.cluster_size();
        let mut clusters = ((self.blocks.len() as u64 + 1) * 8).div_ceil(cs);
        // The table's own clusters may open new windows needing blocks (and table entries):
        // try sizes until one covers itself.
        let (trial, offset) = loop {
            let mut trial = self.clone();
            let offset = trial.alloc_clusters(clusters)?;
            let needed = (trial.blocks.len() as u64 * 8).div_ceil(cs);
            if needed <= clusters {
                break (trial, offset);
            }
            clusters = needed;
        };
        *self = trial;
        // Nothing more will be allocated: every window is complete.
        let windows: Vec<u64> = self.open.keys().copied().collect();
        for w in windows {
            self.emit(w);
        }
        let mut bytes = Vec::with_capacity((clusters * cs) as usize);
        for &b in &self.blocks {
            bytes.extend_from_slice(&(b << self.cluster_bits).to_be_bytes());
        }
        bytes.resize((clusters * cs) as usize, 0);
        Ok(RefcountTable {
            offset,
            clusters: u32::try_from(clusters)
                .map_err(|_| internal("refcount table too large".into()))?,
            bytes,
        })
    }

    fn incref(&mut self, cluster: u64) -> Result<(), FormatError> {
        let window = cluster >> self.window_bits;
        let index = (cluster & ((1 << self.window_bits) - 1)) as usize;
        let entries = 1usize << self.window_bits;
        let counts = self
            .open
            .entry(window)
            .or_insert_with(|| vec![0u16; entries]);
        let slot = counts
            .get_mut(index)
            .ok_or_else(|| internal(format!("refcount index {index} out of range")))?;
        *slot = slot
            .checked_add(1)
            .ok_or_else(|| internal(format!("refcount overflow on host cluster {cluster}")))?;
        Ok(())
    }

    /// Gives every window touched so far a refcount block, appended after the current end.
    /// Returns whether any block was placed.
    fn reserve_blocks(&mut self) -> Result<bool, FormatError> {
        let mut placed = false;
        loop {
            let windows = ((self.next_cluster - 1) >> self.window_bits) + 1;
            if self.blocks.len() as u64 >= windows {
                return Ok(placed);
            }
            if (self.blocks.len() as u64 + 1) * 8 > MAX_REFCOUNT_TABLE_BYTES {
                return Err(FormatError::TooLarge {
                    format: FORMAT,
                    what: "refcount table".into(),
                    value: (self.blocks.len() as u64 + 1) * 8,
                    limit: MAX_REFCOUNT_TABLE_BYTES,
                });
            }
            let block = self.next_cluster;
            self.next_cluster += 1;
            self.blocks.push(block);
            self.incref(block)?;
            placed = true;
        }
    }

    /// Moves windows wholly behind the allocation point to `finished`.
    fn collect_finished(&mut self) {
        // The cluster holding the compressed tail may still gain references.
        let settled = self.next_cluster - u64::from(self.compressed_tail.is_some());
        let done: Vec<u64> = self
            .open
            .keys()
            .copied()
            .take_while(|w| (w + 1) << self.window_bits <= settled)
            .collect();
        for w in done {
            self.emit(w);
        }
    }

    fn emit(&mut self, window: u64) {
        let Some(counts) = self.open.remove(&window) else {
            return;
        };
        // Every window below next_cluster has a block (reserve_blocks runs first).
        let Some(&block) = self.blocks.get(window as usize) else {
            return;
        };
        self.finished
            .push((block << self.cluster_bits, encode_counts(&counts)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Decodes what the allocator emitted into host cluster -> refcount.
    fn refcounts(blocks: &[(u64, Vec<u8>)], table: &RefcountTable, bits: u32) -> HashMap<u64, u16> {
        let by_offset: HashMap<u64, &Vec<u8>> = blocks.iter().map(|(o, b)| (*o, b)).collect();
        let mut out = HashMap::new();
        for (w, e) in table.bytes.chunks_exact(8).enumerate() {
            let off = u64::from_be_bytes(e.try_into().unwrap());
            if off == 0 {
                continue;
            }
            let block = by_offset[&off];
            for (i, c) in block.chunks_exact(2).enumerate() {
                let c = u16::from_be_bytes([c[0], c[1]]);
                if c != 0 {
                    out.insert(((w as u64) << (bits - 1)) + i as u64, c);
                }
            }
        }
        out
    }

    #[test]
    fn plain_clusters_all_refcount_one() {
        let bits = 9; // 256 refcounts per block: many windows quickly
        let mut a = HostAllocator::new(bits).unwrap();
        let mut blocks = Vec::new();
        for _ in 0..1000 {
            a.alloc_clusters(1).unwrap();
            blocks.extend(a.take_finished());
        }
        a.alloc_clusters(600).unwrap(); // spans several windows at once
        let t = a.finish().unwrap();
        blocks.extend(a.take_finished());
        let rc = refcounts(&blocks, &t, bits);
        let total = a.end() >> bits;
        assert_eq!(rc.len() as u64, total, "every cluster counted once");
        assert!(rc.values().all(|&c| c == 1));
        assert_eq!(t.offset + u64::from(t.clusters) * 512, a.end());
        // Every block written exactly once, at distinct offsets.
        let mut offs: Vec<u64> = blocks.iter().map(|b| b.0).collect();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), blocks.len());
    }

    #[test]
    fn compressed_packing_counts_each_reference() {
        let bits = 12;
        let mut a = HostAllocator::new(bits).unwrap();
        // Cluster 0 is the header, cluster 1 the first refcount block.
        let x = a.alloc_compressed(1000).unwrap();
        let y = a.alloc_compressed(1000).unwrap();
        let z = a.alloc_compressed(3000).unwrap(); // runs into the next cluster
        assert_eq!((x, y, z), (2 * 4096, 2 * 4096 + 1024, 2 * 4096 + 2048));
        let d = a.alloc_clusters(1).unwrap();
        assert_eq!(d, 4 * 4096);
        let w = a.alloc_compressed(100).unwrap();
        assert_eq!(w, 5 * 4096, "a fresh cluster after a plain one");
        let t = a.finish().unwrap();
        let blocks = a.take_finished();
        let rc = refcounts(&blocks, &t, bits);
        assert_eq!(rc[&1], 1);
        assert_eq!(rc[&2], 3);
        assert_eq!(rc[&3], 1);
        assert_eq!(rc[&4], 1);
        assert_eq!(rc[&5], 1);
        assert_eq!(rc.len() as u64, a.end() >> bits);
    }

    #[test]
    fn table_covers_itself_for_many_windows() {
        let bits = 9;
        let mut a = HostAllocator::new(bits).unwrap();
        a.alloc_clusters(256 * 64 - 3).unwrap();
        let t = a.finish().unwrap();
        let blocks = a.take_finished();
        let rc = refcounts(&blocks, &t, bits);
        assert_eq!(rc.len() as u64, a.end() >> bits);
        assert!(rc.values().all(|&c| c == 1));
    }
}
