//! The metadata database: migration from format 1 (also when a crash cuts it short),
//! records, a volume change and its records committed together or not at all, and a store
//! of 10,000 objects.

use std::path::Path;
use std::process::Command;

use platter_snapshotter::{RecordChange, Store, StoreError, VM_KIND};
use platter_types::{Name, VolumeRef};
use sha2::{Digest, Sha256};

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn r(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

fn blob_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs")).unwrap().count()
}

fn read_all(store: &Store, name: &str) -> Vec<u8> {
    let v = store.open_volume(&r(name)).unwrap();
    let mut buf = vec![0u8; v.size() as usize];
    v.read_at(&mut buf, 0).unwrap();
    buf
}

/// What the store says exists and what every object reads.
/// Per object: name, size, origin, clones, contents.
type State = Vec<(String, u64, Option<String>, Vec<String>, Vec<u8>)>;

fn state(store: &Store) -> State {
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| {
            let data = read_all(store, &i.name);
            (i.name, i.size, i.origin, i.clones, data)
        })
        .collect()
}

const SIZE: u64 = 1 << 20;

/// A store with a bit of everything: data, snapshots, clones of both kinds, sealed
/// layers, and an import in progress (`t`, returned so it stays open).
fn rich_store(dir: &Path) -> Store {
    let store = Store::open(dir).unwrap();
    store.create_volume(&n("base"), SIZE).unwrap();
    let v = store.open_volume(&r("base")).unwrap();
    v.write_at(&[1u8; 8192], 0).unwrap();
    store.snapshot(&n("base"), &n("gold")).unwrap();
    v.write_at(&[2u8; 4096], 4096).unwrap();
    store.clone_volume(&r("base@gold"), &n("vm1")).unwrap();
    store
        .open_volume(&r("vm1"))
        .unwrap()
        .write_at(&[3u8; 4096], 65536)
        .unwrap();
    store.clone_volume(&r("base"), &n("c2")).unwrap();
    store.gc().unwrap();
    v.write_at(&[4u8; 100], 200_000).unwrap();
    v.flush().unwrap();
    store.create_volume(&n("empty"), 4096).unwrap();
    for vol in ["vm1", "c2"] {
        store.open_volume(&r(vol)).unwrap().flush().unwrap();
    }
    store
}

/// Turns a store (closed) into the format 1 layout: `catalog` and `vms/*.json`.
fn make_v1(dir: &Path, catalog: &[u8], vms: &[(&str, serde_json::Value)]) {
    std::fs::remove_file(dir.join("meta.redb")).unwrap();
    std::fs::write(dir.join("catalog"), catalog).unwrap();
    let vm_dir = dir.join("vms");
    std::fs::create_dir_all(&vm_dir).unwrap();
    for (name, rec) in vms {
        std::fs::write(
            vm_dir.join(format!("{name}.json")),
            serde_json::to_vec_pretty(rec).unwrap(),
        )
        .unwrap();
    }
    // Files that are not records stay where they are.
    std::fs::write(vm_dir.join("vm1.console.log"), b"boot\n").unwrap();
    std::fs::write(vm_dir.join(".vm9.json.tmp"), b"{").unwrap();
}

fn check_migrated(dir: &Path, before: &State) {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("open after migration: {e}"));
    assert_eq!(&state(&store), before);
    assert_eq!(store.get_record(VM_KIND, "vm1").unwrap()["disks"][0], "vm1");
    let names: Vec<String> = store
        .list_records(VM_KIND)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(names, ["vm1", "vm2"]);
    assert!(dir.join("meta.redb").exists());
    for gone in [
        "catalog",
        "catalog.tmp",
        "meta.redb.tmp",
        "vms/vm1.json",
        "vms/vm2.json",
    ] {
        assert!(!dir.join(gone).exists(), "{gone} is still there");
    }
    assert!(dir.join("vms/vm1.console.log").exists());
    // The store goes on working: writes, snapshots and deletes.
    store.snapshot(&n("vm1"), &n("after")).unwrap();
    store.delete(&r("c2")).unwrap();
    drop(store);
    let store = Store::open(dir).unwrap();
    assert!(store.inspect(&r("vm1@after")).is_ok());
}

fn vm_records() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("vm1", serde_json::json!({"name": "vm1", "disks": ["vm1"]})),
        ("vm2", serde_json::json!({"name": "vm2", "disks": []})),
    ]
}

