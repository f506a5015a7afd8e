//! The catalog: which volumes, snapshots, layers and imports in progress exist, held in
//! memory as the read cache of the metadata database (`metadb.rs`), which is the truth.
//!
//! Pure. A change is described as a list of [`Change`]s, committed to the database first
//! and applied here only once the commit returned, so the cache never runs ahead of the
//! disk. Beside the maps it keeps indexes (references per layer, layers per blob, clones
//! per origin volume) so that what an operation asks costs the size of the answer, never
//! the size of the store: deleting one volume among 10,000 touches its own chain only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use platter_types::{Name, VolumeRef};

/// The store's format: 1 was the whole-file `catalog`, 2 is the `meta.redb` database.
pub const FORMAT_VERSION: u32 = 2;

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

/// One entry written or removed. A store operation is a list of these, committed in one
/// database transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    PutLayer(String, LayerEntry),
    DeleteLayer(String),
    PutVolume(Name, VolumeEntry),
    DeleteVolume(Name),
    PutSnapshot(Name, Name, SnapshotEntry),
    DeleteSnapshot(Name, Name),
    PutTemp(String, VolumeEntry),
    DeleteTemp(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    /// Per layer: child layers + volume and import tops + snapshots naming it. A layer at
    /// zero is unreachable.
    refs: HashMap<String, u32>,
    /// Per blob directory: the layers naming it (sealed blobs are shared).
    blob_users: HashMap<String, u32>,
    /// Per origin volume: the volumes cloned from it or from one of its snapshots.
    clones: HashMap<Name, BTreeSet<Name>>,
}

impl Index {
    fn inc(map: &mut HashMap<String, u32>, k: &str) {
        *map.entry(k.to_string()).or_default() += 1;
    }

    fn dec(map: &mut HashMap<String, u32>, k: &str) {
        if let Some(n) = map.get_mut(k) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(k);
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    layers: BTreeMap<String, LayerEntry>,
    volumes: BTreeMap<Name, VolumeEntry>,
    /// Keyed by volume, then snapshot name.
    snapshots: BTreeMap<Name, BTreeMap<Name, SnapshotEntry>>,
    /// Imports in progress: invisible, removed when found at open.
    temp_volumes: BTreeMap<String, VolumeEntry>,
    index: Index,
}

impl Catalog {
    pub fn new() -> Self {
        Catalog::default()
    }

    /// A catalog from its maps (a database or a v1 file), indexes built, references checked.
    pub fn from_parts(
        layers: BTreeMap<String, LayerEntry>,
        volumes: BTreeMap<Name, VolumeEntry>,
        snapshots: BTreeMap<Name, BTreeMap<Name, SnapshotEntry>>,
        temp_volumes: BTreeMap<String, VolumeEntry>,
    ) -> Result<Catalog, String> {
        let mut cat = Catalog::new();
        let changes = layers
            .into_iter()
            .map(|(id, l)| Change::PutLayer(id, l))
            .chain(volumes.into_iter().map(|(n, v)| Change::PutVolume(n, v)))
            .chain(snapshots.into_iter().flat_map(|(v, m)| {
                m.into_iter()
                    .map(move |(s, e)| Change::PutSnapshot(v.clone(), s, e))
            }))
            .chain(temp_volumes.into_iter().map(|(i, v)| Change::PutTemp(i, v)));
        for c in changes {
            cat.apply(&c);
        }
        cat.check()?;
        Ok(cat)
    }

    pub fn layers(&self) -> &BTreeMap<String, LayerEntry> {
        &self.layers
    }

    pub fn volumes(&self) -> &BTreeMap<Name, VolumeEntry> {
        &self.volumes
    }

    /// The volume `name`, or the error that says there is none.
    pub fn volume(&self, name: &Name) -> crate::error::Result<&VolumeEntry> {
        self.volumes
            .get(name)
            .ok_or_else(|| crate::error::StoreError::NoSuchVolume(name.to_string()))
    }

    pub fn snapshots(&self) -> &BTreeMap<Name, BTreeMap<Name, SnapshotEntry>> {
        &self.snapshots
    }

    pub fn temp_volumes(&self) -> &BTreeMap<String, VolumeEntry> {
        &self.temp_volumes
    }

    pub fn snapshot(&self, volume: &Name, snap: &Name) -> Option<&SnapshotEntry> {
        self.snapshots.get(volume).and_then(|m| m.get(snap))
    }

