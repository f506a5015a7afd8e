//! A streamOptimized VMDK that arrives as a forward-only stream (gzip'ed, on stdin, in a
//! tar inside a compressed wrapper) decoded in one pass, without a spool file: the format
//! is made to be read in order. After the header and descriptor (`overHead` sectors) come
//! records of whole sectors: a grain marker `{lba u64, size u32, deflate data}` names the
//! guest sectors its grain fills; a metadata marker `{sectors u64, 0 u32, type u32}` is
//! followed by that many sectors of grain tables, the directory or the footer, which a
//! stream does not need; the end-of-stream marker ends it. Grains that were never written
//! have no marker and read as zero.
//!
//! Only images with markers and compressed grains take this path (monolithicSparse ones
//! go through `map_stream.rs`).
//! Nothing here trusts a length from the stream before bounding it.

use super::{final_size, DecodeCtx, Decoded, Out};
use crate::error::{from_io, ImportError};
use crate::stream::{check_cancel, read_full};
use platter_formats::detect::Wrapper;
use platter_formats::vmdk::{
    inflate_grain, parse_marker, parse_sparse_header, MARKER_EOS, MARKER_FOOTER, MARKER_GD,
    MARKER_GT, SECTOR,
};
use platter_formats::{Format, FormatError};
use std::io::Read;

/// Bytes of a grain marker before its data.
const GRAIN_MARKER_HEAD: usize = 12;
/// Most sectors of header, descriptor and padding before the first marker.
const MAX_OVERHEAD_SECTORS: u64 = 1 << 16;

/// What the stream decoder needs from the first sector: guest size, grain size and where
/// the markers start; `None` when the image is not a compressed streamOptimized one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamHeader {
    pub capacity: u64,
    pub grain_bytes: u64,
    pub overhead: u64,
    /// Sector of the grain directory, or `GD_AT_END` (then it follows the data).
    pub gd_offset: u64,
    pub gtes_per_gt: u32,
}

/// Reads the header fields a stream needs (pure). Errors name what is wrong.
pub(crate) fn stream_header(head: &[u8]) -> Result<Option<StreamHeader>, FormatError> {
    let h = parse_sparse_header(head)?;
    if !(h.has_markers() && h.compressed()) {
        return Ok(None);
    }
    let overhead = h.overhead;
    if overhead == 0 || overhead > MAX_OVERHEAD_SECTORS {
        return Err(corrupt(format!("overHead of {overhead} sectors")));
    }
    Ok(Some(StreamHeader {
        capacity: h.capacity * SECTOR,
        grain_bytes: h.grain_size * SECTOR,
        overhead,
        gd_offset: h.gd_offset,
        gtes_per_gt: h.num_gtes_per_gt,
    }))
}

/// How many grains the grain tables in the header area map, when the directory and all
/// its tables lie there (qemu-img writes them there and no end-of-stream marker after the
/// data): then a stream that ends early is caught by counting. `None` when the tables are
/// elsewhere (VMware puts them after the data, with markers and an end-of-stream marker).
pub(crate) fn grains_mapped_in_header(area: &[u8], h: &StreamHeader) -> Option<u64> {
    let sector_bytes = |s: u64, n: u64| -> Option<&[u8]> {
        let start = usize::try_from(s.checked_mul(SECTOR)?).ok()?;
        let len = usize::try_from(n).ok()?;
        area.get(start..start.checked_add(len)?)
    };
    let gts = h
        .capacity
        .div_ceil(h.grain_bytes * u64::from(h.gtes_per_gt));
    let gd = sector_bytes(h.gd_offset, gts * 4)?;
    let mut mapped = 0u64;
    for e in gd.chunks_exact(4) {
        let gt_sector = u64::from(u32::from_le_bytes(e.try_into().ok()?));
        if gt_sector == 0 {
            continue;
        }
        let gt = sector_bytes(gt_sector, u64::from(h.gtes_per_gt) * 4)?;
        mapped += gt
            .chunks_exact(4)
            .filter(|g| u32::from_le_bytes([g[0], g[1], g[2], g[3]]) > 1)
            .count() as u64;
    }
    Some(mapped)
}

/// One record of the stream, told from its first sector (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// `size` bytes of deflate data for the grain at guest byte `offset`.
    Grain {
        offset: u64,
        size: usize,
    },
    /// `sectors` sectors of metadata follow.
    Skip {
        sectors: u64,
    },
    End,
}

pub(crate) fn parse_record(sector: &[u8], h: &StreamHeader) -> Result<Record, FormatError> {
    if sector.len() < 16 {
        return Err(corrupt("short marker"));
    }
    let m = parse_marker(sector);
    let (value, size, kind) = (m.value, m.size, m.kind);
    if size > 0 {
        let offset = value
            .checked_mul(SECTOR)
            .filter(|&o| o < h.capacity && o % h.grain_bytes == 0)
            .ok_or_else(|| corrupt(format!("grain marker for sector {value}")))?;
        // A deflate stream of a grain is never much larger than the grain.
        if u64::from(size) > h.grain_bytes + h.grain_bytes / 8 + 1024 {
            return Err(corrupt(format!("compressed grain of {size} bytes")));
        }
        return Ok(Record::Grain {
            offset,
            size: size as usize,
        });
    }
    match kind {
        MARKER_EOS => Ok(Record::End),
        MARKER_GT | MARKER_GD | MARKER_FOOTER => {
            if value > (h.capacity / SECTOR).max(1 << 20) {
                return Err(corrupt(format!("metadata of {value} sectors")));
            }
            Ok(Record::Skip { sectors: value })
        }
        k => Err(corrupt(format!("unknown marker type {k}"))),
    }
}

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::corrupt("vmdk", detail.into())
}

