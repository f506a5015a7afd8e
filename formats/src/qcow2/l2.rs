//! Where a guest cluster lives: qcow2 layout math (guest offset -> L1 index, L2 index,
//! offset in cluster) and decoding of L1/L2 entries into [`ClusterMap`], validated
//! against the file length.
//!
//! Pure: the reader does the IO; this module only interprets entries. Every host offset
//! that comes out of here is aligned as the spec requires, lies past the header cluster
//! and starts inside the file.

use super::FORMAT;
use crate::FormatError;

/// Bits 9..=55 of an L1 entry: the L2 table offset.
pub const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 9..=55 of a standard L2 entry: the host cluster offset.
pub const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// "Refcount is exactly one" flag of L1 and standard L2 entries.
pub const OFLAG_COPIED: u64 = 1 << 63;
/// Compressed cluster flag of L2 entries.
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Reads-as-zero flag of standard L2 entries (not used with extended L2).
pub const OFLAG_ZERO: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u64 = 32;
/// Compressed data is addressed in 512-byte sectors.
pub const SECTOR: u64 = 512;

/// The image's layout parameters, after header validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cluster_bits: u32,
    pub extended_l2: bool,
    pub virtual_size: u64,
    pub file_len: u64,
}

/// What an L2 entry says about one guest cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMap {
    /// Not allocated: reads from the backing image, or zeros without one.
    Unallocated,
    /// Reads as zeros regardless of any backing image.
    Zero,
    /// Stored uncompressed at this cluster-aligned host offset.
    Data { host: u64 },
    /// Compressed data starting at `host`, at most `len` bytes long (clipped to the file).
    Compressed { host: u64, len: u64 },
    /// Extended L2 entry with a mix of subcluster states; `host` is meaningful only for
    /// subclusters whose `alloc` bit is set.
    Subclusters { host: u64, alloc: u32, zero: u32 },
}

/// The state of a run of guest bytes inside one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Unallocated,
    Zero,
    /// Uncompressed bytes at this host offset (already advanced to the guest offset).
    Data {
        host: u64,
    },
    /// The whole cluster is compressed; decompress it and take the bytes needed.
    Compressed {
        host: u64,
        len: u64,
    },
}

fn corrupt(detail: String) -> FormatError {
    FormatError::corrupt(FORMAT, detail)
}

impl Geometry {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// log2 of the number of entries in one L2 table.
    pub fn l2_bits(&self) -> u32 {
        self.cluster_bits - if self.extended_l2 { 4 } else { 3 }
    }

