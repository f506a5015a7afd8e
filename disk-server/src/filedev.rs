//! A raw file as a [`BlockDevice`]: positional reads and writes through the page cache,
//! hole punching for trim, `SEEK_DATA`/`SEEK_HOLE` for block status, `fdatasync` for flush.
//!
//! Used to serve plain image files and to benchmark the server against peers serving the
//! same file. It never changes the file's size.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{FallocateFlags, SeekFrom};

use crate::device::{check_range, BlockDevice, DeviceError, Extent, ExtentKind};

/// A raw image file.
pub struct FileDevice {
    file: File,
    size: u64,
    read_only: bool,
}

fn io(offset: u64) -> impl FnOnce(std::io::Error) -> DeviceError {
    move |source| DeviceError::Io { offset, source }
}

impl FileDevice {
    /// Opens `path` read-write (or read-only); the export size is the file size.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DeviceError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(io(0))?;
        let size = file.metadata().map_err(io(0))?.len();
        Ok(FileDevice {
            file,
            size,
            read_only,
        })
    }

    fn check_write(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        if self.read_only {
            return Err(DeviceError::ReadOnly);
        }
        check_range(offset, len, self.size)
    }

    fn write_zero_bytes(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        let zeroes = vec![0u8; len.min(1 << 20) as usize];
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = (end - at).min(zeroes.len() as u64) as usize;
            let chunk = zeroes.get(..n).unwrap_or(&[]);
            self.file.write_all_at(chunk, at).map_err(io(at))?;
            at += n as u64;
        }
        Ok(())
    }

    fn seek(&self, pos: SeekFrom) -> Option<u64> {
        // ENXIO means "no data (or hole) after this offset".
        rustix::fs::seek(&self.file, pos).ok()
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.read_exact_at(buf, offset).map_err(io(offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.check_write(offset, buf.len() as u64)?;
        self.file.write_all_at(buf, offset).map_err(io(offset))
    }

    fn flush(&self) -> Result<(), DeviceError> {
        if self.read_only {
            return Ok(());
        }
        rustix::fs::fdatasync(&self.file).map_err(|e| io(0)(e.into()))
    }

    fn trim(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        self.check_write(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.file, mode, offset, len) {
            Ok(()) => Ok(()),
            // Trim promises zeroes afterwards: fall back to writing them.
            Err(_) => self.write_zero_bytes(offset, len),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), DeviceError> {
        self.check_write(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let mode = if may_unmap {
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE
        } else {
            FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE
        };
        match rustix::fs::fallocate(&self.file, mode, offset, len) {
            Ok(()) => Ok(()),
            Err(_) => self.write_zero_bytes(offset, len),
        }
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, DeviceError> {
        check_range(offset, len, self.size)?;
        let end = offset + len;
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            let pos = i64::try_from(at).unwrap_or(i64::MAX);
            let data = self.seek(SeekFrom::Data(pos)).unwrap_or(self.size).min(end);
            if data > at {
                out.push(Extent {
                    offset: at,
                    len: data - at,
                    kind: ExtentKind::Hole,
                });
                at = data;
                continue;
            }
            let hole = self.seek(SeekFrom::Hole(pos)).unwrap_or(self.size).min(end);
            let hole = hole.max(at + 1);
            out.push(Extent {
                offset: at,
                len: hole - at,
                kind: ExtentKind::Data,
            });
            at = hole;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let f = File::create(&path).unwrap();
        f.set_len(1 << 20).unwrap();
        drop(f);
        let d = FileDevice::open(&path, false).unwrap();
        d.write_at(&[1u8; 8192], 65536).unwrap();
        let st = d.block_status(0, 1 << 20).unwrap();
        assert_eq!(st.iter().map(|e| e.len).sum::<u64>(), 1 << 20);
        assert!(st
            .iter()
            .any(|e| e.kind == ExtentKind::Data && e.offset <= 65536));
        d.trim(65536, 8192).unwrap();
        let mut buf = [9u8; 16];
        d.read_at(&mut buf, 65536).unwrap();
        assert_eq!(buf, [0u8; 16]);
        d.write_zeroes(0, 4096, false).unwrap();
        d.flush().unwrap();
        assert!(d.write_at(&[1], 1 << 20).is_err());
    }
}
