//! Files out of an ordinary container image: what KubeVirt's `kernelBoot.container` reads
//! (a kernel and an initrd at paths the VM names). The layers are read top-most first as
//! the container's merged view has them: the first layer that holds a wanted path gives
//! it, and a whiteout (`.wh.NAME`) or an opaque directory (`.wh..wh..opq`) in an upper
//! layer hides what lower layers hold there. Every layer read is checked against its
//! descriptor's digest and size before anything taken from it is kept; layers below the
//! last wanted file are not downloaded.
//!
//! The rules are pure ([`MergedPaths`]); [`extract`] does the reading and writing.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::checksum::{Checksum, MultiHasher};
use crate::error::{from_io, ImportError};
use crate::oci::manifest::{layer_compression, ImageManifest};
use crate::oci::pull::{layer_input, BlobSource};
use crate::options::ImportOptions;
use crate::pipeline::{verify_digest, Sequential};
use crate::progress::Throttle;
use crate::stream::{check_cancel, PeekReader};
use crate::tar::{EntryKind, Marker, SafePath, TarReader};

/// One file to take out of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedFile {
    /// Its absolute path inside the image (`/boot/vmlinuz`).
    pub path: String,
    /// Where to write it (replaced only once its layer checked out).
    pub dest: PathBuf,
    /// The largest size accepted.
    pub max_size: u64,
}

/// A file taken out of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFile {
    pub path: String,
    pub size: u64,
    /// The digest of the layer it came from.
    pub layer: String,
}

/// The path's components, for a path as a user writes it (`/boot/vmlinuz`, `boot//x`).
/// `None` for paths that leave the image's root or name it.
pub fn image_path(path: &str) -> Option<Vec<String>> {
    let parsed = SafePath::parse(path.trim_start_matches('/').as_bytes()).ok()?;
    let c = parsed.components().to_vec();
    (!c.is_empty()).then_some(c)
}

/// What upper layers hide from lower ones.
#[derive(Debug, Default, Clone)]
pub struct MergedPaths {
    /// Paths removed by a whiteout (and everything below them).
    whiteouts: HashSet<Vec<String>>,
    /// Directories whose lower-layer content is hidden.
    opaque: HashSet<Vec<String>>,
}

impl MergedPaths {
    /// Whether upper layers hide `path` in the layers below them.
    pub fn hidden(&self, path: &[String]) -> bool {
        (1..=path.len()).any(|n| self.whiteouts.contains(&path[..n]))
            || (0..path.len()).any(|n| self.opaque.contains(&path[..n]))
    }

    /// Adds a layer's markers, once the layer is done (they hide only what is below it).
    pub fn add(&mut self, markers: Vec<Marker>) {
        for m in markers {
            match m {
                Marker::Whiteout(p) => {
                    self.whiteouts.insert(p);
                }
                Marker::Opaque(p) => {
                    self.opaque.insert(p);
                }
                Marker::Entry(_) => {}
            }
        }
    }
}

