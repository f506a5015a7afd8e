//! Test support shared by the integration tests of several crates: the real components a
//! test starts on 127.0.0.1 with random ports and temp dirs, and tears down on drop.
//!
//! - [`http::HttpServer`]: a small HTTP/1.1 (or HTTPS) file server with failure modes,
//!   redirects, auth and required headers, recording every request;
//! - [`ca::throwaway_ca`]: a CA and a server certificate for 127.0.0.1, made by `openssl`;
//! - [`registry::Registry`]: Debian's `docker-registry`, plain or with TLS and htpasswd;
//! - [`guest`]: libvirtd started as install.sh does, the testdata/ guests built once, files
//!   read out of their ext4 disks.
//!
//! Everything here panics on failure: it is only ever called by tests.

pub mod ca;
pub mod guest;
pub mod http;
pub mod registry;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Runs a command, panicking with its stderr on failure; returns its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (run scripts/install.sh)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell pipeline.
pub fn sh(script: &str) -> String {
    run("sh", &["-c", script])
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Stops `child` as a user would: SIGTERM, up to `grace` for it to exit (so it can clean
/// up), then SIGKILL. Returns false when it had to be killed.
pub fn terminate(child: &mut Child, grace: Duration) -> bool {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}
