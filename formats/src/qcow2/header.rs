//! The qcow2 header (the fixed fields at the start of cluster 0) and the header
//! extensions that follow it: parsing, validation against the file length, and encoding
//! for the writer.
//!
//! Pure functions on byte slices. Every field is bounded here, before the reader uses it
//! to size an allocation or compute an offset; this module must never do IO.

use super::{FORMAT, MAX_CLUSTER_BITS, MAX_L1_BYTES, MAX_VIRTUAL_SIZE, MIN_CLUSTER_BITS};
use crate::FormatError;

/// "QFI\xfb".
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Header length of a version 2 image (and the fixed part of every version).
pub const V2_HEADER_LEN: usize = 72;
/// Minimum header length of a version 3 image.
pub const V3_HEADER_LEN: usize = 104;
/// Header length of a version 3 image carrying the compression_type field.
pub const V3_HEADER_LEN_WITH_COMPRESSION: usize = 112;
/// How many bytes [`Header::parse`] wants to see (fewer are fine for version 2).
pub const HEADER_READ_LEN: usize = V3_HEADER_LEN_WITH_COMPRESSION;

/// Incompatible feature bits.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTENDED_L2;

/// Longest backing file name the spec allows.
const MAX_BACKING_NAME: u32 = 1023;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_DATA_FILE: u32 = 0x4441_5441;
const FEATURE_ENTRY_LEN: usize = 48;

/// How compressed clusters are compressed (header field `compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate, as QEMU's default.
    Zlib,
    /// zstd frames (incompatible feature bit 3, compression_type = 1).
    Zstd,
}

/// The fixed header fields, exactly as stored (version 2 images get the v2 defaults for
/// the v3 fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
}

/// What the header extensions (and the backing file name area) say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderExtensions {
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub data_file: Option<String>,
    /// Feature name table: (type 0/1/2, bit, name).
    pub feature_names: Vec<(u8, u8, String)>,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::corrupt(FORMAT, detail)
}

fn truncated(what: &str, offset: u64) -> FormatError {
    FormatError::Truncated {
        what: format!("qcow2 {what}"),
        offset,
    }
}

impl Header {
    /// Parses the fixed header fields from the first bytes of the file (pass
    /// [`HEADER_READ_LEN`] bytes, or the whole file if it is shorter). Checks only what
    /// parsing needs (magic, version, length); call [`Header::validate`] next.
    pub fn parse(b: &[u8]) -> Result<Header, FormatError> {
        if b.len() < MAGIC.len() || b[..4] != MAGIC {
            if b.len() < MAGIC.len() {
                return Err(truncated("magic", 0));
            }
            return Err(FormatError::BadMagic { format: FORMAT });
        }
        if b.len() < 8 {
            return Err(truncated("version", 4));
        }
        let version = be_u32(b, 4);
        if version != 2 && version != 3 {
            return Err(FormatError::unsupported(
                FORMAT,
                format!("version {version}"),
            ));
        }
        let fixed_len = if version == 2 {
            V2_HEADER_LEN
        } else {
            V3_HEADER_LEN
        };
        if b.len() < fixed_len {
            return Err(truncated("header", b.len() as u64));
        }
        let mut h = Header {
            version,
            backing_file_offset: be_u64(b, 8),
            backing_file_size: be_u32(b, 16),
            cluster_bits: be_u32(b, 20),
            size: be_u64(b, 24),
            crypt_method: be_u32(b, 32),
            l1_size: be_u32(b, 36),
            l1_table_offset: be_u64(b, 40),
            refcount_table_offset: be_u64(b, 48),
            refcount_table_clusters: be_u32(b, 56),
            nb_snapshots: be_u32(b, 60),
            snapshots_offset: be_u64(b, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN as u32,
            compression_type: 0,
        };
        if version == 3 {
            h.incompatible_features = be_u64(b, 72);
            h.compatible_features = be_u64(b, 80);
            h.autoclear_features = be_u64(b, 88);
            h.refcount_order = be_u32(b, 96);
            h.header_length = be_u32(b, 100);
            // compression_type is present only if the header is long enough to hold it.
            if h.header_length as usize > V3_HEADER_LEN {
                h.compression_type = *b
                    .get(V3_HEADER_LEN)
                    .ok_or_else(|| truncated("compression_type", V3_HEADER_LEN as u64))?;
            }
        }
        Ok(h)
    }

    /// Checks every field against the format's rules, our limits and the file length.
    /// Refuses encryption, external data files and unknown incompatible features; a
    /// backing file is not refused here (see [`Header::has_backing_file`]).
    pub fn validate(&self, file_len: u64, ext: &HeaderExtensions) -> Result<(), FormatError> {
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&self.cluster_bits) {
            return Err(FormatError::unsupported(
                FORMAT,
                format!(
                    "cluster_bits {} (supported {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS})",
                    self.cluster_bits
                ),
            ));
        }
        let cluster_size = self.cluster_size();
        if self.version == 3 {
            let hl = u64::from(self.header_length);
            if hl < V3_HEADER_LEN as u64 || hl & 7 != 0 || hl > cluster_size {
                return Err(corrupt(format!("header_length {hl} is invalid")));
            }
            if self.refcount_order > 6 {
                return Err(corrupt(format!(
                    "refcount_order {} is above 6",
                    self.refcount_order
                )));
            }
        }
        self.check_encryption()?;
        self.check_features(ext)?;
        self.compression()?;
        self.check_l1(file_len)?;
        if self.refcount_table_offset & (cluster_size - 1) != 0 {
            return Err(corrupt(format!(
                "refcount table offset {:#x} is not cluster-aligned",
                self.refcount_table_offset
            )));
        }
        self.check_backing_name_location(file_len)
    }

