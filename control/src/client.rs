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
        match decode_reply(&buf).map_err(protocol)? {
            Reply::Event(e) => on_event(e),
            Reply::Response(r) => return Ok(r),
            Reply::Error(e) => return Err(ControlError::Remote(e)),
        }
    }
}

/// One reply line, parsed; the error says why it is not a reply. Never panics, whatever
/// the line holds.
pub fn decode_reply(line: &str) -> Result<Reply, String> {
    serde_json::from_str(line).map_err(|e| format!("bad reply: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorKind, Failure};
    use proptest::prelude::*;
    use std::os::unix::net::UnixListener;

    /// A server that answers any request with `reply` (one line).
    fn answer_with(reply: &'static str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("control.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut line = String::new();
                let _ = BufReader::new(&s).read_line(&mut line);
                let _ = s.write_all(reply.as_bytes());
            }
        });
        (dir, sock)
    }

    fn call_once(sock: &Path) -> Result<Response, ControlError> {
        call(connect(sock).unwrap(), sock, &Request::Ping, &mut |_| {})
    }

    #[test]
    fn an_older_servers_text_error_is_a_failure() {
        let (_dir, sock) = answer_with("{\"error\":\"volume a does not exist\"}\n");
        match call_once(&sock) {
            Err(ControlError::Remote(f)) => {
                assert_eq!(f, Failure::from_text("volume a does not exist"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_typed_error_comes_back_whole() {
        let (_dir, sock) = answer_with(
            "{\"event\":{\"kind\":\"finished\"}}\n{\"error\":{\"kind\":\"in_use\",\"object\":\"volume a\",\"message\":\"cannot delete a\"}}\n",
        );
        let err = call_once(&sock).unwrap_err();
        assert_eq!(err.to_string(), "cannot delete a");
        assert_eq!(
            err.failure(),
            Failure::new(ErrorKind::InUse, Some("volume a".into()), "cannot delete a")
        );
    }

    #[test]
    fn an_unreadable_reply_is_a_protocol_error() {
        let (_dir, sock) = answer_with("{\"error\":{\"kind\":\"failed\"}}\n");
        let err = call_once(&sock).unwrap_err();
        assert!(matches!(err, ControlError::Protocol { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Failed);
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
            prop_oneof![
                Just("not_found"),
                Just("in_use"),
                Just("cancelled"),
                Just("kind"),
                Just("object"),
                Just("message"),
                Just("error")
            ]
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("kind".to_string()),
                        Just("object".to_string()),
                        Just("message".to_string()),
                        ".{0,8}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_reply_lines_never_panic_the_decoder(s in ".{0,300}") {
            let _ = decode_reply(&s);
        }

        #[test]
        fn arbitrary_error_bodies_decode_or_are_refused(body in json_value()) {
            let line = serde_json::json!({ "error": body.clone() }).to_string();
            match decode_reply(&line) {
                Ok(Reply::Error(f)) => {
                    // Whatever is read says what the server said (serde also reads a
                    // struct from an array, by position: kind, object, message).
                    let said = body
                        .as_str()
                        .or_else(|| body.get("message").and_then(|m| m.as_str()))
                        .or_else(|| body.get(2).and_then(|m| m.as_str()));
                    prop_assert_eq!(Some(f.message.as_str()), said);
                }
                Ok(other) => prop_assert!(false, "{:?}", other),
                Err(_) => {}
            }
        }

        #[test]
        fn failures_round_trip_through_the_decoder(
            kind in prop::sample::select(ErrorKind::ALL.to_vec()),
            object in prop::option::of(".{0,30}"),
            message in ".{0,80}",
        ) {
            let f = Failure::new(kind, object, message);
            let line = serde_json::to_string(&Reply::Error(f.clone())).unwrap();
            prop_assert_eq!(decode_reply(&line).unwrap(), Reply::Error(f));
        }
    }
}
