//! The harness the `platter vm` end-to-end tests share (vm_e2e.rs and
//! vm_libvirtd_restart.rs): the test guest and libvirtd, a per-test store with its own
//! `platter serve` and registry, a guard that removes the test's domains, and console and
//! disk checks. Deadlines only bound waiting for a guest; nothing asserts on timing.
#![allow(dead_code)]

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use platter_launcher::access::{check_qemu_can_reach, Need};

use crate::common::*;

/// Longest wait for a guest to reach a console marker (a boot takes ~5 s under TCG).
pub const BOOT_DEADLINE: Duration = Duration::from_secs(90);
pub use platter_testkit::guest::{ensure_libvirtd, ext4_cat, LIBVIRT_URI as VIRSH_URI};
/// The kernel command line of direct kernel boots; options are appended.
pub const CMDLINE: &str = "console=ttyS0 quiet panic=-1";

// ---------------------------------------------------------------------------------------
// The test guest and libvirtd, prepared once per test binary.

pub struct GuestFiles {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// 64M ext4, `/hello.txt` = `hello from platter`; for direct kernel boot.
    pub disk: PathBuf,
    /// MBR + syslinux + ext4 partition 2; boots from the BIOS.
    pub boot: PathBuf,
}

pub fn guest_files() -> &'static GuestFiles {
    static GUEST: OnceLock<GuestFiles> = OnceLock::new();
    GUEST.get_or_init(|| {
        ensure_libvirtd();
        let out = platter_testkit::guest::build_testdata("build-bootable.sh");
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

// ---------------------------------------------------------------------------------------
// Per-test environment: temp dir, store, server, registry, VM guard.

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// A per-test prefix for libvirt domain names (libvirt's namespace is global).
    pub prefix: String,
}

impl Env {
    pub fn new(tag: &str) -> Env {
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

    pub fn vm(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        ok(&self.store, args)
    }

    /// `vm create NAME --volume VOL` with direct kernel boot and `extra` kernel options.
    pub fn create_kernel_vm(&self, vm: &str, disk: (&str, &str), extra: &str, start: bool) {
        self.create_kernel_vm_with(vm, &[disk.0, disk.1], extra, start);
    }

    /// `vm create NAME DISK_ARGS…` with direct kernel boot and `extra` kernel options.
    pub fn create_kernel_vm_with(&self, vm: &str, disk_args: &[&str], extra: &str, start: bool) {
        let cmdline = format!("{CMDLINE} {extra}");
        let mut args = vec!["vm", "create", vm];
        args.extend_from_slice(disk_args);
        args.extend_from_slice(&[
            "--kernel",
            self.kernel.to_str().unwrap(),
            "--initrd",
            self.initrd.to_str().unwrap(),
            "--cmdline",
            cmdline.trim(),
            "--memory",
            "256M",
        ]);
        if start {
            args.push("--start");
        }
        self.ok(&args);
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Destroys and undefines the test's domains however the test ends.
pub struct VmGuard(pub Vec<String>);

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

#[allow(unused_imports)]
pub use platter_testkit::registry::Registry;

// ---------------------------------------------------------------------------------------
// Commands and checks.

pub fn console(store: &Path, vm: &str) -> String {
    String::from_utf8_lossy(&platter(store, &["vm", "console", vm]).stdout).into_owned()
}

pub fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim() == line)
}

/// The tick numbers the guest printed, in order.
pub fn ticks(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("PLATTER-TICK ")?.parse().ok())
        .collect()
}

/// The VM's state from `platter vm list -o json`.
pub fn state(store: &Path, vm: &str) -> String {
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
pub fn wait_console(store: &Path, vm: &str, lines: &[&str]) -> String {
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
pub fn wait_shut_off(store: &Path, vm: &str) {
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
pub fn export(env: &Env, target: &str) -> PathBuf {
    let file = env.path(&format!("{}.raw", target.replace('@', "_")));
    env.ok(&["volume", "export", target, file.to_str().unwrap()]);
    file
}

/// Copies partition `n` (1-based, primary) of an MBR disk image into its own file.
pub fn extract_partition(disk: &Path, n: usize, out: &Path) -> PathBuf {
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
pub fn log_lines(image: &Path) -> Vec<String> {
    ext4_cat(image, "/log.txt")
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every volume and snapshot (`NAME@SNAP`) of the store.
pub fn volume_names(env: &Env) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["-o", "json", "volume", "list", "--all"])).unwrap();
    list.as_array()
        .unwrap_or_else(|| panic!("volume list: {list}"))
        .iter()
        .filter_map(|v| Some(v["name"].as_str()?.to_string()))
        .collect()
}

/// An ISO 9660 image (Rock Ridge, made by genisoimage) holding `/hello.txt` = `hello`.
pub fn make_iso(env: &Env, name: &str, hello: &str) -> PathBuf {
    let root = env.path(&format!("{name}.d"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), format!("{hello}\n")).unwrap();
    let iso = env.path(name);
    let status = Command::new("genisoimage")
        .args(["-quiet", "-r", "-V", "PLATTERTEST", "-o"])
        .arg(&iso)
        .arg(&root)
        .status()
        .expect("genisoimage (scripts/install.sh)");
    assert!(status.success(), "genisoimage failed");
    iso
}

/// The domain XML libvirt holds for `vm`.
pub fn domain_xml(vm: &str) -> String {
    let out = Command::new("virsh")
        .args(["-c", VIRSH_URI, "dumpxml", vm])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virsh dumpxml {vm}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `vm list -o json`'s row for `vm`.
pub fn list_row(store: &Path, vm: &str) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_str(&ok(store, &["-o", "json", "vm", "list"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == vm)
        .cloned()
        .unwrap_or_else(|| panic!("vm {vm} not in vm list: {list}"))
}

/// Fails unless libvirt has no domain `vm` (deleted with everything else).
pub fn assert_no_domain(vm: &str) {
    let out = Command::new("virsh")
        .args(["-c", VIRSH_URI, "domstate", vm])
        .output()
        .unwrap();
    assert!(!out.status.success(), "domain {vm} left in libvirt");
}