    fn check_encryption(&self) -> Result<(), FormatError> {
        let method = match self.crypt_method {
            0 => return Ok(()),
            1 => "AES".to_string(),
            2 => "LUKS".to_string(),
            n => format!("method {n}"),
        };
        Err(FormatError::Encrypted {
            format: FORMAT,
            method,
        })
    }

    fn check_features(&self, ext: &HeaderExtensions) -> Result<(), FormatError> {
        let incompat = self.incompatible_features;
        let unknown = incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64u8)
                .filter(|bit| unknown & (1u64 << bit) != 0)
                .map(|bit| {
                    ext.feature_names
                        .iter()
                        .find(|(ty, b, _)| *ty == 0 && *b == bit)
                        .map_or_else(|| format!("bit {bit}"), |(_, _, n)| format!("{n:?}"))
                })
                .collect();
            return Err(FormatError::unsupported(
                FORMAT,
                format!("unknown incompatible features: {}", names.join(", ")),
            ));
        }
        if incompat & INCOMPAT_DATA_FILE != 0 {
            let name = ext.data_file.as_deref().unwrap_or("<unnamed>");
            return Err(FormatError::unsupported(
                FORMAT,
                format!("external data file {name:?}"),
            ));
        }
        if self.extended_l2() && self.cluster_bits < 14 {
            return Err(corrupt(format!(
                "extended L2 entries need clusters of at least 16 KiB, not {}",
                self.cluster_size()
            )));
        }
        Ok(())
    }

    fn check_l1(&self, file_len: u64) -> Result<(), FormatError> {
        if self.size > MAX_VIRTUAL_SIZE {
            return Err(FormatError::TooLarge {
                format: FORMAT,
                what: "virtual size".into(),
                value: self.size,
                limit: MAX_VIRTUAL_SIZE,
            });
        }
        let l1_bytes = u64::from(self.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(FormatError::TooLarge {
                format: FORMAT,
                what: "L1 table".into(),
                value: l1_bytes,
                limit: MAX_L1_BYTES,
            });
        }
        let needed = self.l1_entries_needed();
        if u64::from(self.l1_size) < needed {
            return Err(corrupt(format!(
                "L1 table has {} entries, the virtual size {} needs {needed}",
                self.l1_size, self.size
            )));
        }
        if self.l1_size == 0 {
            return Ok(());
        }
        let off = self.l1_table_offset;
        if off & (self.cluster_size() - 1) != 0 || off < self.cluster_size() {
            return Err(corrupt(format!(
                "L1 table offset {off:#x} is not a cluster-aligned offset past the header"
            )));
        }
        match off.checked_add(l1_bytes) {
            Some(end) if end <= file_len => Ok(()),
            _ => Err(corrupt(format!(
                "L1 table at {off:#x} ({l1_bytes} bytes) runs past the end of the file ({file_len} bytes)"
            ))),
        }
    }

    fn check_backing_name_location(&self, file_len: u64) -> Result<(), FormatError> {
        if !self.has_backing_file() {
            return Ok(());
        }
        if self.backing_file_size > MAX_BACKING_NAME {
            return Err(corrupt(format!(
                "backing file name length {} exceeds {MAX_BACKING_NAME}",
                self.backing_file_size
            )));
        }
        let end = self
            .backing_file_offset
            .saturating_add(u64::from(self.backing_file_size));
        if end > self.cluster_size() || end > file_len {
            return Err(corrupt(format!(
                "backing file name at {:#x} is outside the header cluster",
                self.backing_file_offset
            )));
        }
        Ok(())
    }

    /// Which compression compressed clusters use.
    pub fn compression(&self) -> Result<CompressionType, FormatError> {
        let flagged = self.incompatible_features & INCOMPAT_COMPRESSION != 0;
        match (flagged, self.compression_type) {
            (false, 0) => Ok(CompressionType::Zlib),
            (false, t) => Err(corrupt(format!(
                "compression_type {t} without the compression type feature bit"
            ))),
            (true, 0) => Err(corrupt(
                "compression type feature bit set but compression_type is zlib",
            )),
            (true, 1) => Ok(CompressionType::Zstd),
            (true, t) => Err(FormatError::unsupported(
                FORMAT,
                format!("compression_type {t}"),
            )),
        }
    }

    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits.min(63)
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTENDED_L2 != 0
    }

    pub fn has_backing_file(&self) -> bool {
        self.backing_file_offset != 0
    }

    /// L1 entries needed to map the whole virtual size (assumes validated cluster_bits).
    pub fn l1_entries_needed(&self) -> u64 {
        let cluster_bits = self.cluster_bits.clamp(MIN_CLUSTER_BITS, MAX_CLUSTER_BITS);
        let l2_bits = cluster_bits - if self.extended_l2() { 4 } else { 3 };
        let clusters = self.size.div_ceil(1u64 << cluster_bits);
        clusters.div_ceil(1u64 << l2_bits)
    }

    /// The header length in bytes (72 for version 2).
    pub fn header_len(&self) -> usize {
        if self.version == 2 {
            V2_HEADER_LEN
        } else {
            self.header_length as usize
        }
    }

    /// Encodes the header (version 3 only: the writer's format) into `header_length` bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.header_length as usize);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&self.backing_file_offset.to_be_bytes());
        b.extend_from_slice(&self.backing_file_size.to_be_bytes());
        b.extend_from_slice(&self.cluster_bits.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.crypt_method.to_be_bytes());
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        b.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        b.extend_from_slice(&self.incompatible_features.to_be_bytes());
        b.extend_from_slice(&self.compatible_features.to_be_bytes());
        b.extend_from_slice(&self.autoclear_features.to_be_bytes());
        b.extend_from_slice(&self.refcount_order.to_be_bytes());
        b.extend_from_slice(&self.header_length.to_be_bytes());
        if self.header_length as usize > V3_HEADER_LEN {
            b.push(self.compression_type);
        }
        // Padding up to header_length must be zero.
        b.resize(self.header_length as usize, 0);
        b
    }
}

