//! VirtualBox VDI images (version 1.1, "normal" dynamic and "fixed" types): the 512-byte
//! header, the block map (one little-endian u32 per block: an index into the data area,
//! `0xffffffff` unallocated, `0xfffffffe` discarded/zero) and the data blocks.
//!
//! Differencing and undo images need a parent and are refused. Every header field is
//! bounded before it sizes an allocation or a read, and every block map entry is checked
//! against the file length at open. This module only reads through [`ReadAt`]; it never
//! writes, opens paths, or trusts an offset it has not checked.
//!
//! An image that arrives as a stream is planned by the same loader (`stream_plan`, for
//! [`crate::streammap`]): the header and block map come before the data blocks.

use std::sync::Arc;

use crate::blockmap::{guest_block_len, BlockMap};
use crate::fields::{le32, le64};
use crate::readat::read_exact;
use crate::streammap::{blocks_plan, Plan, Prefix, UNKNOWN_LEN};
use crate::{DiskImage, Extent, Format, FormatError, ReadAt};

const FORMAT: &str = "vdi";
/// Bytes of the header this reader parses (pre-header, header v1.1, UUIDs).
pub const HEADER_LEN: usize = 512;
const SIGNATURE: u32 = 0xbeda_107f;
const VERSION_1_1: u32 = 0x0001_0001;
/// End of the last header field read (`uuid_parent`): the block map may not start before.
const HEADER_FIELDS_END: u64 = 0x1c8;
const TYPE_NORMAL: u32 = 1;
const TYPE_FIXED: u32 = 2;
const TYPE_UNDO: u32 = 3;
const TYPE_DIFF: u32 = 4;
const BLOCK_UNALLOCATED: u32 = 0xffff_ffff;
const BLOCK_ZERO: u32 = 0xffff_fffe;
/// Block map bound: 16 Mi entries (64 MiB of map, 16 TiB with 1 MiB blocks).
const MAX_BLOCKS: u32 = 1 << 24;
const MAX_BLOCK_SIZE: u32 = 1 << 28;

/// The fields of a VDI header this reader needs, validated for internal consistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdiHeader {
    pub image_type: u32,
    pub offset_bmap: u32,
    pub offset_data: u32,
    pub disk_size: u64,
    pub block_size: u32,
    pub block_extra: u32,
    pub blocks_in_image: u32,
}

fn is_null_uuid(b: &[u8], at: usize) -> bool {
    b.get(at..at + 16)
        .is_some_and(|u| u.iter().all(|&x| x == 0))
}

/// Parses and checks the first [`HEADER_LEN`] bytes of a VDI file. Pure: no IO.
pub fn parse_header(buf: &[u8]) -> Result<VdiHeader, FormatError> {
    if buf.len() < HEADER_LEN {
        return Err(FormatError::Truncated {
            what: "VDI header".into(),
            offset: buf.len() as u64,
        });
    }
    if le32(buf, 0x40) != SIGNATURE {
        return Err(FormatError::BadMagic { format: FORMAT });
    }
    let version = le32(buf, 0x44);
    if version != VERSION_1_1 {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("version {}.{} (only 1.1)", version >> 16, version & 0xffff),
        ));
    }
    let header_size = le32(buf, 0x48);
    if u64::from(header_size) + 0x48 < HEADER_FIELDS_END {
        return Err(FormatError::corrupt(
            FORMAT,
            format!("header size {header_size} is smaller than a v1.1 header"),
        ));
    }
    let image_type = le32(buf, 0x4c);
    match image_type {
        TYPE_NORMAL | TYPE_FIXED => {}
        TYPE_UNDO | TYPE_DIFF => {
            return Err(FormatError::unsupported(
                FORMAT,
                "differencing image (needs its parent image)",
            ))
        }
        other => {
            return Err(FormatError::unsupported(
                FORMAT,
                format!("image type {other}"),
            ))
        }
    }
    // A base image links to nothing; a set link or parent UUID means a differencing disk.
    if !is_null_uuid(buf, 0x1a8) || !is_null_uuid(buf, 0x1b8) {
        return Err(FormatError::unsupported(
            FORMAT,
            "image has a parent/link UUID (differencing image)",
        ));
    }
    let sector_size = le32(buf, 0x168);
    if sector_size != 512 {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("sector size {sector_size} (only 512)"),
        ));
    }
    let h = VdiHeader {
        image_type,
        offset_bmap: le32(buf, 0x154),
        offset_data: le32(buf, 0x158),
        disk_size: le64(buf, 0x170),
        block_size: le32(buf, 0x178),
        block_extra: le32(buf, 0x17c),
        blocks_in_image: le32(buf, 0x180),
    };
    check_header(&h)?;
    Ok(h)
}

