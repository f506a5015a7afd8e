//! Builds the one layer of a KubeVirt containerDisk as a byte stream: a tar holding
//! `disk/` (0555, uid/gid 107) and `disk/disk.img` (0444, uid/gid 107), compressed with
//! gzip, zstd or nothing, hashed twice on the way (the uncompressed `diff_id` and the
//! compressed layer digest).
//!
//! The tar is generated while it is consumed (uploaded or written), never staged. A raw
//! disk.img is the volume read in order. A qcow2 disk.img (the default) takes two passes
//! over the volume: [`plan_qcow2`] walks its allocation map (block status only, no data
//! read) and lays the image out with [`SeqPlan`], which gives the exact size the tar
//! header needs; [`produce_tar`] then emits the image in file order, reading each
//! planned cluster from the volume as it goes. A cluster overlapping any data extent is
//! stored whole, even if it reads as zeros: checking would cost a second read of every
//! data byte. Only clusters planned in the first pass are stored, so a volume written
//! between the passes still gives a valid image (a planned cluster that became a hole
//! reads as zeros). The one exception is qcow2 with compressed clusters
//! (`PushOptions::qcow2_compressed_clusters`): their sizes are unknown until compressed,
//! so that disk.img is written to an unlinked temporary file first by [`write_qcow2`].
//! Zero ranges of the volume are never read.

use super::{LayerCompression, PushExtent, PushVolume};
use crate::checksum::{ChecksumAlgo, Hasher};
use crate::error::ImportError;
use crate::options::CancelFlag;
use crate::progress::Throttle;
use crate::stream::{check_cancel, CHUNK};
use crate::tar::header::{build_header, padding, EntryKind, NewHeader, BLOCK};
use platter_formats::qcow2::{Compression, Piece, Qcow2Writer, SeqLayout, SeqPlan, WriterOptions};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// KubeVirt's qemu user and group.
pub const KUBEVIRT_UID: u32 = 107;
/// The containerDisk file name.
pub const DISK_PATH: &str = "disk/disk.img";

/// Cluster size of the qcow2 disk.img (QEMU's default).
const QCOW2_CLUSTER: u64 = 64 << 10;

/// What becomes `disk/disk.img`.
pub(crate) enum DiskBody {
    /// The volume's bytes.
    Raw,
    /// A qcow2 laid out by [`plan_qcow2`], streamed from the volume.
    Qcow2(SeqLayout),
    /// A qcow2 with compressed clusters staged by [`write_qcow2`]: the file and its length.
    Staged(File, u64),
}

/// Digests and sizes of a finished layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256:…` of the compressed blob.
    pub digest: String,
    /// Compressed size.
    pub size: u64,
    /// `sha256:…` of the uncompressed tar.
    pub diff_id: String,
    /// Size of `disk/disk.img`.
    pub disk_bytes: u64,
}

/// Counts and hashes bytes on their way to `inner`.
struct HashWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    fn new(c: LayerCompression, w: W) -> io::Result<Encoder<W>> {
        Ok(match c {
            // Level 1: zero runs compress just as well, and data is usually already
            // dense; compression is the bottleneck of a push on two cores.
            LayerCompression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::fast(),
            )),
            LayerCompression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
            LayerCompression::None => Encoder::None(w),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// The layer byte pipeline: tar bytes in, compressed bytes out to `out`.
pub(crate) struct LayerWriter<W: Write> {
    enc: HashWriter<Encoder<HashWriter<W>>>,
}

impl<W: Write> LayerWriter<W> {
    pub(crate) fn new(out: W, c: LayerCompression) -> io::Result<LayerWriter<W>> {
        let outer = HashWriter {
            inner: out,
            hasher: Hasher::new(ChecksumAlgo::Sha256),
            count: 0,
        };
        Ok(LayerWriter {
            enc: HashWriter {
                inner: Encoder::new(c, outer)?,
                hasher: Hasher::new(ChecksumAlgo::Sha256),
                count: 0,
            },
        })
    }

    pub(crate) fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.enc.write_all(buf)
    }

    /// Ends compression; returns (digest, size, diff_id, inner writer).
    pub(crate) fn finish(self) -> io::Result<(String, u64, String, W)> {
        let diff_id = self.enc.hasher.finish().to_string();
        let mut outer = self.enc.inner.finish()?;
        outer.flush()?;
        let digest = outer.hasher.finish().to_string();
        Ok((digest, outer.count, diff_id, outer.inner))
    }
}

fn vol_err(what: &str, e: io::Error) -> ImportError {
    ImportError::io(format!("reading volume for {what}"), e)
}

