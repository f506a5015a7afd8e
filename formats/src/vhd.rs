//! Microsoft VHD (Virtual PC) images, fixed and dynamic: the 512-byte "conectix" footer
//! (big-endian, one's-complement checksum), the dynamic disk header "cxsparse", the block
//! allocation table (BAT) and each block's sector bitmap (a clear bit reads as zero).
//!
//! Differencing disks need a parent and are refused. The virtual size is the footer's
//! current size. Every offset from the file is bounded before use; BAT entries are
//! checked against the file and the metadata at open. Reads only through [`ReadAt`].
//!
//! A dynamic disk that arrives as a stream is planned from the footer copy at offset 0,
//! the dynamic header and the BAT by the same loader (`stream_plan`, for
//! [`crate::streammap`]): each allocated block becomes one run, its bitmap first.

use std::sync::{Arc, Mutex};

use crate::blockmap::{guest_block_len, map_extent, read_stored, stored_kind};
use crate::fields::{be32, be64};
use crate::readat::read_exact;
use crate::streammap::{MapBuilder, Plan, Prefix, UNKNOWN_LEN};
use crate::{DiskImage, Extent, Format, FormatError, ReadAt};

const FORMAT: &str = "vhd";
pub const FOOTER_LEN: usize = 512;
pub const DYN_HEADER_LEN: usize = 1024;
pub(crate) const SECTOR: u64 = 512;
const VERSION_1_0: u32 = 0x0001_0000;
const TYPE_FIXED: u32 = 2;
const TYPE_DYNAMIC: u32 = 3;
const TYPE_DIFF: u32 = 4;
const BAT_UNUSED: u32 = 0xffff_ffff;
/// BAT bound: 16 Mi entries (64 MiB), far beyond VHD's 2 TiB limit at 2 MiB blocks.
const MAX_BAT_ENTRIES: u64 = 1 << 24;
const MAX_BLOCK_SIZE: u32 = 1 << 28;

/// The footer fields this reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdFooter {
    pub data_offset: u64,
    pub current_size: u64,
    pub disk_type: u32,
}

/// The dynamic disk header fields this reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynHeader {
    pub table_offset: u64,
    pub max_table_entries: u32,
    pub block_size: u32,
}

/// One's complement of the byte sum, skipping the 4-byte checksum field at `skip`.
pub fn checksum(bytes: &[u8], skip: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// The current size a fixed VHD's footer (`f`, the last 512 bytes of a raw disk plus
/// footer) gives, if `f` is a valid footer of a fixed disk (type 2).
pub fn fixed_footer_size(f: &[u8]) -> Option<u64> {
    parse_footer(f)
        .ok()
        .filter(|f| f.disk_type == 2)
        .map(|f| f.current_size)
}

/// Parses and checks a 512-byte footer (cookie, checksum, version). Pure: no IO.
pub fn parse_footer(buf: &[u8]) -> Result<VhdFooter, FormatError> {
    let Some(buf) = buf.get(..FOOTER_LEN) else {
        return Err(FormatError::Truncated {
            what: "VHD footer".into(),
            offset: buf.len() as u64,
        });
    };
    if !buf.starts_with(b"conectix") {
        return Err(FormatError::BadMagic { format: FORMAT });
    }
    let stored = be32(buf, 64);
    let computed = checksum(buf, 64);
    if stored != computed {
        return Err(FormatError::corrupt(
            FORMAT,
            format!("footer checksum {stored:#010x} does not match computed {computed:#010x}"),
        ));
    }
    let version = be32(buf, 12);
    if version >> 16 != 1 {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("file format version {version:#010x}"),
        ));
    }
    Ok(VhdFooter {
        data_offset: be64(buf, 16),
        current_size: be64(buf, 48),
        disk_type: be32(buf, 60),
    })
}

