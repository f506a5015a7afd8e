//! The view cache: a volume's or snapshot's chain and merged index, loaded from the
//! journals once and kept (`Meta::volumes`, `snapshots`, `frozen`), so a read never walks
//! the chain.

use std::path::Path;
use std::sync::Arc;

use platter_types::VolumeRef;

use super::{Meta, Store, MAX_CHAIN, MAX_VOLUME_SIZE};
use crate::blob::Blob;
use crate::catalog::VolumeEntry;
use crate::error::{Result, StoreError};
use crate::extent_map::ExtentMap;
use crate::journal::{JournalFile, Record};
use crate::volume::{Chain, State, Volume, VolumeInner, BLOCK};

impl Store {
    /// Opens a volume (read-write) or a snapshot (read-only) for IO.
    pub fn open_volume(&self, r: &VolumeRef) -> Result<Volume> {
        let mut meta = self.0.meta.lock();
        self.load(&mut meta, r).map(Volume)
    }

    fn load(&self, meta: &mut Meta, r: &VolumeRef) -> Result<Arc<VolumeInner>> {
        let vol = meta.catalog.volume(&r.volume)?.clone();
        match &r.snapshot {
            Some(s) => {
                let key = (r.volume.clone(), s.clone());
                if let Some(v) = meta.snapshots.get(&key) {
                    return Ok(v.clone());
                }
                let e = meta
                    .catalog
                    .snapshot(&r.volume, s)
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
                let inner = match self.0.read_only {
                    true => {
                        let (state, _) = self.top_state(meta, &vol, false, false)?;
                        VolumeInner::new(r.to_string(), state, None, self.0.dir_sync.clone())
                    }
                    false => self.load_writable(meta, r.to_string(), &vol, rewrite)?,
                };
                meta.volumes.insert(r.volume.clone(), inner.clone());
                Ok(inner)
            }
        }
    }

    pub(crate) fn load_writable(
        &self,
        meta: &mut Meta,
        label: String,
        vol: &VolumeEntry,
        rewrite: bool,
    ) -> Result<Arc<VolumeInner>> {
        let (state, journal) = self.top_state(meta, vol, true, rewrite)?;
        Ok(VolumeInner::new(
            label,
            state,
            Some(journal),
            self.0.dir_sync.clone(),
        ))
    }

    /// The state of a volume's top layer, loaded from its journal (opened for appending
    /// when `writable`). `rewrite`: write the journal's committed records again first
    /// (after a failed sync of this journal, see [`JournalFile::rewrite_committed`]).
    pub(super) fn top_state(
        &self,
        meta: &mut Meta,
        vol: &VolumeEntry,
        writable: bool,
        rewrite: bool,
    ) -> Result<(State, JournalFile)> {
        let layer = meta
            .catalog
            .layers()
            .get(&vol.top)
            .cloned()
            .ok_or_else(|| {
                StoreError::damaged(&self.0.dir, format!("layer {} missing", vol.top))
            })?;
        let (chain, base) = match &layer.parent {
            Some(p) => self.frozen_view(meta, p)?,
            None => (Arc::new(Vec::new()), ExtentMap::new()),
        };
        let (blob, mut journal, records) = Blob::open(&self.0.blobs_dir, &layer.blob, writable)?;
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
                meta.catalog.layers().get(id).ok_or_else(|| {
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
