//! The store: opens a directory, holds its lock, and carries out every metadata change
//! (create, snapshot, clone, resize, delete, gc) as one atomic catalog update.
//!
//! Views of frozen layers (their chain and merged index) are built once and shared by
//! every volume and snapshot above them; a volume's own view is its parent's frozen view
//! plus its top layer. Nothing here does block IO except loading indexes and sealing.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::RngCore;
use rustix::fs::{flock, FlockOperation};

use platter_types::{Name, VolumeRef};

use crate::blob::{self, Blob};
use crate::catalog::{
    Catalog, DecodeError, LayerEntry, SnapshotEntry, VolumeEntry, FORMAT_VERSION,
};
use crate::error::{Result, StoreError};
use crate::extent_map::ExtentMap;
use crate::info::{GcReport, Kind, LayerInfo, VolumeInfo};
use crate::journal::{JournalFile, Record};
use crate::volume::{Chain, DirSync, State, Volume, VolumeInner, BLOCK};

/// Deepest layer chain a volume may have (snapshots add one layer each).
pub const MAX_CHAIN: usize = 4096;
/// Largest volume size accepted (1 PiB).
pub const MAX_VOLUME_SIZE: u64 = 1 << 50;
const CATALOG: &str = "catalog";

/// An open store. Cheap to clone; shared by every thread of the process.
#[derive(Clone)]
pub struct Store(Arc<StoreInner>);

struct StoreInner {
    dir: PathBuf,
    dir_sync: Arc<DirSync>,
    blobs_dir: PathBuf,
    _lock: File,
    meta: Mutex<Meta>,
}

pub(crate) struct Meta {
    pub catalog: Catalog,
    volumes: HashMap<Name, Arc<VolumeInner>>,
    snapshots: HashMap<(Name, Name), Arc<VolumeInner>>,
    temps: HashMap<String, Arc<VolumeInner>>,
    /// Chain and merged index of frozen layers, by layer id.
    frozen: HashMap<String, (Chain, ExtentMap)>,
}

