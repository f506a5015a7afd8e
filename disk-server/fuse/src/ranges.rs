//! Range arithmetic for file requests, free of IO: how much of a read or write lies inside
//! a fixed-size volume, and where the next data or hole starts in a run of block-status
//! extents (SEEK_DATA / SEEK_HOLE).
//!
//! Offsets and lengths come from the kernel on behalf of any process: every sum here is
//! checked, nothing may panic or overflow.

use platter_snapshotter::{BlockExtent, BlockKind};

/// What an `lseek` looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTarget {
    Data,
    Hole,
}

/// The length of the part of `[offset, offset + len)` inside a `size`-byte file (0 when
/// it starts at or past the end).
pub fn clamp_len(offset: u64, len: u64, size: u64) -> u64 {
    if offset >= size {
        return 0;
    }
    len.min(size - offset)
}

/// Whether an extent counts as data for SEEK_DATA. Zero extents read as zeros with no
/// data behind them, so, like unwritten extents of a local filesystem, they are holes:
/// copy tools skip them and the copy still reads the same.
fn is_data(kind: BlockKind) -> bool {
    kind == BlockKind::Data
}

/// The first offset at or after `from` where `target` starts, within the extents of one
/// window (sorted and contiguous, as `Volume::block_status` returns them). `None` when the
/// window holds no such offset at or after `from`.
pub fn find_in_extents(extents: &[BlockExtent], from: u64, target: SeekTarget) -> Option<u64> {
    extents
        .iter()
        .filter(|e| e.offset.saturating_add(e.len) > from)
        .find(|e| is_data(e.kind) == (target == SeekTarget::Data))
        .map(|e| e.offset.max(from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ext(offset: u64, len: u64, kind: BlockKind) -> BlockExtent {
        BlockExtent { offset, len, kind }
    }

    #[test]
    fn clamp() {
        assert_eq!(clamp_len(0, 10, 100), 10);
        assert_eq!(clamp_len(95, 10, 100), 5);
        assert_eq!(clamp_len(100, 10, 100), 0);
        assert_eq!(clamp_len(u64::MAX, u64::MAX, 100), 0);
        assert_eq!(clamp_len(1, u64::MAX, 100), 99);
    }

    #[test]
    fn seek_in_window() {
        let e = [
            ext(0, 4096, BlockKind::Hole),
            ext(4096, 8192, BlockKind::Data),
            ext(12288, 4096, BlockKind::Zero),
        ];
        assert_eq!(find_in_extents(&e, 0, SeekTarget::Data), Some(4096));
        assert_eq!(find_in_extents(&e, 5000, SeekTarget::Data), Some(5000));
        assert_eq!(find_in_extents(&e, 12288, SeekTarget::Data), None);
        assert_eq!(find_in_extents(&e, 0, SeekTarget::Hole), Some(0));
        assert_eq!(find_in_extents(&e, 4096, SeekTarget::Hole), Some(12288));
        assert_eq!(find_in_extents(&e, 13000, SeekTarget::Hole), Some(13000));
        assert_eq!(find_in_extents(&[], 0, SeekTarget::Hole), None);
    }

    /// Extents built from a per-block model, merged as block status merges them.
    fn extents(blocks: &[bool], bs: u64) -> Vec<BlockExtent> {
        let mut out: Vec<BlockExtent> = Vec::new();
        for (i, &data) in blocks.iter().enumerate() {
            let kind = if data {
                BlockKind::Data
            } else {
                BlockKind::Hole
            };
            match out.last_mut() {
                Some(l) if l.kind == kind => l.len += bs,
                _ => out.push(ext(i as u64 * bs, bs, kind)),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_block_model(blocks in proptest::collection::vec(any::<bool>(), 0..64), from in 0u64..70 * 512) {
            let bs = 512;
            let e = extents(&blocks, bs);
            for target in [SeekTarget::Data, SeekTarget::Hole] {
                let want = (from / bs..blocks.len() as u64)
                    .find(|&b| blocks[b as usize] == (target == SeekTarget::Data))
                    .map(|b| (b * bs).max(from));
                prop_assert_eq!(find_in_extents(&e, from, target), want);
            }
        }
    }
}
