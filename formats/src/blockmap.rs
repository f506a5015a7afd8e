//! Walking guest ranges, shared by the readers: the range checks against the virtual
//! size, the `map` loop that merges pieces of one kind, the `read_at` loop that fills a
//! buffer piece by piece, and [`BlockMap`], the per-block file offsets of the formats
//! whose blocks are either stored whole or read as zero (VDI, VHDX).
//!
//! Each format decides what a piece is and checks its own table entries; this module only
//! walks. It never reads a table from the file, never trusts a piece to end past the
//! virtual size, and reads data only through [`ReadAt`].

use crate::readat::read_exact;
use crate::{Extent, ExtentKind, FormatError, ReadAt};

/// Checks `offset..offset+len` lies inside `virtual_size` (a `read_at` request).
pub(crate) fn check_range(offset: u64, len: u64, virtual_size: u64) -> Result<(), FormatError> {
    match offset.checked_add(len) {
        Some(end) if end <= virtual_size => Ok(()),
        _ => Err(FormatError::OutOfRange {
            offset,
            len,
            virtual_size,
        }),
    }
}

/// Checks a `map` request: it must start inside `virtual_size` and ask for at least 1 byte.
pub(crate) fn check_map_range(
    offset: u64,
    max_len: u64,
    virtual_size: u64,
) -> Result<(), FormatError> {
    if offset >= virtual_size || max_len == 0 {
        return Err(FormatError::OutOfRange {
            offset,
            len: max_len,
            virtual_size,
        });
    }
    Ok(())
}

/// Answers `map(offset, max_len)` on a disk of `size` bytes: `kind_at(pos)` gives the kind
/// of the piece holding guest `pos` and the guest offset where that piece ends; pieces of
/// the first piece's kind are merged up to `offset + max_len` or `size`.
pub(crate) fn map_extent(
    offset: u64,
    max_len: u64,
    size: u64,
    mut kind_at: impl FnMut(u64) -> Result<(ExtentKind, u64), FormatError>,
) -> Result<Extent, FormatError> {
    check_map_range(offset, max_len, size)?;
    let limit = offset.saturating_add(max_len).min(size);
    let (kind, mut end) = kind_at(offset)?;
    while end < limit {
        // A bad table or bitmap further on is reported when that offset itself is asked about.
        let Ok((next, next_end)) = kind_at(end) else {
            break;
        };
        if next != kind {
            break;
        }
        end = next_end;
    }
    Ok(Extent {
        len: end.min(limit) - offset,
        kind,
    })
}

/// Fills `buf` with guest bytes from `offset` on a disk of `size` bytes: `locate(pos)`
/// finds the piece holding guest `pos` and where it ends, `fill(piece, pos, out)` writes
/// the piece's bytes from `pos` into `out` (at most up to the piece end).
pub(crate) fn read_pieces<P>(
    buf: &mut [u8],
    offset: u64,
    size: u64,
    mut locate: impl FnMut(u64) -> Result<(P, u64), FormatError>,
    mut fill: impl FnMut(P, u64, &mut [u8]) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    check_range(offset, buf.len() as u64, size)?;
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let (piece, end) = locate(pos)?;
        let n = usize::try_from(end - pos).map_or(buf.len() - done, |n| n.min(buf.len() - done));
        fill(piece, pos, &mut buf[done..done + n])?;
        done += n;
    }
    Ok(())
}

/// The kind of a piece that is stored at a file offset (`Some`) or reads as zero (`None`).
pub(crate) fn stored_kind(at: Option<u64>) -> ExtentKind {
    match at {
        Some(_) => ExtentKind::Data,
        None => ExtentKind::Zero,
    }
}

/// [`read_pieces`] where `locate(pos)` gives the file offset of guest `pos` (`None`: zero)
/// and where its piece ends; stored bytes are read from `src` as `format`'s `what`.
pub(crate) fn read_stored(
    src: &dyn ReadAt,
    format: &str,
    what: &str,
    buf: &mut [u8],
    offset: u64,
    size: u64,
    locate: impl FnMut(u64) -> Result<(Option<u64>, u64), FormatError>,
) -> Result<(), FormatError> {
    read_pieces(buf, offset, size, locate, |at, _, out| match at {
        Some(at) => read_exact(format, src, out, at, what),
        None => {
            out.fill(0);
            Ok(())
        }
    })
}

