//! Importing a containerDisk image: its layers are streamed top-most first, each hashed
//! against its descriptor digest while it is decompressed and read as a tar; the single
//! entry of the merged `disk/` directory (KubeVirt's rule: exactly one, here it must be a
//! regular file) is decoded into the sink as it streams by.
//!
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`) in upper layers hide lower entries, as in the
//! container's merged view. Nothing is extracted to disk; a digest or size mismatch in any
//! layer fails the import after the fact, and the caller then drops the sink.
//!
//! `--checksum` on a registry or layout source covers the blob of the layer that holds
//! the disk, as stored and downloaded (still compressed): what `sha256sum` of that blob
//! prints, the same bytes its descriptor digest covers. Other layers are checked against
//! their digests only.

use crate::checksum::{Checksum, MultiHasher};
use crate::error::{from_io, ImportError};
use crate::oci::manifest::{layer_compression, Descriptor, ImageManifest};
use crate::options::ImportOptions;
use crate::pipeline::{
    chunk_channel, decode_stream, out_channel, pick_error, run_source, run_writer, verify_digest,
    DecodeCtx, Decoded, Sequential, WriteStats,
};
use crate::progress::Throttle;
use crate::sink::Sink;
use crate::stream::{ChannelReader, PeekReader};
use crate::tar::{classify_layer_entry, EntryKind, LayerEntry, TarReader};
use platter_formats::detect::{detect_wrapper, Wrapper};
use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

/// Opens blobs of one image (a registry repository or an OCI layout).
pub(crate) trait BlobSource: Sync {
    /// `docker://…`, `oci:…`: for messages.
    fn name(&self) -> String;
    /// A stream of the blob's bytes as stored (still compressed).
    fn open_blob<'a>(
        &'a self,
        desc: &Descriptor,
        progress: &'a Throttle<'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, ImportError>;
}

/// What the layer scan remembers across layers.
#[derive(Default)]
struct MergedView {
    /// Children of `disk/` already seen in upper layers (or whited out there).
    seen: HashSet<String>,
    /// Upper layers hide all lower `disk/` content.
    hidden_below: bool,
    /// The disk: (name, layer digest).
    disk: Option<(String, String)>,
}

/// Result of a containerDisk import.
pub(crate) struct PulledDisk {
    pub decoded: Decoded,
    pub stats: WriteStats,
    pub bytes: u64,
}

/// Imports the disk of `manifest` into `sink`. `--checksum`, when given, must match the
/// blob (compressed, as downloaded) of the layer that holds the disk.
pub(crate) fn import_layers<S: Sink>(
    blobs: &dyn BlobSource,
    manifest: &ImageManifest,
    sink: &mut S,
    opts: &ImportOptions,
    progress: &Throttle<'_>,
) -> Result<PulledDisk, ImportError> {
    for l in &manifest.layers {
        if layer_compression(&l.media_type).is_none() {
            return Err(ImportError::Unsupported {
                what: format!("{} layer {}", blobs.name(), super::short_digest(&l.digest)),
                detail: format!("media type {:?} is not a filesystem layer", l.media_type),
            });
        }
    }
    let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
    progress.started(Some(total));
    let mut view = MergedView::default();
    let mut decoded = None;
    let mut bytes = 0u64;
    let (out_tx, out_rx) = out_channel();
    let cancel = &opts.cancel;
    let mut writer_result = None;
    std::thread::scope(|s| -> Result<(), ImportError> {
        let writer = s.spawn(move || run_writer(sink, out_rx, cancel));
        let mut results = Vec::new();
        for layer in manifest.layers.iter().rev() {
            let r = import_layer(blobs, layer, &mut view, &out_tx, opts, progress, bytes);
            match r {
                Ok((d, n)) => {
                    bytes += n;
                    if d.is_some() {
                        decoded = d;
                    }
                }
                Err(e) => {
                    results.push(Err(e));
                    break;
                }
            }
        }
        drop(out_tx);
        let w = writer
            .join()
            .unwrap_or(Err(ImportError::Aborted("write stage panicked")));
        match w {
            Ok(stats) => writer_result = Some(stats),
            Err(e) => results.push(Err(e)),
        }
        pick_error(results)
    })?;
    let decoded = decoded.ok_or_else(|| ImportError::NoDisk {
        what: blobs.name(),
        detail: "no file in disk/ in any layer: not a KubeVirt containerDisk".into(),
    })?;
    Ok(PulledDisk {
        decoded,
        stats: writer_result.unwrap_or_default(),
        bytes,
    })
}

