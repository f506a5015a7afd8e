//! Collection: layers nothing reaches and blob directories no layer names are removed;
//! `gc` seals frozen layers too (`seal.rs`).

use std::path::Path;
use std::sync::Arc;

use platter_types::Name;

use super::{Meta, Store};
use crate::blob;
use crate::catalog::{is_blob_name, Change};
use crate::error::{Result, StoreError};
use crate::info::GcReport;
use crate::volume::VolumeInner;

impl Store {
    /// Adds to `changes` the removal of the layers that nothing reaches once `released`
    /// lose one reference each; returns (layer, blob) of each.
    pub(crate) fn drop_layers(
        &self,
        meta: &Meta,
        released: &[String],
        changes: &mut Vec<Change>,
    ) -> Vec<(String, String)> {
        let ids: Vec<&str> = released.iter().map(String::as_str).collect();
        let dead = meta.catalog.unreachable_after(&ids);
        let mut out = Vec::new();
        for id in dead {
            if let Some(l) = meta.catalog.layers().get(&id) {
                out.push((id.clone(), l.blob.clone()));
            }
            changes.push(Change::DeleteLayer(id));
        }
        out
    }

    /// After a committed removal of layers: forgets their views and removes each blob no
    /// layer names any more. A blob that cannot be removed now is collected at the next
    /// open or gc; the change itself is already durable.
    pub(crate) fn remove_blobs(&self, meta: &mut Meta, dead: Vec<(String, String)>) {
        for (id, blob) in dead {
            meta.frozen.remove(&id);
            if meta.catalog.blob_users(&blob) == 0 {
                let path = self.0.blobs_dir.join(&blob);
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(blob = %path.display(), error = %e, "could not remove an unused blob");
                    }
                }
            }
        }
    }

    /// Removes layers nothing reaches and blob directories no layer names (a full scan,
    /// for open and gc). Returns the bytes freed and the number of layers removed.
    pub(super) fn collect(&self, meta: &mut Meta) -> Result<(u64, usize)> {
        let live = meta.catalog.live_layers();
        let dead: Vec<String> = meta
            .catalog
            .layers()
            .keys()
            .filter(|id| !live.contains(*id))
            .cloned()
            .collect();
        if !dead.is_empty() {
            let changes = dead.iter().map(|id| Change::DeleteLayer(id.clone()));
            self.commit(meta, changes.collect(), &[])?;
            for id in &dead {
                meta.frozen.remove(id);
            }
        }
        let mut freed = 0;
        let entries = std::fs::read_dir(&self.0.blobs_dir)
            .map_err(StoreError::io("list blobs", &self.0.blobs_dir))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // Only what the store made is removed: blob directories and a seal's `.tmp`
            // of one. A stray file or an unknown directory is someone else's, left alone.
            let ours = is_blob_name(name.strip_suffix(".tmp").unwrap_or(&name));
            let dir = e.file_type().is_ok_and(|t| t.is_dir());
            if ours && dir && meta.catalog.blob_users(&name) == 0 {
                freed += blob::dir_allocated_bytes(&e.path());
                std::fs::remove_dir_all(e.path())
                    .map_err(StoreError::io("remove blob", e.path()))?;
            }
        }
        Ok((freed, dead.len()))
    }

    /// Seals frozen layers (content addressing them by sha256 and storing identical ones
    /// once) and reclaims everything unreferenced.
    pub fn gc(&self) -> Result<GcReport> {
        self.check_writable()?;
        let mut meta = self.0.meta.lock();
        let (freed_before, removed) = self.collect(&mut meta)?;
        let before = blob::dir_allocated_bytes(&self.0.blobs_dir);
        let (sealed, deduped) = crate::seal::seal_frozen(self, &mut meta)?;
        let (_, removed_after) = self.collect(&mut meta)?;
        let after = blob::dir_allocated_bytes(&self.0.blobs_dir);
        Ok(GcReport {
            bytes_freed: freed_before + before.saturating_sub(after),
            layers_removed: removed + removed_after,
            layers_sealed: sealed,
            layers_deduplicated: deduped,
        })
    }

    pub(crate) fn blobs_dir(&self) -> &Path {
        &self.0.blobs_dir
    }

    /// Commits layer changes made by sealing, then rebuilds every loaded view from disk
    /// so that no index points into a blob that was replaced.
    pub(crate) fn save_and_reload(&self, meta: &mut Meta, changes: Vec<Change>) -> Result<()> {
        let loaded: Vec<(Name, Arc<VolumeInner>)> = meta
            .volumes
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let guards: Vec<_> = loaded
            .iter()
            .map(|(_, v)| v.quiesce())
            .collect::<Result<_>>()?;
        self.commit(meta, changes, &[])?;
        meta.frozen.clear();
        meta.snapshots.clear();
        for ((name, _), q) in loaded.iter().zip(guards) {
            let vol = meta.catalog.volume(name)?.clone();
            let (state, journal) = self.top_state(meta, &vol, true, false)?;
            q.replace(state, Some(journal));
        }
        Ok(())
    }
}