    /// Applies one committed change to the maps and the indexes.
    pub fn apply(&mut self, c: &Change) {
        let ix = &mut self.index;
        match c {
            Change::PutLayer(id, l) => {
                if let Some(old) = self.layers.insert(id.clone(), l.clone()) {
                    if let Some(p) = &old.parent {
                        Index::dec(&mut ix.refs, p);
                    }
                    Index::dec(&mut ix.blob_users, &old.blob);
                }
                if let Some(p) = &l.parent {
                    Index::inc(&mut ix.refs, p);
                }
                Index::inc(&mut ix.blob_users, &l.blob);
            }
            Change::DeleteLayer(id) => {
                if let Some(old) = self.layers.remove(id) {
                    if let Some(p) = &old.parent {
                        Index::dec(&mut ix.refs, p);
                    }
                    Index::dec(&mut ix.blob_users, &old.blob);
                }
            }
            Change::PutVolume(name, v) => {
                if let Some(old) = self.volumes.insert(name.clone(), v.clone()) {
                    Self::unlink_volume(ix, name, &old);
                }
                Index::inc(&mut ix.refs, &v.top);
                if let Some(o) = &v.origin {
                    ix.clones
                        .entry(o.volume.clone())
                        .or_default()
                        .insert(name.clone());
                }
            }
            Change::DeleteVolume(name) => {
                if let Some(old) = self.volumes.remove(name) {
                    Self::unlink_volume(ix, name, &old);
                }
            }
            Change::PutSnapshot(v, s, e) => {
                let m = self.snapshots.entry(v.clone()).or_default();
                if let Some(old) = m.insert(s.clone(), e.clone()) {
                    Index::dec(&mut ix.refs, &old.layer);
                }
                Index::inc(&mut ix.refs, &e.layer);
            }
            Change::DeleteSnapshot(v, s) => {
                if let Some(m) = self.snapshots.get_mut(v) {
                    if let Some(old) = m.remove(s) {
                        Index::dec(&mut ix.refs, &old.layer);
                    }
                    if m.is_empty() {
                        self.snapshots.remove(v);
                    }
                }
            }
            Change::PutTemp(id, v) => {
                if let Some(old) = self.temp_volumes.insert(id.clone(), v.clone()) {
                    Index::dec(&mut ix.refs, &old.top);
                }
                Index::inc(&mut ix.refs, &v.top);
            }
            Change::DeleteTemp(id) => {
                if let Some(old) = self.temp_volumes.remove(id) {
                    Index::dec(&mut ix.refs, &old.top);
                }
            }
        }
    }

    fn unlink_volume(ix: &mut Index, name: &Name, old: &VolumeEntry) {
        Index::dec(&mut ix.refs, &old.top);
        if let Some(o) = &old.origin {
            if let Some(set) = ix.clones.get_mut(&o.volume) {
                set.remove(name);
                if set.is_empty() {
                    ix.clones.remove(&o.volume);
                }
            }
        }
    }

