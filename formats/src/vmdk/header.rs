//! Pure parsers for the binary parts of a VMDK hosted sparse extent: the "KDMV" sparse
//! header (also found in a streamOptimized footer) and the 512-byte metadata markers of
//! streamOptimized files. Bounds the geometry so the reader can size tables from it;
//! does no IO.

use crate::fields::{le16, le32, le64};
use crate::FormatError;

pub(super) const FORMAT: &str = "vmdk";
pub const SECTOR: u64 = 512;
/// Bytes of the sparse header that carry fields (the rest of the sector is padding).
pub const HEADER_FIELDS_LEN: usize = 79;
/// `gdOffset` value meaning "the grain directory is found through the footer".
pub const GD_AT_END: u64 = u64::MAX;

pub const FLAG_NL_TEST: u32 = 1 << 0;
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
pub const FLAG_COMPRESSED: u32 = 1 << 16;
pub const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESSION_DEFLATE: u16 = 1;

/// Largest grain accepted: 8 MiB (VMware and qemu use 64 KiB); a compressed grain is
/// inflated into a buffer of this size.
pub const MAX_GRAIN_SECTORS: u64 = 1 << 14;
/// Largest grain table accepted (VMware and qemu use 512 entries).
pub const MAX_GTES_PER_GT: u32 = 1 << 16;
/// Largest capacity accepted: 2^40 sectors (512 TiB).
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 40;

pub const MARKER_EOS: u32 = 0;
pub const MARKER_GT: u32 = 1;
pub const MARKER_GD: u32 = 2;
pub const MARKER_FOOTER: u32 = 3;

/// The fields of a sparse extent header, checked for sane geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    /// Guest size in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_size: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub num_gtes_per_gt: u32,
    pub gd_offset: u64,
    /// Sectors of header, descriptor and metadata before the first grain.
    pub overhead: u64,
    pub compress_algorithm: u16,
}

impl SparseHeader {
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    pub fn zero_grains(&self) -> bool {
        self.flags & FLAG_ZERO_GRAIN != 0
    }

    /// Guest bytes covered by one grain table.
    pub fn gt_coverage(&self) -> u64 {
        self.grain_size * SECTOR * u64::from(self.num_gtes_per_gt)
    }

    /// Entries the grain directory needs to cover the capacity.
    pub fn gd_entries(&self) -> u64 {
        (self.capacity * SECTOR).div_ceil(self.gt_coverage())
    }
}

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::corrupt(FORMAT, detail)
}

/// Parses a sparse extent header ("KDMV", versions 1-3).
pub fn parse_sparse_header(buf: &[u8]) -> Result<SparseHeader, FormatError> {
    if buf.len() < HEADER_FIELDS_LEN {
        return Err(FormatError::Truncated {
            what: "VMDK sparse header".into(),
            offset: buf.len() as u64,
        });
    }
    if !buf.starts_with(b"KDMV") {
        return Err(FormatError::BadMagic { format: FORMAT });
    }
    let h = SparseHeader {
        version: le32(buf, 4),
        flags: le32(buf, 8),
        capacity: le64(buf, 12),
        grain_size: le64(buf, 20),
        descriptor_offset: le64(buf, 28),
        descriptor_size: le64(buf, 36),
        num_gtes_per_gt: le32(buf, 44),
        gd_offset: le64(buf, 56),
        overhead: le64(buf, 64),
        compress_algorithm: le16(buf, 77),
    };
    if !(1..=3).contains(&h.version) {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("sparse extent version {}", h.version),
        ));
    }
    // Text-mode transfers mangle these bytes; the flag asks readers to check them.
    if h.flags & FLAG_NL_TEST != 0 && buf.get(73..77) != Some(b"\n \r\n") {
        return Err(corrupt(
            "newline test bytes are damaged (file transferred in text mode?)",
        ));
    }
    check_geometry(&h)?;
    if h.compressed() && h.compress_algorithm != COMPRESSION_DEFLATE {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("compression algorithm {}", h.compress_algorithm),
        ));
    }
    Ok(h)
}

