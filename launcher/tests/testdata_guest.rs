//! testdata/build-bootable.sh makes a disk that boots by itself: plain QEMU, no libvirt,
//! no external kernel, BIOS → syslinux → kernel → /init on partition 2.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn bootable_disk_boots_under_plain_qemu() {
    let td = bootable();
    let scratch = Scratch::new();
    let image = scratch.copy_in(&td.join("boot.raw"), "boot.raw");
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
            "-drive",
        ])
        .arg(format!("file={},format=raw,if=virtio", image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu-system-x86_64");
    // Drain the console while QEMU runs so a full pipe can never stall it.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut console = String::new();
        let _ = stdout.read_to_string(&mut console);
        console
    });
    // The guest powers itself off; the deadline only guards against a hang.
    let t0 = Instant::now();
    let deadline = t0 + BOOT_DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    println!("plain qemu TCG BIOS boot to power-off: {:?}", t0.elapsed());
    let console = reader.join().unwrap();
    assert!(status.success(), "qemu {status}; console:\n{console}");
    assert!(console.contains("PLATTER-BOOTED"), "{console}");
    assert!(
        console.contains("PLATTER-READ: hello from the platter bootable disk"),
        "{console}"
    );
    assert!(console.contains("PLATTER-DONE"), "{console}");
}
