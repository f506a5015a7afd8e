//! The source `-`: standard input, or a file handed over in its place
//! ([`ImportOptions::stdin`]; a control server reads its client's stdin through a file
//! descriptor the client passed with the request).
//!
//! Reads happen on a helper thread feeding a small bounded channel, and the reader checks
//! the cancel flag while it waits: a cancelled import never hangs on a pipe whose writer
//! stalled, so its temporary volume is removed at once. A helper blocked in `read` ends at
//! the next read that returns (data, end of file or error) once nobody listens; it holds
//! at most one piece. Never seeks; never buffers more than `DEPTH` pieces.

use crate::error::{to_io, ImportError};
use crate::options::{CancelFlag, ImportOptions};
use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

/// Largest single read from the input.
const PIECE: usize = 256 << 10;
/// Pieces read ahead of the pipeline.
const DEPTH: usize = 4;
/// How often a waiting reader looks at the cancel flag.
const POLL: Duration = Duration::from_millis(100);

type Piece = io::Result<Vec<u8>>;

/// Opens the stdin source of an import (see the module doc).
pub(crate) fn open(opts: &ImportOptions) -> Box<dyn Read + Send> {
    let (tx, rx) = sync_channel::<Piece>(DEPTH);
    let given = opts.stdin.clone();
    let pump_tx = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("platter-stdin".into())
        .spawn(move || match given {
            Some(f) => pump(&mut &*f, &pump_tx),
            None => pump(&mut io::stdin().lock(), &pump_tx),
        });
    if let Err(e) = spawned {
        // No helper thread: the first read reports why.
        let _ = tx.try_send(Err(e));
    }
    drop(tx);
    Box::new(StdinReader::new(rx, opts.cancel.clone()))
}

/// Copies `r` into the channel until end of file, an error, or a closed channel.
fn pump(r: &mut dyn Read, tx: &SyncSender<Piece>) {
    loop {
        let mut buf = vec![0u8; PIECE];
        match r.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// The pipeline's side: blocking `Read` that gives up with `Cancelled` when asked to.
struct StdinReader {
    rx: Receiver<Piece>,
    cur: Vec<u8>,
    pos: usize,
    cancel: CancelFlag,
    done: bool,
}

impl StdinReader {
    fn new(rx: Receiver<Piece>, cancel: CancelFlag) -> StdinReader {
        StdinReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            cancel,
            done: false,
        }
    }
}

impl Read for StdinReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos >= self.cur.len() {
            if self.done {
                return Ok(0);
            }
            if self.cancel.is_cancelled() {
                return Err(to_io(ImportError::Cancelled));
            }
            match self.rx.recv_timeout(POLL) {
                Ok(Ok(piece)) => {
                    self.cur = piece;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::from_io;
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    fn opts_with(f: File) -> ImportOptions {
        ImportOptions {
            stdin: Some(Arc::new(f)),
            ..ImportOptions::default()
        }
    }

    #[test]
    fn reads_a_given_file_to_the_end() {
        let data: Vec<u8> = (0..(3 * PIECE + 17)).map(|i| (i % 251) as u8).collect();
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&data).unwrap();
        std::io::Seek::rewind(&mut tmp).unwrap();
        let mut r = open(&opts_with(tmp));
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn a_stalled_writer_does_not_block_cancellation() {
        let (mut writer, reader) = UnixStream::pair().unwrap();
        let opts = opts_with(File::from(OwnedFd::from(reader)));
        let mut r = open(&opts);
        writer.write_all(b"first").unwrap();
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"first");
        // The writer stays open and silent: only the flag can end the read.
        opts.cancel.cancel();
        let e = r.read(&mut buf).unwrap_err();
        assert!(matches!(from_io("x", e), ImportError::Cancelled));
        drop(writer);
    }
}
