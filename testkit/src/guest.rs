//! The test guests and libvirt: starting `virtlogd`/`libvirtd` (there is no systemd
//! here), building the testdata/ guests once, and reading files out of their ext4 disks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The libvirt URI every VM test uses.
pub const LIBVIRT_URI: &str = "qemu:///system";

fn quietly(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn libvirtd_answers() -> bool {
    quietly(Command::new("virsh").args(["-c", LIBVIRT_URI, "version"]))
}

/// Starts virtlogd and libvirtd when they are not running, as scripts/install.sh does,
/// and waits until `qemu:///system` answers.
/// Tests of one binary call this at once: one of them starts the daemons.
pub fn ensure_libvirtd() {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if libvirtd_answers() {
        return;
    }
    for daemon in ["virtlogd", "libvirtd"] {
        if !quietly(Command::new("pgrep").args(["-x", daemon])) {
            // Its status is not the verdict (another test binary may have started it
            // a moment ago, and the second daemon exits): libvirtd answering is.
            let _ = quietly(Command::new(daemon).arg("-d"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !libvirtd_answers() {
        assert!(
            Instant::now() < deadline,
            "libvirtd does not answer on {LIBVIRT_URI} within 30 s: run scripts/install.sh"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The repository's root (the testkit crate sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where testdata/ scripts cache what they build (`PLATTER_TESTDATA`, else
/// target/testdata).
pub fn testdata_dir() -> PathBuf {
    std::env::var_os("PLATTER_TESTDATA")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/testdata"))
}

/// Runs `testdata/NAME` (it builds once and then reuses its output); returns the
/// directory it wrote to.
pub fn build_testdata(name: &str) -> PathBuf {
    let out = testdata_dir();
    let status = Command::new("bash")
        .arg(repo_root().join("testdata").join(name))
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running testdata/{name}: {e}"));
    assert!(status.success(), "testdata/{name} failed: {status}");
    out
}

/// A file in an ext4 image, read with debugfs (no mount); `None` if it does not exist.
pub fn ext4_cat(image: &Path, file: &str) -> Option<String> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("debugfs (e2fsprogs): {e}: run scripts/install.sh"));
    assert!(
        out.status.success(),
        "debugfs on {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    if String::from_utf8_lossy(&out.stderr).contains("File not found") {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
