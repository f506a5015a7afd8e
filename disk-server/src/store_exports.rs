//! The volume store as NBD exports: every volume is an export `NAME` (read-write) and
//! every snapshot `NAME@SNAP` (read-only), looked up in the store at each handshake so
//! volumes created while the server runs appear at once.
//!
//! This is only an adapter: it maps names to `Store::open_volume` and store errors to
//! device errors (hence NBD errnos). It never changes the store.

use std::sync::Arc;

use platter_snapshotter::{BlockKind, Kind, Store, StoreError, Volume};
use platter_types::VolumeRef;

use crate::device::{
    BlockDevice, DeviceError, ExportError, ExportInfo, ExportProvider, Extent, ExtentKind,
};

/// Every volume and snapshot of a store.
#[derive(Clone)]
pub struct StoreExports {
    store: Store,
}

impl StoreExports {
    pub fn new(store: Store) -> Self {
        StoreExports { store }
    }
}

impl ExportProvider for StoreExports {
    fn list(&self) -> Vec<ExportInfo> {
        match self.store.list() {
            Ok(list) => list
                .into_iter()
                .map(|v| ExportInfo {
                    description: match v.kind {
                        Kind::Volume => String::new(),
                        Kind::Snapshot => "read-only snapshot".to_owned(),
                    },
                    read_only: v.kind == Kind::Snapshot,
                    size: v.size,
                    name: v.name,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list volumes for NBD");
                Vec::new()
            }
        }
    }

    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, ExportError> {
        let r = VolumeRef::parse(name).map_err(|_| ExportError::NotFound(name.to_owned()))?;
        match self.store.open_volume(&r) {
            Ok(v) => Ok(Arc::new(VolumeDevice(v))),
            Err(StoreError::NoSuchVolume(_) | StoreError::NoSuchSnapshot(_)) => {
                Err(ExportError::NotFound(name.to_owned()))
            }
            Err(e) => Err(ExportError::Unavailable {
                name: name.to_owned(),
                reason: e.to_string(),
            }),
        }
    }
}

/// A store volume as a block device.
pub struct VolumeDevice(pub Volume);

fn dev_err(offset: u64, e: StoreError) -> DeviceError {
    match e {
        StoreError::ReadOnly(_) => DeviceError::ReadOnly,
        StoreError::OutOfRange {
            offset, len, size, ..
        } => DeviceError::OutOfRange { offset, len, size },
        StoreError::Io { source, .. } => DeviceError::Io { offset, source },
        other => DeviceError::Other(other.to_string()),
    }
}

impl BlockDevice for VolumeDevice {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_only(&self) -> bool {
        self.0.read_only()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        self.0.read_at(buf, offset).map_err(|e| dev_err(offset, e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.0.write_at(buf, offset).map_err(|e| dev_err(offset, e))
    }

    fn flush(&self) -> Result<(), DeviceError> {
        self.0.flush().map_err(|e| dev_err(0, e))
    }

    fn trim(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        self.0.trim(offset, len).map_err(|e| dev_err(offset, e))
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), DeviceError> {
        self.0
            .write_zeroes(offset, len, may_unmap)
            .map_err(|e| dev_err(offset, e))
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, DeviceError> {
        let ext = self
            .0
            .block_status(offset, len)
            .map_err(|e| dev_err(offset, e))?;
        Ok(ext
            .into_iter()
            .map(|e| Extent {
                offset: e.offset,
                len: e.len,
                kind: match e.kind {
                    BlockKind::Data => ExtentKind::Data,
                    BlockKind::Zero => ExtentKind::Zero,
                    BlockKind::Hole => ExtentKind::Hole,
                },
            })
            .collect())
    }
}
