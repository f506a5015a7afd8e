//! OCI image layouts as sources: a directory (`oci:DIR[:TAG]`) or a tar of one
//! (`oci-archive:FILE[:TAG]`, read in place, never extracted). Resolves the tag through
//! `index.json` (annotation `org.opencontainers.image.ref.name`) and a nested index by
//! platform; every document read is checked against its digest.
//!
//! Blob paths are built only from validated digests, so no path from the layout can
//! reach outside it.

use crate::checksum::{sha256_digest, Checksum};
use crate::error::{from_io, ImportError};
use crate::oci::manifest::{
    parse_manifest, select_platform, Descriptor, ImageIndex, ImageManifest, ManifestDoc,
    MAX_MANIFEST_LEN, OCI_INDEX,
};
use crate::oci::pull::BlobSource;
use crate::options::Platform;
use crate::pipeline::SeekInput;
use crate::progress::Throttle;
use crate::stream::{ReadAtStream, SubReadAt};
use crate::tar::{EntryKind, TarReader};
use platter_formats::ReadAt;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The tag annotation in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Archives with more entries than this are refused.
const MAX_ARCHIVE_ENTRIES: usize = 100_000;

/// Where a layout's files are.
pub(crate) enum Layout {
    Dir(PathBuf),
    Archive {
        name: PathBuf,
        file: Arc<dyn ReadAt>,
        entries: HashMap<String, (u64, u64)>,
    },
}

/// `blobs/ALGO/HEX` for a validated digest.
pub(crate) fn blob_path(digest: &str) -> Result<String, ImportError> {
    let c = Checksum::parse_oci_digest(digest).map_err(|e| ImportError::Registry {
        reference: "OCI layout".into(),
        detail: e.to_string(),
    })?;
    Ok(format!("blobs/{}/{}", c.algo.name(), c.hex()))
}

impl Layout {
    pub(crate) fn open_dir(dir: &Path) -> Result<Layout, ImportError> {
        if !dir.join("oci-layout").is_file() {
            return Err(ImportError::InvalidSource {
                source_str: format!("oci:{}", dir.display()),
                reason: "no oci-layout file: not an OCI image layout".into(),
            });
        }
        Ok(Layout::Dir(dir.to_path_buf()))
    }

    pub(crate) fn open_archive(path: &Path) -> Result<Layout, ImportError> {
        let (f, len) = crate::source::file::open(path)?;
        let file: Arc<dyn ReadAt> = Arc::new(f);
        let what = format!("oci-archive:{}", path.display());
        let mut tar = TarReader::new(SeekInput::new(file.clone(), len));
        let mut entries = HashMap::new();
        while let Some(e) = tar.next_entry().map_err(|source| ImportError::Tar {
            what: what.clone(),
            source,
        })? {
            if e.kind == EntryKind::Regular {
                if entries.len() >= MAX_ARCHIVE_ENTRIES {
                    return Err(ImportError::TooLarge {
                        what,
                        limit: MAX_ARCHIVE_ENTRIES as u64,
                        why: "too many archive entries".into(),
                    });
                }
                if e.sparse.is_some() {
                    return Err(ImportError::Unsupported {
                        what,
                        detail: format!("{} is a GNU sparse member; blobs are read in place, so the archive must be made without --sparse", e.path),
                    });
                }
                e.check_within(len).map_err(|source| ImportError::Tar {
                    what: what.clone(),
                    source,
                })?;
                entries.insert(e.path.to_string(), (e.data_offset, e.size));
            }
        }
        if !entries.contains_key("oci-layout") {
            return Err(ImportError::InvalidSource {
                source_str: what,
                reason: "no oci-layout file: not an OCI image layout archive".into(),
            });
        }
        Ok(Layout::Archive {
            name: path.to_path_buf(),
            file,
            entries,
        })
    }

    fn display(&self) -> String {
        match self {
            Layout::Dir(d) => format!("oci:{}", d.display()),
            Layout::Archive { name, .. } => format!("oci-archive:{}", name.display()),
        }
    }