/// Pass one of a streamed qcow2: every cluster overlapping a data extent of the volume
/// becomes a data cluster of the layout. Reads the allocation map only.
pub(crate) fn plan_qcow2(
    vol: &dyn PushVolume,
    cancel: &CancelFlag,
) -> Result<SeqLayout, ImportError> {
    let fmt_err = |e| ImportError::format("laying out the qcow2 disk.img", e);
    let mut plan = SeqPlan::new(vol.size(), QCOW2_CLUSTER).map_err(fmt_err)?;
    for_each_data(vol, |ext| {
        check_cancel(cancel)?;
        plan.add_bytes(ext.offset, ext.len).map_err(fmt_err)?;
        Ok(ext.offset + ext.len)
    })?;
    plan.layout().map_err(fmt_err)
}

/// Pass two: the image of `layout` in file order into `sink`, data clusters read from
/// the volume in chunks of about 1 MiB. Returns the bytes produced.
fn stream_qcow2(
    vol: &dyn PushVolume,
    layout: &SeqLayout,
    sink: &mut impl FnMut(Vec<u8>) -> Result<(), ImportError>,
    progress: &Throttle<'_>,
    cancel: &CancelFlag,
) -> Result<u64, ImportError> {
    let cs = layout.cluster_size();
    let per_chunk = (CHUNK as u64 / cs).max(1);
    // Bytes past the volume's end (the last cluster's tail, or a volume that shrank
    // since pass one) are zeros.
    let size = vol.size();
    let mut pos = 0u64;
    for piece in layout.pieces() {
        check_cancel(cancel)?;
        match piece {
            Piece::Meta(bytes) => {
                pos += bytes.len() as u64;
                sink(bytes)?;
                // Tables after the last data count too: the bar ends at its total.
                progress.bytes(pos);
            }
            Piece::Data { first, count } => {
                let end = first + count;
                let mut at = first;
                while at < end {
                    check_cancel(cancel)?;
                    let n = (end - at).min(per_chunk);
                    let start = at * cs;
                    let mut buf = vec![0u8; (n * cs) as usize];
                    let readable = size.saturating_sub(start).min(n * cs) as usize;
                    vol.read_at(&mut buf[..readable], start)
                        .map_err(|e| vol_err("qcow2", e))?;
                    pos += buf.len() as u64;
                    sink(buf)?;
                    progress.bytes(pos);
                    at += n;
                }
            }
        }
    }
    Ok(pos)
}

/// Writes a qcow2 with zlib-compressed clusters of the volume into `tmp` (skipping zero
/// ranges); returns its length. Only for compressed clusters: their size is unknown until
/// they are compressed, so the tar header cannot be written before the image.
pub(crate) fn write_qcow2(
    vol: &dyn PushVolume,
    tmp: File,
    progress: &Throttle<'_>,
    cancel: &CancelFlag,
) -> Result<(File, u64), ImportError> {
    let size = vol.size();
    let opts = WriterOptions {
        cluster_size: QCOW2_CLUSTER,
        compression: Compression::Zlib,
    };
    let cs = opts.cluster_size;
    let fmt_err = |e| ImportError::format("writing qcow2 disk.img", e);
    let mut w = Qcow2Writer::new(tmp, size, opts).map_err(fmt_err)?;
    let mut buf = vec![0u8; cs as usize];
    let mut done = 0u64;
    progress.started(Some(size));
    for_each_data(vol, |ext| {
        check_cancel(cancel)?;
        // Cluster-align the data extent.
        let first = ext.offset / cs;
        let last = (ext.offset + ext.len).div_ceil(cs);
        for idx in first..last {
            let start = idx * cs;
            let n = cs.min(size - start) as usize;
            vol.read_at(&mut buf[..n], start)
                .map_err(|e| vol_err("qcow2", e))?;
            w.write_cluster(idx, &buf[..n]).map_err(fmt_err)?;
        }
        done = ext.offset + ext.len;
        progress.bytes(done);
        Ok(last * cs)
    })?;
    progress.flush();
    let f = w.finish().map_err(fmt_err)?;
    let len = f
        .metadata()
        .map_err(|e| ImportError::io("sizing the qcow2 temporary file", e))?
        .len();
    Ok((f, len))
}

