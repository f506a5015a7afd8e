//! A qcow2 image that arrives as a forward-only stream (inside gzip/xz/zstd, in a tar in
//! a registry layer, on stdin) decoded in one pass with
//! [`platter_formats::qcow2::Qcow2Stream`]: guest data goes to the write stage as the
//! stream passes it, with no spool file for images laid out as `qemu-img` writes them.
//!
//! The decoder's stash (host bytes that came before the table mapping them) is kept
//! here: in memory up to [`STASH_MEMORY`], then in an unlinked temporary file bounded by
//! the image's declared size, like a spool but holding only those bytes. All-zero
//! blocks are never stored. This module never seeks the input and never commits.

use super::{final_size, DecodeCtx, Decoded, Out};
use crate::error::{from_io, ImportError};
use crate::stream::{check_cancel, chunk_buf, is_zero, read_full, recycle, CHUNK, ZERO_BLOCK};
use platter_formats::detect::Wrapper;
use platter_formats::qcow2::{
    CompressedCluster, CompressionType, Qcow2Stream, StreamHandler, StreamInfo, StreamStats,
};
use platter_formats::{Format, FormatError};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Stashed bytes kept in memory before the rest go to a temporary file.
pub(crate) const STASH_MEMORY: u64 = 32 << 20;

/// What a streamed qcow2 decode did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamOutcome {
    pub virtual_size: u64,
    pub stats: StreamStats,
    /// Non-zero stashed bytes written to the temporary file (0: no file was made).
    pub spooled_bytes: u64,
    /// Most non-zero stashed bytes held in memory at once.
    pub memory_peak: u64,
}

/// Decodes a qcow2 stream in one pass; only clusters that come before the table mapping
/// them are kept (in memory, then a temporary file), and the messages say how much.
pub(super) fn decode_qcow2(
    r: &mut dyn Read,
    ctx: &DecodeCtx<'_>,
    wrappers: &[Wrapper],
    limit: Option<(u64, String)>,
    inside: &str,
) -> Result<Decoded, ImportError> {
    ctx.progress.detail(format!(
        "{} is a qcow2 image inside a stream ({inside}): decoding it in one pass, without a spool file",
        ctx.what
    ));
    let o = decode_qcow2_stream(r, ctx, limit)?;
    if o.stats.recalled > 0 || o.spooled_bytes > 0 || o.stats.deferred_tables > 0 {
        ctx.progress.message(format!(
            "{}: {} bytes of clusters came before the tables mapping them; spooled {} bytes to a temporary file ({} bytes kept in memory)",
            ctx.what, o.stats.recalled, o.spooled_bytes, o.memory_peak
        ));
    }
    Ok(Decoded {
        format: Format::Qcow2,
        wrappers: wrappers.to_vec(),
        virtual_size: o.virtual_size,
        spooled: o.spooled_bytes > 0,
        member: None,
    })
}

/// Decodes a qcow2 stream into `ctx.out`. `limit` bounds the host offsets the stash may
/// keep (a compression bomb cannot fill the disk).
pub(crate) fn decode_qcow2_stream(
    r: &mut dyn Read,
    ctx: &DecodeCtx<'_>,
    limit: Option<(u64, String)>,
) -> Result<StreamOutcome, ImportError> {
    let mut dec = Qcow2Stream::new();
    let mut h = Handler {
        ctx,
        info: None,
        pending: None,
        inflate: Vec::new(),
        stash: Stash::new(ctx.opts.temp_dir.as_deref(), limit.clone(), STASH_MEMORY),
    };
    let res = feed_all(r, &mut dec, &mut h, ctx, limit.as_ref());
    let res = res.and_then(|()| {
        let stats = dec.finish(&mut h)?;
        h.flush()?;
        Ok(stats)
    });
    let stats = res.map_err(|e| e.into_import(&ctx.what))?;
    let info = h.info.as_ref().map_or(0, |i| i.virtual_size);
    Ok(StreamOutcome {
        virtual_size: info,
        stats,
        spooled_bytes: h.stash.file_bytes,
        memory_peak: h.stash.mem_peak,
    })
}

fn feed_all(
    r: &mut dyn Read,
    dec: &mut Qcow2Stream,
    h: &mut Handler<'_, '_>,
    ctx: &DecodeCtx<'_>,
    limit: Option<&(u64, String)>,
) -> Result<(), HandlerError> {
    loop {
        check_cancel(&ctx.opts.cancel)?;
        let mut buf = chunk_buf(CHUNK);
        let n = read_full(r, &mut buf).map_err(|e| from_io(format!("reading {}", ctx.what), e))?;
        if n == 0 {
            recycle(buf);
            return Ok(());
        }
        // As with a spool, a stream far longer than its image declares is a bomb, even
        // when the bytes past the image's tables would only be skipped.
        if let Some((max, why)) = limit {
            if dec.position() + n as u64 > *max {
                recycle(buf);
                return Err(ImportError::TooLarge {
                    what: ctx.what.clone(),
                    limit: *max,
                    why: why.clone(),
                }
                .into());
            }
        }
        let res = dec.feed(&buf[..n], h);
        recycle(buf);
        res?;
    }
}

