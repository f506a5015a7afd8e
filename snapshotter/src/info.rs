//! What `list` and `inspect` report about volumes and snapshots (serializable for `-o json`).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Volume,
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerInfo {
    pub id: String,
    /// `w-…` while writable or frozen, `sha256-…` once sealed by gc.
    pub blob: String,
    pub allocated: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    /// `NAME` or `NAME@SNAP`.
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    /// Bytes stored in this object's own (top) layer: what deleting it alone would free.
    pub allocated: u64,
    /// Bytes stored across its whole chain, shared layers included.
    pub chain_allocated: u64,
    /// Layers from the bottom to the top.
    pub chain: Vec<LayerInfo>,
    pub snapshots: Vec<String>,
    pub clones: Vec<String>,
    pub origin: Option<String>,
    pub created: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub bytes_freed: u64,
    pub layers_removed: usize,
    pub layers_sealed: usize,
    pub layers_deduplicated: usize,
}
