//! `platter push`: a volume (or snapshot) out as a KubeVirt containerDisk — one layer
//! with `disk/disk.img` (raw, or qcow2 by default), gzip (default), zstd or uncompressed,
//! an OCI image config for the platform (linux/amd64 by default) and an OCI manifest —
//! to a registry (`docker://HOST/REPO:TAG`) or an OCI layout (`oci:DIR:TAG`,
//! `oci-archive:FILE:TAG`).
//!
//! The layer is generated, compressed, hashed and uploaded in one pass, never staged on
//! disk: a qcow2 disk.img is laid out first from the volume's allocation map (its exact
//! size goes in the tar header) and then streamed from the volume (see `layer`). Only
//! qcow2 with compressed clusters is first written to an unlinked temporary file, as
//! its size is unknown until every cluster is compressed. Push never modifies the volume.

mod layer;
mod layout_out;
mod upload;

pub use layer::{LayerInfo, DISK_PATH, KUBEVIRT_UID};

use layer::DiskBody;

use crate::error::ImportError;
use crate::oci::manifest::{
    containerdisk_config, manifest_bytes, Descriptor, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR,
    OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::oci::registry::Registry;
use crate::options::{CancelFlag, Platform, RegistryOptions};
use crate::progress::{Progress, Throttle};
use crate::source::SourceSpec;
use serde::Serialize;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

/// A run of a volume's address space: `data` false means it reads as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushExtent {
    pub offset: u64,
    pub len: u64,
    pub data: bool,
}

/// What push needs from a volume (the CLI adapts the store's `Volume`).
pub trait PushVolume: Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Extents covering `[offset, offset+len)` in order, starting at `offset`. The
    /// default says "all data"; a real map lets push skip reading zeros.
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<PushExtent>> {
        Ok(vec![PushExtent {
            offset,
            len,
            data: true,
        }])
    }
}

/// `--disk-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskFormat {
    Raw,
    #[default]
    Qcow2,
}

/// `--compression` of the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCompression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl LayerCompression {
    fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => OCI_LAYER_GZIP,
            LayerCompression::Zstd => OCI_LAYER_ZSTD,
            LayerCompression::None => OCI_LAYER_TAR,
        }
    }
}

/// Everything `platter push` takes besides the volume and DEST.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub disk_format: DiskFormat,
    pub compression: LayerCompression,
    /// Compress qcow2 clusters (zlib) inside disk.img.
    pub qcow2_compressed_clusters: bool,
    pub registry: RegistryOptions,
    pub platform: Platform,
    /// Where the temporary qcow2 with compressed clusters goes (default: the system temp
    /// dir). Nothing else in a push uses a temporary file.
    pub temp_dir: Option<PathBuf>,
    pub cancel: CancelFlag,
}

/// What a push produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushReport {
    pub destination: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
    pub diff_id: String,
    pub disk_format: String,
    /// Size of disk/disk.img.
    pub disk_bytes: u64,
}

/// Where a push goes.
enum Dest {
    Registry(String),
    Dir(PathBuf, String),
    Archive(PathBuf, String),
}

fn parse_dest(dest: &str) -> Result<Dest, ImportError> {
    let bad = |r: &str| ImportError::InvalidDestination {
        dest: dest.to_string(),
        reason: r.to_string(),
    };
    match SourceSpec::parse(dest).map_err(|_| bad("unrecognised destination"))? {
        SourceSpec::Docker(r) => {
            let last = r.rsplit('/').next().unwrap_or("");
            if !last.contains(':') || r.contains('@') {
                return Err(bad(
                    "a registry destination needs a tag: docker://HOST/REPO:TAG",
                ));
            }
            Ok(Dest::Registry(r))
        }
        SourceSpec::OciDir { dir, tag: Some(t) } => Ok(Dest::Dir(dir, t)),
        SourceSpec::OciArchive { file, tag: Some(t) } => Ok(Dest::Archive(file, t)),
        SourceSpec::OciDir { .. } | SourceSpec::OciArchive { .. } => {
            Err(bad("an OCI layout destination needs :TAG"))
        }
        _ => Err(bad(
            "expected docker://HOST/REPO:TAG, oci:DIR:TAG or oci-archive:FILE:TAG",
        )),
    }
}

