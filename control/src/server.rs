//! The control server of `platter serve`: newline-delimited JSON requests on a unix socket,
//! each handled by the dispatcher on a blocking thread, events streamed back as they come.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use platter_snapshotter::Store;

use crate::api::{Reply, Request};
use crate::dispatch::handle;

/// Longest request line accepted; longer requests get an error and the connection closes.
const MAX_REQUEST: usize = 1 << 20;

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

/// Serves until `shutdown` is cancelled; in-flight requests finish first.
pub async fn run(listener: UnixListener, store: Store, shutdown: CancellationToken) {
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    let store = store.clone();
                    let shutdown = shutdown.clone();
                    tracker.spawn(async move {
                        if let Err(e) = serve_conn(stream, store, shutdown).await {
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

async fn serve_conn(
    stream: UnixStream,
    store: Store,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    loop {
        let mut line = Vec::new();
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = read_bounded_line(&mut reader, &mut line) => n?,
        };
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_REQUEST {
            write_reply(
                &mut wr,
                &Reply::Error(format!("request longer than {MAX_REQUEST} bytes")),
            )
            .await?;
            return Ok(());
        }
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                write_reply(&mut wr, &Reply::Error(format!("invalid request: {e}"))).await?;
                continue;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let store = store.clone();
        let work = tokio::task::spawn_blocking(move || {
            let events_tx = tx.clone();
            let result = handle(&store, req, &mut |e| {
                let _ = events_tx.send(Reply::Event(e));
            });
            let _ = tx.send(match result {
                Ok(r) => Reply::Response(r),
                Err(e) => Reply::Error(e.to_string()),
            });
        });
        while let Some(reply) = rx.recv().await {
            write_reply(&mut wr, &reply).await?;
        }
        let _ = work.await;
    }
}

/// Reads one line, but never buffers more than `MAX_REQUEST + 1` bytes of it.
async fn read_bounded_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let take = chunk.len();
        if out.len() <= MAX_REQUEST {
            out.extend_from_slice(&chunk[..take.min(MAX_REQUEST + 1 - out.len())]);
        }
        reader.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

async fn write_reply(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    wr.write_all(&line).await
}
