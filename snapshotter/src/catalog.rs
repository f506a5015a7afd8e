//! The catalog: the one file that says which volumes, snapshots and layers exist.
//!
//! It is the source of truth for everything but block contents: a layer directory that
//! the catalog does not name is garbage, whatever it contains. Every change is a whole
//! new catalog written beside the old one, synced, and renamed over it, so a crash leaves
//! either the old or the new catalog, never a mix.
//!
//! File format (version 1): a first line `PLATTER-CATALOG <version> <sha256 of the body>`
//! then the JSON body. A wrong checksum, a truncated body or an unknown newer version is
//! reported, never silently used. Encoding and decoding are pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use platter_types::{Name, VolumeRef};

pub const FORMAT_VERSION: u32 = 1;
const PREFIX: &str = "PLATTER-CATALOG ";

/// A node in the tree of layers. Its blocks are stored in `blob`, a directory under
/// `blobs/`: `w-<id>` while writable or frozen, `sha256-<hex>` once sealed (content
/// addressed, shared by every layer with the same contents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntry {
    pub parent: Option<String>,
    pub blob: String,
    pub created: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntry {
    pub size: u64,
    /// The writable top layer; never shared with anything else.
    pub top: String,
    pub created: u64,
    /// What this volume was cloned from, if anything.
    #[serde(default)]
    pub origin: Option<VolumeRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub size: u64,
    /// The frozen layer the snapshot reads from.
    pub layer: String,
    pub created: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub version: u32,
    /// Monotonic; bumped on every save.
    pub generation: u64,
    pub layers: BTreeMap<String, LayerEntry>,
    pub volumes: BTreeMap<Name, VolumeEntry>,
    /// Keyed by volume, then snapshot name.
    pub snapshots: BTreeMap<Name, BTreeMap<Name, SnapshotEntry>>,
    /// Imports in progress: invisible, removed when found at open.
    #[serde(default)]
    pub temp_volumes: BTreeMap<String, VolumeEntry>,
}

impl Catalog {
    pub fn new() -> Self {
        Catalog {
            version: FORMAT_VERSION,
            ..Default::default()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain maps of strings and integers cannot fail.
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        let sum = hex::encode(Sha256::digest(&body));
        let mut out = format!("{PREFIX}{} {sum}\n", self.version).into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a catalog file. Errors: `Newer(v)` or `Damaged(why)`.
    pub fn decode(bytes: &[u8]) -> Result<Catalog, DecodeError> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| DecodeError::Damaged("no header line".into()))?;
        let header = std::str::from_utf8(&bytes[..nl])
            .map_err(|_| DecodeError::Damaged("header is not text".into()))?;
        let rest = header
            .strip_prefix(PREFIX)
            .ok_or_else(|| DecodeError::Damaged("not a platter catalog".into()))?;
        let (version, sum) = rest
            .split_once(' ')
            .ok_or_else(|| DecodeError::Damaged("malformed header".into()))?;
        let version: u32 = version
            .parse()
            .map_err(|_| DecodeError::Damaged("malformed version".into()))?;
        if version > FORMAT_VERSION {
            return Err(DecodeError::Newer(version));
        }
        let body = &bytes[nl + 1..];
        if hex::encode(Sha256::digest(body)) != sum {
            return Err(DecodeError::Damaged(
                "checksum mismatch (truncated or modified)".into(),
            ));
        }
        let cat: Catalog = serde_json::from_slice(body)
            .map_err(|e| DecodeError::Damaged(format!("invalid body: {e}")))?;
        if cat.version != version {
            return Err(DecodeError::Damaged(
                "body and header disagree on the version".into(),
            ));
        }
        cat.check().map_err(DecodeError::Damaged)?;
        Ok(cat)
    }

    /// Referential integrity: every reference resolves and parents form no loop.
    pub fn check(&self) -> Result<(), String> {
        for (id, l) in &self.layers {
            let mut seen = 0usize;
            let mut cur = l.parent.as_deref();
            while let Some(p) = cur {
                seen += 1;
                if seen > self.layers.len() {
                    return Err(format!("layer {id}: parent chain loops"));
                }
                cur = self
                    .layers
                    .get(p)
                    .ok_or_else(|| format!("layer {id}: parent {p} missing"))?
                    .parent
                    .as_deref();
            }
            if !is_blob_name(&l.blob) {
                return Err(format!("layer {id}: bad blob name {:?}", l.blob));
            }
        }
        let tops = self
            .volumes
            .iter()
            .map(|(n, v)| (n.to_string(), v))
            .chain(self.temp_volumes.iter().map(|(n, v)| (n.clone(), v)));
        for (name, v) in tops {
            if !self.layers.contains_key(&v.top) {
                return Err(format!("volume {name}: top layer {} missing", v.top));
            }
        }
        for (vol, snaps) in &self.snapshots {
            if !self.volumes.contains_key(vol) {
                return Err(format!("snapshots of missing volume {vol}"));
            }
            for (s, e) in snaps {
                if !self.layers.contains_key(&e.layer) {
                    return Err(format!("snapshot {vol}@{s}: layer {} missing", e.layer));
                }
            }
        }
        Ok(())
    }

