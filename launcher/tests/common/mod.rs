//! Shared harness for the launcher's integration tests: libvirtd, the test guest from
//! testdata/, a scratch directory the `libvirt-qemu` user can traverse, and a stand-in
//! NBD server (`qemu-nbd`) until the tests switch to `platter serve`.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use platter_launcher::Launcher;
use platter_types::Name;

/// How long a TCG guest gets to print a marker (it takes a few seconds when alone).
pub const BOOT_DEADLINE: Duration = Duration::from_secs(90);

fn run(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

use platter_testkit::guest::build_testdata as run_script;
#[allow(unused_imports)]
pub use platter_testkit::guest::ensure_libvirtd;

/// Builds (once) the direct-kernel-boot guest: vmlinuz, initrd.gz, disk.raw.
pub fn guest() -> PathBuf {
    run_script("build-guest.sh")
}

/// Builds (once) the BIOS-bootable disk boot.raw.
pub fn bootable() -> PathBuf {
    run_script("build-bootable.sh")
}

/// A temp directory under /tmp that `libvirt-qemu` can traverse (tempdirs are 0700).
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("platter-test-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Copies `src` in (sparsely: the disks are mostly holes) and returns the new path.
    pub fn copy_in(&self, src: &Path, name: &str) -> PathBuf {
        let dst = self.path(name);
        let ok = run(Command::new("cp").arg("--sparse=always").arg(src).arg(&dst));
        assert!(ok, "cp {src:?} {dst:?} failed");
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
        dst
    }
}

/// `qemu-nbd` serving one raw file as export `export` on a unix socket; killed on drop.
pub struct NbdServer {
    child: Child,
    pub socket: PathBuf,
}

impl NbdServer {
    pub fn start(file: &Path, socket: &Path, export: &str) -> NbdServer {
        let child = Command::new("qemu-nbd")
            .arg("-k")
            .arg(socket)
            .args(["-f", "raw", "-x", export, "-t", "-e", "8"])
            .arg(file)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn qemu-nbd");
        let mut server = NbdServer {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("qemu-nbd exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "qemu-nbd made no socket at {socket:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        platter_launcher::access::prepare_nbd_socket(socket)
            .expect("prepare socket for libvirt-qemu");
        server
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed qemu-nbd leaves its socket behind; a successor must not find it there
        // (start() waits for the socket to appear, then fixes its permissions).
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A VM name unique to this process and call.
pub fn unique_name(prefix: &str) -> Name {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Name::new(&format!("platter-test-{prefix}-{}-{n}", std::process::id())).unwrap()
}

/// Deletes the VM when the test ends, pass or fail.
pub struct VmGuard<'a> {
    pub launcher: &'a Launcher,
    pub name: String,
}

impl Drop for VmGuard<'_> {
    fn drop(&mut self) {
        let _ = self.launcher.delete(&self.name);
    }
}

/// Waits until the file at `path` contains every one of `needles`; returns its text.
/// Panics with the text so far on `deadline`.
pub fn wait_for_console(path: &Path, needles: &[&str], deadline: Duration) -> String {
    let end = Instant::now() + deadline;
    loop {
        let text = std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        if text.contains("PLATTER-ERROR") || Instant::now() >= end {
            panic!("waiting for {needles:?} in {path:?}; console so far:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the VM is no longer running.
pub fn wait_shut_off(launcher: &Launcher, name: &str, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let state = launcher.state(name).unwrap();
        if state == platter_launcher::VmState::ShutOff {
            return;
        }
        assert!(
            Instant::now() < end,
            "vm {name} still {state} after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A file from an ext4 image, read with debugfs (no mount). `offset` is where the file
/// system starts in `image`, in bytes.
pub fn ext4_cat(image: &Path, offset: u64, file: &str) -> String {
    let fs_image;
    let target = if offset == 0 {
        image.to_path_buf()
    } else {
        fs_image = image.with_extension("part.img");
        let ok = run(Command::new("dd")
            .arg(format!("if={}", image.display()))
            .arg(format!("of={}", fs_image.display()))
            .args([
                "bs=512",
                &format!("skip={}", offset / 512),
                "conv=sparse",
                "status=none",
            ]));
        assert!(ok, "dd of the partition failed");
        fs_image.clone()
    };
    platter_testkit::guest::ext4_cat(&target, file)
        .unwrap_or_else(|| panic!("{file} is not in {}", image.display()))
}
