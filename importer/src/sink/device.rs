//! `--to-device DEV`: a block device (a block PVC). The device may hold old data, so a
//! zero range of the image is only skipped where the device reads back zeros: after the
//! whole device was discarded to zeros first (fallocate PUNCH_HOLE, which the kernel only
//! grants on a block device when it then reads back zeros), or, where that failed, after
//! reading the range and finding it zero already. Old data found there is zeroed
//! (ZERO_RANGE where the device offloads it, else by writing zeros).
//!
//! Reading a hole before zeroing it keeps a thin-provisioned device thin (a write of
//! zeros would allocate it) and is cheaper than writing on most devices.
//!
//! A device cannot be made to "disappear" on failure: an aborted import leaves partial
//! data, which is inherent to writing in place.

use super::Sink;
use crate::error::ImportError;
use crate::stream::{is_zero, ZERO_BLOCK};
use rustix::fs::FallocateFlags;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes of a hole read (and zeroed) at a time.
const ZERO_BUF: usize = 1 << 20;

/// How a [`DeviceSink`] makes the image's holes read as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Discard the whole device first; if the device grants it, holes are skipped.
    /// Without it (or when the discard fails) each hole is read and old data in it is
    /// zeroed.
    pub discard: bool,
    /// Let the device zero old data itself (ZERO_RANGE) before writing zeros.
    pub offload_zeroes: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            discard: true,
            offload_zeroes: true,
        }
    }
}

/// See the module doc.
pub struct DeviceSink {
    path: PathBuf,
    file: File,
    capacity: u64,
    /// The whole device reads as zero (discard succeeded).
    zeroed: bool,
    offload_zeroes: bool,
    /// Holes read back (discard failed), and how much old data in them was zeroed.
    checked: u64,
    overwritten: u64,
}

impl DeviceSink {
    /// Opens `dev` for writing (no create, no truncate) and tries to discard it.
    pub fn open(dev: &Path) -> Result<DeviceSink, ImportError> {
        Self::open_with(dev, DeviceOptions::default())
    }

    /// Like [`DeviceSink::open`], choosing how holes are zeroed (`discard: false` keeps
    /// the device's blocks and zeroes only the old data found in holes).
    pub fn open_with(dev: &Path, opts: DeviceOptions) -> Result<DeviceSink, ImportError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)
            .map_err(|e| ImportError::io(format!("opening device {}", dev.display()), e))?;
        let capacity = file
            .seek(SeekFrom::End(0))
            .map_err(|e| ImportError::io(format!("sizing device {}", dev.display()), e))?;
        let zeroed = opts.discard
            && capacity > 0
            && rustix::fs::fallocate(
                &file,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                0,
                capacity,
            )
            .is_ok();
        Ok(DeviceSink {
            path: dev.to_path_buf(),
            file,
            capacity,
            zeroed,
            offload_zeroes: opts.offload_zeroes,
            checked: 0,
            overwritten: 0,
        })
    }

    /// Whether zero ranges are being skipped (the discard worked).
    pub fn discarded(&self) -> bool {
        self.zeroed
    }

    /// Bytes of holes read back so far, and how many of them held old data that was
    /// zeroed (both 0 after a discard).
    pub fn holes_checked(&self) -> (u64, u64) {
        (self.checked, self.overwritten)
    }

    /// Zeroes `len` bytes of old data at `offset`.
    fn zero_out(&mut self, zeros: &[u8], offset: u64, len: u64) -> Result<(), ImportError> {
        self.overwritten += len;
        if self.offload_zeroes
            && rustix::fs::fallocate(
                &self.file,
                FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
                offset,
                len,
            )
            .is_ok()
        {
            return Ok(());
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(zeros.get(..n).unwrap_or(zeros), offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

impl Sink for DeviceSink {
    type Output = PathBuf;

    fn set_size(&mut self, size: u64) -> Result<(), ImportError> {
        if size > self.capacity {
            return Err(ImportError::TooLarge {
                what: format!("image for device {}", self.path.display()),
                limit: self.capacity,
                why: format!(
                    "the image is {size} bytes, the device only {}",
                    self.capacity
                ),
            });
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), ImportError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| ImportError::io(format!("writing {} at {offset}", self.path.display()), e))
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), ImportError> {
        if self.zeroed || len == 0 {
            return Ok(());
        }
        let piece = ZERO_BUF.min(usize::try_from(len).unwrap_or(ZERO_BUF));
        let mut old = vec![0u8; piece];
        let zeros = vec![0u8; piece];
        let end = offset.saturating_add(len).min(self.capacity);
        let mut pos = offset;
        while pos < end {
            let n = (end - pos).min(piece as u64) as usize;
            let buf = &mut old[..n];
            self.file.read_exact_at(buf, pos).map_err(|e| {
                ImportError::io(format!("reading {} at {pos}", self.path.display()), e)
            })?;
            self.checked += n as u64;
            // Zero each run of 4 KiB blocks (device offsets) that holds old data.
            let mut run: Option<u64> = None;
            let mut at = 0usize;
            while at < n {
                let abs = pos + at as u64;
                let step = ZERO_BLOCK - (abs % ZERO_BLOCK as u64) as usize;
                let stop = (at + step).min(n);
                let dirty = !is_zero(&buf[at..stop]);
                match (dirty, run) {
                    (true, None) => run = Some(abs),
                    (false, Some(start)) => {
                        self.zero_out(&zeros, start, abs - start)?;
                        run = None;
                    }
                    _ => {}
                }
                at = stop;
            }
            if let Some(start) = run {
                self.zero_out(&zeros, start, pos + n as u64 - start)?;
            }
            pos += n as u64;
        }
        Ok(())
    }

    fn finish(self) -> Result<PathBuf, ImportError> {
        self.file
            .sync_all()
            .map_err(|e| ImportError::io(format!("syncing {}", self.path.display()), e))?;
        Ok(self.path)
    }
}