/// Errors inside the decode: the image's (named after the source at the end) or ours.
enum HandlerError {
    Format(FormatError),
    Import(ImportError),
}

impl From<FormatError> for HandlerError {
    fn from(e: FormatError) -> Self {
        HandlerError::Format(e)
    }
}

impl From<ImportError> for HandlerError {
    fn from(e: ImportError) -> Self {
        HandlerError::Import(e)
    }
}

impl HandlerError {
    fn into_import(self, what: &str) -> ImportError {
        match self {
            HandlerError::Format(e) => ImportError::format(what, e),
            HandlerError::Import(e) => e,
        }
    }
}

struct Handler<'a, 'c> {
    ctx: &'a DecodeCtx<'c>,
    info: Option<StreamInfo>,
    /// Guest data being gathered into one write-stage message: (guest offset, bytes).
    pending: Option<(u64, Vec<u8>)>,
    /// One cluster, for decompression.
    inflate: Vec<u8>,
    stash: Stash,
}

impl Handler<'_, '_> {
    fn send(&self, m: Out) -> Result<(), ImportError> {
        self.ctx
            .out
            .send(m)
            .map_err(|_| ImportError::Aborted("write stage stopped"))
    }

    fn flush(&mut self) -> Result<(), ImportError> {
        match self.pending.take() {
            Some((offset, buf)) if !buf.is_empty() => self.send(Out::Data { offset, buf }),
            Some((_, buf)) => {
                recycle(buf);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn compression(&self) -> CompressionType {
        self.info
            .as_ref()
            .map_or(CompressionType::Zlib, |i| i.compression)
    }
}

impl StreamHandler for Handler<'_, '_> {
    type Error = HandlerError;

    fn start(&mut self, info: &StreamInfo) -> Result<(), HandlerError> {
        let size = final_size(info.virtual_size, self.ctx.opts, &self.ctx.what)?;
        self.send(Out::Size(size))?;
        self.ctx.progress.message(format!(
            "{}: qcow2 image, virtual size {}, cluster size {}",
            self.ctx.what,
            platter_types::format_size(info.virtual_size),
            platter_types::format_size(info.cluster_size)
        ));
        self.inflate = vec![0u8; info.cluster_size as usize];
        self.info = Some(info.clone());
        Ok(())
    }

    fn data(&mut self, guest: u64, bytes: &[u8]) -> Result<(), HandlerError> {
        let mut guest = guest;
        let mut bytes = bytes;
        while !bytes.is_empty() {
            match &mut self.pending {
                Some((g, buf)) if *g + buf.len() as u64 == guest && buf.len() < CHUNK => {
                    let n = bytes.len().min(CHUNK - buf.len());
                    buf.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    guest += n as u64;
                }
                _ => {
                    self.flush()?;
                    let mut buf = chunk_buf(0);
                    let n = bytes.len().min(CHUNK);
                    buf.extend_from_slice(&bytes[..n]);
                    self.pending = Some((guest, buf));
                    bytes = &bytes[n..];
                    guest += n as u64;
                }
            }
        }
        Ok(())
    }

    fn zero(&mut self, guest: u64, len: u64) -> Result<(), HandlerError> {
        if len > 0 {
            self.send(Out::Zero { offset: guest, len })?;
        }
        Ok(())
    }

    fn compressed(&mut self, c: CompressedCluster<'_>) -> Result<(), HandlerError> {
        let kind = self.compression();
        let mut out = std::mem::take(&mut self.inflate);
        let res = c.decompress(kind, &mut out);
        let res = match res {
            Ok(()) => self.data(c.guest, out.get(..c.len).unwrap_or(&out)),
            Err(e) => Err(e.into()),
        };
        self.inflate = out;
        res
    }

    fn stash(&mut self, host: u64, bytes: &[u8]) -> Result<(), HandlerError> {
        Ok(self.stash.put(host, bytes, &self.ctx.what)?)
    }

    fn recall(&mut self, host: u64, buf: &mut [u8]) -> Result<(), HandlerError> {
        Ok(self.stash.get(host, buf)?)
    }

    fn release_stash(&mut self) -> Result<(), HandlerError> {
        self.stash.clear();
        Ok(())
    }
}

/// Bytes kept for later by host offset: non-zero runs in memory up to a budget, the rest
/// in an unlinked temporary file at their own offsets (sparse).
pub(crate) struct Stash {
    /// Disjoint runs, by host offset.
    mem: BTreeMap<u64, Vec<u8>>,
    mem_bytes: u64,
    mem_budget: u64,
    mem_peak: u64,
    file: Option<File>,
    file_bytes: u64,
    dir: Option<PathBuf>,
    limit: Option<(u64, String)>,
}

impl Stash {
    pub(crate) fn new(dir: Option<&Path>, limit: Option<(u64, String)>, budget: u64) -> Stash {
        Stash {
            mem: BTreeMap::new(),
            mem_bytes: 0,
            mem_budget: budget,
            mem_peak: 0,
            file: None,
            file_bytes: 0,
            dir: dir.map(Path::to_path_buf),
            limit,
        }
    }

    /// Keeps `bytes` from host offset `host` (never overlapping an earlier put).
    pub(crate) fn put(&mut self, host: u64, bytes: &[u8], what: &str) -> Result<(), ImportError> {
        let mut off = 0usize;
        while off < bytes.len() {
            // Blocks follow host offsets, so a later put continues an earlier run.
            let block_end = |o: usize| {
                let abs = host + o as u64;
                (o + ZERO_BLOCK - (abs % ZERO_BLOCK as u64) as usize).min(bytes.len())
            };
            let end = block_end(off);
            if is_zero(&bytes[off..end]) {
                off = end;
                continue;
            }
            let mut run_end = end;
            while run_end < bytes.len() {
                let next = block_end(run_end);
                if is_zero(&bytes[run_end..next]) {
                    break;
                }
                run_end = next;
            }
            self.keep(host + off as u64, &bytes[off..run_end], what)?;
            off = run_end;
        }
        Ok(())
    }

    fn keep(&mut self, host: u64, run: &[u8], what: &str) -> Result<(), ImportError> {
        let end = host + run.len() as u64;
        if let Some((max, why)) = &self.limit {
            if end > *max {
                return Err(ImportError::TooLarge {
                    what: what.to_string(),
                    limit: *max,
                    why: why.clone(),
                });
            }
        }
        if self.mem_bytes + run.len() as u64 <= self.mem_budget {
            self.mem_bytes += run.len() as u64;
            self.mem_peak = self.mem_peak.max(self.mem_bytes);
            if let Some((start, v)) = self.mem.range_mut(..host).next_back() {
                if *start + v.len() as u64 == host {
                    v.extend_from_slice(run);
                    return Ok(());
                }
            }
            self.mem.insert(host, run.to_vec());
            return Ok(());
        }
        if self.file.is_none() {
            let f = match &self.dir {
                Some(d) => tempfile::tempfile_in(d),
                None => tempfile::tempfile(),
            }
            .map_err(|e| {
                ImportError::io("creating a temporary file for out-of-order clusters", e)
            })?;
            self.file = Some(f);
        }
        if let Some(f) = &self.file {
            f.write_all_at(run, host)
                .map_err(|e| ImportError::io("writing out-of-order clusters", e))?;
        }
        self.file_bytes += run.len() as u64;
        Ok(())
    }

    /// Fills `buf` from host offset `host`; bytes never kept read as zeros.
    pub(crate) fn get(&self, host: u64, buf: &mut [u8]) -> Result<(), ImportError> {
        buf.fill(0);
        let end = host + buf.len() as u64;
        if let Some(f) = &self.file {
            let mut done = 0;
            while done < buf.len() {
                match f.read_at(&mut buf[done..], host + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ImportError::io("reading out-of-order clusters back", e)),
                }
            }
        }
        for (&start, v) in self.mem.range(..end).rev() {
            let vend = start + v.len() as u64;
            if vend <= host {
                break;
            }
            let from = start.max(host);
            let to = vend.min(end);
            buf[(from - host) as usize..(to - host) as usize]
                .copy_from_slice(&v[(from - start) as usize..(to - start) as usize]);
        }
        Ok(())
    }

    /// Drops everything (the temporary file has no name, so closing it frees it).
    pub(crate) fn clear(&mut self) {
        self.mem = BTreeMap::new();
        self.mem_bytes = 0;
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stash_spills_past_its_budget_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Stash::new(Some(dir.path()), None, 10_000);
        let a: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut b = vec![0u8; 3 * 4096];
        b[5000] = 7;
        s.put(100, &a, "t").unwrap();
        s.put(9100, &b, "t").unwrap();
        s.put(30_000, &a, "t").unwrap();
        assert!(s.file.is_some());
        assert!(s.mem_bytes <= 10_000 && s.file_bytes > 0);
        let mut back = vec![0u8; 9000];
        s.get(30_000, &mut back).unwrap();
        assert_eq!(back, a);
        let mut back = vec![0u8; 20_000];
        s.get(50, &mut back).unwrap();
        assert_eq!(&back[50..9050], &a[..]);
        assert_eq!(back[9050 + 5000], 7);
        assert_eq!(back.iter().filter(|&&x| x != 0).count(), 9001);
        // Only the non-zero block of `b` was kept.
        assert!(s.mem_bytes + s.file_bytes < 9000 * 2 + 4096 + 1);
        s.clear();
        assert!(s.file.is_none() && s.mem.is_empty());
    }

    #[test]
    fn stash_is_bounded() {
        let mut s = Stash::new(None, Some((1 << 20, "declared".into())), 0);
        assert!(s.put(0, &[1u8; 100], "t").is_ok());
        let e = s.put(1 << 20, &[1u8; 100], "t").unwrap_err();
        assert!(matches!(e, ImportError::TooLarge { .. }), "{e}");
    }
}
