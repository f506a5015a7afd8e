//! Rollback: a volume's contents become one of its snapshots again (a VM restored in
//! place). O(1), like a snapshot: the volume gets a fresh, empty top whose parent is the
//! snapshot's layer; nothing is copied. What was written since is released, except where a
//! later snapshot or a clone still reaches it, so later snapshots stay as they were.

use platter_types::{Name, VolumeRef};

use crate::catalog::{Change, LayerEntry, VolumeEntry};
use crate::error::{Result, StoreError};
use crate::info::VolumeInfo;
use crate::records::RecordChange;
use crate::store::{now, Store};

impl Store {
    /// Puts every `volume` of `targets` back to its snapshot `snap`, with `records`, in
    /// one transaction: all of them or (on any error) none. The volumes must be distinct
    /// and none may be open (served or mounted): a client holding one would otherwise see
    /// its disk change under it. Sizes return to the snapshots' sizes.
    pub fn rollback_many(
        &self,
        targets: &[(Name, Name)],
        records: &[RecordChange],
    ) -> Result<Vec<VolumeInfo>> {
        let mut meta = self.lock_meta();
        let mut plan = Vec::with_capacity(targets.len());
        for (i, (volume, snap)) in targets.iter().enumerate() {
            if targets[..i].iter().any(|(v, _)| v == volume) {
                return Err(StoreError::Exists(format!(
                    "volume {volume} twice in one rollback"
                )));
            }
            let vol = meta.catalog.volume(volume)?.clone();
            let entry = meta
                .catalog
                .snapshot(volume, snap)
                .cloned()
                .ok_or_else(|| StoreError::NoSuchSnapshot(format!("{volume}@{snap}")))?;
            // The cache's own reference is the only one of a volume nobody has open.
            if meta
                .volumes
                .get(volume)
                .is_some_and(|v| std::sync::Arc::strong_count(v) > 1)
            {
                return Err(StoreError::Open(volume.to_string()));
            }
            plan.push((volume.clone(), vol, entry));
        }
        let mut fresh = Vec::new();
        for _ in &plan {
            match self.new_blob() {
                Ok((id, blob, _, _)) => fresh.push((id, blob)),
                Err(e) => {
                    fresh.iter().for_each(|(_, b)| self.discard_blob(b));
                    return Err(e);
                }
            }
        }
        let mut changes = Vec::new();
        let mut released = Vec::new();
        for ((volume, vol, snap), (id, blob)) in plan.iter().zip(&fresh) {
            changes.push(Change::PutLayer(
                id.clone(),
                LayerEntry {
                    parent: Some(snap.layer.clone()),
                    blob: blob.clone(),
                    created: now(),
                },
            ));
            changes.push(Change::PutVolume(
                volume.clone(),
                VolumeEntry {
                    size: snap.size,
                    top: id.clone(),
                    ..vol.clone()
                },
            ));
            released.push(vol.top.clone());
        }
        let dead = self.drop_layers(&meta, &released, &mut changes);
        if let Err(e) = self.commit(&mut meta, changes, records) {
            fresh.iter().for_each(|(_, b)| self.discard_blob(b));
            return Err(e);
        }
        // The cached handles still describe the old tops: nobody holds them (checked
        // above), so they go and the next open loads the new state.
        for (volume, _, _) in &plan {
            if let Some(v) = meta.volumes.remove(volume) {
                v.mark_deleted();
            }
        }
        self.remove_blobs(&mut meta, dead);
        plan.iter()
            .map(|(v, _, _)| self.info_locked(&meta, &VolumeRef::volume(v.clone())))
            .collect()
    }
}
