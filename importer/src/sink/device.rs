//! `--to-device DEV`: a block device (a block PVC). The device may hold old data, so a
//! zero range is only skipped when the whole device was discarded to zeros first
//! (fallocate PUNCH_HOLE, which the kernel only grants when the device then reads back
//! zeros); otherwise zeros are written (ZERO_RANGE where the device offloads it).
//!
//! A device cannot be made to "disappear" on failure: an aborted import leaves partial
//! data, which is inherent to writing in place.

use super::Sink;
use crate::error::ImportError;
use rustix::fs::FallocateFlags;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const ZERO_BUF: usize = 1 << 20;

/// See the module doc.
pub struct DeviceSink {
    path: PathBuf,
    file: File,
    capacity: u64,
    /// The whole device reads as zero (discard succeeded).
    zeroed: bool,
}

impl DeviceSink {
    /// Opens `dev` for writing (no create, no truncate) and tries to discard it.
    pub fn open(dev: &Path) -> Result<DeviceSink, ImportError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)
            .map_err(|e| ImportError::io(format!("opening device {}", dev.display()), e))?;
        let capacity = file
            .seek(SeekFrom::End(0))
            .map_err(|e| ImportError::io(format!("sizing device {}", dev.display()), e))?;
        let zeroed = capacity > 0
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
        })
    }

    /// Whether zero ranges are being skipped (the discard worked).
    pub fn discarded(&self) -> bool {
        self.zeroed
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
        if rustix::fs::fallocate(
            &self.file,
            FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .is_ok()
        {
            return Ok(());
        }
        let zeros = vec![0u8; ZERO_BUF.min(usize::try_from(len).unwrap_or(ZERO_BUF))];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
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
