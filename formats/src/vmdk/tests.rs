//! Unit tests for the VMDK reader on images built in memory, including the
//! streamOptimized layout with the grain directory behind a footer, which qemu-img does
//! not produce.

use super::header::{
    FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_TEST, FLAG_ZERO_GRAIN, MARKER_EOS, MARKER_FOOTER,
};
use super::*;
use crate::readat::MemImage;
use proptest::prelude::*;
use std::io::Write;

const GRAIN: usize = 64 * 1024;
const GRAIN_SECTORS: u64 = 128;

fn header(capacity: u64, flags: u32, gd_offset: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&(flags | FLAG_NL_TEST).to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes());
    h[36..44].copy_from_slice(&2u64.to_le_bytes());
    h[44..48].copy_from_slice(&512u32.to_le_bytes());
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&1u16.to_le_bytes());
    h
}

fn descriptor(create_type: &str, capacity: u64) -> Vec<u8> {
    let mut d = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\nRW {capacity} SPARSE \"t.vmdk\"\n"
    )
    .into_bytes();
    d.resize(1024, 0);
    d
}

fn marker(value: u64, kind: u32) -> Vec<u8> {
    let mut m = vec![0u8; 512];
    m[..8].copy_from_slice(&value.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

fn pad(f: &mut Vec<u8>) {
    f.resize(f.len().next_multiple_of(512), 0);
}

fn sector(f: &[u8]) -> u32 {
    (f.len() / 512) as u32
}

/// Grain contents of the samples: 3.5 grains; grain 1 unallocated, grain 2 zero.
fn grains() -> Vec<Option<Vec<u8>>> {
    vec![
        Some((0..GRAIN).map(|i| (i % 251) as u8).collect()),
        None,
        Some(vec![]), // GTE 1: zero grain
        Some(vec![0x5a; GRAIN / 2]),
    ]
}

const CAPACITY: u64 = 3 * GRAIN_SECTORS + GRAIN_SECTORS / 2;

fn expected() -> Vec<u8> {
    let mut e = vec![0u8; CAPACITY as usize * 512];
    e[..GRAIN].copy_from_slice(grains()[0].as_ref().unwrap());
    e[3 * GRAIN..].fill(0x5a);
    e
}

/// A monolithicSparse image: header, descriptor, GD, GT, then plain grains; the file ends
/// right after the guest-visible half of the last grain.
fn sparse_sample() -> Vec<u8> {
    let mut f = header(CAPACITY, FLAG_ZERO_GRAIN, 3);
    f.extend(descriptor("monolithicSparse", CAPACITY));
    f.extend(4u32.to_le_bytes()); // GD: the GT at sector 4
    pad(&mut f);
    let mut gt = vec![0u8; 2048];
    let gt_at = f.len();
    f.extend(&gt);
    for (i, g) in grains().iter().enumerate() {
        let entry = match g {
            None => 0,
            Some(d) if d.is_empty() => 1,
            Some(d) => {
                let s = sector(&f);
                f.extend(d);
                s
            }
        };
        gt[4 * i..4 * i + 4].copy_from_slice(&entry.to_le_bytes());
    }
    f[gt_at..gt_at + 2048].copy_from_slice(&gt);
    f
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// A streamOptimized image as VMware writes it: compressed grains behind markers, then
/// GT and GD behind their markers, the footer (holding the real GD offset) and EOS.
fn stream_sample() -> Vec<u8> {
    let flags = FLAG_COMPRESSED | FLAG_MARKERS | FLAG_ZERO_GRAIN;
    let mut f = header(CAPACITY, flags, GD_AT_END);
    f.extend(descriptor("streamOptimized", CAPACITY));
    let mut gt = vec![0u8; 2048];
    for (i, g) in grains().iter().enumerate() {
        let entry = match g {
            None => 0,
            Some(d) if d.is_empty() => 1,
            Some(d) => {
                let s = sector(&f);
                let z = zlib(d);
                f.extend((i as u64 * GRAIN_SECTORS).to_le_bytes());
                f.extend((z.len() as u32).to_le_bytes());
                f.extend(z);
                pad(&mut f);
                s
            }
        };
        gt[4 * i..4 * i + 4].copy_from_slice(&entry.to_le_bytes());
    }
    f.extend(marker(4, 1));
    let gt_sector = sector(&f);
    f.extend(&gt);
    f.extend(marker(1, 2));
    let gd_sector = sector(&f);
    f.extend(gt_sector.to_le_bytes());
    pad(&mut f);
    f.extend(marker(1, MARKER_FOOTER));
    f.extend(header(CAPACITY, flags, gd_sector.into()));
    f.extend(marker(0, MARKER_EOS));
    f
}

fn open(bytes: Vec<u8>) -> Result<VmdkImage, FormatError> {
    VmdkImage::open(Arc::new(MemImage(bytes)))
}

fn check_sample(img: &VmdkImage) {
    assert_eq!(img.virtual_size(), CAPACITY * 512);
    let mut buf = vec![0u8; img.virtual_size() as usize];
    img.read_at(&mut buf, 0).unwrap();
    assert!(buf == expected());
    // Unaligned small reads through the grain cache.
    let mut small = vec![0u8; 1000];
    img.read_at(&mut small, 65_000).unwrap();
    assert_eq!(&small[..], &expected()[65_000..66_000]);
    let g = GRAIN as u64;
    let e = img.map(7, u64::MAX).unwrap();
    assert_eq!((e.len, e.kind), (g - 7, ExtentKind::Data));
    let e = img.map(g, u64::MAX).unwrap();
    assert_eq!((e.len, e.kind), (2 * g, ExtentKind::Zero));
    let e = img.map(3 * g, u64::MAX).unwrap();
    assert_eq!((e.len, e.kind), (g / 2, ExtentKind::Data));
    assert!(img.map(img.virtual_size(), 1).is_err());
}

#[test]
fn monolithic_sparse_reads_and_maps() {
    let img = open(sparse_sample()).unwrap();
    assert_eq!(img.create_type(), Some("monolithicSparse"));
    assert!(!img.is_compressed());
    check_sample(&img);
}

#[test]
fn stream_optimized_with_footer_reads_and_maps() {
    let img = open(stream_sample()).unwrap();
    assert_eq!(img.create_type(), Some("streamOptimized"));
    assert!(img.is_compressed());
    check_sample(&img);
}

#[test]
fn other_create_types_and_parents_are_refused() {
    for t in ["monolithicFlat", "twoGbMaxExtentSparse", "vmfs"] {
        let mut f = sparse_sample();
        f[512..1536].copy_from_slice(&descriptor(t, CAPACITY));
        match open(f) {
            Err(FormatError::Unsupported { what, .. }) => assert!(what.contains(t), "{what}"),
            other => panic!("{t}: {:?}", other.err()),
        }
    }
    let text =
        b"# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 10 FLAT \"x-flat.vmdk\" 0\n";
    match open(text.to_vec()) {
        Err(FormatError::Unsupported { what, .. }) => assert!(what.contains("monolithicFlat")),
        other => panic!("{:?}", other.err()),
    }
    let mut f = sparse_sample();
    let mut d = b"createType=\"monolithicSparse\"\nparentFileNameHint=\"base.vmdk\"\nRW 448 SPARSE \"t.vmdk\"\n".to_vec();
    d.resize(1024, 0);
    f[512..1536].copy_from_slice(&d);
    assert!(matches!(
        open(f).err(),
        Some(FormatError::Unsupported { .. })
    ));
}

#[test]
fn hostile_files_are_refused() {
    // GT entry past EOF.
    let mut f = sparse_sample();
    f[2048..2052].copy_from_slice(&100_000u32.to_le_bytes());
    let img = open(f).unwrap();
    assert!(matches!(
        img.read_at(&mut [0u8; 10], 0),
        Err(FormatError::Corrupt { .. })
    ));
    assert!(matches!(img.map(0, 10), Err(FormatError::Corrupt { .. })));
    // GT entry into the header.
    let mut f = sparse_sample();
    f[2048..2052].copy_from_slice(&2u32.to_le_bytes());
    let img = open(f).unwrap();
    assert!(matches!(
        img.read_at(&mut [0u8; 10], 0),
        Err(FormatError::Corrupt { .. })
    ));
    // GD entry past EOF.
    let mut f = sparse_sample();
    f[1536..1540].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));
    // Truncated inside the last grain.
    let mut f = sparse_sample();
    f.truncate(f.len() - 100);
    let img = open(f).unwrap();
    assert!(img.read_at(&mut [0u8; 10], 3 * GRAIN as u64).is_err());
    // Stream: broken footer, corrupt compressed data, wrong marker LBA.
    let mut f = stream_sample();
    let n = f.len();
    f[n - 500] = 1;
    assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));
    let mut f = stream_sample();
    f[1536 + 12 + 10] ^= 0xff; // inside the first compressed grain
    let img = open(f).unwrap();
    match img.read_at(&mut [0u8; 10], 0) {
        Err(FormatError::Corrupt { detail, .. }) => assert!(detail.contains("deflate"), "{detail}"),
        other => panic!("{other:?}"),
    }
    let mut f = stream_sample();
    f[1536] = 9; // marker LBA
    let img = open(f).unwrap();
    match img.read_at(&mut [0u8; 10], 0) {
        Err(FormatError::Corrupt { detail, .. }) => assert!(detail.contains("marker"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // Truncated to the header.
    let f = stream_sample()[..600].to_vec();
    assert!(open(f).is_err());
    assert!(matches!(
        open(vec![]).err(),
        Some(FormatError::BadMagic { .. })
    ));
    assert!(matches!(
        open(b"KDMV".to_vec()).err(),
        Some(FormatError::Truncated { .. })
    ));
}

fn streamed(bytes: &[u8]) -> Result<Option<Vec<u8>>, FormatError> {
    crate::streammap::testing::stream_decode(Format::Vmdk, bytes)
}

#[test]
fn monolithic_sparse_stream_plan_matches_the_reader() {
    use crate::streammap::testing::{assert_rereading_refused, map_of, runs};
    use crate::streammap::{plan, Plan};
    let f = sparse_sample();
    assert!(streamed(&f).unwrap().unwrap() == expected());
    // Header, descriptor, directory, then every grain table in one request.
    assert_eq!(plan(Format::Vmdk, &[]).unwrap(), Plan::Need(512));
    assert_eq!(plan(Format::Vmdk, &f[..512]).unwrap(), Plan::Need(1536));
    assert_eq!(plan(Format::Vmdk, &f[..1536]).unwrap(), Plan::Need(1540));
    assert_eq!(plan(Format::Vmdk, &f[..1540]).unwrap(), Plan::Need(4096));
    let m = map_of(Format::Vmdk, &f[..4096]);
    let g = GRAIN as u64;
    assert_eq!(runs(&m), vec![(4096, 0, g), (4096 + g, 3 * g, g / 2)]);
    assert_eq!(m.zeros, vec![(g, 2 * g)]);

    // Cut in the last grain: truncated.
    assert!(matches!(
        streamed(&f[..f.len() - 100]),
        Err(FormatError::Truncated { .. })
    ));
    // Grain 3 on grain 0's bytes: the reader reads them twice, a stream cannot.
    let mut d = f.clone();
    d[2048 + 12..2048 + 16].copy_from_slice(&8u32.to_le_bytes());
    assert!(open(d.clone()).is_ok());
    assert_rereading_refused(Format::Vmdk, &d);
    // A GT entry into the header: the reader's error.
    let mut d = f.clone();
    d[2048..2052].copy_from_slice(&2u32.to_le_bytes());
    let e = streamed(&d).unwrap_err().to_string();
    assert!(e.contains("inside the header"), "{e}");
    // A directory behind the footer, or compressed grains: left to other paths.
    assert_eq!(streamed(&stream_sample()).unwrap(), None);
    // Other create types are refused as by the reader.
    let mut d = f.clone();
    d[512..1536].copy_from_slice(&descriptor("monolithicFlat", CAPACITY));
    assert!(matches!(streamed(&d), Err(FormatError::Unsupported { .. })));
}

#[test]
fn inflate_bounds_the_output() {
    let z = zlib(&[7u8; 1000]);
    assert_eq!(inflate_grain(&z, 1000).unwrap(), vec![7u8; 1000]);
    assert!(inflate_grain(&z, 999).is_err());
    assert_eq!(inflate_grain(&z, 1500).unwrap()[999..1001], [7, 0]);
    assert!(inflate_grain(&z[..z.len() - 3], 1000).is_err());
    assert!(inflate_grain(b"garbage", 1000).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn open_never_panics_on_mutations(stream in any::<bool>(), pos in 0usize..2100, val in any::<u8>(), cut in 0usize..300) {
        let mut f = if stream { stream_sample() } else { sparse_sample() };
        f[pos] = val;
        if cut < 150 {
            f.truncate(f.len() - cut * 7);
        }
        let stream = streamed(&f);
        if let Ok(img) = open(f) {
            let mut buf = vec![0u8; img.virtual_size().min(1 << 18) as usize];
            let read = img.read_at(&mut buf, 0);
            let _ = img.map(0, u64::MAX);
            // Where both decode the image, they agree.
            if let (Ok(()), Ok(Some(s))) = (read, stream) {
                if img.virtual_size() <= 1 << 18 {
                    prop_assert!(s == buf);
                }
            }
        }
    }
}