/// Calls `f` for every data extent in increasing order. `f` returns the offset up to which
/// it consumed (it may round up to a cluster); extents before that are clipped.
fn for_each_data(
    vol: &dyn PushVolume,
    mut f: impl FnMut(PushExtent) -> Result<u64, ImportError>,
) -> Result<(), ImportError> {
    let size = vol.size();
    let mut pos = 0u64;
    let mut consumed = 0u64;
    while pos < size {
        let want = (size - pos).min(1 << 30);
        let exts = vol
            .block_status(pos, want)
            .map_err(|e| vol_err("block status", e))?;
        let mut advanced = false;
        for e in exts {
            let end = e.offset.saturating_add(e.len).min(size);
            if end <= pos || e.offset > pos {
                // Extents must tile the range from `pos`.
                if e.offset > pos {
                    return Err(ImportError::Sink {
                        target: "volume".into(),
                        detail: format!("block status left a gap at {pos}"),
                    });
                }
                continue;
            }
            if e.data && end > consumed {
                let start = pos.max(consumed);
                consumed = f(PushExtent {
                    offset: start,
                    len: end - start,
                    data: true,
                })?;
            }
            pos = end;
            advanced = true;
        }
        if !advanced {
            return Err(ImportError::Sink {
                target: "volume".into(),
                detail: format!("block status returned nothing at {pos}"),
            });
        }
    }
    Ok(())
}

/// Produces the layer's tar stream into `sink` (chunks of about 1 MiB).
pub(crate) fn produce_tar(
    vol: &dyn PushVolume,
    body: &DiskBody,
    mut sink: impl FnMut(Vec<u8>) -> Result<(), ImportError>,
    progress: &Throttle<'_>,
    cancel: &CancelFlag,
) -> Result<u64, ImportError> {
    let disk_bytes = match body {
        DiskBody::Raw => vol.size(),
        DiskBody::Qcow2(layout) => layout.file_len(),
        DiskBody::Staged(_, len) => *len,
    };
    let hdr = |name, kind, size, mode| {
        build_header(&NewHeader {
            name,
            kind,
            size,
            mode,
            uid: KUBEVIRT_UID,
            gid: KUBEVIRT_UID,
            mtime: 0,
        })
        .map_err(|e| ImportError::Sink {
            target: "layer tar".into(),
            detail: e.to_string(),
        })
    };
    let mut head = Vec::with_capacity(2 * BLOCK);
    head.extend_from_slice(&hdr("disk/", EntryKind::Directory, 0, 0o555)?);
    head.extend_from_slice(&hdr(DISK_PATH, EntryKind::Regular, disk_bytes, 0o444)?);
    sink(head)?;
    match body {
        DiskBody::Qcow2(layout) => {
            progress.started(Some(disk_bytes));
            let produced = stream_qcow2(vol, layout, &mut sink, progress, cancel)?;
            if produced != disk_bytes {
                return Err(ImportError::Sink {
                    target: "layer tar".into(),
                    detail: format!(
                        "qcow2 disk.img came to {produced} bytes, planned {disk_bytes}"
                    ),
                });
            }
        }
        DiskBody::Staged(file, len) => {
            let len = *len;
            progress.started(Some(len));
            let mut pos = 0u64;
            while pos < len {
                check_cancel(cancel)?;
                let n = (len - pos).min(CHUNK as u64) as usize;
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, pos)
                    .map_err(|e| ImportError::io("reading the qcow2 temporary file", e))?;
                sink(buf)?;
                pos += n as u64;
                progress.bytes(pos);
            }
        }
        DiskBody::Raw => {
            let size = vol.size();
            progress.started(Some(size));
            let mut pos = 0u64;
            let zeros = vec![0u8; CHUNK];
            while pos < size {
                let exts = vol
                    .block_status(pos, (size - pos).min(1 << 30))
                    .map_err(|e| vol_err("block status", e))?;
                let before = pos;
                for e in exts {
                    let end = e.offset.saturating_add(e.len).min(size);
                    if e.offset > pos || end <= pos {
                        continue;
                    }
                    while pos < end {
                        check_cancel(cancel)?;
                        let n = (end - pos).min(CHUNK as u64) as usize;
                        if e.data {
                            let mut buf = vec![0u8; n];
                            vol.read_at(&mut buf, pos).map_err(|e| vol_err("raw", e))?;
                            sink(buf)?;
                        } else {
                            sink(zeros[..n].to_vec())?;
                        }
                        pos += n as u64;
                        progress.bytes(pos);
                    }
                }
                if pos == before {
                    return Err(ImportError::Sink {
                        target: "volume".into(),
                        detail: format!("block status returned nothing at {pos}"),
                    });
                }
            }
        }
    }
    progress.flush();
    // Pad the file to a block, then the two zero blocks that end the archive.
    let mut tail = vec![0u8; padding(disk_bytes) as usize];
    tail.extend_from_slice(&[0u8; 2 * BLOCK]);
    sink(tail)?;
    Ok(disk_bytes)
}

/// A temporary file for a qcow2 disk.img with compressed clusters.
pub(crate) fn qcow2_temp(dir: Option<&Path>) -> Result<File, ImportError> {
    match dir {
        Some(d) => tempfile::tempfile_in(d),
        None => tempfile::tempfile(),
    }
    .map_err(|e| ImportError::io("creating a temporary file for the qcow2 disk", e))
}