/// A v1 store with everything in it, as a crash left it (an import in flight); returns
/// what it holds.
fn v1_store(dir: &Path) -> State {
    let src = tempfile::tempdir().unwrap();
    let store = rich_store(src.path());
    let t = store.create_temp_volume(SIZE).unwrap();
    t.write_at(&[9u8; 4096], 0).unwrap();
    t.flush().unwrap();
    let before = state(&store);
    let v1 = store.v1_catalog();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.path().display()))
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(dir.join("lock")).unwrap();
    drop(t);
    drop(store);
    make_v1(dir, &v1, &vm_records());
    before
}

#[test]
fn v1_store_migrates_with_everything_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let before = v1_store(dir.path());
    let blobs_with_import = blob_count(dir.path());
    check_migrated(dir.path(), &before);
    assert!(
        blob_count(dir.path()) < blobs_with_import,
        "the import was not removed"
    );
}

/// The v1 format exactly as platter 1 wrote it, typed out here rather than produced by
/// the encoder this crate keeps.
#[test]
fn hand_written_v1_catalog_migrates() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.create_volume(&n("disk"), SIZE).unwrap();
        let v = store.open_volume(&r("disk")).unwrap();
        v.write_at(&[7u8; 4096], 8192).unwrap();
        v.flush().unwrap();
    }
    let blob = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let id = blob.strip_prefix("w-").unwrap();
    let body = format!(
        r#"{{
  "version": 1,
  "generation": 7,
  "layers": {{ "{id}": {{ "parent": null, "blob": "{blob}", "created": 1700000000 }} }},
  "volumes": {{ "disk": {{ "size": {SIZE}, "top": "{id}", "created": 1700000000, "origin": null }} }},
  "snapshots": {{}}
}}"#
    );
    let sum = hex::encode(Sha256::digest(body.as_bytes()));
    let file = format!("PLATTER-CATALOG 1 {sum}\n{body}");
    std::fs::remove_file(dir.path().join("meta.redb")).unwrap();
    std::fs::write(dir.path().join("catalog"), file).unwrap();
    let vms = dir.path().join("vms");
    std::fs::create_dir_all(&vms).unwrap();
    std::fs::write(vms.join("a.json"), br#"{"name":"a","disks":["disk"]}"#).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let info = store.inspect(&r("disk")).unwrap();
    assert_eq!((info.size, info.created), (SIZE, 1_700_000_000));
    let data = read_all(&store, "disk");
    assert_eq!(&data[8192..12288], &[7u8; 4096][..]);
    assert!(data[..8192].iter().all(|&b| b == 0));
    assert_eq!(store.get_record(VM_KIND, "a").unwrap()["disks"][0], "disk");
    assert!(!dir.path().join("catalog").exists());
}

#[test]
fn a_damaged_v1_vm_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = rich_store(dir.path()).v1_catalog();
    make_v1(dir.path(), &v1, &[]);
    std::fs::write(dir.path().join("vms/bad.json"), b"{broken").unwrap();
    let e = Store::open(dir.path()).err().unwrap();
    assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("bad.json"), "{e}");
    assert!(dir.path().join("catalog").exists());
    assert!(!dir.path().join("meta.redb").exists());
}

/// The child: opens the store given, to be killed at the crash point named.
#[test]
fn migration_child() {
    let Ok(dir) = std::env::var("PLATTER_MIGRATE_DIR") else {
        return;
    };
    let _ = Store::open(dir.as_ref());
    // Reaching here means the crash point was not hit.
    std::process::exit(3);
}

