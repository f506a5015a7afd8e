//! Bad input: invalid sizes, deleting what clones depend on, shrinking, a second process,
//! a newer format, and damaged metadata. Each is a clear error and changes nothing.

use std::path::Path;

use platter_snapshotter::{Store, StoreError};
use platter_types::{Name, VolumeRef};

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn r(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

fn catalog_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("catalog")).unwrap()
}

#[test]
fn invalid_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for size in [0, 1000, 1 << 60] {
        let e = store.create_volume(&n("v"), size).unwrap_err();
        assert!(matches!(e, StoreError::BadSize { .. }), "{e}");
        assert!(e.to_string().contains('v'), "{e}");
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn dependants_block_delete_and_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("base"), 1 << 20).unwrap();
    store.snapshot(&n("base"), &n("gold")).unwrap();
    store.clone_volume(&r("base@gold"), &n("vm1")).unwrap();
    store.clone_volume(&r("base"), &n("vm2")).unwrap();
    let before = catalog_bytes(dir.path());
    let e = store.delete(&r("base@gold")).unwrap_err().to_string();
    assert!(e.contains("vm1") && e.contains("base@gold"), "{e}");
    let e = store.delete(&r("base")).unwrap_err().to_string();
    assert!(e.contains("vm1") && e.contains("vm2"), "{e}");
    assert_eq!(
        catalog_bytes(dir.path()),
        before,
        "a refused delete changed the catalog"
    );
    store.delete(&r("vm1")).unwrap();
    store.delete(&r("base@gold")).unwrap();
    store.delete(&r("vm2")).unwrap();
    store.delete(&r("base")).unwrap();
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn shrinking_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("v"), 1 << 20).unwrap();
    let e = store.resize(&n("v"), 1 << 19).unwrap_err();
    assert!(matches!(e, StoreError::Shrink { .. }), "{e}");
    assert_eq!(store.inspect(&r("v")).unwrap().size, 1 << 20);
    assert!(matches!(
        store.resize(&n("nope"), 1 << 20),
        Err(StoreError::NoSuchVolume(_))
    ));
}

#[test]
fn duplicates_and_missing_objects_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("v"), 1 << 20).unwrap();
    assert!(store
        .create_volume(&n("v"), 1 << 20)
        .unwrap_err()
        .to_string()
        .contains("volume v"));
    store.snapshot(&n("v"), &n("s")).unwrap();
    assert!(store
        .snapshot(&n("v"), &n("s"))
        .unwrap_err()
        .to_string()
        .contains("v@s"));
    assert!(store
        .open_volume(&r("v@nope"))
        .unwrap_err()
        .to_string()
        .contains("v@nope"));
    assert!(store
        .open_volume(&r("nope"))
        .unwrap_err()
        .to_string()
        .contains("nope"));
    let e = store
        .open_volume(&r("v@s"))
        .unwrap()
        .write_at(b"x", 0)
        .unwrap_err();
    assert!(matches!(e, StoreError::ReadOnly(_)), "{e}");
    let e = store
        .open_volume(&r("v"))
        .unwrap()
        .write_at(b"x", 1 << 20)
        .unwrap_err();
    assert!(matches!(e, StoreError::OutOfRange { .. }), "{e}");
}

#[test]
fn a_second_opener_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    let e = Store::open(dir.path()).err().unwrap();
    assert!(matches!(e, StoreError::Locked { pid: Some(_), .. }), "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
}

fn store_with_data(dir: &Path) {
    let store = Store::open(dir).unwrap();
    store.create_volume(&n("v"), 1 << 20).unwrap();
    let v = store.open_volume(&r("v")).unwrap();
    v.write_at(&[7u8; 8192], 0).unwrap();
    v.flush().unwrap();
}

#[test]
fn newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_data(dir.path());
    let text = String::from_utf8(catalog_bytes(dir.path()))
        .unwrap()
        .replacen("PLATTER-CATALOG 1 ", "PLATTER-CATALOG 2 ", 1);
    std::fs::write(dir.path().join("catalog"), &text).unwrap();
    let e = Store::open(dir.path()).err().unwrap();
    assert!(matches!(e, StoreError::NewerFormat { found: 2, .. }), "{e}");
    assert_eq!(
        catalog_bytes(dir.path()),
        text.as_bytes(),
        "the store was changed"
    );
}

#[test]
fn truncated_or_flipped_catalog_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    store_with_data(dir.path());
    let good = catalog_bytes(dir.path());
    let blobs_before: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut cases = vec![good[..good.len() / 2].to_vec(), Vec::new()];
    for at in [0, 20, good.len() / 2, good.len() - 2] {
        let mut b = good.clone();
        b[at] ^= 0x10;
        cases.push(b);
    }
    for bad in cases {
        std::fs::write(dir.path().join("catalog"), &bad).unwrap();
        let e = Store::open(dir.path()).err().unwrap();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("catalog"), "{e}");
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(blobs, blobs_before, "a damaged store was modified");
    }
    std::fs::remove_file(dir.path().join("catalog")).unwrap();
    let e = Store::open(dir.path()).err().unwrap();
    assert!(
        matches!(e, StoreError::Damaged { .. }),
        "a store whose catalog vanished must not start empty: {e}"
    );
}

#[test]
fn flipped_committed_journal_record_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    store_with_data(dir.path());
    let blob = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let journal = blob.join("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[8192 + 9] ^= 1;
    std::fs::write(&journal, &bytes).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let e = store.open_volume(&r("v")).err().unwrap();
    assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("journal"), "{e}");
    // Both header slots broken: damaged too.
    bytes[8192 + 9] ^= 1;
    bytes[3] ^= 1;
    bytes[4096 + 3] ^= 1;
    std::fs::write(&journal, &bytes).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(matches!(
        store.open_volume(&r("v")),
        Err(StoreError::Damaged { .. })
    ));
}
