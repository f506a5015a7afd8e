//! `platter vm` end to end: a real libvirtd (`qemu:///system`), TCG guests built by
//! testdata/, disks served by a real `platter serve`, images from a real `docker-registry`.
//!
//! Each test is self-contained: its own store in a temp dir under /tmp (which the
//! `libvirt-qemu` user can traverse), its own server, registry and VM names, and a guard
//! that destroys and undefines its domains even when it fails. The test guest prints
//! `PLATTER-BOOTED`, `PLATTER-READ: …`, `PLATTER-TICK n` (hold mode) and `PLATTER-DONE`
//! on its serial console, appends to `/log.txt` and writes `/written.txt` on its disk
//! (testdata/README.md); the disk is then read back with `debugfs` from an export.
//! Deadlines only bound waiting for a guest; nothing here asserts on timing.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use platter_launcher::access::{check_qemu_can_reach, Need};

/// Longest wait for a guest to reach a console marker (a boot takes ~5 s under TCG).
const BOOT_DEADLINE: Duration = Duration::from_secs(90);
const VIRSH_URI: &str = "qemu:///system";
/// The kernel command line of direct kernel boots; options are appended.
const CMDLINE: &str = "console=ttyS0 quiet panic=-1";

// ---------------------------------------------------------------------------------------
// The test guest and libvirtd, prepared once per test binary.

struct GuestFiles {
    kernel: PathBuf,
    initrd: PathBuf,
    /// 64M ext4, `/hello.txt` = `hello from platter`; for direct kernel boot.
    disk: PathBuf,
    /// MBR + syslinux + ext4 partition 2; boots from the BIOS.
    boot: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn guest_files() -> &'static GuestFiles {
    static GUEST: OnceLock<GuestFiles> = OnceLock::new();
    GUEST.get_or_init(|| {
        ensure_libvirtd();
        let root = repo_root();
        let status = Command::new("bash")
            .arg(root.join("testdata/build-bootable.sh"))
            .status()
            .expect("running testdata/build-bootable.sh");
        assert!(status.success(), "testdata/build-bootable.sh failed");
        let out = std::env::var_os("PLATTER_TESTDATA")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/testdata"));
        let files = GuestFiles {
            kernel: out.join("vmlinuz"),
            initrd: out.join("initrd.gz"),
            disk: out.join("disk.raw"),
            boot: out.join("boot.raw"),
        };
        for f in [&files.kernel, &files.initrd, &files.disk, &files.boot] {
            assert!(f.is_file(), "{} was not built", f.display());
        }
        files
    })
}

