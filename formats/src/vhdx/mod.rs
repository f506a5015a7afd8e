//! Microsoft VHDX images (MS-VHDX v1): file identifier "vhdxfile", two CRC-protected
//! headers (the valid one with the higher sequence number wins), the region table, the
//! metadata items that give the geometry, and the BAT, where payload block entries are
//! interleaved with one sector-bitmap entry after every `chunk ratio` payload entries.
//!
//! Read-only: an image whose log still needs replaying, and differencing images, are
//! refused. Every region, item and BAT entry is checked against the file and the
//! metadata before use. Reads only through [`ReadAt`].
//!
//! An image that arrives as a stream is planned by the same loader (`stream_plan`, for
//! [`crate::streammap`]): the header section, log, metadata and BAT regions come before
//! the payload blocks. What this reader refuses as unsupported (a log to replay, a
//! differencing image) is left to it: such a stream is not streamable.

mod crc;
mod log;
mod meta;

use std::sync::Arc;

use crate::blockmap::{guest_block_len, BlockMap};
use crate::fields::le64;
use crate::readat::read_exact;
use crate::streammap::{blocks_plan, Plan, Prefix, UNKNOWN_LEN};
use crate::{DiskImage, Extent, Format, FormatError, ReadAt};
use meta::{Header, Params, Region, Regions, FORMAT, MIB};

use meta::{parse_header, parse_metadata_table, parse_region_table};

const HEADER1_AT: u64 = 64 * 1024;
const HEADER2_AT: u64 = 128 * 1024;
const REGION1_AT: u64 = 192 * 1024;
const REGION2_AT: u64 = 256 * 1024;
/// The header section ends here; nothing the BAT points at may lie below.
const HEADER_SECTION_END: u64 = MIB;
/// BAT bound: 16 Mi entries (128 MiB in memory), 16 TiB at the minimum 1 MiB block size.
const MAX_BAT_ENTRIES: u64 = 1 << 24;
/// Log bound for the replay check (qemu and Hyper-V use 1 MiB).
const MAX_LOG_LEN: u64 = 64 * MIB;

const PAYLOAD_NOT_PRESENT: u64 = 0;
const PAYLOAD_UNDEFINED: u64 = 1;
const PAYLOAD_ZERO: u64 = 2;
const PAYLOAD_UNMAPPED: u64 = 3;
const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::corrupt(FORMAT, detail)
}

/// A VHDX image opened for reading.
pub struct VhdxImage {
    src: Arc<dyn ReadAt>,
    params: Params,
    /// Per payload block: the file offset of its data, or `None` when it reads as zero.
    blocks: BlockMap,
}

impl VhdxImage {
    /// Opens a VHDX image: headers, region table, metadata and the whole BAT.
    pub fn open(src: Arc<dyn ReadAt>) -> Result<Self, FormatError> {
        let file_len = src
            .len()
            .map_err(|e| FormatError::io("reading VHDX file length", e))?;
        let (params, blocks) = load(&*src, file_len)?;
        let blocks = BlockMap::new(params.block_size.into(), params.virtual_size, blocks);
        Ok(VhdxImage {
            src,
            params,
            blocks,
        })
    }

    /// Payload block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.params.block_size
    }

    /// Logical sector size in bytes (512 or 4096).
    pub fn logical_sector_size(&self) -> u32 {
        self.params.logical_sector_size
    }
}

/// Reads and checks everything in front of the payload of a file of `file_len` bytes:
/// the geometry, and per payload block the file offset of its data or `None` when it
/// reads as zero.
fn load(src: &dyn ReadAt, file_len: u64) -> Result<(Params, Vec<Option<u64>>), FormatError> {
    let mut magic = [0u8; 8];
    read_exact(FORMAT, src, &mut magic, 0, "file identifier")?;
    if &magic != b"vhdxfile" {
        return Err(FormatError::BadMagic { format: FORMAT });
    }
    let header = read_header(src)?;
    check_log(src, &header, file_len)?;
    let regions = read_regions(src, file_len)?;
    let params = read_params(src, regions.metadata)?;
    let log = Region {
        offset: header.log_offset,
        length: header.log_length.into(),
    };
    let reserved = [
        Region {
            offset: 0,
            length: HEADER_SECTION_END,
        },
        regions.bat,
        regions.metadata,
        log,
    ];
    let blocks = read_bat(src, &params, regions.bat, &reserved, file_len)?;
    Ok((params, blocks))
}

