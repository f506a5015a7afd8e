//! The store: opens a directory, holds its lock, and carries out every metadata change
//! (create, snapshot, clone, resize, delete, gc) as one transaction of the metadata
//! database, optionally together with record changes (a VM and its disks).
//!
//! Views of frozen layers (their chain and merged index) are built once and shared by
//! every volume and snapshot above them; a volume's own view is its parent's frozen view
//! plus its top layer. Nothing here does block IO except loading indexes and sealing.
//!
//! By concern: this module opens the store and holds the catalog transactions (create,
//! snapshot, clone, resize, delete); `views.rs` the view cache (loading a volume's or a
//! frozen layer's chain and index); `gc.rs` collection and sealing; `lock.rs` the lock
//! file. Imports' temporary volumes are `temp_volume.rs`.

mod gc;
mod lock;
mod views;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::RngCore;

use platter_types::{Name, StoreLayout, VolumeRef};

use crate::blob::{self, Blob};
use crate::catalog::{Catalog, Change, LayerEntry, SnapshotEntry, VolumeEntry};
use crate::error::{Result, StoreError};
use crate::extent_map::ExtentMap;
use crate::info::{Kind, LayerInfo, VolumeInfo};
use crate::journal::JournalFile;
use crate::metadb::MetaDb;
use crate::records::RecordChange;
use crate::volume::{Chain, DirSync, VolumeInner, BLOCK};
use lock::{lock_store, share_lock};

/// Deepest layer chain a volume may have (snapshots add one layer each).
pub const MAX_CHAIN: usize = 4096;
/// Largest volume size accepted (1 PiB).
pub const MAX_VOLUME_SIZE: u64 = 1 << 50;

/// An open store. Cheap to clone; shared by every thread of the process.
#[derive(Clone)]
pub struct Store(Arc<StoreInner>);

struct StoreInner {
    dir: PathBuf,
    dir_sync: Arc<DirSync>,
    blobs_dir: PathBuf,
    _lock: File,
    /// Opened with [`Store::open_read_only`]: volumes load without their journals for
    /// writing, and every change is refused (by the database, which cannot write).
    read_only: bool,
    /// The truth; written only while `meta` is locked, so the cache follows it in order.
    pub(crate) db: MetaDb,
    meta: Mutex<Meta>,
}

pub(crate) struct Meta {
    /// The read cache of the database, changed only by committed changes.
    pub catalog: Catalog,
    pub(crate) volumes: HashMap<Name, Arc<VolumeInner>>,
    snapshots: HashMap<(Name, Name), Arc<VolumeInner>>,
    pub(crate) temps: HashMap<String, Arc<VolumeInner>>,
    /// Chain and merged index of frozen layers, by layer id.
    pub(crate) frozen: HashMap<String, (Chain, ExtentMap)>,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub(crate) fn check_size(object: &str, size: u64) -> Result<()> {
    let bad = |reason: &str| {
        Err(StoreError::BadSize {
            object: object.to_string(),
            size,
            reason: reason.to_string(),
        })
    };
    if size == 0 {
        return bad("must be larger than 0");
    }
    if !size.is_multiple_of(512) {
        return bad("must be a multiple of 512 bytes");
    }
    if size > MAX_VOLUME_SIZE {
        return bad("larger than the maximum of 1 PiB");
    }
    Ok(())
}

impl Store {
    /// Opens the store in `dir`, creating it if needed, and takes its lock. A format 1
    /// store is migrated first (see `migrate.rs`). Imports left unfinished by a crash and
    /// unreferenced blobs are removed.
    pub fn open(dir: &Path) -> Result<Store> {
        let layout = StoreLayout::new(dir);
        for d in [dir.to_path_buf(), layout.blobs(), layout.run_dir()] {
            std::fs::create_dir_all(&d).map_err(StoreError::io("create directory", &d))?;
        }
        let lock = lock_store(dir)?;
        let (db, catalog) = crate::migrate::open(dir)?;
        let store = Store::new(dir, lock, db, catalog, false);
        {
            let mut meta = store.0.meta.lock();
            let temps: Vec<Change> = meta
                .catalog
                .temp_volumes()
                .keys()
                .map(|id| Change::DeleteTemp(id.clone()))
                .collect();
            if !temps.is_empty() {
                store.commit(&mut meta, temps, &[])?;
            }
            store.collect(&mut meta)?;
        }
        Ok(store)
    }

