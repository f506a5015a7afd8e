//! `platter import`: opens the SOURCE, chooses how to read it (streamed with inline
//! hashing, or by offset when the format needs random access and the source allows it),
//! runs the pipeline into the sink, verifies checksums and digests, and only then
//! finishes the sink. Any error drops the sink, which removes everything it wrote.
//!
//! This is orchestration only: parsing, decoding and writing live in their modules.

use crate::checksum::{Checksum, MultiHasher};
use crate::error::{from_io, ImportError};
use crate::oci::files::{ExtractedFile, WantedFile};
use crate::oci::layout::Layout;
use crate::oci::pull::{import_layers, BlobSource};
use crate::oci::registry::Registry;
use crate::options::ImportOptions;
use crate::pipeline::{
    chunk_channel, decode_seekable, decode_stream, needs_random_access, out_channel, pick_error,
    run_source, run_writer, verify_digest, DecodeCtx, Decoded, WriteStats,
};
use crate::progress::{Progress, Throttle};
use crate::sink::Sink;
use crate::source::http::{self, HttpClient, HttpReadAt};
use crate::source::{file, redact_url, SourceSpec};
use crate::stream::{check_cancel, read_full, ChannelReader, ReadAtStream, CHUNK};
use platter_formats::detect::{detect_wrapper, Wrapper, DETECT_HEAD_LEN};
use platter_formats::ReadAt;
use serde::Serialize;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What an import did, for the CLI's output (table or JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The source as given (credentials removed from URLs).
    pub source: String,
    /// The disk format found (`raw`, `qcow2`, …).
    pub format: String,
    /// Wrappers around it, outermost first (`gzip`, `tar`, …).
    pub wrappers: Vec<String>,
    /// The archive member or containerDisk file that held the disk.
    pub member: Option<String>,
    /// Size of the resulting disk in bytes.
    pub size: u64,
    /// Bytes read from the source (downloaded).
    pub source_bytes: u64,
    /// Bytes written to the destination (the rest was zero and skipped).
    pub bytes_written: u64,
    pub zero_bytes_skipped: u64,
    /// The image had to be spooled to a temporary file.
    pub spooled: bool,
    /// The verified `--checksum`.
    pub checksum: Option<String>,
    /// The manifest digest of a registry or layout image.
    pub manifest_digest: Option<String>,
}

/// Connects to the registry of a `docker://` reference with the import's options.
fn connect_registry(reference: &str, opts: &ImportOptions) -> Result<Registry, ImportError> {
    Registry::connect(
        reference,
        &opts.registry,
        Some(&opts.platform),
        crate::runtime::handle()?,
    )
    .map(|r| r.with_cancel(opts.cancel.clone()))
}

/// The manifest digest a registry reference points at now (`docker://` sources only;
/// `None` for every other kind), without downloading any layer: what an image cache keys on.
pub fn resolve_digest(source: &str, opts: &ImportOptions) -> Result<Option<String>, ImportError> {
    match SourceSpec::parse(source)? {
        SourceSpec::Docker(r) => {
            let reg = connect_registry(&r, opts)?;
            reg.manifest(&opts.platform).map(|(_, digest)| Some(digest))
        }
        _ => Ok(None),
    }
}

/// Imports `source` (the SOURCE syntax of `platter import`) into `sink`, which is
/// finished only if everything succeeded. Blocking; runs on its own threads, so it may be
/// called from any thread (inside an async runtime, use `spawn_blocking`).
pub fn import<S>(
    source: &str,
    sink: S,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<(ImportReport, S::Output), ImportError>
where
    S: Sink,
    S::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| import_inner(source, sink, opts, progress))
            .join()
            .unwrap_or(Err(ImportError::Aborted("import thread panicked")))
    })
}

struct Core {
    decoded: Decoded,
    stats: WriteStats,
    source_bytes: u64,
    manifest_digest: Option<String>,
}

