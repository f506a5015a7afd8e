//! `platter serve`: its arguments, and the line it prints once it listens. What it runs
//! is `platter_serve::run`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use platter_disk_server::TlsConfig;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// NBD unix socket [default: STORE/run/nbd.sock].
    #[arg(long)]
    pub nbd_socket: Option<PathBuf>,
    /// Also serve NBD on TCP (e.g. 127.0.0.1:10809).
    #[arg(long, value_name = "ADDR:PORT")]
    pub nbd_listen: Option<String>,
    /// Serve NBD over TLS on --nbd-listen with this certificate (PEM) ...
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// ... and this private key (PEM).
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
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert,
            key,
            client_ca: args.tls_ca,
        }),
        _ => None,
    };
    let opts = platter_serve::Options {
        nbd_socket: args.nbd_socket,
        nbd_listen: args.nbd_listen,
        tls,
        mount: args.mount,
        metrics: args.metrics,
        shutdown: None,
    };
    platter_serve::run(dir, &opts, |at| {
        eprintln!(
            "platter serve: NBD on {}{}; control on {}",
            at.nbd_socket.display(),
            at.nbd_tcp
                .as_deref()
                .map(|a| format!(" and {a}"))
                .unwrap_or_default(),
            at.control_socket.display()
        );
    })?;
    Ok(())
}
