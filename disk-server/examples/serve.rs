//! Serves a raw file (or a memory disk) over NBD on a unix socket: for trying the server
//! with real clients and for comparing it with peers on the same file.
//!
//! ```text
//! cargo run --release -p platter-disk-server --example serve -- \
//!     --socket /tmp/nbd.sock (--file disk.img | --mem 1G | --store DIR [--create NAME:SIZE])
//!     [--export v] [--tcp 127.0.0.1:10809]
//!     [--io-threads 2] [--inline-max 131072] [--inline-write-max N] [--sparse-read-min 65536] [--workers 2]
//!     [--metrics 127.0.0.1:9100]
//! ```
//! Stops on Ctrl-C (graceful shutdown).

use std::path::PathBuf;
use std::sync::Arc;

use platter_disk_server::{
    run, serve_metrics, BlockDevice, ExportProvider, FileDevice, Listener, MemDevice, ServerConfig,
    StaticExports, StoreExports,
};
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut socket = None;
    let mut file = None;
    let mut mem = None;
    let mut store_dir = None;
    let mut create = None;
    let mut tcp = None;
    let mut metrics_addr = None;
    let mut export = "v".to_owned();
    let mut workers = 2usize;
    let mut config = ServerConfig::default();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--socket" => socket = Some(PathBuf::from(val()?)),
            "--file" => file = Some(PathBuf::from(val()?)),
            "--mem" => mem = Some(platter_types::parse_size(&val()?)?),
            "--store" => store_dir = Some(PathBuf::from(val()?)),
            "--create" => create = Some(val()?),
            "--tcp" => tcp = Some(val()?),
            "--metrics" => metrics_addr = Some(val()?),
            "--export" => export = val()?,
            "--workers" => workers = val()?.parse()?,
            "--io-threads" => config.io_threads = val()?.parse()?,
            "--inline-max" => config.inline_max = val()?.parse()?,
            "--inline-write-max" => config.inline_write_max = val()?.parse()?,
            "--sparse-read-min" => config.sparse_read_min = val()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let socket = socket.ok_or("--socket is required")?;
    let exports: Arc<dyn ExportProvider> = if let Some(dir) = store_dir {
        let store = platter_snapshotter::Store::open(&dir)?;
        if let Some(c) = create {
            let (name, size) = c.split_once(':').ok_or("--create NAME:SIZE")?;
            let name = platter_types::Name::new(name)?;
            if store
                .inspect(&platter_types::VolumeRef::volume(name.clone()))
                .is_err()
            {
                store.create_volume(&name, platter_types::parse_size(size)?)?;
            }
        }
        Arc::new(StoreExports::new(store))
    } else {
        let device: Arc<dyn BlockDevice> = match (file, mem) {
            (Some(f), None) => Arc::new(FileDevice::open(&f, false)?),
            (None, Some(size)) => Arc::new(MemDevice::new(size)),
            _ => return Err("give exactly one of --file, --mem and --store".into()),
        };
        let exports = Arc::new(StaticExports::new());
        exports.insert(&export, "", device);
        exports
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let _ = std::fs::remove_file(&socket);
        let mut listeners = vec![Listener::Unix(tokio::net::UnixListener::bind(&socket)?)];
        if let Some(t) = tcp {
            listeners.push(Listener::Tcp(tokio::net::TcpListener::bind(t).await?));
        }
        let shutdown = CancellationToken::new();
        if let Some(m) = metrics_addr {
            let l = tokio::net::TcpListener::bind(m).await?;
            tokio::spawn(serve_metrics(l, config.metrics.clone(), shutdown.clone()));
        }
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        run(listeners, exports, config, shutdown).await?;
        let _ = std::fs::remove_file(&socket);
        Ok(())
    })
}