    /// Referential integrity: every reference resolves and parents form no loop.
    pub fn check(&self) -> Result<(), String> {
        // Layers whose chain is known to end at a root: each chain is walked once, so a
        // store of many deep chains is checked in time linear in its layers.
        let mut rooted: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (id, l) in &self.layers {
            let mut path = vec![id.as_str()];
            let mut cur = l.parent.as_deref();
            while let Some(p) = cur {
                if rooted.contains(p) {
                    break;
                }
                if path.len() > self.layers.len() {
                    return Err(format!("layer {id}: parent chain loops"));
                }
                path.push(p);
                cur = self
                    .layers
                    .get(p)
                    .ok_or_else(|| format!("layer {id}: parent {p} missing"))?
                    .parent
                    .as_deref();
            }
            rooted.extend(path);
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

    /// Layers reachable from some volume, snapshot or import (a full scan: for open and gc).
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

    /// The layers that become unreachable once one reference to each layer in `released`
    /// is dropped (a deleted volume's top, a deleted snapshot's layer), walking up their
    /// chains only as far as nothing else holds them.
    pub fn unreachable_after(&self, released: &[&str]) -> Vec<String> {
        let mut dropped: HashMap<&str, u32> = HashMap::new();
        let mut dead = Vec::new();
        let mut todo: Vec<&str> = released.to_vec();
        while let Some(id) = todo.pop() {
            let n = dropped.entry(id).or_default();
            *n += 1;
            let held = self.index.refs.get(id).copied().unwrap_or(0);
            if *n == held {
                if let Some(l) = self.layers.get(id) {
                    dead.push(id.to_string());
                    if let Some(p) = &l.parent {
                        todo.push(p);
                    }
                }
            }
        }
        dead
    }

    /// How many layers name `blob`.
    pub fn blob_users(&self, blob: &str) -> u32 {
        self.index.blob_users.get(blob).copied().unwrap_or(0)
    }

    /// Volumes cloned from `volume` or from one of its snapshots (`snapshot` None), or
    /// from exactly `volume@snapshot`.
    pub fn clones_of(&self, volume: &Name, snapshot: Option<&Name>) -> Vec<Name> {
        self.clones_where(volume, |o| {
            snapshot.is_none() || o.snapshot.as_ref() == snapshot
        })
    }

    /// Volumes cloned from exactly `volume` (snapshot `None`) or exactly `volume@snapshot`.
    pub fn direct_clones(&self, volume: &Name, snapshot: Option<&Name>) -> Vec<Name> {
        self.clones_where(volume, |o| o.snapshot.as_ref() == snapshot)
    }

    fn clones_where(&self, volume: &Name, keep: impl Fn(&VolumeRef) -> bool) -> Vec<Name> {
        let Some(set) = self.index.clones.get(volume) else {
            return Vec::new();
        };
        set.iter()
            .filter(|n| {
                self.volumes
                    .get(*n)
                    .and_then(|v| v.origin.as_ref())
                    .is_some_and(&keep)
            })
            .cloned()
            .collect()
    }

    /// The writable tops of every volume and import.
    pub fn tops(&self) -> std::collections::HashSet<&str> {
        self.volumes
            .values()
            .chain(self.temp_volumes.values())
            .map(|v| v.top.as_str())
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(parent: Option<&str>, blob: &str) -> LayerEntry {
        LayerEntry {
            parent: parent.map(str::to_string),
            blob: blob.to_string(),
            created: 1,
        }
    }

    fn vol(top: &str, origin: Option<&str>) -> VolumeEntry {
        VolumeEntry {
            size: 4096,
            top: top.to_string(),
            created: 1,
            origin: origin.map(|o| VolumeRef::parse(o).unwrap()),
        }
    }

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn blob(c: char) -> String {
        format!("w-{}", c.to_string().repeat(32))
    }

    /// base (layer a, frozen) with snapshot base@s on a; base's top b on a; clone c on a.
    fn sample() -> Catalog {
        let mut cat = Catalog::new();
        for c in [
            Change::PutLayer("a".into(), layer(None, &blob('a'))),
            Change::PutLayer("b".into(), layer(Some("a"), &blob('b'))),
            Change::PutLayer("c".into(), layer(Some("a"), &blob('c'))),
            Change::PutVolume(n("base"), vol("b", None)),
            Change::PutSnapshot(
                n("base"),
                n("s"),
                SnapshotEntry {
                    size: 4096,
                    layer: "a".into(),
                    created: 1,
                },
            ),
            Change::PutVolume(n("clone"), vol("c", Some("base@s"))),
        ] {
            cat.apply(&c);
        }
        cat.check().unwrap();
        cat
    }

    #[test]
    fn unreachable_layers_follow_references() {
        let cat = sample();
        // The clone's own top goes; its parent is still held by base and the snapshot.
        assert_eq!(cat.unreachable_after(&["c"]), vec!["c".to_string()]);
        // Base and its snapshot together: a is still held by the clone's top.
        let mut dead = cat.unreachable_after(&["b", "a"]);
        dead.sort();
        assert_eq!(dead, vec!["b".to_string()]);
        let mut cat = cat;
        cat.apply(&Change::DeleteVolume(n("clone")));
        cat.apply(&Change::DeleteLayer("c".into()));
        let mut dead = cat.unreachable_after(&["b", "a"]);
        dead.sort();
        assert_eq!(dead, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn indexes_match_a_rebuild() {
        let mut cat = sample();
        cat.apply(&Change::DeleteVolume(n("clone")));
        cat.apply(&Change::DeleteLayer("c".into()));
        cat.apply(&Change::PutLayer("a".into(), layer(None, &blob('b'))));
        let rebuilt = Catalog::from_parts(
            cat.layers.clone(),
            cat.volumes.clone(),
            cat.snapshots.clone(),
            cat.temp_volumes.clone(),
        )
        .unwrap();
        assert_eq!(rebuilt, cat);
        assert_eq!(cat.blob_users(&blob('b')), 2);
        assert!(cat.clones_of(&n("base"), None).is_empty());
    }

    #[test]
    fn clones_are_found_by_origin() {
        let cat = sample();
        assert_eq!(cat.clones_of(&n("base"), None), vec![n("clone")]);
        assert_eq!(
            cat.direct_clones(&n("base"), Some(&n("s"))),
            vec![n("clone")]
        );
        assert!(cat.direct_clones(&n("base"), None).is_empty());
    }

    #[test]
    fn parent_loops_are_damage() {
        let mut c = sample();
        c.apply(&Change::PutLayer("x".into(), layer(Some("y"), &blob('d'))));
        c.apply(&Change::PutLayer("y".into(), layer(Some("x"), &blob('e'))));
        assert!(c.check().unwrap_err().contains("loops"));
    }

    #[test]
    fn dangling_references_are_damage() {
        let mut c = sample();
        c.apply(&Change::PutVolume(n("v"), vol("nope", None)));
        assert!(c.check().is_err());
    }
}
