//! Pure parsers for the fixed VHDX structures: the two 4 KiB headers, the 64 KiB region
//! table and the metadata table with the items this reader needs (file parameters,
//! virtual disk size, logical sector size). Every parser takes bytes and returns checked
//! values or a [`FormatError`]; none does IO or allocates from a length it was given.

use super::crc::crc32c_skipping;
use crate::fields::{bytes_at, le16, le32, le64};
use crate::FormatError;

pub(super) const FORMAT: &str = "vhdx";
pub const MIB: u64 = 1 << 20;
pub const HEADER_LEN: usize = 4096;
pub const REGION_TABLE_LEN: usize = 64 * 1024;
pub const METADATA_TABLE_LEN: usize = 64 * 1024;
const MAX_TABLE_ENTRIES: u32 = 2047;
/// No structure may start beyond this (keeps offset arithmetic far from overflow).
pub const MAX_FILE_OFFSET: u64 = 1 << 60;

/// A GUID as stored on disk (first three fields little-endian).
pub type Guid = [u8; 16];

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

pub const BAT_REGION: Guid = guid(
    0x2dc2_7766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
pub const METADATA_REGION: Guid = guid(
    0x8b7c_a206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);
pub const FILE_PARAMETERS: Guid = guid(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
pub const VIRTUAL_DISK_SIZE: Guid = guid(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
pub const LOGICAL_SECTOR_SIZE: Guid = guid(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
pub const VIRTUAL_DISK_ID: Guid = guid(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
pub const PHYSICAL_SECTOR_SIZE: Guid = guid(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
pub const PARENT_LOCATOR: Guid = guid(
    0xa8d3_5f2d,
    0xb30b,
    0x454d,
    [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
);

pub(super) fn guid_at(b: &[u8], at: usize) -> Guid {
    bytes_at(b, at)
}

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::corrupt(FORMAT, detail)
}

fn need(buf: &[u8], len: usize, what: &str) -> Result<(), FormatError> {
    if buf.len() < len {
        return Err(FormatError::Truncated {
            what: what.into(),
            offset: buf.len() as u64,
        });
    }
    Ok(())
}

/// One of the two image headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sequence: u64,
    pub log_guid: Guid,
    pub log_length: u32,
    pub log_offset: u64,
}

/// Parses a 4 KiB header: signature "head", CRC-32C, version 1.
pub fn parse_header(buf: &[u8]) -> Result<Header, FormatError> {
    need(buf, HEADER_LEN, "VHDX header")?;
    let buf = &buf[..HEADER_LEN];
    if !buf.starts_with(b"head") {
        return Err(corrupt("header signature is not \"head\""));
    }
    let stored = le32(buf, 4);
    let computed = crc32c_skipping(buf, 4);
    if stored != computed {
        return Err(corrupt(format!(
            "header checksum {stored:#010x} does not match computed {computed:#010x}"
        )));
    }
    let version = le16(buf, 66);
    if version != 1 {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("header version {version}"),
        ));
    }
    Ok(Header {
        sequence: le64(buf, 8),
        log_guid: guid_at(buf, 48),
        log_length: le32(buf, 68),
        log_offset: le64(buf, 72),
    })
}

/// The current header: the valid one with the higher sequence number.
pub fn pick_header(
    first: Result<Header, FormatError>,
    second: Result<Header, FormatError>,
) -> Result<Header, FormatError> {
    match (first, second) {
        (Ok(a), Ok(b)) => Ok(if b.sequence > a.sequence { b } else { a }),
        (Ok(a), Err(_)) | (Err(_), Ok(a)) => Ok(a),
        // A short or unreadable file says more than "no valid header".
        (Err(e @ (FormatError::Truncated { .. } | FormatError::Io { .. })), Err(_)) => Err(e),
        (Err(e), Err(_)) => Err(corrupt(format!("no valid header: {e}"))),
    }
}

/// A region's place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub length: u64,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }

    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.end() && self.offset < end
    }
}

/// The BAT and metadata regions of a region table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regions {
    pub bat: Region,
    pub metadata: Region,
}

