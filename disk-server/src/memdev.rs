//! An in-memory [`BlockDevice`] that tracks holes per 4 KiB block: the reference device
//! for tests (and for trying the server without a store).
//!
//! It models the store's semantics (trim and unmapping zeroes leave holes, non-unmapping
//! zeroes leave allocated zero blocks, unaligned IO works) with one lock, so it favours
//! clarity over speed. It must never panic on a bad range: it answers [`DeviceError`].

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::device::{check_range, BlockDevice, DeviceError, Extent, ExtentKind};

/// Allocation granularity of [`MemDevice`].
pub const MEM_BLOCK: u64 = 4096;

#[derive(Clone)]
enum Block {
    Hole,
    Zero,
    Data(Box<[u8]>),
}

impl Block {
    fn kind(&self) -> ExtentKind {
        match self {
            Block::Hole => ExtentKind::Hole,
            Block::Zero => ExtentKind::Zero,
            Block::Data(_) => ExtentKind::Data,
        }
    }
}

/// A sparse in-memory device.
pub struct MemDevice {
    size: u64,
    read_only: bool,
    blocks: RwLock<Vec<Block>>,
    flushes: AtomicU64,
}

/// One block's share of a byte range.
struct Piece {
    index: usize,
    /// Offset inside the block.
    start: usize,
    len: usize,
    /// Offset inside the caller's range.
    pos: usize,
}

impl Piece {
    fn whole(&self) -> bool {
        self.start == 0 && self.len as u64 == MEM_BLOCK
    }
}

fn pieces(offset: u64, len: u64) -> impl Iterator<Item = Piece> {
    let end = offset + len;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let index = at / MEM_BLOCK;
        let start = at % MEM_BLOCK;
        let n = (MEM_BLOCK - start).min(end - at);
        let p = Piece {
            index: index as usize,
            start: start as usize,
            len: n as usize,
            pos: (at - offset) as usize,
        };
        at += n;
        Some(p)
    })
}

impl MemDevice {
    /// A device of `size` bytes, all hole.
    pub fn new(size: u64) -> Self {
        let n = size.div_ceil(MEM_BLOCK) as usize;
        MemDevice {
            size,
            read_only: false,
            blocks: RwLock::new(vec![Block::Hole; n]),
            flushes: AtomicU64::new(0),
        }
    }