impl HeaderExtensions {
    /// Parses the extensions and the backing file name from the start of the file
    /// (`cluster0`: the first cluster, or the whole file if shorter). Expects a header
    /// whose cluster_bits and header_length passed [`Header::validate`]'s first checks;
    /// every read is bounds-checked regardless.
    pub fn parse(h: &Header, cluster0: &[u8]) -> Result<HeaderExtensions, FormatError> {
        let mut ext = HeaderExtensions::default();
        let cluster_end = usize::try_from(h.cluster_size()).unwrap_or(usize::MAX);
        // Extensions end where the backing file name begins, or at the end of cluster 0.
        let area_end = if h.has_backing_file() {
            usize::try_from(h.backing_file_offset)
                .unwrap_or(usize::MAX)
                .min(cluster_end)
        } else {
            cluster_end
        };
        let mut at = h.header_len();
        while at.saturating_add(8) <= area_end {
            let head = cluster0
                .get(at..at + 8)
                .ok_or_else(|| truncated("header extension", at as u64))?;
            let ty = be_u32(head, 0);
            let len = be_u32(head, 4) as usize;
            if ty == EXT_END {
                break;
            }
            let data_start = at + 8;
            let data_end = data_start
                .checked_add(len)
                .filter(|&e| e <= area_end)
                .ok_or_else(|| {
                    corrupt(format!(
                        "header extension {ty:#x} at {at:#x} ({len} bytes) overruns the header area"
                    ))
                })?;
            let data = cluster0
                .get(data_start..data_end)
                .ok_or_else(|| truncated("header extension data", data_start as u64))?;
            ext.absorb(ty, data);
            at = data_start + len.div_ceil(8) * 8;
        }
        if h.has_backing_file() {
            let name = usize::try_from(h.backing_file_offset)
                .ok()
                .and_then(|start| {
                    let end = start.checked_add(h.backing_file_size as usize)?;
                    cluster0.get(start..end)
                })
                .ok_or_else(|| truncated("backing file name", h.backing_file_offset))?;
            ext.backing_file = Some(String::from_utf8_lossy(name).into_owned());
        }
        Ok(ext)
    }

