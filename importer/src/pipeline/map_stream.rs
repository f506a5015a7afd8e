//! A dynamic VHD, a VDI, a VHDX or a monolithicSparse VMDK that arrives as a
//! forward-only stream (inside gzip/xz/zstd/bz2, on stdin, in a tar in a registry layer)
//! decoded in one pass, without a spool file: `qemu-img` writes their block tables in
//! front of the data, so the tables are read into memory first
//! ([`platter_formats::streammap::plan`] says how far), and the rest of the stream then
//! passes once, mapped file ranges going to the write stage as guest data and the bytes
//! in between (bitmaps aside, metadata and slack) being read and dropped.
//!
//! Read-ahead is bounded by [`MAX_PREFIX`]: an image whose tables reach further, or one
//! the planner cannot map in one pass (a VHDX log to replay, a differencing VHDX, a VHD
//! whose footer copy is damaged, a format it does not plan...), is spooled to an
//! unlinked temporary file and read from there, the bytes already read chained in front
//! of the rest, with a message saying why. A stream that ends before its tables
//! do is decoded from memory by the random-access reader (it is under [`MAX_PREFIX`]), so
//! its errors are the reader's. A stream that ends inside mapped data is a truncation
//! error, and the whole stream is bounded by the image's size, so junk behind a small
//! image is a `TooLarge` error, as with a spool. This module never seeks and never
//! commits.

use super::{decode_random, final_size, open_image, DecodeCtx, Decoded, Out};
use crate::error::{from_io, ImportError};
use crate::spool::spool;
use crate::stream::{check_cancel, chunk_buf, read_full, recycle, CHUNK};
use platter_formats::detect::Wrapper;
use platter_formats::streammap::{apply_bitmap, plan, HostMap, HostRun, Plan};
use platter_formats::{Format, FormatError, MemImage};
use platter_types::format_size;
use std::io::{Cursor, Read};
use std::sync::Arc;

/// Most bytes of a stream read ahead into memory to reach the end of an image's tables
/// (qemu-img puts them within the first few MiB of all but huge images).
pub(crate) const MAX_PREFIX: u64 = 64 << 20;
/// Smallest read-ahead step, so planning (which starts over on each step) runs a few
/// times at most.
const MIN_STEP: u64 = 1 << 20;

/// How the decode goes on once the tables are read.
enum Start {
    Map(HostMap),
    /// The stream ended within the read-ahead: the whole image is in memory.
    Whole,
    /// Not decodable in one pass, for this reason.
    Spool(String),
}

/// Decodes a `format` stream: in one pass when its tables come first, else through the
/// spool (see the module docs). `limit` bounds the spool.
pub(super) fn decode_mapped(
    r: &mut dyn Read,
    format: Format,
    ctx: &DecodeCtx<'_>,
    wrappers: &[Wrapper],
    limit: Option<(u64, String)>,
    inside: &str,
) -> Result<Decoded, ImportError> {
    let (prefix, start) = read_tables(r, format, ctx)?;
    let decoded = |virtual_size, spooled| Decoded {
        format,
        wrappers: wrappers.to_vec(),
        virtual_size,
        spooled,
        member: None,
    };
    match start {
        Start::Map(map) => {
            ctx.progress.detail(format!(
                "{} is a {format} image inside a stream ({inside}): decoding it in one pass, without a spool file",
                ctx.what
            ));
            let size = stream_map(r, prefix, &map, format, ctx)?;
            Ok(decoded(size, false))
        }
        Start::Whole => {
            ctx.progress.detail(format!(
                "{} is a {format} image inside a stream ({inside}) of {}: decoding it from memory",
                ctx.what,
                format_size(prefix.len() as u64)
            ));
            let img = open_image(format, Arc::new(MemImage(prefix)))
                .map_err(|e| ImportError::format(ctx.what.clone(), e))?;
            let size = decode_random(img.as_ref(), ctx)?;
            Ok(decoded(size, false))
        }
        Start::Spool(why) => {
            ctx.progress.message(format!(
                "{} is a {format} image inside a stream ({inside}) that cannot be decoded in one pass ({why}): spooling it to a temporary file for random access",
                ctx.what
            ));
            let mut rest = Cursor::new(prefix).chain(r);
            decode_spooled(&mut rest, format, ctx, wrappers, limit)
        }
    }
}