/// Parses and checks a 1024-byte dynamic disk header. Pure: no IO.
pub fn parse_dyn_header(buf: &[u8]) -> Result<DynHeader, FormatError> {
    let Some(buf) = buf.get(..DYN_HEADER_LEN) else {
        return Err(FormatError::Truncated {
            what: "VHD dynamic disk header".into(),
            offset: buf.len() as u64,
        });
    };
    if !buf.starts_with(b"cxsparse") {
        return Err(FormatError::corrupt(
            FORMAT,
            "dynamic disk header lacks its \"cxsparse\" cookie",
        ));
    }
    let stored = be32(buf, 36);
    let computed = checksum(buf, 36);
    if stored != computed {
        return Err(FormatError::corrupt(
            FORMAT,
            format!(
                "dynamic header checksum {stored:#010x} does not match computed {computed:#010x}"
            ),
        ));
    }
    let version = be32(buf, 24);
    if version != VERSION_1_0 {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("dynamic header version {version:#010x}"),
        ));
    }
    let block_size = be32(buf, 32);
    if !block_size.is_power_of_two() || !(512..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("block size {block_size}"),
        ));
    }
    Ok(DynHeader {
        table_offset: be64(buf, 16),
        max_table_entries: be32(buf, 28),
        block_size,
    })
}

