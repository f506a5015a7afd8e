//! VMware VMDK images made of one hosted sparse extent: `monolithicSparse` and
//! `streamOptimized` (deflate-compressed grains behind grain markers, the grain directory
//! possibly found through a footer at the end of the file). Guest offsets go through the
//! grain directory (GD, loaded at open) and grain tables (GTs, loaded on demand and
//! cached) to grains.
//!
//! Other create types need further files (flat extents, split sets, VMFS) and delta links
//! need a parent: both are refused naming what was found. The redundant GD is ignored.
//! Every offset read from the file is checked against the file length before it is
//! used; nothing here writes or opens paths. Reads only through [`ReadAt`].
//!
//! A monolithicSparse image that arrives as a stream is planned by the same loaders
//! (`stream_plan`, for [`crate::streammap`]): header, descriptor, grain directory and
//! every grain table come before the grains. Compressed grains (read in one pass by the
//! importer's marker walk) and a directory behind a footer are not planned.

mod descriptor;
mod header;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::blockmap::{map_extent, read_pieces};
use crate::fields::{le32, le64};
use crate::readat::read_exact;
use crate::streammap::{MapBuilder, Plan, Prefix, UNKNOWN_LEN};
use crate::{DiskImage, Extent, ExtentKind, Format, FormatError, ReadAt};
use header::FORMAT;

pub use descriptor::{parse_descriptor, Descriptor, ExtentLine, MAX_DESCRIPTOR_LEN};
pub use header::{
    parse_footer, parse_marker, parse_sparse_header, Marker, SparseHeader, GD_AT_END, MARKER_EOS,
    MARKER_FOOTER, MARKER_GD, MARKER_GT, SECTOR,
};

/// GD bound: 16 Mi entries (64 MiB in memory).
const MAX_GD_ENTRIES: u64 = 1 << 24;
/// Grain tables kept in memory before the cache is dropped (2 KiB each at 512 entries).
const MAX_CACHED_GTS: usize = 4096;
/// A descriptor-only file is read up to this many bytes to name its create type.
const TEXT_DESCRIPTOR_PROBE: usize = 64 * 1024;
/// Create types this reader understands (one sparse extent in this very file).
const SUPPORTED_CREATE_TYPES: [&str; 2] = ["monolithicSparse", "streamOptimized"];

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::corrupt(FORMAT, detail)
}

/// Where a grain's guest bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grain {
    /// Never written: reads as zero (no parent is supported).
    Unallocated,
    /// Explicitly zero (GTE 1 with the zeroed-grain flag).
    Zero,
    /// Stored as is at this file offset.
    Plain(u64),
    /// Stored deflate-compressed at this file offset (behind a marker if markers are on).
    Compressed(u64),
}