fn now() -> u64 {
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

fn check_size(object: &str, size: u64) -> Result<()> {
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
    /// Opens the store in `dir`, creating it if needed, and takes its lock. Imports left
    /// unfinished by a crash and unreferenced blobs are removed.
    pub fn open(dir: &Path) -> Result<Store> {
        for d in [dir.to_path_buf(), dir.join("blobs"), dir.join("run")] {
            std::fs::create_dir_all(&d).map_err(StoreError::io("create directory", &d))?;
        }
        let lock = lock_store(dir)?;
        let catalog = read_catalog(dir)?;
        let store = Store(Arc::new(StoreInner {
            dir: dir.to_path_buf(),
            dir_sync: Arc::new(DirSync {
                path: dir.to_path_buf(),
                needed: AtomicBool::new(false),
            }),
            blobs_dir: dir.join("blobs"),
            _lock: lock,
            meta: Mutex::new(Meta {
                catalog,
                volumes: HashMap::new(),
                snapshots: HashMap::new(),
                temps: HashMap::new(),
                frozen: HashMap::new(),
            }),
        }));
        {
            let mut meta = store.0.meta.lock();
            if !meta.catalog.temp_volumes.is_empty() {
                let mut cat = meta.catalog.clone();
                cat.temp_volumes.clear();
                store.save(&mut meta, cat)?;
            }
            store.collect(&mut meta)?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// The directory for sockets of a running server.
    pub fn run_dir(&self) -> PathBuf {
        self.0.dir.join("run")
    }

    fn save(&self, meta: &mut Meta, mut cat: Catalog) -> Result<()> {
        cat.generation = meta.catalog.generation + 1;
        write_catalog(&self.0.dir, &cat)?;
        self.0.dir_sync.needed.store(true, Ordering::Release);
        meta.catalog = cat;
        Ok(())
    }

    fn new_blob(&self) -> Result<(String, String, Arc<Blob>, JournalFile)> {
        let id = new_id();
        let name = format!("w-{id}");
        let (blob, journal) = Blob::create(&self.0.blobs_dir, &name, BLOCK as u32)?;
        Ok((id, name, Arc::new(blob), journal))
    }

    fn discard_blob(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.0.blobs_dir.join(name));
    }

    pub fn create_volume(&self, name: &Name, size: u64) -> Result<VolumeInfo> {
        check_size(name.as_str(), size)?;
        let mut meta = self.0.meta.lock();
        if meta.catalog.volumes.contains_key(name) {
            return Err(StoreError::Exists(format!("volume {name}")));
        }
        let (id, blob, _, _) = self.new_blob()?;
        let mut cat = meta.catalog.clone();
        cat.layers.insert(
            id.clone(),
            LayerEntry {
                parent: None,
                blob: blob.clone(),
                created: now(),
            },
        );
        cat.volumes.insert(
            name.clone(),
            VolumeEntry {
                size,
                top: id,
                created: now(),
                origin: None,
            },
        );
        if let Err(e) = self.save(&mut meta, cat) {
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
            .volumes
            .keys()
            .map(|n| (n, meta.catalog.snapshots.get(n)))
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

    fn info_locked(&self, meta: &Meta, r: &VolumeRef) -> Result<VolumeInfo> {
        let cat = &meta.catalog;
        let vol = cat
            .volumes
            .get(&r.volume)
            .ok_or_else(|| StoreError::NoSuchVolume(r.volume.to_string()))?;
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
                    .snapshots
                    .get(&r.volume)
                    .and_then(|m| m.get(s))
                    .ok_or_else(|| StoreError::NoSuchSnapshot(r.to_string()))?;
                (Kind::Snapshot, e.size, e.layer.clone(), e.created, None)
            }
        };
        let chain: Vec<LayerInfo> = cat
            .chain(&top)
            .into_iter()
            .map(|id| {
                let blob = cat
                    .layers
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
                .snapshots
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

    /// Opens a volume (read-write) or a snapshot (read-only) for IO.
    pub fn open_volume(&self, r: &VolumeRef) -> Result<Volume> {
        let mut meta = self.0.meta.lock();
        self.load(&mut meta, r).map(Volume)
    }

    fn load(&self, meta: &mut Meta, r: &VolumeRef) -> Result<Arc<VolumeInner>> {
        let vol = meta
            .catalog
            .volumes
            .get(&r.volume)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchVolume(r.volume.to_string()))?;
        match &r.snapshot {
            Some(s) => {
                let key = (r.volume.clone(), s.clone());
                if let Some(v) = meta.snapshots.get(&key) {
                    return Ok(v.clone());
                }
                let e = meta
                    .catalog
                    .snapshots
                    .get(&r.volume)
                    .and_then(|m| m.get(s))
                    .cloned()
                    .ok_or_else(|| StoreError::NoSuchSnapshot(r.to_string()))?;
                let (chain, map) = self.frozen_view(meta, &e.layer)?;
                let state = State {
                    chain,
                    base: map.clone(),
                    map,
                    size: e.size,
                    next_phys: 0,
                    identity: false,
                    deleted: false,
                };
                let inner = VolumeInner::new(r.to_string(), state, None, self.0.dir_sync.clone());
                meta.snapshots.insert(key, inner.clone());
                Ok(inner)
            }
            None => {
                // A volume fenced by a failed sync is rebuilt from its journal once nobody
                // holds it any more (the cache's is the only reference left); until that
                // succeeds, the fenced one stays.
                let mut rewrite = false;
                if let Some(v) = meta.volumes.get(&r.volume) {
                    if !(v.is_fenced() && Arc::strong_count(v) == 1) {
                        return Ok(v.clone());
                    }
                    tracing::warn!(volume = %r, "reopening a volume fenced by a failed sync");
                    rewrite = true;
                }
                let inner = self.load_writable(meta, r.to_string(), &vol, rewrite)?;
                meta.volumes.insert(r.volume.clone(), inner.clone());
                Ok(inner)
            }
        }
    }

    fn load_writable(
        &self,
        meta: &mut Meta,
        label: String,
        vol: &VolumeEntry,
        rewrite: bool,
    ) -> Result<Arc<VolumeInner>> {
        let (state, journal) = self.writable_state(meta, vol, rewrite)?;
        Ok(VolumeInner::new(
            label,
            state,
            Some(journal),
            self.0.dir_sync.clone(),
        ))
    }

    /// The state of a volume's top layer, loaded from its journal. `rewrite`: write the
    /// journal's committed records again first (after a failed sync of this journal, see
    /// [`JournalFile::rewrite_committed`]).
    fn writable_state(
        &self,
        meta: &mut Meta,
        vol: &VolumeEntry,
        rewrite: bool,
    ) -> Result<(State, JournalFile)> {
        let layer = meta.catalog.layers.get(&vol.top).cloned().ok_or_else(|| {
            StoreError::damaged(&self.0.dir, format!("layer {} missing", vol.top))
        })?;
        let (chain, base) = match &layer.parent {
            Some(p) => self.frozen_view(meta, p)?,
            None => (Arc::new(Vec::new()), ExtentMap::new()),
        };
        let (blob, mut journal, records) = Blob::open(&self.0.blobs_dir, &layer.blob, true)?;
        if rewrite {
            journal.rewrite_committed()?;
        }
        let depth = depth_of(&chain, &vol.top)?;
        let mut map = base.clone();
        for r in &records {
            check_record(r, vol.size, blob.dir())?;
            map.set(r.start, r.len, r.target(depth));
        }
        let (next_phys, identity) = crate::volume::placement(&records);
        let mut chain: Vec<Arc<Blob>> = chain.as_ref().clone();
        chain.push(Arc::new(blob));
        Ok((
            State {
                chain: Arc::new(chain),
                map,
                base,
                size: vol.size,
                next_phys,
                identity,
                deleted: false,
            },
            journal,
        ))
    }

    /// The chain and merged index of a frozen layer, built once and cached.
    fn frozen_view(&self, meta: &mut Meta, layer: &str) -> Result<(Chain, ExtentMap)> {
        if let Some(v) = meta.frozen.get(layer) {
            return Ok(v.clone());
        }
        let ids = meta.catalog.chain(layer);
        if ids.len() > MAX_CHAIN {
            return Err(StoreError::ChainTooDeep {
                volume: layer.to_string(),
                depth: ids.len(),
                max: MAX_CHAIN,
            });
        }
        // Start from the deepest ancestor already built.
        let known = ids.iter().rposition(|id| meta.frozen.contains_key(id));
        let (mut chain, mut map) = match known {
            Some(i) => meta.frozen.get(&ids[i]).cloned().unwrap_or_default(),
            None => (Arc::new(Vec::new()), ExtentMap::new()),
        };
        for id in ids.iter().skip(known.map_or(0, |i| i + 1)) {
            let entry =
                meta.catalog.layers.get(id).ok_or_else(|| {
                    StoreError::damaged(&self.0.dir, format!("layer {id} missing"))
                })?;
            let (blob, _, records) = Blob::open(&self.0.blobs_dir, &entry.blob, false)?;
            let depth = depth_of(&chain, id)?;
            for r in &records {
                check_record(r, MAX_VOLUME_SIZE, blob.dir())?;
                map.set(r.start, r.len, r.target(depth));
            }
            let mut c: Vec<Arc<Blob>> = chain.as_ref().clone();
            c.push(Arc::new(blob));
            chain = Arc::new(c);
            meta.frozen.insert(id.clone(), (chain.clone(), map.clone()));
        }
        Ok((chain, map))
    }

    /// Freezes a volume's top layer and gives it a fresh one. `update` adds what else the
    /// catalog change needs (a snapshot entry, a clone); it runs while writes are held off.
    fn freeze_top(
        &self,
        meta: &mut Meta,
        name: &Name,
        update: impl FnOnce(&mut Catalog, &str) -> Result<()>,
    ) -> Result<()> {
        let vol = meta
            .catalog
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchVolume(name.to_string()))?;
        let depth = meta.catalog.chain(&vol.top).len();
        if depth >= MAX_CHAIN {
            return Err(StoreError::ChainTooDeep {
                volume: name.to_string(),
                depth,
                max: MAX_CHAIN,
            });
        }
        let (id, blob_name, blob, journal) = self.new_blob()?;
        let mut cat = meta.catalog.clone();
        cat.layers.insert(
            id.clone(),
            LayerEntry {
                parent: Some(vol.top.clone()),
                blob: blob_name.clone(),
                created: now(),
            },
        );
        if let Some(v) = cat.volumes.get_mut(name) {
            v.top = id;
        }
        let loaded = meta.volumes.get(name).cloned();
        let result = (|| {
            update(&mut cat, &vol.top)?;
            match &loaded {
                Some(inner) => {
                    let q = inner.quiesce()?;
                    let (chain, map, _) = q.frozen_view();
                    crate::failpoint!("freeze-before-catalog");
                    self.save(meta, cat)?;
                    q.push_top(blob, journal);
                    meta.frozen.insert(vol.top.clone(), (chain, map));
                    Ok(())
                }
                None => self.save(meta, cat),
            }
        })();
        if result.is_err() {
            self.discard_blob(&blob_name);
        }
        result
    }

    /// Takes a read-only, point-in-time snapshot `volume@snap`. O(1): no data is copied.
    pub fn snapshot(&self, volume: &Name, snap: &Name) -> Result<VolumeInfo> {
        let mut meta = self.0.meta.lock();
        let r = VolumeRef {
            volume: volume.clone(),
            snapshot: Some(snap.clone()),
        };
        if meta
            .catalog
            .snapshots
            .get(volume)
            .is_some_and(|m| m.contains_key(snap))
        {
            return Err(StoreError::Exists(format!("snapshot {r}")));
        }
        let size = meta
            .catalog
            .volumes
            .get(volume)
            .map(|v| v.size)
            .ok_or_else(|| StoreError::NoSuchVolume(volume.to_string()))?;
        self.freeze_top(&mut meta, volume, |cat, frozen| {
            let entry = SnapshotEntry {
                size,
                layer: frozen.to_string(),
                created: now(),
            };
            cat.snapshots
                .entry(volume.clone())
                .or_default()
                .insert(snap.clone(), entry);
            Ok(())
        })?;
        self.info_locked(&meta, &r)
    }

    /// Makes a writable volume `new` from a volume or snapshot. O(1): no data is copied.
    pub fn clone_volume(&self, src: &VolumeRef, new: &Name) -> Result<VolumeInfo> {
        let mut meta = self.0.meta.lock();
        if meta.catalog.volumes.contains_key(new) {
            return Err(StoreError::Exists(format!("volume {new}")));
        }
        let src_vol = meta
            .catalog
            .volumes
            .get(&src.volume)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchVolume(src.volume.to_string()))?;
        let (id, blob_name, _, _) = self.new_blob()?;
        let add_clone = |cat: &mut Catalog, parent: &str, size: u64| {
            cat.layers.insert(
                id.clone(),
                LayerEntry {
                    parent: Some(parent.to_string()),
                    blob: blob_name.clone(),
                    created: now(),
                },
            );
            cat.volumes.insert(
                new.clone(),
                VolumeEntry {
                    size,
                    top: id.clone(),
                    created: now(),
                    origin: Some(src.clone()),
                },
            );
        };
        let result = match &src.snapshot {
            Some(s) => {
                let snap = meta
                    .catalog
                    .snapshots
                    .get(&src.volume)
                    .and_then(|m| m.get(s))
                    .cloned();
                match snap {
                    None => Err(StoreError::NoSuchSnapshot(src.to_string())),
                    Some(e) => {
                        let mut cat = meta.catalog.clone();
                        add_clone(&mut cat, &e.layer, e.size);
                        self.save(&mut meta, cat)
                    }
                }
            }
            None => self.freeze_top(&mut meta, &src.volume, |cat, frozen| {
                add_clone(cat, frozen, src_vol.size);
                Ok(())
            }),
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
        let old = meta
            .catalog
            .volumes
            .get(volume)
            .map(|v| v.size)
            .ok_or_else(|| StoreError::NoSuchVolume(volume.to_string()))?;
        if new_size < old {
            return Err(StoreError::Shrink {
                name: volume.to_string(),
                from: old,
                to: new_size,
            });
        }
        let mut cat = meta.catalog.clone();
        if let Some(v) = cat.volumes.get_mut(volume) {
            v.size = new_size;
        }
        self.save(&mut meta, cat)?;
        if let Some(inner) = meta.volumes.get(volume) {
            inner.state.write().size = new_size;
        }
        self.info_locked(&meta, &VolumeRef::volume(volume.clone()))
    }

    /// Deletes a volume (with its snapshots) or one snapshot. Refused while clones depend
    /// on it. Space of layers nothing else uses is given back at once.
    pub fn delete(&self, r: &VolumeRef) -> Result<()> {
        let mut meta = self.0.meta.lock();
        if !meta.catalog.volumes.contains_key(&r.volume) {
            return Err(StoreError::NoSuchVolume(r.volume.to_string()));
        }
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
        let mut cat = meta.catalog.clone();
        match &r.snapshot {
            Some(s) => {
                let removed = cat.snapshots.get_mut(&r.volume).and_then(|m| m.remove(s));
                if removed.is_none() {
                    return Err(StoreError::NoSuchSnapshot(r.to_string()));
                }
                if cat.snapshots.get(&r.volume).is_some_and(|m| m.is_empty()) {
                    cat.snapshots.remove(&r.volume);
                }
            }
            None => {
                cat.volumes.remove(&r.volume);
                cat.snapshots.remove(&r.volume);
            }
        }
        self.save(&mut meta, cat)?;
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
        self.collect(&mut meta)?;
        Ok(())
    }

    /// Removes layers nothing reaches and blob directories no layer names. Returns the
    /// bytes freed and the number of layers removed.
    fn collect(&self, meta: &mut Meta) -> Result<(u64, usize)> {
        let live = meta.catalog.live_layers();
        let dead: Vec<String> = meta
            .catalog
            .layers
            .keys()
            .filter(|id| !live.contains(*id))
            .cloned()
            .collect();
        if !dead.is_empty() {
            let mut cat = meta.catalog.clone();
            for id in &dead {
                cat.layers.remove(id);
            }
            self.save(meta, cat)?;
            for id in &dead {
                meta.frozen.remove(id);
            }
        }
        let used: std::collections::BTreeSet<&str> = meta
            .catalog
            .layers
            .values()
            .map(|l| l.blob.as_str())
            .collect();
        let mut freed = 0;
        let entries = std::fs::read_dir(&self.0.blobs_dir)
            .map_err(StoreError::io("list blobs", &self.0.blobs_dir))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !used.contains(name.as_str()) {
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

    /// Saves a catalog changed by sealing, then rebuilds every loaded view from disk so
    /// that no index points into a blob that was replaced.
    pub(crate) fn save_and_reload(&self, meta: &mut Meta, cat: Catalog) -> Result<()> {
        let loaded: Vec<(Name, Arc<VolumeInner>)> = meta
            .volumes
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let guards: Vec<_> = loaded
            .iter()
            .map(|(_, v)| v.quiesce())
            .collect::<Result<_>>()?;
        self.save(meta, cat)?;
        meta.frozen.clear();
        meta.snapshots.clear();
        for ((name, _), q) in loaded.iter().zip(guards) {
            let vol = meta
                .catalog
                .volumes
                .get(name)
                .cloned()
                .ok_or_else(|| StoreError::NoSuchVolume(name.to_string()))?;
            let (state, journal) = self.writable_state(meta, &vol, false)?;
            q.replace(state, Some(journal));
        }
        Ok(())
    }

    /// A hidden volume for an import: invisible until [`TempVolume::commit`], removed if
    /// dropped without it (or found after a crash).
    pub fn create_temp_volume(&self, size: u64) -> Result<TempVolume> {
        check_size("import", size)?;
        let mut meta = self.0.meta.lock();
        let (id, blob_name, _, _) = self.new_blob()?;
        let mut cat = meta.catalog.clone();
        let entry = VolumeEntry {
            size,
            top: id.clone(),
            created: now(),
            origin: None,
        };
        cat.layers.insert(
            id.clone(),
            LayerEntry {
                parent: None,
                blob: blob_name.clone(),
                created: now(),
            },
        );
        cat.temp_volumes.insert(id.clone(), entry.clone());
        if let Err(e) = self.save(&mut meta, cat) {
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
        let mut meta = self.0.meta.lock();
        if let Some(v) = meta.temps.remove(id) {
            v.mark_deleted();
        }
        let mut cat = meta.catalog.clone();
        if cat.temp_volumes.remove(id).is_some() {
            self.save(&mut meta, cat)?;
        }
        self.collect(&mut meta).map(|_| ())
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
    pub fn commit(mut self, name: &Name) -> Result<VolumeInfo> {
        let vol = self
            .volume
            .take()
            .ok_or_else(|| StoreError::Deleted(self.id.clone()))?;
        vol.flush()?;
        let mut meta = self.store.0.meta.lock();
        if meta.catalog.volumes.contains_key(name) {
            self.volume = Some(vol);
            return Err(StoreError::Exists(format!("volume {name}")));
        }
        let mut cat = meta.catalog.clone();
        let mut entry = cat
            .temp_volumes
            .remove(&self.id)
            .ok_or_else(|| StoreError::Deleted(self.id.clone()))?;
        entry.size = vol.size();
        cat.volumes.insert(name.clone(), entry);
        crate::failpoint!("commit-before-catalog");
        self.store.save(&mut meta, cat)?;
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

fn depth_of(chain: &Chain, layer: &str) -> Result<u16> {
    u16::try_from(chain.len()).map_err(|_| StoreError::ChainTooDeep {
        volume: layer.to_string(),
        depth: chain.len(),
        max: MAX_CHAIN,
    })
}

/// A record that points outside the volume is damage, not something to index.
fn check_record(r: &Record, size: u64, dir: &Path) -> Result<()> {
    let blocks = size.div_ceil(BLOCK);
    if r.start
        .checked_add(r.len)
        .is_none_or(|e| e > blocks.max(MAX_VOLUME_SIZE / BLOCK))
    {
        return Err(StoreError::damaged(
            dir,
            format!(
                "journal record for blocks {}+{} is out of range",
                r.start, r.len
            ),
        ));
    }
    Ok(())
}

fn lock_store(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let mut f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(StoreError::io("open lock", &path))?;
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        return Err(StoreError::Locked {
            dir: dir.to_path_buf(),
            pid,
        });
    }
    let _ = f
        .set_len(0)
        .and_then(|_| writeln!(f, "{}", std::process::id()));
    Ok(f)
}

fn read_catalog(dir: &Path) -> Result<Catalog> {
    let path = dir.join(CATALOG);
    match std::fs::read(&path) {
        Ok(bytes) => Catalog::decode(&bytes).map_err(|e| match e {
            DecodeError::Newer(found) => StoreError::NewerFormat {
                dir: dir.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            },
            DecodeError::Damaged(why) => StoreError::damaged(&path, why),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A store with blobs but no catalog lost its catalog: never start it afresh.
            let has_blobs = std::fs::read_dir(dir.join("blobs"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if has_blobs {
                return Err(StoreError::damaged(
                    &path,
                    "catalog is missing but the store holds blobs",
                ));
            }
            let cat = Catalog::new();
            write_catalog(dir, &cat)?;
            Ok(cat)
        }
        Err(e) => Err(StoreError::io("read catalog", &path)(e)),
    }
}

fn write_catalog(dir: &Path, cat: &Catalog) -> Result<()> {
    let tmp = dir.join("catalog.tmp");
    let path = dir.join(CATALOG);
    let mut f = File::create(&tmp).map_err(StoreError::io("write catalog", &tmp))?;
    f.write_all(&cat.encode())
        .and_then(|_| f.sync_data())
        .map_err(StoreError::io("write catalog", &tmp))?;
    crate::failpoint!("catalog-before-rename");
    // The rename is atomic; it is not followed by a directory sync: a power failure right
    // after it may bring back the previous catalog (consistent, its new blobs collected as
    // garbage), never a mix. Everything written before a flush stays durable regardless.
    std::fs::rename(&tmp, &path).map_err(StoreError::io("replace catalog", &path))
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.0.dir).finish()
    }
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        // Make the last catalog change durable before the process lets go of the store.
        if let Err(e) = self.dir_sync.sync_if_needed() {
            tracing::warn!(error = %e, "syncing the store directory failed");
        }
    }
}