    /// Opens an existing store that this process may not write (a read-only mount, a
    /// store of another user made readable): lists, inspects and reads of volumes and
    /// snapshots work, every change is refused with [`StoreError::StoreReadOnly`].
    /// Nothing is written: no lock file contents, no clean-up of unfinished imports, no
    /// migration (a format 1 store must be opened for writing once). Other readers may
    /// open it at once; a process holding it for writing keeps them out.
    pub fn open_read_only(dir: &Path) -> Result<Store> {
        let lock = share_lock(dir)?;
        let db_path = StoreLayout::new(dir).meta_db();
        if !db_path
            .try_exists()
            .map_err(StoreError::io("look for metadata database", &db_path))?
        {
            return Err(StoreError::damaged(
                &db_path,
                "no metadata database (a store of format 1, or none: open it for writing once)",
            ));
        }
        let db = MetaDb::open_read_only(&db_path)?;
        let catalog = db.load()?;
        Ok(Store::new(dir, lock, db, catalog, true))
    }

    fn new(dir: &Path, lock: File, db: MetaDb, catalog: Catalog, read_only: bool) -> Store {
        Store(Arc::new(StoreInner {
            dir: dir.to_path_buf(),
            dir_sync: Arc::new(DirSync {
                path: dir.to_path_buf(),
                needed: AtomicBool::new(false),
            }),
            blobs_dir: StoreLayout::new(dir).blobs(),
            _lock: lock,
            read_only,
            db,
            meta: Mutex::new(Meta {
                catalog,
                volumes: HashMap::new(),
                snapshots: HashMap::new(),
                temps: HashMap::new(),
                frozen: HashMap::new(),
            }),
        }))
    }

    /// Whether this store was opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.0.read_only
    }

