//! The client side of the control socket: send one request, collect events and the reply.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::api::{Event, Reply, Request, Response};
use crate::dispatch::ControlError;

/// Longest reply line accepted (a list of many volumes fits easily).
const MAX_LINE: u64 = 64 << 20;

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
    let sock_err = |source| ControlError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol {
        path: socket.to_path_buf(),
        detail: e.to_string(),
    })?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(sock_err)?;
    let mut reader = BufReader::new(std::io::Read::take(stream, MAX_LINE));
    loop {
        let mut buf = String::new();
        let n = reader.read_line(&mut buf).map_err(sock_err)?;
        if n == 0 {
            return Err(ControlError::Protocol {
                path: socket.to_path_buf(),
                detail: "server closed the connection without a reply".into(),
            });
        }
        let reply: Reply = serde_json::from_str(&buf).map_err(|e| ControlError::Protocol {
            path: socket.to_path_buf(),
            detail: format!("bad reply: {e}"),
        })?;
        match reply {
            Reply::Event(e) => on_event(e),
            Reply::Response(r) => return Ok(r),
            Reply::Error(e) => return Err(ControlError::Remote(e)),
        }
    }
}