fn import_inner<S: Sink>(
    source: &str,
    mut sink: S,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<(ImportReport, S::Output), ImportError> {
    let spec = SourceSpec::parse(source)?;
    let t = Throttle::new(progress);
    let core = match spec {
        SourceSpec::File(path) => {
            let (f, len) = file::open(&path)?;
            let ra: Arc<dyn ReadAt> = Arc::new(f);
            let ra2 = ra.clone();
            run_single(
                Single {
                    name: path.display().to_string(),
                    len: Some(len),
                    first: Box::new(ReadAtStream::new(ra.clone(), 0, len)),
                    random: Some((ra, len)),
                    rehash: Some(Box::new(move || {
                        Ok(Box::new(ReadAtStream::new(ra2, 0, len)) as _)
                    })),
                    workers: 2,
                },
                &mut sink,
                opts,
                &t,
            )?
        }
        SourceSpec::Stdin => run_single(
            Single {
                name: "standard input".into(),
                len: None,
                first: crate::source::stdin::open(opts),
                random: None,
                rehash: None,
                workers: 2,
            },
            &mut sink,
            opts,
            &t,
        )?,
        SourceSpec::Http(url) => {
            let client = Arc::new(
                HttpClient::new(&opts.registry, crate::runtime::handle()?)?
                    .with_cancel(opts.cancel.clone()),
            );
            let (res, stream) = http::open(client.clone(), &url, Some(&t))?;
            let random = HttpReadAt::new(client.clone(), res.clone())
                .and_then(|r| res.len.map(|l| (Arc::new(r) as Arc<dyn ReadAt>, l)));
            if random.is_none() {
                t.message(format!(
                    "{}: the server does not support Range requests; streaming only",
                    redact_url(&url)
                ));
            }
            run_single(
                Single {
                    name: redact_url(&url),
                    len: res.len,
                    first: Box::new(stream),
                    random,
                    // A second download could be another object than the Range reads
                    // decode, so a checksummed import streams this one: the bytes hashed
                    // are the bytes decoded.
                    rehash: None,
                    workers: 4,
                },
                &mut sink,
                opts,
                &t,
            )?
        }
        SourceSpec::Docker(r) => {
            let reg = connect_registry(&r, opts)?;
            pull_image(&reg, None, &mut sink, opts, &t)?
        }
        SourceSpec::OciDir { dir, tag } => {
            let l = Layout::open_dir(&dir)?;
            pull_image(&l, tag.as_deref(), &mut sink, opts, &t)?
        }
        SourceSpec::OciArchive { file, tag } => {
            let l = Layout::open_archive(&file)?;
            pull_image(&l, tag.as_deref(), &mut sink, opts, &t)?
        }
    };
    check_cancel(&opts.cancel)?;
    let output = sink.finish()?;
    t.finished();
    let report = ImportReport {
        source: redact_url(source),
        format: core.decoded.format.name().to_string(),
        wrappers: core
            .decoded
            .wrappers
            .iter()
            .map(|w| w.name().to_string())
            .collect(),
        member: core.decoded.member.clone(),
        size: core.decoded.virtual_size.max(opts.size.unwrap_or(0)),
        source_bytes: core.source_bytes,
        bytes_written: core.stats.bytes_written,
        zero_bytes_skipped: core.stats.zero_bytes_skipped,
        spooled: core.decoded.spooled,
        checksum: opts.checksum.as_ref().map(Checksum::to_string),
        manifest_digest: core.manifest_digest,
    };
    Ok((report, output))
}

/// Takes `wanted` out of the container image `source` (`docker://…`, `oci:DIR[:TAG]`,
/// `oci-archive:FILE[:TAG]`), as a container would see them: see [`crate::oci::files`].
/// Returns the manifest digest and what was written.
pub fn extract_files(
    source: &str,
    wanted: &[WantedFile],
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<(String, Vec<ExtractedFile>), ImportError> {
    fn run<I: ImageSource>(
        src: &I,
        tag: Option<&str>,
        wanted: &[WantedFile],
        opts: &ImportOptions,
        t: &Throttle<'_>,
    ) -> Result<(String, Vec<ExtractedFile>), ImportError> {
        let (manifest, digest) = src.resolve(tag, opts)?;
        Ok((
            digest,
            crate::oci::files::extract(src, &manifest, wanted, opts, t)?,
        ))
    }
    let t = Throttle::new(progress);
    match SourceSpec::parse(source)? {
        SourceSpec::Docker(r) => run(&connect_registry(&r, opts)?, None, wanted, opts, &t),
        SourceSpec::OciDir { dir, tag } => {
            run(&Layout::open_dir(&dir)?, tag.as_deref(), wanted, opts, &t)
        }
        SourceSpec::OciArchive { file, tag } => run(
            &Layout::open_archive(&file)?,
            tag.as_deref(),
            wanted,
            opts,
            &t,
        ),
        _ => Err(ImportError::InvalidSource {
            source_str: redact_url(source),
            reason: "files are taken from container images: give docker://, oci: or oci-archive:"
                .into(),
        }),
    }
}

/// Either kind of image store (a registry or an OCI layout).
trait ImageSource: BlobSource {
    fn resolve(
        &self,
        tag: Option<&str>,
        opts: &ImportOptions,
    ) -> Result<(crate::oci::manifest::ImageManifest, String), ImportError>;
}

impl ImageSource for Registry {
    fn resolve(
        &self,
        _tag: Option<&str>,
        opts: &ImportOptions,
    ) -> Result<(crate::oci::manifest::ImageManifest, String), ImportError> {
        self.manifest(&opts.platform)
    }
}

impl ImageSource for Layout {
    fn resolve(
        &self,
        tag: Option<&str>,
        opts: &ImportOptions,
    ) -> Result<(crate::oci::manifest::ImageManifest, String), ImportError> {
        self.manifest(tag, &opts.platform)
    }
}

fn pull_image<S: Sink, I: ImageSource>(
    src: &I,
    tag: Option<&str>,
    sink: &mut S,
    opts: &ImportOptions,
    t: &Throttle<'_>,
) -> Result<Core, ImportError> {
    let (manifest, digest) = src.resolve(tag, opts)?;
    t.message(format!(
        "{}: image {}, {}",
        src.name(),
        crate::oci::short_digest(&digest),
        match manifest.layers.len() {
            1 => "1 layer".to_string(),
            n => format!("{n} layers"),
        }
    ));
    let pulled = import_layers(src, &manifest, sink, opts, t)?;
    Ok(Core {
        decoded: pulled.decoded,
        stats: pulled.stats,
        source_bytes: pulled.bytes,
        manifest_digest: Some(digest),
    })
}

type Reopen<'a> = Box<dyn FnOnce() -> Result<Box<dyn Read + Send + 'a>, ImportError> + Send + 'a>;

/// One file-like source: a stream from offset 0, and random access if possible.
struct Single<'a> {
    name: String,
    len: Option<u64>,
    first: Box<dyn Read + Send + 'a>,
    random: Option<(Arc<dyn ReadAt>, u64)>,
    /// A fresh stream from offset 0 of the same object, for hashing beside random-access
    /// decoding; without one, a checksummed import streams `first`.
    rehash: Option<Reopen<'a>>,
    workers: usize,
}

/// Chooses random access when the image needs it (or a tar can be indexed in place) and
/// the source allows it; otherwise streams with inline hashing.
fn run_single<S: Sink>(
    src: Single<'_>,
    sink: &mut S,
    opts: &ImportOptions,
    t: &Throttle<'_>,
) -> Result<Core, ImportError> {
    let mut random = None;
    // Random access skips bytes, so a checksum is then computed over a second read of the
    // source; a source that cannot give one of the same object streams instead.
    let random_ok = opts.checksum.is_none() || src.rehash.is_some();
    if let (true, Some((ra, len))) = (random_ok, &src.random) {
        let mut head = vec![0u8; (*len).min(DETECT_HEAD_LEN as u64) as usize];
        ra.read_exact_at(&mut head, 0)
            .map_err(|e| from_io(format!("reading {}", src.name), e))?;
        let use_random = match detect_wrapper(&head) {
            Some(Wrapper::Tar) => true,
            Some(_) => false,
            None => {
                let f = match opts.format {
                    Some(f) => f,
                    None => platter_formats::probe(ra.as_ref(), &head, *len)
                        .map_err(|e| from_io(format!("reading {}", src.name), e))?,
                };
                // Raw with a checksum streams: one sequential read does both.
                needs_random_access(f) || opts.checksum.is_none()
            }
        };
        if use_random {
            random = Some((ra.clone(), *len));
        }
    }
    let algos: Vec<_> = opts.checksum.iter().map(|c| c.algo).collect();
    let stop = AtomicBool::new(false);
    let (out_tx, out_rx) = out_channel();
    let cancel = &opts.cancel;
    let ctx = DecodeCtx {
        opts,
        progress: t,
        out: out_tx,
        what: src.name.clone(),
        workers: src.workers,
    };
    let mut wrappers = Vec::new();
    let (decoded, stats, src_stats) = if let Some((ra, len)) = random {
        drop(src.first);
        let rehash = if opts.checksum.is_some() {
            src.rehash
        } else {
            None
        };
        std::thread::scope(|s| {
            let writer = s.spawn(move || run_writer(sink, out_rx, cancel));
            let stop = &stop;
            let hasher = rehash.map(|open| {
                let algos = algos.clone();
                s.spawn(move || hash_stream(open, algos, cancel, stop))
            });
            let d = decode_seekable(ra, len, &ctx, &mut wrappers);
            if d.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            drop(ctx);
            let w = writer
                .join()
                .unwrap_or(Err(ImportError::Aborted("write stage panicked")));
            let h = hasher.map(|h| {
                h.join()
                    .unwrap_or(Err(ImportError::Aborted("hash stage panicked")))
            });
            finish_stages(d, w, h, len)
        })?
    } else {
        t.started(src.len);
        let (ctx_tx, ctx_rx) = chunk_channel();
        let mut first = src.first;
        let name = src.name.clone();
        std::thread::scope(|s| {
            let writer = s.spawn(move || run_writer(sink, out_rx, cancel));
            let stop = &stop;
            let source = s.spawn(move || {
                run_source(
                    &mut first,
                    MultiHasher::new(algos),
                    ctx_tx,
                    t,
                    0,
                    opts.checksum.is_some(),
                    cancel,
                    Some(stop),
                    &name,
                )
                .map(|st| (st.digests, st.bytes))
            });
            let d = decode_stream(&mut ChannelReader::new(ctx_rx), &ctx, &mut wrappers);
            if d.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            drop(ctx);
            let w = writer
                .join()
                .unwrap_or(Err(ImportError::Aborted("write stage panicked")));
            let h = source
                .join()
                .unwrap_or(Err(ImportError::Aborted("source stage panicked")));
            finish_stages(d, w, Some(h), 0)
        })?
    };
    if let Some(c) = &opts.checksum {
        verify_digest(&src.name, c, &src_stats.0)?;
    }
    Ok(Core {
        decoded,
        stats,
        source_bytes: src_stats.1,
        manifest_digest: None,
    })
}

type StageOut = (Decoded, WriteStats, (Vec<Checksum>, u64));

/// Combines the stage results, reporting the root cause.
fn finish_stages(
    d: Result<Decoded, ImportError>,
    w: Result<WriteStats, ImportError>,
    h: Option<Result<(Vec<Checksum>, u64), ImportError>>,
    default_bytes: u64,
) -> Result<StageOut, ImportError> {
    match (d, w, h) {
        (Ok(d), Ok(w), None) => Ok((d, w, (Vec::new(), default_bytes))),
        (Ok(d), Ok(w), Some(Ok(h))) => Ok((d, w, h)),
        (d, w, h) => {
            let mut errs = Vec::new();
            // Source errors first: a failed download also fails decoding.
            if let Some(Err(e)) = h {
                errs.push(Err(e));
            }
            if let Err(e) = w {
                errs.push(Err(e));
            }
            if let Err(e) = d {
                errs.push(Err(e));
            }
            pick_error(errs)?;
            Err(ImportError::Aborted("stage failed"))
        }
    }
}

/// Hashes a whole stream (beside random-access decoding).
fn hash_stream(
    open: Reopen<'_>,
    algos: Vec<crate::checksum::ChecksumAlgo>,
    cancel: &crate::options::CancelFlag,
    stop: &AtomicBool,
) -> Result<(Vec<Checksum>, u64), ImportError> {
    let mut r = open()?;
    let mut h = MultiHasher::new(algos);
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        check_cancel(cancel)?;
        if stop.load(Ordering::Relaxed) {
            return Err(ImportError::Aborted("decode stage failed"));
        }
        let n = read_full(&mut r, &mut buf).map_err(|e| from_io("hashing the source", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finish(), total))
}