/// A VMDK hosted sparse extent opened for reading.
pub struct VmdkImage {
    src: Arc<dyn ReadAt>,
    header: SparseHeader,
    create_type: Option<String>,
    file_len: u64,
    /// End of the header and embedded descriptor: no table or grain may start below.
    meta_end: u64,
    size: u64,
    grain_bytes: u64,
    /// GT file offsets per GD entry (`None`: the whole GT is unallocated).
    gd: Vec<Option<u64>>,
    gts: Mutex<HashMap<usize, Arc<Vec<u32>>>>,
    /// The last inflated grain, since callers read a grain in several pieces.
    last_grain: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl VmdkImage {
    /// Opens a monolithicSparse or streamOptimized VMDK.
    pub fn open(src: Arc<dyn ReadAt>) -> Result<Self, FormatError> {
        let file_len = src
            .len()
            .map_err(|e| FormatError::io("reading VMDK file length", e))?;
        let mut first = [0u8; SECTOR as usize];
        let n = first
            .len()
            .min(usize::try_from(file_len).unwrap_or(usize::MAX));
        read_exact(FORMAT, &*src, &mut first[..n], 0, "header")?;
        if !first.starts_with(b"KDMV") {
            return Err(refuse_text_descriptor(&*src, &first[..n], file_len));
        }
        let mut header = parse_sparse_header(&first[..n])?;
        if header.gd_offset == GD_AT_END {
            header = read_footer(&*src, file_len)?;
        }
        let create_type = read_descriptor(&*src, &header, file_len)?;
        let meta_end = meta_end(&header);
        let gd = read_gd(&*src, &header, meta_end, file_len)?;
        let grain_bytes = header.grain_size * SECTOR;
        Ok(VmdkImage {
            src,
            size: header.capacity * SECTOR,
            header,
            create_type,
            file_len,
            meta_end,
            grain_bytes,
            gd,
            gts: Mutex::new(HashMap::new()),
            last_grain: Mutex::new(None),
        })
    }

    /// The descriptor's `createType` (`None` if the extent embeds no descriptor).
    pub fn create_type(&self) -> Option<&str> {
        self.create_type.as_deref()
    }

    /// True if grains are deflate-compressed (streamOptimized).
    pub fn is_compressed(&self) -> bool {
        self.header.compressed()
    }
}

/// The error for a file that is not a sparse extent: a descriptor naming other files, or
/// not a VMDK at all.
fn refuse_text_descriptor(src: &dyn ReadAt, head: &[u8], file_len: u64) -> FormatError {
    if !head.starts_with(b"# Disk DescriptorFile") {
        return FormatError::BadMagic { format: FORMAT };
    }
    let len = file_len.min(TEXT_DESCRIPTOR_PROBE as u64) as usize;
    let mut text = vec![0u8; len];
    if let Err(e) = read_exact(FORMAT, src, &mut text, 0, "descriptor") {
        return e;
    }
    let create_type = parse_descriptor(&text)
        .ok()
        .and_then(|d| d.create_type)
        .unwrap_or_else(|| "(none)".into());
    FormatError::unsupported(
        FORMAT,
        format!(
            "createType {create_type:?}: a descriptor file whose data lives in other extent files"
        ),
    )
}

fn read_footer(src: &dyn ReadAt, file_len: u64) -> Result<SparseHeader, FormatError> {
    let at = file_len
        .checked_sub(3 * SECTOR)
        .ok_or_else(|| FormatError::Truncated {
            what: "VMDK stream footer".into(),
            offset: file_len,
        })?;
    let mut tail = vec![0u8; 3 * SECTOR as usize];
    read_exact(FORMAT, src, &mut tail, at, "stream footer")?;
    parse_footer(&tail)
}

/// Reads the embedded descriptor (if any) and refuses what this reader cannot serve.
fn read_descriptor(
    src: &dyn ReadAt,
    h: &SparseHeader,
    file_len: u64,
) -> Result<Option<String>, FormatError> {
    if h.descriptor_offset == 0 || h.descriptor_size == 0 {
        return Ok(None);
    }
    let limit = (MAX_DESCRIPTOR_LEN as u64) / SECTOR;
    if h.descriptor_size > limit {
        return Err(FormatError::TooLarge {
            format: FORMAT,
            what: "embedded descriptor (sectors)".into(),
            value: h.descriptor_size,
            limit,
        });
    }
    let at = h.descriptor_offset.saturating_mul(SECTOR);
    let len = h.descriptor_size * SECTOR;
    if at.saturating_add(len) > file_len {
        return Err(corrupt(format!(
            "descriptor at {at}+{len} is past the end of the file ({file_len})"
        )));
    }
    let mut text = vec![0u8; len as usize];
    read_exact(FORMAT, src, &mut text, at, "descriptor")?;
    let d = parse_descriptor(&text)?;
    let create_type = d
        .create_type
        .clone()
        .ok_or_else(|| corrupt("descriptor has no createType"))?;
    if !SUPPORTED_CREATE_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&create_type))
    {
        return Err(FormatError::unsupported(
            FORMAT,
            format!("createType {create_type:?} (only monolithicSparse and streamOptimized)"),
        ));
    }
    if d.has_parent() {
        let parent = d.parent_file_name_hint.as_deref().unwrap_or("(unnamed)");
        return Err(FormatError::unsupported(
            FORMAT,
            format!("delta disk linked to parent {parent:?} (needs its parent image)"),
        ));
    }
    match d.extents.as_slice() {
        [e] if e.kind.eq_ignore_ascii_case("SPARSE") => Ok(Some(create_type)),
        [e] => Err(FormatError::unsupported(
            FORMAT,
            format!("extent of type {:?} in a {create_type} image", e.kind),
        )),
        other => Err(FormatError::unsupported(
            FORMAT,
            format!("{} extents (only a single sparse extent)", other.len()),
        )),
    }
}

