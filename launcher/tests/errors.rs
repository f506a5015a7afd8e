//! The errors users meet: libvirtd down, a domain that is not platter's, a bad spec, a
//! boot file QEMU's user cannot reach. Each names the object and says what to do.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use platter_launcher::{Boot, Launcher, LauncherError, Media, VmDisk, VmSpec};
use platter_types::VolumeRef;

fn disk(export: &str) -> VmDisk {
    VmDisk {
        volume: VolumeRef::parse(export).unwrap(),
        throwaway: false,
        media: Media::Disk,
    }
}

#[test]
fn unreachable_libvirtd_says_how_to_start_it() {
    let uri = "qemu:///system?socket=/nonexistent/platter/libvirt-sock";
    let err = Launcher::new(Some(uri)).err().expect("connect must fail");
    assert!(matches!(err, LauncherError::Unreachable { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(uri), "{msg}");
    assert!(
        msg.contains("libvirtd -d") && msg.contains("scripts/install.sh"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn domains_that_are_not_platters_are_left_alone() {
    ensure_libvirtd();
    let scratch = Scratch::new();
    let name = unique_name("foreign");
    let xml = scratch.path("foreign.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
        ),
    )
    .unwrap();
    let virsh = |args: &[&str]| {
        Command::new("virsh")
            .args(["-c", "qemu:///system"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = virsh(&["define", xml.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let launcher = Launcher::new(None).unwrap();
    let listed = launcher.list().unwrap();
    let err = launcher.console_log_path(name.as_str()).unwrap_err();
    virsh(&["undefine", name.as_str()]);

    assert!(
        !listed.iter().any(|v| v.name == name.as_str()),
        "{listed:?}"
    );
    assert!(matches!(err, LauncherError::NotPlatter { .. }), "{err}");
}

#[test]
fn invalid_specs_are_refused_before_libvirt() {
    ensure_libvirtd();
    let launcher = Launcher::new(None).unwrap();
    let scratch = Scratch::new();
    let mut spec = VmSpec::new(unique_name("tiny"), vec![disk("d")]);
    spec.memory_bytes = 1 << 20;
    let err = launcher
        .create(&spec, &scratch.path("nbd.sock"), &scratch.path("c.log"))
        .unwrap_err();
    assert!(matches!(err, LauncherError::InvalidSpec { .. }), "{err}");
    assert!(err.to_string().contains("memory"), "{err}");
}

#[test]
fn unreachable_kernel_is_named() {
    ensure_libvirtd();
    assert!(
        platter_launcher::access::qemu_account().is_some(),
        "no libvirt-qemu user: libvirt-daemon-system is not installed (run scripts/install.sh)"
    );
    let launcher = Launcher::new(None).unwrap();
    let scratch = Scratch::new();
    let private = scratch.path("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let kernel = private.join("vmlinuz");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let mut spec = VmSpec::new(unique_name("private"), vec![disk("d")]);
    spec.boot = Boot::Kernel {
        kernel,
        initrd: None,
        cmdline: None,
    };
    let err = launcher
        .create(&spec, &scratch.path("nbd.sock"), &scratch.path("c.log"))
        .unwrap_err();
    assert!(matches!(err, LauncherError::NotAccessible { .. }), "{err}");
    assert!(err.to_string().contains(private.to_str().unwrap()), "{err}");
    assert!(
        launcher.state(spec.name.as_str()).is_err(),
        "nothing defined"
    );
}