    /// The chain of layer ids from the bottom to `top`.
    pub fn chain(&self, top: &str) -> Vec<String> {
        let mut chain = vec![top.to_string()];
        let mut cur = self.layers.get(top).and_then(|l| l.parent.clone());
        while let Some(p) = cur {
            cur = self.layers.get(&p).and_then(|l| l.parent.clone());
            chain.push(p);
        }
        chain.reverse();
        chain
    }

    /// Layers reachable from some volume, snapshot or import.
    pub fn live_layers(&self) -> std::collections::BTreeSet<String> {
        let tops = self
            .volumes
            .values()
            .chain(self.temp_volumes.values())
            .map(|v| v.top.clone())
            .chain(
                self.snapshots
                    .values()
                    .flat_map(|s| s.values().map(|e| e.layer.clone())),
            );
        tops.flat_map(|t| self.chain(&t)).collect()
    }

    /// Volumes cloned from `volume` or from one of its snapshots.
    pub fn clones_of(&self, volume: &Name, snapshot: Option<&Name>) -> Vec<Name> {
        self.volumes
            .iter()
            .filter(|(_, v)| {
                v.origin.as_ref().is_some_and(|o| {
                    &o.volume == volume && (snapshot.is_none() || o.snapshot.as_ref() == snapshot)
                })
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Volumes cloned from exactly `volume` (snapshot `None`) or exactly `volume@snapshot`.
    pub fn direct_clones(&self, volume: &Name, snapshot: Option<&Name>) -> Vec<Name> {
        self.volumes
            .iter()
            .filter(|(_, v)| {
                v.origin
                    .as_ref()
                    .is_some_and(|o| &o.volume == volume && o.snapshot.as_ref() == snapshot)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Is `layer` the writable top of a volume (or an import)?
    pub fn is_top(&self, layer: &str) -> bool {
        self.volumes
            .values()
            .chain(self.temp_volumes.values())
            .any(|v| v.top == layer)
    }
}

/// Blob directory names are generated by the store; anything else in a catalog is damage.
pub fn is_blob_name(s: &str) -> bool {
    let hexish = |t: &str, n: usize| {
        t.len() == n
            && t.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    s.strip_prefix("w-").is_some_and(|t| hexish(t, 32))
        || s.strip_prefix("sha256-").is_some_and(|t| hexish(t, 64))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Newer(u32),
    Damaged(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Catalog {
        let mut c = Catalog::new();
        let l = "a".repeat(32);
        c.layers.insert(
            l.clone(),
            LayerEntry {
                parent: None,
                blob: format!("w-{l}"),
                created: 1,
            },
        );
        c.volumes.insert(
            Name::new("v").unwrap(),
            VolumeEntry {
                size: 4096,
                top: l,
                created: 1,
                origin: None,
            },
        );
        c
    }

    #[test]
    fn round_trip() {
        let c = sample();
        assert_eq!(Catalog::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn damage_and_newer_versions_are_reported() {
        let bytes = sample().encode();
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(Catalog::decode(&bytes[..cut]), Err(DecodeError::Damaged(_))),
                "cut {cut}"
            );
        }
        let mut flipped = bytes.clone();
        let at = bytes.len() - 5;
        flipped[at] ^= 0x4;
        assert!(matches!(
            Catalog::decode(&flipped),
            Err(DecodeError::Damaged(_))
        ));
        let newer = String::from_utf8(bytes)
            .unwrap()
            .replacen("CATALOG 1 ", "CATALOG 9 ", 1);
        assert_eq!(
            Catalog::decode(newer.as_bytes()),
            Err(DecodeError::Newer(9))
        );
    }

    #[test]
    fn dangling_references_are_damage() {
        let mut c = sample();
        c.volumes.values_mut().for_each(|v| v.top = "nope".into());
        assert!(c.check().is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Catalog::decode(&bytes);
            let mut with_header = b"PLATTER-CATALOG 1 ".to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = Catalog::decode(&with_header);
        }
    }
}
