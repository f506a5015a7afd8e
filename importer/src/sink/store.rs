//! Import into the platter store: a hidden temporary volume created once the size is
//! known, committed under its name in `finish`; dropped (so removed by the store) on any
//! error. Also lets push read a store volume or snapshot directly.
//!
//! An existing volume of the same name is refused before anything is downloaded and is
//! never touched.

use super::volume::{TempVolumeTarget, VolumeSink};
use super::Sink;
use crate::error::ImportError;
use crate::push::{PushExtent, PushVolume};
use platter_snapshotter::{BlockKind, Store, TempVolume, Volume, VolumeInfo};
use platter_types::{Name, VolumeRef};
use std::io;

impl TempVolumeTarget for TempVolume {
    type Committed = TempVolume;
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), String> {
        Volume::write_at(self, buf, offset).map_err(|e| e.to_string())
    }
    fn set_size(&mut self, size: u64) -> Result<(), String> {
        TempVolume::set_size(self, size).map_err(|e| e.to_string())
    }
    fn flush(&self) -> Result<(), String> {
        Volume::flush(self).map_err(|e| e.to_string())
    }
    fn start_writeback(&self) -> Result<(), String> {
        Volume::start_writeback(self).map_err(|e| e.to_string())
    }
    /// The name is only known to [`StoreSink`], which commits; this hands the volume back.
    fn commit(self) -> Result<TempVolume, String> {
        Ok(self)
    }
}

type Create = Box<dyn FnOnce(u64) -> Result<TempVolume, String> + Send>;

/// `platter import SOURCE NAME`: see the module doc.
pub struct StoreSink {
    name: Name,
    inner: VolumeSink<TempVolume, Create>,
}

impl StoreSink {
    /// Fails at once if `name` exists.
    pub fn new(store: &Store, name: &Name) -> Result<StoreSink, ImportError> {
        if store.inspect(&VolumeRef::volume(name.clone())).is_ok() {
            return Err(ImportError::InvalidDestination {
                dest: name.to_string(),
                reason: "a volume of that name already exists".into(),
            });
        }
        let store = store.clone();
        let create: Create =
            Box::new(move |size| store.create_temp_volume(size).map_err(|e| e.to_string()));
        Ok(StoreSink {
            name: name.clone(),
            inner: VolumeSink::new(format!("volume {name}"), create),
        })
    }
}

impl Sink for StoreSink {
    type Output = VolumeInfo;
    fn set_size(&mut self, size: u64) -> Result<(), ImportError> {
        self.inner.set_size(size)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), ImportError> {
        self.inner.write_at(buf, offset)
    }
    fn finish(self) -> Result<VolumeInfo, ImportError> {
        let temp = self.inner.finish()?;
        temp.commit(&self.name).map_err(|e| ImportError::Sink {
            target: format!("volume {}", self.name),
            detail: e.to_string(),
        })
    }
}

impl PushVolume for Volume {
    fn size(&self) -> u64 {
        Volume::size(self)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        Volume::read_at(self, buf, offset).map_err(io::Error::other)
    }
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<PushExtent>> {
        Ok(Volume::block_status(self, offset, len)
            .map_err(io::Error::other)?
            .into_iter()
            .map(|e| PushExtent {
                offset: e.offset,
                len: e.len,
                data: matches!(e.kind, BlockKind::Data),
            })
            .collect())
    }
}
