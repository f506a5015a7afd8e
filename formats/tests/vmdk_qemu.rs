//! VMDK against the real qemu-img: a raw disk with random data, holes and a written
//! zero region is converted to monolithicSparse and streamOptimized VMDK; `VmdkImage`
//! must read it back byte for byte, map the holes as zero, refuse the create types that
//! need other files, and refuse hostile edits of a real image.

use platter_formats::readat::MemImage;
use platter_formats::vmdk::VmdkImage;
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
fn sparse_and_stream_optimized_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (src, raw) = make_raw(dir.path());
    for (name, sub, compressed) in [
        ("sparse.vmdk", "subformat=monolithicSparse", false),
        ("stream.vmdk", "subformat=streamOptimized", true),
    ] {
        let path = dir.path().join(name);
        convert(&src, &path, "vmdk", &[sub]);
        let img = VmdkImage::open(open_file(&path)).unwrap();
        assert_eq!(img.is_compressed(), compressed, "{name}");
        assert_eq!(img.virtual_size(), raw.len() as u64, "{name}");
        check_bytes(&img, &raw);
        check_map(&img, &raw, 64 * 1024, true);
    }
}

#[test]
fn create_types_needing_other_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = make_raw(dir.path());
    for sub in [
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    ] {
        let path = dir.path().join(format!("{sub}.vmdk"));
        convert(&src, &path, "vmdk", &[&format!("subformat={sub}")]);
        match VmdkImage::open(open_file(&path)) {
            Err(FormatError::Unsupported { what, .. }) => assert!(what.contains(sub), "{what}"),
            other => panic!("{sub}: {:?}", other.err()),
        }
    }
}

#[test]
fn hostile_edits_of_a_real_vmdk() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = make_raw(dir.path());
    let open = |bytes: Vec<u8>| VmdkImage::open(Arc::new(MemImage(bytes)));
    let read_all = |img: &VmdkImage| {
        let mut buf = vec![0u8; img.virtual_size() as usize];
        img.read_at(&mut buf, 0)
    };
    for sub in ["monolithicSparse", "streamOptimized"] {
        let path = dir.path().join(format!("{sub}.vmdk"));
        convert(&src, &path, "vmdk", &[&format!("subformat={sub}")]);
        let good = std::fs::read(&path).unwrap();
        let img = open(good.clone()).unwrap();
        read_all(&img).unwrap();
        // Truncated: grains at the end are gone.
        let img = open(good[..good.len() - 70_000].to_vec()).unwrap();
        assert!(
            matches!(read_all(&img), Err(FormatError::Corrupt { .. })),
            "{sub}"
        );
        assert!(matches!(
            open(good[..40].to_vec()).err(),
            Some(FormatError::Truncated { .. })
        ));
        // The first grain table entry points past the end of the file.
        let gd_sector = le64(&good, 56);
        let gt_sector =
            u32::from_le_bytes(good[gd_sector as usize * 512..][..4].try_into().unwrap());
        let gte = gt_sector as usize * 512;
        let mut t = good.clone();
        t[gte..gte + 4].copy_from_slice(&0x0fff_ffffu32.to_le_bytes());
        let img = open(t).unwrap();
        match read_all(&img) {
            Err(FormatError::Corrupt { detail, .. }) => {
                assert!(detail.contains("past the end"), "{detail}")
            }
            other => panic!("{sub}: {other:?}"),
        }
        // A grain directory entry past the end of the file.
        let mut t = good.clone();
        let gd = gd_sector as usize * 512;
        t[gd..gd + 4].copy_from_slice(&0x0fff_ffffu32.to_le_bytes());
        assert!(
            matches!(open(t).err(), Some(FormatError::Corrupt { .. })),
            "{sub}"
        );
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
