//! End to end: real libvirtd, a real guest under TCG (or KVM where it works), its disk
//! served over NBD on a unix socket. `qemu-nbd` stands in for `platter serve` here.

mod common;

use std::time::{Duration, Instant};

use common::*;
use platter_launcher::{
    AccelChoice, Boot, Launcher, LauncherError, Media, StopOutcome, VmDisk, VmSpec, VmState,
};
use platter_types::VolumeRef;

fn disk(export: &str) -> VmDisk {
    VmDisk {
        volume: VolumeRef::parse(export).unwrap(),
        throwaway: false,
        media: Media::Disk,
    }
}

/// Direct kernel boot; the guest reads /hello.txt, writes /log.txt and /written.txt, and
/// powers off; the writes are in the served file afterwards.
#[test]
fn direct_kernel_boot_reads_and_writes_its_nbd_disk() {
    ensure_libvirtd();
    let td = guest();
    let scratch = Scratch::new();
    let kernel = scratch.copy_in(&td.join("vmlinuz"), "vmlinuz");
    let initrd = scratch.copy_in(&td.join("initrd.gz"), "initrd.gz");
    let image = scratch.copy_in(&td.join("disk.raw"), "disk.raw");
    let server = NbdServer::start(&image, &scratch.path("nbd.sock"), "disk");

    let launcher = Launcher::new(None).unwrap();
    let name = unique_name("kernel");
    let mut spec = VmSpec::new(name.clone(), vec![disk("disk")]);
    spec.memory_bytes = 256 << 20;
    spec.boot = Boot::Kernel {
        kernel,
        initrd: Some(initrd),
        cmdline: Some("console=ttyS0 quiet panic=-1 platter.write=written-by-guest".into()),
    };
    let console = scratch.path("console.log");
    let record = launcher.create(&spec, &server.socket, &console).unwrap();
    let _guard = VmGuard {
        launcher: &launcher,
        name: name.to_string(),
    };
    println!("accel: {} ({})", record.accel.accel, record.accel.reason);

    // A second create of the same name is refused, naming it.
    let err = launcher
        .create(&spec, &server.socket, &console)
        .unwrap_err();
    assert!(matches!(err, LauncherError::DomainExists { .. }), "{err}");
    assert!(err.to_string().contains(name.as_str()), "{err}");

    assert_eq!(launcher.state(name.as_str()).unwrap(), VmState::ShutOff);
    let listed = launcher.list().unwrap();
    let me = listed
        .iter()
        .find(|v| v.name == name.as_str())
        .expect("vm in list");
    assert_eq!(me.accel, Some(record.accel.accel));
    assert_eq!(launcher.console_log_path(name.as_str()).unwrap(), console);

    let t0 = Instant::now();
    launcher.start(name.as_str()).unwrap();
    let err = launcher.start(name.as_str()).unwrap_err();
    assert!(matches!(err, LauncherError::AlreadyRunning { .. }), "{err}");
    let text = wait_for_console(&console, &["PLATTER-BOOTED"], BOOT_DEADLINE);
    println!(
        "{} boot to PLATTER-BOOTED: {:?}",
        record.accel.accel,
        t0.elapsed()
    );
    assert!(text.contains("PLATTER-BOOTED"));
    // The READ line follows BOOTED; wait for the line after it so it is complete.
    let text = wait_for_console(&console, &["PLATTER-WROTE", "PLATTER-DONE"], BOOT_DEADLINE);
    assert!(
        text.lines()
            .any(|l| l.trim_end() == "PLATTER-READ: hello from platter"),
        "{text}"
    );
    wait_shut_off(&launcher, name.as_str(), BOOT_DEADLINE);
    println!(
        "{} boot to power-off: {:?}",
        record.accel.accel,
        t0.elapsed()
    );

    server.stop();
    let log = ext4_cat(&image, 0, "/log.txt");
    assert!(log.starts_with("boot "), "{log:?}");
    assert_eq!(ext4_cat(&image, 0, "/written.txt"), "written-by-guest\n");

    launcher.delete(name.as_str()).unwrap();
    for err in [
        launcher.state(name.as_str()).unwrap_err(),
        launcher.start(name.as_str()).unwrap_err(),
        launcher.delete(name.as_str()).unwrap_err(),
        launcher
            .stop(name.as_str(), Duration::from_secs(1))
            .unwrap_err(),
    ] {
        assert!(matches!(err, LauncherError::NoSuchVm { .. }), "{err}");
        assert!(err.to_string().contains(name.as_str()), "{err}");
    }
    assert!(!launcher
        .list()
        .unwrap()
        .iter()
        .any(|v| v.name == name.as_str()));
}

/// The disk boots by itself: BIOS, syslinux, kernel from the FAT partition, root on vda2.
#[test]
fn bios_boot_of_the_bootable_disk() {
    ensure_libvirtd();
    let td = bootable();
    let scratch = Scratch::new();
    let image = scratch.copy_in(&td.join("boot.raw"), "boot.raw");
    let server = NbdServer::start(&image, &scratch.path("nbd.sock"), "boot");

    let launcher = Launcher::new(None).unwrap();
    let name = unique_name("bios");
    let mut spec = VmSpec::new(name.clone(), vec![disk("boot")]);
    spec.memory_bytes = 256 << 20;
    let console = scratch.path("console.log");
    let record = launcher.create(&spec, &server.socket, &console).unwrap();
    let _guard = VmGuard {
        launcher: &launcher,
        name: name.to_string(),
    };

    let t0 = Instant::now();
    launcher.start(name.as_str()).unwrap();
    let text = wait_for_console(&console, &["PLATTER-BOOTED", "PLATTER-DONE"], BOOT_DEADLINE);
    println!(
        "{} BIOS boot to PLATTER-DONE: {:?}",
        record.accel.accel,
        t0.elapsed()
    );
    assert!(
        text.contains("PLATTER-READ: hello from the platter bootable disk"),
        "{text}"
    );
    wait_shut_off(&launcher, name.as_str(), BOOT_DEADLINE);
    server.stop();
    // Partition 2 starts at sector 2048 + 81920 (testdata/build-bootable.sh).
    let log = ext4_cat(&image, (2048 + 81920) * 512, "/log.txt");
    assert!(log.starts_with("boot "), "{log:?}");
}

