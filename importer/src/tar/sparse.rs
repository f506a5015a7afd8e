//! GNU sparse tar members (`tar -S`): the map of which byte ranges of the file hold data
//! (stored one after the other in the archive) and which are holes. Parsed from an old
//! GNU `S` header and its extension blocks, or from the map a pax 1.0 sparse member
//! stores ahead of its data; expanded by the reader (streamed) or by [`SparseReadAt`]
//! (by offset).
//!
//! Every map is validated before use (sorted, non-overlapping, inside the real size, and
//! its data adding up to the stored bytes), so no read through it can leave its member.

use super::header::{HeaderError, BLOCK};
use platter_formats::ReadAt;
use std::io;
use std::sync::Arc;

/// Most fragments a map may hold (about what [`super::header::MAX_META_LEN`] of
/// extension blocks describes).
pub const MAX_FRAGMENTS: usize = 1 << 16;

/// `(offset, len)` data runs as a map lists them, before validation.
pub type Runs = Vec<(u64, u64)>;

/// One data run of a sparse file: `len` bytes at file offset `offset`, stored at
/// `stored` bytes into the member's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub offset: u64,
    pub len: u64,
    pub stored: u64,
}

/// A validated sparse map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseMap {
    fragments: Vec<Fragment>,
    real_size: u64,
}

/// Where a file offset falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `len` bytes of data, stored at `stored` in the member's data.
    Data { stored: u64, len: u64 },
    /// `len` bytes of zeros.
    Hole { len: u64 },
}

impl SparseMap {
    /// Checks `(offset, len)` runs against the file's `real_size` and the member's
    /// `stored` size; empty runs (GNU tar ends a map with one) are dropped.
    pub fn new(
        runs: &[(u64, u64)],
        real_size: u64,
        stored: u64,
    ) -> Result<SparseMap, &'static str> {
        let mut fragments = Vec::with_capacity(runs.len().min(MAX_FRAGMENTS));
        let mut next_free = 0u64;
        let mut total = 0u64;
        for &(offset, len) in runs.iter().filter(|r| r.1 > 0) {
            if fragments.len() >= MAX_FRAGMENTS {
                return Err("too many sparse fragments");
            }
            let end = offset.checked_add(len).ok_or("sparse fragment overflows")?;
            if offset < next_free || end > real_size {
                return Err("sparse fragments overlap, are unsorted or pass the file's end");
            }
            fragments.push(Fragment {
                offset,
                len,
                stored: total,
            });
            total = total.checked_add(len).ok_or("sparse data overflows")?;
            next_free = end;
        }
        if total != stored {
            return Err("sparse map does not account for the member's stored data");
        }
        Ok(SparseMap {
            fragments,
            real_size,
        })
    }

    pub fn real_size(&self) -> u64 {
        self.real_size
    }

    /// The piece holding file offset `pos` (`None` at or past the end), searching from
    /// fragment `hint` on (a sequential reader passes its last index; 0 is always right).
    pub fn locate(&self, pos: u64, hint: &mut usize) -> Option<Piece> {
        if pos >= self.real_size {
            return None;
        }
        // The hint is good while every fragment before it ends at or before `pos`.
        let stale = *hint > 0
            && self
                .fragments
                .get(*hint - 1)
                .is_none_or(|f| f.offset + f.len > pos);
        if stale {
            *hint = 0;
        }
        // The first fragment ending after `pos`.
        let rest = self.fragments.get(*hint..).unwrap_or(&[]);
        let skip = rest.partition_point(|f| f.offset + f.len <= pos);
        *hint += skip;
        Some(match self.fragments.get(*hint) {
            Some(f) if f.offset <= pos => Piece::Data {
                stored: f.stored + (pos - f.offset),
                len: f.offset + f.len - pos,
            },
            Some(f) => Piece::Hole {
                len: f.offset - pos,
            },
            None => Piece::Hole {
                len: self.real_size - pos,
            },
        })
    }
}

/// Reads the `(offset, len)` entries of an old GNU sparse map area: `count` 24-byte
/// entries (12-byte numbers each), stopping at the first unused one.
pub fn old_gnu_entries(
    area: &[u8],
    count: usize,
    parse: impl Fn(&[u8], &'static str) -> Result<u64, HeaderError>,
    out: &mut Vec<(u64, u64)>,
) -> Result<(), HeaderError> {
    for e in area.chunks_exact(24).take(count) {
        if e.first().is_none_or(|&b| b == 0) {
            break;
        }
        let offset = parse(&e[..12], "sparse offset")?;
        let len = parse(&e[12..], "sparse numbytes")?;
        out.push((offset, len));
    }
    Ok(())
}

/// The map a pax 1.0 sparse member stores before its data: decimal lines `COUNT`, then
/// `OFFSET` and `LEN` per fragment, padded to a block. `blocks` are the member's first
/// data blocks; returns the runs and how many bytes (whole blocks) the map took, or
/// `Ok(None)` when `blocks` end before the map does.
pub fn pax1_map(blocks: &[u8]) -> Result<Option<(Runs, u64)>, &'static str> {
    let mut nums = Vec::new();
    let mut pos = 0usize;
    let mut want: Option<usize> = None;
    while want.is_none_or(|w| nums.len() < 1 + 2 * w) {
        let Some(nl) = blocks
            .get(pos..)
            .and_then(|r| r.iter().position(|&b| b == b'\n'))
        else {
            return Ok(None);
        };
        let line = &blocks[pos..pos + nl];
        if line.is_empty() || line.len() > 20 || !line.iter().all(u8::is_ascii_digit) {
            return Err("bad number in the pax sparse map");
        }
        let n: u64 = std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad number in the pax sparse map")?;
        nums.push(n);
        if want.is_none() {
            let c = usize::try_from(n).map_err(|_| "too many sparse fragments")?;
            if c > MAX_FRAGMENTS {
                return Err("too many sparse fragments");
            }
            want = Some(c);
        }
        pos += nl + 1;
    }
    let runs = nums
        .get(1..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|p| (p[0], p[1]))
        .collect();
    let used = pos.div_ceil(BLOCK) * BLOCK;
    Ok(Some((runs, used as u64)))
}

