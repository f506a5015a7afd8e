//! The write stage of the import pipeline: applies decoded guest data to the sink,
//! turning all-zero 4 KiB blocks into `write_zeroes` (skipped by sparse sinks) and runs
//! of data blocks into single writes.
//!
//! It never reads the source and never decides sizes: the decode stage sends them.

use crate::error::ImportError;
use crate::options::CancelFlag;
use crate::sink::Sink;
use crate::stream::{check_cancel, is_zero, recycle, ZERO_BLOCK};
use std::sync::mpsc::Receiver;

/// A message to the write stage.
pub(crate) enum Out {
    /// Sets the disk size (first message; again when a stream grows or ends).
    Size(u64),
    Data {
        offset: u64,
        buf: Vec<u8>,
    },
    Zero {
        offset: u64,
        len: u64,
    },
}

/// Counters of the write stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub bytes_written: u64,
    pub zero_bytes_skipped: u64,
}

/// Applies decode output to the sink: all-zero 4 KiB blocks become `write_zeroes`, runs
/// of data blocks one `write_at` each.
pub(crate) fn run_writer<S: Sink>(
    sink: &mut S,
    rx: Receiver<Out>,
    cancel: &CancelFlag,
) -> Result<WriteStats, ImportError> {
    let mut stats = WriteStats::default();
    let mut size: Option<u64> = None;
    while let Ok(m) = rx.recv() {
        check_cancel(cancel)?;
        match m {
            Out::Size(s) => {
                if size != Some(s) {
                    sink.set_size(s)?;
                    size = Some(s);
                }
            }
            Out::Zero { offset, len } => {
                sink.write_zeroes(offset, len)?;
                stats.zero_bytes_skipped += len;
            }
            Out::Data { offset, buf } => {
                let end = offset + buf.len() as u64;
                if size.is_none_or(|s| end > s) {
                    // A stream of unknown length: grow as data arrives.
                    sink.set_size(end)?;
                    size = Some(end);
                }
                write_zero_aware(sink, offset, &buf, &mut stats)?;
                recycle(buf);
            }
        }
    }
    Ok(stats)
}

fn write_zero_aware<S: Sink>(
    sink: &mut S,
    offset: u64,
    buf: &[u8],
    stats: &mut WriteStats,
) -> Result<(), ImportError> {
    // Blocks are aligned to guest offsets so the sink's allocation follows 4 KiB blocks.
    let mut pos = 0usize;
    let mut run: Option<(usize, bool)> = None; // (start, is_zero)
    while pos < buf.len() {
        let abs = offset + pos as u64;
        let to_boundary = ZERO_BLOCK - (abs % ZERO_BLOCK as u64) as usize;
        let end = (pos + to_boundary).min(buf.len());
        let z = is_zero(&buf[pos..end]);
        match run {
            Some((_, rz)) if rz == z => {}
            Some((start, rz)) => {
                flush_run(sink, offset, buf, start, pos, rz, stats)?;
                run = Some((pos, z));
            }
            None => run = Some((pos, z)),
        }
        pos = end;
    }
    if let Some((start, rz)) = run {
        flush_run(sink, offset, buf, start, buf.len(), rz, stats)?;
    }
    Ok(())
}

fn flush_run<S: Sink>(
    sink: &mut S,
    offset: u64,
    buf: &[u8],
    start: usize,
    end: usize,
    zero: bool,
    stats: &mut WriteStats,
) -> Result<(), ImportError> {
    let len = (end - start) as u64;
    if zero {
        sink.write_zeroes(offset + start as u64, len)?;
        stats.zero_bytes_skipped += len;
    } else {
        sink.write_at(&buf[start..end], offset + start as u64)?;
        stats.bytes_written += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::out_channel;

    use crate::sink::testing::VecSink;

    #[test]
    fn writer_skips_zero_blocks() {
        let mut sink = VecSink(Vec::new(), 0, 0);
        let (tx, rx) = out_channel();
        let mut data = vec![0u8; 5 * 4096 + 100];
        data[4096 + 3] = 1;
        data[5 * 4096 + 50] = 2;
        let d2 = data.clone();
        std::thread::spawn(move || {
            tx.send(Out::Size(d2.len() as u64 + 4096)).unwrap();
            tx.send(Out::Data {
                offset: 4096,
                buf: d2,
            })
            .unwrap();
        });
        let stats = run_writer(&mut sink, rx, &CancelFlag::new()).unwrap();
        assert_eq!(stats.bytes_written, 4096 + 100);
        assert_eq!(&sink.0[4096..], &data[..]);
    }
}