fn run_child(exe: &Path, dir: &Path, env: (&str, &str)) -> Option<i32> {
    let status = Command::new(exe)
        .args([
            "--exact",
            "migration_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PLATTER_MIGRATE_DIR", dir)
        .env(env.0, env.1)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    status.code()
}

#[test]
fn a_crash_at_any_step_of_the_migration_leaves_a_store_that_opens() {
    let exe = std::env::current_exe().unwrap();
    for point in [
        "migrate-before-commit",
        "migrate-before-rename",
        "migrate-after-rename",
        "migrate-after-records",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let before = v1_store(dir.path());
        let code = run_child(&exe, dir.path(), ("PLATTER_FAILPOINT", point));
        assert_ne!(code, Some(3), "{point}: the crash point was never reached");
        assert_ne!(code, Some(0), "{point}: the child did not crash");
        let _ = std::fs::remove_file(dir.path().join("lock"));
        check_migrated(dir.path(), &before);
    }
    // A half-written database under the temporary name (a crash inside redb's writes).
    let dir = tempfile::tempdir().unwrap();
    let before = v1_store(dir.path());
    std::fs::write(dir.path().join("meta.redb.tmp"), vec![0x42; 12345]).unwrap();
    check_migrated(dir.path(), &before);
}

#[test]
fn records_are_kept_by_kind_and_name_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .put_record("vm", "b", &serde_json::json!({"n": 1}))
            .unwrap();
        store
            .put_record("vm", "a", &serde_json::json!({"n": 2}))
            .unwrap();
        store
            .put_record("DataVolume", "default/a", &serde_json::json!({"spec": {}}))
            .unwrap();
        store
            .put_record("vm", "b", &serde_json::json!({"n": 3}))
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let vms = store.list_records("vm").unwrap();
    assert_eq!(
        vms,
        vec![
            ("a".to_string(), serde_json::json!({"n": 2})),
            ("b".to_string(), serde_json::json!({"n": 3})),
        ]
    );
    assert_eq!(store.list_records("DataVolume").unwrap().len(), 1);
    assert!(store.list_records("Other").unwrap().is_empty());
    store.delete_record("vm", "a").unwrap();
    let e = store.get_record("vm", "a").unwrap_err();
    assert!(matches!(e, StoreError::NoSuchRecord { .. }), "{e}");
    assert_eq!(e.to_string(), "vm a does not exist");
    assert!(matches!(
        store.delete_record("vm", "a"),
        Err(StoreError::NoSuchRecord { .. })
    ));
    for (kind, name) in [("", "x"), ("vm", ""), ("v m", "x"), ("vm", "a\nb")] {
        let e = store
            .put_record(kind, name, &serde_json::json!({}))
            .unwrap_err();
        assert!(matches!(e, StoreError::BadRecord { .. }), "{e}");
    }
    let huge = serde_json::Value::String("x".repeat(5 << 20));
    assert!(matches!(
        store.put_record("vm", "huge", &huge),
        Err(StoreError::BadRecord { .. })
    ));
    // Several changes: all or none.
    let e = store
        .change_records(&[
            RecordChange::Put {
                kind: "vm".into(),
                name: "c".into(),
                value: serde_json::json!(1),
            },
            RecordChange::Delete {
                kind: "vm".into(),
                name: "missing".into(),
            },
        ])
        .unwrap_err();
    assert!(matches!(e, StoreError::NoSuchRecord { .. }), "{e}");
    assert!(store.get_record("vm", "c").is_err());
}

fn create(name: &str) -> RecordChange {
    RecordChange::Create {
        kind: VM_KIND.into(),
        name: name.into(),
        value: serde_json::json!({"name": name, "disks": [name]}),
    }
}

fn delete(name: &str) -> RecordChange {
    RecordChange::Delete {
        kind: VM_KIND.into(),
        name: name.into(),
    }
}

#[test]
fn a_vm_and_its_disk_change_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = rich_store(dir.path());
    // Both.
    store
        .clone_volume_with(&r("base@gold"), &n("web"), &[create("web")])
        .unwrap();
    assert!(store.inspect(&r("web")).is_ok());
    assert!(store.get_record(VM_KIND, "web").is_ok());
    // The record part fails after the volume part was staged: neither.
    let blobs = blob_count(dir.path());
    let e = store
        .clone_volume_with(&r("base@gold"), &n("web2"), &[create("web")])
        .unwrap_err();
    assert!(matches!(e, StoreError::Exists(_)), "{e}");
    assert!(matches!(
        store.inspect(&r("web2")),
        Err(StoreError::NoSuchVolume(_))
    ));
    assert_eq!(
        blob_count(dir.path()),
        blobs,
        "a blob of the refused clone stayed"
    );
    // The same through the freezing path, with the source open and written.
    let before = read_all(&store, "base");
    let v = store.open_volume(&r("base")).unwrap();
    let e = store
        .clone_volume_with(&r("base"), &n("web3"), &[create("web")])
        .unwrap_err();
    assert!(matches!(e, StoreError::Exists(_)), "{e}");
    assert!(store.inspect(&r("web3")).is_err());
    v.write_at(&[8u8; 4096], 0).unwrap();
    let mut after = before.clone();
    after[..4096].fill(8);
    assert_eq!(read_all(&store, "base"), after);
    let e = store
        .snapshot_with(&n("base"), &n("s2"), &[delete("nope")])
        .unwrap_err();
    assert!(matches!(e, StoreError::NoSuchRecord { .. }), "{e}");
    assert!(store.inspect(&r("base@s2")).is_err());
    assert_eq!(blob_count(dir.path()), blobs);
    // Delete: the record is missing, so the disk stays.
    let e = store
        .delete_with(&r("web"), &[delete("other")])
        .unwrap_err();
    assert!(matches!(e, StoreError::NoSuchRecord { .. }), "{e}");
    assert!(store.inspect(&r("web")).is_ok());
    store.delete_with(&r("web"), &[delete("web")]).unwrap();
    assert!(store.inspect(&r("web")).is_err());
    assert!(store.get_record(VM_KIND, "web").is_err());
    drop(v);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.inspect(&r("web")).is_err() && store.inspect(&r("web2")).is_err());
    assert!(store.list_records(VM_KIND).unwrap().is_empty());
    assert_eq!(read_all(&store, "base"), after);
}