/// Copies the stream to a spool file (bounded by `limit`) and decodes it from there.
fn decode_spooled(
    r: &mut dyn Read,
    format: Format,
    ctx: &DecodeCtx<'_>,
    wrappers: &[Wrapper],
    limit: Option<(u64, String)>,
) -> Result<Decoded, ImportError> {
    let (file, _len) = spool(
        r,
        ctx.opts.temp_dir.as_deref(),
        limit,
        &ctx.what,
        &ctx.opts.cancel,
    )?;
    let img =
        open_image(format, Arc::new(file)).map_err(|e| ImportError::format(ctx.what.clone(), e))?;
    let size = decode_random(img.as_ref(), ctx)?;
    Ok(Decoded {
        format,
        wrappers: wrappers.to_vec(),
        virtual_size: size,
        spooled: true,
        member: None,
    })
}

/// Reads the stream's first bytes until the planner has every table, gives up, or the
/// stream ends. Returns the bytes read and what to do next.
fn read_tables(
    r: &mut dyn Read,
    format: Format,
    ctx: &DecodeCtx<'_>,
) -> Result<(Vec<u8>, Start), ImportError> {
    let mut prefix = Vec::new();
    loop {
        check_cancel(&ctx.opts.cancel)?;
        let want = match plan(format, &prefix).map_err(|e| ImportError::format(&ctx.what, e))? {
            Plan::Map(m) => return Ok((prefix, Start::Map(m))),
            Plan::NotStreamable(why) => return Ok((prefix, Start::Spool(why))),
            Plan::Need(want) => want,
        };
        if want > MAX_PREFIX {
            let why = format!(
                "its tables reach offset {want}, past the {} it may read ahead",
                format_size(MAX_PREFIX)
            );
            return Ok((prefix, Start::Spool(why)));
        }
        let have = prefix.len() as u64;
        let target = want.max(have.saturating_mul(2).clamp(MIN_STEP, MAX_PREFIX));
        // `target` is at most MAX_PREFIX, so it fits in memory.
        prefix.resize(target as usize, 0);
        let n = read_full(r, &mut prefix[have as usize..])
            .map_err(|e| from_io(format!("reading {}", ctx.what), e))?;
        prefix.truncate(have as usize + n);
        if (prefix.len() as u64) < want {
            return Ok((prefix, Start::Whole));
        }
    }
}

/// Passes the stream (`prefix`, then `r`) once, sending the guest data `map` finds in it
/// to the write stage. Returns the virtual size.
fn stream_map(
    r: &mut dyn Read,
    prefix: Vec<u8>,
    map: &HostMap,
    format: Format,
    ctx: &DecodeCtx<'_>,
) -> Result<u64, ImportError> {
    let vsize = map.virtual_size;
    ctx.send(Out::Size(final_size(vsize, ctx.opts, &ctx.what)?))?;
    ctx.progress.message(format!(
        "{}: {format} image, virtual size {}, data in {} runs",
        ctx.what,
        format_size(vsize),
        map.runs.len()
    ));
    for &(offset, len) in &map.zeros {
        ctx.send(Out::Zero { offset, len })?;
    }
    // Image bytes besides the data: tables, bitmaps, padding (generous: a spool of the
    // same image is bounded alike).
    let limit = vsize
        .saturating_add(vsize / 8)
        .saturating_add(prefix.len() as u64)
        .saturating_add(64 << 20);
    let mut input = Input {
        r: Cursor::new(prefix).chain(r),
        pos: 0,
        limit,
        scratch: Vec::new(),
        ctx,
        format,
    };
    let mut bitmap = Vec::new();
    for run in &map.runs {
        check_cancel(&ctx.opts.cancel)?;
        input.skip_to(run.host)?;
        if run.bitmap_len > 0 {
            bitmap.resize(run.bitmap_len as usize, 0);
            input.read(&mut bitmap, run, 0)?;
        }
        let mut done = 0u64;
        while done < run.len {
            check_cancel(&ctx.opts.cancel)?;
            let n = (run.len - done).min(CHUNK as u64) as usize;
            let mut buf = chunk_buf(n);
            if let Err(e) = input.read(&mut buf, run, done) {
                recycle(buf);
                return Err(e);
            }
            if run.bitmap_len > 0 {
                apply_bitmap(&bitmap, done, &mut buf);
            }
            ctx.send(Out::Data {
                offset: run.guest + done,
                buf,
            })?;
            done += n as u64;
        }
    }
    // The rest is read too: a wrapper checks its own checksum at its end.
    input.drain()?;
    ctx.progress.flush();
    Ok(vsize)
}

