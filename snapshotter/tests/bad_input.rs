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

/// What the store says exists, to compare before and after a refused change.
fn listing(store: &Store) -> String {
    format!("{:?}", store.list().unwrap())
}

fn blob_names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");

fn set_format_version(dir: &Path, v: u64) {
    let db = redb::Database::open(dir.join("meta.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(META)
        .unwrap()
        .insert("format_version", v)
        .unwrap();
    tx.commit().unwrap();
}

fn format_version(dir: &Path) -> u64 {
    use redb::{ReadableDatabase, ReadableTable};
    let db = redb::Database::open(dir.join("meta.redb")).unwrap();
    let tx = db.begin_read().unwrap();
    let t = tx.open_table(META).unwrap();
    let v = t.get("format_version").unwrap().unwrap().value();
    v
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
    let before = listing(&store);
    let e = store.delete(&r("base@gold")).unwrap_err().to_string();
    assert!(e.contains("vm1") && e.contains("base@gold"), "{e}");
    let e = store.delete(&r("base")).unwrap_err().to_string();
    assert!(e.contains("vm1") && e.contains("vm2"), "{e}");
    assert_eq!(
        listing(&store),
        before,
        "a refused delete changed the store"
    );
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        listing(&store),
        before,
        "a refused delete changed the store"
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
    set_format_version(dir.path(), 3);
    let e = Store::open(dir.path()).err().unwrap();
    assert!(matches!(e, StoreError::NewerFormat { found: 3, .. }), "{e}");
    assert!(e.to_string().contains("upgrade platter"), "{e}");
    assert_eq!(format_version(dir.path()), 3, "the store was changed");
    set_format_version(dir.path(), 2);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn newer_v1_catalog_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_data(dir.path());
    let v1 = Store::open(dir.path()).unwrap().v1_catalog();
    std::fs::remove_file(dir.path().join("meta.redb")).unwrap();
    let text =
        String::from_utf8(v1)
            .unwrap()
            .replacen("PLATTER-CATALOG 1 ", "PLATTER-CATALOG 9 ", 1);
    std::fs::write(dir.path().join("catalog"), &text).unwrap();
    let e = Store::open(dir.path()).err().unwrap();
    assert!(matches!(e, StoreError::NewerFormat { found: 9, .. }), "{e}");
    assert_eq!(
        std::fs::read(dir.path().join("catalog")).unwrap(),
        text.as_bytes(),
        "the store was changed"
    );
    assert!(!dir.path().join("meta.redb").exists());
}

#[test]
fn truncated_or_flipped_v1_catalog_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    store_with_data(dir.path());
    let good = Store::open(dir.path()).unwrap().v1_catalog();
    std::fs::remove_file(dir.path().join("meta.redb")).unwrap();
    let blobs_before = blob_names(dir.path());
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
        assert_eq!(
            blob_names(dir.path()),
            blobs_before,
            "a damaged store was modified"
        );
        assert!(!dir.path().join("meta.redb").exists());
    }
}

#[test]
fn damaged_database_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    store_with_data(dir.path());
    let path = dir.path().join("meta.redb");
    let good = std::fs::read(&path).unwrap();
    let blobs_before = blob_names(dir.path());
    let before = listing(&Store::open(dir.path()).unwrap());
    let mut cases = vec![
        good[..good.len() / 2].to_vec(),
        good[..100].to_vec(),
        Vec::new(),
        vec![0xa5; good.len()],
    ];
    // Flips all over the file: in a page that is in use, damage; in free space, nothing.
    for i in 0..64 {
        let mut b = good.clone();
        let at = i * good.len() / 64 + 7;
        b[at] ^= 0x5a;
        cases.push(b);
    }
    let mut refused = 0;
    for bad in cases {
        std::fs::write(&path, &bad).unwrap();
        match Store::open(dir.path()) {
            Err(e) => {
                assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
                assert!(e.to_string().contains("meta.redb"), "{e}");
                assert_eq!(
                    blob_names(dir.path()),
                    blobs_before,
                    "a damaged store was modified"
                );
                refused += 1;
            }
            Ok(store) => assert_eq!(listing(&store), before, "damage was read as metadata"),
        }
    }
    eprintln!("{refused} of 68 damaged databases refused, the others read back intact");
    assert!(refused >= 4, "only {refused} damaged files were refused");
    std::fs::remove_file(&path).unwrap();
    let e = Store::open(dir.path()).err().unwrap();
    assert!(
        matches!(e, StoreError::Damaged { .. }),
        "a store whose metadata vanished must not start empty: {e}"
    );
    assert!(e.to_string().contains("meta.redb"), "{e}");
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

/// What someone else put in blobs/ (a stray file, an unknown directory) neither stops the
/// store from opening nor is deleted by it; an unreferenced blob directory of ours is.
#[test]
fn strangers_in_blobs_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("a"), 1 << 20).unwrap();
    drop(store);
    let blobs = dir.path().join("blobs");
    std::fs::write(blobs.join("README"), b"notes").unwrap();
    std::fs::create_dir(blobs.join("mine")).unwrap();
    std::fs::write(blobs.join("mine").join("keep"), b"x").unwrap();
    let orphan = format!("w-{}", "0".repeat(32));
    std::fs::create_dir(blobs.join(&orphan)).unwrap();
    std::fs::create_dir(blobs.join(format!("sha256-{}.tmp", "a".repeat(64)))).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
    store.gc().unwrap();
    let names: Vec<String> = blob_names(dir.path())
        .into_iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"README".to_string()), "{names:?}");
    assert!(names.contains(&"mine".to_string()), "{names:?}");
    assert_eq!(
        std::fs::read(blobs.join("mine").join("keep")).unwrap(),
        b"x"
    );
    assert!(!names.contains(&orphan), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    assert_eq!(names.len(), 3, "{names:?}");
}

/// The lock file is never reached through a symlink (it would write our pid elsewhere).
#[test]
fn a_symlinked_lock_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let elsewhere = dir.path().join("victim");
    std::fs::write(&elsewhere, b"precious").unwrap();
    let lock = dir.path().join("lock");
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &lock).unwrap();
    let Err(err) = Store::open(dir.path()) else {
        panic!("opened through a symlink");
    };
    assert!(err.to_string().contains("lock"), "{err}");
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"precious");
}