/// The child: clones with a record, to be killed between the two parts.
#[test]
fn atomic_child() {
    let Ok(dir) = std::env::var("PLATTER_ATOMIC_DIR") else {
        return;
    };
    let store = Store::open(dir.as_ref()).unwrap();
    let _ = store.clone_volume_with(&r("base"), &n("web"), &[create("web")]);
    std::process::exit(3);
}

#[test]
fn a_crash_between_the_disk_and_the_record_leaves_neither() {
    let exe = std::env::current_exe().unwrap();
    for point in ["meta-between-volumes-and-records", "meta-before-commit"] {
        let dir = tempfile::tempdir().unwrap();
        let before = state(&rich_store(dir.path()));
        let status = Command::new(&exe)
            .args(["--exact", "atomic_child", "--nocapture", "--test-threads=1"])
            .env("PLATTER_ATOMIC_DIR", dir.path())
            .env("PLATTER_FAILPOINT", point)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!matches!(status.code(), Some(0 | 3)), "{point}: {status}");
        let _ = std::fs::remove_file(dir.path().join("lock"));
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(state(&store), before, "{point}");
        assert!(store.get_record(VM_KIND, "web").is_err(), "{point}");
    }
}

/// 10,000 volumes (and their layers), written as a v1 catalog by hand so that making
/// them costs no 10,000 commits: the migration, the open and each operation stay quick.
#[test]
fn a_store_of_ten_thousand_objects_opens_and_works() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let mut layers = serde_json::Map::new();
    let mut volumes = serde_json::Map::new();
    for i in 0..10_000u32 {
        let id = format!("{i:032x}");
        layers.insert(
            id.clone(),
            serde_json::json!({"parent": null, "blob": format!("w-{id}"), "created": 1}),
        );
        volumes.insert(
            format!("v{i}"),
            serde_json::json!({"size": 4096, "top": id, "created": 1, "origin": null}),
        );
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "version": 1, "generation": 1, "layers": layers, "volumes": volumes, "snapshots": {}
    }))
    .unwrap();
    let mut file =
        format!("PLATTER-CATALOG 1 {}\n", hex::encode(Sha256::digest(&body))).into_bytes();
    file.extend_from_slice(&body);
    std::fs::remove_file(dir.path().join("meta.redb")).unwrap();
    std::fs::write(dir.path().join("catalog"), file).unwrap();
    let t0 = std::time::Instant::now();
    drop(Store::open(dir.path()).unwrap());
    let migrate = t0.elapsed();
    let t0 = std::time::Instant::now();
    let store = Store::open(dir.path()).unwrap();
    let open = t0.elapsed();
    eprintln!("10,000 volumes: migration {migrate:?}, open {open:?}");
    assert!(open.as_secs() < 10, "open took {open:?}");
    assert_eq!(store.list().unwrap().len(), 10_000);
    let t0 = std::time::Instant::now();
    store.create_volume(&n("new"), SIZE).unwrap();
    store.snapshot(&n("new"), &n("s")).unwrap();
    store.clone_volume(&r("new@s"), &n("c")).unwrap();
    store.delete(&r("c")).unwrap();
    store.delete(&r("new")).unwrap();
    store.delete(&r("v42")).unwrap();
    let ops = t0.elapsed();
    eprintln!("six operations among 10,000 volumes: {ops:?}");
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.list().unwrap().len(), 9_999);
    assert!(store.inspect(&r("v42")).is_err());
}