/// A dynamic disk's allocation state.
struct Dynamic {
    block_size: u64,
    /// Bytes of sector bitmap in front of each block (whole sectors).
    bitmap_len: u64,
    /// Per block: file offset of its sector bitmap, or `None` when unallocated.
    bat: Vec<Option<u64>>,
    /// The last bitmap read, since sequential reads hit the same block many times.
    cache: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

/// A fixed or dynamic VHD opened for reading.
pub struct VhdImage {
    src: Arc<dyn ReadAt>,
    size: u64,
    /// `None` for a fixed disk (guest offset N is file offset N).
    dynamic: Option<Dynamic>,
}

impl VhdImage {
    /// Opens a VHD: `src` must cover the whole file, since the footer is at its end.
    pub fn open(src: Arc<dyn ReadAt>) -> Result<Self, FormatError> {
        let file_len = src
            .len()
            .map_err(|e| FormatError::io("reading VHD file length", e))?;
        if file_len < FOOTER_LEN as u64 {
            return Err(FormatError::Truncated {
                what: "VHD footer".into(),
                offset: 0,
            });
        }
        let mut buf = [0u8; FOOTER_LEN];
        read_exact(
            FORMAT,
            &*src,
            &mut buf,
            file_len - FOOTER_LEN as u64,
            "footer",
        )?;
        if !buf.starts_with(b"conectix") {
            // A dynamic disk whose trailing footer was lost still has the copy at 0.
            read_exact(FORMAT, &*src, &mut buf, 0, "footer copy")?;
        }
        let footer = parse_footer(&buf)?;
        let size = footer.current_size;
        let dynamic = if is_dynamic(&footer)? {
            Some(open_dynamic(&*src, &footer, file_len)?)
        } else {
            if size > file_len - FOOTER_LEN as u64 {
                return Err(FormatError::corrupt(
                    FORMAT,
                    format!("fixed disk of {size} bytes does not fit in a {file_len}-byte file"),
                ));
            }
            None
        };
        Ok(VhdImage { src, size, dynamic })
    }
}

/// True for a dynamic disk, false for a fixed one; other disk types are refused.
fn is_dynamic(footer: &VhdFooter) -> Result<bool, FormatError> {
    match footer.disk_type {
        TYPE_FIXED => Ok(false),
        TYPE_DYNAMIC => Ok(true),
        TYPE_DIFF => Err(FormatError::unsupported(
            FORMAT,
            "differencing disk (needs its parent image)",
        )),
        other => Err(FormatError::unsupported(
            FORMAT,
            format!("disk type {other}"),
        )),
    }
}

/// Plans a dynamic disk arriving as a stream (see [`crate::streammap`]): the footer copy
/// at offset 0 stands for the footer at the end, which a stream reaches last.
pub(crate) fn stream_plan(src: &Prefix<'_>) -> Result<Plan, FormatError> {
    let mut buf = [0u8; FOOTER_LEN];
    read_exact(FORMAT, src, &mut buf, 0, "footer copy")?;
    let footer = match parse_footer(&buf) {
        Ok(f) => f,
        // The reader would still find the footer at the end of the file.
        Err(e) => {
            return Ok(Plan::NotStreamable(format!(
                "the footer copy at its start is not usable ({e})"
            )))
        }
    };
    if !is_dynamic(&footer)? {
        return Ok(Plan::NotStreamable(
            "a fixed disk keeps its footer at the end".into(),
        ));
    }
    let d = open_dynamic(src, &footer, UNKNOWN_LEN)?;
    let size = footer.current_size;
    let bitmap_len = u32::try_from(d.bitmap_len)
        .map_err(|_| FormatError::corrupt(FORMAT, "sector bitmap is too large"))?;
    let mut map = MapBuilder::new(FORMAT, size);
    for (block, entry) in (0u64..).zip(&d.bat) {
        let guest = block * d.block_size;
        let len = guest_block_len(block, d.block_size, size);
        match entry {
            Some(at) => map.masked(guest, len, *at, bitmap_len),
            None => map.zero(guest, len),
        }
    }
    map.finish()
}

/// Whether `sector` of a block is present in its sector `bitmap` (a clear bit, or a
/// sector past the bitmap, reads as zero).
pub(crate) fn sector_present(bitmap: &[u8], sector: u64) -> bool {
    let byte = usize::try_from(sector / 8)
        .ok()
        .and_then(|i| bitmap.get(i))
        .copied()
        .unwrap_or(0);
    byte & (0x80 >> (sector % 8)) != 0
}

fn open_dynamic(
    src: &dyn ReadAt,
    footer: &VhdFooter,
    file_len: u64,
) -> Result<Dynamic, FormatError> {
    let hdr_at = footer.data_offset;
    if hdr_at < FOOTER_LEN as u64 || hdr_at.saturating_add(DYN_HEADER_LEN as u64) > file_len {
        return Err(FormatError::corrupt(
            FORMAT,
            format!("dynamic header offset {hdr_at} is outside the file ({file_len} bytes)"),
        ));
    }
    let mut hbuf = [0u8; DYN_HEADER_LEN];
    read_exact(FORMAT, src, &mut hbuf, hdr_at, "dynamic disk header")?;
    let dh = parse_dyn_header(&hbuf)?;
    let block_size = u64::from(dh.block_size);
    let blocks = footer.current_size.div_ceil(block_size);
    if blocks > u64::from(dh.max_table_entries) {
        return Err(FormatError::corrupt(
            FORMAT,
            format!(
                "BAT has {} entries but {} bytes need {blocks} blocks",
                dh.max_table_entries, footer.current_size
            ),
        ));
    }
    if blocks > MAX_BAT_ENTRIES {
        return Err(FormatError::TooLarge {
            format: FORMAT,
            what: "block allocation table".into(),
            value: blocks,
            limit: MAX_BAT_ENTRIES,
        });
    }
    let bat_len = blocks * 4;
    let bat_at = dh.table_offset;
    if bat_at < FOOTER_LEN as u64 || bat_at.saturating_add(bat_len) > file_len {
        return Err(FormatError::corrupt(
            FORMAT,
            format!("BAT at offset {bat_at} ({bat_len} bytes) is outside the file"),
        ));
    }
    let mut raw = vec![0u8; bat_len as usize];
    read_exact(FORMAT, src, &mut raw, bat_at, "block allocation table")?;
    let bitmap_len = (block_size / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
    let layout = BlockLayout {
        size: footer.current_size,
        block_size,
        bitmap_len,
        file_len,
        metadata: [
            (0, FOOTER_LEN as u64),
            (hdr_at, DYN_HEADER_LEN as u64),
            (bat_at, bat_len),
        ],
    };
    let bat = raw
        .chunks_exact(4)
        .enumerate()
        .map(|(i, e)| layout.check_entry(i as u64, be32(e, 0)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Dynamic {
        block_size,
        bitmap_len,
        bat,
        cache: Mutex::new(None),
    })
}

/// What a BAT entry is checked against. Pure.
struct BlockLayout {
    size: u64,
    block_size: u64,
    bitmap_len: u64,
    file_len: u64,
    /// (offset, length) of the footer copy, dynamic header and BAT.
    metadata: [(u64, u64); 3],
}

impl BlockLayout {
    fn check_entry(&self, block: u64, entry: u32) -> Result<Option<u64>, FormatError> {
        if entry == BAT_UNUSED {
            return Ok(None);
        }
        let start = u64::from(entry) * SECTOR;
        let data = guest_block_len(block, self.block_size, self.size);
        let end = start + self.bitmap_len + data;
        if end > self.file_len {
            return Err(FormatError::corrupt(
                FORMAT,
                format!(
                    "BAT entry {block} points at offset {start}, past the end of the file ({})",
                    self.file_len
                ),
            ));
        }
        if let Some((at, len)) = self
            .metadata
            .iter()
            .find(|(at, len)| start < at + len && *at < end)
        {
            return Err(FormatError::corrupt(
                FORMAT,
                format!("BAT entry {block} (offset {start}) overlaps metadata at {at}+{len}"),
            ));
        }
        Ok(Some(start))
    }
}

/// Where a guest range lives: in the file, or zero; up to `end` (exclusive guest offset).
struct Piece {
    at: Option<u64>,
    end: u64,
}

impl Dynamic {
    fn bitmap(&self, src: &dyn ReadAt, block: u64, at: u64) -> Result<Arc<Vec<u8>>, FormatError> {
        if let Ok(guard) = self.cache.lock() {
            if let Some((b, bm)) = guard.as_ref() {
                if *b == block {
                    return Ok(bm.clone());
                }
            }
        }
        let mut bm = vec![0u8; self.bitmap_len as usize];
        read_exact(FORMAT, src, &mut bm, at, "sector bitmap")?;
        let bm = Arc::new(bm);
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some((block, bm.clone()));
        }
        Ok(bm)
    }

    /// The run of sectors around guest `offset` that share one state, ending at most at
    /// the block end or `size`.
    fn piece(&self, src: &dyn ReadAt, offset: u64, size: u64) -> Result<Piece, FormatError> {
        let block = offset / self.block_size;
        let block_start = block * self.block_size;
        let block_end = (block_start + self.block_size).min(size);
        let entry = usize::try_from(block)
            .ok()
            .and_then(|i| self.bat.get(i).copied())
            .flatten();
        let Some(bitmap_at) = entry else {
            return Ok(Piece {
                at: None,
                end: block_end,
            });
        };
        let bm = self.bitmap(src, block, bitmap_at)?;
        let present = |sector: u64| sector_present(&bm, sector);
        let first = (offset - block_start) / SECTOR;
        let state = present(first);
        let mut sector = first + 1;
        while block_start + sector * SECTOR < block_end && present(sector) == state {
            sector += 1;
        }
        let end = (block_start + sector * SECTOR).min(block_end);
        let at = state.then(|| bitmap_at + self.bitmap_len + (offset - block_start));
        Ok(Piece { at, end })
    }
}

impl VhdImage {
    fn piece(&self, offset: u64) -> Result<Piece, FormatError> {
        match &self.dynamic {
            None => Ok(Piece {
                at: Some(offset),
                end: self.size,
            }),
            Some(d) => d.piece(&*self.src, offset, self.size),
        }
    }

    /// True for a dynamic (sparse) disk.
    pub fn is_dynamic(&self) -> bool {
        self.dynamic.is_some()
    }
}

impl DiskImage for VhdImage {
    fn format(&self) -> Format {
        Format::Vhd
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        map_extent(offset, max_len, self.size, |pos| {
            let p = self.piece(pos)?;
            Ok((stored_kind(p.at), p.end))
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), FormatError> {
        read_stored(&*self.src, FORMAT, "data", buf, offset, self.size, |pos| {
            let p = self.piece(pos)?;
            Ok((p.at, p.end))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readat::MemImage;
    use crate::streammap::plan;
    use crate::streammap::testing::{assert_rereading_refused, map_of, read_all, stream_decode};
    use crate::ExtentKind;
    use proptest::prelude::*;

    fn footer(size: u64, disk_type: u32, data_offset: u64) -> [u8; FOOTER_LEN] {
        let mut f = [0u8; FOOTER_LEN];
        f[..8].copy_from_slice(b"conectix");
        f[12..16].copy_from_slice(&VERSION_1_0.to_be_bytes());
        f[16..24].copy_from_slice(&data_offset.to_be_bytes());
        f[40..48].copy_from_slice(&size.to_be_bytes());
        f[48..56].copy_from_slice(&size.to_be_bytes());
        f[60..64].copy_from_slice(&disk_type.to_be_bytes());
        let c = checksum(&f, 64);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// A dynamic disk of 3 blocks of 4 KiB: block 0 allocated with sectors 0-1 present,
    /// block 1 unallocated, block 2 allocated and full.
    fn dynamic_sample() -> Vec<u8> {
        let size = 3 * 4096;
        let mut f = footer(size, TYPE_DYNAMIC, 512).to_vec();
        let mut dh = [0u8; DYN_HEADER_LEN];
        dh[..8].copy_from_slice(b"cxsparse");
        dh[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        dh[16..24].copy_from_slice(&1536u64.to_be_bytes());
        dh[24..28].copy_from_slice(&VERSION_1_0.to_be_bytes());
        dh[28..32].copy_from_slice(&3u32.to_be_bytes());
        dh[32..36].copy_from_slice(&4096u32.to_be_bytes());
        let c = checksum(&dh, 36);
        dh[36..40].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&dh);
        let mut bat = [0xffu8; 512];
        bat[..4].copy_from_slice(&4u32.to_be_bytes()); // block 0 at sector 4
        bat[8..12].copy_from_slice(&13u32.to_be_bytes()); // block 2 at sector 13
        f.extend_from_slice(&bat);
        let mut bm = [0u8; 512];
        bm[0] = 0xc0;
        f.extend_from_slice(&bm);
        f.extend([0x11u8; 4096]);
        let mut bm = [0u8; 512];
        bm[0] = 0xff;
        f.extend_from_slice(&bm);
        f.extend([0x22u8; 4096]);
        f.extend_from_slice(&footer(size, TYPE_DYNAMIC, 512));
        f
    }

    /// Recomputes the dynamic header and trailing footer checksums after a mutation.
    fn refresh_checksums(f: &mut [u8]) {
        let c = checksum(&f[512..1536], 36);
        f[512 + 36..512 + 40].copy_from_slice(&c.to_be_bytes());
        let n = f.len();
        let c = checksum(&f[n - 512..], 64);
        f[n - 512 + 64..n - 512 + 68].copy_from_slice(&c.to_be_bytes());
    }

    fn open(bytes: Vec<u8>) -> Result<VhdImage, FormatError> {
        VhdImage::open(Arc::new(MemImage(bytes)))
    }

    #[test]
    fn fixed_disk_reads_through() {
        let mut f: Vec<u8> = (0..2048u32).map(|i| i as u8).collect();
        f.extend_from_slice(&footer(2048, TYPE_FIXED, u64::MAX));
        let img = open(f.clone()).unwrap();
        assert!(!img.is_dynamic());
        let mut buf = vec![0u8; 2048];
        img.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..], &f[..2048]);
        assert_eq!(img.map(5, 1 << 30).unwrap().len, 2043);
    }

    #[test]
    fn dynamic_disk_honours_bat_and_bitmap() {
        let img = open(dynamic_sample()).unwrap();
        assert_eq!(img.virtual_size(), 3 * 4096);
        let mut buf = vec![0u8; 3 * 4096];
        img.read_at(&mut buf, 0).unwrap();
        assert!(buf[..1024].iter().all(|&b| b == 0x11));
        assert!(buf[1024..8192].iter().all(|&b| b == 0));
        assert!(buf[8192..].iter().all(|&b| b == 0x22));
        let e = img.map(0, u64::MAX).unwrap();
        assert_eq!((e.len, e.kind), (1024, ExtentKind::Data));
        let e = img.map(1024, u64::MAX).unwrap();
        assert_eq!((e.len, e.kind), (8192 - 1024, ExtentKind::Zero));
        let e = img.map(8192 + 7, 100).unwrap();
        assert_eq!((e.len, e.kind), (100, ExtentKind::Data));
    }

    #[test]
    fn hostile_vhds_are_refused() {
        let mut f = dynamic_sample();
        let n = f.len();
        f[n - 512 + 70] ^= 1; // footer body, checksum now wrong
        assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));

        let mut f = dynamic_sample();
        f[1536..1540].copy_from_slice(&0x1000u32.to_be_bytes()); // block 0 past EOF
        assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));

        let mut f = dynamic_sample();
        f[1536..1540].copy_from_slice(&1u32.to_be_bytes()); // block 0 over the header
        assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));

        let mut f = dynamic_sample();
        f[512 + 40] ^= 1; // dynamic header checksum
        assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));

        let mut f = dynamic_sample();
        let n = f.len();
        let diff = footer(3 * 4096, TYPE_DIFF, 512);
        f[n - 512..].copy_from_slice(&diff);
        assert!(matches!(
            open(f).err(),
            Some(FormatError::Unsupported { .. })
        ));

        let mut fixed = vec![0u8; 100];
        fixed.extend_from_slice(&footer(4096, TYPE_FIXED, u64::MAX));
        assert!(matches!(
            open(fixed).err(),
            Some(FormatError::Corrupt { .. })
        ));

        assert!(matches!(
            open(vec![0u8; 10]).err(),
            Some(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            open(vec![0u8; 4096]).err(),
            Some(FormatError::BadMagic { .. })
        ));
    }

    fn streamed(bytes: &[u8]) -> Result<Option<Vec<u8>>, FormatError> {
        stream_decode(Format::Vhd, bytes)
    }

    #[test]
    fn stream_plan_matches_the_reader() {
        let f = dynamic_sample();
        let want = read_all(&open(f.clone()).unwrap()).unwrap();
        assert_eq!(streamed(&f).unwrap().unwrap(), want);
        // Only what the tables need is read before the data: up to the end of the BAT
        // entries that cover the disk.
        assert_eq!(plan(Format::Vhd, &f[..1536]).unwrap(), Plan::Need(1548));
        let m = map_of(Format::Vhd, &f[..1548]);
        assert_eq!(m.runs.len(), 2);
        assert_eq!((m.runs[0].host, m.runs[0].bitmap_len), (2048, 512));
        assert_eq!(m.zeros, vec![(4096, 4096)]);

        // Cut inside the last block's data: truncated.
        let cut = &f[..f.len() - 512 - 100];
        assert!(matches!(streamed(cut), Err(FormatError::Truncated { .. })));

        // A damaged footer copy: the reader uses the footer at the end; a stream cannot.
        let mut g = f.clone();
        g[70] ^= 1;
        assert_eq!(streamed(&g).unwrap(), None);

        // The BAT after the data: the whole file is needed first, and the result matches.
        let mut g = f[..f.len() - 512].to_vec();
        let bat_at = g.len() as u64;
        g.extend_from_slice(&f[1536..2048]);
        g[1536..2048].fill(0);
        g.extend_from_slice(&f[f.len() - 512..]);
        g[512 + 16..512 + 24].copy_from_slice(&bat_at.to_be_bytes());
        refresh_checksums(&mut g);
        let want = read_all(&open(g.clone()).unwrap()).unwrap();
        assert_eq!(
            plan(Format::Vhd, &g[..2048]).unwrap(),
            Plan::Need(bat_at + 12)
        );
        assert_eq!(streamed(&g).unwrap().unwrap(), want);

        // Two blocks on the same file bytes: the reader reads them twice, a stream cannot.
        let mut g = f.clone();
        g[1540..1544].copy_from_slice(&4u32.to_be_bytes());
        assert!(open(g.clone()).is_ok());
        assert_rereading_refused(Format::Vhd, &g);

        // A differencing disk is refused as by the reader.
        let mut g = f.clone();
        g[..512].copy_from_slice(&footer(3 * 4096, TYPE_DIFF, 512));
        assert!(matches!(streamed(&g), Err(FormatError::Unsupported { .. })));
        // A fixed disk with a footer copy at 0 is left to the reader.
        let mut g = f.clone();
        g[..512].copy_from_slice(&footer(3 * 4096, TYPE_FIXED, 512));
        assert_eq!(streamed(&g).unwrap(), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = parse_footer(&bytes);
            let _ = parse_dyn_header(&bytes);
        }

        #[test]
        fn parsers_never_panic_with_cookies(mut bytes in proptest::collection::vec(any::<u8>(), 1024..1100)) {
            bytes[..8].copy_from_slice(b"conectix");
            let _ = parse_footer(&bytes);
            bytes[..8].copy_from_slice(b"cxsparse");
            let _ = parse_dyn_header(&bytes);
        }

        #[test]
        fn open_never_panics_on_mutations(pos in 0usize..2048, val in any::<u8>(), cut in 0usize..400) {
            let mut f = dynamic_sample();
            f[pos] = val;
            refresh_checksums(&mut f);
            if cut < 200 {
                f.truncate(f.len() - cut);
            }
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
