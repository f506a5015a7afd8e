//! The streaming import pipeline: source stage (read, hash, count) -> decode stage
//! (unwrap gz/xz/zstd/bz2/tar, detect, decode; a qcow2 stream in one pass through
//! [`qcow2_stream`], a compressed streamOptimized vmdk through `vmdk_stream`, a dynamic
//! vhd, vdi, vhdx or sparse vmdk whose tables come first through `map_stream`, which
//! spools what cannot be decoded in one pass) -> write stage (zero detection, sink).
//! Stages are threads joined by bounded channels, so at most a few MiB are in flight
//! whatever the image size (plus the tables of a planned format, read ahead up to
//! `map_stream::MAX_PREFIX`).
//!
//! The pipeline never decides where data goes (the sink does) and never commits: the
//! caller finishes the sink only after every stage succeeded and every digest matched.

use crate::checksum::{Checksum, MultiHasher};
use crate::error::{from_io, ImportError};
use crate::options::{CancelFlag, ImportOptions};
use crate::progress::Throttle;
use crate::stream::{
    check_cancel, chunk_buf, read_full, recycle, Chunk, PeekReader, SubReadAt, CHUNK, ZERO_BLOCK,
};
use crate::tar::sparse::SparseReadAt;
use crate::tar::{next_disk_member, TarEntry, TarInput, TarReader};
use platter_formats::detect::{detect_wrapper, Wrapper, DETECT_HEAD_LEN};
use platter_formats::{detect, DiskImage, ExtentKind, Format, FormatError, ReadAt};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

mod map_stream;
mod qcow2_stream;
mod vmdk_stream;

pub use crate::writer::WriteStats;
pub(crate) use crate::writer::{run_writer, Out};

/// How many wrappers (gz in tar in xz ...) may be nested.
pub const MAX_WRAPPER_DEPTH: usize = 4;
/// Guest bytes one decode worker claims at a time.
const WINDOW: u64 = 4 << 20;

/// What the decode stage found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub format: Format,
    pub wrappers: Vec<Wrapper>,
    pub virtual_size: u64,
    /// The image went through a spool file (it needed random access but came as a stream).
    pub spooled: bool,
    /// Which archive member was the disk, if any.
    pub member: Option<String>,
}

/// Everything the decode stage needs.
pub(crate) struct DecodeCtx<'a> {
    pub opts: &'a ImportOptions,
    pub progress: &'a Throttle<'a>,
    pub out: SyncSender<Out>,
    /// Name of the source for messages and errors.
    pub what: String,
    /// Decode threads for random-access images (more for HTTP: latency-bound).
    pub workers: usize,
}

impl DecodeCtx<'_> {
    fn send(&self, m: Out) -> Result<(), ImportError> {
        self.out
            .send(m)
            .map_err(|_| ImportError::Aborted("write stage stopped"))
    }
}

/// Formats that are read by offset; the rest are decoded as a byte stream.
pub(crate) fn needs_random_access(f: Format) -> bool {
    !matches!(f, Format::Raw | Format::Iso)
}

/// Opens a format reader over `src`.
pub(crate) fn open_image(
    format: Format,
    src: Arc<dyn ReadAt>,
) -> Result<Box<dyn DiskImage>, FormatError> {
    use platter_formats::{qcow2, raw, vdi, vhd, vhdx, vmdk};
    Ok(match format {
        Format::Qcow2 => Box::new(qcow2::Qcow2Image::open(src)?),
        Format::Vhd => Box::new(vhd::VhdImage::open(src)?),
        Format::Vdi => Box::new(vdi::VdiImage::open(src)?),
        Format::Vmdk => Box::new(vmdk::VmdkImage::open(src)?),
        Format::Vhdx => Box::new(vhdx::VhdxImage::open(src)?),
        Format::Raw | Format::Iso => Box::new(raw::RawImage::open(src)?),
    })
}