fn check_header(h: &VdiHeader) -> Result<(), FormatError> {
    if !h.block_size.is_power_of_two() || !(512..=MAX_BLOCK_SIZE).contains(&h.block_size) {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("block size {}", h.block_size),
        ));
    }
    if h.block_extra > MAX_BLOCK_SIZE {
        return Err(FormatError::corrupt(
            FORMAT,
            format!("block extra size {} is absurd", h.block_extra),
        ));
    }
    if h.blocks_in_image > MAX_BLOCKS {
        return Err(FormatError::TooLarge {
            format: FORMAT,
            what: "block count".into(),
            value: h.blocks_in_image.into(),
            limit: MAX_BLOCKS.into(),
        });
    }
    let room = u64::from(h.blocks_in_image) * u64::from(h.block_size);
    if h.disk_size > room {
        return Err(FormatError::corrupt(
            FORMAT,
            format!(
                "disk size {} exceeds {} blocks of {} bytes",
                h.disk_size, h.blocks_in_image, h.block_size
            ),
        ));
    }
    let bmap_end = u64::from(h.offset_bmap) + 4 * u64::from(h.blocks_in_image);
    if u64::from(h.offset_bmap) < HEADER_FIELDS_END || bmap_end > u64::from(h.offset_data) {
        return Err(FormatError::corrupt(
            FORMAT,
            format!(
                "block map at {} (+{} entries) overlaps the header or the data area at {}",
                h.offset_bmap, h.blocks_in_image, h.offset_data
            ),
        ));
    }
    Ok(())
}

/// Where a block's guest bytes live, from its block map entry.
fn block_file_offset(h: &VdiHeader, entry: u32) -> Option<u64> {
    if entry == BLOCK_UNALLOCATED || entry == BLOCK_ZERO {
        return None;
    }
    let stride = u64::from(h.block_size) + u64::from(h.block_extra);
    Some(u64::from(h.offset_data) + u64::from(entry) * stride + u64::from(h.block_extra))
}

/// A VDI image opened for reading.
pub struct VdiImage {
    src: Arc<dyn ReadAt>,
    header: VdiHeader,
    /// Per guest block: the file offset of its bytes, or `None` when it reads as zero.
    blocks: BlockMap,
}

