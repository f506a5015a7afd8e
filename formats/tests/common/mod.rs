//! Helpers shared by the qemu-backed reader tests (`vdi_qemu`, `vhd_qemu`, `vhdx_qemu`,
//! `vmdk_qemu`): a deterministic raw disk with data, holes and a written zero region,
//! `qemu-img convert` from it, and the byte-for-byte and map checks every reader must
//! pass. Each test file pulls this in with `mod common;`.

use platter_formats::{DiskImage, ExtentKind, ReadAt};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub const MIB: u64 = 1 << 20;

/// Random data at 0-1 MiB, 3-3.5 MiB, 6-6.25 MiB and the last 4 KiB of 8 MiB; written
/// zeros at 4-6 MiB; holes elsewhere. Deterministic (xorshift).
pub fn make_raw(dir: &Path) -> (PathBuf, Vec<u8>) {
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

pub fn convert(src: &Path, dst: &Path, fmt: &str, opts: &[&str]) {
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

pub fn open_file(path: &Path) -> Arc<dyn ReadAt> {
    Arc::new(File::open(path).unwrap())
}

/// Reads the whole image in odd-sized pieces and compares with `raw` (zero-extended).
pub fn check_bytes(img: &dyn DiskImage, raw: &[u8]) {
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
pub fn check_map(img: &dyn DiskImage, raw: &[u8], block: u64, sparse: bool) {
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

/// A little-endian u64 at `at` of an image file's bytes.
// Each test binary compiles its own copy of this module; VDI and VHD have no use for it.
#[allow(dead_code)]
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
