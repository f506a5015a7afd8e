//! The control server of `platter serve`: newline-delimited JSON requests on a unix socket,
//! each handled by the dispatcher on a blocking thread, events streamed back as they come.
//!
//! A request line may carry file descriptors as SCM_RIGHTS ancillary data: an import from
//! `-` reads the client's stdin through the one sent with it. While a request runs, the
//! connection's read side is watched: end of file (the client went away, or shut down its
//! write side on Ctrl-C) cancels the request, and an import or push in flight then removes
//! what it wrote; the server keeps serving everyone else.
//!
//! Nothing from a client is trusted: lines and descriptors are bounded, a descriptor is
//! only ever read from, and descriptors no request takes are closed with the connection.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use platter_importer::CancelFlag;
use platter_snapshotter::Store;

use crate::api::{Reply, Request};
use crate::dispatch::{handle, Context, Stdin};
use crate::error::{ErrorKind, Failure};
use crate::vm::VmHost;

/// Longest request line accepted; longer requests get an error and the connection closes.
const MAX_REQUEST: usize = 16 << 20;
/// Descriptors accepted with one message (more are closed by the kernel: MSG_CTRUNC).
const MAX_FDS_PER_MESSAGE: usize = 4;
/// Descriptors received but not yet taken by a request; more closes the connection.
const MAX_PENDING_FDS: usize = 4;
/// Bytes asked for per receive.
const READ_CHUNK: usize = 64 << 10;

/// Binds the control socket with mode 0600 (only the owner may drive the store).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

/// Serves until `shutdown` is cancelled; in-flight requests finish first. VM requests
/// that need served disks are refused (see [`run_with`]).
pub async fn run(listener: UnixListener, store: Store, shutdown: CancellationToken) {
    run_with(listener, store, None, shutdown).await
}

