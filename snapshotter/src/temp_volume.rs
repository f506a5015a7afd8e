//! Imports in progress: a hidden volume that becomes visible under its name only when
//! committed complete, and that a drop or a crash removes.

use platter_types::{Name, VolumeRef};

use crate::catalog::{Change, LayerEntry, VolumeEntry};
use crate::error::{Result, StoreError};
use crate::info::VolumeInfo;
use crate::records::RecordChange;
use crate::store::{check_size, now, Store};
use crate::volume::{Volume, BLOCK};

impl Store {
    /// A hidden volume for an import: invisible until [`TempVolume::commit`], removed if
    /// dropped without it (or found after a crash).
    pub fn create_temp_volume(&self, size: u64) -> Result<TempVolume> {
        check_size("import", size)?;
        let mut meta = self.lock_meta();
        let (id, blob_name, _, _) = self.new_blob()?;
        let entry = VolumeEntry {
            size,
            top: id.clone(),
            created: now(),
            origin: None,
        };
        let changes = vec![
            Change::PutLayer(
                id.clone(),
                LayerEntry {
                    parent: None,
                    blob: blob_name.clone(),
                    created: now(),
                },
            ),
            Change::PutTemp(id.clone(), entry.clone()),
        ];
        if let Err(e) = self.commit(&mut meta, changes, &[]) {
            self.discard_blob(&blob_name);
            return Err(e);
        }
        let inner = self.load_writable(&mut meta, format!("import-{}", &id[..8]), &entry, false)?;
        inner.bulk.store(true, std::sync::atomic::Ordering::Relaxed);
        meta.temps.insert(id.clone(), inner.clone());
        Ok(TempVolume {
            store: self.clone(),
            id,
            volume: Some(Volume(inner)),
        })
    }

    fn drop_temp(&self, id: &str) -> Result<()> {
        let mut meta = self.lock_meta();
        if let Some(v) = meta.temps.remove(id) {
            v.mark_deleted();
        }
        let Some(entry) = meta.catalog.temp_volumes().get(id).cloned() else {
            return Ok(());
        };
        let mut changes = vec![Change::DeleteTemp(id.to_string())];
        let blobs = self.drop_layers(&meta, &[entry.top], &mut changes);
        self.commit(&mut meta, changes, &[])?;
        self.remove_blobs(&mut meta, blobs);
        Ok(())
    }
}

/// A volume being imported; see [`Store::create_temp_volume`].
pub struct TempVolume {
    store: Store,
    id: String,
    volume: Option<Volume>,
}

impl std::ops::Deref for TempVolume {
    type Target = Volume;
    fn deref(&self) -> &Volume {
        // Set at creation and taken only by `commit`, which consumes self.
        self.volume
            .as_ref()
            .unwrap_or_else(|| unreachable!("temp volume used after commit"))
    }
}

impl TempVolume {
    /// Changes the size of an import before it is committed (a stream whose length was
    /// not known up front). Shrinking discards what lies past the new end.
    pub fn set_size(&mut self, size: u64) -> Result<()> {
        check_size("import", size)?;
        let vol = self
            .volume
            .as_ref()
            .ok_or_else(|| StoreError::Deleted(self.id.clone()))?;
        let old = vol.size();
        if size < old {
            let from = size.div_ceil(BLOCK) * BLOCK;
            if from < old {
                vol.trim(from, old - from)?;
            }
            if from > size {
                vol.write_zeroes(size, (from - size).min(old - size), true)?;
            }
        }
        // In memory only: an import's size reaches the catalog when it is committed (a
        // crash discards the import whatever its size), so growing a stream costs no
        // catalog write per chunk.
        vol.0.state.write().size = size;
        Ok(())
    }

    /// Flushes and publishes the import as volume `name`. Every clone of the handle must
    /// be dropped first: writes through a stale clone fail afterwards.
    pub fn commit(self, name: &Name) -> Result<VolumeInfo> {
        self.commit_with(name, &[])
    }

    /// [`TempVolume::commit`] and `records` in one transaction: both or neither. If it
    /// fails, the import is removed when `self` is dropped.
    pub fn commit_with(mut self, name: &Name, records: &[RecordChange]) -> Result<VolumeInfo> {
        let vol = self
            .volume
            .take()
            .ok_or_else(|| StoreError::Deleted(self.id.clone()))?;
        if let Err(e) = vol.flush() {
            self.volume = Some(vol);
            return Err(e);
        }
        let mut meta = self.store.lock_meta();
        let entry = match meta.catalog.temp_volumes().get(&self.id) {
            _ if meta.catalog.volumes().contains_key(name) => {
                Err(StoreError::Exists(format!("volume {name}")))
            }
            Some(e) => Ok(VolumeEntry {
                size: vol.size(),
                ..e.clone()
            }),
            None => Err(StoreError::Deleted(self.id.clone())),
        };
        let changes = entry.map(|e| {
            vec![
                Change::DeleteTemp(self.id.clone()),
                Change::PutVolume(name.clone(), e),
            ]
        });
        crate::failpoint!("commit-before-catalog");
        if let Err(e) = changes.and_then(|c| self.store.commit(&mut meta, c, records)) {
            self.volume = Some(vol);
            return Err(e);
        }
        if let Some(inner) = meta.temps.remove(&self.id) {
            inner.mark_deleted();
        }
        self.store
            .info_locked(&meta, &VolumeRef::volume(name.clone()))
    }
}

impl Drop for TempVolume {
    fn drop(&mut self) {
        if self.volume.take().is_some() {
            if let Err(e) = self.store.drop_temp(&self.id) {
                tracing::warn!(import = %self.id, error = %e, "could not remove an unfinished import");
            }
        }
    }
}
