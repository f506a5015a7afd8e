//! Writing a containerDisk as an OCI image layout: into a directory (`oci:DIR:TAG`,
//! created if missing; other images in it are kept, the tag is replaced) or as a tar of
//! a fresh layout (`oci-archive:FILE:TAG`, written as FILE.partial and renamed).
//!
//! Blobs are written under temporary names and renamed to their digest only once
//! complete, so a failed push never leaves a blob under a wrong name.

use super::{config_doc, layer_desc, LayerInfo, PushOptions, MANIFEST_MEDIA_TYPE};
use crate::checksum::sha256_digest;
use crate::error::ImportError;
use crate::oci::layout::{blob_path, REF_NAME};
use crate::oci::manifest::{
    manifest_bytes, parse_manifest, Descriptor, ImageIndex, ManifestDoc, OCI_INDEX,
};
use crate::tar::header::{build_header, padding, EntryKind, NewHeader, BLOCK};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

type Built = (LayerInfo, String, String);

fn io_err(what: String) -> impl FnOnce(io::Error) -> ImportError {
    move |e| ImportError::io(what, e)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImportError> {
    let tmp = path.with_extension("partial");
    fs::write(&tmp, data).map_err(io_err(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(format!("renaming {}", tmp.display())))
}

/// Writes blobs, config, manifest and index into `dir`; tags the image `tag`. A push
/// that fails into a directory that was missing or empty leaves it as it was (an existing
/// layout keeps everything it had: only complete blobs are ever named).
pub(crate) fn push_dir(
    dir: &Path,
    tag: &str,
    build: impl FnOnce(&mut dyn Write) -> Result<LayerInfo, ImportError>,
    opts: &PushOptions,
) -> Result<Built, ImportError> {
    let existed = dir.exists();
    let was_empty = existed && fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    let result = write_layout(dir, tag, build, opts);
    if result.is_err() {
        if !existed {
            let _ = fs::remove_dir_all(dir);
        } else if was_empty {
            let _ = fs::remove_dir_all(dir.join("blobs"));
            let _ = fs::remove_file(dir.join("oci-layout"));
        }
    }
    result
}

fn write_layout(
    dir: &Path,
    tag: &str,
    build: impl FnOnce(&mut dyn Write) -> Result<LayerInfo, ImportError>,
    opts: &PushOptions,
) -> Result<Built, ImportError> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(io_err(format!("creating {}", blobs.display())))?;
    let layout = dir.join("oci-layout");
    if !layout.exists() {
        write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    // The layer streams into an unnamed temporary file in the blob dir, then gets a name.
    let mut tmp = tempfile::NamedTempFile::new_in(&blobs)
        .map_err(io_err(format!("creating a blob in {}", blobs.display())))?;
    let layer = {
        let mut w = io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        let layer = build(&mut w)?;
        w.flush().map_err(io_err("writing the layer blob".into()))?;
        layer
    };
    tmp.as_file()
        .sync_all()
        .map_err(io_err("syncing the layer blob".into()))?;
    let layer_path = dir.join(blob_path(&layer.digest)?);
    tmp.persist(&layer_path)
        .map_err(|e| ImportError::io(format!("naming {}", layer_path.display()), e.error))?;
    let (config, cdesc) = config_doc(&layer, &opts.platform);
    write_atomic(&dir.join(blob_path(&cdesc.digest)?), &config)?;
    let manifest = manifest_bytes(cdesc.clone(), vec![layer_desc(&layer, opts)]);
    let mdigest = sha256_digest(&manifest);
    write_atomic(&dir.join(blob_path(&mdigest)?), &manifest)?;
    // index.json: keep other images, replace this tag.
    let index_path = dir.join("index.json");
    let mut index = match fs::read(&index_path) {
        Ok(b) => match parse_manifest(&b, Some(OCI_INDEX)) {
            Ok(ManifestDoc::Index(i)) => i,
            _ => {
                return Err(ImportError::InvalidDestination {
                    dest: format!("oci:{}", dir.display()),
                    reason: "index.json is not an OCI image index".into(),
                })
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: Vec::new(),
            annotations: None,
        },
        Err(e) => {
            return Err(ImportError::io(
                format!("reading {}", index_path.display()),
                e,
            ))
        }
    };
    index.manifests.retain(|d| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .map(String::as_str)
            != Some(tag)
    });
    index.manifests.push(Descriptor {
        media_type: MANIFEST_MEDIA_TYPE.to_string(),
        digest: mdigest.clone(),
        size: manifest.len() as u64,
        platform: None,
        annotations: Some(BTreeMap::from([(REF_NAME.to_string(), tag.to_string())])),
    });
    let bytes = serde_json::to_vec(&index).map_err(|e| ImportError::InvalidDestination {
        dest: format!("oci:{}", dir.display()),
        reason: e.to_string(),
    })?;
    write_atomic(&index_path, &bytes)?;
    Ok((layer, mdigest, cdesc.digest))
}

/// Builds a layout in a temporary directory beside `file` and tars it into `file`.
pub(crate) fn push_archive(
    file: &Path,
    tag: &str,
    build: impl FnOnce(&mut dyn Write) -> Result<LayerInfo, ImportError>,
    opts: &PushOptions,
) -> Result<Built, ImportError> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmpdir = tempfile::tempdir_in(&parent).map_err(io_err(format!(
        "creating a temporary directory in {}",
        parent.display()
    )))?;
    let built = push_dir(tmpdir.path(), tag, build, opts)?;
    let mut partial = tempfile::NamedTempFile::new_in(&parent).map_err(io_err(format!(
        "creating an archive in {}",
        parent.display()
    )))?;
    {
        let mut w = io::BufWriter::with_capacity(1 << 20, partial.as_file_mut());
        tar_dir(tmpdir.path(), &mut w)?;
        w.flush()
            .map_err(io_err(format!("writing {}", file.display())))?;
    }
    partial
        .as_file()
        .sync_all()
        .map_err(io_err(format!("syncing {}", file.display())))?;
    partial
        .persist(file)
        .map_err(|e| ImportError::io(format!("naming {}", file.display()), e.error))?;
    Ok(built)
}

/// Writes the layout under `root` as a tar (directories, then files, sorted).
fn tar_dir(root: &Path, w: &mut dyn Write) -> Result<(), ImportError> {
    let mut entries = Vec::new();
    collect(root, root, &mut entries)?;
    entries.sort();
    let werr = |e| ImportError::io("writing the OCI archive", e);
    for (rel, is_dir) in entries {
        let path = root.join(&rel);
        let size = if is_dir {
            0
        } else {
            fs::metadata(&path)
                .map_err(io_err(format!("inspecting {}", path.display())))?
                .len()
        };
        let name = if is_dir {
            format!("{rel}/")
        } else {
            rel.clone()
        };
        let h = build_header(&NewHeader {
            name: &name,
            kind: if is_dir {
                EntryKind::Directory
            } else {
                EntryKind::Regular
            },
            size,
            mode: if is_dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 0,
        })
        .map_err(|e| ImportError::InvalidDestination {
            dest: rel.clone(),
            reason: e.to_string(),
        })?;
        w.write_all(&h).map_err(werr)?;
        if !is_dir {
            let mut f = File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
            let copied = io::copy(&mut (&mut f).take(size), w).map_err(werr)?;
            if copied != size {
                return Err(ImportError::io(
                    format!("reading {}", path.display()),
                    io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            w.write_all(&vec![0u8; padding(size) as usize])
                .map_err(werr)?;
        }
    }
    w.write_all(&[0u8; 2 * BLOCK]).map_err(werr)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, bool)>) -> Result<(), ImportError> {
    for e in fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))? {
        let e = e.map_err(io_err(format!("listing {}", dir.display())))?;
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .map(|r| r.to_string_lossy().to_string())
            .unwrap_or_default();
        let ft = e
            .file_type()
            .map_err(io_err(format!("inspecting {}", p.display())))?;
        if ft.is_dir() {
            out.push((rel, true));
            collect(root, &p, out)?;
        } else if ft.is_file() {
            out.push((rel, false));
        }
    }
    Ok(())
}
