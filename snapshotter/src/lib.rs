//! The platter volume store: copy-on-write volumes in a directory, with O(1) snapshots and
//! clones, reads whose cost does not depend on the snapshot chain, and crash consistency.
//!
//! Layout of a store directory (format version 1; see ARCHITECTURE.md):
//! - `catalog`: volumes, snapshots and the tree of layers (the source of truth);
//! - `blobs/<name>/{data,journal}`: one layer's blocks and their index records;
//! - `lock`: held by the one process that opens the store;
//! - `run/`: sockets of `platter serve`.
//!
//! Every method is blocking and thread-safe. This crate never reads the environment and
//! never touches anything outside the directory it was given.
#![forbid(unsafe_code)]

mod blob;
mod catalog;
mod error;
pub mod extent_map;
#[doc(hidden)]
pub mod failpoint;
mod info;
pub mod journal;
mod seal;
mod store;
mod volume;

pub use catalog::FORMAT_VERSION;
pub use error::StoreError;
pub use info::{GcReport, Kind, LayerInfo, VolumeInfo};
pub use store::{Store, TempVolume, MAX_CHAIN, MAX_VOLUME_SIZE};
pub use volume::{BlockExtent, BlockKind, Volume, BLOCK};