    fn absorb(&mut self, ty: u32, data: &[u8]) {
        let text = || String::from_utf8_lossy(data).into_owned();
        match ty {
            EXT_BACKING_FORMAT => self.backing_format = Some(text()),
            EXT_DATA_FILE => self.data_file = Some(text()),
            EXT_FEATURE_TABLE => {
                for entry in data.chunks_exact(FEATURE_ENTRY_LEN) {
                    let name = &entry[2..];
                    let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
                    self.feature_names.push((
                        entry[0],
                        entry[1],
                        String::from_utf8_lossy(name).into_owned(),
                    ));
                }
            }
            // Bitmaps, encryption pointer and unknown extensions do not affect reading.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample_v3() -> Header {
        Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: 16,
            size: 1 << 30,
            crypt_method: 0,
            l1_size: 2,
            l1_table_offset: 0x30000,
            refcount_table_offset: 0x10000,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: 104,
            compression_type: 0,
        }
    }

    #[test]
    fn encode_parse_round_trip() {
        let mut h = sample_v3();
        assert_eq!(Header::parse(&h.encode()).unwrap(), h);
        h.header_length = 112;
        h.compression_type = 1;
        h.incompatible_features = INCOMPAT_COMPRESSION;
        let b = h.encode();
        assert_eq!(b.len(), 112);
        assert_eq!(Header::parse(&b).unwrap(), h);
        assert_eq!(h.compression().unwrap(), CompressionType::Zstd);
        h.validate(1 << 20, &HeaderExtensions::default()).unwrap();
    }

    #[test]
    fn refuses_bad_fields() {
        let ext = HeaderExtensions::default();
        let file_len = 1 << 20;
        let check = |f: &dyn Fn(&mut Header)| {
            let mut h = sample_v3();
            f(&mut h);
            h.validate(file_len, &ext).unwrap_err()
        };
        assert!(matches!(
            check(&|h| h.crypt_method = 2),
            FormatError::Encrypted { ref method, .. } if method == "LUKS"
        ));
        assert!(matches!(
            check(&|h| h.cluster_bits = 22),
            FormatError::Unsupported { .. }
        ));
        assert!(matches!(
            check(&|h| h.incompatible_features = 1 << 9),
            FormatError::Unsupported { ref what, .. } if what.contains("bit 9")
        ));
        assert!(matches!(
            check(&|h| h.incompatible_features = INCOMPAT_DATA_FILE),
            FormatError::Unsupported { ref what, .. } if what.contains("external data file")
        ));
        assert!(matches!(
            check(&|h| h.size = u64::MAX),
            FormatError::TooLarge { .. }
        ));
        assert!(matches!(
            check(&|h| h.l1_size = u32::MAX),
            FormatError::TooLarge { .. }
        ));
        assert!(matches!(
            check(&|h| h.l1_size = 1),
            FormatError::Corrupt { .. }
        ));
        assert!(matches!(
            check(&|h| h.l1_table_offset = 0x30001),
            FormatError::Corrupt { .. }
        ));
        assert!(matches!(
            check(&|h| h.l1_table_offset = 0),
            FormatError::Corrupt { .. }
        ));
        assert!(matches!(
            check(&|h| h.l1_table_offset = 1 << 40),
            FormatError::Corrupt { .. }
        ));
        assert!(matches!(
            check(&|h| h.header_length = 105),
            FormatError::Corrupt { .. }
        ));
        assert!(matches!(
            check(&|h| {
                h.header_length = 112;
                h.compression_type = 1;
            }),
            FormatError::Corrupt { .. }
        ));
        assert!(matches!(
            check(&|h| {
                h.incompatible_features = INCOMPAT_EXTENDED_L2;
                h.cluster_bits = 12;
                h.l1_table_offset = 0x3000;
                h.l1_size = 1024;
            }),
            FormatError::Corrupt { .. }
        ));
    }