/// Where the header and embedded descriptor end.
fn meta_end(h: &SparseHeader) -> u64 {
    if h.descriptor_offset == 0 || h.descriptor_size == 0 {
        return SECTOR;
    }
    let desc_end = h
        .descriptor_offset
        .saturating_add(h.descriptor_size)
        .saturating_mul(SECTOR);
    desc_end.max(SECTOR)
}

fn read_gd(
    src: &dyn ReadAt,
    h: &SparseHeader,
    meta_end: u64,
    file_len: u64,
) -> Result<Vec<Option<u64>>, FormatError> {
    let entries = h.gd_entries();
    if entries > MAX_GD_ENTRIES {
        return Err(FormatError::TooLarge {
            format: FORMAT,
            what: "grain directory".into(),
            value: entries,
            limit: MAX_GD_ENTRIES,
        });
    }
    let at = h.gd_offset.saturating_mul(SECTOR);
    let len = entries * 4;
    if at < meta_end || at.saturating_add(len) > file_len {
        return Err(corrupt(format!(
            "grain directory at sector {} ({entries} entries) is outside the file",
            h.gd_offset
        )));
    }
    let mut raw = vec![0u8; len as usize];
    read_exact(FORMAT, src, &mut raw, at, "grain directory")?;
    let gt_len = u64::from(h.num_gtes_per_gt) * 4;
    raw.chunks_exact(4)
        .enumerate()
        .map(|(i, e)| match u64::from(le32(e, 0)) {
            0 => Ok(None),
            sector if sector * SECTOR < meta_end => Err(corrupt(format!(
                "grain directory entry {i} points at sector {sector}, inside the header"
            ))),
            sector if sector * SECTOR + gt_len <= file_len => Ok(Some(sector * SECTOR)),
            sector => Err(corrupt(format!(
                "grain directory entry {i} points at sector {sector}, past the end of the file"
            ))),
        })
        .collect()
}

/// Reads the grain table at file offset `at`.
fn read_gt(src: &dyn ReadAt, h: &SparseHeader, at: u64) -> Result<Vec<u32>, FormatError> {
    let mut raw = vec![0u8; h.num_gtes_per_gt as usize * 4];
    read_exact(FORMAT, src, &mut raw, at, "grain table")?;
    Ok(raw.chunks_exact(4).map(|e| le32(e, 0)).collect())
}

/// What grain table entry `entry` of grain `grain_index` says, for a grain whose guest
/// bytes end at `end` (the grain end, or the disk end) in a file of `file_len` bytes
/// whose header and descriptor end at `meta_end`. Pure.
fn classify_grain(
    h: &SparseHeader,
    meta_end: u64,
    file_len: u64,
    grain_index: u64,
    entry: u32,
    end: u64,
) -> Result<Grain, FormatError> {
    let sector = u64::from(entry);
    match sector {
        0 => return Ok(Grain::Unallocated),
        1 if h.zero_grains() => return Ok(Grain::Zero),
        _ => {}
    }
    let at = sector * SECTOR;
    // Uncompressed grains need the guest-visible bytes in the file; compressed ones are
    // bounded when their marker is read.
    let need = if h.compressed() {
        1
    } else {
        end - grain_index * h.grain_size * SECTOR
    };
    if at < meta_end {
        return Err(corrupt(format!(
            "grain {grain_index} at sector {sector} is inside the header"
        )));
    }
    if at + need > file_len {
        return Err(corrupt(format!(
            "grain {grain_index} at sector {sector} is past the end of the file ({file_len})"
        )));
    }
    Ok(if h.compressed() {
        Grain::Compressed(at)
    } else {
        Grain::Plain(at)
    })
}