/// `--backing` is for qcow2 overlays only; anything else given one is refused before
/// any data is written.
fn check_backing_format(format: Format, ctx: &DecodeCtx<'_>) -> Result<(), ImportError> {
    match &ctx.opts.backing {
        Some(b) if format != Format::Qcow2 => Err(ImportError::Unsupported {
            what: ctx.what.clone(),
            detail: format!(
                "--backing {} is for qcow2 overlays, and this is a {format} image",
                b.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// Opens the image to import: with `--backing`, a qcow2 overlay whose unallocated
/// clusters read from that image (so the result is the merged disk); without it,
/// [`open_image`], which refuses an overlay by the name of its backing file.
pub(crate) fn open_for_import(
    format: Format,
    src: Arc<dyn ReadAt>,
    ctx: &DecodeCtx<'_>,
) -> Result<Box<dyn DiskImage>, ImportError> {
    use platter_formats::qcow2::{read_header, Qcow2Image};
    let fmt_err = |e| ImportError::format(ctx.what.clone(), e);
    let Some(path) = ctx
        .opts
        .backing
        .as_deref()
        .filter(|_| format == Format::Qcow2)
    else {
        return open_image(format, src).map_err(fmt_err);
    };
    let (header, ext) = read_header(&*src).map_err(fmt_err)?;
    if !header.has_backing_file() {
        return Err(ImportError::Unsupported {
            what: ctx.what.clone(),
            detail: format!(
                "--backing {} was given, but the qcow2 image has no backing file",
                path.display()
            ),
        });
    }
    let named = ext.backing_file.unwrap_or_default();
    let backing = open_backing(path, ext.backing_format.as_deref(), &named)?;
    ctx.progress.message(format!(
        "{}: qcow2 overlay of {named:?}; unallocated clusters read from {} ({} image)",
        ctx.what,
        path.display(),
        backing.format()
    ));
    Ok(Box::new(
        Qcow2Image::open_with_backing(src, backing).map_err(fmt_err)?,
    ))
}

/// Opens `--backing FILE` read-only: in the format the overlay names for it, else the
/// one its magic bytes say. A backing image with a backing file of its own is refused
/// (one level is supported; `qemu-img convert` flattens a longer chain).
fn open_backing(
    path: &std::path::Path,
    named_format: Option<&str>,
    named: &str,
) -> Result<Box<dyn DiskImage>, ImportError> {
    let what = format!("backing image {}", path.display());
    let (f, len) = crate::source::file::open(path)?;
    let src: Arc<dyn ReadAt> = Arc::new(f);
    let format = match named_format.and_then(|n| n.parse::<Format>().ok()) {
        Some(f) => f,
        None => {
            let mut head = vec![0u8; len.min(DETECT_HEAD_LEN as u64) as usize];
            src.read_exact_at(&mut head, 0)
                .map_err(|e| from_io(format!("reading {what}"), e))?;
            detect(&head, Some(len))
        }
    };
    open_image(format, src).map_err(|e| match e {
        FormatError::BackingFile { path: inner } => ImportError::Unsupported {
            what: what.clone(),
            detail: format!(
                "it has a backing file {inner:?} of its own; only one level is supported (flatten {named:?} with qemu-img convert first)"
            ),
        },
        e => ImportError::format(what.clone(), e),
    })
}

// ---------------------------------------------------------------------------------------
// Source stage

/// Result of the source stage.
pub(crate) struct SourceStats {
    pub digests: Vec<Checksum>,
    pub bytes: u64,
}

/// Reads the source in chunks, hashing and counting, and hands them to the decode stage.
/// With `drain`, keeps reading (and hashing) to the end even after the decode stage
/// stopped wanting bytes, so digests cover the whole source.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_source(
    reader: &mut dyn Read,
    mut hasher: MultiHasher,
    tx: SyncSender<Chunk>,
    progress: &Throttle<'_>,
    base: u64,
    drain: bool,
    cancel: &CancelFlag,
    stop: Option<&AtomicBool>,
    what: &str,
) -> Result<SourceStats, ImportError> {
    let mut total = 0u64;
    let mut receiver_alive = true;
    loop {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Err(ImportError::Aborted("decode stage failed"));
        }
        if let Err(e) = check_cancel(cancel) {
            let _ = tx.send(Chunk::Failed(ImportError::Aborted("cancelled")));
            return Err(e);
        }
        let mut buf = chunk_buf(CHUNK);
        let n = match read_full(reader, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Chunk::Failed(ImportError::Aborted("source failed")));
                return Err(from_io(format!("reading {what}"), e));
            }
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hasher.update(&buf);
        total += n as u64;
        progress.bytes(base + total);
        if receiver_alive && tx.send(Chunk::Data(buf)).is_err() {
            receiver_alive = false;
            if !drain {
                break;
            }
        }
    }
    let _ = tx.send(Chunk::End);
    Ok(SourceStats {
        digests: hasher.finish(),
        bytes: total,
    })
}

// ---------------------------------------------------------------------------------------
// Decode stage

/// An input for the tar reader that reads sequentially.
pub(crate) struct Sequential<R>(pub R);

impl<R: Read> Read for Sequential<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl<R: Read> TarInput for Sequential<R> {}

/// A tar input over a `ReadAt` that skips data by moving its offset.
pub(crate) struct SeekInput {
    src: Arc<dyn ReadAt>,
    pos: u64,
    len: u64,
}

impl SeekInput {
    pub(crate) fn new(src: Arc<dyn ReadAt>, len: u64) -> SeekInput {
        SeekInput { src, pos: 0, len }
    }
}

impl Read for SeekInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.len.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.src.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl TarInput for SeekInput {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        match self.pos.checked_add(n) {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(())
            }
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// An upper bound for a spooled image's file size from the size its header declares
/// (metadata and slack included), so a bomb cannot fill the disk.
fn spool_limit(head: &[u8], format: Format, opts: &ImportOptions) -> Option<(u64, String)> {
    let declared = platter_formats::declared_virtual_size(head, format);
    let base = match (declared, opts.size) {
        (Some(d), _) => d,
        (None, Some(s)) => s,
        (None, None) => return None,
    };
    let limit = base.saturating_add(base / 8).saturating_add(64 << 20);
    Some((
        limit,
        format!("the image declares a virtual size of {base} bytes"),
    ))
}

/// Decodes a sequential stream fully into the write stage: unwraps wrappers (tar members
/// are chosen by [`next_disk_member`]), streams raw data, decodes random-access formats
/// in one pass where their layout allows and spools the others.
pub(crate) fn decode_stream(
    r: &mut dyn Read,
    ctx: &DecodeCtx<'_>,
    wrappers: &mut Vec<Wrapper>,
) -> Result<Decoded, ImportError> {
    let mut p = PeekReader::new(r);
    let head = p
        .peek(DETECT_HEAD_LEN)
        .map_err(|e| from_io(format!("reading {}", ctx.what), e))?
        .to_vec();
    if head.is_empty() {
        check_not_empty(0, ctx, wrappers)?;
    }
    if let Some(w) = detect_wrapper(&head) {
        if wrappers.len() >= MAX_WRAPPER_DEPTH {
            return Err(ImportError::Unsupported {
                what: ctx.what.clone(),
                detail: format!(
                    "wrappers nested more than {MAX_WRAPPER_DEPTH} deep ({})",
                    chain(wrappers)
                ),
            });
        }
        wrappers.push(w);
        return match w {
            Wrapper::Gzip => {
                decode_stream(&mut flate2::read::MultiGzDecoder::new(p), ctx, wrappers)
            }
            Wrapper::Xz => decode_stream(
                &mut xz2::read::XzDecoder::new_multi_decoder(p),
                ctx,
                wrappers,
            ),
            Wrapper::Bzip2 => {
                decode_stream(&mut bzip2::read::MultiBzDecoder::new(p), ctx, wrappers)
            }
            Wrapper::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(p)
                    .map_err(|e| ImportError::io(format!("starting zstd for {}", ctx.what), e))?;
                decode_stream(&mut d, ctx, wrappers)
            }
            Wrapper::Tar => decode_tar_stream(Sequential(p), ctx, wrappers),
        };
    }
    let format = match ctx.opts.format {
        Some(f) => f,
        None => detect(&head, None),
    };
    check_backing_format(format, ctx)?;
    if !needs_random_access(format) {
        let strip = ctx.opts.format.is_none();
        let size = stream_raw(&mut p, ctx, strip)?;
        return Ok(Decoded {
            format,
            wrappers: wrappers.clone(),
            virtual_size: size,
            spooled: false,
            member: None,
        });
    }
    let limit = spool_limit(&head, format, ctx.opts);
    let inside = if wrappers.is_empty() {
        "not seekable".to_string()
    } else {
        chain(wrappers)
    };
    if format == Format::Qcow2 && ctx.opts.backing.is_some() {
        // Unallocated clusters read from the backing image, which the one-pass decoder
        // cannot merge in: the overlay (usually small) is read by offset instead.
        ctx.progress.message(format!(
            "{} is a qcow2 overlay inside a stream ({inside}): spooling it to a temporary file to merge it with its backing image",
            ctx.what
        ));
        let (file, _) = crate::spool::spool(
            &mut p,
            ctx.opts.temp_dir.as_deref(),
            limit,
            &ctx.what,
            &ctx.opts.cancel,
        )?;
        let img = open_for_import(format, Arc::new(file), ctx)?;
        let size = decode_random(img.as_ref(), ctx)?;
        return Ok(Decoded {
            format,
            wrappers: wrappers.clone(),
            virtual_size: size,
            spooled: true,
            member: None,
        });
    }
    if format == Format::Qcow2 {
        return qcow2_stream::decode_qcow2(&mut p, ctx, wrappers, limit, &inside);
    }
    // A compressed streamOptimized vmdk is made to be read in order; other vmdks go by
    // their tables below (a header that does not parse is refused there as by the reader).
    if format == Format::Vmdk {
        if let Ok(Some(h)) = vmdk_stream::stream_header(&head) {
            return vmdk_stream::decode_vmdk(&mut p, h, ctx, wrappers, &inside);
        }
    }
    // The other formats pass in one pass too when their tables come before their data;
    // what cannot is spooled from there, with a message saying why.
    map_stream::decode_mapped(&mut p, format, ctx, wrappers, limit, &inside)
}

/// Refuses an empty input (a blank disk needs `--size`): the sink would otherwise be
/// asked for a disk of 0 bytes, which says nothing about the real problem.
fn check_not_empty(len: u64, ctx: &DecodeCtx<'_>, wrappers: &[Wrapper]) -> Result<(), ImportError> {
    if len > 0 || ctx.opts.size.is_some() {
        return Ok(());
    }
    // `ctx.what` names a tar member already; only the wrappers inside it are news.
    let inside = wrappers
        .iter()
        .rposition(|w| *w == Wrapper::Tar)
        .map_or(wrappers, |i| &wrappers[i + 1..]);
    let what = if inside.is_empty() {
        ctx.what.clone()
    } else {
        format!("the {} content of {}", chain(inside), ctx.what)
    };
    Err(ImportError::Empty { what })
}

fn chain(w: &[Wrapper]) -> String {
    w.iter().map(|w| w.name()).collect::<Vec<_>>().join(" in ")
}

/// Streams a tar and decodes its first disk member (OVA: the first non-descriptor file).
fn decode_tar_stream<R: TarInput>(
    input: R,
    ctx: &DecodeCtx<'_>,
    wrappers: &mut Vec<Wrapper>,
) -> Result<Decoded, ImportError> {
    let mut tar = TarReader::new(input);
    let (entry, inner) = disk_member(&mut tar, None, ctx)?;
    let mut d = decode_stream(&mut tar.entry_reader(), &inner, wrappers)?;
    d.member = Some(entry.path.to_string());
    Ok(d)
}

/// The disk member of a tar ([`next_disk_member`]) and the context to decode it in.
fn disk_member<'a, R: TarInput>(
    tar: &mut TarReader<R>,
    len: Option<u64>,
    ctx: &DecodeCtx<'a>,
) -> Result<(TarEntry, DecodeCtx<'a>), ImportError> {
    let entry = next_disk_member(tar, len)
        .map_err(|source| ImportError::Tar {
            what: ctx.what.clone(),
            source,
        })?
        .ok_or_else(|| ImportError::NoDisk {
            what: ctx.what.clone(),
            detail: "the tar archive holds no disk image file".into(),
        })?;
    let member = entry.path.to_string();
    ctx.progress
        .message(format!("using {member} from the tar archive"));
    let inner = DecodeCtx {
        opts: ctx.opts,
        progress: ctx.progress,
        out: ctx.out.clone(),
        what: format!("{} member {member}", ctx.what),
        workers: ctx.workers,
    };
    Ok((entry, inner))
}

/// Decodes a seekable source: an image read by offset, a tar indexed in place (OVA over
/// HTTP Range needs no download of the other members), or a wrapper streamed from it.
pub(crate) fn decode_seekable(
    src: Arc<dyn ReadAt>,
    len: u64,
    ctx: &DecodeCtx<'_>,
    wrappers: &mut Vec<Wrapper>,
) -> Result<Decoded, ImportError> {
    check_not_empty(len, ctx, wrappers)?;
    let head_len = len.min(DETECT_HEAD_LEN as u64) as usize;
    let mut head = vec![0u8; head_len];
    src.read_exact_at(&mut head, 0)
        .map_err(|e| from_io(format!("reading {}", ctx.what), e))?;
    match detect_wrapper(&head) {
        Some(Wrapper::Tar) if wrappers.len() < MAX_WRAPPER_DEPTH => {
            wrappers.push(Wrapper::Tar);
            let mut tar = TarReader::new(SeekInput {
                src: src.clone(),
                pos: 0,
                len,
            });
            let (entry, inner) = disk_member(&mut tar, Some(len), ctx)?;
            let sub: Arc<dyn ReadAt> = match &entry.sparse {
                Some(map) => Arc::new(SparseReadAt {
                    inner: src.clone(),
                    data_offset: entry.data_offset,
                    map: map.clone(),
                }),
                None => Arc::new(SubReadAt {
                    inner: src.clone(),
                    offset: entry.data_offset,
                    len: entry.size,
                }),
            };
            let mut d = decode_seekable(sub, entry.size, &inner, wrappers)?;
            d.member = Some(entry.path.to_string());
            Ok(d)
        }
        Some(_) => {
            let mut s = crate::stream::ReadAtStream::new(src, 0, len);
            decode_stream(&mut s, ctx, wrappers)
        }
        None => {
            let format = match ctx.opts.format {
                Some(f) => f,
                None => platter_formats::probe(src.as_ref(), &head, len)
                    .map_err(|e| from_io(format!("reading {}", ctx.what), e))?,
            };
            check_backing_format(format, ctx)?;
            let img = if needs_random_access(format) {
                open_for_import(format, src, ctx)?
            } else {
                platter_formats::raw::RawImage::open(src)
                    .map(|r| Box::new(r) as Box<dyn DiskImage>)
                    .map_err(|e| ImportError::format(ctx.what.clone(), e))?
            };
            let size = decode_random(img.as_ref(), ctx)?;
            Ok(Decoded {
                format,
                wrappers: wrappers.clone(),
                virtual_size: size,
                spooled: false,
                member: None,
            })
        }
    }
}

/// The size the result gets: the image's own size, grown to `--size` if that is larger.
pub(crate) fn final_size(
    virtual_size: u64,
    opts: &ImportOptions,
    what: &str,
) -> Result<u64, ImportError> {
    match opts.size {
        Some(s) if s < virtual_size => Err(ImportError::TooLarge {
            what: format!("{what} (virtual size {virtual_size} bytes)"),
            limit: s,
            why: "--size is smaller than the image".into(),
        }),
        Some(s) => Ok(s),
        None => Ok(virtual_size),
    }
}

/// Decodes an image read by offset with `ctx.workers` threads, each claiming 4 MiB guest
/// windows. Returns the virtual size.
pub(crate) fn decode_random(img: &dyn DiskImage, ctx: &DecodeCtx<'_>) -> Result<u64, ImportError> {
    let vsize = img.virtual_size();
    let size = final_size(vsize, ctx.opts, &ctx.what)?;
    ctx.send(Out::Size(size))?;
    ctx.progress.message(format!(
        "{}: {} image, virtual size {}",
        ctx.what,
        img.format(),
        platter_types::format_size(vsize)
    ));
    ctx.progress.started(Some(vsize));
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let workers = ctx.workers.max(1);
    let results: Vec<Result<(), ImportError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<(), ImportError> {
                    loop {
                        check_cancel(&ctx.opts.cancel)?;
                        let start = next.fetch_add(WINDOW, Ordering::Relaxed);
                        if start >= vsize {
                            return Ok(());
                        }
                        let end = (start + WINDOW).min(vsize);
                        decode_window(img, ctx, start, end)?;
                        let d = done.fetch_add(end - start, Ordering::Relaxed) + (end - start);
                        ctx.progress.bytes(d);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or(Err(ImportError::Aborted("decode worker panicked")))
            })
            .collect()
    });
    pick_error(results)?;
    ctx.progress.flush();
    Ok(vsize)
}