    #[test]
    fn bad_magic_and_version() {
        assert!(matches!(
            Header::parse(b"QFI\xfa\0\0\0\x03"),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            Header::parse(b"QFI\xfb\0\0\0\x04"),
            Err(FormatError::Unsupported { .. })
        ));
        assert!(matches!(
            Header::parse(b"QFI"),
            Err(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            Header::parse(&sample_v3().encode()[..80]),
            Err(FormatError::Truncated { .. })
        ));
    }

    #[test]
    fn extensions_and_backing_name() {
        let mut h = sample_v3();
        let mut c0 = h.encode();
        // Backing format extension "qcow2", feature table with one name, end marker.
        c0.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        c0.extend_from_slice(&5u32.to_be_bytes());
        c0.extend_from_slice(b"qcow2\0\0\0");
        c0.extend_from_slice(&EXT_FEATURE_TABLE.to_be_bytes());
        c0.extend_from_slice(&48u32.to_be_bytes());
        let mut entry = [0u8; 48];
        entry[1] = 9;
        entry[2..7].copy_from_slice(b"fancy");
        c0.extend_from_slice(&entry);
        c0.extend_from_slice(&[0u8; 8]);
        let name_at = c0.len();
        c0.extend_from_slice(b"base.img");
        h.backing_file_offset = name_at as u64;
        h.backing_file_size = 8;
        c0[..104].copy_from_slice(&h.encode());
        let ext = HeaderExtensions::parse(&h, &c0).unwrap();
        assert_eq!(ext.backing_file.as_deref(), Some("base.img"));
        assert_eq!(ext.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(ext.feature_names, vec![(0, 9, "fancy".to_string())]);
        h.incompatible_features = 1 << 9;
        let err = h.validate(1 << 20, &ext).unwrap_err();
        assert!(err.to_string().contains("fancy"), "{err}");
    }

    #[test]
    fn overrunning_extension_is_corrupt() {
        let h = sample_v3();
        let mut c0 = h.encode();
        c0.extend_from_slice(&0x1234u32.to_be_bytes());
        c0.extend_from_slice(&u32::MAX.to_be_bytes());
        c0.resize(1 << 16, 0);
        assert!(matches!(
            HeaderExtensions::parse(&h, &c0),
            Err(FormatError::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(h) = Header::parse(&bytes) {
                let ext = HeaderExtensions::parse(&h, &bytes);
                if let Ok(ext) = ext {
                    let _ = h.validate(bytes.len() as u64, &ext);
                }
                let _ = h.l1_entries_needed();
            }
        }

        #[test]
        fn parse_with_valid_magic_never_panics(
            tail in proptest::collection::vec(any::<u8>(), 0..300),
            version in 2u32..=3,
            cluster_bits in 0u32..64,
            header_length in 0u32..400,
            file_len in any::<u64>(),
        ) {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&version.to_be_bytes());
            b.extend_from_slice(&tail);
            if b.len() >= 24 {
                b[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
            }
            if b.len() >= 104 {
                b[100..104].copy_from_slice(&header_length.to_be_bytes());
            }
            if let Ok(h) = Header::parse(&b) {
                if let Ok(ext) = HeaderExtensions::parse(&h, &b) {
                    let _ = h.validate(file_len, &ext);
                }
            }
        }
    }
}