/// stop presses the power button and the guest powers off cleanly; restart boots it
/// again; a zero timeout pulls the plug.
#[test]
fn stop_restart_and_forced_stop() {
    ensure_libvirtd();
    let td = guest();
    let scratch = Scratch::new();
    let kernel = scratch.copy_in(&td.join("vmlinuz"), "vmlinuz");
    let initrd = scratch.copy_in(&td.join("initrd.gz"), "initrd.gz");
    let image = scratch.copy_in(&td.join("disk.raw"), "disk.raw");
    let server = NbdServer::start(&image, &scratch.path("nbd.sock"), "disk");

    let launcher = Launcher::new(None).unwrap();
    let name = unique_name("stop");
    let mut spec = VmSpec::new(name.clone(), vec![disk("disk")]);
    spec.memory_bytes = 256 << 20;
    spec.accel = AccelChoice::Auto;
    spec.boot = Boot::Kernel {
        kernel,
        initrd: Some(initrd),
        cmdline: Some("console=ttyS0 quiet panic=-1 platter.hold=600".into()),
    };
    let console = scratch.path("console.log");
    launcher.create(&spec, &server.socket, &console).unwrap();
    let _guard = VmGuard {
        launcher: &launcher,
        name: name.to_string(),
    };
    let vm = name.as_str();

    assert_eq!(
        launcher.stop(vm, Duration::from_secs(1)).unwrap(),
        StopOutcome::AlreadyStopped
    );
    launcher.start(vm).unwrap();
    // acpid runs by the first tick.
    wait_for_console(&console, &["PLATTER-TICK 1"], BOOT_DEADLINE);
    assert_eq!(launcher.state(vm).unwrap(), VmState::Running);
    assert_eq!(
        launcher.stop(vm, BOOT_DEADLINE).unwrap(),
        StopOutcome::Graceful
    );
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.contains("PLATTER-ACPI-SHUTDOWN") && text.contains("PLATTER-DONE"),
        "{text}"
    );
    assert_eq!(launcher.state(vm).unwrap(), VmState::ShutOff);

    launcher.start(vm).unwrap();
    wait_for_console(&console, &["PLATTER-TICK 1"], BOOT_DEADLINE);
    assert_eq!(
        launcher.restart(vm, BOOT_DEADLINE).unwrap(),
        StopOutcome::Graceful
    );
    // The log restarts with each boot (append='off').
    let text = wait_for_console(&console, &["PLATTER-TICK 1"], BOOT_DEADLINE);
    assert!(!text.contains("PLATTER-DONE"), "{text}");

    assert_eq!(
        launcher.stop(vm, Duration::ZERO).unwrap(),
        StopOutcome::Forced
    );
    assert_eq!(launcher.state(vm).unwrap(), VmState::ShutOff);
    server.stop();
    let log = ext4_cat(&image, 0, "/log.txt");
    assert_eq!(
        log.lines().filter(|l| l.starts_with("boot ")).count(),
        3,
        "{log}"
    );
}

/// The NBD server goes away and comes back while the guest writes: the guest carries on
/// (QEMU reconnects within the reconnect delay) and every write it made is on the disk.
#[test]
fn guest_survives_nbd_server_restart() {
    ensure_libvirtd();
    let td = guest();
    let scratch = Scratch::new();
    let kernel = scratch.copy_in(&td.join("vmlinuz"), "vmlinuz");
    let initrd = scratch.copy_in(&td.join("initrd.gz"), "initrd.gz");
    let image = scratch.copy_in(&td.join("disk.raw"), "disk.raw");
    let socket = scratch.path("nbd.sock");
    let server = NbdServer::start(&image, &socket, "disk");

    let launcher = Launcher::new(None).unwrap();
    println!("NBD disks attached as {:?}", launcher.nbd_attach());
    let name = unique_name("reconnect");
    let mut spec = VmSpec::new(name.clone(), vec![disk("disk")]);
    spec.memory_bytes = 256 << 20;
    spec.boot = Boot::Kernel {
        kernel,
        initrd: Some(initrd),
        cmdline: Some("console=ttyS0 quiet panic=-1 platter.hold=8".into()),
    };
    let console = scratch.path("console.log");
    launcher.create(&spec, &socket, &console).unwrap();
    let _guard = VmGuard {
        launcher: &launcher,
        name: name.to_string(),
    };
    launcher.start(name.as_str()).unwrap();

    wait_for_console(&console, &["PLATTER-TICK 2"], BOOT_DEADLINE);
    server.stop();
    let server = NbdServer::start(&image, &socket, "disk");
    let text = wait_for_console(&console, &["PLATTER-DONE"], BOOT_DEADLINE);
    wait_shut_off(&launcher, name.as_str(), BOOT_DEADLINE);
    server.stop();

    assert!(
        !text.contains("EXT4-fs error") && !text.contains("I/O error"),
        "{text}"
    );
    let log = ext4_cat(&image, 0, "/log.txt");
    let ticks: Vec<&str> = log.lines().filter(|l| l.starts_with("tick ")).collect();
    let expected: Vec<String> = (1..=8).map(|n| format!("tick {n}")).collect();
    assert_eq!(ticks, expected, "{log}");
}
