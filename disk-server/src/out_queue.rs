//! The reply side of a connection: a queue of byte buffers written with vectored writes,
//! and the pools that recycle those buffers.
//!
//! Small replies are appended into shared batch buffers (one write for many replies);
//! replies built on IO threads arrive as their own buffers; large read data arrives as
//! "data" buffers that are kept initialised between uses so they never need clearing.
//! Nothing here does IO or may panic: every slice is taken with checked ranges.

use std::collections::VecDeque;
use std::io::IoSlice;

/// Inline replies are batched into buffers of about this size.
const CHUNK_TARGET: usize = 256 * 1024;
/// Bytes of buffer capacity a pool keeps for reuse (fresh memory costs a page fault per
/// 4 KiB), so an idle connection holds little.
const SPARE_BYTES: usize = 12 << 20;
/// Slices per vectored write.
pub(crate) const IOV: usize = 64;

/// Recycled byte buffers.
#[derive(Default)]
pub(crate) struct BufPool {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
    /// Keep contents (data buffers are overwritten, never appended to).
    keep: bool,
}

impl BufPool {
    /// A pool whose buffers keep their (initialised) contents between uses.
    pub(crate) fn keeping() -> Self {
        BufPool {
            keep: true,
            ..BufPool::default()
        }
    }

    /// A buffer with room for `need` more bytes (empty unless this pool keeps contents).
    pub(crate) fn take(&mut self, need: usize) -> Vec<u8> {
        let mut v = match self.bufs.pop() {
            Some(v) => {
                self.bytes -= v.capacity();
                v
            }
            None => Vec::new(),
        };
        if !self.keep {
            v.reserve(need);
        }
        v
    }

    pub(crate) fn put(&mut self, mut v: Vec<u8>) {
        if v.capacity() > 0 && self.bytes + v.capacity() <= SPARE_BYTES {
            if !self.keep {
                v.clear();
            }
            self.bytes += v.capacity();
            self.bufs.push(v);
        }
    }
}

struct Chunk {
    buf: Vec<u8>,
    /// For a data buffer, how many leading bytes are sent; `None`: all of `buf`.
    used: Option<usize>,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self.used {
            None => &self.buf,
            Some(n) => self.buf.get(..n).unwrap_or(&self.buf),
        }
    }
}

/// Replies waiting to be written, in order.
#[derive(Default)]
pub(crate) struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    pos: usize,
    /// Unwritten bytes in all chunks.
    len: usize,
    spare: BufPool,
    data_spare: BufPool,
}

impl OutQueue {
    pub(crate) fn new() -> Self {
        OutQueue {
            data_spare: BufPool::keeping(),
            ..OutQueue::default()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Unwritten bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// An empty reusable buffer with room for `need` bytes.
    pub(crate) fn take_spare(&mut self, need: usize) -> Vec<u8> {
        self.spare.take(need)
    }

    /// A reusable data buffer (contents are stale; see [`OutQueue::push_data`]).
    pub(crate) fn take_data(&mut self) -> Vec<u8> {
        self.data_spare.take(0)
    }

    /// Gives back a data buffer that was not used.
    pub(crate) fn recycle_data(&mut self, v: Vec<u8>) {
        self.data_spare.put(v);
    }

    fn recycle(&mut self, c: Chunk) {
        match c.used {
            None => self.spare.put(c.buf),
            Some(_) => self.data_spare.put(c.buf),
        }
    }

    /// Runs `f` on the batch buffer at the tail of the queue, with room for about `need`
    /// bytes, and accounts for what it appended.
    pub(crate) fn append<R>(&mut self, need: usize, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let fits = self.chunks.back().is_some_and(|c| {
            c.used.is_none() && c.buf.len() + need <= CHUNK_TARGET.max(c.buf.capacity())
        });
        if !fits {
            let buf = self.take_spare(need.max(CHUNK_TARGET / 4));
            self.chunks.push_back(Chunk { buf, used: None });
        }
        match self.chunks.back_mut() {
            Some(tail) => {
                let before = tail.buf.len();
                let r = f(&mut tail.buf);
                self.len += tail.buf.len().saturating_sub(before);
                r
            }
            None => f(&mut Vec::new()),
        }
    }

    /// Queues a finished buffer (a reply built on an IO thread).
    pub(crate) fn push(&mut self, buf: Vec<u8>) {
        if buf.is_empty() {
            self.spare.put(buf);
            return;
        }
        self.len += buf.len();
        self.chunks.push_back(Chunk { buf, used: None });
    }

    /// Queues the first `used` bytes of a data buffer.
    pub(crate) fn push_data(&mut self, buf: Vec<u8>, used: usize) {
        let used = used.min(buf.len());
        if used == 0 {
            self.data_spare.put(buf);
            return;
        }
        self.len += used;
        self.chunks.push_back(Chunk {
            buf,
            used: Some(used),
        });
    }

    /// Fills `iov` with the unwritten bytes, in order; answers how many slices.
    pub(crate) fn slices<'a>(&'a self, iov: &mut [IoSlice<'a>; IOV]) -> usize {
        let mut n = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            if n == IOV {
                break;
            }
            let b = c.bytes();
            let s = if i == 0 {
                b.get(self.pos..).unwrap_or(&[])
            } else {
                b
            };
            if let (false, Some(slot)) = (s.is_empty(), iov.get_mut(n)) {
                *slot = IoSlice::new(s);
                n += 1;
            }
        }
        n
    }

    /// Marks `n` bytes as written, recycling finished buffers.
    pub(crate) fn advance(&mut self, mut n: usize) {
        self.len = self.len.saturating_sub(n);
        while let Some(front) = self.chunks.front() {
            let left = front.bytes().len().saturating_sub(self.pos);
            if n < left {
                self.pos += n;
                return;
            }
            n -= left;
            self.pos = 0;
            // Keep an empty batch buffer at the back: appends reuse it.
            if self.chunks.len() == 1 && n == 0 && front.used.is_none() {
                if let Some(c) = self.chunks.front_mut() {
                    c.buf.clear();
                }
                return;
            }
            if let Some(c) = self.chunks.pop_front() {
                self.recycle(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(q: &OutQueue) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); IOV];
        let n = q.slices(&mut iov);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn batches_pushes_and_advances() {
        let mut q = OutQueue::new();
        q.append(10, |o| o.extend_from_slice(b"hello"));
        q.append(10, |o| o.extend_from_slice(b"world"));
        q.push(b"big".to_vec());
        let mut data = q.take_data();
        data.extend_from_slice(b"DATA-stale");
        q.push_data(data, 4);
        q.append(10, |o| o.extend_from_slice(b"!"));
        assert_eq!(q.len(), 18);
        assert_eq!(collect(&q), b"helloworldbigDATA!");
        q.advance(7);
        assert_eq!(collect(&q), b"rldbigDATA!");
        q.advance(9);
        assert_eq!(collect(&q), b"A!");
        q.advance(2);
        assert!(q.is_empty());
        assert_eq!(collect(&q), b"");
        // Data buffers come back with their contents; batch buffers come back empty.
        let d = q.take_data();
        assert_eq!(&d[..4], b"DATA");
        assert!(q.take_spare(1).is_empty());
    }

    #[test]
    fn pools_bound_what_they_keep() {
        let mut p = BufPool::default();
        for _ in 0..10 {
            p.put(Vec::with_capacity(4 << 20));
        }
        assert!(p.bytes <= SPARE_BYTES);
        assert_eq!(p.bufs.len(), 3);
    }
}
