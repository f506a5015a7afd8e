//! VHDX against the real qemu-img: a raw disk with random data, holes and a written
//! zero region is converted to VHDX (default and 1 MiB blocks); `VhdxImage` must read it
//! back byte for byte, map the holes as zero, and refuse hostile edits of a real image.

use platter_formats::readat::MemImage;
use platter_formats::vhdx::VhdxImage;
use platter_formats::{DiskImage, ExtentKind, FormatError, ReadAt};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// Random data at 0-1 MiB, 3-3.5 MiB, 6-6.25 MiB and the last 4 KiB of 8 MiB; written
/// zeros at 4-6 MiB; holes elsewhere. Deterministic (xorshift).
fn make_raw(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut raw = vec![0u8; 8 * MIB as usize];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut fill = |buf: &mut [u8]| {
        for b in buf {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    };
    let m = MIB as usize;
    fill(&mut raw[..m]);
    fill(&mut raw[3 * m..3 * m + m / 2]);
    fill(&mut raw[6 * m..6 * m + m / 4]);
    fill(&mut raw[8 * m - 4096..]);
    let path = dir.join("src.raw");
    let f = File::create(&path).unwrap();
    f.set_len(raw.len() as u64).unwrap();
    for (a, b) in [
        (0, m),
        (3 * m, 3 * m + m / 2),
        (6 * m, 6 * m + m / 4),
        (8 * m - 4096, 8 * m),
    ] {
        f.write_all_at(&raw[a..b], a as u64).unwrap();
    }
    f.write_all_at(&vec![0u8; 2 * m], 4 * MIB).unwrap();
    (path, raw)
}

fn convert(src: &Path, dst: &Path, fmt: &str, opts: &[&str]) {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", fmt]);
    for o in opts {
        cmd.args(["-o", o]);
    }
    let out = cmd.arg(src).arg(dst).output().expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn open_file(path: &Path) -> Arc<dyn ReadAt> {
    Arc::new(File::open(path).unwrap())
}

/// Reads the whole image in odd-sized pieces and compares with `raw` (zero-extended).
fn check_bytes(img: &dyn DiskImage, raw: &[u8]) {
    let size = img.virtual_size() as usize;
    assert!(size >= raw.len());
    let mut got = vec![0u8; size];
    let mut pos = 0;
    while pos < size {
        let n = (300 * 1024 + 17).min(size - pos);
        img.read_at(&mut got[pos..pos + n], pos as u64).unwrap();
        pos += n;
    }
    assert!(
        got[..raw.len()] == *raw,
        "guest bytes differ from the raw source"
    );
    assert!(got[raw.len()..].iter().all(|&b| b == 0));
}

/// The map tiles the disk, never calls data zero, and (for sparse images) reports each
/// all-zero block of `block` bytes as Zero and every other block as Data.
fn check_map(img: &dyn DiskImage, raw: &[u8], block: u64, sparse: bool) {
    let size = img.virtual_size();
    let byte = |o: u64| raw.get(o as usize).copied().unwrap_or(0);
    let mut pos = 0;
    while pos < size {
        let e = img.map(pos, u64::MAX).unwrap();
        assert!(e.len > 0 && pos + e.len <= size);
        if e.kind == ExtentKind::Zero {
            assert!(
                (pos..pos + e.len).all(|o| byte(o) == 0),
                "data mapped as zero at {pos}"
            );
        }
        pos += e.len;
    }
    for start in (0..size).step_by(block as usize) {
        let end = (start + block).min(size);
        let zero = (start..end).all(|o| byte(o) == 0);
        let want = if zero && sparse {
            ExtentKind::Zero
        } else {
            ExtentKind::Data
        };
        assert_eq!(
            img.map(start, end - start).unwrap().kind,
            want,
            "block at {start}"
        );
    }
    assert!(img.map(size, 1).is_err());
}

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

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
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
