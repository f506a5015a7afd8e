//! In-memory tests across the qcow2 modules: writer -> reader round trips (property
//! tests against a plain byte vector as the model) and hostile images built by patching
//! writer output. The real-qemu tests live in `tests/qcow2_qemu.rs`.

use super::header::{Header, INCOMPAT_COMPRESSION};
use super::l2::{ClusterMap, OFLAG_COMPRESSED};
use super::*;
use crate::{DiskImage, ExtentKind, FormatError, MemImage};
use proptest::prelude::*;

/// A deterministic byte pattern: compressible runs, or noise when `noisy`.
fn pattern(seed: u64, len: usize, noisy: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|i| {
            if noisy {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                (i / 64) as u8 ^ seed as u8
            }
        })
        .collect()
}

fn write_image(size: u64, opts: WriterOptions, clusters: &[(u64, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
    let mut model = vec![0u8; size.next_multiple_of(512) as usize];
    let mut w = Qcow2Writer::new(Vec::new(), size, opts).unwrap();
    let cs = opts.cluster_size;
    for (idx, data) in clusters {
        w.write_cluster(*idx, data).unwrap();
        let start = (idx * cs) as usize;
        let end = (start + data.len()).min(model.len());
        model[start..end].copy_from_slice(&data[..end - start]);
    }
    (w.finish().unwrap(), model)
}

fn read_all(img: &dyn DiskImage) -> Vec<u8> {
    let mut out = vec![0u8; img.virtual_size() as usize];
    // Odd-sized reads cross cluster and L2 boundaries.
    let mut pos = 0;
    while pos < out.len() {
        let n = (out.len() - pos).min(70_001);
        img.read_at(&mut out[pos..pos + n], pos as u64).unwrap();
        pos += n;
    }
    out
}

fn check_map(img: &dyn DiskImage, model: &[u8]) {
    let mut pos = 0u64;
    while pos < img.virtual_size() {
        let e = img.map(pos, u64::MAX).unwrap();
        assert!(e.len >= 1 && pos + e.len <= img.virtual_size());
        if e.kind == ExtentKind::Zero {
            let r = &model[pos as usize..(pos + e.len) as usize];
            assert!(r.iter().all(|&b| b == 0), "zero extent at {pos} has data");
        }
        pos += e.len;
    }
}

fn open(bytes: Vec<u8>) -> Result<Qcow2Image<MemImage>, FormatError> {
    Qcow2Image::open(MemImage(bytes))
}

#[test]
fn empty_and_tiny_images() {
    for size in [0u64, 1, 511, 512, 65537] {
        let (img, model) = write_image(size, WriterOptions::default(), &[]);
        let r = open(img).unwrap();
        assert_eq!(r.virtual_size(), size.next_multiple_of(512));
        assert_eq!(read_all(&r), model);
    }
}

#[test]
fn short_last_cluster_and_all_compressions() {
    for compression in [Compression::None, Compression::Zlib, Compression::Zstd] {
        let opts = WriterOptions {
            cluster_size: 4096,
            compression,
        };
        let size = 3 * 4096 + 100;
        let clusters = vec![
            (0, pattern(1, 4096, false)),
            (1, pattern(2, 4096, true)),
            (3, pattern(3, 100, false)),
        ];
        let (img, model) = write_image(size, opts, &clusters);
        let r = open(img).unwrap();
        assert_eq!(read_all(&r), model, "{compression:?}");
        check_map(&r, &model);
        if compression != Compression::None {
            assert!(matches!(
                r.cluster_map(0).unwrap(),
                ClusterMap::Compressed { .. }
            ));
            assert!(matches!(r.cluster_map(1).unwrap(), ClusterMap::Data { .. }));
        }
        assert_eq!(r.cluster_map(2).unwrap(), ClusterMap::Unallocated);
    }
}

#[test]
fn writer_rejects_misuse() {
    let mut w = Qcow2Writer::new(Vec::new(), 1 << 20, WriterOptions::default()).unwrap();
    w.write_cluster(3, &[1; 10]).unwrap();
    assert!(matches!(
        w.write_cluster(3, &[1]),
        Err(FormatError::InvalidInput { .. })
    ));
    assert!(matches!(
        w.write_cluster(16, &[1]),
        Err(FormatError::InvalidInput { .. })
    ));
    assert!(matches!(
        w.write_cluster(5, &vec![1; 65537]),
        Err(FormatError::InvalidInput { .. })
    ));
    let bad = WriterOptions {
        cluster_size: 1000,
        ..WriterOptions::default()
    };
    assert!(Qcow2Writer::new(Vec::new(), 1 << 20, bad).is_err());
    let tiny = WriterOptions {
        cluster_size: 512,
        ..WriterOptions::default()
    };
    assert!(matches!(
        Qcow2Writer::new(Vec::new(), 1 << 40, tiny),
        Err(FormatError::TooLarge { .. })
    ));
}

#[test]
fn prepared_clusters_from_threads_match_write_cluster() {
    let opts = WriterOptions {
        cluster_size: 4096,
        compression: Compression::Zstd,
    };
    let size = 64 * 4096;
    let clusters: Vec<(u64, Vec<u8>)> = (0..64u64)
        .filter(|i| i % 3 != 0)
        .map(|i| (i, pattern(i, 4096, i % 2 == 0)))
        .collect();
    let (serial, _) = write_image(size, opts, &clusters);
    let mut w = Qcow2Writer::new(Vec::new(), size, opts).unwrap();
    let preparer = w.preparer();
    let prepared: Vec<PreparedCluster> = std::thread::scope(|s| {
        let handles: Vec<_> = clusters
            .iter()
            .map(|(i, d)| s.spawn(move || preparer.prepare(*i, d).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((i, _), p) in clusters.iter().zip(&prepared) {
        w.write_prepared(*i, p).unwrap();
    }
    assert_eq!(w.finish().unwrap(), serial);
    let mut w = Qcow2Writer::new(Vec::new(), size, opts).unwrap();
    let too_big = PreparedCluster::Compressed(vec![1; 4096]);
    assert!(matches!(
        w.write_prepared(1, &too_big),
        Err(FormatError::InvalidInput { .. })
    ));
}

#[test]
fn huge_sparse_image_stays_small() {
    // 10 TiB virtual, a few clusters far apart: the file holds only what was written.
    let size = 10u64 << 40;
    let mut w = Qcow2Writer::new(Vec::new(), size, WriterOptions::default()).unwrap();
    let last = size / 65536 - 1;
    for idx in [0, 12345, last / 2, last] {
        w.write_cluster(idx, &pattern(idx, 65536, true)).unwrap();
    }
    let img = w.finish().unwrap();
    assert!(img.len() < 2 << 20, "image is {} bytes", img.len());
    let r = open(img).unwrap();
    let mut buf = vec![0u8; 65536];
    r.read_at(&mut buf, last * 65536).unwrap();
    assert_eq!(buf, pattern(last, 65536, true));
    let e = r.map(65536, u64::MAX).unwrap();
    assert_eq!(e.kind, ExtentKind::Zero);
}

fn patch_u64(img: &mut [u8], at: u64, v: u64) {
    img[at as usize..at as usize + 8].copy_from_slice(&v.to_be_bytes());
}

/// A small image with one data cluster (0) and one compressed cluster (1).
fn sample_image() -> (Vec<u8>, Header) {
    let opts = WriterOptions {
        cluster_size: 4096,
        compression: Compression::Zlib,
    };
    let mut w = Qcow2Writer::new(Vec::new(), 1 << 20, opts).unwrap();
    w.write_cluster(0, &pattern(9, 4096, true)).unwrap();
    w.write_cluster(1, &pattern(9, 4096, false)).unwrap();
    let img = w.finish().unwrap();
    let h = Header::parse(&img).unwrap();
    (img, h)
}

fn l2_offset(img: &[u8], h: &Header) -> u64 {
    let at = h.l1_table_offset as usize;
    u64::from_be_bytes(img[at..at + 8].try_into().unwrap()) & super::l2::L1_OFFSET_MASK
}

fn read_err(img: Vec<u8>) -> FormatError {
    match open(img) {
        Err(e) => e,
        Ok(r) => {
            let mut buf = vec![0u8; 8192];
            r.read_at(&mut buf, 0).unwrap_err()
        }
    }
}

#[test]
fn hostile_pointers_are_corrupt() {
    let (img, h) = sample_image();
    let l2 = l2_offset(&img, &h);
    let cases: [(&str, u64, u64); 5] = [
        ("L1 past EOF", h.l1_table_offset, 1 << 40),
        ("L1 into header", h.l1_table_offset, 0x200),
        ("L2 data past EOF", l2, 1 << 40),
        ("L2 data into header", l2, OFLAG_COMPRESSED | 0x10),
        ("L2 data unaligned", l2, 0x2200),
    ];
    for (what, at, v) in cases {
        let mut bad = img.clone();
        patch_u64(&mut bad, at, v);
        let e = read_err(bad);
        assert!(matches!(e, FormatError::Corrupt { .. }), "{what}: {e}");
    }
}

#[test]
fn hostile_headers() {
    let (img, h) = sample_image();
    let with = |f: &dyn Fn(&mut Header)| {
        let mut h2 = h.clone();
        f(&mut h2);
        let mut bad = img.clone();
        bad[..h2.header_len()].copy_from_slice(&h2.encode());
        open(bad).err().unwrap()
    };
    assert!(matches!(
        with(&|h| h.l1_size = 1 << 30),
        FormatError::TooLarge { .. }
    ));
    assert!(matches!(
        with(&|h| h.size = 1 << 60),
        FormatError::TooLarge { .. }
    ));
    assert!(matches!(
        with(&|h| h.crypt_method = 1),
        FormatError::Encrypted { .. }
    ));
    assert!(matches!(
        with(&|h| h.incompatible_features = INCOMPAT_COMPRESSION),
        FormatError::Corrupt { .. }
    ));
    let e = with(&|h| {
        h.backing_file_offset = 200;
        h.backing_file_size = 4;
    });
    assert!(matches!(e, FormatError::BackingFile { .. }), "{e}");
}

#[test]
fn truncated_files() {
    let (img, _) = sample_image();
    assert!(matches!(
        open(img[..50].to_vec()),
        Err(FormatError::Truncated { .. })
    ));
    assert!(matches!(
        open(img[..3].to_vec()),
        Err(FormatError::Truncated { .. })
    ));
    // Cut inside the L1 table (right after the header): the image is damaged.
    let cut = open(img[..4096 + 8].to_vec());
    assert!(
        matches!(
            cut,
            Err(FormatError::Corrupt { .. } | FormatError::Truncated { .. })
        ),
        "{:?}",
        cut.err()
    );
}

#[test]
fn compressed_bomb_is_refused() {
    let (mut img, h) = sample_image();
    let l2 = l2_offset(&img, &h);
    let entry = u64::from_be_bytes(img[l2 as usize + 8..l2 as usize + 16].try_into().unwrap());
    assert_ne!(entry & OFLAG_COMPRESSED, 0);
    // Overwrite the compressed data with a stream of 1 MiB of zeros (about 1 KiB).
    let bomb = compress::compress(CompressionType::Zlib, &vec![0u8; 1 << 20], 1 << 19).unwrap();
    assert!(bomb.len() < 2048);
    let host = entry & ((1 << (70 - 12)) - 1);
    let sectors = (bomb.len() as u64).div_ceil(512);
    let new_entry = OFLAG_COMPRESSED | ((sectors - 1) << (70 - 12)) | host;
    let end = host as usize + bomb.len();
    if img.len() < end {
        img.resize(end, 0);
    }
    img[host as usize..end].copy_from_slice(&bomb);
    patch_u64(&mut img, l2 + 8, new_entry);
    let r = open(img).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = r.read_at(&mut buf, 4096).unwrap_err();
    assert!(
        matches!(&e, FormatError::Corrupt { detail, .. } if detail.contains("past the cluster size")),
        "{e}"
    );
}

fn arb_opts() -> impl Strategy<Value = WriterOptions> {
    (
        prop_oneof![Just(512u64), Just(4096), Just(65536)],
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Zlib),
            Just(Compression::Zstd)
        ],
    )
        .prop_map(|(cluster_size, compression)| WriterOptions {
            cluster_size,
            compression,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn round_trip_matches_model(
        opts in arb_opts(),
        size in 1u64..(3 << 20),
        picks in proptest::collection::btree_map(0u64..4096, (any::<u64>(), any::<bool>(), any::<bool>()), 0..40),
    ) {
        let cs = opts.cluster_size;
        let n = size.div_ceil(cs);
        let mut clusters = Vec::new();
        let mut last = None;
        for (k, (seed, noisy, zero)) in picks {
            let idx = k % n;
            if last.is_some_and(|l| idx <= l) {
                continue;
            }
            last = Some(idx);
            let data = if zero { vec![0; cs as usize] } else { pattern(seed, cs as usize, noisy) };
            clusters.push((idx, data));
        }
        let (img, model) = write_image(size, opts, &clusters);
        let r = open(img).unwrap();
        prop_assert_eq!(read_all(&r), model.clone());
        check_map(&r, &model);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(r) = open(bytes) {
            let mut buf = vec![0u8; 4096.min(r.virtual_size() as usize)];
            let _ = r.read_at(&mut buf, 0);
            let _ = r.map(0, 1 << 30);
        }
    }

    #[test]
    fn mutated_images_never_panic(
        opts in arb_opts(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let clusters = vec![(0, pattern(1, opts.cluster_size as usize, false)), (2, pattern(2, opts.cluster_size as usize, true))];
        let (mut img, _) = write_image(1 << 20, opts, &clusters);
        let len = img.len();
        for (i, b) in flips {
            img[i.index(len)] = b;
        }
        if let Ok(r) = open(img) {
            let mut buf = vec![0u8; 3 * opts.cluster_size as usize];
            let _ = r.read_at(&mut buf, 0);
            let _ = r.map(0, 1 << 20);
        }
    }
}
