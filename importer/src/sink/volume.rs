//! Import into a store volume: the sink writes into a hidden temporary volume created
//! once the disk size is known, and commits it under its name in `finish`. Dropped
//! unfinished, the temporary volume is dropped too, so the store keeps nothing.
//!
//! The store is reached through [`TempVolumeTarget`] so this module does not depend on
//! the store's internals; `store.rs` adapts `platter_snapshotter::TempVolume`.

use super::{Sink, WRITEBACK_EVERY};
use crate::error::ImportError;

/// What the sink needs from a temporary volume.
pub trait TempVolumeTarget: Send {
    /// What `commit` returns (the store's volume info).
    type Committed;
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), String>;
    /// Changes the size before commit (a stream of unknown length grew, or ended).
    fn set_size(&mut self, size: u64) -> Result<(), String>;
    fn flush(&self) -> Result<(), String>;
    /// Starts writeback of recent writes without waiting (a hint; see [`WRITEBACK_EVERY`]).
    fn start_writeback(&self) -> Result<(), String> {
        Ok(())
    }
    fn commit(self) -> Result<Self::Committed, String>;
}

/// A sink over a temporary volume created lazily by `create(size)`.
pub struct VolumeSink<T, F> {
    target: String,
    create: Option<F>,
    volume: Option<T>,
    /// Bytes written since the last writeback kick.
    unkicked: u64,
}

/// Store sizes are multiples of 512.
fn round_512(size: u64) -> u64 {
    size.div_ceil(512).saturating_mul(512)
}

impl<T, F> VolumeSink<T, F>
where
    T: TempVolumeTarget,
    F: FnOnce(u64) -> Result<T, String> + Send,
{
    /// `target` names the volume in errors; `create` makes the temporary volume.
    pub fn new(target: impl Into<String>, create: F) -> VolumeSink<T, F> {
        VolumeSink {
            target: target.into(),
            create: Some(create),
            volume: None,
            unkicked: 0,
        }
    }

    fn err(&self, detail: String) -> ImportError {
        ImportError::Sink {
            target: self.target.clone(),
            detail,
        }
    }
}

impl<T, F> Sink for VolumeSink<T, F>
where
    T: TempVolumeTarget,
    F: FnOnce(u64) -> Result<T, String> + Send,
{
    type Output = T::Committed;

    fn set_size(&mut self, size: u64) -> Result<(), ImportError> {
        let size = round_512(size);
        if let Some(v) = self.volume.as_mut() {
            return v.set_size(size).map_err(|d| ImportError::Sink {
                target: self.target.clone(),
                detail: d,
            });
        }
        let create = self
            .create
            .take()
            .ok_or_else(|| self.err("temporary volume could not be created".into()))?;
        let v = create(size).map_err(|d| self.err(d))?;
        self.volume = Some(v);
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), ImportError> {
        let Some(v) = &self.volume else {
            return Err(self.err("write before the size was set".into()));
        };
        v.write_at(buf, offset).map_err(|d| self.err(d))?;
        self.unkicked += buf.len() as u64;
        if self.unkicked >= WRITEBACK_EVERY {
            self.unkicked = 0;
            v.start_writeback().map_err(|d| self.err(d))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<T::Committed, ImportError> {
        let v = self
            .volume
            .take()
            .ok_or_else(|| self.err("nothing was imported".into()))?;
        v.flush().map_err(|d| self.err(d))?;
        v.commit().map_err(|d| self.err(d))
    }
}