/// Plans a monolithicSparse image arriving as a stream (see [`crate::streammap`]).
pub(crate) fn stream_plan(src: &Prefix<'_>) -> Result<Plan, FormatError> {
    let mut first = [0u8; SECTOR as usize];
    read_exact(FORMAT, src, &mut first, 0, "header")?;
    if !first.starts_with(b"KDMV") {
        return Err(refuse_text_descriptor(src, &first, UNKNOWN_LEN));
    }
    let h = parse_sparse_header(&first)?;
    if h.gd_offset == GD_AT_END {
        return Ok(Plan::NotStreamable(
            "its grain directory is behind a footer at the end of the file".into(),
        ));
    }
    if h.compressed() {
        return Ok(Plan::NotStreamable(
            "its grains are compressed without grain markers".into(),
        ));
    }
    read_descriptor(src, &h, UNKNOWN_LEN)?;
    let meta_end = meta_end(&h);
    let gd = read_gd(src, &h, meta_end, UNKNOWN_LEN)?;
    let gt_len = u64::from(h.num_gtes_per_gt) * 4;
    // Every table at once, rather than one more round per table.
    if let Some(end) = gd.iter().flatten().map(|at| at + gt_len).max() {
        src.require(end, "VMDK grain tables")?;
    }
    let size = h.capacity * SECTOR;
    let grain_bytes = h.grain_size * SECTOR;
    let per_gt = u64::from(h.num_gtes_per_gt);
    let mut map = MapBuilder::new(FORMAT, size);
    for (gd_index, gt_at) in (0u64..).zip(&gd) {
        let start = gd_index * h.gt_coverage();
        let Some(gt_at) = gt_at else {
            map.zero(start, (start + h.gt_coverage()).min(size) - start);
            continue;
        };
        for (i, entry) in (0u64..).zip(read_gt(src, &h, *gt_at)?) {
            let grain_index = gd_index * per_gt + i;
            let guest = grain_index * grain_bytes;
            if guest >= size {
                break;
            }
            let end = (guest + grain_bytes).min(size);
            match classify_grain(&h, meta_end, UNKNOWN_LEN, grain_index, entry, end)? {
                Grain::Plain(at) => map.data(guest, end - guest, at),
                Grain::Unallocated | Grain::Zero => map.zero(guest, end - guest),
                Grain::Compressed(_) => {
                    return Ok(Plan::NotStreamable("its grains are compressed".into()))
                }
            }
        }
    }
    map.finish()
}

impl VmdkImage {
    fn grain_table(&self, gd_index: usize, at: u64) -> Result<Arc<Vec<u32>>, FormatError> {
        if let Some(gt) = self.gts.lock().ok().and_then(|c| c.get(&gd_index).cloned()) {
            return Ok(gt);
        }
        let gt = Arc::new(read_gt(&*self.src, &self.header, at)?);
        if let Ok(mut cache) = self.gts.lock() {
            if cache.len() >= MAX_CACHED_GTS {
                cache.clear();
            }
            cache.insert(gd_index, gt.clone());
        }
        Ok(gt)
    }

    /// The grain holding guest `offset` and the guest offset where its state ends (the
    /// grain end, or the end of the whole GT's range when the GT is unallocated).
    fn grain(&self, offset: u64) -> Result<(Grain, u64), FormatError> {
        let coverage = self.header.gt_coverage();
        let gd_index = usize::try_from(offset / coverage).unwrap_or(usize::MAX);
        let Some(gt_at) = self.gd.get(gd_index).copied().flatten() else {
            let end = (offset / coverage + 1) * coverage;
            return Ok((Grain::Unallocated, end.min(self.size)));
        };
        let gt = self.grain_table(gd_index, gt_at)?;
        let grain_index = offset / self.grain_bytes;
        let in_gt = (grain_index % u64::from(self.header.num_gtes_per_gt)) as usize;
        let end = ((grain_index + 1) * self.grain_bytes).min(self.size);
        let entry = gt.get(in_gt).copied().unwrap_or(0);
        let grain = classify_grain(
            &self.header,
            self.meta_end,
            self.file_len,
            grain_index,
            entry,
            end,
        )?;
        Ok((grain, end))
    }

