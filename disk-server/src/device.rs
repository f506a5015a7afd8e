//! What the server serves: [`BlockDevice`] (one export's bytes, blocking calls that mirror
//! the store's `Volume`) and [`ExportProvider`] (which exports exist, looked up at every
//! handshake so volumes created later appear without a restart).
//!
//! The server never assumes anything about a device beyond these traits. Implementations
//! must be safe to call from many threads at once and must never panic on bad ranges: they
//! answer [`DeviceError`]s, which the server maps to NBD errnos.

use std::sync::Arc;

use platter_nbd_proto::consts::{EINVAL, EIO, ENOSPC, ENOTSUP, EPERM};

/// How a range of a device reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Allocated data.
    Data,
    /// Allocated, reads as zeroes.
    Zero,
    /// Not allocated, reads as zeroes.
    Hole,
}

/// A run of bytes with one [`ExtentKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub kind: ExtentKind,
}

/// Why a device call failed. Each variant maps to one NBD errno.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("I/O error at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("the device is read-only")]
    ReadOnly,
    #[error("range {offset}+{len} is outside the device ({size} bytes)")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("no space left for {len} bytes at offset {offset}")]
    NoSpace { offset: u64, len: u64 },
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Other(String),
}

impl DeviceError {
    /// The NBD errno that reports this error.
    pub fn errno(&self) -> u32 {
        match self {
            DeviceError::Io { source, .. } => match source.raw_os_error() {
                Some(28) | Some(122) | Some(27) => ENOSPC, // ENOSPC, EDQUOT, EFBIG
                _ => EIO,
            },
            DeviceError::ReadOnly => EPERM,
            DeviceError::OutOfRange { .. } => EINVAL,
            DeviceError::NoSpace { .. } => ENOSPC,
            DeviceError::Unsupported(_) => ENOTSUP,
            DeviceError::Other(_) => EIO,
        }
    }
}

/// One export's bytes. All methods are blocking and take `&self`; the server calls them
/// from its connection tasks (small IO) or its IO threads (large IO), many at once.
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Whether writes must be refused.
    fn read_only(&self) -> bool;
    /// Fills `buf` with the bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError>;
    /// Writes `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), DeviceError>;
    /// Discards a range; it reads as zeroes afterwards.
    fn trim(&self, offset: u64, len: u64) -> Result<(), DeviceError>;
    /// Zeroes a range; `may_unmap` allows turning it into a hole.
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), DeviceError>;
    /// The extents covering `offset..offset+len`, in order (they may extend past it).
    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, DeviceError>;
    /// A hint that a range will be read soon. The default does nothing.
    fn cache(&self, _offset: u64, _len: u64) -> Result<(), DeviceError> {
        Ok(())
    }
    /// Whether `write_zeroes` is faster than writing zeroes (`NBD_CMD_FLAG_FAST_ZERO`).
    fn fast_zero(&self) -> bool {
        true
    }
}

/// What `NBD_OPT_LIST` shows of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub name: String,
    pub description: String,
    pub size: u64,
    pub read_only: bool,
}

/// Why an export could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no export named {0:?}")]
    NotFound(String),
    #[error("export {name:?} cannot be opened: {reason}")]
    Unavailable { name: String, reason: String },
}

/// The set of exports, consulted at every handshake.
pub trait ExportProvider: Send + Sync + 'static {
    /// Every export, for `NBD_OPT_LIST`.
    fn list(&self) -> Vec<ExportInfo>;
    /// Opens one export for IO.
    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, ExportError>;
    /// A human-readable description of an export (`NBD_INFO_DESCRIPTION`).
    fn description(&self, _name: &str) -> Option<String> {
        None
    }
}

/// One export of [`StaticExports`]: name, description, device.
type Entry = (String, String, Arc<dyn BlockDevice>);

/// A fixed set of named devices: handy for tests and simple servers.
#[derive(Default)]
pub struct StaticExports {
    devices: parking_lot::RwLock<Vec<Entry>>,
}

impl StaticExports {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an export; visible to the next handshake.
    pub fn insert(&self, name: &str, description: &str, device: Arc<dyn BlockDevice>) {
        let mut d = self.devices.write();
        d.retain(|(n, _, _)| n != name);
        d.push((name.to_owned(), description.to_owned(), device));
    }

    /// Removes an export; open connections keep their device.
    pub fn remove(&self, name: &str) {
        self.devices.write().retain(|(n, _, _)| n != name);
    }
}

impl ExportProvider for StaticExports {
    fn list(&self) -> Vec<ExportInfo> {
        self.devices
            .read()
            .iter()
            .map(|(name, description, d)| ExportInfo {
                name: name.clone(),
                description: description.clone(),
                size: d.size(),
                read_only: d.read_only(),
            })
            .collect()
    }

    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, ExportError> {
        self.devices
            .read()
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, d)| d.clone())
            .ok_or_else(|| ExportError::NotFound(name.to_owned()))
    }

    fn description(&self, name: &str) -> Option<String> {
        self.devices
            .read()
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, desc, _)| desc.clone())
            .filter(|d| !d.is_empty())
    }
}

/// Checks `offset..offset+len` against `size`.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<(), DeviceError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DeviceError::OutOfRange { offset, len, size }),
    }
}