/// A sparse member read by offset: holes read as zeros, data from the archive.
pub(crate) struct SparseReadAt {
    pub(crate) inner: Arc<dyn ReadAt>,
    /// Archive offset of the member's first stored data byte.
    pub(crate) data_offset: u64,
    pub(crate) map: Arc<SparseMap>,
}

impl ReadAt for SparseReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        let mut hint = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let Some(piece) = self.map.locate(pos, &mut hint) else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read at {pos} past the end of a sparse member"),
                ));
            };
            let rest = &mut buf[done..];
            match piece {
                Piece::Hole { len } => {
                    let n = rest.len().min(usize::try_from(len).unwrap_or(usize::MAX));
                    rest[..n].fill(0);
                    done += n;
                }
                Piece::Data { stored, len } => {
                    let n = rest.len().min(usize::try_from(len).unwrap_or(usize::MAX));
                    let at = self.data_offset.checked_add(stored).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "sparse offset overflows")
                    })?;
                    self.inner.read_exact_at(&mut rest[..n], at)?;
                    done += n;
                }
            }
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.map.real_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn maps_are_validated() {
        assert!(SparseMap::new(&[(0, 10), (20, 5), (100, 0)], 100, 15).is_ok());
        assert!(SparseMap::new(&[(20, 5), (0, 10)], 100, 15).is_err()); // unsorted
        assert!(SparseMap::new(&[(0, 10), (5, 10)], 100, 20).is_err()); // overlap
        assert!(SparseMap::new(&[(95, 10)], 100, 10).is_err()); // past the end
        assert!(SparseMap::new(&[(0, 10)], 100, 11).is_err()); // stored data unaccounted
        assert!(SparseMap::new(&[(u64::MAX, 2)], u64::MAX, 2).is_err());
    }

    #[test]
    fn locates_pieces() {
        let m = SparseMap::new(&[(10, 5), (20, 5)], 30, 10).unwrap();
        let mut h = 0;
        assert_eq!(m.locate(0, &mut h), Some(Piece::Hole { len: 10 }));
        assert_eq!(
            m.locate(12, &mut h),
            Some(Piece::Data { stored: 2, len: 3 })
        );
        assert_eq!(m.locate(15, &mut h), Some(Piece::Hole { len: 5 }));
        assert_eq!(
            m.locate(20, &mut h),
            Some(Piece::Data { stored: 5, len: 5 })
        );
        assert_eq!(m.locate(26, &mut h), Some(Piece::Hole { len: 4 }));
        assert_eq!(m.locate(30, &mut h), None);
        // A stale hint from further on is reset.
        assert_eq!(m.locate(0, &mut h), Some(Piece::Hole { len: 10 }));
    }

    #[test]
    fn pax1_maps() {
        let mut b = b"2\n0\n512\n4096\n10\n".to_vec();
        b.resize(BLOCK, 0);
        let (runs, used) = pax1_map(&b).unwrap().unwrap();
        assert_eq!(runs, [(0, 512), (4096, 10)]);
        assert_eq!(used, 512);
        assert_eq!(pax1_map(b"2\n0\n512\n").unwrap(), None);
        assert!(pax1_map(b"x\n").is_err());
        assert!(pax1_map(b"99999999999\n").is_err());
    }

    struct Mem(Vec<u8>);
    impl ReadAt for Mem {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let s = usize::try_from(offset).unwrap();
            buf.copy_from_slice(
                self.0
                    .get(s..s + buf.len())
                    .ok_or(io::ErrorKind::UnexpectedEof)?,
            );
            Ok(())
        }
        fn len(&self) -> io::Result<u64> {
            Ok(self.0.len() as u64)
        }
    }

    proptest! {
        /// Read by offset, a sparse member equals the file it was made from.
        #[test]
        fn read_at_matches_the_model(
            gaps in proptest::collection::vec((0u64..50, 1u64..50), 0..8),
            tail in 0u64..40,
            at in 0u64..400,
            len in 0usize..200,
        ) {
            let mut file = Vec::new();
            let mut runs = Vec::new();
            let mut stored = Vec::new();
            for (i, (gap, n)) in gaps.iter().enumerate() {
                file.resize(file.len() + *gap as usize, 0);
                runs.push((file.len() as u64, *n));
                for j in 0..*n {
                    let b = (i as u8).wrapping_mul(31).wrapping_add(j as u8) | 1;
                    file.push(b);
                    stored.push(b);
                }
            }
            file.resize(file.len() + tail as usize, 0);
            let map = SparseMap::new(&runs, file.len() as u64, stored.len() as u64).unwrap();
            let r = SparseReadAt { inner: Arc::new(Mem(stored)), data_offset: 0, map: Arc::new(map) };
            let mut buf = vec![0xeeu8; len];
            let res = r.read_exact_at(&mut buf, at);
            let end = at as usize + len;
            if end <= file.len() {
                prop_assert!(res.is_ok());
                prop_assert_eq!(&buf[..], &file[at as usize..end]);
            } else if len > 0 {
                prop_assert!(res.is_err());
            }
        }

        #[test]
        fn pax1_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = pax1_map(&bytes);
        }
    }
}