    /// Inflates grain `grain_index` stored at file offset `at`.
    fn inflate(&self, grain_index: u64, at: u64) -> Result<Arc<Vec<u8>>, FormatError> {
        if let Some((i, g)) = self.last_grain.lock().ok().and_then(|c| c.clone()) {
            if i == grain_index {
                return Ok(g);
            }
        }
        // Deflate can expand incompressible data slightly; anything beyond this is junk.
        let max_compressed = 2 * self.grain_bytes + 4096;
        let (data_at, len) = if self.header.has_markers() {
            let mut m = [0u8; 12];
            read_exact(FORMAT, &*self.src, &mut m, at, "grain marker")?;
            let lba = le64(&m, 0);
            let size = u64::from(le32(&m, 8));
            if lba != grain_index * self.header.grain_size {
                return Err(corrupt(format!(
                    "grain marker at offset {at} says sector {lba}, expected {}",
                    grain_index * self.header.grain_size
                )));
            }
            if size == 0 || size > max_compressed || at + 12 + size > self.file_len {
                return Err(corrupt(format!(
                    "compressed grain at offset {at} has bad size {size}"
                )));
            }
            (at + 12, size)
        } else {
            (at, max_compressed.min(self.file_len - at))
        };
        let mut input = vec![0u8; len as usize];
        read_exact(FORMAT, &*self.src, &mut input, data_at, "compressed grain")?;
        let grain = Arc::new(
            inflate_grain(&input, self.grain_bytes as usize).map_err(|e| {
                corrupt(format!(
                    "compressed grain {grain_index} at offset {at}: {e}"
                ))
            })?,
        );
        if let Ok(mut c) = self.last_grain.lock() {
            *c = Some((grain_index, grain.clone()));
        }
        Ok(grain)
    }
}

/// Inflates one zlib stream into exactly `grain_len` bytes (zero-filled if the stream
/// is shorter). Pure.
pub fn inflate_grain(input: &[u8], grain_len: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; grain_len + 1];
    let mut z = flate2::Decompress::new(true);
    let status = z
        .decompress(input, &mut out, flate2::FlushDecompress::Finish)
        .map_err(|e| format!("bad deflate data ({e})"))?;
    let produced = usize::try_from(z.total_out()).unwrap_or(usize::MAX);
    if produced > grain_len {
        return Err(format!("inflates past the grain size of {grain_len} bytes"));
    }
    if status != flate2::Status::StreamEnd {
        return Err("deflate stream is truncated".into());
    }
    out.truncate(grain_len);
    Ok(out)
}

impl DiskImage for VmdkImage {
    fn format(&self) -> Format {
        Format::Vmdk
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        map_extent(offset, max_len, self.size, |pos| {
            let (grain, end) = self.grain(pos)?;
            let kind = match grain {
                Grain::Unallocated | Grain::Zero => ExtentKind::Zero,
                Grain::Plain(_) | Grain::Compressed(_) => ExtentKind::Data,
            };
            Ok((kind, end))
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), FormatError> {
        let fill = |grain, pos: u64, out: &mut [u8]| {
            let in_grain = pos % self.grain_bytes;
            match grain {
                Grain::Unallocated | Grain::Zero => out.fill(0),
                Grain::Plain(at) => read_exact(FORMAT, &*self.src, out, at + in_grain, "grain")?,
                Grain::Compressed(at) => {
                    let data = self.inflate(pos / self.grain_bytes, at)?;
                    let start = in_grain as usize;
                    let src = data
                        .get(start..start + out.len())
                        .ok_or_else(|| corrupt("grain shorter than its range"))?;
                    out.copy_from_slice(src);
                }
            }
            Ok(())
        };
        read_pieces(buf, offset, self.size, |pos| self.grain(pos), fill)
    }
}

#[cfg(test)]
mod tests;