/// Starts virtlogd and libvirtd when they are not running (there is no systemd here),
/// as scripts/install.sh does, and waits until `qemu:///system` answers.
fn ensure_libvirtd() {
    let answers = || {
        Command::new("virsh")
            .args(["-c", VIRSH_URI, "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if answers() {
        return;
    }
    for daemon in ["virtlogd", "libvirtd"] {
        let running = Command::new("pgrep")
            .args(["-x", daemon])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !running {
            let _ = Command::new(daemon).arg("-d").status();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers() {
        assert!(
            Instant::now() < deadline,
            "libvirtd does not answer on {VIRSH_URI}: run scripts/install.sh"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// Per-test environment: temp dir, store, server, registry, VM guard.

struct Env {
    dir: tempfile::TempDir,
    store: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    /// A per-test prefix for libvirt domain names (libvirt's namespace is global).
    prefix: String,
}

impl Env {
    fn new(tag: &str) -> Env {
        let g = guest_files();
        // tempfile makes 0700 directories; qemu (user libvirt-qemu) must traverse to the
        // NBD socket, and /tmp, unlike $TMPDIR, is known to be traversable.
        let dir = tempfile::Builder::new()
            .prefix("platter-e2e-")
            .tempdir_in("/tmp")
            .unwrap();
        set_mode(dir.path(), 0o755);
        let store = dir.path().join("store");
        // Boot files go where qemu can read them: in place if it can, else a copy here.
        let reachable = |p: &Path| {
            if check_qemu_can_reach(p, Need::Read).is_ok() {
                p.to_path_buf()
            } else {
                let copy = dir.path().join(p.file_name().unwrap());
                std::fs::copy(p, &copy).unwrap();
                set_mode(&copy, 0o644);
                copy
            }
        };
        Env {
            kernel: reachable(&g.kernel),
            initrd: reachable(&g.initrd),
            store,
            prefix: format!("e2e{}-{tag}", std::process::id()),
            dir,
        }
    }

    fn vm(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(&self.store, args)
    }

    /// `vm create NAME --volume VOL` with direct kernel boot and `extra` kernel options.
    fn create_kernel_vm(&self, vm: &str, disk: (&str, &str), extra: &str, start: bool) {
        let cmdline = format!("{CMDLINE} {extra}");
        let mut args = vec![
            "vm",
            "create",
            vm,
            disk.0,
            disk.1,
            "--kernel",
            self.kernel.to_str().unwrap(),
            "--initrd",
            self.initrd.to_str().unwrap(),
            "--cmdline",
            cmdline.trim(),
            "--memory",
            "256M",
        ];
        if start {
            args.push("--start");
        }
        self.ok(&args);
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `platter serve` on a store, started and waited for as in tests/serve.rs.
struct Serve {
    child: Child,
    store: PathBuf,
}

impl Serve {
    fn start(store: &Path) -> Serve {
        Serve {
            child: spawn_serve(store),
            store: store.to_path_buf(),
        }
    }

    /// SIGKILL, then a new server on the same store at once.
    fn kill9_and_restart(&mut self) -> Duration {
        let t = Instant::now();
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = spawn_serve(&self.store);
        t.elapsed()
    }
}

fn spawn_serve(store: &Path) -> Child {
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server says where it listens once both sockets are bound (warnings may come
    // first); it exits, closing stderr, if it cannot start.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not start: {said}");
        }
        said.push_str(&line);
        if line.contains("NBD on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in err.lines() {});
    child
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Destroys and undefines the test's domains however the test ends.
struct VmGuard(Vec<String>);

impl Drop for VmGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            for args in [
                vec!["-c", VIRSH_URI, "destroy", name],
                vec!["-c", VIRSH_URI, "undefine", "--nvram", name],
            ] {
                let _ = Command::new("virsh")
                    .args(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A `docker-registry` on 127.0.0.1 at a free port, storing under the test's dir.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let data = dir.join("registry");
        std::fs::create_dir_all(&data).unwrap();
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = data.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog: {{ level: error }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n",
                    data.join("data").display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(data.join("log")).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry (run scripts/install.sh)");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Registry { child, port };
                }
                // Exited: most likely the port was taken meanwhile; try another.
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "docker-registry did not start: {}",
            std::fs::read_to_string(data.join("log")).unwrap_or_default()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Commands and checks.

fn console(store: &Path, vm: &str) -> String {
    String::from_utf8_lossy(&platter(store, &["vm", "console", vm]).stdout).into_owned()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim() == line)
}

/// The tick numbers the guest printed, in order.
fn ticks(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("PLATTER-TICK ")?.parse().ok())
        .collect()
}

/// The VM's state from `platter vm list -o json`.
fn state(store: &Path, vm: &str) -> String {
    let list: serde_json::Value =
        serde_json::from_str(&ok(store, &["-o", "json", "vm", "list"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == vm)
        .map(|r| r["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("vm {vm} not in vm list: {list}"))
}

/// Waits until the console shows every line of `lines`; fails early, with the console,
/// if the guest reports an error or stops without showing them.
fn wait_console(store: &Path, vm: &str, lines: &[&str]) -> String {
    let deadline = Instant::now() + BOOT_DEADLINE;
    loop {
        let text = console(store, vm);
        if lines.iter().all(|l| has_line(&text, l)) {
            return text;
        }
        assert!(!text.contains("PLATTER-ERROR"), "vm {vm} failed:\n{text}");
        if state(store, vm) == "shut-off" {
            let text = console(store, vm);
            assert!(
                lines.iter().all(|l| has_line(&text, l)),
                "vm {vm} stopped without printing {lines:?}:\n{text}"
            );
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "vm {vm}: no {lines:?} within {BOOT_DEADLINE:?}; console so far:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until the guest has powered itself off (it does after `PLATTER-DONE`).
fn wait_shut_off(store: &Path, vm: &str) {
    let deadline = Instant::now() + BOOT_DEADLINE;
    while state(store, vm) != "shut-off" {
        assert!(
            Instant::now() < deadline,
            "vm {vm} still {} after {BOOT_DEADLINE:?}:\n{}",
            state(store, vm),
            console(store, vm)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Exports a volume (or snapshot) to a raw file in the test's dir.
fn export(env: &Env, target: &str) -> PathBuf {
    let file = env.path(&format!("{}.raw", target.replace('@', "_")));
    env.ok(&["volume", "export", target, file.to_str().unwrap()]);
    file
}

/// A file in an ext4 image, read with debugfs; `None` if it does not exist.
fn ext4_cat(image: &Path, file: &str) -> Option<String> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(out.status.success(), "debugfs on {}", image.display());
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("File not found") {
        return None;
    }
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Copies partition `n` (1-based, primary) of an MBR disk image into its own file.
fn extract_partition(disk: &Path, n: usize, out: &Path) -> PathBuf {
    let mut f = std::fs::File::open(disk).unwrap();
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr).unwrap();
    assert_eq!(&mbr[510..], &[0x55, 0xaa], "{}: no MBR", disk.display());
    let entry = &mbr[446 + 16 * (n - 1)..446 + 16 * n];
    let lba = u64::from(u32::from_le_bytes(entry[8..12].try_into().unwrap()));
    let sectors = u64::from(u32::from_le_bytes(entry[12..16].try_into().unwrap()));
    assert!(sectors > 0, "{}: no partition {n}", disk.display());
    f.seek(SeekFrom::Start(lba * 512)).unwrap();
    let mut part = std::fs::File::create(out).unwrap();
    std::io::copy(&mut f.take(sectors * 512), &mut part).unwrap();
    out.to_path_buf()
}

/// The `/log.txt` lines of an exported disk.
fn log_lines(image: &Path) -> Vec<String> {
    ext4_cat(image, "/log.txt")
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every volume and snapshot (`NAME@SNAP`) of the store.
fn volume_names(env: &Env) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["-o", "json", "volume", "list"])).unwrap();
    list.as_array()
        .unwrap_or_else(|| panic!("volume list: {list}"))
        .iter()
        .filter_map(|v| Some(v["name"].as_str()?.to_string()))
        .collect()
}

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
    let reg = Registry::start(env.dir.path());
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
    let out = Command::new("virsh")
        .args(["-c", VIRSH_URI, "domstate", &vm])
        .output()
        .unwrap();
    assert!(!out.status.success(), "domain {vm} left in libvirt");
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