    /// The same device, refusing writes.
    pub fn into_read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// How many times `flush` was called.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn check_write(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        if self.read_only {
            return Err(DeviceError::ReadOnly);
        }
        check_range(offset, len, self.size)
    }

    /// Zeroes part of a block (whole blocks are handled by the callers).
    fn zero_part(block: &mut Block, p: &Piece) {
        if let Block::Data(d) = block {
            if let Some(s) = d.get_mut(p.start..p.start + p.len) {
                s.fill(0);
            }
        }
    }

    fn unmap(&self, offset: u64, len: u64, whole: Block) -> Result<(), DeviceError> {
        self.check_write(offset, len)?;
        let mut blocks = self.blocks.write();
        for p in pieces(offset, len) {
            let Some(b) = blocks.get_mut(p.index) else {
                continue;
            };
            if p.whole() {
                *b = whole.clone();
            } else {
                Self::zero_part(b, &p);
            }
        }
        Ok(())
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        check_range(offset, buf.len() as u64, self.size)?;
        let blocks = self.blocks.read();
        for p in pieces(offset, buf.len() as u64) {
            let Some(dst) = buf.get_mut(p.pos..p.pos + p.len) else {
                continue;
            };
            match blocks.get(p.index) {
                Some(Block::Data(d)) => match d.get(p.start..p.start + p.len) {
                    Some(src) => dst.copy_from_slice(src),
                    None => dst.fill(0),
                },
                _ => dst.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.check_write(offset, buf.len() as u64)?;
        let mut blocks = self.blocks.write();
        for p in pieces(offset, buf.len() as u64) {
            let (Some(b), Some(src)) = (blocks.get_mut(p.index), buf.get(p.pos..p.pos + p.len))
            else {
                continue;
            };
            if !matches!(b, Block::Data(_)) {
                *b = Block::Data(vec![0u8; MEM_BLOCK as usize].into_boxed_slice());
            }
            if let Block::Data(d) = b {
                if let Some(dst) = d.get_mut(p.start..p.start + p.len) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), DeviceError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        self.unmap(offset, len, Block::Hole)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), DeviceError> {
        let whole = if may_unmap { Block::Hole } else { Block::Zero };
        self.unmap(offset, len, whole)
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, DeviceError> {
        check_range(offset, len, self.size)?;
        let blocks = self.blocks.read();
        let mut out: Vec<Extent> = Vec::new();
        for p in pieces(offset, len) {
            let kind = blocks.get(p.index).map_or(ExtentKind::Hole, Block::kind);
            let at = offset + p.pos as u64;
            match out.last_mut() {
                Some(last) if last.kind == kind => last.len += p.len as u64,
                _ => out.push(Extent {
                    offset: at,
                    len: p.len as u64,
                    kind,
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sparse_semantics() {
        let d = MemDevice::new(5 * MEM_BLOCK + 100);
        let all = |d: &MemDevice| d.block_status(0, d.size()).unwrap();
        assert_eq!(all(&d).len(), 1);
        d.write_at(&[7u8; 10], MEM_BLOCK - 5).unwrap();
        let st = all(&d);
        assert_eq!(st[0].kind, ExtentKind::Data);
        assert_eq!((st[0].offset, st[0].len), (0, 2 * MEM_BLOCK));
        d.write_zeroes(2 * MEM_BLOCK, MEM_BLOCK, false).unwrap();
        d.trim(0, MEM_BLOCK).unwrap();
        let kinds: Vec<_> = all(&d).iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                ExtentKind::Hole,
                ExtentKind::Data,
                ExtentKind::Zero,
                ExtentKind::Hole
            ]
        );
        let mut buf = [1u8; 12];
        d.read_at(&mut buf, MEM_BLOCK - 6).unwrap();
        assert_eq!(buf, [0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 7, 0]);
        assert!(d.read_at(&mut buf, d.size() - 5).is_err());
        assert!(d.into_read_only().write_at(&[1], 0).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Trim(u64, u64),
        Zero(u64, u64, bool),
    }

    fn op(size: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..size, proptest::collection::vec(any::<u8>(), 1..9000))
                .prop_map(|(o, d)| Op::Write(o, d)),
            (0..size, 0..20000u64).prop_map(|(o, l)| Op::Trim(o, l)),
            (0..size, 0..20000u64, any::<bool>()).prop_map(|(o, l, u)| Op::Zero(o, l, u)),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_vec_model(ops in proptest::collection::vec(op(40000), 1..30)) {
            let size = 40000u64;
            let d = MemDevice::new(size);
            let mut model = vec![0u8; size as usize];
            for o in ops {
                match o {
                    Op::Write(off, data) => {
                        let ok = d.write_at(&data, off).is_ok();
                        prop_assert_eq!(ok, off + data.len() as u64 <= size);
                        if ok { model[off as usize..off as usize + data.len()].copy_from_slice(&data); }
                    }
                    Op::Trim(off, len) | Op::Zero(off, len, _) => {
                        let r = if let Op::Zero(_, _, u) = o { d.write_zeroes(off, len, u) } else { d.trim(off, len) };
                        if r.is_ok() { model[off as usize..(off + len) as usize].fill(0); }
                    }
                }
            }
            let mut got = vec![0u8; size as usize];
            d.read_at(&mut got, 0).unwrap();
            prop_assert!(got == model);
            let ext = d.block_status(0, size).unwrap();
            prop_assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), size);
            for e in ext {
                if e.kind != ExtentKind::Data {
                    prop_assert!(model[e.offset as usize..(e.offset + e.len) as usize].iter().all(|b| *b == 0));
                }
            }
        }
    }
}
