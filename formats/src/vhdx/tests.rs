//! Unit tests for the VHDX reader on images built in memory.

use super::crc::crc32c;
use super::meta::*;
use super::*;
use crate::readat::MemImage;
use crate::ExtentKind;
use proptest::prelude::*;

const BS: u64 = MIB;
const META_AT: usize = MIB as usize;
const BAT_AT: usize = 2 * MIB as usize;
const DATA_AT: usize = 3 * MIB as usize;

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn seal(buf: &mut [u8], at: usize, len: usize) {
    buf[at + 4..at + 8].fill(0);
    let c = crc32c(&buf[at..at + len]);
    put(buf, at + 4, &c.to_le_bytes());
}

fn header(buf: &mut [u8], at: usize, seq: u64) {
    put(buf, at, b"head");
    put(buf, at + 8, &seq.to_le_bytes());
    put(buf, at + 66, &1u16.to_le_bytes());
    seal(buf, at, HEADER_LEN);
}

fn region_table(buf: &mut [u8], at: usize) {
    put(buf, at, b"regi");
    put(buf, at + 8, &2u32.to_le_bytes());
    for (i, (id, off)) in [(BAT_REGION, BAT_AT), (METADATA_REGION, META_AT)]
        .iter()
        .enumerate()
    {
        let e = at + 16 + 32 * i;
        put(buf, e, id);
        put(buf, e + 16, &(*off as u64).to_le_bytes());
        put(buf, e + 24, &(MIB as u32).to_le_bytes());
        put(buf, e + 28, &1u32.to_le_bytes());
    }
    seal(buf, at, REGION_TABLE_LEN);
}

fn metadata(buf: &mut [u8], vsize: u64, flags: u32) {
    put(buf, META_AT, b"metadata");
    put(buf, META_AT + 10, &3u16.to_le_bytes());
    let items: [(Guid, Vec<u8>); 3] = [
        (
            FILE_PARAMETERS,
            [(BS as u32).to_le_bytes(), flags.to_le_bytes()].concat(),
        ),
        (VIRTUAL_DISK_SIZE, vsize.to_le_bytes().to_vec()),
        (LOGICAL_SECTOR_SIZE, 512u32.to_le_bytes().to_vec()),
    ];
    for (i, (id, value)) in items.iter().enumerate() {
        let e = META_AT + 32 + 32 * i;
        let off = 65536 + 64 * i;
        put(buf, e, id);
        put(buf, e + 16, &(off as u32).to_le_bytes());
        put(buf, e + 20, &(value.len() as u32).to_le_bytes());
        put(buf, e + 24, &4u32.to_le_bytes());
        put(buf, META_AT + off, value);
    }
}

/// A 3.5 MiB disk, 1 MiB blocks: block 0 stored (0x11), block 1 zero state, block 2
/// not present, block 3 (half) stored (0x33).
fn sample() -> Vec<u8> {
    let vsize = 3 * MIB + MIB / 2;
    let mut f = vec![0u8; DATA_AT + 2 * MIB as usize];
    put(&mut f, 0, b"vhdxfile");
    header(&mut f, HEADER1_AT as usize, 1);
    header(&mut f, HEADER2_AT as usize, 2);
    region_table(&mut f, REGION1_AT as usize);
    region_table(&mut f, REGION2_AT as usize);
    metadata(&mut f, vsize, 0);
    let bat = [
        (3 << 20) | PAYLOAD_FULLY_PRESENT,
        PAYLOAD_ZERO,
        PAYLOAD_NOT_PRESENT,
        (4 << 20) | PAYLOAD_FULLY_PRESENT,
    ];
    for (i, e) in bat.iter().enumerate() {
        put(&mut f, BAT_AT + 8 * i, &e.to_le_bytes());
    }
    f[DATA_AT..DATA_AT + MIB as usize].fill(0x11);
    f[DATA_AT + MIB as usize..].fill(0x33);
    f
}

