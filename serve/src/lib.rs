//! `platter serve`, composed: the NBD server over every volume and snapshot of the store,
//! the control socket every other command uses meanwhile, the reconciler of the
//! declarative objects, and optionally a FUSE view and Prometheus metrics. [`run`] holds
//! them until SIGINT/SIGTERM (or [`Options::shutdown`]), then stops accepting, finishes
//! in-flight requests, stops the reconciler, flushes, unmounts and returns.
//!
//! The binary parses arguments into [`Options`] and prints; everything else is here.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use platter_disk_server::store_exports::StoreExports;
use platter_disk_server::{serve_metrics, Listener, ServerConfig, ServerError, TlsConfig};
use platter_snapshotter::{Store, StoreError};

/// What to serve, beyond the store.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The NBD unix socket; default `STORE/run/nbd.sock`.
    pub nbd_socket: Option<PathBuf>,
    /// Also NBD on this TCP address.
    pub nbd_listen: Option<String>,
    pub tls: Option<TlsConfig>,
    /// The FUSE view's mount point.
    pub mount: Option<PathBuf>,
    /// Prometheus metrics on this address.
    pub metrics: Option<String>,
    /// Cancelled to stop (besides SIGINT/SIGTERM); a fresh token when not given.
    pub shutdown: Option<CancellationToken>,
}

/// Where the server listens, once it does (for the caller to print).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub nbd_socket: PathBuf,
    pub nbd_tcp: Option<String>,
    pub control_socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening store {}: {source}", dir.display())]
    Store { dir: PathBuf, source: StoreError },
    #[error("{what} {}: {source}", at.display())]
    Io {
        what: &'static str,
        at: PathBuf,
        source: std::io::Error,
    },
    #[error("listening for {what} on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("FUSE view at {}: {source}", dir.display())]
    Fuse {
        dir: PathBuf,
        source: Box<platter_fuse::FuseError>,
    },
    #[error("NBD server: {0}")]
    Nbd(#[from] ServerError),
}

/// Serves the store at `dir` until stopped; `ready` is called once everything listens.
pub fn run(dir: &Path, opts: &Options, ready: impl FnOnce(&Endpoints)) -> Result<(), ServeError> {
    let store = Store::open(dir).map_err(|source| ServeError::Store {
        dir: dir.to_path_buf(),
        source,
    })?;
    let layout = store.layout();
    let nbd_path = opts
        .nbd_socket
        .clone()
        .unwrap_or_else(|| layout.nbd_socket());
    let endpoints = Endpoints {
        nbd_socket: nbd_path.clone(),
        nbd_tcp: opts.nbd_listen.clone(),
        control_socket: layout.control_socket(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io {
            what: "starting the runtime for",
            at: dir.to_path_buf(),
            source,
        })?;
    let mount = match &opts.mount {
        Some(m) => Some(
            platter_fuse::mount(store.clone(), m, &platter_fuse::MountOptions::default()).map_err(
                |source| ServeError::Fuse {
                    dir: m.clone(),
                    source: Box::new(source),
                },
            )?,
        ),
        None => None,
    };
    let result = rt.block_on(serve(store, dir, &endpoints, opts, ready));
    if let (Some(m), Some(dir)) = (mount, &opts.mount) {
        if let Err(source) = m.unmount() {
            return Err(ServeError::Fuse {
                dir: dir.clone(),
                source: Box::new(source),
            });
        }
    }
    for p in [&endpoints.nbd_socket, &endpoints.control_socket] {
        let _ = std::fs::remove_file(p);
    }
    result
}

async fn serve(
    store: Store,
    dir: &Path,
    at: &Endpoints,
    opts: &Options,
    ready: impl FnOnce(&Endpoints),
) -> Result<(), ServeError> {
    let shutdown = opts.shutdown.clone().unwrap_or_default();
    let run_dir = store.run_dir();
    let mut listeners = vec![Listener::Unix(bind_nbd_socket(
        dir,
        &run_dir,
        &at.nbd_socket,
    )?)];
    if let Some(addr) = &opts.nbd_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen {
                what: "NBD",
                addr: addr.clone(),
                source,
            })?;
        listeners.push(Listener::Tcp(l));
    }
    let control =
        platter_control::server::bind(&at.control_socket).map_err(|source| ServeError::Io {
            what: "binding the control socket",
            at: at.control_socket.clone(),
            source,
        })?;
    let config = ServerConfig {
        tls: opts.tls.clone(),
        ..ServerConfig::default()
    };
    let metrics_task = match &opts.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Listen {
                    what: "metrics",
                    addr: addr.clone(),
                    source,
                })?;
            Some(tokio::spawn(serve_metrics(
                l,
                config.metrics.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    // VMs created through this server get their disks from this NBD socket.
    let nbd_abs = std::path::absolute(&at.nbd_socket).map_err(|source| ServeError::Io {
        what: "resolving the NBD socket",
        at: at.nbd_socket.clone(),
        source,
    })?;
    let vm_host = Arc::new(platter_control::vm::VmHost::new(nbd_abs));
    // The declarative objects' reconciler: its own thread (it calls libvirt and the
    // store, both blocking), stopped with the server.
    let stop_reconciler = Arc::new(AtomicBool::new(false));
    let reconciler = {
        let r = platter_control::objects::Reconciler::new(store.clone(), vm_host.clone());
        let stop = stop_reconciler.clone();
        std::thread::Builder::new()
            .name("reconciler".into())
            .spawn(move || r.run(&stop))
            .map_err(|source| ServeError::Io {
                what: "starting the reconciler for",
                at: dir.to_path_buf(),
                source,
            })?
    };
    let control_task = tokio::spawn(platter_control::server::run_with(
        control,
        store.clone(),
        Some(vm_host.clone()),
        shutdown.clone(),
    ));
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    ready(at);
    let exports = Arc::new(StoreExports::new(store));
    let served = platter_disk_server::run(listeners, exports, config, shutdown.clone()).await;
    shutdown.cancel();
    stop_reconciler.store(true, Ordering::Relaxed);
    vm_host.runtime().wake();
    let _ = tokio::task::spawn_blocking(move || reconciler.join()).await;
    let _ = control_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    signals.abort();
    Ok(served?)
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

/// Binds the NBD socket so that qemu started by libvirt (user `libvirt-qemu`) can connect:
/// the socket is group `libvirt-qemu`, mode 0660, and every directory up to it traversable.
fn bind_nbd_socket(
    store_dir: &Path,
    run_dir: &Path,
    path: &Path,
) -> Result<tokio::net::UnixListener, ServeError> {
    let io = |what, source| ServeError::Io {
        what,
        at: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("removing the stale socket", e))
        }
        _ => {}
    }
    let l = tokio::net::UnixListener::bind(path).map_err(|e| io("binding", e))?;
    for d in [store_dir, run_dir] {
        let _ = std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    if let Err(e) = platter_launcher::access::prepare_nbd_socket(path) {
        tracing::warn!(error = %e, "NBD socket left as created: VMs run by libvirt may not reach it");
    }
    Ok(l)
}