fn check_geometry(h: &SparseHeader) -> Result<(), FormatError> {
    if !h.grain_size.is_power_of_two() || h.grain_size > MAX_GRAIN_SECTORS {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("grain size of {} sectors", h.grain_size),
        ));
    }
    if h.num_gtes_per_gt == 0 || h.num_gtes_per_gt > MAX_GTES_PER_GT {
        return Err(corrupt(format!(
            "{} entries per grain table",
            h.num_gtes_per_gt
        )));
    }
    if h.capacity > MAX_CAPACITY_SECTORS {
        return Err(FormatError::TooLarge {
            format: FORMAT,
            what: "capacity in sectors".into(),
            value: h.capacity,
            limit: MAX_CAPACITY_SECTORS,
        });
    }
    Ok(())
}

/// A streamOptimized metadata marker: a sector-sized record `{value, size = 0, type}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub value: u64,
    pub size: u32,
    pub kind: u32,
}

/// Reads the first 16 bytes of a marker sector.
pub fn parse_marker(buf: &[u8]) -> Marker {
    Marker {
        value: le64(buf, 0),
        size: le32(buf, 8),
        kind: le32(buf, 12),
    }
}

/// Checks the last three sectors of a streamOptimized file (footer marker, footer, end
/// of stream marker) and returns the footer's header.
pub fn parse_footer(tail: &[u8]) -> Result<SparseHeader, FormatError> {
    let sector = SECTOR as usize;
    let (Some(marker), Some(footer), Some(eos)) = (
        tail.get(..sector),
        tail.get(sector..2 * sector),
        tail.get(2 * sector..3 * sector),
    ) else {
        return Err(FormatError::Truncated {
            what: "VMDK stream footer".into(),
            offset: tail.len() as u64,
        });
    };
    let m = parse_marker(marker);
    let e = parse_marker(eos);
    if m.size != 0
        || m.kind != MARKER_FOOTER
        || e != (Marker {
            value: 0,
            size: 0,
            kind: MARKER_EOS,
        })
    {
        return Err(corrupt(
            "grain directory is at the end but the footer/end-of-stream markers are missing",
        ));
    }
    let h = parse_sparse_header(footer).map_err(|e| match e {
        FormatError::BadMagic { .. } => corrupt("footer lacks the KDMV magic"),
        other => other,
    })?;
    if h.gd_offset == GD_AT_END {
        return Err(corrupt("footer does not give the grain directory offset"));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header_bytes(capacity: u64, flags: u32, gd_offset: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&(flags | FLAG_NL_TEST).to_le_bytes());
        h[12..20].copy_from_slice(&capacity.to_le_bytes());
        h[20..28].copy_from_slice(&128u64.to_le_bytes());
        h[44..48].copy_from_slice(&512u32.to_le_bytes());
        h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&1u16.to_le_bytes());
        h
    }

    #[test]
    fn parses_and_checks_geometry() {
        let h = parse_sparse_header(&header_bytes(8192, FLAG_COMPRESSED, 21)).unwrap();
        assert_eq!(h.gt_coverage(), 32 << 20);
        assert_eq!(h.gd_entries(), 1);
        assert!(h.compressed());
        let mut b = header_bytes(8192, 0, 21);
        b[75] = b'\n';
        assert!(matches!(
            parse_sparse_header(&b),
            Err(FormatError::Corrupt { .. })
        ));
        let mut b = header_bytes(8192, 0, 21);
        b[20..28].copy_from_slice(&100u64.to_le_bytes());
        assert!(matches!(
            parse_sparse_header(&b),
            Err(FormatError::Unsupported { .. })
        ));
        let mut b = header_bytes(8192, 0, 21);
        b[4] = 9;
        assert!(matches!(
            parse_sparse_header(&b),
            Err(FormatError::Unsupported { .. })
        ));
    }

    #[test]
    fn footer_needs_its_markers() {
        let mut tail = vec![0u8; 1536];
        tail[12..16].copy_from_slice(&MARKER_FOOTER.to_le_bytes());
        tail[512..1024].copy_from_slice(&header_bytes(8192, 0, 40));
        assert_eq!(parse_footer(&tail).unwrap().gd_offset, 40);
        tail[1024] = 1;
        assert!(matches!(
            parse_footer(&tail),
            Err(FormatError::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = parse_sparse_header(&bytes);
            let _ = parse_footer(&bytes);
            let _ = parse_marker(&bytes);
        }

        #[test]
        fn header_with_magic_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 79..600)) {
            bytes[..4].copy_from_slice(b"KDMV");
            bytes[4] %= 4;
            if let Ok(h) = parse_sparse_header(&bytes) {
                let _ = h.gd_entries();
            }
        }
    }
}
