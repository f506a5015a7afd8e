//! Helpers shared by the CLI integration tests: run `platter` against a store.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_platter");

pub fn platter(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(store: &Path, args: &[&str]) -> String {
    let out = platter(store, args);
    assert!(
        out.status.success(),
        "platter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its error, checked to be one line.
pub fn fails(store: &Path, args: &[&str]) -> String {
    let out = platter(store, args);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "platter {args:?} succeeded");
    assert_eq!(
        err.lines().count(),
        1,
        "platter {args:?}: not one line: {err}"
    );
    err
}

/// Runs a command with `-o json` and parses its one JSON document.
pub fn json(store: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(store, &a)).unwrap()
}

/// `platter serve` on a store: started and waited for until it listens, stopped with
/// SIGTERM (then SIGKILL after 20 s) when dropped.
pub struct Serve {
    pub child: Child,
    pub store: PathBuf,
}

impl Serve {
    pub fn start(store: &Path) -> Serve {
        Serve::start_with_env(store, &[])
    }

    /// With extra environment (e.g. `SSL_CERT_FILE`: the CAs the host trusts).
    pub fn start_with_env(store: &Path, env: &[(&str, &Path)]) -> Serve {
        Serve {
            child: spawn_serve_with_env(store, env),
            store: store.to_path_buf(),
        }
    }

    /// The NBD URI of `export` on this server's unix socket.
    pub fn uri(&self, export: &str) -> String {
        format!(
            "nbd+unix:///{export}?socket={}",
            self.store.join("run/nbd.sock").display()
        )
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and nothing else.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGKILL, then a new server on the same store at once.
    pub fn kill9_and_restart(&mut self) -> Duration {
        let t = Instant::now();
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = spawn_serve(&self.store);
        t.elapsed()
    }
}

/// Starts `platter serve` and waits until it says where it listens (warnings may come
/// first); it exits, closing stderr, if it cannot start.
pub fn spawn_serve(store: &Path) -> Child {
    spawn_serve_with_env(store, &[])
}

fn spawn_serve_with_env(store: &Path, env: &[(&str, &Path)]) -> Child {
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .arg("serve")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
        platter_testkit::terminate(&mut self.child, Duration::from_secs(20));
    }
}

/// An HTTP server that answers every GET with `total` bytes of non-zero data, 64 KiB
/// every few milliseconds, without Range support: an import of it stays in flight.
pub struct SlowHttp {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl SlowHttp {
    pub fn start(total: u64) -> SlowHttp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(c) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve_slowly(c, total, &st));
            }
        });
        SlowHttp { addr, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/disk.raw", self.addr)
    }
}

impl Drop for SlowHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// The bytes the server sends: 64 KiB chunks of `i % 251 + 1`.
pub fn slow_http_bytes(total: u64) -> Vec<u8> {
    (0..total)
        .map(|i| ((i % (64 << 10)) % 251 + 1) as u8)
        .collect()
}

fn serve_slowly(mut c: TcpStream, total: u64, stop: &AtomicBool) {
    let mut head = Vec::new();
    let mut b = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    let hdr = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    );
    if c.write_all(hdr.as_bytes()).is_err() {
        return;
    }
    let chunk: Vec<u8> = (0..64 << 10).map(|i| (i % 251 + 1) as u8).collect();
    let mut sent = 0u64;
    while sent < total && !stop.load(Ordering::SeqCst) {
        let n = (total - sent).min(chunk.len() as u64) as usize;
        if c.write_all(&chunk[..n]).is_err() {
            return;
        }
        sent += n as u64;
        std::thread::sleep(Duration::from_millis(5));
    }
}