/// Plans an image arriving as a stream (see [`crate::streammap`]).
pub(crate) fn stream_plan(src: &Prefix<'_>) -> Result<Plan, FormatError> {
    match load(src, UNKNOWN_LEN) {
        Ok((p, blocks)) => blocks_plan(FORMAT, p.block_size.into(), p.virtual_size, &blocks),
        Err(e @ FormatError::Unsupported { .. }) => Ok(Plan::NotStreamable(e.to_string())),
        Err(e) => Err(e),
    }
}

fn read_header(src: &dyn ReadAt) -> Result<Header, FormatError> {
    let mut buf = vec![0u8; meta::HEADER_LEN];
    let mut one = |at: u64| {
        read_exact(FORMAT, src, &mut buf, at, "header")?;
        parse_header(&buf)
    };
    let first = one(HEADER1_AT);
    let second = one(HEADER2_AT);
    meta::pick_header(first, second)
}

fn check_log(src: &dyn ReadAt, h: &Header, file_len: u64) -> Result<(), FormatError> {
    if h.log_guid.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let len = u64::from(h.log_length);
    if h.log_offset < HEADER_SECTION_END
        || !h.log_offset.is_multiple_of(MIB)
        || !len.is_multiple_of(MIB)
        || h.log_offset.saturating_add(len) > file_len
    {
        return Err(corrupt(format!(
            "log at {}+{len} is misaligned or outside the file",
            h.log_offset
        )));
    }
    if len > MAX_LOG_LEN {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("log of {len} bytes is set and too large to check; log replay needed"),
        ));
    }
    let mut log = vec![0u8; len as usize];
    read_exact(FORMAT, src, &mut log, h.log_offset, "log")?;
    if log::has_replayable_entry(&log, &h.log_guid) {
        return Err(FormatError::unsupported(
            FORMAT,
            "log replay needed (the image was not closed cleanly)",
        ));
    }
    Ok(())
}

fn read_regions(src: &dyn ReadAt, file_len: u64) -> Result<Regions, FormatError> {
    let mut buf = vec![0u8; meta::REGION_TABLE_LEN];
    read_exact(FORMAT, src, &mut buf, REGION1_AT, "region table")?;
    let regions = match parse_region_table(&buf) {
        Ok(r) => r,
        Err(first) => {
            read_exact(FORMAT, src, &mut buf, REGION2_AT, "region table copy")?;
            parse_region_table(&buf).map_err(|_| first)?
        }
    };
    for (name, r) in [("BAT", regions.bat), ("metadata", regions.metadata)] {
        if r.end() > file_len {
            return Err(corrupt(format!(
                "{name} region at {}+{} is past the end of the file ({file_len})",
                r.offset, r.length
            )));
        }
    }
    Ok(regions)
}

fn read_item(
    src: &dyn ReadAt,
    region: Region,
    item: Option<(u32, u32)>,
    len: usize,
    what: &str,
) -> Result<Vec<u8>, FormatError> {
    let (offset, length) =
        item.ok_or_else(|| corrupt(format!("metadata lacks the {what} item")))?;
    if (length as usize) < len {
        return Err(corrupt(format!("metadata item {what} is {length} bytes")));
    }
    let mut buf = vec![0u8; len];
    read_exact(
        FORMAT,
        src,
        &mut buf,
        region.offset + u64::from(offset),
        what,
    )?;
    Ok(buf)
}

fn read_params(src: &dyn ReadAt, region: Region) -> Result<Params, FormatError> {
    if region.length < meta::METADATA_TABLE_LEN as u64 {
        return Err(corrupt("metadata region is smaller than its table"));
    }
    let mut table = vec![0u8; meta::METADATA_TABLE_LEN];
    read_exact(FORMAT, src, &mut table, region.offset, "metadata table")?;
    let items = parse_metadata_table(&table, region.length)?;
    let fp = read_item(src, region, items.file_parameters, 8, "file parameters")?;
    let vs = read_item(src, region, items.virtual_disk_size, 8, "virtual disk size")?;
    let ls = read_item(
        src,
        region,
        items.logical_sector_size,
        4,
        "logical sector size",
    )?;
    let params = meta::parse_params(&fp, &vs, &ls)?;
    if params.has_parent || items.has_parent_locator {
        return Err(FormatError::unsupported(
            FORMAT,
            "differencing image (needs its parent image)",
        ));
    }
    Ok(params)
}