/// Parses a 64 KiB region table: signature "regi", CRC-32C, entries; unknown regions
/// marked required are refused.
pub fn parse_region_table(buf: &[u8]) -> Result<Regions, FormatError> {
    need(buf, REGION_TABLE_LEN, "VHDX region table")?;
    let buf = &buf[..REGION_TABLE_LEN];
    if !buf.starts_with(b"regi") {
        return Err(corrupt("region table signature is not \"regi\""));
    }
    let stored = le32(buf, 4);
    let computed = crc32c_skipping(buf, 4);
    if stored != computed {
        return Err(corrupt(format!(
            "region table checksum {stored:#010x} does not match computed {computed:#010x}"
        )));
    }
    let count = le32(buf, 8);
    if count > MAX_TABLE_ENTRIES {
        return Err(corrupt(format!(
            "region table has {count} entries (max 2047)"
        )));
    }
    let (mut bat, mut metadata) = (None, None);
    for i in 0..count as usize {
        let e = 16 + 32 * i;
        let id = guid_at(buf, e);
        let region = Region {
            offset: le64(buf, e + 16),
            length: u64::from(le32(buf, e + 24)),
        };
        let required = le32(buf, e + 28) & 1 != 0;
        let slot = match id {
            BAT_REGION => &mut bat,
            METADATA_REGION => &mut metadata,
            _ if required => {
                return Err(FormatError::unsupported(
                    FORMAT,
                    format!("unknown required region {}", hex(&id)),
                ))
            }
            _ => continue,
        };
        if slot.is_some() {
            return Err(corrupt("region table lists a region twice"));
        }
        if region.offset < MIB
            || region.offset > MAX_FILE_OFFSET
            || !region.offset.is_multiple_of(MIB)
            || !region.length.is_multiple_of(MIB)
        {
            return Err(corrupt(format!(
                "region at {}+{} is not 1 MiB aligned or overlaps the headers",
                region.offset, region.length
            )));
        }
        *slot = Some(region);
    }
    match (bat, metadata) {
        (Some(bat), Some(metadata)) if !bat.overlaps(metadata.offset, metadata.end()) => {
            Ok(Regions { bat, metadata })
        }
        (Some(_), Some(_)) => Err(corrupt("BAT and metadata regions overlap")),
        _ => Err(corrupt("region table lacks the BAT or metadata region")),
    }
}

fn hex(g: &Guid) -> String {
    g.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the metadata items this reader needs sit, relative to the metadata region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetadataItems {
    pub file_parameters: Option<(u32, u32)>,
    pub virtual_disk_size: Option<(u32, u32)>,
    pub logical_sector_size: Option<(u32, u32)>,
    pub has_parent_locator: bool,
}

/// Parses the 64 KiB metadata table at the start of the metadata region (of
/// `region_len` bytes): signature "metadata", entries inside the region.
pub fn parse_metadata_table(buf: &[u8], region_len: u64) -> Result<MetadataItems, FormatError> {
    need(buf, METADATA_TABLE_LEN, "VHDX metadata table")?;
    if !buf.starts_with(b"metadata") {
        return Err(corrupt("metadata table signature is not \"metadata\""));
    }
    let count = le16(buf, 10);
    if u32::from(count) > MAX_TABLE_ENTRIES {
        return Err(corrupt(format!(
            "metadata table has {count} entries (max 2047)"
        )));
    }
    let mut items = MetadataItems::default();
    for i in 0..count as usize {
        let e = 32 + 32 * i;
        let id = guid_at(buf, e);
        let offset = le32(buf, e + 16);
        let length = le32(buf, e + 20);
        let required = le32(buf, e + 24) & 4 != 0;
        if length != 0
            && (u64::from(offset) < METADATA_TABLE_LEN as u64
                || u64::from(offset) + u64::from(length) > region_len)
        {
            return Err(corrupt(format!(
                "metadata item {} at {offset}+{length} is outside its region",
                hex(&id)
            )));
        }
        let slot = match id {
            FILE_PARAMETERS => &mut items.file_parameters,
            VIRTUAL_DISK_SIZE => &mut items.virtual_disk_size,
            LOGICAL_SECTOR_SIZE => &mut items.logical_sector_size,
            // Known items this reader has no use for.
            VIRTUAL_DISK_ID | PHYSICAL_SECTOR_SIZE => continue,
            PARENT_LOCATOR => {
                items.has_parent_locator = true;
                continue;
            }
            _ if required => {
                return Err(FormatError::unsupported(
                    FORMAT,
                    format!("unknown required metadata item {}", hex(&id)),
                ))
            }
            _ => continue,
        };
        *slot = Some((offset, length));
    }
    Ok(items)
}

/// The disk geometry from the metadata items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub block_size: u32,
    pub has_parent: bool,
    pub virtual_size: u64,
    pub logical_sector_size: u32,
}

