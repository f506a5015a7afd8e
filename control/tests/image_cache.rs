//! The image cache records what an image is (ISO or disk) when its base is made, in the
//! base's own transaction, and answers from that record afterwards (nothing reads the
//! volume, or speaks NBD, to find out again).

use std::process::Command;

use platter_control::api::RegistryParams;
use platter_control::vm::ensure_image;
use platter_importer::CancelFlag;
use platter_launcher::probe::Content;
use platter_snapshotter::{RecordChange, Store};

fn cache(store: &Store, source: &str) -> platter_control::vm::CachedImage {
    ensure_image(
        store,
        None,
        source,
        &RegistryParams::default(),
        CancelFlag::new(),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn what_an_image_is_is_recorded_with_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("root")).unwrap();
    std::fs::write(d.join("root/hello.txt"), "on the cd\n").unwrap();
    let iso = d.join("cd.iso");
    let status = Command::new("genisoimage")
        .args(["-quiet", "-r", "-o"])
        .arg(&iso)
        .arg(d.join("root"))
        .status()
        .expect("genisoimage (scripts/install.sh)");
    assert!(status.success());
    let disk = d.join("disk.raw");
    std::fs::write(&disk, vec![7u8; 1 << 20]).unwrap();
    let store = Store::open(&d.join("store")).unwrap();

    let cd = cache(&store, iso.to_str().unwrap());
    assert_eq!(cd.content, Content::Iso);
    let hd = cache(&store, disk.to_str().unwrap());
    assert_eq!(hd.content, Content::Disk);
    let name = cd.base.volume.to_string();
    let rec = store.get_record("image", &name).unwrap();
    assert_eq!(rec["content"], "iso", "{rec}");
    assert_eq!(rec["source"], iso.to_str().unwrap(), "{rec}");

    // Asked again, the record answers (changed here to show it is what is read).
    let mut changed = rec.clone();
    changed["content"] = "disk".into();
    let put = RecordChange::Put {
        kind: "image".into(),
        name: name.clone(),
        value: changed,
    };
    store.change_records(&[put]).unwrap();
    assert_eq!(cache(&store, iso.to_str().unwrap()).content, Content::Disk);
    // A base cached before records existed is read from its bytes.
    let del = RecordChange::Delete {
        kind: "image".into(),
        name,
    };
    store.change_records(&[del]).unwrap();
    assert_eq!(cache(&store, iso.to_str().unwrap()).content, Content::Iso);
}