/// BAT layout: how many payload blocks, and the BAT index of payload block `i`.
#[derive(Debug, Clone, Copy)]
struct BatLayout {
    data_blocks: u64,
    chunk_ratio: u64,
}

impl BatLayout {
    fn new(p: &Params) -> Self {
        let chunk_ratio =
            ((1u64 << 23) * u64::from(p.logical_sector_size)) / u64::from(p.block_size);
        BatLayout {
            data_blocks: p.virtual_size.div_ceil(p.block_size.into()),
            chunk_ratio,
        }
    }

    /// Entries the BAT must hold: payload entries plus the sector-bitmap entries that sit
    /// between them (none after the last payload entry).
    fn entries(&self) -> u64 {
        match self.data_blocks {
            0 => 0,
            n => n + (n - 1) / self.chunk_ratio,
        }
    }

    fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }
}

fn read_bat(
    src: &dyn ReadAt,
    p: &Params,
    bat: Region,
    reserved: &[Region],
    file_len: u64,
) -> Result<Vec<Option<u64>>, FormatError> {
    let layout = BatLayout::new(p);
    let entries = layout.entries();
    if entries > MAX_BAT_ENTRIES {
        return Err(FormatError::TooLarge {
            format: FORMAT,
            what: "block allocation table".into(),
            value: entries,
            limit: MAX_BAT_ENTRIES,
        });
    }
    if entries * 8 > bat.length {
        return Err(corrupt(format!(
            "BAT region of {} bytes cannot hold {entries} entries",
            bat.length
        )));
    }
    let mut raw = vec![0u8; (entries * 8) as usize];
    read_exact(FORMAT, src, &mut raw, bat.offset, "BAT")?;
    (0..layout.data_blocks)
        .map(|block| {
            let at = (layout.payload_index(block) * 8) as usize;
            let entry = le64(&raw, at);
            check_payload_entry(p, block, entry, reserved, file_len)
        })
        .collect()
}

/// Checks one payload BAT entry; `Some(file offset)` for a stored block. Pure.
fn check_payload_entry(
    p: &Params,
    block: u64,
    entry: u64,
    reserved: &[Region],
    file_len: u64,
) -> Result<Option<u64>, FormatError> {
    match entry & 7 {
        PAYLOAD_NOT_PRESENT | PAYLOAD_UNDEFINED | PAYLOAD_ZERO | PAYLOAD_UNMAPPED => Ok(None),
        PAYLOAD_FULLY_PRESENT => {
            let start = (entry >> 20) * MIB;
            let needed = guest_block_len(block, p.block_size.into(), p.virtual_size);
            let end = start.checked_add(needed).filter(|&e| e <= file_len);
            let Some(end) = end else {
                return Err(corrupt(format!(
                    "BAT entry for block {block} points at offset {start}, past the end of the file ({file_len})"
                )));
            };
            if let Some(r) = reserved
                .iter()
                .find(|r| r.length > 0 && r.overlaps(start, end))
            {
                return Err(corrupt(format!(
                    "block {block} at offset {start} overlaps metadata at {}+{}",
                    r.offset, r.length
                )));
            }
            Ok(Some(start))
        }
        PAYLOAD_PARTIALLY_PRESENT => Err(corrupt(format!(
            "block {block} is partially present, which only a differencing image may use"
        ))),
        state => Err(corrupt(format!(
            "block {block} has invalid BAT state {state}"
        ))),
    }
}

impl DiskImage for VhdxImage {
    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn virtual_size(&self) -> u64 {
        self.params.virtual_size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        self.blocks.map(offset, max_len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), FormatError> {
        self.blocks
            .read(&*self.src, FORMAT, "payload block", buf, offset)
    }
}

#[cfg(test)]
mod tests;
