//! VHDX against the real qemu-img: a raw disk with random data, holes and a written
//! zero region is converted to VHDX (default and 1 MiB blocks); `VhdxImage` must read it
//! back byte for byte, map the holes as zero, and refuse hostile edits of a real image.

use platter_formats::readat::MemImage;
use platter_formats::vhdx::VhdxImage;
use platter_formats::{DiskImage, FormatError};
use std::process::Command;
use std::sync::Arc;

mod common;

use common::{check_bytes, check_map, convert, le64, make_raw, open_file, MIB};

#[test]
fn vhdx_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (src, raw) = make_raw(dir.path());
    for (name, opts, block) in [
        ("default.vhdx", &[][..], None),
        ("1m.vhdx", &["block_size=1M"][..], Some(MIB)),
        (
            "fixed.vhdx",
            &["subformat=fixed", "block_size=2M"][..],
            Some(2 * MIB),
        ),
    ] {
        let path = dir.path().join(name);
        convert(&src, &path, "vhdx", opts);
        let img = VhdxImage::open(open_file(&path)).unwrap();
        assert_eq!(img.virtual_size(), raw.len() as u64, "{name}");
        if let Some(b) = block {
            assert_eq!(u64::from(img.block_size()), b, "{name}");
        }
        assert_eq!(img.logical_sector_size(), 512);
        check_bytes(&img, &raw);
        // Even a fixed image gets PAYLOAD_BLOCK_ZERO entries where qemu-img convert
        // finds zeros (its block_state_zero default), so zero blocks map as Zero.
        check_map(&img, &raw, u64::from(img.block_size()), true);
    }
}

#[test]
fn vhdx_written_by_qemu_io_has_empty_log() {
    // qemu-io writes go through the VHDX log; after a clean close the log GUID is clear.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.vhdx");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "vhdx"])
        .arg(&path)
        .arg("16M")
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("qemu-io")
        .args(["-c", "write -P 0xab 1M 3M", "-c", "write -z 2M 1M"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let img = VhdxImage::open(open_file(&path)).unwrap();
    let mut buf = vec![0u8; 16 * MIB as usize];
    img.read_at(&mut buf, 0).unwrap();
    let m = MIB as usize;
    assert!(buf[..m].iter().all(|&b| b == 0));
    assert!(buf[m..2 * m].iter().all(|&b| b == 0xab));
    assert!(buf[2 * m..3 * m].iter().all(|&b| b == 0));
    assert!(buf[3 * m..4 * m].iter().all(|&b| b == 0xab));
    assert!(buf[4 * m..].iter().all(|&b| b == 0));
}

/// Finds the BAT region's file offset in the first region table.
fn bat_offset(img: &[u8]) -> usize {
    let rt = 192 * 1024;
    let count = u32::from_le_bytes(img[rt + 8..rt + 12].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| rt + 16 + 32 * i)
        .find(|&e| img[e..e + 4] == [0x66, 0x77, 0xc2, 0x2d])
        .map(|e| le64(img, e + 16) as usize)
        .unwrap()
}

#[test]
fn hostile_edits_of_a_real_vhdx() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = make_raw(dir.path());
    let path = dir.path().join("a.vhdx");
    convert(&src, &path, "vhdx", &["block_size=1M"]);
    let good = std::fs::read(&path).unwrap();
    let open = |bytes: Vec<u8>| VhdxImage::open(Arc::new(MemImage(bytes)));
    assert!(open(good.clone()).is_ok());
    // Both headers damaged.
    let mut t = good.clone();
    t[64 * 1024 + 200] ^= 1;
    t[128 * 1024 + 200] ^= 1;
    match open(t).err() {
        Some(FormatError::Corrupt { detail, .. }) => {
            assert!(detail.contains("checksum"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // One header damaged: the other one is used.
    let mut t = good.clone();
    t[64 * 1024 + 200] ^= 1;
    assert!(open(t).is_ok());
    // A payload BAT entry past the end of the file.
    let bat = bat_offset(&good);
    let mut t = good.clone();
    t[bat..bat + 8].copy_from_slice(&((4096u64 << 20) | 6).to_le_bytes());
    match open(t).err() {
        Some(FormatError::Corrupt { detail, .. }) => {
            assert!(detail.contains("past the end"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // Truncated.
    let t = good[..good.len() - MIB as usize / 2].to_vec();
    assert!(matches!(open(t).err(), Some(FormatError::Corrupt { .. })));
    assert!(matches!(
        open(good[..1000].to_vec()).err(),
        Some(FormatError::Truncated { .. })
    ));
}
