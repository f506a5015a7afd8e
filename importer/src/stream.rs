//! Small `Read` adapters the pipeline is built from: a reader fed by a channel of chunks,
//! a peeking reader for magic-byte detection, a byte limit for compression bombs, a
//! sequential reader over a `ReadAt`, and the zero-block test.
//!
//! None of these allocate more than one chunk or the peeked head; none retry or hash.

use crate::error::{to_io, ImportError};
use crate::options::CancelFlag;
use platter_formats::ReadAt;
use std::io::{self, Read};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// Chunk size moved between pipeline stages.
pub(crate) const CHUNK: usize = 1 << 20;
/// Zero detection granularity.
pub(crate) const ZERO_BLOCK: usize = 4096;

/// Chunk buffers kept for reuse between stages. A fresh chunk costs a memset and a page
/// fault per 4 KiB; recycled ones cost neither. Bounded, so idle memory stays small.
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const POOL_MAX: usize = 16;

/// A buffer of `n` bytes (contents unspecified: callers overwrite all of it).
pub(crate) fn chunk_buf(n: usize) -> Vec<u8> {
    let reused = POOL.lock().ok().and_then(|mut p| p.pop());
    let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(CHUNK.max(n)));
    buf.resize(n, 0);
    buf
}

/// Hands a chunk buffer back for reuse (buffers of other sizes are just dropped).
pub(crate) fn recycle(buf: Vec<u8>) {
    if buf.capacity() < CHUNK || buf.capacity() > 2 * CHUNK {
        return;
    }
    if let Ok(mut p) = POOL.lock() {
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    }
}

/// One message on a byte channel between stages.
pub(crate) enum Chunk {
    Data(Vec<u8>),
    /// The producer reached the end of its input cleanly.
    End,
    /// The producer failed; the reader reports this error.
    Failed(ImportError),
}

/// A `Read` over the chunks a producer thread sends. A producer that goes away without
/// `End` is an abort (its own error is reported by its thread).
pub(crate) struct ChannelReader {
    rx: Receiver<Chunk>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ChannelReader {
    pub(crate) fn new(rx: Receiver<Chunk>) -> ChannelReader {
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(v)) => {
                    recycle(std::mem::replace(&mut self.cur, v));
                    self.pos = 0;
                }
                Ok(Chunk::End) => {
                    self.done = true;
                    return Ok(0);
                }
                Ok(Chunk::Failed(e)) => {
                    self.done = true;
                    return Err(to_io(e));
                }
                Err(_) => return Err(to_io(ImportError::Aborted("source stage stopped"))),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Buffers the first bytes of a stream so they can be inspected, then replays them.
pub(crate) struct PeekReader<R> {
    inner: R,
    head: Vec<u8>,
    pos: usize,
}

impl<R: Read> PeekReader<R> {
    pub(crate) fn new(inner: R) -> PeekReader<R> {
        PeekReader {
            inner,
            head: Vec::new(),
            pos: 0,
        }
    }

    /// Returns up to `n` leading bytes (fewer only at end of stream). Must be called
    /// before the first `read`.
    pub(crate) fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.head.len() < n {
            let old = self.head.len();
            self.head.resize(n, 0);
            match self.inner.read(&mut self.head[old..]) {
                Ok(0) => {
                    self.head.truncate(old);
                    break;
                }
                Ok(k) => self.head.truncate(old + k),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.head.truncate(old),
                Err(e) => {
                    self.head.truncate(old);
                    return Err(e);
                }
            }
        }
        Ok(&self.head[..self.head.len().min(n)])
    }
}

impl<R: Read> Read for PeekReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.pos);
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.head.len() {
                self.head = Vec::new();
                self.pos = 0;
            }
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

/// Sequential reads over a `ReadAt` (a local file, a range of one) from `start` to `end`.
pub(crate) struct ReadAtStream {
    src: Arc<dyn ReadAt>,
    pos: u64,
    end: u64,
}

impl ReadAtStream {
    pub(crate) fn new(src: Arc<dyn ReadAt>, start: u64, end: u64) -> ReadAtStream {
        ReadAtStream {
            src,
            pos: start,
            end,
        }
    }
}

impl Read for ReadAtStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.end.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.src.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A window `[offset, offset+len)` of another `ReadAt` (a tar member of an OVA).
pub(crate) struct SubReadAt {
    pub(crate) inner: Arc<dyn ReadAt>,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

impl ReadAt for SubReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the end of a {}-byte member",
                    buf.len(),
                    self.len
                ),
            ));
        }
        self.inner.read_exact_at(buf, self.offset + offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// Reads until `buf` is full or the stream ends; returns the count.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// True if every byte is zero (early exit on the head, then word-at-a-time).
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    // Data blocks almost always differ from zero in their first bytes: exit early.
    if buf.iter().take(32).any(|&b| b != 0) {
        return false;
    }
    let (words, rest) = buf.split_at(buf.len() - buf.len() % 8);
    words.chunks_exact(8).fold(0u64, |acc, w| {
        acc | u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
    }) == 0
        && rest.iter().all(|&b| b == 0)
}

/// Returns `Cancelled` once the flag is set.
pub(crate) fn check_cancel(c: &CancelFlag) -> Result<(), ImportError> {
    if c.is_cancelled() {
        Err(ImportError::Cancelled)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_then_read_replays() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut p = PeekReader::new(&data[..]);
        assert_eq!(p.peek(10).unwrap(), &data[..10]);
        assert_eq!(p.peek(200).unwrap(), &data[..]);
        let mut out = Vec::new();
        p.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn zero_test() {
        assert!(is_zero(&[0u8; 4096]));
        let mut b = [0u8; 4099];
        b[4098] = 1;
        assert!(!is_zero(&b));
        b[4098] = 0;
        b[3] = 1;
        assert!(!is_zero(&b));
    }
}
