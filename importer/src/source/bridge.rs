//! The bridge from async downloads (tasks on the network runtime) to the blocking `Read`
//! the pipeline consumes: a bounded channel of chunks, notes and a final error.
//!
//! The reader never blocks a runtime worker (pipeline threads are plain threads), and
//! dropping it makes the producing task stop at its next send.

use crate::error::{to_io, ImportError};
use crate::progress::Throttle;
use bytes::Bytes;
use std::io::{self, Read};
use tokio::sync::mpsc;

/// What a download task sends.
pub(crate) enum Item {
    Data(Bytes),
    /// A message for the user (a resume, a retry).
    Note(String),
    Failed(ImportError),
}

/// Chunks in flight between a download task and its reader.
const DEPTH: usize = 8;

pub(crate) fn channel() -> (mpsc::Sender<Item>, mpsc::Receiver<Item>) {
    mpsc::channel(DEPTH)
}

/// Blocking `Read` over an [`Item`] channel; a closed channel is the end of the data.
pub(crate) struct BridgeReader<'a> {
    rx: mpsc::Receiver<Item>,
    cur: Bytes,
    progress: Option<&'a Throttle<'a>>,
    done: bool,
}

impl<'a> BridgeReader<'a> {
    pub(crate) fn new(
        rx: mpsc::Receiver<Item>,
        progress: Option<&'a Throttle<'a>>,
    ) -> BridgeReader<'a> {
        BridgeReader {
            rx,
            cur: Bytes::new(),
            progress,
            done: false,
        }
    }
}

impl Read for BridgeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Item::Data(b)) => self.cur = b,
                Some(Item::Note(n)) => {
                    if let Some(p) = self.progress {
                        p.message(n);
                    }
                }
                Some(Item::Failed(e)) => {
                    self.done = true;
                    return Err(to_io(e));
                }
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}
