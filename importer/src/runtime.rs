//! The tokio runtime that runs network IO (reqwest, oci-client) for the blocking import
//! and push pipelines. Pipeline threads reach it with `Handle::block_on`; they are plain
//! threads, never runtime workers, so that is always allowed.
//!
//! Created once per process, on first use, with two workers: network IO is not CPU work.

use crate::error::ImportError;
use std::sync::OnceLock;
use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared network runtime's handle.
pub(crate) fn handle() -> Result<Handle, ImportError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("platter-net")
        .enable_all()
        .build()
        .map_err(|e| ImportError::io("starting the network runtime", e))?;
    // Another thread may have won the race; either runtime works, keep the first.
    let _ = RUNTIME.set(rt);
    RUNTIME
        .get()
        .map(|rt| rt.handle().clone())
        .ok_or(ImportError::Aborted("network runtime vanished"))
}
