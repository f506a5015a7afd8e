//! platter's FUSE view of a volume store: `platter serve --mount DIR` shows every volume
//! as `DIR/NAME.img` (read-write) and every snapshot as `DIR/NAME@SNAP.img` (read-only),
//! so any program can read or write a volume as a plain file.
//!
//! - reads and writes go to the volume's `read_at`/`write_at` (no caching of our own; the
//!   kernel page cache is dropped on every open); `fsync` and `close` flush the volume;
//! - `fallocate(PUNCH_HOLE)` trims, `lseek(SEEK_DATA/SEEK_HOLE)` answers from block status,
//!   so `cp --sparse` and `qemu-img convert` keep holes;
//! - sizes are fixed: writes past the end fail with `ENOSPC`, truncation with
//!   `EPERM`/`EFBIG`; snapshots refuse writes with `EROFS`;
//! - the listing is asked of the store on every `lookup` and `opendir`, so volumes created
//!   or deleted later appear and disappear (attributes are cached for one second).
//!
//! Wiring in a binary (the caller owns the cancellation):
//! ```no_run
//! # fn demo(store: platter_snapshotter::Store) -> Result<(), platter_fuse::FuseError> {
//! let handle = platter_fuse::mount(store, std::path::Path::new("/mnt/volumes"), &Default::default())?;
//! // ... wait for SIGINT/SIGTERM (e.g. a CancellationToken), then, off the async runtime:
//! handle.unmount()?; // unmounts, joins the session, flushes volumes still open
//! # Ok(()) }
//! ```
//!
//! This crate never panics on a request, never allocates more than a bounded request
//! size per request, and contains no `unsafe` (fuser holds the FFI).
#![forbid(unsafe_code)]

mod error;
mod fs;
mod mount;
pub mod names;
pub mod ranges;
mod state;

pub use error::FuseError;
pub use mount::{mount, MountHandle, MountOptions};
