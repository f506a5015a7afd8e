//! The NoCloud seed ISO as cloud-init reads it: label `cidata`, `user-data` and
//! `meta-data` at the root (checked with isoinfo from genisoimage).

use std::process::Command;

use platter_launcher::cloudinit::{build_seed_iso_from_file, build_seed_iso_with, SEED_LABEL};
use platter_types::Name;

fn isoinfo(args: &[&str]) -> String {
    let out = Command::new("isoinfo")
        .args(args)
        .output()
        .expect("isoinfo (genisoimage) installed");
    assert!(
        out.status.success(),
        "isoinfo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn seed_iso_has_label_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let ud = dir.path().join("user-data.yaml");
    let user_data = "#cloud-config\nusers:\n  - name: demo\n";
    std::fs::write(&ud, user_data).unwrap();
    let iso = dir.path().join("seed.iso");
    build_seed_iso_from_file(&Name::new("web-1").unwrap(), &ud, &iso).unwrap();
    // A second build replaces the first.
    build_seed_iso_from_file(&Name::new("web-1").unwrap(), &ud, &iso).unwrap();

    let iso = iso.to_str().unwrap();
    let desc = isoinfo(&["-d", "-i", iso]);
    assert!(desc.contains(&format!("Volume id: {SEED_LABEL}")), "{desc}");
    assert_eq!(isoinfo(&["-R", "-i", iso, "-x", "/user-data"]), user_data);
    assert_eq!(
        isoinfo(&["-R", "-i", iso, "-x", "/meta-data"]),
        "instance-id: web-1\nlocal-hostname: web-1\n"
    );
    // No staging directory is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        !isoinfo(&["-R", "-l", "-i", iso]).contains("network-config"),
        "no network-config unless given"
    );

    // With network data: a `network-config` file beside the other two.
    let net = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n";
    let iso2 = dir.path().join("seed2.iso");
    build_seed_iso_with(
        &Name::new("web-2").unwrap(),
        user_data.as_bytes(),
        Some(net.as_bytes()),
        &iso2,
    )
    .unwrap();
    let iso2 = iso2.to_str().unwrap();
    assert_eq!(isoinfo(&["-R", "-i", iso2, "-x", "/network-config"]), net);
    assert_eq!(isoinfo(&["-R", "-i", iso2, "-x", "/user-data"]), user_data);
}