/// The stream, with its position (a file offset of the image) and bound.
struct Input<'a, 'c, R> {
    r: R,
    pos: u64,
    limit: u64,
    scratch: Vec<u8>,
    ctx: &'a DecodeCtx<'c>,
    format: Format,
}

impl<R: Read> Input<'_, '_, R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ImportError> {
        let n = read_full(&mut self.r, buf)
            .map_err(|e| from_io(format!("reading {}", self.ctx.what), e))?;
        self.pos += n as u64;
        if self.pos > self.limit {
            return Err(ImportError::TooLarge {
                what: self.ctx.what.clone(),
                limit: self.limit,
                why: "the stream is far longer than its image needs".into(),
            });
        }
        Ok(n)
    }

    /// Reads all of `buf`, the part of `run` `done` guest bytes in (or its bitmap).
    fn read(&mut self, buf: &mut [u8], run: &HostRun, done: u64) -> Result<(), ImportError> {
        let at = self.pos;
        if self.fill(buf)? < buf.len() {
            let what = match (run.bitmap_len, at < run.data_host()) {
                (1.., true) => format!(
                    "{} sector bitmap of the block at guest offset {}",
                    self.format, run.guest
                ),
                _ => format!("{} data for guest offset {}", self.format, run.guest + done),
            };
            return Err(ImportError::format(
                &self.ctx.what,
                FormatError::Truncated { what, offset: at },
            ));
        }
        Ok(())
    }

    /// Reads and drops the bytes up to file offset `to` (never behind the position: the
    /// map's runs are sorted and disjoint).
    fn skip_to(&mut self, to: u64) -> Result<(), ImportError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(CHUNK, 0);
        let res = (|| {
            while self.pos < to {
                check_cancel(&self.ctx.opts.cancel)?;
                let n = (to - self.pos).min(CHUNK as u64) as usize;
                let at = self.pos;
                if self.fill(&mut scratch[..n])? < n {
                    return Err(ImportError::format(
                        &self.ctx.what,
                        FormatError::Truncated {
                            what: format!("{} metadata before offset {to}", self.format),
                            offset: at,
                        },
                    ));
                }
            }
            Ok(())
        })();
        self.scratch = scratch;
        res
    }

    /// Reads to the end of the stream.
    fn drain(&mut self) -> Result<(), ImportError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(CHUNK, 0);
        loop {
            check_cancel(&self.ctx.opts.cancel)?;
            if self.fill(&mut scratch)? == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::ImportOptions;
    use crate::pipeline::out_channel;
    use crate::progress::{ProgressEvent, Throttle};
    use std::sync::Mutex;

    /// A dynamic VHD of 3 blocks of 4 KiB: block 0 with sectors 0-1 present (0x11), block
    /// 1 unallocated, block 2 full (0x22); `bat_last` puts the BAT after the data.
    fn vhd(bat_last: bool) -> Vec<u8> {
        use platter_formats::vhd::checksum as sum;
        let mut footer = vec![0u8; 512];
        footer[..8].copy_from_slice(b"conectix");
        footer[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        footer[16..24].copy_from_slice(&512u64.to_be_bytes());
        footer[48..56].copy_from_slice(&(3u64 * 4096).to_be_bytes());
        footer[60..64].copy_from_slice(&3u32.to_be_bytes());
        let c = sum(&footer, 64);
        footer[64..68].copy_from_slice(&c.to_be_bytes());
        let bat_at: u64 = if bat_last { 1536 + 2 * 4608 } else { 1536 };
        let data_at: u32 = if bat_last { 3 } else { 4 };
        let mut dh = vec![0u8; 1024];
        dh[..8].copy_from_slice(b"cxsparse");
        dh[16..24].copy_from_slice(&bat_at.to_be_bytes());
        dh[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        dh[28..32].copy_from_slice(&3u32.to_be_bytes());
        dh[32..36].copy_from_slice(&4096u32.to_be_bytes());
        let c = sum(&dh, 36);
        dh[36..40].copy_from_slice(&c.to_be_bytes());
        let mut bat = vec![0xffu8; 512];
        bat[..4].copy_from_slice(&data_at.to_be_bytes());
        bat[8..12].copy_from_slice(&(data_at + 9).to_be_bytes());
        let mut f = footer.clone();
        f.extend(&dh);
        if !bat_last {
            f.extend(&bat);
        }
        let mut bm = vec![0u8; 512];
        bm[0] = 0xc0;
        f.extend(&bm);
        f.extend([0x11u8; 4096]);
        bm[0] = 0xff;
        f.extend(&bm);
        f.extend([0x22u8; 4096]);
        if bat_last {
            f.extend(&bat);
        }
        f.extend(&footer);
        f
    }

    fn expected() -> Vec<u8> {
        let mut e = vec![0u8; 3 * 4096];
        e[..1024].fill(0x11);
        e[8192..].fill(0x22);
        e
    }

    /// Runs `decode_mapped` over `img`; returns the result, the guest bytes and the
    /// progress messages.
    fn decode(
        img: &[u8],
        opts: &ImportOptions,
    ) -> (Result<Decoded, ImportError>, Vec<u8>, Vec<String>) {
        let messages = Mutex::new(Vec::new());
        let p = |e: ProgressEvent| {
            if let ProgressEvent::Message { text } | ProgressEvent::Detail { text } = e {
                messages.lock().unwrap().push(text);
            }
        };
        let t = Throttle::new(&p);
        let (tx, rx) = out_channel();
        let ctx = DecodeCtx {
            opts,
            progress: &t,
            out: tx,
            what: "test".into(),
            workers: 1,
        };
        let h = std::thread::spawn(move || {
            let mut out = Vec::new();
            while let Ok(m) = rx.recv() {
                match m {
                    Out::Size(s) => out.resize(s as usize, 0xee),
                    Out::Data { offset, buf } => {
                        out[offset as usize..offset as usize + buf.len()].copy_from_slice(&buf)
                    }
                    Out::Zero { offset, len } => {
                        out[offset as usize..(offset + len) as usize].fill(0)
                    }
                }
            }
            out
        });
        let d = decode_mapped(&mut &img[..], Format::Vhd, &ctx, &[], None, "test");
        drop(ctx);
        let out = h.join().unwrap();
        (d, out, messages.into_inner().unwrap())
    }

    #[test]
    fn tables_first_stream_in_one_pass() {
        let mut img = vhd(false);
        let (d, out, msgs) = decode(&img, &ImportOptions::default());
        let d = d.unwrap();
        assert!(!d.spooled);
        assert_eq!(d.virtual_size, 3 * 4096);
        assert_eq!(out, expected());
        assert!(msgs.iter().any(|m| m.contains("in one pass")), "{msgs:?}");

        // Cut inside block 2's data.
        img.truncate(img.len() - 1000);
        let (d, _, _) = decode(&img, &ImportOptions::default());
        let e = d.unwrap_err().to_string();
        assert!(
            e.contains("truncated") && e.contains("guest offset 8192"),
            "{e}"
        );
    }

    #[test]
    fn junk_behind_the_image_is_bounded() {
        let mut img = vhd(false);
        img.extend(vec![1u8; 70 << 20]);
        let (d, _, _) = decode(&img, &ImportOptions::default());
        assert!(matches!(d, Err(ImportError::TooLarge { .. })), "{d:?}");
    }

    #[test]
    fn short_streams_are_decoded_from_memory() {
        // The BAT after the data: the planner needs the whole (small) stream.
        let (d, out, _) = decode(&vhd(true), &ImportOptions::default());
        assert!(!d.unwrap().spooled);
        assert_eq!(out, expected());
        // Cut inside its BAT: the reader's own error.
        let img = vhd(true);
        let (d, _, _) = decode(&img[..10_758], &ImportOptions::default());
        assert!(matches!(d, Err(ImportError::Format { .. })), "{d:?}");
    }

    #[test]
    fn what_cannot_stream_is_spooled_whole() {
        // A damaged footer copy: the reader uses the footer at the end.
        let dir = tempfile::tempdir().unwrap();
        let opts = ImportOptions {
            temp_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let mut img = vhd(false);
        img[100] ^= 1;
        let (d, out, msgs) = decode(&img, &opts);
        assert!(d.unwrap().spooled);
        assert_eq!(out, expected());
        assert!(
            msgs.iter()
                .any(|m| m.contains("cannot be decoded in one pass (the footer copy")),
            "{msgs:?}"
        );
    }
}
