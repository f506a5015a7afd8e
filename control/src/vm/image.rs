//! The image cache behind `vm create --image` (containerDisk semantics): an image is
//! imported once into volume `img-<key>` and snapshotted as `@base`; every VM of it gets
//! a throw-away clone of that snapshot, or, for an ISO, the snapshot itself as a CD-ROM.
//!
//! The key of a registry image is its manifest digest (resolved first, the import pinned
//! to it), so a moved tag gets a new entry; of any other source, the sha256 of the
//! reference. What an image is (ISO or disk) is read from its first bytes once, when its
//! base is made, and recorded with it (records kind `image`, in the same transaction).

use std::io::Read;

use sha2::{Digest, Sha256};

use platter_formats::detect::detect_wrapper;
use platter_formats::Format;
use platter_importer::CancelFlag;
use platter_launcher::probe::{classify, Content, PROBE_LEN};
use platter_snapshotter::{RecordChange, Store};
use platter_types::{Name, VolumeRef};

use crate::api::{Event, ImportParams, RegistryParams};
use crate::error::{ControlError, ErrorKind};
use crate::transfer::import_options;
use crate::Context;

use super::{locked, VmError, VmHost};

/// A cached image ready to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// `img-KEY@base`.
    pub base: VolumeRef,
    pub content: Content,
}

/// The cached base of `image`, imported (with progress `events`, stopped by `cancel`)
/// if it is not in the store yet. Two requests for one image in one server wait for each
/// other; a cache entry imported but never snapshotted is finished, not imported again.
pub fn ensure_image(
    store: &Store,
    host: Option<&VmHost>,
    image: &str,
    registry: &RegistryParams,
    cancel: CancelFlag,
    events: &mut dyn FnMut(Event),
) -> Result<CachedImage, ControlError> {
    let params = ImportParams {
        registry: registry.clone(),
        ..ImportParams::default()
    };
    let step = |what: &str| {
        let what = what.to_string();
        move |e: ControlError| -> ControlError {
            VmError::Step {
                step: format!("{what} {image}"),
                source: Box::new(e),
            }
            .into()
        }
    };
    let opts = import_options(&params)?;
    let (source, key) = match platter_importer::resolve_digest(image, &opts)
        .map_err(|e| step("resolving image")(e.into()))?
    {
        Some(digest) => (
            pin(image, &digest),
            hex_prefix(&Sha256::digest(digest.as_bytes())),
        ),
        None => (
            image.to_string(),
            hex_prefix(&Sha256::digest(image.as_bytes())),
        ),
    };
    let name = Name::new(&format!("{CACHE_PREFIX}{key}"))
        .map_err(platter_snapshotter::StoreError::Name)?;
    let snap = Name::new("base").map_err(platter_snapshotter::StoreError::Name)?;
    let base = VolumeRef {
        volume: name.clone(),
        snapshot: Some(snap.clone()),
    };
    locked(host, &format!("image {key}"), || {
        // What the image is: known while its base is made, else from its record.
        let made = if !exists(store, &base).map_err(step("looking for the cached image"))? {
            let volume = VolumeRef::volume(name.clone());
            if !exists(store, &volume).map_err(step("looking for the cached image"))? {
                let ctx = Context {
                    cancel,
                    ..Context::default()
                };
                let imported = crate::transfer::import(store, &source, &name, &params, ctx, events);
                match imported {
                    Err(e) if e.kind() == ErrorKind::Cancelled => return Err(e),
                    // Imports are atomic: if the volume exists now, another import made it.
                    Err(e) if !exists(store, &volume).unwrap_or(false) => {
                        return Err(step("importing image")(e))
                    }
                    _ => {}
                }
            }
            // What the image is, known now, is recorded with its base (one transaction).
            let content = stored_content(store, &VolumeRef::volume(name.clone()))?;
            let record = RecordChange::Put {
                kind: IMAGE_KIND.into(),
                name: name.to_string(),
                value: serde_json::json!({"source": source, "content": content_text(content)}),
            };
            match store.snapshot_many(&[(name.clone(), snap.clone())], &[record]) {
                Ok(_) => {}
                Err(platter_snapshotter::StoreError::Exists(_)) => {}
                Err(e) => return Err(step("snapshotting the cached image")(e.into())),
            }
            Some(content)
        } else {
            None
        };
        let content = match made {
            Some(c) => c,
            None => match recorded_content(store, &name)? {
                Some(c) => c,
                // Cached by a platter that did not record it: read it once more.
                None => stored_content(store, &base)?,
            },
        };
        Ok(CachedImage { base, content })
    })
}

/// Only "not found" means absent: any other failure to look is reported.
fn exists(store: &Store, target: &VolumeRef) -> Result<bool, ControlError> {
    match store.inspect(target) {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = ControlError::from(e);
            match e.kind() {
                ErrorKind::NotFound => Ok(false),
                _ => Err(e),
            }
        }
    }
}

