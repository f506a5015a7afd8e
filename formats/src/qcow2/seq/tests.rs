//! Tests of the sequential layout: exact length, readback through our reader and our
//! stream decoder (nothing stashed), `qemu-img check`/`compare`, and the memory of a
//! 1 TiB plan.

use super::*;
use crate::qcow2::{CompressedCluster, Qcow2Image, Qcow2Stream, StreamHandler, StreamInfo};
use crate::{DiskImage, MemImage};
use proptest::prelude::*;
use std::process::Command;

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Emits the image, taking data clusters from `source` (zeros past its end).
fn emit(layout: &SeqLayout, source: &[u8]) -> Vec<u8> {
    let cs = layout.cluster_size() as usize;
    let mut out = Vec::new();
    for piece in layout.pieces() {
        match piece {
            Piece::Meta(bytes) => {
                assert_eq!(bytes.len(), cs);
                out.extend_from_slice(&bytes);
            }
            Piece::Data { first, count } => {
                let start = first as usize * cs;
                let end = start + count as usize * cs;
                let have = &source[start.min(source.len())..end.min(source.len())];
                out.extend_from_slice(have);
                out.resize(out.len() + (end - start - have.len()), 0);
            }
        }
    }
    out
}

/// `source` with every cluster the plan does not hold zeroed: what the image reads as.
fn expected(source: &[u8], cs: u64, clusters: &[(u64, u64)]) -> Vec<u8> {
    let mut keep = vec![false; source.len().div_ceil(cs as usize)];
    for &(first, count) in clusters {
        for k in &mut keep[first as usize..(first + count) as usize] {
            *k = true;
        }
    }
    let mut out = source.to_vec();
    for (i, chunk) in out.chunks_mut(cs as usize).enumerate() {
        if !keep[i] {
            chunk.fill(0);
        }
    }
    out
}

fn read_back(img: &[u8]) -> Vec<u8> {
    let r = Qcow2Image::open(MemImage(img.to_vec())).unwrap();
    let mut out = vec![0u8; r.virtual_size() as usize];
    r.read_at(&mut out, 0).unwrap();
    out
}

/// Rebuilds the disk from a stream; counts the non-zero bytes the decoder stashed.
#[derive(Default)]
struct Decoded {
    out: Vec<u8>,
    stashed_nonzero: u64,
}