/// Takes `wanted` out of the image `manifest` whose blobs `blobs` opens. Either every
/// file is written (each to its `dest`) or none is, and the error names what was missing
/// or wrong.
pub(crate) fn extract(
    blobs: &dyn BlobSource,
    manifest: &ImageManifest,
    wanted: &[WantedFile],
    opts: &ImportOptions,
    progress: &Throttle<'_>,
) -> Result<Vec<ExtractedFile>, ImportError> {
    let mut targets = Vec::new();
    for w in wanted {
        let c = image_path(&w.path).ok_or_else(|| ImportError::InvalidSource {
            source_str: w.path.clone(),
            reason: "not a path inside the image".into(),
        })?;
        targets.push(c);
    }
    let mut found: Vec<Option<ExtractedFile>> = vec![None; wanted.len()];
    let mut merged = MergedPaths::default();
    let staged: Vec<PathBuf> = wanted.iter().map(|w| partial(&w.dest)).collect();
    let result = (|| {
        for layer in manifest.layers.iter().rev() {
            if found.iter().all(Option::is_some) {
                break;
            }
            check_cancel(&opts.cancel)?;
            let what = format!(
                "{} layer {}",
                blobs.name(),
                super::short_digest(&layer.digest)
            );
            if layer_compression(&layer.media_type).is_none() {
                return Err(ImportError::Unsupported {
                    what,
                    detail: format!(
                        "media type {:?} is not a filesystem layer",
                        layer.media_type
                    ),
                });
            }
            let digest =
                Checksum::parse_oci_digest(&layer.digest).map_err(|e| ImportError::Registry {
                    reference: blobs.name(),
                    detail: e.to_string(),
                })?;
            let mut raw = Hashing {
                inner: blobs.open_blob(layer, progress)?,
                hasher: MultiHasher::new([digest.algo]),
                bytes: 0,
                limit: layer.size,
            };
            let mut markers = Vec::new();
            let mut here = Vec::new();
            {
                let mut input = layer_input(PeekReader::new(&mut raw), &what)?;
                let mut tar = TarReader::new(Sequential(&mut input));
                while let Some(entry) = tar.next_entry().map_err(|source| ImportError::Tar {
                    what: what.clone(),
                    source,
                })? {
                    let path = entry.path.components().to_vec();
                    let marker = Marker::of(&path);
                    if let Marker::Entry(p) = &marker {
                        for (i, t) in targets.iter().enumerate() {
                            // Found in an upper layer: that one wins. Found earlier in
                            // this layer: the later entry replaces it, as tar does.
                            if t != p || (found[i].is_some() && !here.contains(&i)) {
                                continue;
                            }
                            if merged.hidden(t) {
                                continue;
                            }
                            let w = &wanted[i];
                            if entry.kind != EntryKind::Regular {
                                return Err(ImportError::NoDisk {
                                    what: what.clone(),
                                    detail: format!(
                                        "{} is {}; it must be a regular file (give the path it points to)",
                                        w.path,
                                        kind_name(entry.kind)
                                    ),
                                });
                            }
                            if entry.size > w.max_size {
                                return Err(ImportError::TooLarge {
                                    what: format!("{} in {what}", w.path),
                                    limit: w.max_size,
                                    why: "the largest boot file accepted".into(),
                                });
                            }
                            write_file(&mut tar.entry_reader(), &staged[i], entry.size)?;
                            if !here.contains(&i) {
                                here.push(i);
                            }
                            found[i] = Some(ExtractedFile {
                                path: w.path.clone(),
                                size: entry.size,
                                layer: layer.digest.clone(),
                            });
                        }
                    }
                    markers.push(marker);
                }
                // The compressed stream may end before the blob does (padding): read on.
                std::io::copy(&mut input, &mut std::io::sink())
                    .map_err(|e| from_io(format!("reading {what}"), e))?;
            }
            std::io::copy(&mut raw, &mut std::io::sink())
                .map_err(|e| from_io(format!("reading {what}"), e))?;
            if raw.bytes != layer.size {
                return Err(ImportError::SizeMismatch {
                    what,
                    expected: layer.size,
                    actual: raw.bytes,
                });
            }
            verify_digest(&what, &digest, &raw.hasher.finish())?;
            merged.add(markers);
        }
        let mut out = Vec::new();
        for (i, f) in found.iter().enumerate() {
            match f {
                Some(f) => out.push(f.clone()),
                None => {
                    return Err(ImportError::NoDisk {
                        what: blobs.name(),
                        detail: format!("no file {} in the image", wanted[i].path),
                    })
                }
            }
        }
        Ok(out)
    })();
    match result {
        Ok(out) => {
            for (i, w) in wanted.iter().enumerate() {
                std::fs::rename(&staged[i], &w.dest).map_err(|e| {
                    ImportError::io(
                        format!("renaming {} to {}", staged[i].display(), w.dest.display()),
                        e,
                    )
                })?;
            }
            Ok(out)
        }
        Err(e) => {
            for s in &staged {
                let _ = std::fs::remove_file(s);
            }
            Err(e)
        }
    }
}

fn partial(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Symlink => "a symbolic link",
        EntryKind::HardLink => "a hard link",
        EntryKind::Directory => "a directory",
        EntryKind::Sparse => "a sparse file in a format platter does not expand",
        _ => "not a regular file",
    }
}

fn write_file(r: &mut dyn Read, dest: &Path, size: u64) -> Result<(), ImportError> {
    let io = |op: &str, e| ImportError::io(format!("{op} {}", dest.display()), e);
    let mut f = std::fs::File::create(dest).map_err(|e| io("creating", e))?;
    let n = std::io::copy(&mut r.take(size), &mut f).map_err(|e| io("writing", e))?;
    if n != size {
        return Err(ImportError::SizeMismatch {
            what: dest.display().to_string(),
            expected: size,
            actual: n,
        });
    }
    f.flush().map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    Ok(())
}

/// The blob as read, hashed and counted; never more than its descriptor's size (+1, so
/// that a longer blob is seen as one).
struct Hashing<'a> {
    inner: Box<dyn Read + Send + 'a>,
    hasher: MultiHasher,
    bytes: u64,
    limit: u64,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = (self.limit + 1).saturating_sub(self.bytes);
        if room == 0 {
            return Ok(0);
        }
        let cap = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        image_path(s).unwrap()
    }

    #[test]
    fn paths_as_users_write_them() {
        assert_eq!(p("/boot/vmlinuz"), ["boot", "vmlinuz"]);
        assert_eq!(p("boot//vmlinuz"), ["boot", "vmlinuz"]);
        assert_eq!(image_path("/"), None);
        assert_eq!(image_path("/../etc/passwd"), None);
    }

    #[test]
    fn upper_whiteouts_and_opaque_dirs_hide_lower_files() {
        let mut m = MergedPaths::default();
        assert!(!m.hidden(&p("/boot/vmlinuz")));
        m.add(vec![
            Marker::of(&p("/boot/.wh.vmlinuz")),
            Marker::of(&p("/etc/x")),
        ]);
        assert!(m.hidden(&p("/boot/vmlinuz")));
        assert!(!m.hidden(&p("/boot/initrd")));
        m.add(vec![Marker::of(&p("/.wh.opt"))]);
        assert!(m.hidden(&p("/opt/k/vmlinuz")));
        m.add(vec![Marker::of(&p("/srv/.wh..wh..opq"))]);
        assert!(m.hidden(&p("/srv/vmlinuz")));
        assert!(!m.hidden(&p("/srvx/vmlinuz")));
        assert_eq!(Marker::of(&p("/a/b")), Marker::Entry(p("/a/b")));
    }
}