    pub(crate) fn lock_meta(&self) -> parking_lot::MutexGuard<'_, Meta> {
        self.0.meta.lock()
    }

    pub(crate) fn db(&self) -> &MetaDb {
        &self.0.db
    }

    /// The v1 `catalog` file that would describe this store (so tests can make a format 1
    /// store to migrate).
    #[doc(hidden)]
    pub fn v1_catalog(&self) -> Vec<u8> {
        crate::catalog_v1::encode(&self.0.meta.lock().catalog)
    }

    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// The paths of this store's directory.
    pub fn layout(&self) -> StoreLayout {
        StoreLayout::new(&self.0.dir)
    }

    /// The directory for sockets of a running server.
    pub fn run_dir(&self) -> PathBuf {
        self.layout().run_dir()
    }

    /// Commits `changes` (and `records`) in one durable transaction, then applies them
    /// to the cache. Nothing is applied if the commit fails.
    pub(crate) fn commit(
        &self,
        meta: &mut Meta,
        changes: Vec<Change>,
        records: &[RecordChange],
    ) -> Result<()> {
        self.0.db.commit(&changes, records)?;
        // As with the v1 catalog, the next flush also syncs the store directory.
        self.0.dir_sync.needed.store(true, Ordering::Release);
        for c in &changes {
            meta.catalog.apply(c);
        }
        Ok(())
    }

    /// Refuses work that writes (a new blob, gc) on a store opened read-only, before it
    /// starts; the database refuses every commit in any case.
    fn check_writable(&self) -> Result<()> {
        match self.0.read_only {
            true => Err(StoreError::StoreReadOnly {
                dir: self.0.dir.clone(),
            }),
            false => Ok(()),
        }
    }

    pub(crate) fn new_blob(&self) -> Result<(String, String, Arc<Blob>, JournalFile)> {
        self.check_writable()?;
        let id = new_id();
        let name = format!("w-{id}");
        let (blob, journal) = Blob::create(&self.0.blobs_dir, &name, BLOCK as u32)?;
        Ok((id, name, Arc::new(blob), journal))
    }

    pub(crate) fn discard_blob(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.0.blobs_dir.join(name));
    }

    pub fn create_volume(&self, name: &Name, size: u64) -> Result<VolumeInfo> {
        self.create_volume_with(name, size, &[])
    }

    /// [`Store::create_volume`] and `records` in one transaction: both or neither.
    pub fn create_volume_with(
        &self,
        name: &Name,
        size: u64,
        records: &[RecordChange],
    ) -> Result<VolumeInfo> {
        check_size(name.as_str(), size)?;
        let mut meta = self.0.meta.lock();
        if meta.catalog.volumes().contains_key(name) {
            return Err(StoreError::Exists(format!("volume {name}")));
        }
        let (id, blob, _, _) = self.new_blob()?;
        let changes = vec![
            Change::PutLayer(
                id.clone(),
                LayerEntry {
                    parent: None,
                    blob: blob.clone(),
                    created: now(),
                },
            ),
            Change::PutVolume(
                name.clone(),
                VolumeEntry {
                    size,
                    top: id,
                    created: now(),
                    origin: None,
                },
            ),
        ];
        if let Err(e) = self.commit(&mut meta, changes, records) {
            self.discard_blob(&blob);
            return Err(e);
        }
        self.info_locked(&meta, &VolumeRef::volume(name.clone()))
    }

    pub fn list(&self) -> Result<Vec<VolumeInfo>> {
        let meta = self.0.meta.lock();
        let mut out = Vec::new();
        for (name, snaps) in meta
            .catalog
            .volumes()
            .keys()
            .map(|n| (n, meta.catalog.snapshots().get(n)))
        {
            out.push(self.info_locked(&meta, &VolumeRef::volume(name.clone()))?);
            for s in snaps.into_iter().flat_map(|s| s.keys()) {
                out.push(self.info_locked(
                    &meta,
                    &VolumeRef {
                        volume: name.clone(),
                        snapshot: Some(s.clone()),
                    },
                )?);
            }
        }
        Ok(out)
    }

    pub fn inspect(&self, r: &VolumeRef) -> Result<VolumeInfo> {
        let meta = self.0.meta.lock();
        self.info_locked(&meta, r)
    }

    pub(crate) fn info_locked(&self, meta: &Meta, r: &VolumeRef) -> Result<VolumeInfo> {
        let cat = &meta.catalog;
        let vol = cat.volume(&r.volume)?;
        let (kind, size, top, created, origin) = match &r.snapshot {
            None => (
                Kind::Volume,
                vol.size,
                vol.top.clone(),
                vol.created,
                vol.origin.as_ref().map(|o| o.to_string()),
            ),
            Some(s) => {
                let e = cat
                    .snapshot(&r.volume, s)
                    .ok_or_else(|| StoreError::NoSuchSnapshot(r.to_string()))?;
                (Kind::Snapshot, e.size, e.layer.clone(), e.created, None)
            }
        };
        let chain: Vec<LayerInfo> = cat
            .chain(&top)
            .into_iter()
            .map(|id| {
                let blob = cat
                    .layers()
                    .get(&id)
                    .map(|l| l.blob.clone())
                    .unwrap_or_default();
                let allocated = blob::dir_allocated_bytes(&self.0.blobs_dir.join(&blob));
                LayerInfo {
                    id,
                    blob,
                    allocated,
                }
            })
            .collect();
        let snapshots = match &r.snapshot {
            None => cat
                .snapshots()
                .get(&r.volume)
                .map(|m| m.keys().map(|s| format!("{}@{s}", r.volume)).collect())
                .unwrap_or_default(),
            Some(_) => Vec::new(),
        };
        let clones = cat
            .direct_clones(&r.volume, r.snapshot.as_ref())
            .iter()
            .map(|n| n.to_string())
            .collect();
        Ok(VolumeInfo {
            name: r.to_string(),
            kind,
            size,
            allocated: chain.last().map(|l| l.allocated).unwrap_or(0),
            chain_allocated: chain.iter().map(|l| l.allocated).sum(),
            chain,
            snapshots,
            clones,
            origin,
            created,
        })
    }

    /// Takes a read-only, point-in-time snapshot `volume@snap`. O(1): no data is copied.
    pub fn snapshot(&self, volume: &Name, snap: &Name) -> Result<VolumeInfo> {
        self.snapshot_with(volume, snap, &[])
    }

    /// [`Store::snapshot`] and `records` in one transaction: both or neither.
    pub fn snapshot_with(
        &self,
        volume: &Name,
        snap: &Name,
        records: &[RecordChange],
    ) -> Result<VolumeInfo> {
        let mut meta = self.0.meta.lock();
        let r = VolumeRef {
            volume: volume.clone(),
            snapshot: Some(snap.clone()),
        };
        if meta.catalog.snapshot(volume, snap).is_some() {
            return Err(StoreError::Exists(format!("snapshot {r}")));
        }
        let size = meta.catalog.volume(volume)?.size;
        let entry = |frozen: &[String]| {
            let e = SnapshotEntry {
                size,
                layer: frozen.first().cloned().unwrap_or_default(),
                created: now(),
            };
            vec![Change::PutSnapshot(volume.clone(), snap.clone(), e)]
        };
        self.freeze_tops(&mut meta, std::slice::from_ref(volume), entry, records)?;
        self.info_locked(&meta, &r)
    }

    /// Makes a writable volume `new` from a volume or snapshot. O(1): no data is copied.
    pub fn clone_volume(&self, src: &VolumeRef, new: &Name) -> Result<VolumeInfo> {
        self.clone_volume_with(src, new, &[])
    }

    /// [`Store::clone_volume`] and `records` in one transaction: both or neither (a VM
    /// record created with its disk).
    pub fn clone_volume_with(
        &self,
        src: &VolumeRef,
        new: &Name,
        records: &[RecordChange],
    ) -> Result<VolumeInfo> {
        let mut meta = self.0.meta.lock();
        if meta.catalog.volumes().contains_key(new) {
            return Err(StoreError::Exists(format!("volume {new}")));
        }
        let src_vol = meta.catalog.volume(&src.volume)?.clone();
        let snap = match &src.snapshot {
            Some(s) => Some(
                meta.catalog
                    .snapshot(&src.volume, s)
                    .cloned()
                    .ok_or_else(|| StoreError::NoSuchSnapshot(src.to_string()))?,
            ),
            None => None,
        };
        let (id, blob_name, _, _) = self.new_blob()?;
        let add_clone = |parent: &str, size: u64| {
            vec![
                Change::PutLayer(
                    id.clone(),
                    LayerEntry {
                        parent: Some(parent.to_string()),
                        blob: blob_name.clone(),
                        created: now(),
                    },
                ),
                Change::PutVolume(
                    new.clone(),
                    VolumeEntry {
                        size,
                        top: id.clone(),
                        created: now(),
                        origin: Some(src.clone()),
                    },
                ),
            ]
        };
        let result = match snap {
            Some(e) => self.commit(&mut meta, add_clone(&e.layer, e.size), records),
            None => self.freeze_tops(
                &mut meta,
                std::slice::from_ref(&src.volume),
                |frozen| add_clone(frozen.first().map_or("", String::as_str), src_vol.size),
                records,
            ),
        };
        if let Err(e) = result {
            self.discard_blob(&blob_name);
            return Err(e);
        }
        self.info_locked(&meta, &VolumeRef::volume(new.clone()))
    }

    /// Grows a volume. Shrinking is refused.
    pub fn resize(&self, volume: &Name, new_size: u64) -> Result<VolumeInfo> {
        check_size(volume.as_str(), new_size)?;
        let mut meta = self.0.meta.lock();
        let old = meta.catalog.volume(volume)?.clone();
        if new_size < old.size {
            return Err(StoreError::Shrink {
                name: volume.to_string(),
                from: old.size,
                to: new_size,
            });
        }
        let entry = VolumeEntry {
            size: new_size,
            ..old
        };
        self.commit(
            &mut meta,
            vec![Change::PutVolume(volume.clone(), entry)],
            &[],
        )?;
        if let Some(inner) = meta.volumes.get(volume) {
            inner.state.write().size = new_size;
        }
        self.info_locked(&meta, &VolumeRef::volume(volume.clone()))
    }

    /// Deletes a volume (with its snapshots) or one snapshot. Refused while clones depend
    /// on it. Space of layers nothing else uses is given back at once.
    pub fn delete(&self, r: &VolumeRef) -> Result<()> {
        self.delete_with(r, &[])
    }

    /// [`Store::delete`] and `records` in one transaction: both or neither (a VM record
    /// removed with its disk).
    pub fn delete_with(&self, r: &VolumeRef, records: &[RecordChange]) -> Result<()> {
        let mut meta = self.0.meta.lock();
        let Some(vol) = meta.catalog.volumes().get(&r.volume).cloned() else {
            return Err(StoreError::NoSuchVolume(r.volume.to_string()));
        };
        let clones = meta.catalog.clones_of(&r.volume, r.snapshot.as_ref());
        if !clones.is_empty() {
            let names: Vec<String> = clones.iter().map(|c| c.to_string()).collect();
            let dependants = match names.len() {
                1 => format!("clone {} depends on it", names[0]),
                _ => format!("clones {} depend on it", names.join(", ")),
            };
            return Err(StoreError::HasDependants {
                target: r.to_string(),
                dependants,
            });
        }
        let mut changes = Vec::new();
        let mut released = Vec::new();
        match &r.snapshot {
            Some(s) => {
                let e = meta
                    .catalog
                    .snapshot(&r.volume, s)
                    .ok_or_else(|| StoreError::NoSuchSnapshot(r.to_string()))?;
                released.push(e.layer.clone());
                changes.push(Change::DeleteSnapshot(r.volume.clone(), s.clone()));
            }
            None => {
                released.push(vol.top.clone());
                changes.push(Change::DeleteVolume(r.volume.clone()));
                for (s, e) in meta
                    .catalog
                    .snapshots()
                    .get(&r.volume)
                    .into_iter()
                    .flatten()
                {
                    released.push(e.layer.clone());
                    changes.push(Change::DeleteSnapshot(r.volume.clone(), s.clone()));
                }
            }
        }
        let blobs = self.drop_layers(&meta, &released, &mut changes);
        self.commit(&mut meta, changes, records)?;
        let gone: Vec<Arc<VolumeInner>> = match &r.snapshot {
            Some(s) => meta
                .snapshots
                .remove(&(r.volume.clone(), s.clone()))
                .into_iter()
                .collect(),
            None => {
                let mut g: Vec<_> = meta.volumes.remove(&r.volume).into_iter().collect();
                let keys: Vec<_> = meta
                    .snapshots
                    .keys()
                    .filter(|(v, _)| v == &r.volume)
                    .cloned()
                    .collect();
                g.extend(keys.iter().filter_map(|k| meta.snapshots.remove(k)));
                g
            }
        };
        for v in gone {
            v.mark_deleted();
        }
        self.remove_blobs(&mut meta, blobs);
        Ok(())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.0.dir).finish()
    }
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        // The store directory sync a flush would have done (kept from format 1, harmless).
        if let Err(e) = self.dir_sync.sync_if_needed() {
            tracing::warn!(error = %e, "syncing the store directory failed");
        }
    }
}
