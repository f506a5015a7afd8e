//! VDI against the real qemu-img: a raw disk with random data, holes and a written
//! zero region is converted to dynamic and static VDI; `VdiImage` must read it back
//! byte for byte and map the holes as zero. Also hostile edits of a real image.

use platter_formats::readat::MemImage;
use platter_formats::vdi::VdiImage;
use platter_formats::{DiskImage, FormatError};
use std::sync::Arc;

mod common;

use common::{check_bytes, check_map, convert, make_raw, open_file, MIB};

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