/// The records kind of image cache entries: `img-KEY` → `{source, content}`.
pub const IMAGE_KIND: &str = "image";

fn content_text(c: Content) -> &'static str {
    match c {
        Content::Iso => "iso",
        Content::Disk => "disk",
    }
}

/// What the cache entry `name` was recorded to be when it was made.
fn recorded_content(store: &Store, name: &Name) -> Result<Option<Content>, ControlError> {
    let v = match store.get_record(IMAGE_KIND, name.as_str()) {
        Ok(v) => v,
        Err(platter_snapshotter::StoreError::NoSuchRecord { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(match v["content"].as_str() {
        Some("iso") => Some(Content::Iso),
        Some("disk") => Some(Content::Disk),
        _ => None,
    })
}

/// What the volume or snapshot `target` is to a guest, from its first bytes.
fn stored_content(store: &Store, target: &VolumeRef) -> Result<Content, ControlError> {
    let vol = store.open_volume(target)?;
    let size = vol.size();
    // Bounded by PROBE_LEN before allocating.
    let mut head = vec![0u8; size.min(PROBE_LEN) as usize];
    vol.read_at(&mut head, 0)?;
    Ok(classify(&head, size))
}

/// What a local image file will be once imported, when that is certain from its bytes
/// alone: an ISO, or a plain raw disk (no wrapper, no format the importer decodes).
/// `None` for anything else (a URL, a registry, an OCI layout, qcow2, gzip, …).
pub(crate) fn local_content(source: &str) -> Option<Content> {
    if source == "-"
        || source.contains("://")
        || source.starts_with("oci:")
        || source.starts_with("oci-archive:")
    {
        return None;
    }
    let mut f = std::fs::File::open(source).ok()?;
    let size = f.metadata().ok().filter(|m| m.is_file())?.len();
    let mut head = vec![0u8; size.min(PROBE_LEN) as usize];
    f.read_exact(&mut head).ok()?;
    if detect_wrapper(&head).is_some() {
        return None;
    }
    // A tail that cannot be read is no certainty either.
    match platter_formats::probe(&f, &head, size).ok()? {
        Format::Iso => Some(Content::Iso),
        Format::Raw => Some(Content::Disk),
        _ => None,
    }
}

/// A registry reference pinned to `digest` (`docker://HOST/REPO:TAG` → `…/REPO@digest`).
fn pin(source: &str, digest: &str) -> String {
    let Some(rest) = source.strip_prefix("docker://") else {
        return source.to_string();
    };
    if rest.contains('@') {
        return source.to_string();
    }
    let (head, last) = rest.rsplit_once('/').unwrap_or(("", rest));
    let repo = last.split_once(':').map_or(last, |(r, _)| r);
    let prefix = if head.is_empty() {
        String::new()
    } else {
        format!("{head}/")
    };
    format!("docker://{prefix}{repo}@{digest}")
}

/// The image cache's volumes are `img-` and 16 hex digits (of the manifest digest).
const CACHE_PREFIX: &str = "img-";

/// Whether a volume of this name is one of the image cache's (hidden from `volume list`
/// unless `--all`).
pub fn is_cache_name(name: &str) -> bool {
    name.strip_prefix(CACHE_PREFIX)
        .is_some_and(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hex_prefix(d: &[u8]) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_registry_references_to_a_digest() {
        let d = "sha256:abc";
        assert_eq!(
            pin("docker://127.0.0.1:5000/a/b:v1", d),
            "docker://127.0.0.1:5000/a/b@sha256:abc"
        );
        assert_eq!(
            pin("docker://127.0.0.1:5000/a/b", d),
            "docker://127.0.0.1:5000/a/b@sha256:abc"
        );
        assert_eq!(pin("docker://h/r@sha256:xyz", d), "docker://h/r@sha256:xyz");
        assert_eq!(pin("/tmp/disk.qcow2", d), "/tmp/disk.qcow2");
    }

    #[test]
    fn local_files_are_told_apart_only_when_certain() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        std::fs::write(&raw, vec![0u8; 64 << 10]).unwrap();
        assert_eq!(local_content(raw.to_str().unwrap()), Some(Content::Disk));
        let mut iso = vec![0u8; PROBE_LEN as usize];
        iso[0x8000..0x8006].copy_from_slice(b"\x01CD001");
        let iso_path = d.path().join("cd.iso");
        std::fs::write(&iso_path, &iso).unwrap();
        assert_eq!(
            local_content(iso_path.to_str().unwrap()),
            Some(Content::Iso)
        );
        let gz = d.path().join("disk.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(local_content(gz.to_str().unwrap()), None);
        let qcow = d.path().join("disk.qcow2");
        std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(local_content(qcow.to_str().unwrap()), None);
        for other in ["docker://h/r:t", "oci:/x:t", "-", "/nonexistent/x"] {
            assert_eq!(local_content(other), None, "{other}");
        }
    }
}