impl VdiImage {
    /// Opens a VDI image, reading and checking its header and whole block map.
    pub fn open(src: Arc<dyn ReadAt>) -> Result<Self, FormatError> {
        let file_len = src
            .len()
            .map_err(|e| FormatError::io("reading VDI file length", e))?;
        if file_len < HEADER_LEN as u64 {
            return Err(FormatError::Truncated {
                what: "VDI header".into(),
                offset: file_len,
            });
        }
        let (header, blocks) = load(&*src, file_len)?;
        let blocks = BlockMap::new(header.block_size.into(), header.disk_size, blocks);
        Ok(VdiImage {
            src,
            header,
            blocks,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &VdiHeader {
        &self.header
    }
}

/// Reads and checks the header and the block map of a file of `file_len` bytes: per guest
/// block, the file offset of its bytes or `None` when it reads as zero.
fn load(src: &dyn ReadAt, file_len: u64) -> Result<(VdiHeader, Vec<Option<u64>>), FormatError> {
    let mut hbuf = [0u8; HEADER_LEN];
    read_exact(FORMAT, src, &mut hbuf, 0, "header")?;
    let header = parse_header(&hbuf)?;
    // Only the entries covering the disk size matter; the rest may hold anything.
    let needed = header.disk_size.div_ceil(u64::from(header.block_size));
    let map_len = usize::try_from(needed * 4).map_err(|_| {
        FormatError::corrupt(FORMAT, "block map does not fit in memory".to_string())
    })?;
    let mut raw = vec![0u8; map_len];
    read_exact(
        FORMAT,
        src,
        &mut raw,
        header.offset_bmap.into(),
        "block map",
    )?;
    let blocks = raw
        .chunks_exact(4)
        .enumerate()
        .map(|(i, e)| check_entry(&header, i as u64, le32(e, 0), file_len))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((header, blocks))
}

/// Plans an image arriving as a stream (see [`crate::streammap`]).
pub(crate) fn stream_plan(src: &Prefix<'_>) -> Result<Plan, FormatError> {
    let (h, blocks) = load(src, UNKNOWN_LEN)?;
    blocks_plan(FORMAT, h.block_size.into(), h.disk_size, &blocks)
}

/// Validates one block map entry: in range of the image's blocks, data inside the file.
fn check_entry(
    h: &VdiHeader,
    block: u64,
    entry: u32,
    file_len: u64,
) -> Result<Option<u64>, FormatError> {
    let Some(start) = block_file_offset(h, entry) else {
        return Ok(None);
    };
    if entry >= h.blocks_in_image {
        return Err(FormatError::corrupt(
            FORMAT,
            format!(
                "block {block} maps to data block {entry}, past the {} blocks of the image",
                h.blocks_in_image
            ),
        ));
    }
    let needed = guest_block_len(block, h.block_size.into(), h.disk_size);
    if start + needed > file_len {
        return Err(FormatError::corrupt(
            FORMAT,
            format!(
                "block {block} data at offset {start} is past the end of the file ({file_len})"
            ),
        ));
    }
    Ok(Some(start))
}

impl DiskImage for VdiImage {
    fn format(&self) -> Format {
        Format::Vdi
    }

    fn virtual_size(&self) -> u64 {
        self.header.disk_size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        self.blocks.map(offset, max_len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), FormatError> {
        self.blocks
            .read(&*self.src, FORMAT, "data block", buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readat::MemImage;
    use crate::streammap::plan;
    use crate::streammap::testing::{
        assert_rereading_refused, map_of, read_all, runs, stream_decode,
    };
    use crate::ExtentKind;
    use proptest::prelude::*;

    /// Builds a small VDI in memory: 3 blocks of 4 KiB map = [1, unallocated, 0], a disk
    /// size that ends inside the third block.
    fn sample(disk_size: u64) -> Vec<u8> {
        let mut f = vec![0u8; 0x400];
        f[..4].copy_from_slice(b"<<< ");
        f[0x40..0x44].copy_from_slice(&SIGNATURE.to_le_bytes());
        f[0x44..0x48].copy_from_slice(&VERSION_1_1.to_le_bytes());
        f[0x48..0x4c].copy_from_slice(&0x180u32.to_le_bytes());
        f[0x4c..0x50].copy_from_slice(&TYPE_NORMAL.to_le_bytes());
        f[0x154..0x158].copy_from_slice(&0x200u32.to_le_bytes());
        f[0x158..0x15c].copy_from_slice(&0x400u32.to_le_bytes());
        f[0x168..0x16c].copy_from_slice(&512u32.to_le_bytes());
        f[0x170..0x178].copy_from_slice(&disk_size.to_le_bytes());
        f[0x178..0x17c].copy_from_slice(&4096u32.to_le_bytes());
        f[0x180..0x184].copy_from_slice(&3u32.to_le_bytes());
        f[0x184..0x188].copy_from_slice(&2u32.to_le_bytes());
        for (i, e) in [1u32, BLOCK_UNALLOCATED, 0].iter().enumerate() {
            f[0x200 + 4 * i..0x204 + 4 * i].copy_from_slice(&e.to_le_bytes());
        }
        f.extend([0xaau8; 4096]); // data block 0 (guest block 2)
        f.extend([0xbbu8; 4096]); // data block 1 (guest block 0)
        f
    }

    fn open(bytes: Vec<u8>) -> Result<VdiImage, FormatError> {
        VdiImage::open(Arc::new(MemImage(bytes)))
    }

    #[test]
    fn reads_and_maps_blocks() {
        let img = open(sample(10_000)).unwrap();
        assert_eq!(img.virtual_size(), 10_000);
        let mut buf = vec![0u8; 10_000];
        img.read_at(&mut buf, 0).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0xbb));
        assert!(buf[4096..8192].iter().all(|&b| b == 0));
        assert!(buf[8192..].iter().all(|&b| b == 0xaa));
        let e = img.map(100, u64::MAX).unwrap();
        assert_eq!((e.len, e.kind), (3996, ExtentKind::Data));
        let e = img.map(4096, u64::MAX).unwrap();
        assert_eq!((e.len, e.kind), (4096, ExtentKind::Zero));
        let e = img.map(8192, u64::MAX).unwrap();
        assert_eq!((e.len, e.kind), (10_000 - 8192, ExtentKind::Data));
        assert!(img.map(10_000, 1).is_err());
        assert!(img.read_at(&mut [0u8; 2], 9_999).is_err());
    }

    #[test]
    fn zero_block_entry_reads_zero() {
        let mut f = sample(12_288);
        f[0x200..0x204].copy_from_slice(&BLOCK_ZERO.to_le_bytes());
        let img = open(f).unwrap();
        assert_eq!(img.map(0, 1 << 20).unwrap().kind, ExtentKind::Zero);
        assert_eq!(img.map(0, 1 << 20).unwrap().len, 8192);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let mut f = sample(10_000);
        f[0x4c..0x50].copy_from_slice(&TYPE_DIFF.to_le_bytes());
        assert!(matches!(
            open(f).err(),
            Some(FormatError::Unsupported { .. })
        ));

        let mut f = sample(10_000);
        f[0x200..0x204].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));

        let mut f = sample(10_000);
        f.truncate(0x400 + 4096 + 100);
        assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));

        let mut f = sample(10_000);
        f[0x170..0x178].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));

        let mut f = sample(10_000);
        f[0x180..0x184].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(open(f).err(), Some(FormatError::TooLarge { .. })));

        assert!(matches!(
            open(vec![0u8; 100]).err(),
            Some(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            open(vec![0u8; 4096]).err(),
            Some(FormatError::BadMagic { .. })
        ));
    }

    fn streamed(bytes: &[u8]) -> Result<Option<Vec<u8>>, FormatError> {
        stream_decode(Format::Vdi, bytes)
    }

    #[test]
    fn stream_plan_matches_the_reader() {
        for f in [sample(10_000), sample(12_288)] {
            let want = read_all(&open(f.clone()).unwrap()).unwrap();
            assert_eq!(streamed(&f).unwrap().unwrap(), want);
        }
        let f = sample(10_000);
        assert_eq!(
            plan(Format::Vdi, &f[..512]).unwrap(),
            Plan::Need(0x200 + 12)
        );
        let m = map_of(Format::Vdi, &f[..0x20c]);
        // Guest block 2 is stored first in the file.
        assert_eq!(
            runs(&m),
            vec![(0x400, 8192, 10_000 - 8192), (0x1400, 0, 4096)]
        );
        assert_eq!(m.zeros, vec![(4096, 4096)]);

        // Cut inside the last data block: truncated.
        assert!(matches!(
            streamed(&f[..f.len() - 10]),
            Err(FormatError::Truncated { .. })
        ));
        // Two blocks on one data block: fine for the reader, not for a stream.
        let mut g = f.clone();
        g[0x200..0x204].copy_from_slice(&0u32.to_le_bytes());
        assert!(open(g.clone()).is_ok());
        assert_rereading_refused(Format::Vdi, &g);
        // A differencing image is refused as by the reader.
        let mut g = f.clone();
        g[0x4c..0x50].copy_from_slice(&TYPE_DIFF.to_le_bytes());
        assert!(matches!(streamed(&g), Err(FormatError::Unsupported { .. })));
    }

    proptest! {
        #[test]
        fn parse_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_header(&bytes);
        }

        #[test]
        fn open_never_panics_on_mutations(pos in 0usize..0x208, val in any::<u8>(), len in 0usize..9000) {
            let mut f = sample(10_000);
            f[pos] = val;
            f.truncate(len.max(1));
            let stream = streamed(&f);
            if let Ok(img) = open(f) {
                let mut buf = vec![0u8; img.virtual_size().min(1 << 16) as usize];
                let read = img.read_at(&mut buf, 0);
                let _ = img.map(0, u64::MAX);
                // Where both decode the image, they agree.
                if let (Ok(()), Ok(Some(s))) = (read, stream) {
                    if img.virtual_size() <= 1 << 16 {
                        prop_assert_eq!(s, buf);
                    }
                }
            }
        }
    }
}