#[test]
fn several_disks_are_snapshotted_at_one_instant_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = rich_store(dir.path());
    store.create_volume(&n("data"), SIZE).unwrap();
    let (root, data) = (
        store.open_volume(&r("vm1")).unwrap(),
        store.open_volume(&r("data")).unwrap(),
    );
    root.write_at(&[5u8; 4096], 0).unwrap();
    data.write_at(&[6u8; 4096], 0).unwrap();
    let pair = [(n("vm1"), n("snap")), (n("data"), n("snap"))];
    // A refused record change: no snapshot of either, both disks keep working.
    let blobs = blob_count(dir.path());
    let e = store.snapshot_many(&pair, &[delete("nope")]).unwrap_err();
    assert!(matches!(e, StoreError::NoSuchRecord { .. }), "{e}");
    assert!(store.inspect(&r("vm1@snap")).is_err() && store.inspect(&r("data@snap")).is_err());
    assert_eq!(blob_count(dir.path()), blobs);
    let twice = [(n("data"), n("a")), (n("data"), n("b"))];
    assert!(store.snapshot_many(&twice, &[]).is_err());
    assert!(store.inspect(&r("data@a")).is_err());
    // Both, with the record, then writes after the instant stay out of the snapshots.
    let rec = RecordChange::Put {
        kind: "VirtualMachineSnapshot".into(),
        name: "vm1-snap".into(),
        value: serde_json::json!({"disks": ["vm1@snap", "data@snap"]}),
    };
    let infos = store.snapshot_many(&pair, &[rec]).unwrap();
    assert_eq!(infos.len(), 2);
    root.write_at(&[7u8; 4096], 0).unwrap();
    data.write_at(&[8u8; 4096], 0).unwrap();
    drop((root, data));
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(&read_all(&store, "vm1@snap")[..4096], &[5u8; 4096][..]);
    assert_eq!(&read_all(&store, "data@snap")[..4096], &[6u8; 4096][..]);
    assert_eq!(&read_all(&store, "vm1")[..4096], &[7u8; 4096][..]);
    assert_eq!(&read_all(&store, "data")[..4096], &[8u8; 4096][..]);
    assert!(store
        .get_record("VirtualMachineSnapshot", "vm1-snap")
        .is_ok());
}

#[test]
fn several_disks_roll_back_together_and_only_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("root"), SIZE).unwrap();
    store.create_volume(&n("data"), SIZE).unwrap();
    {
        let (root, data) = (
            store.open_volume(&r("root")).unwrap(),
            store.open_volume(&r("data")).unwrap(),
        );
        root.write_at(&[1u8; 4096], 0).unwrap();
        data.write_at(&[2u8; 4096], 0).unwrap();
        let pair = [(n("root"), n("s1")), (n("data"), n("s1"))];
        store.snapshot_many(&pair, &[]).unwrap();
        root.write_at(&[3u8; 4096], 0).unwrap();
        data.write_at(&[4u8; 4096], 4096).unwrap();
        store.snapshot(&n("root"), &n("s2")).unwrap();
        root.write_at(&[5u8; 4096], 0).unwrap();
        // Open volumes are not rolled back: their clients would see the disk change.
        let e = store.rollback_many(&pair, &[]).unwrap_err();
        assert!(matches!(e, StoreError::Open(ref v) if v == "root"), "{e}");
        assert_eq!(&read_all(&store, "root")[..4096], &[5u8; 4096][..]);
    }
    // One missing snapshot refuses the whole rollback, with its record.
    let blobs = blob_count(dir.path());
    let bad = [(n("root"), n("s1")), (n("data"), n("s2"))];
    let e = store.rollback_many(&bad, &[]).unwrap_err();
    assert!(
        matches!(e, StoreError::NoSuchSnapshot(ref s) if s == "data@s2"),
        "{e}"
    );
    let pair = [(n("root"), n("s1")), (n("data"), n("s1"))];
    let e = store.rollback_many(&pair, &[delete("nope")]).unwrap_err();
    assert!(matches!(e, StoreError::NoSuchRecord { .. }), "{e}");
    assert_eq!(blob_count(dir.path()), blobs);
    assert_eq!(&read_all(&store, "root")[..4096], &[5u8; 4096][..]);
    assert_eq!(&read_all(&store, "data")[4096..8192], &[4u8; 4096][..]);
    // Both at once; the later snapshot keeps what it had; it survives a reopen.
    let rec = RecordChange::Put {
        kind: "VirtualMachineRestore".into(),
        name: "r1".into(),
        value: serde_json::json!({"complete": true}),
    };
    store.rollback_many(&pair, &[rec]).unwrap();
    assert_eq!(&read_all(&store, "root")[..4096], &[1u8; 4096][..]);
    assert_eq!(&read_all(&store, "data")[4096..8192], &[0u8; 4096][..]);
    assert_eq!(&read_all(&store, "root@s2")[..4096], &[3u8; 4096][..]);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(&read_all(&store, "root")[..4096], &[1u8; 4096][..]);
    assert_eq!(&read_all(&store, "data")[..4096], &[2u8; 4096][..]);
    assert_eq!(&read_all(&store, "root@s2")[..4096], &[3u8; 4096][..]);
    assert!(store.get_record("VirtualMachineRestore", "r1").is_ok());
    // The rolled-back volumes take writes again, and the space of the dropped tops is
    // given back (one blob per live layer).
    store
        .open_volume(&r("root"))
        .unwrap()
        .write_at(&[9u8; 4096], 0)
        .unwrap();
    assert_eq!(&read_all(&store, "root")[..4096], &[9u8; 4096][..]);
    assert_eq!(&read_all(&store, "root@s1")[..4096], &[1u8; 4096][..]);
    assert!(store.gc().is_ok());
}