fn open(bytes: Vec<u8>) -> Result<VhdxImage, FormatError> {
    VhdxImage::open(Arc::new(MemImage(bytes)))
}

#[test]
fn reads_and_maps_blocks() {
    let img = open(sample()).unwrap();
    let size = img.virtual_size();
    assert_eq!(size, 3 * MIB + MIB / 2);
    let mut buf = vec![0u8; size as usize];
    img.read_at(&mut buf, 0).unwrap();
    let mib = MIB as usize;
    assert!(buf[..mib].iter().all(|&b| b == 0x11));
    assert!(buf[mib..3 * mib].iter().all(|&b| b == 0));
    assert!(buf[3 * mib..].iter().all(|&b| b == 0x33));
    let e = img.map(10, u64::MAX).unwrap();
    assert_eq!((e.len, e.kind), (MIB - 10, ExtentKind::Data));
    let e = img.map(MIB, u64::MAX).unwrap();
    assert_eq!((e.len, e.kind), (2 * MIB, ExtentKind::Zero));
    let e = img.map(3 * MIB, u64::MAX).unwrap();
    assert_eq!((e.len, e.kind), (MIB / 2, ExtentKind::Data));
    assert!(img.map(size, 1).is_err());
}

#[test]
fn newer_header_with_set_log_guid_and_no_entries_still_opens() {
    let mut f = sample();
    let at = HEADER2_AT as usize;
    put(&mut f, at + 48, &[5u8; 16]);
    put(&mut f, at + 68, &(MIB as u32).to_le_bytes());
    f.resize(f.len() + MIB as usize, 0); // an all-zero log: no entries
    put(&mut f, at + 72, &(5 * MIB).to_le_bytes());
    seal(&mut f, at, HEADER_LEN);
    assert!(open(f).is_ok());
}

#[test]
fn pending_log_is_refused() {
    let mut f = sample();
    let at = HEADER2_AT as usize;
    put(&mut f, at + 48, &[5u8; 16]);
    put(&mut f, at + 68, &(MIB as u32).to_le_bytes());
    put(&mut f, at + 72, &(5 * MIB).to_le_bytes());
    seal(&mut f, at, HEADER_LEN);
    f.resize(f.len() + MIB as usize, 0);
    // An empty log streams.
    assert!(streamed(&f).unwrap().is_some());
    let log = 5 * MIB as usize;
    put(&mut f, log, b"loge");
    put(&mut f, log + 8, &4096u32.to_le_bytes());
    put(&mut f, log + 32, &[5u8; 16]);
    seal(&mut f, log, 4096);
    // A stream cannot replay it: left to the reader, which refuses it.
    assert_eq!(streamed(&f).unwrap(), None);
    match open(f) {
        Err(FormatError::Unsupported { what, .. }) => assert!(what.contains("log replay needed")),
        other => panic!("expected log refusal, got {:?}", other.err()),
    }
}

#[test]
fn hostile_images_are_refused() {
    // BAT entry past EOF.
    let mut f = sample();
    put(
        &mut f,
        BAT_AT,
        &((100u64 << 20) | PAYLOAD_FULLY_PRESENT).to_le_bytes(),
    );
    assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));
    // BAT entry into the header section, and onto the BAT itself.
    for mb in [0u64, 2] {
        let mut f = sample();
        put(
            &mut f,
            BAT_AT,
            &((mb << 20) | PAYLOAD_FULLY_PRESENT).to_le_bytes(),
        );
        assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));
    }
    // Both headers with bad checksums.
    let mut f = sample();
    f[HEADER1_AT as usize + 100] = 1;
    f[HEADER2_AT as usize + 100] = 1;
    assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));
    // One bad region table falls back to the other; both bad is corrupt.
    let mut f = sample();
    f[REGION1_AT as usize + 1000] = 1;
    assert!(open(f.clone()).is_ok());
    f[REGION2_AT as usize + 1000] = 1;
    assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));
    // Differencing.
    let mut f = sample();
    metadata(&mut f, 3 * MIB + MIB / 2, 2);
    assert!(matches!(
        open(f).err(),
        Some(FormatError::Unsupported { .. })
    ));
    // Truncated.
    let mut f = sample();
    f.truncate(DATA_AT + MIB as usize + 10);
    assert!(matches!(open(f).err(), Some(FormatError::Corrupt { .. })));
    let mut f = sample();
    f.truncate(BAT_AT + 100);
    assert!(open(f).is_err());
    assert!(matches!(
        open(vec![0u8; 4]).err(),
        Some(FormatError::Truncated { .. })
    ));
    assert!(matches!(
        open(vec![0u8; 4096]).err(),
        Some(FormatError::BadMagic { .. })
    ));
}