/// [`run`], with the [`VmHost`] of the `platter serve` that serves the disks: VMs can be
/// created and started through this server.
pub async fn run_with(
    listener: UnixListener,
    store: Store,
    vm_host: Option<Arc<VmHost>>,
    shutdown: CancellationToken,
) {
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    let store = store.clone();
                    let shutdown = shutdown.clone();
                    let vm_host = vm_host.clone();
                    tracker.spawn(async move {
                        if let Err(e) = serve_conn(stream, store, vm_host, shutdown).await {
                            tracing::debug!(error = %e, "control connection ended");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "control accept failed"),
            },
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// The next thing on a connection.
enum Next {
    Line(Vec<u8>),
    TooLong,
    End,
}

/// The read side of a connection: bytes and descriptors received, not yet taken.
struct Incoming {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    fds: VecDeque<OwnedFd>,
    scratch: Vec<u8>,
    eof: bool,
}

impl Incoming {
    fn new(rd: OwnedReadHalf) -> Incoming {
        Incoming {
            rd,
            buf: Vec::new(),
            scanned: 0,
            fds: VecDeque::new(),
            scratch: vec![0; READ_CHUNK],
            eof: false,
        }
    }

    /// One receive: appends bytes and queues descriptors. Returns the byte count (0 at
    /// end of file). Cancel-safe: data is only taken in the same poll that returns it.
    async fn fill(&mut self) -> std::io::Result<usize> {
        loop {
            self.rd.readable().await?;
            let Incoming { rd, scratch, .. } = self;
            let got = rd.as_ref().try_io(Interest::READABLE, || {
                let mut space = [0u8; rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
                let mut anc = RecvAncillaryBuffer::new(&mut space);
                let r = rustix::net::recvmsg(
                    rd.as_ref(),
                    &mut [IoSliceMut::new(scratch)],
                    &mut anc,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                let mut fds = Vec::new();
                for msg in anc.drain() {
                    if let RecvAncillaryMessage::ScmRights(it) = msg {
                        fds.extend(it);
                    }
                }
                Ok((r.bytes, fds))
            });
            match got {
                Ok((n, fds)) => {
                    self.fds.extend(fds);
                    if self.fds.len() > MAX_PENDING_FDS {
                        return Err(std::io::Error::other(format!(
                            "more than {MAX_PENDING_FDS} file descriptors sent"
                        )));
                    }
                    let data = self.scratch.get(..n).unwrap_or_default();
                    self.buf.extend_from_slice(data);
                    if n == 0 {
                        self.eof = true;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next request line (without its newline). A last line without a newline
    /// counts; a line longer than `MAX_REQUEST` is reported, never buffered whole.
    async fn next_line(&mut self) -> std::io::Result<Next> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + i;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                return Ok(Next::Line(line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_REQUEST {
                return Ok(Next::TooLong);
            }
            if self.eof || self.fill().await? == 0 {
                if self.buf.is_empty() {
                    return Ok(Next::End);
                }
                self.scanned = 0;
                return Ok(Next::Line(std::mem::take(&mut self.buf)));
            }
        }
    }
}

async fn serve_conn(
    stream: UnixStream,
    store: Store,
    vm_host: Option<Arc<VmHost>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut incoming = Incoming::new(rd);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = incoming.next_line() => n?,
        };
        let line = match next {
            Next::End => return Ok(()),
            Next::TooLong => {
                write_reply(
                    &mut wr,
                    &Reply::Error(Failure::new(
                        ErrorKind::Invalid,
                        None,
                        format!("request longer than {MAX_REQUEST} bytes"),
                    )),
                )
                .await?;
                return Ok(());
            }
            Next::Line(l) => l,
        };
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                let f = Failure::new(ErrorKind::Invalid, None, format!("invalid request: {e}"));
                write_reply(&mut wr, &Reply::Error(f)).await?;
                continue;
            }
        };
        // Descriptors go, in the order received, to the requests that use one: each was
        // sent with the first byte of its request's line, so it is here by now.
        let stdin = match &req {
            Request::Import { source, .. } if source == "-" => match incoming.fds.pop_front() {
                Some(fd) => Stdin::Passed(fd.into()),
                None => Stdin::Absent,
            },
            Request::Upload { .. } => match incoming.fds.pop_front() {
                Some(fd) => Stdin::Passed(fd.into()),
                None => Stdin::Absent,
            },
            _ => Stdin::Absent,
        };
        let ctx = Context {
            cancel: CancelFlag::new(),
            stdin,
            vm_host: vm_host.clone(),
        };
        if !run_request(&mut incoming, &mut wr, &store, req, ctx).await {
            return Ok(());
        }
    }
}

/// Runs one request while relaying its events and watching for the client to go away.
/// Returns whether the connection can carry another request.
async fn run_request(
    incoming: &mut Incoming,
    wr: &mut OwnedWriteHalf,
    store: &Store,
    req: Request,
    ctx: Context,
) -> bool {
    let cancel = ctx.cancel.clone();
    if incoming.eof {
        // The client already closed its side: nobody waits for long work.
        cancel.cancel();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let store = store.clone();
    let work = tokio::task::spawn_blocking(move || {
        let events_tx = tx.clone();
        let result = handle(&store, req, ctx, &mut |e| {
            let _ = events_tx.send(Reply::Event(e));
        });
        let _ = tx.send(match result {
            Ok(r) => Reply::Response(r),
            Err(e) => Reply::Error(e.failure()),
        });
    });
    let mut writable = true;
    loop {
        // Watch for end of file unless the client already pipelined a whole request's
        // worth of bytes: those wait for their turn, unread beyond the bound.
        let watch = !incoming.eof && incoming.buf.len() <= MAX_REQUEST;
        tokio::select! {
            reply = rx.recv() => match reply {
                Some(reply) => {
                    if writable && write_reply(wr, &reply).await.is_err() {
                        writable = false;
                        cancel.cancel();
                    }
                }
                None => break,
            },
            got = incoming.fill(), if watch => match got {
                Ok(0) | Err(_) => {
                    incoming.eof = true;
                    cancel.cancel();
                }
                Ok(_) => {}
            },
        }
    }
    if let Err(e) = work.await {
        tracing::warn!(error = %e, "control request panicked");
        return false;
    }
    writable
}

async fn write_reply(wr: &mut OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    wr.write_all(&line).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ImportParams, Response};
    use crate::client;
    use crate::ControlError;
    use platter_types::{Name, VolumeRef};
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream as StdStream;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// The server's read side of a fresh connection, and the client's end.
    fn connection() -> (Incoming, OwnedWriteHalf, StdStream) {
        let (srv, cli) = StdStream::pair().unwrap();
        srv.set_nonblocking(true).unwrap();
        let (rd, wr) = UnixStream::from_std(srv).unwrap().into_split();
        (Incoming::new(rd), wr, cli)
    }

    #[test]
    fn lines_carry_descriptors_and_are_bounded() {
        runtime().block_on(async {
            let (mut inc, _wr, cli) = connection();
            let (keep, _other) = StdStream::pair().unwrap();
            client::send_line(&cli, b"{\"op\":\"ping\"}\nsec", &[keep.as_fd()]).unwrap();
            (&cli).write_all(b"ond").unwrap();
            drop(cli);
            assert!(
                matches!(inc.next_line().await.unwrap(), Next::Line(l) if l == b"{\"op\":\"ping\"}")
            );
            assert_eq!(inc.fds.len(), 1);
            // A last line without its newline still counts.
            assert!(matches!(inc.next_line().await.unwrap(), Next::Line(l) if l == b"second"));
            assert!(matches!(inc.next_line().await.unwrap(), Next::End));

            let (mut inc, _wr, cli) = connection();
            let writer = std::thread::spawn(move || {
                let _ = (&cli).write_all(&vec![b'x'; MAX_REQUEST + 2]);
                cli
            });
            assert!(matches!(inc.next_line().await.unwrap(), Next::TooLong));
            drop(inc);
            drop(writer.join().unwrap());
        });
    }

    #[test]
    fn too_many_descriptors_close_the_connection() {
        runtime().block_on(async {
            let (mut inc, _wr, cli) = connection();
            let (a, _b) = StdStream::pair().unwrap();
            for _ in 0..=MAX_PENDING_FDS / 2 {
                client::send_line(&cli, b"{}\n", &[a.as_fd(), a.as_fd()]).unwrap();
            }
            let mut failed = false;
            for _ in 0..=MAX_PENDING_FDS {
                if inc.next_line().await.is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(failed);
        });
    }

    fn import_stdin(name: &str) -> Request {
        Request::Import {
            source: "-".into(),
            name: Name::new(name).unwrap(),
            params: ImportParams::default(),
        }
    }

    #[test]
    fn imports_read_the_passed_stdin_and_stop_when_the_client_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let sock = dir.path().join("control.sock");
        let rt = runtime();
        let shutdown = CancellationToken::new();
        let server = {
            let _g = rt.enter();
            let l = bind(&sock).unwrap();
            rt.spawn(run(l, store.clone(), shutdown.clone()))
        };

        // The client's stdin: a stream the test fills and closes.
        let data: Vec<u8> = (0..3 << 20).map(|i| (i % 253 + 1) as u8).collect();
        let (mut w, r) = StdStream::pair().unwrap();
        let feeder = {
            let data = data.clone();
            std::thread::spawn(move || w.write_all(&data).unwrap())
        };
        let conn = client::connect(&sock).unwrap();
        let resp =
            client::call_with_fds(conn, &sock, &import_stdin("a"), &[r.as_fd()], &mut |_| {})
                .unwrap();
        feeder.join().unwrap();
        assert!(matches!(resp, Response::Imported { .. }), "{resp:?}");
        let vol = store.open_volume(&VolumeRef::parse("a").unwrap()).unwrap();
        let mut back = vec![0u8; data.len()];
        vol.read_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
        drop(vol);

        // Without the descriptor the server refuses (it never reads its own stdin).
        let conn = client::connect(&sock).unwrap();
        let err = client::call(conn, &sock, &import_stdin("b"), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("standard input"), "{err}");

        // A silent stdin, and the client shuts down its side once the import runs: the
        // server cancels, removes the temporary volume and still replies.
        let blobs = || {
            std::fs::read_dir(dir.path().join("store/blobs"))
                .unwrap()
                .count()
        };
        let before = blobs();
        let (mut w, r) = StdStream::pair().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let feeder = std::thread::spawn(move || {
            let _ = w.write_all(&data);
            // Silent but open until the test is over.
            let _ = done_rx.recv();
        });
        let conn = client::connect(&sock).unwrap();
        let half = conn.try_clone().unwrap();
        let call = {
            let sock = sock.clone();
            std::thread::spawn(move || {
                client::call_with_fds(conn, &sock, &import_stdin("c"), &[r.as_fd()], &mut |_| {})
            })
        };
        // In flight once its temporary volume exists.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while blobs() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the import never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        half.shutdown(std::net::Shutdown::Write).unwrap();
        let err = call.join().unwrap().unwrap_err();
        assert!(
            matches!(&err, ControlError::Remote(f) if f.kind == ErrorKind::Cancelled && f.message == "cancelled"),
            "{err}"
        );
        assert_eq!(blobs(), before);
        let names: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["a"]);
        drop(done_tx);
        feeder.join().unwrap();

        shutdown.cancel();
        rt.block_on(server).unwrap();
    }
}