/// Streams one layer: source thread (read + digest) and this thread (tar + decode).
fn import_layer(
    blobs: &dyn BlobSource,
    layer: &Descriptor,
    view: &mut MergedView,
    out: &std::sync::mpsc::SyncSender<crate::pipeline::Out>,
    opts: &ImportOptions,
    progress: &Throttle<'_>,
    base: u64,
) -> Result<(Option<Decoded>, u64), ImportError> {
    let what = format!(
        "{} layer {}",
        blobs.name(),
        super::short_digest(&layer.digest)
    );
    let digest = Checksum::parse_oci_digest(&layer.digest).map_err(|e| ImportError::Registry {
        reference: blobs.name(),
        detail: e.to_string(),
    })?;
    let mut algos = vec![digest.algo];
    if let Some(c) = &opts.checksum {
        algos.push(c.algo);
    }
    let (tx, rx) = chunk_channel();
    let mut reader = blobs.open_blob(layer, progress)?;
    let mut layer_result: Result<Option<Decoded>, ImportError> = Ok(None);
    let mut new_seen = Vec::new();
    let mut hide_below = false;
    let stop = AtomicBool::new(false);
    let src = std::thread::scope(|s| {
        let what_src = what.clone();
        let stop = &stop;
        let src = s.spawn(move || {
            run_source(
                &mut reader,
                MultiHasher::new(algos),
                tx,
                progress,
                base,
                true,
                &opts.cancel,
                Some(stop),
                &what_src,
            )
        });
        layer_result = scan_layer(
            ChannelReader::new(rx),
            &what,
            &layer.digest,
            view,
            &mut new_seen,
            &mut hide_below,
            out,
            opts,
            progress,
        );
        if layer_result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        src.join()
            .unwrap_or(Err(ImportError::Aborted("source stage panicked")))
    });
    // Report the root cause: a source failure makes the scan fail too.
    let src = match (src, layer_result) {
        (Err(e), Err(d)) if e.is_secondary() => return Err(d),
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => return Err(e),
        (Ok(s), Ok(d)) => {
            layer_result = Ok(d);
            s
        }
    };
    if src.bytes != layer.size {
        return Err(ImportError::SizeMismatch {
            what,
            expected: layer.size,
            actual: src.bytes,
        });
    }
    verify_digest(&what, &digest, &src.digests)?;
    let d = layer_result?;
    if d.is_some() {
        if let Some(c) = &opts.checksum {
            verify_digest(&what, c, &src.digests)?;
        }
    }
    view.seen.extend(new_seen);
    view.hidden_below |= hide_below;
    Ok((d, src.bytes))
}

/// The tar stream of a layer blob, decompressed as its first bytes say (gzip, zstd or
/// none: the media types OCI allows).
pub(crate) fn layer_input<'a, R: Read + Send + 'a>(
    mut p: PeekReader<R>,
    what: &str,
) -> Result<Box<dyn Read + Send + 'a>, ImportError> {
    let head = p
        .peek(512)
        .map_err(|e| from_io(format!("reading {what}"), e))?
        .to_vec();
    Ok(match detect_wrapper(&head) {
        Some(Wrapper::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(p)),
        Some(Wrapper::Zstd) => Box::new(
            zstd::stream::read::Decoder::new(p)
                .map_err(|e| ImportError::io(format!("starting zstd for {what}"), e))?,
        ),
        Some(Wrapper::Tar) | None => Box::new(p),
        Some(w) => {
            return Err(ImportError::Unsupported {
                what: what.to_string(),
                detail: format!("{w} compressed layers are not part of the OCI spec"),
            })
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn scan_layer(
    raw: ChannelReader,
    what: &str,
    digest: &str,
    view: &mut MergedView,
    new_seen: &mut Vec<String>,
    hide_below: &mut bool,
    out: &std::sync::mpsc::SyncSender<crate::pipeline::Out>,
    opts: &ImportOptions,
    progress: &Throttle<'_>,
) -> Result<Option<Decoded>, ImportError> {
    let mut input = layer_input(PeekReader::new(raw), what)?;
    let mut tar = TarReader::new(Sequential(&mut input));
    let mut decoded = None;
    let mut this_layer: HashSet<String> = HashSet::new();
    while let Some(entry) = tar.next_entry().map_err(|source| ImportError::Tar {
        what: what.to_string(),
        source,
    })? {
        match classify_layer_entry(&entry.path) {
            LayerEntry::Unrelated => {}
            LayerEntry::Whiteout(name) => new_seen.push(name),
            LayerEntry::Opaque | LayerEntry::WhiteoutDiskDir => *hide_below = true,
            LayerEntry::DiskChild(name) => {
                if view.hidden_below || view.seen.contains(&name) {
                    continue; // hidden by an upper layer
                }
                let first_time = this_layer.insert(name.clone());
                let is_entry_itself = entry.path.components().len() == 2;
                match &view.disk {
                    Some((disk, _)) if *disk != name => {
                        return Err(ImportError::NoDisk {
                            what: what.to_string(),
                            detail: format!(
                                "disk/ holds more than one entry ({disk} and {name}); KubeVirt allows exactly one"
                            ),
                        })
                    }
                    Some(_) if first_time || !is_entry_itself => {}
                    Some(_) => {
                        return Err(ImportError::NoDisk {
                            what: what.to_string(),
                            detail: format!("disk/{name} appears twice in one layer"),
                        })
                    }
                    None => {
                        if !is_entry_itself || entry.kind != EntryKind::Regular {
                            let kind = match entry.kind {
                                EntryKind::Symlink => "a symbolic link",
                                EntryKind::HardLink => "a hard link",
                                EntryKind::Directory => "a directory",
                                _ if !is_entry_itself => "a directory",
                                EntryKind::Sparse => "a GNU sparse file in pax format 0.x, which platter does not expand (GNU tar's default -S formats are read)",
                                _ => "not a regular file",
                            };
                            return Err(ImportError::NoDisk {
                                what: what.to_string(),
                                detail: format!("disk/{name} is {kind}; the disk must be a regular file"),
                            });
                        }
                        progress.detail(format!("{what}: importing disk/{name}"));
                        let ctx = DecodeCtx {
                            opts,
                            progress,
                            out: out.clone(),
                            what: format!("{what} disk/{name}"),
                            workers: 2,
                        };
                        let mut wrappers = Vec::new();
                        let mut d = decode_stream(&mut tar.entry_reader(), &ctx, &mut wrappers)?;
                        d.member = Some(format!("disk/{name}"));
                        decoded = Some(d);
                        view.disk = Some((name, digest.to_string()));
                    }
                }
            }
        }
    }
    new_seen.extend(this_layer);
    Ok(decoded)
}
