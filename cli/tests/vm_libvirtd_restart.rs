//! VMs survive a restart of libvirtd: a running guest keeps running (and ticking), `vm
//! list` still shows it, `vm stop` still shuts it down through ACPI, and a VM that was
//! defined but stopped still starts.
//!
//! Its own test binary, with one test: restarting libvirtd would disturb the VM tests of
//! vm_e2e.rs, which run in parallel inside their binary (`cargo test` runs binaries one
//! after the other). Whatever happens, libvirtd is running again when the test ends.

mod common;
mod vm_support;
use common::Serve;
use vm_support::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long libvirtd gets to exit, and then to answer again.
const LIBVIRTD_DEADLINE: Duration = Duration::from_secs(30);

fn virsh_answers() -> bool {
    Command::new("virsh")
        .args(["-c", VIRSH_URI, "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The pid of the running libvirtd, from its pid file (checked against /proc).
fn libvirtd_pid() -> u32 {
    let pid: u32 = std::fs::read_to_string("/run/libvirtd.pid")
        .expect("/run/libvirtd.pid (is libvirtd running?)")
        .trim()
        .parse()
        .expect("a pid in /run/libvirtd.pid");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "libvirtd", "pid {pid} from /run/libvirtd.pid");
    pid
}

fn start_libvirtd_and_wait() -> Result<(), String> {
    let started = Command::new("libvirtd")
        .arg("-d")
        .status()
        .map_err(|e| format!("libvirtd -d: {e}"))?;
    if !started.success() {
        return Err(format!("libvirtd -d: {started}"));
    }
    let deadline = Instant::now() + LIBVIRTD_DEADLINE;
    while !virsh_answers() {
        if Instant::now() > deadline {
            return Err(format!("libvirtd does not answer on {VIRSH_URI}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// SIGTERM to libvirtd (its guests keep running), wait for it to exit, start a new one
/// and wait until it answers.
fn restart_libvirtd() {
    let pid = libvirtd_pid();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
    let deadline = Instant::now() + LIBVIRTD_DEADLINE;
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "libvirtd {pid} did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    start_libvirtd_and_wait().unwrap();
}

/// Makes sure libvirtd runs again when the test ends, even after a failure between the
/// kill and the start (other tests need it). Never panics: it may run while unwinding.
struct LibvirtdGuard;

impl Drop for LibvirtdGuard {
    fn drop(&mut self) {
        if virsh_answers() {
            return;
        }
        let running = Command::new("pgrep")
            .args(["-x", "libvirtd"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !running {
            if let Err(e) = start_libvirtd_and_wait() {
                eprintln!("could not restart libvirtd: {e}");
            }
        }
    }
}

#[test]
fn vms_survive_a_libvirtd_restart() {
    let env = Env::new("lvd");
    let g = guest_files();
    let _srv = Serve::start(&env.store);
    let (running, stopped) = (env.vm("run"), env.vm("off"));
    // Dropped before the VM guard (declared after it), which needs libvirtd.
    let _guard = VmGuard(vec![running.clone(), stopped.clone()]);
    let _libvirtd = LibvirtdGuard;
    env.ok(&["import", g.disk.to_str().unwrap(), "root"]);
    env.ok(&["volume", "clone", "root", "root2"]);
    // Holds long enough for anything here; the ACPI power button ends it.
    env.create_kernel_vm(&running, ("--volume", "root"), "platter.hold=300", true);
    env.create_kernel_vm(&stopped, ("--volume", "root2"), "", false);
    wait_console(&env.store, &running, &["PLATTER-TICK 2"]);

    restart_libvirtd();

    assert_eq!(state(&env.store, &running), "running");
    assert_eq!(state(&env.store, &stopped), "shut-off");
    // The guest is alive: it goes on ticking.
    let seen = ticks(&console(&env.store, &running)).len();
    wait_console(
        &env.store,
        &running,
        &[&format!("PLATTER-TICK {}", seen + 3)],
    );
    let out = env.ok(&["vm", "stop", &running]);
    assert!(out.contains("shut down by the guest"), "{out}");
    assert_eq!(state(&env.store, &running), "shut-off");
    let text = console(&env.store, &running);
    for line in ["PLATTER-ACPI-SHUTDOWN", "PLATTER-DONE"] {
        assert!(has_line(&text, line), "no {line} in:\n{text}");
    }
    let n = ticks(&text).len();
    assert_eq!(ticks(&text), (1..=n as u32).collect::<Vec<_>>(), "{text}");
    // Every tick, before and after the restart, is on the disk.
    let log = log_lines(&export(&env, "root"));
    assert_eq!(log.len(), 1 + n, "{log:?}");
    assert_eq!(log[n], format!("tick {n}"));

    // Defined and stopped before the restart: it starts as usual.
    env.ok(&["vm", "start", &stopped]);
    wait_console(
        &env.store,
        &stopped,
        &[
            "PLATTER-BOOTED",
            "PLATTER-READ: hello from platter",
            "PLATTER-DONE",
        ],
    );
    wait_shut_off(&env.store, &stopped);
    for vm in [&running, &stopped] {
        env.ok(&["vm", "delete", vm]);
    }
}
