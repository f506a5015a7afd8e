//! Sealing: a frozen layer gets its content address, the sha256 of its canonical blob
//! form, and layers with equal contents end up sharing one blob directory.
//!
//! Canonical blob form (version 1), the byte stream that is hashed (and that a registry
//! would store): `PLTRBLB1`, block size u32, run count u64, then per run start block u64,
//! length u64, kind u8 (1 data, 2 zero, 3 zero-unmapped), then the data of every data run
//! in order. The index comes first so that a reader can fetch it alone and then fetch
//! data by range. It depends only on what the layer says about each block, never on where
//! the blocks happen to sit in its data file.
//!
//! A sealed blob is made by hard-linking the frozen blob's data file under the new name, so
//! sealing copies no data; its journal is written anew, compacted: one record per extent
//! of the layer's own index, in block order, instead of the layer's whole write history
//! (as overlaybd seals a layer's index). Opening a long-lived image then reads as many
//! records as it has extents, however often its blocks were rewritten. The old name is
//! collected once the metadata stops naming it.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::blob::{self, Blob, DATA_FILE, JOURNAL_FILE};
use crate::catalog::{Change, LayerEntry};
use crate::error::{Result, StoreError};
use crate::extent_map::{ExtentMap, Target};
use crate::journal::{JournalFile, Record, RecordKind};
use crate::store::{Meta, Store};
use crate::volume::BLOCK;

pub const BLOB_MAGIC: &[u8; 8] = b"PLTRBLB1";

/// The layer's own index (what it says about each block, not what lies below).
fn own_map(records: &[Record]) -> ExtentMap {
    let mut map = ExtentMap::new();
    for r in records {
        map.set(r.start, r.len, r.target(0));
    }
    map
}

/// The sha256 of a blob's canonical form, reading its data once.
pub fn blob_digest(blob: &Blob, map: &ExtentMap) -> Result<String> {
    let mut h = Sha256::new();
    h.update(BLOB_MAGIC);
    h.update((BLOCK as u32).to_le_bytes());
    h.update((map.len() as u64).to_le_bytes());
    for p in map.iter() {
        let kind: u8 = match p.target {
            Some(Target::Data { .. }) => 1,
            Some(Target::Zero { unmapped: false }) => 2,
            _ => 3,
        };
        h.update(p.start.to_le_bytes());
        h.update(p.len.to_le_bytes());
        h.update([kind]);
    }
    let mut buf = vec![0u8; 1 << 20];
    for p in map.iter() {
        if let Some(Target::Data { phys, .. }) = p.target {
            let (mut at, end) = (phys * BLOCK, (phys + p.len) * BLOCK);
            while at < end {
                let n = (end - at).min(buf.len() as u64) as usize;
                blob.read_at(&mut buf[..n], at)?;
                h.update(&buf[..n]);
                at += n as u64;
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The records that say what `map` says, one per extent, in block order.
pub(crate) fn compacted(map: &ExtentMap) -> Vec<Record> {
    map.iter()
        .filter_map(|p| {
            let kind = match p.target? {
                Target::Data { phys, .. } => RecordKind::Data { phys },
                Target::Zero { unmapped } => RecordKind::Zero { unmapped },
            };
            Some(Record {
                start: p.start,
                len: p.len,
                kind,
            })
        })
        .collect()
}

/// Publishes blob `to`: `from`'s data file (linked) and a journal of `records`.
fn seal_blob(blobs: &Path, from: &str, to: &str, records: &[Record]) -> Result<()> {
    let (src, dst) = (blobs.join(from), blobs.join(to));
    let tmp = blobs.join(format!("{to}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(StoreError::io("create sealed blob", &tmp))?;
    std::fs::hard_link(src.join(DATA_FILE), tmp.join(DATA_FILE))
        .map_err(StoreError::io("link sealed blob", tmp.join(DATA_FILE)))?;
    let mut journal = JournalFile::create(&tmp.join(JOURNAL_FILE), BLOCK as u32)?;
    journal.commit(records).map_err(|e| e.error)?;
    drop(journal);
    blob::sync_dir(&tmp)?;
    std::fs::rename(&tmp, &dst).map_err(StoreError::io("publish sealed blob", &dst))?;
    blob::sync_dir(blobs)
}

/// Seals every frozen, unsealed layer. Returns (sealed, deduplicated) counts.
pub(crate) fn seal_frozen(store: &Store, meta: &mut Meta) -> Result<(usize, usize)> {
    let tops = meta.catalog.tops();
    let todo: Vec<(String, LayerEntry)> = meta
        .catalog
        .layers()
        .iter()
        .filter(|(id, l)| l.blob.starts_with("w-") && !tops.contains(id.as_str()))
        .map(|(id, l)| (id.clone(), l.clone()))
        .collect();
    drop(tops);
    if todo.is_empty() {
        return Ok((0, 0));
    }
    let blobs = store.blobs_dir();
    let (mut sealed, mut deduped) = (0, 0);
    let mut changes = Vec::new();
    for (id, layer) in todo {
        let (b, _, records) = Blob::open(blobs, &layer.blob, false)?;
        let map = own_map(&records);
        let target = format!("sha256-{}", blob_digest(&b, &map)?);
        if blobs.join(&target).exists() {
            deduped += 1;
        } else {
            seal_blob(blobs, &layer.blob, &target, &compacted(&map))?;
        }
        sealed += 1;
        changes.push(Change::PutLayer(
            id,
            LayerEntry {
                blob: target,
                ..layer
            },
        ));
    }
    store.save_and_reload(meta, changes)?;
    Ok((sealed, deduped))
}
