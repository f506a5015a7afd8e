//! Compression of single qcow2 clusters: zlib (raw deflate, no zlib header, as QEMU)
//! and zstd (one or more frames).
//!
//! Decompression writes into a caller-sized buffer of exactly one cluster and fails if
//! the stream produces less or more than that, so a compression bomb costs at most one
//! cluster of memory; the zstd window is bounded too. No IO here.

use super::header::CompressionType;

/// Compression the writer applies to data clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Zlib,
    Zstd,
}

/// zstd level used by the writer (QEMU uses zstd's default, 3).
const ZSTD_LEVEL: i32 = 3;
/// Largest zstd window accepted when decompressing (16 MiB; clusters are at most 2 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Why a compressed cluster could not be decompressed (the reader adds the location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecompressError {
    /// The stream is not valid deflate/zstd.
    Invalid(String),
    /// The stream ended before producing a full cluster.
    Short { produced: usize },
    /// The stream would produce more than one cluster.
    Overflow,
}

impl std::fmt::Display for DecompressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecompressError::Invalid(e) => write!(f, "invalid compressed data: {e}"),
            DecompressError::Short { produced } => {
                write!(
                    f,
                    "compressed data ends after {produced} bytes, short of a cluster"
                )
            }
            DecompressError::Overflow => {
                f.write_str("compressed data inflates past the cluster size")
            }
        }
    }
}

/// Decompresses `input` into exactly `out.len()` bytes (one cluster). Trailing input after
/// the end of the stream is ignored: the last sector of a compressed cluster may hold the
/// start of the next one.
pub fn decompress(
    kind: CompressionType,
    input: &[u8],
    out: &mut [u8],
) -> Result<(), DecompressError> {
    match kind {
        CompressionType::Zlib => inflate(input, out),
        CompressionType::Zstd => unzstd(input, out),
    }
}

fn inflate(input: &[u8], out: &mut [u8]) -> Result<(), DecompressError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut d = Decompress::new(false);
    let status = d
        .decompress(input, out, FlushDecompress::None)
        .map_err(|e| DecompressError::Invalid(e.to_string()))?;
    let produced = d.total_out() as usize;
    if produced < out.len() {
        return Err(DecompressError::Short { produced });
    }
    if status == Status::StreamEnd {
        return Ok(());
    }
    // The output is full but the stream has not ended: see whether it has more to give.
    let consumed = d.total_in() as usize;
    let mut probe = [0u8; 1];
    let rest = input.get(consumed..).unwrap_or(&[]);
    match d.decompress(rest, &mut probe, FlushDecompress::None) {
        Ok(_) if d.total_out() as usize > produced => Err(DecompressError::Overflow),
        // No more output: the stream is merely unterminated within the bytes we have,
        // which QEMU accepts as long as the cluster is complete.
        _ => Ok(()),
    }
}

fn unzstd(input: &[u8], out: &mut [u8]) -> Result<(), DecompressError> {
    use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};
    let invalid = |e: std::io::Error| DecompressError::Invalid(e.to_string());
    let mut dec = Decoder::new().map_err(invalid)?;
    dec.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
        .map_err(invalid)?;
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(out);
    // A cluster may be several frames; `hint == 0` means a frame just ended and flushed.
    let mut hint = 1;
    while outb.pos() < outb.capacity() {
        let (in_before, out_before) = (inb.pos(), outb.pos());
        hint = dec.run(&mut inb, &mut outb).map_err(invalid)?;
        if inb.pos() == in_before && outb.pos() == out_before {
            return Err(DecompressError::Short {
                produced: outb.pos(),
            });
        }
    }
    if hint == 0 {
        return Ok(());
    }
    // The output is full but the frame has not ended: does it hold more than a cluster?
    let mut probe = [0u8; 1];
    let mut probe_out = OutBuffer::around(&mut probe[..]);
    let left = dec.run(&mut inb, &mut probe_out).map_err(invalid)?;
    match (probe_out.pos(), left) {
        (0, 0) => Ok(()),
        (0, _) => Err(DecompressError::Invalid(
            "zstd frame does not end after one cluster".into(),
        )),
        _ => Err(DecompressError::Overflow),
    }
}

/// Compresses one cluster; `None` if the result would not be smaller than `limit` bytes
/// (then the cluster is stored uncompressed, as QEMU does).
pub fn compress(kind: CompressionType, input: &[u8], limit: usize) -> Option<Vec<u8>> {
    match kind {
        CompressionType::Zlib => deflate(input, limit),
        CompressionType::Zstd => zstd_compress(input, limit),
    }
}

fn deflate(input: &[u8], limit: usize) -> Option<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(limit);
    match c.compress_vec(input, &mut out, FlushCompress::Finish) {
        Ok(Status::StreamEnd) if out.len() < limit => Some(out),
        _ => None,
    }
}

fn zstd_compress(input: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; limit];
    let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?;
    let n = c.compress_to_buffer(input, out.as_mut_slice()).ok()?;
    if n >= limit {
        return None;
    }
    out.truncate(n);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 7) % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    #[test]
    fn round_trips() {
        for kind in [CompressionType::Zlib, CompressionType::Zstd] {
            let data = sample(65536);
            let c = compress(kind, &data, 65535).unwrap();
            assert!(c.len() < 65535);
            let mut out = vec![0u8; 65536];
            // Trailing garbage after the stream (next cluster's bytes) is fine.
            let mut padded = c.clone();
            padded.extend_from_slice(&[0xaa; 300]);
            decompress(kind, &padded, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn incompressible_is_none() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress(CompressionType::Zlib, &data, 4095).is_none());
        assert!(compress(CompressionType::Zstd, &data, 4095).is_none());
    }

    #[test]
    fn bombs_and_short_streams_refused() {
        for kind in [CompressionType::Zlib, CompressionType::Zstd] {
            let big = vec![0u8; 1 << 20];
            let c = compress(kind, &big, 1 << 19).unwrap();
            let mut out = vec![0u8; 65536];
            assert_eq!(
                decompress(kind, &c, &mut out),
                Err(DecompressError::Overflow),
                "{kind:?}"
            );
            let small = compress(kind, &vec![1u8; 1000], 999).unwrap();
            assert!(matches!(
                decompress(kind, &small, &mut out),
                Err(DecompressError::Short { .. })
            ));
            assert!(decompress(kind, &[0xff; 64], &mut out).is_err());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut out = vec![0u8; 4096];
            let _ = decompress(CompressionType::Zlib, &input, &mut out);
            let _ = decompress(CompressionType::Zstd, &input, &mut out);
        }
    }
}