/// Guest bytes of block `block` (`block_size` each) on a disk of `size` bytes: the last
/// block may be partial, and only what the guest sees must be in the file.
pub(crate) fn guest_block_len(block: u64, block_size: u64, size: u64) -> u64 {
    block_size.min(size - block * block_size)
}

/// Fixed-size guest blocks, each stored whole at a file offset or reading as zero. Built
/// from table entries the format reader has already checked against the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockMap {
    block_size: u64,
    size: u64,
    /// Per guest block: the file offset of its bytes, or `None` when it reads as zero.
    blocks: Vec<Option<u64>>,
}

impl BlockMap {
    /// `block_size` must not be zero (the formats bound it before building a map).
    pub(crate) fn new(block_size: u64, size: u64, blocks: Vec<Option<u64>>) -> Self {
        BlockMap {
            block_size,
            size,
            blocks,
        }
    }

    /// The block holding guest `offset`: its file offset (if stored) and where it ends.
    fn locate(&self, offset: u64) -> (Option<u64>, u64) {
        let bs = self.block_size;
        let idx = offset / bs;
        let end = ((idx + 1) * bs).min(self.size);
        let stored = usize::try_from(idx)
            .ok()
            .and_then(|i| self.blocks.get(i).copied())
            .flatten();
        (stored.map(|base| base + offset % bs), end)
    }

    /// [`DiskImage::map`](crate::DiskImage::map) over the blocks.
    pub(crate) fn map(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        map_extent(offset, max_len, self.size, |pos| {
            let (at, end) = self.locate(pos);
            Ok((stored_kind(at), end))
        })
    }

    /// [`DiskImage::read_at`](crate::DiskImage::read_at) over the blocks, reading stored
    /// bytes from `src` as `format`'s `what`.
    pub(crate) fn read(
        &self,
        src: &dyn ReadAt,
        format: &str,
        what: &str,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<(), FormatError> {
        read_stored(src, format, what, buf, offset, self.size, |pos| {
            Ok(self.locate(pos))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readat::MemImage;

    #[test]
    fn ranges_are_checked() {
        assert!(check_range(0, 10, 10).is_ok());
        assert!(matches!(
            check_range(1, 10, 10),
            Err(FormatError::OutOfRange { .. })
        ));
        assert!(check_range(u64::MAX, 2, u64::MAX).is_err());
        assert!(check_map_range(9, 1, 10).is_ok());
        assert!(check_map_range(10, 1, 10).is_err());
        assert!(check_map_range(0, 0, 10).is_err());
    }

    #[test]
    fn block_map_maps_and_reads() {
        let src = MemImage((0..=255u8).collect());
        // Blocks of 4 bytes over a 10-byte disk: [file 100, zero, file 8 (partial)].
        let m = BlockMap::new(4, 10, vec![Some(100), None, Some(8)]);
        let e = m.map(1, u64::MAX).unwrap();
        assert_eq!((e.len, e.kind), (3, ExtentKind::Data));
        let e = m.map(4, 100).unwrap();
        assert_eq!((e.len, e.kind), (4, ExtentKind::Zero));
        let e = m.map(8, 100).unwrap();
        assert_eq!((e.len, e.kind), (2, ExtentKind::Data));
        assert!(m.map(10, 1).is_err());
        let mut buf = [0xffu8; 10];
        m.read(&src, "test", "block", &mut buf, 0).unwrap();
        assert_eq!(buf, [100, 101, 102, 103, 0, 0, 0, 0, 8, 9]);
        assert!(m.read(&src, "test", "block", &mut buf[..2], 9).is_err());
        let far = BlockMap::new(4, 4, vec![Some(1000)]);
        assert!(matches!(
            far.read(&src, "test", "block", &mut buf[..4], 0),
            Err(FormatError::Truncated { .. })
        ));
    }

    #[test]
    fn map_extent_stops_at_a_bad_later_piece() {
        let e = map_extent(0, 100, 100, |pos| {
            if pos == 0 {
                Ok((ExtentKind::Data, 10))
            } else {
                Err(FormatError::corrupt("test", "bad table"))
            }
        })
        .unwrap();
        assert_eq!((e.len, e.kind), (10, ExtentKind::Data));
        assert!(map_extent(0, 100, 100, |_| Err(FormatError::corrupt("test", "bad"))).is_err());
    }
}
