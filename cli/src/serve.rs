//! `platter serve`: the NBD server over every volume and snapshot of the store, the
//! control socket every other command uses meanwhile, and optionally a FUSE view and
//! Prometheus metrics. Runs until SIGINT/SIGTERM, then stops accepting, finishes
//! in-flight requests, flushes, unmounts and exits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use platter_disk_server::store_exports::StoreExports;
use platter_disk_server::{serve_metrics, Listener, ServerConfig, TlsConfig};
use platter_snapshotter::Store;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// NBD unix socket [default: STORE/run/nbd.sock].
    #[arg(long)]
    pub nbd_socket: Option<PathBuf>,
    /// Also serve NBD on TCP (e.g. 127.0.0.1:10809).
    #[arg(long, value_name = "ADDR:PORT")]
    pub nbd_listen: Option<String>,
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA.
    #[arg(long, requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Show every volume as DIR/NAME.img through FUSE.
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Prometheus metrics on http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
}

pub fn run(dir: &Path, args: ServeArgs) -> Result<()> {
    let store = Store::open(dir).with_context(|| format!("opening store {}", dir.display()))?;
    let run_dir = store.run_dir();
    let nbd_path = args
        .nbd_socket
        .clone()
        .unwrap_or_else(|| run_dir.join("nbd.sock"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mount = match &args.mount {
        Some(m) => Some(
            platter_fuse::mount(store.clone(), m, &platter_fuse::MountOptions::default())
                .with_context(|| format!("mounting {}", m.display()))?,
        ),
        None => None,
    };
    let result = rt.block_on(serve(store, dir, &nbd_path, &run_dir, &args));
    if let Some(m) = mount {
        m.unmount().context("unmounting the FUSE view")?;
    }
    for p in [nbd_path, run_dir.join("control.sock")] {
        let _ = std::fs::remove_file(p);
    }
    result
}

async fn serve(
    store: Store,
    dir: &Path,
    nbd_path: &Path,
    run_dir: &Path,
    args: &ServeArgs,
) -> Result<()> {
    let shutdown = CancellationToken::new();
    let mut listeners = vec![Listener::Unix(bind_nbd_socket(dir, run_dir, nbd_path)?)];
    if let Some(addr) = &args.nbd_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        listeners.push(Listener::Tcp(l));
    }
    let control = platter_control::server::bind(&run_dir.join("control.sock"))
        .context("binding the control socket")?;
    let mut config = ServerConfig::default();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_ca.clone(),
        });
    }
    let metrics_task = match &args.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics listener on {addr}"))?;
            Some(tokio::spawn(serve_metrics(
                l,
                config.metrics.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    // VMs created through this server get their disks from this NBD socket.
    let nbd_abs = std::path::absolute(nbd_path)
        .with_context(|| format!("NBD socket {}", nbd_path.display()))?;
    let vm_host = Arc::new(platter_control::vm::VmHost::new(nbd_abs));
    // The declarative objects' reconciler: its own thread (it calls libvirt and the
    // store, both blocking), stopped with the server.
    let stop_reconciler = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reconciler = {
        let r = platter_control::objects::Reconciler::new(store.clone(), vm_host.clone());
        let stop = stop_reconciler.clone();
        std::thread::Builder::new()
            .name("reconciler".into())
            .spawn(move || r.run(&stop))
            .context("starting the reconciler")?
    };
    let control_task = tokio::spawn(platter_control::server::run_with(
        control,
        store.clone(),
        Some(vm_host.clone()),
        shutdown.clone(),
    ));
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    eprintln!(
        "platter serve: NBD on {}{}; control on {}",
        nbd_path.display(),
        args.nbd_listen
            .as_deref()
            .map(|a| format!(" and {a}"))
            .unwrap_or_default(),
        run_dir.join("control.sock").display()
    );
    let exports = Arc::new(StoreExports::new(store));
    let served = platter_disk_server::run(listeners, exports, config, shutdown.clone()).await;
    shutdown.cancel();
    stop_reconciler.store(true, std::sync::atomic::Ordering::Relaxed);
    vm_host.runtime().wake();
    let _ = tokio::task::spawn_blocking(move || reconciler.join()).await;
    let _ = control_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    signals.abort();
    served.context("NBD server")
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
) -> Result<tokio::net::UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing stale {}", path.display()))
        }
        _ => {}
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    for d in [store_dir, run_dir] {
        let _ = std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    if let Err(e) = platter_launcher::access::prepare_nbd_socket(path) {
        tracing::warn!(error = %e, "NBD socket left as created: VMs run by libvirt may not reach it");
    }
    Ok(l)
}