/// Decodes the stream (its header is `h`) into the write stage.
pub(super) fn decode_vmdk(
    r: &mut dyn Read,
    h: StreamHeader,
    ctx: &DecodeCtx<'_>,
    wrappers: &[Wrapper],
    inside: &str,
) -> Result<Decoded, ImportError> {
    let fmt_err = |e| ImportError::format(ctx.what.clone(), e);
    let io_err = |e| from_io(format!("reading {}", ctx.what), e);
    ctx.progress.detail(format!(
        "{} is a streamOptimized vmdk inside a stream ({inside}): decoding it in one pass, without a spool file",
        ctx.what
    ));
    let size = final_size(h.capacity, ctx.opts, &ctx.what)?;
    ctx.send(Out::Size(size))?;
    // No progress phase of its own: the source stage already counts the stream's bytes.
    // Position in the stream, for errors.
    let mut pos = h.overhead * SECTOR;
    let mut area = vec![0u8; pos as usize];
    if read_full(r, &mut area).map_err(io_err)? < area.len() {
        return Err(fmt_err(FormatError::Truncated {
            what: "vmdk header area".into(),
            offset: pos,
        }));
    }
    let expected = grains_mapped_in_header(&area, &h);
    drop(area);
    let mut sector = [0u8; SECTOR as usize];
    let mut data = Vec::new();
    let mut grains = 0u64;
    loop {
        check_cancel(&ctx.opts.cancel)?;
        let n = read_full(r, &mut sector).map_err(io_err)?;
        // qemu-img ends after the last grain, with no end-of-stream marker: that is a
        // clean end only if every grain its tables map has come.
        if n == 0 && expected == Some(grains) {
            break;
        }
        if n < sector.len() {
            return Err(fmt_err(FormatError::Truncated {
                what: format!(
                    "vmdk stream before its end ({grains} grains read{})",
                    expected
                        .map(|e| format!(", {e} mapped"))
                        .unwrap_or_default()
                ),
                offset: pos,
            }));
        }
        pos += SECTOR;
        match parse_record(&sector, &h).map_err(fmt_err)? {
            Record::End => break,
            Record::Skip { sectors } => {
                skip(r, sectors * SECTOR).map_err(io_err)?;
                pos += sectors * SECTOR;
            }
            Record::Grain { offset, size } => {
                let total = (GRAIN_MARKER_HEAD + size).next_multiple_of(SECTOR as usize);
                data.clear();
                data.extend_from_slice(&sector[GRAIN_MARKER_HEAD..]);
                data.resize(total - GRAIN_MARKER_HEAD, 0);
                let rest = &mut data[SECTOR as usize - GRAIN_MARKER_HEAD..];
                if read_full(r, rest).map_err(io_err)? < rest.len() {
                    return Err(fmt_err(FormatError::Truncated {
                        what: format!("vmdk grain for guest offset {offset}"),
                        offset: pos,
                    }));
                }
                pos += rest.len() as u64;
                grains += 1;
                let mut grain = inflate_grain(&data[..size], h.grain_bytes as usize)
                    .map_err(|d| fmt_err(corrupt(format!("grain at {offset}: {d}"))))?;
                grain.truncate((h.capacity - offset).min(h.grain_bytes) as usize);
                ctx.send(Out::Data { offset, buf: grain })?;
            }
        }
    }
    ctx.progress.flush();
    Ok(Decoded {
        format: Format::Vmdk,
        wrappers: wrappers.to_vec(),
        virtual_size: h.capacity,
        spooled: false,
        member: None,
    })
}

/// Reads and drops `n` bytes; the end of the stream before them is an error.
fn skip(r: &mut dyn Read, n: u64) -> std::io::Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if got < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: StreamHeader = StreamHeader {
        capacity: 1 << 30,
        grain_bytes: 65536,
        overhead: 128,
        gd_offset: 21,
        gtes_per_gt: 512,
    };

    fn sector(value: u64, size: u32, kind: u32) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[..8].copy_from_slice(&value.to_le_bytes());
        s[8..12].copy_from_slice(&size.to_le_bytes());
        s[12..16].copy_from_slice(&kind.to_le_bytes());
        s
    }

    #[test]
    fn records() {
        assert_eq!(
            parse_record(&sector(128, 900, 0), &H).unwrap(),
            Record::Grain {
                offset: 65536,
                size: 900
            }
        );
        assert_eq!(parse_record(&sector(0, 0, 0), &H).unwrap(), Record::End);
        assert_eq!(
            parse_record(&sector(4, 0, MARKER_GT), &H).unwrap(),
            Record::Skip { sectors: 4 }
        );
        // A grain not on a grain boundary, past the end, or absurdly large; unknown types.
        assert!(parse_record(&sector(3, 900, 0), &H).is_err());
        assert!(parse_record(&sector(1 << 21, 900, 0), &H).is_err());
        assert!(parse_record(&sector(128, 1 << 30, 0), &H).is_err());
        assert!(parse_record(&sector(1, 0, 9), &H).is_err());
        assert!(parse_record(&sector(u64::MAX, 0, MARKER_GD), &H).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_sectors_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_record(&bytes, &H);
            let _ = stream_header(&bytes);
            let _ = grains_mapped_in_header(&bytes, &H);
        }
    }
}
