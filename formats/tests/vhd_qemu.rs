//! VHD against the real qemu-img: a raw disk with random data, holes and a written
//! zero region is converted to fixed and dynamic VHD (with qemu's CHS size rounding and
//! with `force_size`); `VhdImage` must read it back byte for byte, map the holes of a
//! dynamic disk as zero, and refuse hostile edits of a real image.

use platter_formats::readat::MemImage;
use platter_formats::vhd::VhdImage;
use platter_formats::{DiskImage, FormatError};
use std::path::Path;
use std::sync::Arc;

mod common;

use common::{check_bytes, check_map, convert, make_raw, open_file, MIB};

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
