//! VMDK against the real qemu-img: a raw disk with random data, holes and a written
//! zero region is converted to monolithicSparse and streamOptimized VMDK; `VmdkImage`
//! must read it back byte for byte, map the holes as zero, refuse the create types that
//! need other files, and refuse hostile edits of a real image.

use platter_formats::readat::MemImage;
use platter_formats::vmdk::VmdkImage;
use platter_formats::{DiskImage, FormatError};
use std::sync::Arc;

mod common;

use common::{check_bytes, check_map, convert, le64, make_raw, open_file};

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
