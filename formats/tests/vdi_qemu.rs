//! VDI against the real qemu-img: a raw disk with random data, holes and a written
//! zero region is converted to dynamic and static VDI; `VdiImage` must read it back
//! byte for byte and map the holes as zero. Also hostile edits of a real image.

use platter_formats::readat::MemImage;
use platter_formats::vdi::VdiImage;
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
fn dynamic_and_static_vdi_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (src, raw) = make_raw(dir.path());
    for (name, opts, sparse) in [
        ("dyn.vdi", &[][..], true),
        ("static.vdi", &["static=on"][..], false),
    ] {
        let path = dir.path().join(name);
        convert(&src, &path, "vdi", opts);
        let img = VdiImage::open(open_file(&path)).unwrap();
        assert_eq!(img.virtual_size(), raw.len() as u64);
        check_bytes(&img, &raw);
        check_map(&img, &raw, MIB, sparse);
    }
}

#[test]
fn hostile_edits_of_a_real_vdi() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = make_raw(dir.path());
    let path = dir.path().join("a.vdi");
    convert(&src, &path, "vdi", &[]);
    let good = std::fs::read(&path).unwrap();
    let open = |bytes: Vec<u8>| VdiImage::open(Arc::new(MemImage(bytes)));
    assert!(open(good.clone()).is_ok());
    // Truncated: the last allocated block is gone.
    let mut t = good.clone();
    t.truncate(t.len() - 1000);
    assert!(matches!(open(t).err(), Some(FormatError::Corrupt { .. })));
    let t = good[..300].to_vec();
    assert!(matches!(open(t).err(), Some(FormatError::Truncated { .. })));
    // A block map entry past the end of the file.
    let bmap = u32::from_le_bytes(good[0x154..0x158].try_into().unwrap()) as usize;
    let mut t = good.clone();
    t[bmap..bmap + 4].copy_from_slice(&0x00ff_0000u32.to_le_bytes());
    assert!(matches!(open(t).err(), Some(FormatError::Corrupt { .. })));
    // Bad signature.
    let mut t = good.clone();
    t[0x40] ^= 1;
    assert!(matches!(open(t).err(), Some(FormatError::BadMagic { .. })));
}