/// Pushes `vol` to `dest` as a containerDisk. Blocking; safe to call from any thread
/// (inside an async runtime, use `spawn_blocking`).
pub fn push(
    vol: &dyn PushVolume,
    dest: &str,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<PushReport, ImportError> {
    std::thread::scope(|s| {
        s.spawn(|| push_inner(vol, dest, opts, progress))
            .join()
            .unwrap_or(Err(ImportError::Aborted("push thread panicked")))
    })
}

fn push_inner(
    vol: &dyn PushVolume,
    dest: &str,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<PushReport, ImportError> {
    let t = Throttle::new(progress);
    let d = parse_dest(dest)?;
    let body = match opts.disk_format {
        DiskFormat::Qcow2 if opts.qcow2_compressed_clusters => {
            t.detail("writing disk.img as qcow2 with compressed clusters to a temporary file");
            let tmp = layer::qcow2_temp(opts.temp_dir.as_deref())?;
            let (file, len) = layer::write_qcow2(vol, tmp, &t, &opts.cancel)?;
            DiskBody::Staged(file, len)
        }
        DiskFormat::Qcow2 => {
            t.detail("laying out disk.img as qcow2 from the volume's allocation");
            DiskBody::Qcow2(layer::plan_qcow2(vol, &opts.cancel)?)
        }
        DiskFormat::Raw => DiskBody::Raw,
    };
    t.detail(format!("building the containerDisk layer for {dest}"));
    let (layer, manifest_digest, config_digest) = match d {
        Dest::Registry(r) => {
            let reg = Registry::connect(&r, &opts.registry, None, crate::runtime::handle()?)?;
            let mut up = upload::BlobUpload::start(&reg)?;
            let layer = match build_layer(vol, opts, &body, &t, &mut up) {
                Ok(l) => l,
                Err(e) => return Err(up.failure(&reg).unwrap_or(e)),
            };
            up.finish(&reg, &layer.digest)?;
            let (config, cdesc) = config_doc(&layer, &opts.platform);
            upload::push_blob(&reg, &config, &cdesc.digest)?;
            let manifest = manifest_bytes(cdesc.clone(), vec![layer_desc(&layer, opts)]);
            let md = upload::push_manifest(&reg, manifest)?;
            (layer, md, cdesc.digest)
        }
        Dest::Dir(dir, tag) => {
            layout_out::push_dir(&dir, &tag, |w| build_layer(vol, opts, &body, &t, w), opts)?
        }
        Dest::Archive(file, tag) => {
            layout_out::push_archive(&file, &tag, |w| build_layer(vol, opts, &body, &t, w), opts)?
        }
    };
    t.finished();
    Ok(PushReport {
        destination: dest.to_string(),
        manifest_digest,
        config_digest,
        layer_digest: layer.digest,
        layer_size: layer.size,
        diff_id: layer.diff_id,
        disk_format: match opts.disk_format {
            DiskFormat::Raw => "raw".into(),
            DiskFormat::Qcow2 => "qcow2".into(),
        },
        disk_bytes: layer.disk_bytes,
    })
}

pub(crate) fn layer_desc(layer: &LayerInfo, opts: &PushOptions) -> Descriptor {
    Descriptor {
        media_type: opts.compression.media_type().to_string(),
        digest: layer.digest.clone(),
        size: layer.size,
        platform: None,
        annotations: None,
    }
}

/// The image config and its descriptor.
pub(crate) fn config_doc(layer: &LayerInfo, platform: &Platform) -> (Vec<u8>, Descriptor) {
    let config = containerdisk_config(platform, &layer.diff_id, "1970-01-01T00:00:00Z");
    let desc = Descriptor {
        media_type: OCI_CONFIG.to_string(),
        digest: crate::checksum::sha256_digest(&config),
        size: config.len() as u64,
        platform: None,
        annotations: None,
    };
    (config, desc)
}

/// The manifest's media type, for writers of index entries.
pub(crate) const MANIFEST_MEDIA_TYPE: &str = OCI_MANIFEST;

/// Generates the tar on a thread and compresses/hashes it into `out` on this one.
fn build_layer(
    vol: &dyn PushVolume,
    opts: &PushOptions,
    body: &DiskBody,
    t: &Throttle<'_>,
    out: &mut dyn Write,
) -> Result<LayerInfo, ImportError> {
    let (tx, rx) = sync_channel::<Vec<u8>>(4);
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            layer::produce_tar(
                vol,
                body,
                |chunk| {
                    tx.send(chunk)
                        .map_err(|_| ImportError::Aborted("layer writer stopped"))
                },
                t,
                &opts.cancel,
            )
        });
        let consumed = (|| -> Result<(String, u64, String), ImportError> {
            let mut w = layer::LayerWriter::new(&mut *out, opts.compression)
                .map_err(|e| ImportError::io("starting layer compression", e))?;
            while let Ok(chunk) = rx.recv() {
                w.write_all(&chunk)
                    .map_err(|e| crate::error::from_io("writing the layer", e))?;
            }
            let (digest, size, diff_id, _) = w
                .finish()
                .map_err(|e| crate::error::from_io("finishing the layer", e))?;
            Ok((digest, size, diff_id))
        })();
        drop(rx);
        let produced = producer
            .join()
            .unwrap_or(Err(ImportError::Aborted("layer producer panicked")));
        match (produced, consumed) {
            (Ok(disk_bytes), Ok((digest, size, diff_id))) => Ok(LayerInfo {
                digest,
                size,
                diff_id,
                disk_bytes,
            }),
            (Err(e), Err(c)) if e.is_secondary() => Err(c),
            (Err(e), _) => Err(e),
            (Ok(_), Err(c)) => Err(c),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert!(matches!(
            parse_dest("docker://127.0.0.1:5000/vm:1"),
            Ok(Dest::Registry(_))
        ));
        assert!(parse_dest("docker://127.0.0.1:5000/vm").is_err());
        assert!(matches!(parse_dest("oci:/tmp/x:v1"), Ok(Dest::Dir(_, _))));
        assert!(parse_dest("oci:/tmp/x").is_err());
        assert!(matches!(
            parse_dest("oci-archive:/tmp/x.tar:v1"),
            Ok(Dest::Archive(_, _))
        ));
        assert!(parse_dest("/tmp/file").is_err());
    }
}
