//! OCI / Docker v2 image manifests, indexes (manifest lists), image configs and descriptors:
//! parsing with bounds, platform selection, and building the documents we push.
//!
//! Pure: bytes in, typed values out. Documents come from registries and files we do not
//! trust, so sizes are bounded and digests validated before anything else uses them.

use crate::checksum::Checksum;
use crate::options::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// Manifests larger than this are refused (registries cap them at 4 MiB).
pub const MAX_MANIFEST_LEN: usize = 4 << 20;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescriptorPlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index / manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Either kind of top-level document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestDoc {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("manifest is not valid JSON for an image manifest or index: {0}")]
    Json(String),
    #[error("unsupported manifest schema version {0} (expected 2)")]
    Schema(u32),
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    #[error("invalid digest {digest:?} in manifest: {reason}")]
    Digest { digest: String, reason: String },
    #[error("manifest has no layers")]
    NoLayers,
    #[error("manifest has {0} layers; at most 128 are accepted")]
    TooManyLayers(usize),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

/// Parses a manifest or index. `content_type` (from HTTP or the parent descriptor) is
/// used when the document does not name its own media type.
pub fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<ManifestDoc, ManifestError> {
    if bytes.len() > MAX_MANIFEST_LEN {
        return Err(ManifestError::TooLarge {
            len: bytes.len(),
            max: MAX_MANIFEST_LEN,
        });
    }
    let json = |e: serde_json::Error| ManifestError::Json(e.to_string());
    let probe: Probe = serde_json::from_slice(bytes).map_err(json)?;
    if probe.schema_version != 2 {
        return Err(ManifestError::Schema(probe.schema_version));
    }
    let mt = probe
        .media_type
        .clone()
        .or_else(|| content_type.map(|s| s.split(';').next().unwrap_or("").trim().to_string()));
    let is_index = match mt.as_deref() {
        Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
        // OCI allows omitting mediaType: decide by shape.
        None | Some("") | Some("application/json") => probe.manifests.is_some(),
        Some(other) => return Err(ManifestError::MediaType(other.to_string())),
    };
    if is_index {
        let idx: ImageIndex = serde_json::from_slice(bytes).map_err(json)?;
        for d in &idx.manifests {
            check_digest(&d.digest)?;
        }
        Ok(ManifestDoc::Index(idx))
    } else {
        let m: ImageManifest = serde_json::from_slice(bytes).map_err(json)?;
        check_digest(&m.config.digest)?;
        if m.layers.is_empty() {
            return Err(ManifestError::NoLayers);
        }
        if m.layers.len() > 128 {
            return Err(ManifestError::TooManyLayers(m.layers.len()));
        }
        for l in &m.layers {
            check_digest(&l.digest)?;
        }
        Ok(ManifestDoc::Image(m))
    }
}

fn check_digest(d: &str) -> Result<Checksum, ManifestError> {
    Checksum::parse_oci_digest(d).map_err(|e| ManifestError::Digest {
        digest: d.chars().take(200).collect(),
        reason: e.reason.to_string(),
    })
}

/// Picks the index entry for `platform` (os and architecture must match; the variant
/// too when both name one).
pub fn select_platform<'a>(index: &'a ImageIndex, platform: &Platform) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|d| {
        let Some(p) = &d.platform else { return false };
        p.os == platform.os
            && p.architecture == platform.architecture
            && match (&platform.variant, &p.variant) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    })
}

/// Layer compression by media type (the bytes are also checked by magic when read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// Whether a layer media type is a filesystem tar we can read.
pub fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    match media_type {
        OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
            Some(LayerCompression::None)
        }
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER => Some(LayerCompression::Gzip),
        OCI_LAYER_ZSTD => Some(LayerCompression::Zstd),
        _ => None,
    }
}

/// The OCI image config we push: a containerDisk has no process, only a platform.
pub fn containerdisk_config(platform: &Platform, diff_id: &str, created: &str) -> Vec<u8> {
    let mut v = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": "platter push" }],
    });
    if let (Some(variant), Some(obj)) = (&platform.variant, v.as_object_mut()) {
        obj.insert("variant".into(), serde_json::Value::String(variant.clone()));
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Serializes an image manifest (compact, as registries store it).
pub fn manifest_bytes(config: Descriptor, layers: Vec<Descriptor>) -> Vec<u8> {
    let m = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config,
        layers,
        annotations: None,
    };
    serde_json::to_vec(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_manifest_and_index() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":2}},"layers":[{{"mediaType":"{OCI_LAYER_GZIP}","digest":"{D}","size":3}}]}}"#
        );
        let ManifestDoc::Image(m) = parse_manifest(m.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(m.layers.len(), 1);
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let ManifestDoc::Index(i) = parse_manifest(i.as_bytes(), None).unwrap() else {
            panic!()
        };
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(select_platform(&i, &p).unwrap().size, 2);
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(select_platform(&i, &p).unwrap().size, 1);
        let p = Platform::parse("linux/s390x").unwrap();
        assert!(select_platform(&i, &p).is_none());
    }

    #[test]
    fn refuses_bad_digests() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":2}},"layers":[{{"mediaType":"{OCI_LAYER_GZIP}","digest":"sha256:../../etc","size":3}}]}}"#
        );
        assert!(matches!(
            parse_manifest(m.as_bytes(), None),
            Err(ManifestError::Digest { .. })
        ));
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_manifest(&bytes, None);
            let _ = parse_manifest(&bytes, Some(OCI_INDEX));
        }

        #[test]
        fn parser_never_panics_on_json_like(s in r#"\{"schemaVersion":2,"(mediaType|layers|manifests|config)":.{0,80}\}"#) {
            let _ = parse_manifest(s.as_bytes(), None);
        }
    }
}
