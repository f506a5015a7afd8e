//! Freezing: the step snapshot and clone share. A volume's top layer becomes read-only
//! and the volume gets a fresh, empty top above it; no data moves. Several volumes can be
//! frozen at one instant (the disks of one VM): every one's writes are held off together,
//! and one transaction records all of them, so their snapshots are consistent with each
//! other and either all exist or none does.

use std::sync::Arc;

use platter_types::{Name, VolumeRef};

use crate::blob::Blob;
use crate::catalog::{Change, LayerEntry, SnapshotEntry, VolumeEntry};
use crate::error::{Result, StoreError};
use crate::info::VolumeInfo;
use crate::journal::JournalFile;
use crate::records::RecordChange;
use crate::store::{now, Meta, Store, MAX_CHAIN};

impl Store {
    /// Freezes the top layer of each of `names` (distinct) and gives each a fresh one.
    /// `extra` adds what else the change needs (snapshot entries, a clone), given the
    /// frozen layers in the order of `names`. The transaction commits while every loaded
    /// volume's writes are held off, so each frozen layer holds each write wholly or not
    /// at all, and all of them are from one instant.
    pub(crate) fn freeze_tops(
        &self,
        meta: &mut Meta,
        names: &[Name],
        extra: impl FnOnce(&[String]) -> Vec<Change>,
        records: &[RecordChange],
    ) -> Result<()> {
        let mut vols = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(StoreError::Exists(format!(
                    "volume {name} twice in one freeze"
                )));
            }
            let vol = meta.catalog.volume(name)?.clone();
            let depth = meta.catalog.chain(&vol.top).len();
            if depth >= MAX_CHAIN {
                return Err(StoreError::ChainTooDeep {
                    volume: name.to_string(),
                    depth,
                    max: MAX_CHAIN,
                });
            }
            vols.push(vol);
        }
        let mut fresh: Vec<(String, String, Arc<Blob>, JournalFile)> = Vec::new();
        for _ in names {
            match self.new_blob() {
                Ok(b) => fresh.push(b),
                Err(e) => {
                    fresh.iter().for_each(|b| self.discard_blob(&b.1));
                    return Err(e);
                }
            }
        }
        let blob_names: Vec<String> = fresh.iter().map(|b| b.1.clone()).collect();
        let result = self.freeze_fresh(meta, names, &vols, fresh, extra, records);
        if result.is_err() {
            blob_names.iter().for_each(|b| self.discard_blob(b));
        }
        result
    }

    fn freeze_fresh(
        &self,
        meta: &mut Meta,
        names: &[Name],
        vols: &[VolumeEntry],
        fresh: Vec<(String, String, Arc<Blob>, JournalFile)>,
        extra: impl FnOnce(&[String]) -> Vec<Change>,
        records: &[RecordChange],
    ) -> Result<()> {
        let mut changes = Vec::new();
        for ((name, vol), (id, blob, _, _)) in names.iter().zip(vols).zip(&fresh) {
            let layer = LayerEntry {
                parent: Some(vol.top.clone()),
                blob: blob.clone(),
                created: now(),
            };
            changes.push(Change::PutLayer(id.clone(), layer));
            let top = VolumeEntry {
                top: id.clone(),
                ..vol.clone()
            };
            changes.push(Change::PutVolume(name.clone(), top));
        }
        let frozen: Vec<String> = vols.iter().map(|v| v.top.clone()).collect();
        changes.extend(extra(&frozen));
        let loaded: Vec<Option<Arc<_>>> =
            names.iter().map(|n| meta.volumes.get(n).cloned()).collect();
        // Held together: no loaded volume takes a write until all are switched.
        let mut guards = Vec::new();
        for inner in loaded.iter().flatten() {
            guards.push(inner.quiesce()?);
        }
        let views: Vec<_> = guards.iter().map(|q| q.frozen_view()).collect();
        crate::failpoint!("freeze-before-catalog");
        self.commit(meta, changes, records)?;
        let mut guards = guards.into_iter().zip(views);
        for (slot, (top, (_, _, blob, journal))) in loaded.iter().zip(frozen.into_iter().zip(fresh))
        {
            if slot.is_none() {
                continue;
            }
            if let Some((q, (chain, map, _))) = guards.next() {
                q.push_top(blob, journal);
                meta.frozen.insert(top, (chain, map));
            }
        }
        Ok(())
    }

    /// Snapshots several volumes at one instant, with `records`, in one transaction:
    /// every `volume@snap` of `snaps` exists afterwards, or (on any error) none does.
    /// The volumes must be distinct. O(1) per volume: no data is copied.
    pub fn snapshot_many(
        &self,
        snaps: &[(Name, Name)],
        records: &[RecordChange],
    ) -> Result<Vec<VolumeInfo>> {
        let mut meta = self.lock_meta();
        let mut sizes = Vec::new();
        for (volume, snap) in snaps {
            if meta.catalog.snapshot(volume, snap).is_some() {
                return Err(StoreError::Exists(format!("snapshot {volume}@{snap}")));
            }
            let size = meta.catalog.volume(volume)?.size;
            sizes.push(size);
        }
        let names: Vec<Name> = snaps.iter().map(|(v, _)| v.clone()).collect();
        let entries = |frozen: &[String]| {
            snaps
                .iter()
                .zip(frozen)
                .zip(&sizes)
                .map(|(((v, s), layer), &size)| {
                    let e = SnapshotEntry {
                        size,
                        layer: layer.clone(),
                        created: now(),
                    };
                    Change::PutSnapshot(v.clone(), s.clone(), e)
                })
                .collect()
        };
        self.freeze_tops(&mut meta, &names, entries, records)?;
        snaps
            .iter()
            .map(|(v, s)| {
                let r = VolumeRef {
                    volume: v.clone(),
                    snapshot: Some(s.clone()),
                };
                self.info_locked(&meta, &r)
            })
            .collect()
    }
}
