//! Debian's `docker-registry` on 127.0.0.1 at a free port, killed on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ca::throwaway_ca;
use crate::{free_port, sh};

/// A docker-registry process; its config, data and log live in `dir`.
pub struct Registry {
    pub port: u16,
    child: Child,
    /// Its config, data and log, removed on drop (kept when the caller gave the place).
    _dir: Option<tempfile::TempDir>,
    /// With TLS: the directory holding the CA certificate (what `--cert-dir` takes).
    pub ca: Option<PathBuf>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Plain HTTP, no auth.
    pub fn start_plain() -> Registry {
        Registry::start(false)
    }

    /// TLS from a throw-away CA, htpasswd auth `user`/`secret`.
    pub fn start_tls_auth() -> Registry {
        Registry::start(true)
    }

    fn start(secure: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let d = dir.path();
        let (mut auth, mut tls, mut ca) = (String::new(), String::new(), None);
        if secure {
            let tca = throwaway_ca(d);
            sh(&format!(
                "htpasswd -Bbn user secret > {}",
                d.join("htpasswd").display()
            ));
            auth = format!(
                "auth:\n  htpasswd:\n    realm: platter\n    path: {d}/htpasswd\n",
                d = d.display()
            );
            tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tca.server_cert.display(),
                tca.server_key.display()
            );
            ca = Some(tca.ca_dir);
        }
        Registry::launch(dir, &tls, &auth, ca)
    }

    /// Starts docker-registry with its config and data in `dir`, with `tls` (lines under
    /// `http:`) and `extra` (top-level sections such as `auth:`), and waits until it
    /// accepts connections. A port taken between choosing and binding it is retried.
    pub fn launch(dir: tempfile::TempDir, tls: &str, extra: &str, ca: Option<PathBuf>) -> Registry {
        let (port, child) = start_in(dir.path(), tls, extra).unwrap_or_else(|e| panic!("{e}"));
        Registry {
            port,
            child,
            _dir: Some(dir),
            ca,
        }
    }

    /// A plain registry keeping its config and data in `dir` (made if needed, kept
    /// after), for callers that report errors instead of panicking (the benchmarks).
    pub fn try_plain_in(dir: &Path) -> Result<Registry, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (port, child) = start_in(dir, "", "")?;
        Ok(Registry {
            port,
            child,
            _dir: None,
            ca: None,
        })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT/REPO:TAG`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("127.0.0.1:{}/{repo_tag}", self.port)
    }
}

/// Writes the config into `d` and starts docker-registry there: its port and process.
fn start_in(d: &Path, tls: &str, extra: &str) -> Result<(u16, Child), String> {
    let log_path = d.join("registry.log");
    for _attempt in 0..5 {
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{extra}",
            d = d.display()
        );
        std::fs::write(d.join("config.yml"), config)
            .map_err(|e| format!("registry config: {e}"))?;
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log.try_clone().map(Stdio::from).unwrap_or(Stdio::null());
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(Stdio::from(log))
            .stderr(err)
            .spawn()
            .map_err(|e| format!("docker-registry (run scripts/install.sh): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok((port, child));
            }
            // Exited: most likely the port was taken meanwhile; try another.
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(format!(
        "docker-registry did not start: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    ))
}
