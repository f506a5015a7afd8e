//! Test harness: starts the server in-process (its own tokio runtime on a background
//! thread) on a temp unix socket and optionally 127.0.0.1:0, and runs real tools against
//! it. The NBD client the tests speak with is `platter_nbd_proto::client`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use platter_disk_server::{
    run, ExportProvider, Listener, ServerConfig, ServerError, StaticExports,
};
use tokio_util::sync::CancellationToken;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Counts panics anywhere in the process (server tasks included) so tests can assert none
/// happened even though tokio would swallow a panicking task.
pub fn install_panic_counter() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            prev(info);
        }));
    });
}

pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub tcp: Option<SocketAddr>,
    pub exports: Arc<StaticExports>,
    pub config: ServerConfig,
    pub rt: tokio::runtime::Handle,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub fn start(exports: Arc<StaticExports>, config: ServerConfig, tcp: bool) -> Self {
        let mut s = Self::start_with(exports.clone(), config, tcp);
        s.exports = exports;
        s
    }

    /// Starts the server over any export provider.
    pub fn start_with(provider: Arc<dyn ExportProvider>, config: ServerConfig, tcp: bool) -> Self {
        install_panic_counter();
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nbd.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (listeners, tcp_addr) = rt.block_on(async {
            let mut l = vec![Listener::Unix(
                tokio::net::UnixListener::bind(&sock).unwrap(),
            )];
            let mut addr = None;
            if tcp {
                let t = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr = Some(t.local_addr().unwrap());
                l.push(Listener::Tcp(t));
            }
            (l, addr)
        });
        let shutdown = CancellationToken::new();
        let handle = rt.handle().clone();
        let (s, e, c) = (shutdown.clone(), provider, config.clone());
        let thread = std::thread::spawn(move || {
            let r = rt.block_on(run(listeners, e, c, s));
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            r
        });
        TestServer {
            dir,
            sock,
            tcp: tcp_addr,
            exports: Arc::new(StaticExports::new()),
            config,
            rt: handle,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.sock.display())
    }

    pub fn tcp_uri(&self, export: &str) -> String {
        format!("nbd://{}/{export}", self.tcp.unwrap())
    }

    /// Fires the shutdown token without waiting.
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Cancels the token and waits for `run` to return.
    pub fn stop(&mut self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Runs a command, returning its output; panics with stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}
