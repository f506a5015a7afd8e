//! Imports into the real platter store: the volume appears only when complete, is
//! byte-identical and sparse; failures leave no volume and no temporary; existing volumes
//! are refused and untouched; a store volume pushes and pulls back identically.

mod common;

use common::*;
use platter_importer::push::{push, PushOptions};
use platter_importer::{import, ImportError, ImportOptions, NoProgress, StoreSink};
use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};
use std::path::Path;

fn volume_bytes(store: &Store, name: &str) -> Vec<u8> {
    let v = store.open_volume(&VolumeRef::parse(name).unwrap()).unwrap();
    let mut buf = vec![0u8; v.size() as usize];
    v.read_at(&mut buf, 0).unwrap();
    buf
}

fn import_vol(
    store: &Store,
    source: &Path,
    name: &str,
    opts: &ImportOptions,
) -> Result<(), ImportError> {
    let sink = StoreSink::new(store, &Name::new(name).unwrap())?;
    import(source.to_str().unwrap(), sink, opts, &NoProgress).map(|_| ())
}

#[test]
fn import_into_store_and_push_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = Store::open(&d.join("store")).unwrap();
    let (raw, data) = make_raw(d, "disk.raw", 4 << 20, 41);
    let qcow = d.join("disk.qcow2");
    convert(&raw, &qcow, "qcow2", &[]);
    sh(&format!("gzip -k -1 {}", raw.display()));

    import_vol(&store, &qcow, "fromqcow", &ImportOptions::default()).unwrap();
    let info = store
        .inspect(&VolumeRef::parse("fromqcow").unwrap())
        .unwrap();
    assert_eq!(info.size, 4 << 20);
    assert!(
        info.allocated <= data + data / 8 + (256 << 10),
        "{info:?} for {data} data bytes"
    );
    assert_eq!(volume_bytes(&store, "fromqcow"), read(&raw));

    // A stream of unknown length grows the temporary volume as it goes.
    import_vol(
        &store,
        &d.join("disk.raw.gz"),
        "fromgz",
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(volume_bytes(&store, "fromgz"), read(&raw));

    // Existing name: refused up front, volume untouched.
    let e = import_vol(&store, &qcow, "fromqcow", &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, ImportError::InvalidDestination { .. }), "{e}");
    assert_eq!(volume_bytes(&store, "fromqcow"), read(&raw));

    // A failed import leaves neither a volume nor a temporary.
    let before = store.list().unwrap().len();
    let opts = ImportOptions {
        checksum: Some(format!("sha256:{}", "f".repeat(64)).parse().unwrap()),
        ..Default::default()
    };
    let e = import_vol(&store, &qcow, "bad", &opts).unwrap_err();
    assert!(matches!(e, ImportError::ChecksumMismatch { .. }), "{e}");
    assert_eq!(store.list().unwrap().len(), before);
    assert!(store.inspect(&VolumeRef::parse("bad").unwrap()).is_err());

    // Push the store volume as a containerDisk and import it back.
    let vol = store
        .open_volume(&VolumeRef::parse("fromqcow").unwrap())
        .unwrap();
    let lay = d.join("lay");
    push(
        &vol,
        &format!("oci:{}:v1", lay.display()),
        &PushOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let sink = StoreSink::new(&store, &Name::new("roundtrip").unwrap()).unwrap();
    import(
        &format!("oci:{}:v1", lay.display()),
        sink,
        &ImportOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(volume_bytes(&store, "roundtrip"), read(&raw));
}
