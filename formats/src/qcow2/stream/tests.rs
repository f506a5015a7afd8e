//! Tests of the streaming decoder against the random-access reader: images from our
//! writer (tables after their data: the stash fallback), images laid out as qemu-img
//! does (tables first: no stash), hand-broken images, and arbitrary bytes.

use super::*;
use crate::qcow2::compress::{self as comp};
use crate::qcow2::header::{CompressionType, INCOMPAT_COMPRESSION, INCOMPAT_EXTENDED_L2};
use crate::qcow2::l2::{OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use crate::qcow2::{Compression, Qcow2Image, Qcow2Writer, WriterOptions};
use crate::{DiskImage, MemImage};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Images larger than this are decoded without a model (arbitrary-bytes tests).
const MODEL_MAX: u64 = 64 << 20;

/// A handler that rebuilds the disk in memory and checks that every guest byte is
/// reported exactly once, and that only stashed bytes are recalled.
#[derive(Default)]
struct Model {
    info: Option<StreamInfo>,
    out: Vec<u8>,
    seen: Vec<bool>,
    stash: BTreeMap<u64, Vec<u8>>,
    released: bool,
    reported: u64,
    /// Non-zero bytes handed to the stash (what a real stash has to keep).
    stashed_nonzero: u64,
}

impl Model {
    fn mark(&mut self, guest: u64, len: u64) {
        let size = self.info.as_ref().map_or(0, |i| i.virtual_size);
        assert!(guest + len <= size, "{guest}+{len} past {size}");
        self.reported += len;
        if self.seen.is_empty() {
            return;
        }
        for b in &mut self.seen[guest as usize..(guest + len) as usize] {
            assert!(!*b, "guest byte reported twice near {guest}");
            *b = true;
        }
    }
}

impl StreamHandler for Model {
    type Error = FormatError;
    fn start(&mut self, info: &StreamInfo) -> Result<(), FormatError> {
        assert!(self.info.is_none());
        if info.virtual_size <= MODEL_MAX {
            self.out = vec![0; info.virtual_size as usize];
            self.seen = vec![false; info.virtual_size as usize];
        }
        self.info = Some(info.clone());
        Ok(())
    }
    fn data(&mut self, guest: u64, bytes: &[u8]) -> Result<(), FormatError> {
        self.mark(guest, bytes.len() as u64);
        if !self.out.is_empty() {
            self.out[guest as usize..guest as usize + bytes.len()].copy_from_slice(bytes);
        }
        Ok(())
    }
    fn zero(&mut self, guest: u64, len: u64) -> Result<(), FormatError> {
        self.mark(guest, len);
        Ok(())
    }
    fn compressed(&mut self, c: CompressedCluster<'_>) -> Result<(), FormatError> {
        let info = self.info.clone().unwrap();
        let mut buf = vec![0u8; info.cluster_size as usize];
        c.decompress(info.compression, &mut buf)?;
        self.data(c.guest, &buf[..c.len])
    }
    fn stash(&mut self, host: u64, bytes: &[u8]) -> Result<(), FormatError> {
        assert!(!self.released, "stash after release");
        self.stashed_nonzero += bytes.iter().filter(|&&b| b != 0).count() as u64;
        self.stash.insert(host, bytes.to_vec());
        Ok(())
    }
    fn recall(&mut self, host: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let end = host + buf.len() as u64;
        let mut covered = 0;
        for (&h, v) in self.stash.range(..end) {
            let vend = h + v.len() as u64;
            if vend <= host {
                continue;
            }
            let from = h.max(host);
            let to = vend.min(end);
            buf[(from - host) as usize..(to - host) as usize]
                .copy_from_slice(&v[(from - h) as usize..(to - h) as usize]);
            covered += to - from;
        }
        assert_eq!(covered, buf.len() as u64, "recalled bytes never stashed");
        Ok(())
    }
    fn release_stash(&mut self) -> Result<(), FormatError> {
        self.released = true;
        self.stash.clear();
        Ok(())
    }
}

/// Feeds `img` in slices of the given sizes (cycled); returns the model and stats.
fn decode_with(
    img: &[u8],
    slices: &[usize],
    limits: StreamLimits,
) -> Result<(Model, StreamStats), FormatError> {
    let mut d = Qcow2Stream::with_limits(limits);
    let mut m = Model::default();
    let mut at = 0;
    let mut i = 0;
    while at < img.len() {
        let n = slices[i % slices.len()].max(1).min(img.len() - at);
        d.feed(&img[at..at + n], &mut m)?;
        at += n;
        i += 1;
    }
    let stats = d.finish(&mut m)?;
    if !m.seen.is_empty() {
        assert!(m.seen.iter().all(|&b| b), "some guest bytes never reported");
    }
    assert!(m.released, "stash not released");
    Ok((m, stats))
}

fn decode(img: &[u8], slices: &[usize]) -> Result<(Model, StreamStats), FormatError> {
    decode_with(img, slices, StreamLimits::default())
}

fn read_all(img: &[u8]) -> Result<Vec<u8>, FormatError> {
    let r = Qcow2Image::open(MemImage(img.to_vec()))?;
    let mut out = vec![0u8; r.virtual_size() as usize];
    r.read_at(&mut out, 0)?;
    Ok(out)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|i| {
            if seed.is_multiple_of(3) {
                // Compressible.
                (i / 32) as u8 ^ seed as u8
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// A builder laying images out as qemu-img does: header, L1, then each L2 before its data.

#[derive(Debug, Clone)]
enum Content {
    Data(Vec<u8>),
    Zero,
    /// Extended L2 only: subcluster bitmaps; unallocated/zero subclusters hold garbage.
    Sub {
        alloc: u32,
        zero: u32,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// Header, L1, then every L2 table right before the data it maps.
    TablesFirst,
    /// Each L2 table after its data, L1 at the end (like our writer).
    TablesLast,
}

#[derive(Debug, Clone)]
struct Spec {
    size: u64,
    cluster_bits: u32,
    extended: bool,
    compression: Option<CompressionType>,
    clusters: Vec<(u64, Content)>,
    layout: Layout,
    /// Non-zero junk clusters (like refcount blocks) inserted before these L1 indexes.
    junk_before: Vec<u64>,
}

struct Built {
    img: Vec<u8>,
    model: Vec<u8>,
}

fn put(img: &mut Vec<u8>, at: impl TryInto<usize>, bytes: &[u8]) {
    let at = at.try_into().ok().unwrap();
    let end = at + bytes.len();
    if img.len() < end {
        img.resize(end, 0);
    }
    img[at..end].copy_from_slice(bytes);
}

fn build(spec: &Spec) -> Built {
    let cs = 1u64 << spec.cluster_bits;
    let entry_len = if spec.extended { 16 } else { 8 };
    let l2_entries = cs / entry_len;
    let size = spec.size;
    let l1_entries = size.div_ceil(cs * l2_entries);
    let l1_bytes = l1_entries * 8;
    let mut img = vec![0u8; cs as usize];
    let mut model = vec![0u8; size as usize];
    let mut cursor = cs; // byte cursor: clusters are aligned, compressed data is packed
    let align = |c: &mut u64| *c = c.next_multiple_of(cs);
    let mut l1 = vec![0u64; l1_entries as usize];
    let mut l1_off = 0;
    if spec.layout == Layout::TablesFirst {
        l1_off = cursor;
        cursor += l1_bytes.next_multiple_of(cs);
    }
    let mut by_table: BTreeMap<u64, Vec<(u64, Content)>> = BTreeMap::new();
    for (idx, c) in &spec.clusters {
        if idx * cs < size {
            by_table
                .entry(idx / l2_entries)
                .or_default()
                .push((*idx, c.clone()));
        }
    }
    for (t, clusters) in by_table {
        if spec.junk_before.contains(&t) {
            align(&mut cursor);
            put(&mut img, cursor, &pattern(t + 7, cs as usize));
            cursor += cs;
        }
        let mut table = vec![0u8; cs as usize];
        align(&mut cursor);
        let table_off = if spec.layout == Layout::TablesFirst {
            let o = cursor;
            cursor += cs;
            Some(o)
        } else {
            None
        };
        for (idx, content) in clusters {
            let guest = idx * cs;
            let glen = cs.min(size - guest) as usize;
            let (entry, bitmap) = match content {
                Content::Zero => {
                    if spec.extended {
                        (0, u64::from(u32::MAX) << 32)
                    } else {
                        (OFLAG_ZERO, 0)
                    }
                }
                Content::Data(data) => {
                    let mut full = data.clone();
                    full.resize(cs as usize, 0);
                    model[guest as usize..guest as usize + glen].copy_from_slice(&full[..glen]);
                    let packed = spec
                        .compression
                        .and_then(|k| comp::compress(k, &full, cs as usize - 1));
                    match packed {
                        Some(p) => {
                            let host = cursor;
                            put(&mut img, host, &p);
                            cursor += p.len() as u64;
                            let offset_bits = 70 - spec.cluster_bits;
                            let extra = (host + p.len() as u64 - 1) / 512 - host / 512;
                            (OFLAG_COMPRESSED | (extra << offset_bits) | host, 0)
                        }
                        None => {
                            align(&mut cursor);
                            let host = cursor;
                            put(&mut img, host, &full);
                            cursor += cs;
                            let bitmap = if spec.extended {
                                u64::from(u32::MAX)
                            } else {
                                0
                            };
                            (host | OFLAG_COPIED, bitmap)
                        }
                    }
                }
                Content::Sub { alloc, zero, data } => {
                    let zero = zero & !alloc;
                    let mut full = data.clone();
                    full.resize(cs as usize, 0);
                    let sub = (cs / 32) as usize;
                    for s in 0..32 {
                        if alloc >> s & 1 == 1 {
                            let from = s * sub;
                            let to = ((s + 1) * sub).min(glen);
                            if from < to {
                                model[guest as usize + from..guest as usize + to]
                                    .copy_from_slice(&full[from..to]);
                            }
                        }
                    }
                    align(&mut cursor);
                    let host = cursor;
                    put(&mut img, host, &full);
                    cursor += cs;
                    let h = if alloc == 0 { 0 } else { host };
                    (h, u64::from(alloc) | u64::from(zero) << 32)
                }
            };
            let at = ((idx % l2_entries) * entry_len) as usize;
            table[at..at + 8].copy_from_slice(&entry.to_be_bytes());
            if spec.extended {
                table[at + 8..at + 16].copy_from_slice(&bitmap.to_be_bytes());
            }
        }
        let off = match table_off {
            Some(o) => o,
            None => {
                align(&mut cursor);
                let o = cursor;
                cursor += cs;
                o
            }
        };
        put(&mut img, off, &table);
        l1[t as usize] = off | OFLAG_COPIED;
    }
    if spec.layout == Layout::TablesLast {
        align(&mut cursor);
        l1_off = cursor;
        cursor += l1_bytes.next_multiple_of(cs);
    }
    let l1b: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
    put(&mut img, l1_off, &l1b);
    align(&mut cursor);
    img.resize(cursor as usize, 0);
    let zstd = spec.compression == Some(CompressionType::Zstd);
    let header = Header {
        version: 3,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits: spec.cluster_bits,
        size,
        crypt_method: 0,
        l1_size: l1_entries as u32,
        l1_table_offset: if l1_entries == 0 { 0 } else { l1_off },
        refcount_table_offset: 0,
        refcount_table_clusters: 0,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: if zstd { INCOMPAT_COMPRESSION } else { 0 }
            | if spec.extended {
                INCOMPAT_EXTENDED_L2
            } else {
                0
            },
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: if zstd { 112 } else { 104 },
        compression_type: u8::from(zstd),
    };
    put(&mut img, 0, &header.encode());
    Built { img, model }
}

fn simple_spec(layout: Layout) -> Spec {
    Spec {
        size: 3 << 20,
        cluster_bits: 12,
        extended: false,
        compression: None,
        clusters: (0..200)
            .filter(|i| i % 3 != 1)
            .map(|i| {
                let c = if i % 7 == 0 {
                    Content::Zero
                } else {
                    Content::Data(pattern(i, 4096))
                };
                (i * 3, c)
            })
            .collect(),
        layout,
        junk_before: vec![],
    }
}

fn writer_image(size: u64, opts: WriterOptions, clusters: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut w = Qcow2Writer::new(Vec::new(), size, opts).unwrap();
    for (idx, data) in clusters {
        w.write_cluster(*idx, data).unwrap();
    }
    w.finish().unwrap()
}

// ---------------------------------------------------------------------------------------

#[test]
fn tables_first_needs_no_stash() {
    let b = build(&simple_spec(Layout::TablesFirst));
    assert!(read_all(&b.img).unwrap() == b.model);
    for slices in [&[1usize << 20][..], &[1], &[4095, 7, 65536]] {
        let (m, stats) = decode(&b.img, slices).unwrap();
        assert!(m.out == b.model);
        assert_eq!((m.stashed_nonzero, stats.recalled), (0, 0), "{stats:?}");
    }
}

#[test]
fn tables_last_goes_through_the_stash() {
    let b = build(&simple_spec(Layout::TablesLast));
    assert!(read_all(&b.img).unwrap() == b.model);
    let (m, stats) = decode(&b.img, &[10_000]).unwrap();
    assert!(m.out == b.model);
    assert!(stats.stashed > 0 && stats.recalled > 0, "{stats:?}");
}

#[test]
fn writer_output_decodes_without_a_stash() {
    // Our writer reserves the L1 table after the header and each L2 table before its
    // data, so a stream of its output (a containerDisk we pushed) needs no stash. 4 KiB
    // clusters: an L2 table spans 2 MiB, so the data below crosses several tables.
    for compression in [Compression::None, Compression::Zlib, Compression::Zstd] {
        let data: Vec<(u64, Vec<u8>)> = (0..40)
            .map(|i| (i * 2 + i / 16 * 600, pattern(i, 4096)))
            .collect();
        let opts = WriterOptions {
            cluster_size: 4096,
            compression,
        };
        let img = writer_image(16 << 20, opts, &data);
        let (m, stats) = decode(&img, &[1 << 20]).unwrap();
        assert!(m.out == read_all(&img).unwrap(), "{compression:?}");
        // Nothing recalled; kept only refcount blocks' few non-zero bytes (they are
        // unknown to a stream until the refcount table at the end names them).
        assert_eq!(stats.recalled, 0, "{stats:?}");
        assert!(m.stashed_nonzero < 4096, "{} {stats:?}", m.stashed_nonzero);
    }
}

#[test]
fn junk_between_tables_is_stashed_then_dropped() {
    let mut spec = simple_spec(Layout::TablesFirst);
    spec.junk_before = vec![1, 2];
    let b = build(&spec);
    let (m, stats) = decode(&b.img, &[3000]).unwrap();
    assert!(m.out == b.model);
    assert_eq!(stats.recalled, 0);
    assert!(m.stashed_nonzero >= 4000, "{stats:?}");
}

#[test]
fn compressed_extended_and_zstd() {
    for (ext, comp, bits) in [
        (false, Some(CompressionType::Zlib), 9),
        (false, Some(CompressionType::Zstd), 16),
        (true, None, 14),
        (true, Some(CompressionType::Zlib), 15),
    ] {
        let cs = 1u64 << bits;
        let clusters: Vec<(u64, Content)> = (0..60u64)
            .map(|i| {
                let c = match i % 5 {
                    0 => Content::Zero,
                    1 if ext => Content::Sub {
                        alloc: 0x0f0f_00ff ^ i as u32,
                        zero: 0xf000_0000,
                        data: pattern(i, cs as usize),
                    },
                    _ => Content::Data(pattern(i, cs as usize)),
                };
                (i * 3 + i % 3, c)
            })
            .collect();
        for layout in [Layout::TablesFirst, Layout::TablesLast] {
            let spec = Spec {
                size: 200 * cs - 512,
                cluster_bits: bits,
                extended: ext,
                compression: comp,
                clusters: clusters.clone(),
                layout,
                junk_before: vec![],
            };
            let b = build(&spec);
            assert!(
                read_all(&b.img).unwrap() == b.model,
                "{ext} {comp:?} {bits}"
            );
            let (m, stats) = decode(&b.img, &[777, 1 << 16]).unwrap();
            if let Some(i) = (0..m.out.len()).find(|&i| m.out[i] != b.model[i]) {
                panic!("{ext} {comp:?} {bits} {layout:?}: first difference at {i}");
            }
            if layout == Layout::TablesFirst {
                assert_eq!(m.stashed_nonzero, 0, "{ext} {comp:?} {bits}");
                assert_eq!(stats.recalled, 0, "{ext} {comp:?} {bits}");
            }
        }
    }
}

#[test]
fn deferred_tables_still_decode() {
    let b = build(&simple_spec(Layout::TablesFirst));
    let limits = StreamLimits {
        max_pending_runs: 2,
        ..StreamLimits::default()
    };
    let (m, stats) = decode_with(&b.img, &[5000], limits).unwrap();
    assert!(m.out == b.model);
    assert!(stats.deferred_tables > 0, "{stats:?}");
}

#[test]
fn refuses_what_the_reader_refuses() {
    let base = build(&simple_spec(Layout::TablesFirst)).img;
    let patch = |f: &dyn Fn(&mut Header)| {
        let mut img = base.clone();
        let mut h = Header::parse(&img).unwrap();
        f(&mut h);
        put(&mut img, 0, &h.encode());
        img
    };
    let cases: Vec<Vec<u8>> = vec![
        patch(&|h| h.crypt_method = 2),
        patch(&|h| h.cluster_bits = 30),
        patch(&|h| h.incompatible_features = 1 << 2),
        patch(&|h| h.incompatible_features = 1 << 12),
        patch(&|h| h.size = 1 << 60),
        patch(&|h| h.l1_table_offset = 4097),
        {
            let mut img = patch(&|h| {
                h.backing_file_offset = 200;
                h.backing_file_size = 4;
            });
            put(&mut img, 200, b"base");
            img
        },
        b"QFI\xfb\0\0\0\x09".to_vec(),
        b"QFI".to_vec(),
        Vec::new(),
    ];
    for img in cases {
        let want = read_all(&img).unwrap_err().to_string();
        for slices in [&[1usize][..], &[1 << 20]] {
            let got = decode(&img, slices).err().unwrap().to_string();
            assert_eq!(got, want);
        }
    }
}

#[test]
fn hostile_tables() {
    let b = build(&simple_spec(Layout::TablesFirst));
    let h = Header::parse(&b.img).unwrap();
    let l1 = h.l1_table_offset as usize;
    let l2 = (be64(&b.img, l1) & !OFLAG_COPIED) as usize;
    // An L2 entry pointing into the header.
    let mut img = b.img.clone();
    put(&mut img, l2, &(OFLAG_COMPRESSED | 0x100).to_be_bytes());
    let e = decode(&img, &[4096]).err().unwrap().to_string();
    assert!(e.contains("header"), "{e}");
    // An L2 entry pointing at its own table: the stream has passed it already.
    let mut img = b.img.clone();
    put(&mut img, l2, &(l2 as u64 | OFLAG_COPIED).to_be_bytes());
    let e = decode(&img, &[4096]).err().unwrap().to_string();
    assert!(e.contains("seekable"), "{e}");
    // Two L1 entries sharing one L2 table: the reader maps both, so does the stream.
    let mut img = b.img.clone();
    let l1_1 = be64(&img, l1 + 8);
    put(&mut img, l1 + 16, &l1_1.to_be_bytes());
    let (m, _) = decode(&img, &[4096]).unwrap();
    assert!(m.out == read_all(&img).unwrap());
    // An L1 entry past the end of the stream, and a truncated stream.
    let mut img = b.img.clone();
    put(
        &mut img,
        l1 + 8,
        &((1u64 << 40) | OFLAG_COPIED).to_be_bytes(),
    );
    let e = decode(&img, &[4096]).err().unwrap().to_string();
    assert!(e.contains("past the end"), "{e}");
    let e = decode(&b.img[..b.img.len() / 2], &[4096])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("past the end"), "{e}");
}

#[test]
fn compressed_bomb_is_refused() {
    let spec = Spec {
        clusters: vec![(0, Content::Data(vec![0x11; 4096]))],
        compression: Some(CompressionType::Zlib),
        ..simple_spec(Layout::TablesFirst)
    };
    let b = build(&spec);
    // Replace the compressed stream with one inflating to far more than a cluster.
    let h = Header::parse(&b.img).unwrap();
    let l2 = (be64(&b.img, h.l1_table_offset as usize) & !OFLAG_COPIED) as usize;
    let entry = be64(&b.img, l2);
    let host = entry & ((1 << (70 - 12)) - 1);
    let bomb = comp::compress(CompressionType::Zlib, &vec![0u8; 1 << 20], 4095).unwrap();
    let mut img = b.img.clone();
    put(&mut img, host, &bomb);
    let e = decode(&img, &[4096]).err().unwrap().to_string();
    assert!(e.contains("compressed guest cluster 0"), "{e}");
}

#[test]
fn empty_and_tiny_images() {
    for size in [0u64, 512, 65537] {
        let img = writer_image(size, WriterOptions::default(), &[]);
        let (m, _) = decode(&img, &[100]).unwrap();
        assert!(m.out == read_all(&img).unwrap());
    }
}

fn arb_layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::TablesFirst), Just(Layout::TablesLast)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A random sparse image from our writer, fed in random slices, decodes to what the
    /// random-access reader reads.
    #[test]
    fn writer_images_match_the_reader(
        bits in 9u32..=16,
        compression in prop_oneof![Just(Compression::None), Just(Compression::Zlib), Just(Compression::Zstd)],
        picks in proptest::collection::btree_set(0u64..300, 0..40),
        slices in proptest::collection::vec(1usize..70_000, 1..6),
    ) {
        let cs = 1u64 << bits;
        let size = 300 * cs - 100;
        let data: Vec<(u64, Vec<u8>)> = picks.iter().map(|&i| (i, pattern(i, cs as usize))).collect();
        let img = writer_image(size, WriterOptions { cluster_size: cs, compression }, &data);
        let (m, _) = decode(&img, &slices).unwrap();
        prop_assert!(m.out == read_all(&img).unwrap());
    }

    /// Built images of both layouts decode like the reader; tables-first ones without
    /// the stash.
    #[test]
    fn built_images_match(
        bits in 9u32..=15,
        ext in any::<bool>(),
        zstd in proptest::option::of(any::<bool>()),
        layout in arb_layout(),
        picks in proptest::collection::btree_map(0u64..400, (0u8..4, any::<u32>()), 0..50),
        slices in proptest::collection::vec(1usize..50_000, 1..6),
    ) {
        let bits = if ext { bits.max(14) } else { bits };
        let cs = 1u64 << bits;
        let clusters = picks.iter().map(|(&i, &(k, bm))| {
            let c = match k {
                0 => Content::Zero,
                1 if ext => Content::Sub { alloc: bm, zero: bm.rotate_left(7), data: pattern(i, cs as usize) },
                _ => Content::Data(pattern(i + u64::from(k), cs as usize)),
            };
            (i, c)
        }).collect();
        let spec = Spec {
            size: 400 * cs - 512,
            cluster_bits: bits,
            extended: ext,
            compression: zstd.map(|z| if z { CompressionType::Zstd } else { CompressionType::Zlib }),
            clusters,
            layout,
            junk_before: vec![],
        };
        let b = build(&spec);
        prop_assert!(read_all(&b.img).unwrap() == b.model);
        let (m, stats) = decode(&b.img, &slices).unwrap();
        prop_assert!(m.out == b.model);
        if layout == Layout::TablesFirst {
            prop_assert_eq!((m.stashed_nonzero, stats.recalled), (0, 0));
        }
    }

    /// Arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        slices in proptest::collection::vec(1usize..600, 1..4),
    ) {
        let _ = decode(&bytes, &slices);
    }

    /// A valid image with bytes overwritten or cut short: no panic, and whenever both
    /// the reader and the stream succeed they agree.
    #[test]
    fn damaged_images_agree_with_the_reader(
        layout in arb_layout(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 0..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        slices in proptest::collection::vec(1usize..20_000, 1..4),
    ) {
        let mut spec = simple_spec(layout);
        spec.clusters.truncate(30);
        spec.compression = Some(CompressionType::Zlib);
        let mut img = build(&spec).img;
        for (at, v) in edits {
            let at = at.index(img.len() / 8) * 8;
            put(&mut img, at as u64, &v.to_be_bytes());
        }
        if let Some(c) = cut {
            img.truncate(c.index(img.len() + 1));
        }
        let streamed = decode(&img, &slices);
        if let (Ok(want), Ok((m, _))) = (read_all(&img), streamed) {
            if !m.out.is_empty() {
                prop_assert!(m.out == want);
            }
        }
    }

    /// Cutting an image short gives the reader's verdict.
    #[test]
    fn truncation_matches_the_reader(
        layout in arb_layout(),
        cut in any::<prop::sample::Index>(),
    ) {
        let b = build(&simple_spec(layout));
        let img = &b.img[..cut.index(b.img.len() + 1)];
        let want = read_all(img);
        let got = decode(img, &[3000]);
        match (want, got) {
            (Ok(w), Ok((m, _))) => prop_assert!(m.out == w),
            (Err(_), Err(_)) => {}
            (w, g) => prop_assert!(false, "reader {:?} stream {:?}", w.err(), g.err()),
        }
    }
}
