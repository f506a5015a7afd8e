//! The NBD server: `run(listeners, exports, config, shutdown)` accepts clients on unix and
//! TCP listeners, runs the handshake (with STARTTLS) and hands each client to a
//! [`crate::connection`] until it leaves or the shutdown token fires.
//!
//! Listeners and the token are injected (the mini-redis model), so tests start the server
//! on a temp socket or `127.0.0.1:0` and stop it. A client can never take the server down:
//! its errors end its own connection only. Shutdown stops accepting, lets every connection
//! finish its in-flight requests and flush its device, then returns.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection;
use crate::device::ExportProvider;
use crate::iopool::IoPool;
use crate::metrics::{ClientGuard, Metrics};
use crate::negotiate::{self, HandshakeState, Outcome};
use crate::tls::{self, TlsConfig, TlsError};
use platter_nbd_proto::consts::{FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES};
use platter_nbd_proto::{self as proto, ProtoError};

/// Send buffer asked for on unix sockets (capped by `net.core.wmem_max`).
const UNIX_SNDBUF: usize = 2 << 20;

/// A socket the server accepts clients on.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Self {
        Listener::Unix(l)
    }
}

/// How the server behaves. `Default` is what `platter serve` uses.
#[derive(Clone)]
pub struct ServerConfig {
    /// With a certificate, TCP clients must use STARTTLS; unix clients may.
    pub tls: Option<TlsConfig>,
    /// The export that the empty name selects.
    pub default_export: Option<String>,
    /// Threads for large or slow device calls; 0 runs everything on connection tasks.
    pub io_threads: usize,
    /// Reads, trims and zeroing up to this many bytes run on the connection task; larger
    /// ones go to the IO threads so socket IO overlaps device IO.
    pub inline_max: u32,
    /// Writes up to this many bytes run on the connection task; larger ones have their
    /// payload read straight into a reused buffer and are written by the IO threads while
    /// the next request arrives (1.4x faster for 1 MiB writes on an idle machine; on a
    /// CPU-starved one inline is a little cheaper).
    pub inline_write_max: u32,
    /// Reads at least this long ask the device for holes and answer them with
    /// `OFFSET_HOLE` chunks (0: every read; the lookup costs ~5% CPU on 4 KiB reads).
    pub sparse_read_min: u32,
    /// Per connection: bytes of requests handed to IO threads at once.
    pub max_inflight_bytes: usize,
    /// Clients beyond this many are disconnected at once.
    pub max_clients: usize,
    /// Time a client has to finish the handshake (and again after STARTTLS).
    pub handshake_timeout: Duration,
    /// Where counters go; share it with [`crate::serve_metrics`].
    pub metrics: Arc<Metrics>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tls: None,
            default_export: None,
            io_threads: 2,
            inline_max: 128 * 1024,
            inline_write_max: 128 * 1024,
            sparse_read_min: 0,
            max_inflight_bytes: 64 << 20,
            max_clients: 1024,
            handshake_timeout: Duration::from_secs(30),
            metrics: Metrics::new(),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot start {what}: {source}")]
    Start {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Why one connection ended early (logged, never fatal to the server).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    #[error("client closed the connection")]
    Eof,
    #[error("closed: {0}")]
    Closed(&'static str),
    #[error("handshake timed out")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// What every connection shares.
pub(crate) struct Shared {
    pub exports: Arc<dyn ExportProvider>,
    pub config: ServerConfig,
    pub tls: Option<TlsAcceptor>,
    pub metrics: Arc<Metrics>,
    pub pool: Option<IoPool>,
    pub shutdown: CancellationToken,
}

/// Serves NBD on `listeners` until `shutdown` is cancelled, then drains every connection.
pub async fn run(
    listeners: Vec<Listener>,
    exports: Arc<dyn ExportProvider>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let pool = match config.io_threads {
        0 => None,
        n => Some(IoPool::new(n).map_err(|source| ServerError::Start {
            what: "IO threads",
            source,
        })?),
    };
    let shared = Arc::new(Shared {
        exports,
        metrics: config.metrics.clone(),
        config,
        tls,
        pool,
        shutdown: shutdown.clone(),
    });
    let tracker = TaskTracker::new();
    for l in listeners {
        tracker.spawn(accept_loop(l, shared.clone(), tracker.clone()));
    }
    shutdown.cancelled().await;
    tracker.close();
    tracker.wait().await;
    tracing::info!("NBD server stopped");
    Ok(())
}

async fn accept_loop(l: Listener, shared: Arc<Shared>, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = accept(&l) => a,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.metrics.clients() >= shared.config.max_clients as i64 {
            tracing::warn!("too many clients; refusing one");
            continue;
        }
        let shared = shared.clone();
        tracker.spawn(async move {
            let guard = shared.metrics.connected();
            let r = match stream {
                Accepted::Tcp(s) => {
                    let _ = s.set_nodelay(true);
                    let tls_required = shared.tls.is_some();
                    serve_client(s, tls_required, &shared, guard).await
                }
                Accepted::Unix(s) => {
                    // A bigger send buffer lets a large read reply go out in one or two
                    // writes instead of a dozen wakeups (the default is ~200 KiB).
                    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&s, UNIX_SNDBUF);
                    serve_client(s, false, &shared, guard).await
                }
            };
            match r {
                Ok(()) | Err(ConnError::Eof) => {}
                Err(e) => tracing::debug!(error = %e, "connection ended"),
            }
        });
    }
}

enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Accepted> {
    match l {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// A stream the transmission phase can split into independent halves.
pub(crate) trait SplitStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type R: AsyncRead + Unpin + Send;
    type W: AsyncWrite + Unpin + Send;
    /// Whether written bytes may sit in a buffer until `flush` (TLS records).
    const NEEDS_FLUSH: bool;
    fn split_io(self) -> (Self::R, Self::W);
    /// Whether [`SplitStream::try_read`] can see bytes without waiting (TLS records need
    /// the async path).
    const POLLS: bool = false;
    /// Reads what the socket holds now, without waiting (`WouldBlock` when it holds
    /// nothing). Asks the socket itself: tokio's readiness is only refreshed when its
    /// driver runs, which a polling task keeps from happening.
    fn try_read(_r: &mut Self::R, _buf: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl SplitStream for TcpStream {
    type R = tokio::net::tcp::OwnedReadHalf;
    type W = tokio::net::tcp::OwnedWriteHalf;
    const NEEDS_FLUSH: bool = false;
    const POLLS: bool = true;
    fn split_io(self) -> (Self::R, Self::W) {
        self.into_split()
    }
    fn try_read(r: &mut Self::R, buf: &mut [u8]) -> std::io::Result<usize> {
        recv_now(r.as_ref(), buf)
    }
}

impl SplitStream for UnixStream {
    type R = tokio::net::unix::OwnedReadHalf;
    type W = tokio::net::unix::OwnedWriteHalf;
    const NEEDS_FLUSH: bool = false;
    const POLLS: bool = true;
    fn split_io(self) -> (Self::R, Self::W) {
        self.into_split()
    }
    fn try_read(r: &mut Self::R, buf: &mut [u8]) -> std::io::Result<usize> {
        recv_now(r.as_ref(), buf)
    }
}

/// One non-blocking `recv` on a socket, whatever tokio believes about its readiness.
fn recv_now(fd: &impl std::os::fd::AsFd, buf: &mut [u8]) -> std::io::Result<usize> {
    rustix::net::recv(fd, buf, rustix::net::RecvFlags::DONTWAIT).map_err(Into::into)
}

type Tls<S> = tokio_rustls::server::TlsStream<S>;

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> SplitStream for Tls<S> {
    type R = tokio::io::ReadHalf<Tls<S>>;
    type W = tokio::io::WriteHalf<Tls<S>>;
    const NEEDS_FLUSH: bool = true;
    fn split_io(self) -> (Self::R, Self::W) {
        tokio::io::split(self)
    }
}

/// Runs `fut` under the handshake timeout, giving up on shutdown.
async fn bounded<T>(
    shared: &Shared,
    fut: impl std::future::Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    tokio::select! {
        _ = shared.shutdown.cancelled() => Err(ConnError::Closed("server shutting down")),
        r = tokio::time::timeout(shared.config.handshake_timeout, fut) => r.unwrap_or(Err(ConnError::Timeout)),
    }
}

async fn serve_client<S: SplitStream>(
    mut stream: S,
    tls_required: bool,
    shared: &Arc<Shared>,
    mut guard: ClientGuard,
) -> Result<(), ConnError> {
    let mut buf = BytesMut::with_capacity(4096);
    let first = bounded(shared, async {
        let mut out = Vec::with_capacity(18);
        proto::encode_greeting(&mut out, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        stream.write_all(&out).await?;
        negotiate::fill(&mut stream, &mut buf, 4).await?;
        let flags = proto::parse_client_flags(&buf)?.ok_or(ConnError::Eof)?;
        bytes::Buf::advance(&mut buf, 4);
        let mut st = HandshakeState::new(flags, tls_required);
        let o = negotiate::negotiate(&mut stream, &mut buf, &mut st, shared).await?;
        Ok((o, st))
    })
    .await;
    let (outcome, mut st) = match first {
        Ok(x) => x,
        Err(e) => {
            if !matches!(e, ConnError::Eof) {
                shared.metrics.handshake_failed();
            }
            return Err(e);
        }
    };
    match outcome {
        Outcome::Close => Ok(()),
        Outcome::Go(n) => {
            guard.attach(shared.metrics.export(&n.name));
            connection::transmit(stream, buf, n, shared.clone()).await
        }
        Outcome::StartTls => {
            let acceptor = shared.tls.clone().ok_or(ConnError::Closed("no TLS"))?;
            let mut tls = bounded(shared, async {
                acceptor.accept(stream).await.map_err(ConnError::Tls)
            })
            .await
            .inspect_err(|_| shared.metrics.handshake_failed())?;
            st.start_tls();
            let mut buf = BytesMut::with_capacity(4096);
            let o = bounded(
                shared,
                negotiate::negotiate(&mut tls, &mut buf, &mut st, shared),
            )
            .await?;
            match o {
                Outcome::Go(n) => {
                    guard.attach(shared.metrics.export(&n.name));
                    connection::transmit(tls, buf, n, shared.clone()).await
                }
                Outcome::Close | Outcome::StartTls => {
                    let _ = tls.shutdown().await;
                    Ok(())
                }
            }
        }
    }
}