/// The largest virtual size VHDX allows (64 TiB).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// Checks the values read from the file parameters (8 bytes), virtual disk size (8) and
/// logical sector size (4) items.
pub fn parse_params(file_params: &[u8], vsize: &[u8], lss: &[u8]) -> Result<Params, FormatError> {
    if file_params.len() < 8 || vsize.len() < 8 || lss.len() < 4 {
        return Err(corrupt("a metadata item is shorter than its value"));
    }
    let p = Params {
        block_size: le32(file_params, 0),
        has_parent: le32(file_params, 4) & 2 != 0,
        virtual_size: le64(vsize, 0),
        logical_sector_size: le32(lss, 0),
    };
    if !p.block_size.is_power_of_two() || !(MIB..=256 * MIB).contains(&u64::from(p.block_size)) {
        return Err(corrupt(format!(
            "block size {} is not a power of two in 1-256 MiB",
            p.block_size
        )));
    }
    if p.logical_sector_size != 512 && p.logical_sector_size != 4096 {
        return Err(corrupt(format!(
            "logical sector size {}",
            p.logical_sector_size
        )));
    }
    if p.virtual_size > MAX_VIRTUAL_SIZE {
        return Err(FormatError::TooLarge {
            format: FORMAT,
            what: "virtual disk size".into(),
            value: p.virtual_size,
            limit: MAX_VIRTUAL_SIZE,
        });
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhdx::crc::crc32c;
    use proptest::prelude::*;

    #[test]
    fn guid_layout_matches_disk() {
        // The BAT region GUID as qemu-img writes it.
        assert_eq!(
            BAT_REGION,
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
    }

    fn header(seq: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..4].copy_from_slice(b"head");
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[66..68].copy_from_slice(&1u16.to_le_bytes());
        let c = crc32c(&h);
        h[4..8].copy_from_slice(&c.to_le_bytes());
        h
    }

    #[test]
    fn picks_the_newer_valid_header() {
        let h = pick_header(parse_header(&header(5)), parse_header(&header(9))).unwrap();
        assert_eq!(h.sequence, 9);
        let mut bad = header(12);
        bad[100] = 1;
        let h = pick_header(parse_header(&header(5)), parse_header(&bad)).unwrap();
        assert_eq!(h.sequence, 5);
        assert!(pick_header(parse_header(&bad), parse_header(&bad)).is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            let _ = parse_header(&bytes);
            let _ = parse_region_table(&bytes);
            let _ = parse_metadata_table(&bytes, u64::from(u32::MAX) * 2);
            let _ = parse_params(&bytes, &bytes, &bytes);
        }

        #[test]
        fn tables_never_panic_with_signatures(
            count in any::<u32>(),
            entries in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let mut t = vec![0u8; REGION_TABLE_LEN];
            t[..4].copy_from_slice(b"regi");
            t[8..12].copy_from_slice(&(count % 4096).to_le_bytes());
            t[16..16 + entries.len()].copy_from_slice(&entries);
            let c = crc32c(&t);
            t[4..8].copy_from_slice(&c.to_le_bytes());
            let _ = parse_region_table(&t);
            t[..8].copy_from_slice(b"metadata");
            t[10..12].copy_from_slice(&((count % 4096) as u16).to_le_bytes());
            let _ = parse_metadata_table(&t, MIB);
        }
    }
}