    /// Bytes per L2 entry (8, or 16 with extended L2).
    pub fn l2_entry_len(&self) -> usize {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    /// Guest bytes covered by one L2 table (one L1 entry).
    pub fn l2_span(&self) -> u64 {
        1 << (self.cluster_bits + self.l2_bits())
    }

    pub fn subcluster_size(&self) -> u64 {
        self.cluster_size() / SUBCLUSTERS
    }

    /// Splits a guest offset into (L1 index, L2 index, offset inside the cluster).
    pub fn split(&self, guest: u64) -> (u64, usize, u64) {
        let cluster = guest >> self.cluster_bits;
        let l2_index = (cluster & ((1 << self.l2_bits()) - 1)) as usize;
        (
            cluster >> self.l2_bits(),
            l2_index,
            guest & (self.cluster_size() - 1),
        )
    }

    /// Decodes an L1 entry into the offset of its L2 table (None: all unallocated).
    pub fn decode_l1(&self, raw: u64, l1_index: u64) -> Result<Option<u64>, FormatError> {
        let off = raw & L1_OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        let cs = self.cluster_size();
        if off & (cs - 1) != 0 || off < cs {
            return Err(corrupt(format!(
                "L1 entry {l1_index} points to {off:#x}, not a cluster-aligned offset past the header"
            )));
        }
        if off.saturating_add(cs) > self.file_len {
            return Err(corrupt(format!(
                "L1 entry {l1_index} points to an L2 table at {off:#x}, past the end of the file ({} bytes)",
                self.file_len
            )));
        }
        Ok(Some(off))
    }

    /// Decodes an L2 entry (`bitmap` is the second word of an extended entry, else 0).
    /// `cluster` (the guest cluster index) only makes errors precise.
    pub fn decode_l2(
        &self,
        entry: u64,
        bitmap: u64,
        cluster: u64,
    ) -> Result<ClusterMap, FormatError> {
        if entry & OFLAG_COMPRESSED != 0 {
            return self.decode_compressed(entry, cluster);
        }
        let host = entry & L2_OFFSET_MASK;
        if self.extended_l2 {
            return self.decode_extended(host, bitmap, cluster);
        }
        if entry & OFLAG_ZERO != 0 {
            return Ok(ClusterMap::Zero);
        }
        if host == 0 {
            return Ok(ClusterMap::Unallocated);
        }
        self.check_data_host(host, cluster)?;
        Ok(ClusterMap::Data { host })
    }

    fn decode_extended(
        &self,
        host: u64,
        bitmap: u64,
        cluster: u64,
    ) -> Result<ClusterMap, FormatError> {
        let alloc = bitmap as u32;
        let zero = (bitmap >> 32) as u32;
        if alloc & zero != 0 {
            return Err(corrupt(format!(
                "guest cluster {cluster}: subclusters {:#x} are both allocated and zero",
                alloc & zero
            )));
        }
        if alloc == 0 {
            return Ok(match zero {
                0 => ClusterMap::Unallocated,
                u32::MAX => ClusterMap::Zero,
                _ => ClusterMap::Subclusters { host, alloc, zero },
            });
        }
        if host == 0 {
            return Err(corrupt(format!(
                "guest cluster {cluster}: allocated subclusters without a host offset"
            )));
        }
        self.check_data_host(host, cluster)?;
        Ok(if alloc == u32::MAX {
            ClusterMap::Data { host }
        } else {
            ClusterMap::Subclusters { host, alloc, zero }
        })
    }

    fn check_data_host(&self, host: u64, cluster: u64) -> Result<(), FormatError> {
        let cs = self.cluster_size();
        if host & (cs - 1) != 0 {
            return Err(corrupt(format!(
                "guest cluster {cluster} maps to unaligned host offset {host:#x}"
            )));
        }
        if host < cs {
            return Err(corrupt(format!(
                "guest cluster {cluster} maps into the header cluster"
            )));
        }
        if host >= self.file_len {
            return Err(corrupt(format!(
                "guest cluster {cluster} maps to host offset {host:#x}, past the end of the file ({} bytes)",
                self.file_len
            )));
        }
        Ok(())
    }

    fn decode_compressed(&self, entry: u64, cluster: u64) -> Result<ClusterMap, FormatError> {
        // x = 62 - (cluster_bits - 8) offset bits, then (cluster_bits - 8) sector-count bits.
        let offset_bits = 70 - self.cluster_bits;
        let host = entry & ((1u64 << offset_bits) - 1);
        let sectors = ((entry >> offset_bits) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
        if host < self.cluster_size() {
            return Err(corrupt(format!(
                "compressed guest cluster {cluster} points into the header cluster ({host:#x})"
            )));
        }
        if host >= self.file_len {
            return Err(corrupt(format!(
                "compressed guest cluster {cluster} at {host:#x} is past the end of the file ({} bytes)",
                self.file_len
            )));
        }
        // The count is of sectors beyond the one holding `host`; the file may end mid-sector.
        let end = (host & !(SECTOR - 1)) + sectors * SECTOR;
        let len = end.min(self.file_len) - host;
        Ok(ClusterMap::Compressed { host, len })
    }
}

impl ClusterMap {
    /// The state at `in_cluster` (an offset inside the cluster) and how many bytes from
    /// there, up to the end of the cluster, share it.
    pub fn piece_at(&self, in_cluster: u64, geom: &Geometry) -> (Piece, u64) {
        let to_end = geom.cluster_size() - in_cluster;
        match *self {
            ClusterMap::Unallocated => (Piece::Unallocated, to_end),
            ClusterMap::Zero => (Piece::Zero, to_end),
            ClusterMap::Data { host } => (
                Piece::Data {
                    host: host + in_cluster,
                },
                to_end,
            ),
            ClusterMap::Compressed { host, len } => (Piece::Compressed { host, len }, to_end),
            ClusterMap::Subclusters { host, alloc, zero } => {
                let sub = geom.subcluster_size();
                let first = in_cluster / sub;
                let state = |i: u64| (alloc >> i & 1, zero >> i & 1);
                let mut end = first + 1;
                while end < SUBCLUSTERS && state(end) == state(first) {
                    end += 1;
                }
                let piece = match state(first) {
                    (1, _) => Piece::Data {
                        host: host + in_cluster,
                    },
                    (_, 1) => Piece::Zero,
                    _ => Piece::Unallocated,
                };
                (piece, end * sub - in_cluster)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn geom(extended: bool) -> Geometry {
        Geometry {
            cluster_bits: 16,
            extended_l2: extended,
            virtual_size: 1 << 32,
            file_len: 1 << 24,
        }
    }

    #[test]
    fn split_standard_and_extended() {
        let g = geom(false);
        assert_eq!(g.l2_span(), 512 << 20);
        assert_eq!(g.split((512 << 20) + 65536 * 3 + 7), (1, 3, 7));
        let g = geom(true);
        assert_eq!(g.l2_span(), 256 << 20);
        assert_eq!(g.split((256 << 20) + 65536 * 3 + 7), (1, 3, 7));
    }

    #[test]
    fn standard_entries() {
        let g = geom(false);
        assert_eq!(g.decode_l2(0, 0, 0).unwrap(), ClusterMap::Unallocated);
        assert_eq!(g.decode_l2(1, 0, 0).unwrap(), ClusterMap::Zero);
        assert_eq!(
            g.decode_l2(OFLAG_COPIED | 0x20000, 0, 0).unwrap(),
            ClusterMap::Data { host: 0x20000 }
        );
        // Zero flag with a preallocated offset still reads zero.
        assert_eq!(g.decode_l2(0x20000 | 1, 0, 0).unwrap(), ClusterMap::Zero);
        assert!(g.decode_l2(0x20200, 0, 0).is_err(), "unaligned");
        assert!(g.decode_l2(0x0, 0, 0).is_ok());
        assert!(g.decode_l2(1 << 30, 0, 0).is_err(), "past EOF");
    }

    #[test]
    fn header_cluster_refused() {
        let g = geom(false);
        // Host offset 0 is "unallocated", so use an L1 entry and a compressed one.
        assert!(g.decode_l1(0x200, 0).is_err());
        assert!(g.decode_l2(OFLAG_COMPRESSED | 0x100, 0, 0).is_err());
    }

    #[test]
    fn compressed_entries() {
        let g = geom(false);
        // 16 - 8 = 8 sector bits at bit 54.
        let entry = OFLAG_COMPRESSED | (2u64 << 54) | 0x10100;
        assert_eq!(
            g.decode_l2(entry, 0, 0).unwrap(),
            ClusterMap::Compressed {
                host: 0x10100,
                len: 3 * 512 - 0x100
            }
        );
        // Clipped to the file length.
        let g2 = Geometry {
            file_len: 0x10300,
            ..g
        };
        assert_eq!(
            g2.decode_l2(entry, 0, 0).unwrap(),
            ClusterMap::Compressed {
                host: 0x10100,
                len: 0x200
            }
        );
    }

    #[test]
    fn l1_entries() {
        let g = geom(false);
        assert_eq!(g.decode_l1(0, 0).unwrap(), None);
        assert_eq!(
            g.decode_l1(OFLAG_COPIED | 0x30000, 0).unwrap(),
            Some(0x30000)
        );
        assert!(g.decode_l1(0x30001 << 9, 0).is_err());
        assert!(g.decode_l1(1 << 24, 0).is_err(), "table would end past EOF");
    }

    #[test]
    fn extended_entries() {
        let g = geom(true);
        let sub = g.subcluster_size();
        assert_eq!(g.decode_l2(0, 0, 0).unwrap(), ClusterMap::Unallocated);
        assert_eq!(
            g.decode_l2(0, 0xffff_ffff << 32, 0).unwrap(),
            ClusterMap::Zero
        );
        assert_eq!(
            g.decode_l2(0x20000, 0xffff_ffff, 0).unwrap(),
            ClusterMap::Data { host: 0x20000 }
        );
        assert!(g.decode_l2(0x20000, 1 | (1 << 32), 0).is_err(), "both bits");
        assert!(g.decode_l2(0, 1, 0).is_err(), "allocated without offset");
        // Subclusters 0-1 data, 2 zero, rest unallocated.
        let m = g.decode_l2(0x20000, 0b11 | (0b100 << 32), 0).unwrap();
        assert_eq!(
            m.piece_at(10, &g),
            (Piece::Data { host: 0x2000a }, 2 * sub - 10)
        );
        assert_eq!(m.piece_at(2 * sub, &g), (Piece::Zero, sub));
        assert_eq!(
            m.piece_at(3 * sub + 1, &g),
            (Piece::Unallocated, 29 * sub - 1)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_bounds_hold(
            entry in any::<u64>(), bitmap in any::<u64>(), bits in 9u32..=21,
            ext in any::<bool>(), file_len in any::<u64>(), at in any::<u64>(),
        ) {
            let g = Geometry {
                cluster_bits: if ext { bits.max(14) } else { bits },
                extended_l2: ext,
                virtual_size: 1 << 40,
                file_len,
            };
            let cs = g.cluster_size();
            if let Ok(Some(off)) = g.decode_l1(entry, 0) {
                prop_assert!(off >= cs && off + cs <= file_len && off % cs == 0);
            }
            if let Ok(m) = g.decode_l2(entry, bitmap, 0) {
                match m {
                    ClusterMap::Data { host } | ClusterMap::Subclusters { host, alloc: 1.., .. } => {
                        prop_assert!(host >= cs && host < file_len && host % cs == 0);
                    }
                    ClusterMap::Compressed { host, len } => {
                        prop_assert!(host >= cs && host + len <= file_len);
                    }
                    _ => {}
                }
                let (_, run) = m.piece_at(at % cs, &g);
                prop_assert!(run >= 1 && run <= cs - at % cs);
            }
        }
    }
}
