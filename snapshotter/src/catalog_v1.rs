//! The format version 1 catalog file, read only to migrate a store to the database.
//!
//! File format: a first line `PLATTER-CATALOG <version> <sha256 of the body>` then a JSON
//! body `{version, generation, layers, volumes, snapshots, temp_volumes}`. A wrong
//! checksum, a truncated body or dangling references are damage; a version above 1 is a
//! newer platter's. Pure. The encoder stays so that tests can make a v1 store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use platter_types::Name;

use crate::catalog::{Catalog, LayerEntry, SnapshotEntry, VolumeEntry};

pub const V1: u32 = 1;
const PREFIX: &str = "PLATTER-CATALOG ";

#[derive(Serialize, Deserialize)]
struct Body {
    version: u32,
    #[serde(default)]
    generation: u64,
    layers: BTreeMap<String, LayerEntry>,
    volumes: BTreeMap<Name, VolumeEntry>,
    snapshots: BTreeMap<Name, BTreeMap<Name, SnapshotEntry>>,
    #[serde(default)]
    temp_volumes: BTreeMap<String, VolumeEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Newer(u32),
    Damaged(String),
}

/// The v1 file for `cat`, as platter with format version 1 wrote it.
pub fn encode(cat: &Catalog) -> Vec<u8> {
    let body = Body {
        version: V1,
        generation: 1,
        layers: cat.layers().clone(),
        volumes: cat.volumes().clone(),
        snapshots: cat.snapshots().clone(),
        temp_volumes: cat.temp_volumes().clone(),
    };
    // Serializing plain maps of strings and integers cannot fail.
    let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
    let sum = hex::encode(Sha256::digest(&body));
    let mut out = format!("{PREFIX}{V1} {sum}\n").into_bytes();
    out.extend_from_slice(&body);
    out
}

pub fn decode(bytes: &[u8]) -> Result<Catalog, DecodeError> {
    let damaged = |s: &str| DecodeError::Damaged(s.to_string());
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| damaged("no header line"))?;
    let (header, body) = bytes.split_at(nl);
    let body = body.get(1..).unwrap_or_default();
    let header = std::str::from_utf8(header).map_err(|_| damaged("header is not text"))?;
    let rest = header
        .strip_prefix(PREFIX)
        .ok_or_else(|| damaged("not a platter catalog"))?;
    let (version, sum) = rest
        .split_once(' ')
        .ok_or_else(|| damaged("malformed header"))?;
    let version: u32 = version.parse().map_err(|_| damaged("malformed version"))?;
    if version > V1 {
        return Err(DecodeError::Newer(version));
    }
    if hex::encode(Sha256::digest(body)) != sum {
        return Err(damaged("checksum mismatch (truncated or modified)"));
    }
    let b: Body = serde_json::from_slice(body)
        .map_err(|e| DecodeError::Damaged(format!("invalid body: {e}")))?;
    if b.version != version {
        return Err(damaged("body and header disagree on the version"));
    }
    Catalog::from_parts(b.layers, b.volumes, b.snapshots, b.temp_volumes)
        .map_err(DecodeError::Damaged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Change;
    use proptest::prelude::*;

    fn sample() -> Catalog {
        let mut c = Catalog::new();
        let l = "a".repeat(32);
        c.apply(&Change::PutLayer(
            l.clone(),
            LayerEntry {
                parent: None,
                blob: format!("w-{l}"),
                created: 1,
            },
        ));
        c.apply(&Change::PutVolume(
            Name::new("v").unwrap(),
            VolumeEntry {
                size: 4096,
                top: l,
                created: 1,
                origin: None,
            },
        ));
        c
    }

    #[test]
    fn round_trip() {
        let c = sample();
        assert_eq!(decode(&encode(&c)).unwrap(), c);
    }

    #[test]
    fn damage_and_newer_versions_are_reported() {
        let bytes = encode(&sample());
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(decode(&bytes[..cut]), Err(DecodeError::Damaged(_))),
                "cut {cut}"
            );
        }
        let mut flipped = bytes.clone();
        let at = bytes.len() - 5;
        flipped[at] ^= 0x4;
        assert!(matches!(decode(&flipped), Err(DecodeError::Damaged(_))));
        let newer = String::from_utf8(bytes)
            .unwrap()
            .replacen("CATALOG 1 ", "CATALOG 9 ", 1);
        assert_eq!(decode(newer.as_bytes()), Err(DecodeError::Newer(9)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            let mut with_header = b"PLATTER-CATALOG 1 ".to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = decode(&with_header);
        }
    }
}