fn streamed(bytes: &[u8]) -> Result<Option<Vec<u8>>, FormatError> {
    crate::streammap::testing::stream_decode(Format::Vhdx, bytes)
}

#[test]
fn stream_plan_matches_the_reader() {
    use crate::streammap::testing::{assert_rereading_refused, map_of, read_all, runs};
    use crate::streammap::{plan, Plan};
    let f = sample();
    let want = read_all(&open(f.clone()).unwrap()).unwrap();
    assert!(streamed(&f).unwrap().unwrap() == want);
    // Everything up to the end of the BAT entries is read before the data.
    let m = map_of(Format::Vhdx, &f[..BAT_AT + 32]);
    assert_eq!(
        runs(&m),
        vec![(3 * MIB, 0, MIB), (4 * MIB, 3 * MIB, MIB / 2)]
    );
    assert_eq!(m.zeros, vec![(MIB, 2 * MIB)]);
    assert!(matches!(
        plan(Format::Vhdx, &f[..BAT_AT + 31]).unwrap(),
        Plan::Need(_)
    ));

    // Cut in the last block: truncated.
    assert!(matches!(
        streamed(&f[..4 * MIB as usize + 100]),
        Err(FormatError::Truncated { .. })
    ));
    // Two blocks on one payload block.
    let mut g = f.clone();
    put(
        &mut g,
        BAT_AT + 24,
        &((3u64 << 20) | PAYLOAD_FULLY_PRESENT).to_le_bytes(),
    );
    assert!(open(g.clone()).is_ok());
    assert_rereading_refused(Format::Vhdx, &g);
    // A differencing image is not streamable (the reader says why).
    let mut g = f.clone();
    metadata(&mut g, 3 * MIB + MIB / 2, 2);
    assert_eq!(streamed(&g).unwrap(), None);
    // Corrupt tables are refused as by the reader.
    let mut g = f.clone();
    put(
        &mut g,
        BAT_AT,
        &((2u64 << 20) | PAYLOAD_FULLY_PRESENT).to_le_bytes(),
    );
    assert!(matches!(streamed(&g), Err(FormatError::Corrupt { .. })));
}

fn interesting_offset(region: u8, delta: u16) -> usize {
    let d = usize::from(delta);
    match region % 4 {
        0 => REGION1_AT as usize + 16 + d % 64,
        1 => META_AT + d % 160,
        2 => META_AT + 65536 + d % 160,
        _ => BAT_AT + d % 32,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn open_never_panics_on_mutations(region in any::<u8>(), delta in any::<u16>(), val in any::<u8>()) {
        let mut f = sample();
        let at = interesting_offset(region, delta);
        f[at] = val;
        region_table(&mut f, REGION2_AT as usize);
        seal(&mut f, REGION1_AT as usize, REGION_TABLE_LEN);
        let stream = streamed(&f);
        if let Ok(img) = open(f) {
            let mut buf = vec![0u8; img.virtual_size().min(1 << 23) as usize];
            let read = img.read_at(&mut buf, 0);
            let _ = img.map(0, u64::MAX);
            // Where both decode the image, they agree.
            if let (Ok(()), Ok(Some(s))) = (read, stream) {
                if img.virtual_size() <= 1 << 23 {
                    prop_assert!(s == buf);
                }
            }
        }
    }
}