fn decode_window(
    img: &dyn DiskImage,
    ctx: &DecodeCtx<'_>,
    start: u64,
    end: u64,
) -> Result<(), ImportError> {
    let mut pos = start;
    while pos < end {
        let ext = img
            .map(pos, end - pos)
            .map_err(|e| ImportError::format(ctx.what.clone(), e))?;
        if ext.len == 0 || ext.len > end - pos {
            return Err(ImportError::format(
                ctx.what.clone(),
                FormatError::corrupt("image", format!("reader mapped {} bytes at {pos}", ext.len)),
            ));
        }
        match ext.kind {
            ExtentKind::Zero => ctx.send(Out::Zero {
                offset: pos,
                len: ext.len,
            })?,
            ExtentKind::Data => {
                let mut off = pos;
                let ext_end = pos + ext.len;
                while off < ext_end {
                    let n = (ext_end - off).min(CHUNK as u64) as usize;
                    let mut buf = chunk_buf(n);
                    img.read_at(&mut buf, off)
                        .map_err(|e| ImportError::format(ctx.what.clone(), e))?;
                    ctx.send(Out::Data { offset: off, buf })?;
                    off += n as u64;
                }
            }
        }
        pos += ext.len;
    }
    Ok(())
}

/// Streams raw bytes to the write stage. With `strip_vhd_footer`, a trailing fixed-VHD
/// footer (a raw image plus 512 bytes) is recognised at the end and dropped. Returns the
/// disk size.
///
/// When a footer may follow, the last 4-8 KiB read are held back until more data comes,
/// so every chunk sent still starts on a 4 KiB guest boundary (no partial-block writes).
fn stream_raw(
    r: &mut dyn Read,
    ctx: &DecodeCtx<'_>,
    strip_vhd_footer: bool,
) -> Result<u64, ImportError> {
    if let Some(s) = ctx.opts.size {
        ctx.send(Out::Size(s))?;
    }
    let limit = ctx.opts.size;
    let too_large = |end: u64| match limit {
        Some(l) if end > l => Err(ImportError::TooLarge {
            what: ctx.what.clone(),
            limit: l,
            why: "the data is larger than --size".into(),
        }),
        _ => Ok(()),
    };
    let mut pos = 0u64;
    let mut held: Vec<u8> = Vec::new();
    loop {
        check_cancel(&ctx.opts.cancel)?;
        let mut buf = chunk_buf(CHUNK);
        let h = held.len();
        buf[..h].copy_from_slice(&held);
        let n =
            read_full(r, &mut buf[h..]).map_err(|e| from_io(format!("reading {}", ctx.what), e))?;
        if n == 0 {
            recycle(buf);
            break;
        }
        let total = h + n;
        let keep = if strip_vhd_footer {
            // `pos` is block-aligned; keep it so for the next chunk.
            total.saturating_sub(ZERO_BLOCK) / ZERO_BLOCK * ZERO_BLOCK
        } else {
            total
        };
        held = buf[keep..total].to_vec();
        buf.truncate(keep);
        if buf.is_empty() {
            continue;
        }
        let len = buf.len() as u64;
        too_large(pos + len)?;
        ctx.send(Out::Data { offset: pos, buf })?;
        pos += len;
    }
    if held.len() >= 512 {
        let tail = &held[held.len() - 512..];
        let body = (held.len() - 512) as u64;
        if platter_formats::vhd::fixed_footer_size(tail) == Some(pos + body) {
            ctx.progress
                .message(format!("{}: fixed VHD footer found and removed", ctx.what));
            held.truncate(held.len() - 512);
        }
    }
    if !held.is_empty() {
        let len = held.len() as u64;
        too_large(pos + len)?;
        ctx.send(Out::Data {
            offset: pos,
            buf: held,
        })?;
        pos += len;
    }
    let size = pos.max(ctx.opts.size.unwrap_or(0));
    ctx.send(Out::Size(size))?;
    Ok(size)
}

