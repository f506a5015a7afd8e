//! `probe::export_content` against a real NBD server (`qemu-nbd`): an ISO made by
//! genisoimage is an ISO, an ext4 disk is a disk, and an unknown export is an error that
//! names the export and the socket.

mod common;

use std::process::Command;

use common::*;
use platter_launcher::probe::{export_content, Content};
use platter_launcher::LauncherError;

#[test]
fn isos_and_disks_are_told_apart_over_nbd() {
    let scratch = Scratch::new();
    let root = scratch.path("iso-root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "on the cd\n").unwrap();
    let iso = scratch.path("cd.iso");
    let status = Command::new("genisoimage")
        .args(["-quiet", "-r", "-V", "PLATTER", "-o"])
        .arg(&iso)
        .arg(&root)
        .status()
        .expect("genisoimage (scripts/install.sh)");
    assert!(status.success());
    let disk = scratch.path("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(status.success());

    let iso_srv = NbdServer::start(&iso, &scratch.path("iso.sock"), "cd");
    assert_eq!(export_content(&iso_srv.socket, "cd").unwrap(), Content::Iso);
    let disk_srv = NbdServer::start(&disk, &scratch.path("disk.sock"), "disk");
    assert_eq!(
        export_content(&disk_srv.socket, "disk").unwrap(),
        Content::Disk
    );

    let err = export_content(&disk_srv.socket, "nope").unwrap_err();
    assert!(matches!(err, LauncherError::Probe { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("nope") && msg.contains("disk.sock"), "{msg}");

    let err = export_content(&scratch.path("absent.sock"), "cd").unwrap_err();
    assert!(err.to_string().contains("absent.sock"), "{err}");
}