/// A VM with no disks to keep (only containerDisks) is snapshotted and restored with its
/// records alone: an empty set of volumes commits the records.
#[test]
fn snapshot_and_rollback_of_no_volumes_commit_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let put = |name: &str| RecordChange::Put {
        kind: "VirtualMachineSnapshot".into(),
        name: name.into(),
        value: serde_json::json!({ "n": name }),
    };
    store.snapshot_many(&[], &[put("a")]).unwrap();
    store.rollback_many(&[], &[put("b")]).unwrap();
    assert_eq!(
        store.get_record("VirtualMachineSnapshot", "a").unwrap(),
        serde_json::json!({ "n": "a" })
    );
    assert_eq!(
        store.get_record("VirtualMachineSnapshot", "b").unwrap(),
        serde_json::json!({ "n": "b" })
    );
}

/// The database holds Secrets (declarative records): only its owner may read it, also in
/// a store made before that rule (tightened on open).
#[test]
fn the_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("s");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let db = dir.join("meta.redb");
    drop(Store::open(&dir).unwrap());
    assert_eq!(mode(&db), 0o600);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(Store::open(&dir).unwrap());
    assert_eq!(mode(&db), 0o600);
}

/// Every file of a store, by path, with its contents' hash.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let h = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
                out.push((p.display().to_string(), h));
            }
        }
    }
    out.sort();
    out
}

/// `Store::open_read_only` (a store on a read-only mount, or another user's): it reads
/// every volume, snapshot and record as the writer left them, refuses every change, writes
/// no file, and shares the store with other readers but not with a writer.
#[test]
fn a_store_opened_read_only_reads_everything_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("s");
    let store = rich_store(&dir);
    store
        .put_record(VM_KIND, "web", &serde_json::json!({"memory": 1}))
        .unwrap();
    let before = state(&store);
    let locked = Store::open_read_only(&dir).unwrap_err();
    assert!(matches!(locked, StoreError::Locked { .. }), "{locked}");
    drop(store);
    let on_disk = files(&dir);

    let ro = Store::open_read_only(&dir).unwrap();
    let other = Store::open_read_only(&dir).unwrap();
    assert!(ro.is_read_only());
    assert_eq!(state(&ro), before);
    assert_eq!(state(&other), before);
    assert_eq!(
        ro.get_record(VM_KIND, "web").unwrap(),
        serde_json::json!({"memory": 1})
    );
    let refused = |e: StoreError| {
        assert!(matches!(e, StoreError::StoreReadOnly { .. }), "{e}");
        assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
    };
    refused(ro.create_volume(&n("new"), SIZE).unwrap_err());
    refused(ro.snapshot(&n("base"), &n("s9")).unwrap_err());
    refused(ro.clone_volume(&r("base@gold"), &n("c9")).unwrap_err());
    refused(ro.resize(&n("base"), 2 * SIZE).unwrap_err());
    refused(ro.delete(&r("vm1")).unwrap_err());
    refused(
        ro.put_record(VM_KIND, "db", &serde_json::json!({}))
            .unwrap_err(),
    );
    refused(ro.gc().unwrap_err());
    let v = ro.open_volume(&r("base")).unwrap();
    assert!(v.write_at(&[9u8; 4096], 0).is_err());
    let w = Store::open(&dir).unwrap_err();
    assert!(matches!(w, StoreError::Locked { .. }), "{w}");
    drop((v, ro, other));
    assert_eq!(files(&dir), on_disk, "a read-only open changed the store");
    assert_eq!(state(&Store::open(&dir).unwrap()), before);
}
