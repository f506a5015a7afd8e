//! `platter vm` end to end: a real libvirtd (`qemu:///system`), TCG guests built by
//! testdata/, disks served by a real `platter serve`, images from a real `docker-registry`.
//!
//! Each test is self-contained: its own store in a temp dir under /tmp (which the
//! `libvirt-qemu` user can traverse), its own server, registry and VM names, and a guard
//! that destroys and undefines its domains even when it fails. The test guest prints
//! `PLATTER-BOOTED`, `PLATTER-READ: …`, `PLATTER-CDROM: …`, `PLATTER-TICK n` (hold mode)
//! and `PLATTER-DONE` on its serial console, appends to `/log.txt` and writes
//! `/written.txt` on its disk (testdata/README.md); the disk is then read back with
//! `debugfs` from an export. The harness is in vm_support/. Deadlines only bound waiting
//! for a guest; nothing here asserts on timing.

mod common;
mod vm_support;
use common::*;
use vm_support::*;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// The tests.

/// Boot from a volume (direct kernel boot); the guest reads its disk, writes a file and
/// powers off; the file is in the volume. `vm console --follow` follows until power-off.
#[test]
fn boot_from_a_volume_and_the_guests_write_is_in_it() {
    let env = Env::new("vol");
    let g = guest_files();
    let _srv = Serve::start(&env.store);
    let vm = env.vm("a");
    let _guard = VmGuard(vec![vm.clone()]);
    env.ok(&["import", g.disk.to_str().unwrap(), "root"]);
    let secret = format!("written-by-{vm}");
    env.create_kernel_vm(
        &vm,
        ("--volume", "root"),
        &format!("platter.write={secret}"),
        true,
    );

    // --follow prints as the guest runs and returns once it is off.
    let mut follow = Command::new(BIN)
        .arg("--store")
        .arg(&env.store)
        .args(["vm", "console", &vm, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + BOOT_DEADLINE;
    while follow.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = follow.kill();
            panic!(
                "vm console --follow still running after {BOOT_DEADLINE:?}:\n{}",
                console(&env.store, &vm)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = reader.join().unwrap();
    for line in [
        "PLATTER-BOOTED",
        "PLATTER-READ: hello from platter",
        "PLATTER-DONE",
    ] {
        assert!(has_line(&text, line), "no {line} in:\n{text}");
    }
    wait_shut_off(&env.store, &vm);

    let list = env.ok(&["vm", "list"]);
    assert!(list.contains(&vm) && list.contains("shut-off"), "{list}");
    let image = export(&env, "root");
    assert_eq!(
        ext4_cat(&image, "/written.txt").as_deref(),
        Some(format!("{secret}\n").as_str())
    );
    let log = log_lines(&image);
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].starts_with("boot "), "{log:?}");
}

/// `platter push` the BIOS-bootable disk to a local registry, drop the local volume, and
/// `vm create --image docker://…` with no kernel: the BIOS boots the throw-away clone,
/// the guest writes to it, and `vm delete` removes it (not while a clone of it lives).
#[test]
fn boot_from_a_container_disk_in_a_local_registry() {
    let env = Env::new("cd");
    let g = guest_files();
    let reg = Registry::start_plain();
    let _srv = Serve::start(&env.store);
    let vm = env.vm("b");
    let _guard = VmGuard(vec![vm.clone()]);
    env.ok(&["import", g.boot.to_str().unwrap(), "bootable"]);
    let image = format!("docker://127.0.0.1:{}/platter/guest:e2e", reg.port);
    env.ok(&["push", "bootable", &image]);
    // What boots comes from the registry, not from this volume.
    env.ok(&["volume", "delete", "bootable"]);

    env.ok(&[
        "vm", "create", &vm, "--image", &image, "--memory", "256M", "--start",
    ]);
    let text = wait_console(
        &env.store,
        &vm,
        &[
            "PLATTER-BOOTED",
            "PLATTER-READ: hello from the platter bootable disk",
            "PLATTER-DONE",
        ],
    );
    wait_shut_off(&env.store, &vm);
    let disk = format!("{vm}-disk");
    assert!(
        volume_names(&env).contains(&disk),
        "{:?}",
        volume_names(&env)
    );
    let exported = export(&env, &disk);
    let root = extract_partition(&exported, 2, &env.path("root.ext4"));
    let log = log_lines(&root);
    let wrote = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PLATTER-WROTE: "))
        .unwrap();
    assert_eq!(log, vec![wrote.to_string()]);

    // A clone of the throw-away disk keeps the VM from going, untouched, until it goes.
    env.ok(&["volume", "snapshot", &format!("{disk}@keep")]);
    env.ok(&["volume", "clone", &format!("{disk}@keep"), "kept"]);
    let err = fails(&env.store, &["vm", "delete", &vm]);
    assert!(err.contains(&vm) && err.contains("kept"), "{err}");
    assert!(env.ok(&["vm", "list"]).contains(&vm));
    env.ok(&["volume", "delete", "kept"]);
    env.ok(&["vm", "delete", &vm]);
    let volumes = volume_names(&env);
    assert!(!volumes.contains(&disk), "{volumes:?}");
    assert!(!env.ok(&["vm", "list"]).contains(&vm));
    assert_no_domain(&vm);
}

/// Three VMs created at once from one image: one import, three throw-away clones, each
/// guest's write only in its own clone, nothing in the image; `vm delete` removes them.
#[test]
fn three_vms_from_one_image_each_see_only_their_own_writes() {
    let env = Env::new("three");
    let g = guest_files();
    let _srv = Serve::start(&env.store);
    let vms: Vec<String> = (1..=3).map(|i| env.vm(&format!("c{i}"))).collect();
    let _guard = VmGuard(vms.clone());
    let image = g.disk.to_str().unwrap().to_string();
    std::thread::scope(|s| {
        for vm in &vms {
            let (env, image) = (&env, &image);
            s.spawn(move || {
                env.create_kernel_vm(
                    vm,
                    ("--image", image),
                    &format!("platter.write=only-{vm}"),
                    true,
                )
            });
        }
    });
    for vm in &vms {
        wait_console(
            &env.store,
            vm,
            &[
                "PLATTER-BOOTED",
                "PLATTER-READ: hello from platter",
                "PLATTER-DONE",
            ],
        );
    }
    let volumes = volume_names(&env);
    let base: Vec<&String> = volumes
        .iter()
        .filter(|v| v.starts_with("img-") && v.ends_with("@base"))
        .collect();
    assert_eq!(base.len(), 1, "one cached image expected: {volumes:?}");
    for vm in &vms {
        wait_shut_off(&env.store, vm);
        let disk = export(&env, &format!("{vm}-disk"));
        assert_eq!(
            ext4_cat(&disk, "/written.txt").as_deref(),
            Some(format!("only-{vm}\n").as_str()),
            "{vm}'s disk"
        );
        assert_eq!(log_lines(&disk).len(), 1, "{vm}: other guests' boots seen");
    }
    let cached = export(&env, base[0]);
    assert_eq!(ext4_cat(&cached, "/written.txt"), None);
    assert!(log_lines(&cached).is_empty());

    for vm in &vms {
        env.ok(&["vm", "delete", vm]);
    }
    let volumes = volume_names(&env);
    for vm in &vms {
        assert!(!volumes.contains(&format!("{vm}-disk")), "{volumes:?}");
    }
    assert!(
        volumes.iter().any(|v| v.ends_with("@base")),
        "the image cache outlives its VMs: {volumes:?}"
    );
}

/// A snapshot of a running guest's disk, cloned and booted: the clone sees the disk as
/// it was at the snapshot (ticks up to then, not after), and the two stay independent.
#[test]
fn snapshot_of_a_running_vm_boots_as_a_clone_at_that_moment() {
    let env = Env::new("snap");
    let g = guest_files();
    let _srv = Serve::start(&env.store);
    let (orig, twin) = (env.vm("orig"), env.vm("twin"));
    let _guard = VmGuard(vec![orig.clone(), twin.clone()]);
    const HOLD: u32 = 12;
    env.ok(&["import", g.disk.to_str().unwrap(), "live"]);
    env.create_kernel_vm(
        &orig,
        ("--volume", "live"),
        &format!("platter.write=before-snapshot platter.hold={HOLD}"),
        true,
    );
    wait_console(&env.store, &orig, &["PLATTER-TICK 3"]);
    env.ok(&["volume", "snapshot", "live@running"]);
    // Tick n is written and synced before it is printed: the snapshot holds at most one
    // tick more than printed now.
    let printed = ticks(&console(&env.store, &orig)).len() as u32;
    assert!(printed < HOLD, "the guest finished before the snapshot");
    env.ok(&["volume", "clone", "live@running", "twin-root"]);
    env.create_kernel_vm(&twin, ("--volume", "twin-root"), "", true);
    wait_console(
        &env.store,
        &twin,
        &[
            "PLATTER-BOOTED",
            "PLATTER-READ: hello from platter",
            "PLATTER-DONE",
        ],
    );
    let orig_text = wait_console(&env.store, &orig, &["PLATTER-DONE"]);
    assert_eq!(ticks(&orig_text), (1..=HOLD).collect::<Vec<_>>());
    wait_shut_off(&env.store, &twin);
    wait_shut_off(&env.store, &orig);

    let twin_disk = export(&env, "twin-root");
    assert_eq!(
        ext4_cat(&twin_disk, "/written.txt").as_deref(),
        Some("before-snapshot\n")
    );
    let twin_log = log_lines(&twin_disk);
    let orig_log = log_lines(&export(&env, "live"));
    // orig: its boot, then every tick. twin: orig's boot, the ticks up to the snapshot,
    // then its own boot.
    assert_eq!(orig_log.len(), 1 + HOLD as usize, "{orig_log:?}");
    let k = twin_log.len() - 2;
    assert!(
        (3..=printed as usize + 1).contains(&k),
        "twin saw {k} ticks, {printed} were printed at the snapshot: {twin_log:?}"
    );
    assert_eq!(twin_log[..=k], orig_log[..=k], "twin is not orig's past");
    assert!(twin_log[k + 1].starts_with("boot ") && twin_log[k + 1] != orig_log[0]);
}

/// `platter serve` killed with SIGKILL and restarted while a guest writes a tick a
/// second: QEMU reconnects, the guest carries on to the end, and every tick is on disk.
#[test]
fn serve_killed_and_restarted_under_a_running_guest() {
    let env = Env::new("kill");
    let g = guest_files();
    let mut srv = Serve::start(&env.store);
    let vm = env.vm("k");
    let _guard = VmGuard(vec![vm.clone()]);
    const HOLD: u32 = 10;
    env.ok(&["import", g.disk.to_str().unwrap(), "root"]);
    env.create_kernel_vm(
        &vm,
        ("--volume", "root"),
        &format!("platter.hold={HOLD}"),
        true,
    );
    wait_console(&env.store, &vm, &["PLATTER-TICK 3"]);
    let took = srv.kill9_and_restart();
    let at_restart = ticks(&console(&env.store, &vm)).len() as u32;
    eprintln!("serve restarted in {took:?} with {at_restart} ticks printed");
    assert!(at_restart < HOLD, "the guest finished before the restart");
    let text = wait_console(&env.store, &vm, &["PLATTER-DONE"]);
    wait_shut_off(&env.store, &vm);
    assert_eq!(ticks(&text), (1..=HOLD).collect::<Vec<_>>(), "{text}");
    for bad in ["I/O error", "EXT4-fs error", "PLATTER-ERROR"] {
        assert!(!text.contains(bad), "{bad} after the restart:\n{text}");
    }
    let log = log_lines(&export(&env, "root"));
    let expected: Vec<String> = (1..=HOLD).map(|n| format!("tick {n}")).collect();
    assert_eq!(log.len(), 1 + HOLD as usize, "{log:?}");
    assert!(log[0].starts_with("boot "), "{log:?}");
    assert_eq!(log[1..], expected[..]);
}

/// Errors are one line and name the object and the way out.
#[test]
fn vm_errors_name_the_vm_and_the_fix() {
    let env = Env::new("err");
    let vm = env.vm("e");
    let _guard = VmGuard(vec![vm.clone()]);
    env.ok(&["volume", "create", "v", "--size", "16M"]);

    let err = fails(&env.store, &["vm", "create", &vm, "--volume", "v"]);
    assert!(
        err.contains("platter serve is not running") && err.contains("serve`"),
        "{err}"
    );

    let _srv = Serve::start(&env.store);
    let err = fails(&env.store, &["vm", "start", "no-such-vm"]);
    assert!(err.contains("no-such-vm"), "{err}");
    let err = fails(&env.store, &["vm", "delete", "no-such-vm"]);
    assert!(err.contains("no-such-vm"), "{err}");

    env.create_kernel_vm(&vm, ("--volume", "v"), "", false);
    let err = fails(&env.store, &["vm", "console", &vm]);
    assert!(err.contains(&vm) && err.contains("vm start"), "{err}");
    let err = fails(
        &env.store,
        &["vm", "create", &vm, "--image", env.kernel.to_str().unwrap()],
    );
    assert!(err.contains(&vm) && err.contains("already exists"), "{err}");
    assert!(
        !volume_names(&env).contains(&format!("{vm}-disk")),
        "a refused create left a disk behind"
    );
    env.ok(&["vm", "delete", &vm]);

    // A store under a directory qemu's user cannot enter: the error names that directory.
    let private = env.path("private");
    std::fs::create_dir(&private).unwrap();
    set_mode(&private, 0o700);
    let hidden = private.join("store");
    ok(&hidden, &["volume", "create", "v", "--size", "16M"]);
    let _hidden_srv = Serve::start(&hidden);
    let err = fails(&hidden, &["vm", "create", &vm, "--volume", "v"]);
    assert!(
        err.contains(private.to_str().unwrap()) && err.contains("0700"),
        "{err}"
    );
}

/// `--image` of an ISO: a read-only IDE CD-ROM of the cached image (no throw-away clone),
/// which the guest finds as /dev/sr0 and reads; alone (no disk at all) and next to a
/// `--volume`. A disk image with `--volume` is refused.
#[test]
fn an_iso_image_is_a_read_only_cdrom() {
    let env = Env::new("iso");
    let g = guest_files();
    let _srv = Serve::start(&env.store);
    let (alone, both) = (env.vm("iso"), env.vm("isovol"));
    let _guard = VmGuard(vec![alone.clone(), both.clone()]);
    let marker = format!("marker on the cd of {}", env.prefix);
    let iso = make_iso(&env, "cd.iso", &marker);
    let iso = iso.to_str().unwrap();
    env.ok(&["import", g.disk.to_str().unwrap(), "root"]);
    env.create_kernel_vm_with(
        &alone,
        &["--image", iso],
        "platter.root=none platter.cdrom=/dev/sr0",
        true,
    );
    env.create_kernel_vm_with(
        &both,
        &["--volume", "root", "--image", iso],
        "platter.cdrom=/dev/sr0",
        true,
    );
    let cd_line = format!("PLATTER-CDROM: {marker}");
    wait_console(
        &env.store,
        &alone,
        &["PLATTER-BOOTED", &cd_line, "PLATTER-DONE"],
    );
    wait_console(
        &env.store,
        &both,
        &[
            "PLATTER-BOOTED",
            "PLATTER-READ: hello from platter",
            &cd_line,
            "PLATTER-DONE",
        ],
    );

    // Both VMs use the one cached image, read-only, and nothing was cloned for them.
    let volumes = volume_names(&env);
    let base: Vec<&String> = volumes
        .iter()
        .filter(|v| v.starts_with("img-") && v.ends_with("@base"))
        .collect();
    assert_eq!(base.len(), 1, "{volumes:?}");
    for vm in [&alone, &both] {
        assert!(
            !volumes.iter().any(|v| v.starts_with(vm.as_str())),
            "a clone was made for {vm}: {volumes:?}"
        );
        let row = list_row(&env.store, vm);
        assert_eq!(row["cdroms"], serde_json::json!([base[0]]), "{row}");
    }
    assert_eq!(list_row(&env.store, &alone)["disks"], serde_json::json!([]));
    assert_eq!(
        list_row(&env.store, &both)["disks"],
        serde_json::json!(["root"])
    );

    // libvirt ≥ 9.2 has the CD-ROM as a <disk device='cdrom'>; older libvirt (Debian 12)
    // gets it as an IDE CD (`ide-cd`) on the QEMU command line, for the reconnect delay.
    for vm in [&alone, &both] {
        let xml = domain_xml(vm);
        let export = base[0].as_str();
        if xml.contains("<qemu:commandline>") {
            let args: Vec<&str> = xml.lines().filter(|l| l.contains("<qemu:arg")).collect();
            let cd = args
                .iter()
                .position(|a| a.contains("ide-cd"))
                .unwrap_or_else(|| panic!("no ide-cd in {xml}"));
            assert!(args[cd].contains("bus&quot;:&quot;ide.1"), "{xml}");
            let node = args
                .iter()
                .find(|a| a.contains(export) && a.contains("&quot;nbd&quot;"))
                .unwrap_or_else(|| panic!("no NBD node for {export} in {xml}"));
            assert!(node.contains("read-only&quot;:true"), "{node}");
            assert_eq!(
                args.iter().filter(|a| a.contains("virtio-blk")).count(),
                usize::from(vm == &both),
                "{xml}"
            );
        } else {
            assert!(xml.contains("device='cdrom'"), "{xml}");
            assert!(xml.contains(export) && xml.contains("<readonly/>"), "{xml}");
        }
    }

    wait_shut_off(&env.store, &alone);
    wait_shut_off(&env.store, &both);
    // (The import's progress comes first on stderr; the error is the last line.)
    let out = platter(
        &env.store,
        &[
            "vm",
            "create",
            &env.vm("refused"),
            "--volume",
            "root",
            "--image",
            g.disk.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("not an ISO") && last.contains("refused"),
        "{err}"
    );
    assert!(!env.ok(&["vm", "list"]).contains("refused"));
    for vm in [&alone, &both] {
        env.ok(&["vm", "delete", vm]);
    }
    // The cache and the volume outlive the VMs.
    let volumes = volume_names(&env);
    assert!(volumes.contains(base[0]) && volumes.contains(&"root".to_string()));
}

/// Every `vm` subcommand takes `--connect URI`; an unreachable URI is a one-line error
/// naming it. A VM keeps the URI it was created with, later commands use it unless
/// `--connect` overrides it.
#[test]
fn connect_on_every_subcommand_and_the_recorded_uri() {
    let env = Env::new("uri");
    let g = guest_files();
    let _srv = Serve::start(&env.store);
    let vm = env.vm("u");
    let _guard = VmGuard(vec![vm.clone()]);
    env.ok(&["import", g.disk.to_str().unwrap(), "root"]);
    env.create_kernel_vm_with(
        &vm,
        &["--volume", "root", "--connect", VIRSH_URI],
        "",
        false,
    );
    assert_eq!(list_row(&env.store, &vm)["uri"], VIRSH_URI);
    // The record as the store keeps it (in its metadata database), asked of the server.
    let saved =
        control(&env.store, serde_json::json!({"op": "vm_get", "name": vm}))["record"].clone();
    assert_eq!(saved["uri"], VIRSH_URI, "{saved}");

    let bogus = "qemu:///system?socket=/nonexistent/platter/libvirt-sock";
    let refused = |args: &[&str]| {
        let err = fails(&env.store, args);
        assert!(
            err.contains(bogus) && err.contains("libvirtd -d"),
            "{args:?}: {err}"
        );
    };
    for args in [
        vec!["vm", "start", &vm, "--connect", bogus],
        vec!["vm", "stop", &vm, "--connect", bogus],
        vec!["vm", "restart", &vm, "--connect", bogus],
        vec!["vm", "delete", &vm, "--connect", bogus],
        vec!["vm", "list", "--connect", bogus],
        vec!["vm", "console", &vm, "--connect", bogus],
        vec!["vm", "console", &vm, "--follow", "--connect", bogus],
        vec![
            "vm",
            "create",
            "other",
            "--volume",
            "root",
            "--connect",
            bogus,
        ],
    ] {
        refused(&args);
    }
    // Nothing was touched by the refused commands.
    assert_eq!(state(&env.store, &vm), "shut-off");

    // The record's URI is what later commands use ...
    let mut moved = saved.clone();
    moved["uri"] = bogus.into();
    control(
        &env.store,
        serde_json::json!({"op": "vm_put", "name": vm, "record": moved}),
    );
    refused(&["vm", "start", &vm]);
    refused(&["vm", "stop", &vm]);
    refused(&["vm", "list"]);
    // ... unless --connect says otherwise.
    env.ok(&["vm", "start", &vm, "--connect", VIRSH_URI]);
    let rows = json(&env.store, &["vm", "list", "--connect", VIRSH_URI]);
    assert_eq!(rows[0]["uri"], VIRSH_URI, "{rows}");
    assert_ne!(rows[0]["state"], "undefined", "{rows}");
    control(
        &env.store,
        serde_json::json!({"op": "vm_put", "name": vm, "record": saved}),
    );
    wait_console(&env.store, &vm, &["PLATTER-DONE"]);
    env.ok(&["vm", "stop", &vm]);
    env.ok(&["vm", "delete", &vm, "--connect", VIRSH_URI]);
    assert!(!env.ok(&["vm", "list"]).contains(&vm));
}

/// One request to the running server's control socket; its response object.
fn control(store: &std::path::Path, req: serde_json::Value) -> serde_json::Value {
    use std::io::{BufRead, Write};
    let mut sock = std::os::unix::net::UnixStream::connect(store.join("run/control.sock")).unwrap();
    writeln!(sock, "{req}").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&sock).read_line(&mut line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(reply.get("response").is_some(), "{req} -> {reply}");
    reply["response"].clone()
}
