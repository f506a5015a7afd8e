//! Where imported guest bytes go: the [`Sink`] trait and its implementations — a sparse
//! raw file (`--to-file`), a block device (`--to-device`) and a temporary store volume
//! ([`StoreSink`], through the store-independent [`volume::VolumeSink`]).
//!
//! A sink is atomic where its target allows: nothing is visible until `finish`, and a sink
//! dropped without `finish` removes what it wrote. Sinks never read the source and never
//! decide what is zero: the pipeline tells them.

mod device;
mod file;
mod store;
pub mod volume;

pub use device::{DeviceOptions, DeviceSink};
pub use file::FileSink;
pub use store::StoreSink;
pub use volume::{TempVolumeTarget, VolumeSink};

use crate::error::ImportError;

/// The destination of an import.
pub trait Sink: Send {
    /// What a successful `finish` yields (a path, a volume's info).
    type Output;

    /// Sets the disk size in bytes. Called before the first write with the best size
    /// known; called again when a stream of unknown length grows past it, and once more
    /// at the end with the exact size.
    fn set_size(&mut self, size: u64) -> Result<(), ImportError>;

    /// Writes guest bytes at `offset` (never past the last `set_size`).
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), ImportError>;

    /// The guest range reads as zero. Sinks that start out zeroed (a new file, a new
    /// volume) do nothing; a device that may hold old data writes zeros.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), ImportError> {
        let _ = (offset, len);
        Ok(())
    }

    /// Makes the result durable and visible. Only called after every check passed.
    fn finish(self) -> Result<Self::Output, ImportError>;
}

/// Bytes written between two writeback kicks: the disk then works while the pipeline
/// produces more, and the final sync only waits for the tail instead of the whole image.
pub const WRITEBACK_EVERY: u64 = 32 << 20;

/// Which byte range of a file to hand to writeback next: the span of the writes since
/// the last kick, once they add up to [`WRITEBACK_EVERY`]. Pure bookkeeping; the sink
/// does the IO.
#[derive(Debug, Default)]
pub(crate) struct WritebackSpan {
    lo: u64,
    hi: u64,
    bytes: u64,
}

impl WritebackSpan {
    /// Records a write; returns `(offset, len)` to kick when enough has accumulated.
    pub(crate) fn note(&mut self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let end = offset.saturating_add(len);
        if self.bytes == 0 {
            (self.lo, self.hi) = (offset, end);
        } else {
            self.lo = self.lo.min(offset);
            self.hi = self.hi.max(end);
        }
        self.bytes = self.bytes.saturating_add(len);
        if self.bytes < WRITEBACK_EVERY {
            return None;
        }
        self.bytes = 0;
        Some((self.lo, self.hi - self.lo))
    }
}

/// Starts writeback of a range of `file` without waiting (`POSIX_FADV_DONTNEED` writes
/// dirty pages back asynchronously and only drops pages that are already clean). A hint:
/// failures are ignored, `finish` still syncs everything.
pub(crate) fn kick_writeback(file: &std::fs::File, (offset, len): (u64, u64)) {
    let _ = rustix::fs::fadvise(file, offset, len, rustix::fs::Advice::DontNeed);
}

/// A sink into memory that counts what it was given, for unit tests of the pipeline.
#[cfg(test)]
pub(crate) mod testing {
    use super::Sink;
    use crate::error::ImportError;

    /// (contents, bytes written, bytes reported as zero)
    pub struct VecSink(pub Vec<u8>, pub u64, pub u64);

    impl Sink for VecSink {
        type Output = Vec<u8>;
        fn set_size(&mut self, size: u64) -> Result<(), ImportError> {
            self.0.resize(size as usize, 0);
            Ok(())
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), ImportError> {
            self.0[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
            self.1 += buf.len() as u64;
            Ok(())
        }
        fn write_zeroes(&mut self, _o: u64, len: u64) -> Result<(), ImportError> {
            self.2 += len;
            Ok(())
        }
        fn finish(self) -> Result<Vec<u8>, ImportError> {
            Ok(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_span_covers_out_of_order_writes() {
        let mut w = WritebackSpan::default();
        let mb = 1 << 20;
        assert_eq!(w.note(8 * mb, 16 * mb), None);
        assert_eq!(w.note(0, 8 * mb), None);
        assert_eq!(w.note(24 * mb, 8 * mb), Some((0, 32 * mb)));
        // The next span starts afresh.
        assert_eq!(w.note(100 * mb, 31 * mb), None);
        assert_eq!(w.note(131 * mb, mb), Some((100 * mb, 32 * mb)));
    }
}
