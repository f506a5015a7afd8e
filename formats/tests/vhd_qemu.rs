//! VHD against the real qemu-img: a raw disk with random data, holes and a written
//! zero region is converted to fixed and dynamic VHD (with qemu's CHS size rounding and
//! with `force_size`); `VhdImage` must read it back byte for byte, map the holes of a
//! dynamic disk as zero, and refuse hostile edits of a real image.

use platter_formats::readat::MemImage;
use platter_formats::vhd::VhdImage;
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

fn vhd_sizes(path: &Path) -> (u64, u64) {
    let f = std::fs::read(path).unwrap();
    let footer = &f[f.len() - 512..];
    let size = u64::from_be_bytes(footer[48..56].try_into().unwrap());
    (size, f.len() as u64)
}

#[test]
fn fixed_and_dynamic_vhd_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (src, raw) = make_raw(dir.path());
    let cases: [(&str, &[&str], bool); 4] = [
        ("fixed.vhd", &["subformat=fixed"], false),
        ("dyn.vhd", &["subformat=dynamic"], true),
        (
            "fixed-exact.vhd",
            &["subformat=fixed", "force_size=on"],
            false,
        ),
        (
            "dyn-exact.vhd",
            &["subformat=dynamic", "force_size=on"],
            true,
        ),
    ];
    for (name, opts, sparse) in cases {
        let path = dir.path().join(name);
        convert(&src, &path, "vpc", opts);
        let img = VhdImage::open(open_file(&path)).unwrap();
        assert_eq!(img.is_dynamic(), sparse, "{name}");
        // Without force_size qemu rounds the size up to a CHS geometry.
        let (footer_size, _) = vhd_sizes(&path);
        assert_eq!(img.virtual_size(), footer_size, "{name}");
        assert!(img.virtual_size() >= raw.len() as u64, "{name}");
        if opts.contains(&"force_size=on") {
            assert_eq!(img.virtual_size(), raw.len() as u64, "{name}");
        }
        check_bytes(&img, &raw);
        check_map(&img, &raw, 2 * MIB, sparse);
    }
}

#[test]
fn hostile_edits_of_a_real_vhd() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = make_raw(dir.path());
    let path = dir.path().join("a.vhd");
    convert(&src, &path, "vpc", &["subformat=dynamic", "force_size=on"]);
    let good = std::fs::read(&path).unwrap();
    let open = |bytes: Vec<u8>| VhdImage::open(Arc::new(MemImage(bytes)));
    assert!(open(good.clone()).is_ok());
    let n = good.len();
    // Footer checksum mismatch.
    let mut t = good.clone();
    t[n - 512 + 48] ^= 0x40;
    match open(t).err() {
        Some(FormatError::Corrupt { detail, .. }) => {
            assert!(detail.contains("checksum"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // Truncated: the trailing footer and part of the last block are gone, so the copy at
    // offset 0 is used and the last block is past the end of the file.
    let t = good[..n - 4096].to_vec();
    assert!(matches!(open(t).err(), Some(FormatError::Corrupt { .. })));
    assert!(matches!(
        open(good[..100].to_vec()).err(),
        Some(FormatError::Truncated { .. })
    ));
    // A BAT entry past the end of the file.
    let dyn_at = u64::from_be_bytes(good[16..24].try_into().unwrap()) as usize;
    let bat_at = u64::from_be_bytes(good[dyn_at + 16..dyn_at + 24].try_into().unwrap()) as usize;
    let mut t = good.clone();
    t[bat_at..bat_at + 4].copy_from_slice(&0x00ff_ff00u32.to_be_bytes());
    match open(t).err() {
        Some(FormatError::Corrupt { detail, .. }) => {
            assert!(detail.contains("past the end"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // Differencing disk type.
    let mut t = good.clone();
    t[n - 512 + 63] = 4;
    let sum = !t[n - 512..]
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |a, (_, &b)| a.wrapping_add(b.into()));
    t[n - 512 + 64..n - 512 + 68].copy_from_slice(&sum.to_be_bytes());
    assert!(matches!(
        open(t).err(),
        Some(FormatError::Unsupported { .. })
    ));
}