impl StreamHandler for Decoded {
    type Error = FormatError;
    fn start(&mut self, info: &StreamInfo) -> Result<(), FormatError> {
        self.out = vec![0; info.virtual_size as usize];
        Ok(())
    }
    fn data(&mut self, guest: u64, bytes: &[u8]) -> Result<(), FormatError> {
        self.out[guest as usize..guest as usize + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
    fn zero(&mut self, _guest: u64, _len: u64) -> Result<(), FormatError> {
        Ok(())
    }
    fn compressed(&mut self, _c: CompressedCluster<'_>) -> Result<(), FormatError> {
        panic!("the sequential layout never compresses")
    }
    fn stash(&mut self, _host: u64, bytes: &[u8]) -> Result<(), FormatError> {
        self.stashed_nonzero += bytes.iter().filter(|&&b| b != 0).count() as u64;
        Ok(())
    }
    fn recall(&mut self, host: u64, _buf: &mut [u8]) -> Result<(), FormatError> {
        panic!("recall at {host}: nothing should have been stashed")
    }
    fn release_stash(&mut self) -> Result<(), FormatError> {
        Ok(())
    }
}

fn stream_decode(img: &[u8], slice: usize) -> Decoded {
    let mut d = Qcow2Stream::new();
    let mut h = Decoded::default();
    for chunk in img.chunks(slice) {
        d.feed(chunk, &mut h).unwrap();
    }
    let stats = d.finish(&mut h).unwrap();
    // Only the zero padding after the L1 table goes by before the L2 tables are known:
    // a stash keeps nothing of it, and nothing is ever asked back.
    assert_eq!((h.stashed_nonzero, stats.recalled), (0, 0), "{stats:?}");
    assert!(stats.stashed < 65536, "{stats:?}");
    h
}

/// Plans, lays out and emits an image; checks length and both readers; returns it.
fn build_and_check(size: u64, cs: u64, clusters: &[(u64, u64)], seed: u64) -> Vec<u8> {
    let mut plan = SeqPlan::new(size, cs).unwrap();
    for &(first, count) in clusters {
        plan.add_clusters(first, count).unwrap();
    }
    let layout = plan.layout().unwrap();
    let source = noise(seed, layout.virtual_size() as usize);
    let img = emit(&layout, &source);
    assert_eq!(img.len() as u64, layout.file_len());
    let want = expected(&source, cs, clusters);
    assert!(read_back(&img) == want, "reader disagrees");
    for slice in [img.len().max(1), 4096, 777] {
        let d = stream_decode(&img, slice);
        assert!(d.out == want, "stream decoder disagrees");
    }
    img
}

#[test]
fn small_images_read_back() {
    // Empty, one cluster, a partial last cluster, data across several L2 ranges.
    build_and_check(0, 65536, &[], 1);
    build_and_check(65536, 65536, &[(0, 1)], 2);
    build_and_check(100_000, 65536, &[(1, 1)], 3);
    build_and_check(1000, 512, &[(0, 2)], 4);
    // 4 KiB clusters: an L2 range spans 2 MiB; 16 MiB has 8 of them.
    build_and_check(
        16 << 20,
        4096,
        &[(3, 10), (510, 6), (1024, 1), (4095, 1)],
        5,
    );
    // 512-byte clusters: a refcount block covers 256 clusters, so many blocks and a
    // multi-cluster L1 and refcount table.
    let img = build_and_check(4 << 20, 512, &[(0, 3000), (5000, 1), (8191, 1)], 6);
    assert!(img.len() > 3000 * 512);
}

#[test]
fn overlapping_marks_count_once() {
    let mut plan = SeqPlan::new(1 << 20, 4096).unwrap();
    plan.add_clusters(10, 20).unwrap();
    plan.add_clusters(15, 20).unwrap();
    plan.add_bytes(4096 * 100 + 1, 4096).unwrap(); // clusters 100 and 101
    plan.add_bytes(0, 0).unwrap();
    assert_eq!(plan.data_clusters(), 25 + 2);
    assert!(plan.add_clusters(250, 10).is_err());
    assert!(plan.add_bytes(1 << 20, 1).is_err());
    assert!(plan.add_clusters(u64::MAX, 2).is_err());
    assert!(SeqPlan::new(1 << 20, 3000).is_err());
}

#[test]
fn terabyte_plan_stays_small() {
    // A full 1 TiB volume with 64 KiB clusters: 16 Mi data clusters, 2048 ranges of
    // 1 KiB bitmaps (2 MiB in all); the layout is computed without emitting anything.
    let mut plan = SeqPlan::new(1 << 40, 65536).unwrap();
    plan.add_clusters(0, plan.guest_clusters()).unwrap();
    let bitmap_bytes: usize = plan.ranges.values().map(|r| r.words.len() * 8).sum();
    assert!(bitmap_bytes <= 2 << 20, "{bitmap_bytes}");
    let layout = plan.layout().unwrap();
    let l2_tables = 2048;
    let meta = 1 + 1 + l2_tables + layout.refblocks + layout.reftable_clusters;
    assert_eq!(layout.file_len(), (1 << 40) + meta * 65536);
    // The pieces of an image with one cluster at the far end: header, L1, L2, data,
    // refcount block, refcount table.
    let mut plan = SeqPlan::new(1 << 40, 65536).unwrap();
    plan.add_bytes((1 << 40) - 1, 1).unwrap();
    let layout = plan.layout().unwrap();
    let kinds: Vec<&str> = layout
        .pieces()
        .map(|p| match p {
            Piece::Meta(_) => "meta",
            Piece::Data { .. } => "data",
        })
        .collect();
    assert_eq!(kinds, ["meta", "meta", "meta", "data", "meta", "meta"]);
    assert_eq!(layout.file_len(), 6 * 65536);
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?}: {text}");
    text
}

#[test]
fn qemu_img_checks_and_compares() {
    let dir = tempfile::tempdir().unwrap();
    type Case = (u64, u64, &'static [(u64, u64)]);
    let cases: [Case; 3] = [
        (65536, (3 << 20) + 4608, &[(0, 2), (7, 20), (48, 1)]),
        (512, 2 << 20, &[(0, 300), (1000, 7), (4095, 1)]),
        (4096, 9 << 20, &[(1, 1), (511, 3), (2303, 1)]),
    ];
    for (i, (cs, size, clusters)) in cases.into_iter().enumerate() {
        let img = build_and_check(size, cs, clusters, 10 + i as u64);
        let source = noise(10 + i as u64, size.next_multiple_of(512) as usize);
        let raw = dir.path().join(format!("{i}.raw"));
        let qcow = dir.path().join(format!("{i}.qcow2"));
        std::fs::write(&raw, expected(&source, cs, clusters)).unwrap();
        std::fs::write(&qcow, &img).unwrap();
        let (raw, qcow) = (raw.to_str().unwrap(), qcow.to_str().unwrap());
        let check = run("qemu-img", &["check", "-f", "qcow2", qcow]);
        assert!(check.contains("No errors were found"), "{check}");
        assert!(!check.contains("leaked"), "{check}");
        let cmp = run(
            "qemu-img",
            &["compare", "-f", "raw", "-F", "qcow2", raw, qcow],
        );
        assert!(cmp.contains("Images are identical"), "{cmp}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn computed_length_is_emitted_length(
        bits in 9u32..=12,
        size in 0u64..(6 << 20),
        runs in proptest::collection::vec((0u64..1 << 14, 1u64..600), 0..12),
        seed in any::<u64>(),
    ) {
        let cs = 1u64 << bits;
        let guest = size.next_multiple_of(512).div_ceil(cs);
        let clusters: Vec<(u64, u64)> = runs
            .into_iter()
            .filter(|&(first, _)| first < guest)
            .map(|(first, count)| (first, count.min(guest - first)))
            .collect();
        build_and_check(size, cs, &clusters, seed);
    }
}