    /// Opens a file of the layout; returns the reader and its size.
    fn open(&self, rel: &str) -> Result<(Box<dyn Read + Send>, u64), ImportError> {
        match self {
            Layout::Dir(d) => {
                let p = d.join(rel);
                let f = File::open(&p)
                    .map_err(|e| ImportError::io(format!("opening {}", p.display()), e))?;
                let len = f
                    .metadata()
                    .map_err(|e| ImportError::io(format!("inspecting {}", p.display()), e))?
                    .len();
                Ok((Box::new(f), len))
            }
            Layout::Archive { file, entries, .. } => {
                let (off, len) = *entries.get(rel).ok_or_else(|| ImportError::NoDisk {
                    what: self.display(),
                    detail: format!("{rel} is missing from the archive"),
                })?;
                let sub: Arc<dyn ReadAt> = Arc::new(SubReadAt {
                    inner: file.clone(),
                    offset: off,
                    len,
                });
                Ok((Box::new(ReadAtStream::new(sub, 0, len)), len))
            }
        }
    }

    /// Reads a small document (index, manifest), bounded.
    fn read_small(&self, rel: &str) -> Result<Vec<u8>, ImportError> {
        let (r, len) = self.open(rel)?;
        if len > MAX_MANIFEST_LEN as u64 {
            return Err(ImportError::TooLarge {
                what: format!("{} {rel}", self.display()),
                limit: MAX_MANIFEST_LEN as u64,
                why: "manifests and indexes are small".into(),
            });
        }
        let mut v = Vec::new();
        r.take(MAX_MANIFEST_LEN as u64 + 1)
            .read_to_end(&mut v)
            .map_err(|e| from_io(format!("reading {} {rel}", self.display()), e))?;
        Ok(v)
    }

    /// Reads a document blob and checks it against its descriptor.
    fn read_doc(&self, d: &Descriptor) -> Result<Vec<u8>, ImportError> {
        let bytes = self.read_small(&blob_path(&d.digest)?)?;
        let actual = sha256_digest(&bytes);
        if d.digest.starts_with("sha256:") && actual != d.digest {
            return Err(ImportError::ChecksumMismatch {
                what: format!("{} blob", self.display()),
                expected: d.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Finds the image manifest for `tag` (or the only image) and `platform`.
    pub(crate) fn manifest(
        &self,
        tag: Option<&str>,
        platform: &Platform,
    ) -> Result<(ImageManifest, String), ImportError> {
        let what = self.display();
        let idx_bytes = self.read_small("index.json")?;
        let index: ImageIndex = match parse_manifest(&idx_bytes, Some(OCI_INDEX)) {
            Ok(ManifestDoc::Index(i)) => i,
            Ok(ManifestDoc::Image(_)) => {
                return Err(ImportError::InvalidSource {
                    source_str: what,
                    reason: "index.json is not an image index".into(),
                })
            }
            Err(source) => {
                return Err(ImportError::Manifest {
                    what: format!("{what} index.json"),
                    source,
                })
            }
        };
        let chosen = match tag {
            Some(t) => index.manifests.iter().find(|d| {
                d.annotations
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|n| n == t)
            }),
            None if index.manifests.len() == 1 => index.manifests.first(),
            None => {
                return Err(ImportError::InvalidSource {
                    source_str: what,
                    reason: format!(
                        "the layout holds {} images: name one with :TAG",
                        index.manifests.len()
                    ),
                })
            }
        }
        .ok_or_else(|| ImportError::NoDisk {
            what: what.clone(),
            detail: format!("no image tagged {:?}", tag.unwrap_or("")),
        })?
        .clone();
        let mut desc = chosen;
        for _ in 0..2 {
            let bytes = self.read_doc(&desc)?;
            match parse_manifest(&bytes, Some(&desc.media_type)).map_err(|source| {
                ImportError::Manifest {
                    what: format!("{what} manifest {}", desc.digest),
                    source,
                }
            })? {
                ManifestDoc::Image(m) => return Ok((m, desc.digest)),
                ManifestDoc::Index(i) => {
                    desc = select_platform(&i, platform)
                        .ok_or_else(|| ImportError::NoDisk {
                            what: what.clone(),
                            detail: format!("the image index has no {platform} manifest"),
                        })?
                        .clone();
                }
            }
        }
        Err(ImportError::InvalidSource {
            source_str: what,
            reason: "image indexes nested too deep".into(),
        })
    }
}

impl BlobSource for Layout {
    fn name(&self) -> String {
        self.display()
    }

    fn open_blob<'a>(
        &'a self,
        desc: &Descriptor,
        _progress: &'a Throttle<'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, ImportError> {
        Ok(self.open(&blob_path(&desc.digest)?)?.0)
    }
}
