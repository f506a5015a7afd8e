//! The platter volume store: copy-on-write volumes in a directory, with O(1) snapshots and
//! clones, reads whose cost does not depend on the snapshot chain, and crash consistency.
//!
//! Layout of a store directory (format version 2; see ARCHITECTURE.md):
//! - `meta.redb`: the metadata database (volumes, snapshots, the tree of layers, records
//!   such as VM records): the source of truth, changed one transaction per operation;
//! - `blobs/<name>/{data,journal}`: one layer's blocks and their index records;
//! - `lock`: held by the one process that opens the store;
//! - `run/`: sockets of `platter serve`.
//!
//! Every method is blocking and thread-safe. This crate never reads the environment and
//! never touches anything outside the directory it was given.
#![forbid(unsafe_code)]

mod blob;
mod catalog;
mod catalog_v1;
mod error;
pub mod extent_map;
#[doc(hidden)]
pub mod failpoint;
mod freeze;
mod info;
pub mod journal;
mod metadb;
mod migrate;
mod records;
mod rollback;
mod seal;
mod store;
mod temp_volume;
mod volume;

pub use catalog::FORMAT_VERSION;
pub use error::StoreError;
pub use info::{GcReport, Kind, LayerInfo, VolumeInfo};
pub use records::{RecordChange, MAX_RECORD_BYTES, VM_KIND};
pub use store::{Store, MAX_CHAIN, MAX_VOLUME_SIZE};
pub use temp_volume::TempVolume;
pub use volume::{BlockExtent, BlockKind, Volume, BLOCK};
