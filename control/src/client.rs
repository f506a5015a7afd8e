//! The client side of the control socket: send one request, collect events and the reply.
//!
//! A request may carry file descriptors (SCM_RIGHTS, sent with the first byte of its line):
//! an import from `-` passes the caller's stdin this way. The server cancels a request
//! whose client shuts down its write side or goes away, so a client keeps its write side
//! open until the reply, and shuts it down (from any thread, on a clone of the stream) to
//! cancel.

use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use crate::api::{Event, Reply, Request, Response};
use crate::dispatch::ControlError;

/// Longest reply line accepted (a list of many volumes fits easily).
const MAX_LINE: u64 = 64 << 20;
/// Most descriptors one request may carry (the server accepts as many).
pub const MAX_FDS: usize = 4;

/// Connects to a running server, or `None` when no server listens on `socket`.
pub fn connect(socket: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket).ok()
}

/// Sends `req` over an open connection and waits for its response.
pub fn call(
    stream: UnixStream,
    socket: &Path,
    req: &Request,
    on_event: &mut dyn FnMut(Event),
) -> Result<Response, ControlError> {
    call_with_fds(stream, socket, req, &[], on_event)
}

/// Like [`call`], passing `fds` with the request (at most [`MAX_FDS`]); an import from
/// `-` takes the first as its standard input.
pub fn call_with_fds(
    stream: UnixStream,
    socket: &Path,
    req: &Request,
    fds: &[BorrowedFd<'_>],
    on_event: &mut dyn FnMut(Event),
) -> Result<Response, ControlError> {
    let sock_err = |source| ControlError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    let protocol = |detail: String| ControlError::Protocol {
        path: socket.to_path_buf(),
        detail,
    };
    if fds.len() > MAX_FDS {
        return Err(protocol(format!(
            "{} file descriptors for one request (at most {MAX_FDS})",
            fds.len()
        )));
    }
    let mut line = serde_json::to_vec(req).map_err(|e| protocol(e.to_string()))?;
    line.push(b'\n');
    send_line(&stream, &line, fds).map_err(sock_err)?;
    let mut reader = BufReader::new(std::io::Read::take(stream, MAX_LINE));
    loop {
        let mut buf = String::new();
        let n = reader.read_line(&mut buf).map_err(sock_err)?;
        if n == 0 {
            return Err(protocol(
                "server closed the connection without a reply".into(),
            ));
        }
        let reply: Reply =
            serde_json::from_str(&buf).map_err(|e| protocol(format!("bad reply: {e}")))?;
        match reply {
            Reply::Event(e) => on_event(e),
            Reply::Response(r) => return Ok(r),
            Reply::Error(e) => return Err(ControlError::Remote(e)),
        }
    }
}

/// Writes `line`, the descriptors riding with its first byte.
pub(crate) fn send_line(
    stream: &UnixStream,
    line: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    if fds.is_empty() {
        let mut w = stream;
        return w.write_all(line);
    }
    let mut space = vec![0u8; rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("file descriptors do not fit"));
    }
    let sent = loop {
        match rustix::net::sendmsg(stream, &[IoSlice::new(line)], &mut anc, SendFlags::NOSIGNAL) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut w = stream;
    w.write_all(line.get(sent..).unwrap_or_default())
}