/// The first primary error of a set of stage results (secondary "aborted" errors only
/// when nothing better is known).
pub(crate) fn pick_error(results: Vec<Result<(), ImportError>>) -> Result<(), ImportError> {
    let mut secondary = None;
    for r in results {
        match r {
            Ok(()) => {}
            Err(e) if e.is_secondary() => {
                secondary.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match secondary {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Channel pair for the write stage.
pub(crate) fn out_channel() -> (SyncSender<Out>, Receiver<Out>) {
    sync_channel(8)
}

/// Channel pair between the source and decode stages.
pub(crate) fn chunk_channel() -> (SyncSender<Chunk>, Receiver<Chunk>) {
    sync_channel(4)
}

/// Compares computed digests with the expected ones (same algorithm).
pub(crate) fn verify_digest(
    what: &str,
    expected: &Checksum,
    computed: &[Checksum],
) -> Result<(), ImportError> {
    let actual = computed
        .iter()
        .find(|c| c.algo == expected.algo)
        .ok_or(ImportError::Aborted("digest not computed"))?;
    if actual != expected {
        return Err(ImportError::ChecksumMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    /// Runs `decode_stream` over `img` and collects what reaches the write stage: the
    /// guest bytes (sized by the last `Size`) and the offsets of the data chunks.
    fn decode_collect(img: &[u8]) -> (Decoded, Vec<u8>, Vec<u64>) {
        let opts = ImportOptions::default();
        let p = NoProgress;
        let t = Throttle::new(&p);
        let (tx, rx) = out_channel();
        let ctx = DecodeCtx {
            opts: &opts,
            progress: &t,
            out: tx,
            what: "test".into(),
            workers: 1,
        };
        let h = std::thread::spawn(move || {
            let (mut out, mut offsets) = (Vec::new(), Vec::new());
            while let Ok(m) = rx.recv() {
                match m {
                    Out::Size(s) => out.resize(s as usize, 0),
                    Out::Data { offset, buf } => {
                        offsets.push(offset);
                        let end = offset as usize + buf.len();
                        if out.len() < end {
                            out.resize(end, 0);
                        }
                        out[offset as usize..end].copy_from_slice(&buf);
                    }
                    Out::Zero { .. } => {}
                }
            }
            (out, offsets)
        });
        let d = decode_stream(&mut &img[..], &ctx, &mut Vec::new()).unwrap();
        drop(ctx);
        let (out, offsets) = h.join().unwrap();
        (d, out, offsets)
    }

    #[test]
    fn raw_stream_with_vhd_footer_is_stripped() {
        let mut img = vec![7u8; 8192];
        let mut footer = vec![0u8; 512];
        footer[..8].copy_from_slice(b"conectix");
        footer[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        footer[48..56].copy_from_slice(&8192u64.to_be_bytes());
        footer[60..64].copy_from_slice(&2u32.to_be_bytes());
        let sum = platter_formats::vhd::checksum(&footer, 64);
        footer[64..68].copy_from_slice(&sum.to_be_bytes());
        img.extend_from_slice(&footer);
        let (d, out, _) = decode_collect(&img);
        assert_eq!(d.virtual_size, 8192);
        assert_eq!(out, vec![7u8; 8192]);
    }

    /// A long raw stream (no footer) arrives whole, and every chunk the decode stage sends
    /// starts on a 4 KiB guest boundary even though a footer is held back at each step.
    #[test]
    fn long_raw_stream_keeps_chunks_block_aligned() {
        let img: Vec<u8> = (0..3 * CHUNK + 1234).map(|i| (i % 251) as u8 + 1).collect();
        let (d, out, offsets) = decode_collect(&img);
        assert_eq!(d.virtual_size, img.len() as u64);
        assert!(out == img, "stream reassembled differently");
        assert!(offsets.len() > 3);
        assert!(
            offsets.iter().all(|o| o % ZERO_BLOCK as u64 == 0),
            "{offsets:?}"
        );
    }
}
