//! The bridge from async downloads (tasks on the network runtime) to the blocking `Read`
//! the pipeline consumes: a bounded channel of chunks, notes and a final error.
//!
//! The reader never blocks a runtime worker (pipeline threads are plain threads), and
//! dropping it makes the producing task stop at its next send. With a cancel flag it
//! wakes up every [`CANCEL_POLL`] while the network is silent, so a cancelled import does
//! not wait for a stalled server's read timeout.

use crate::error::{to_io, ImportError};
use crate::options::CancelFlag;
use crate::progress::Throttle;
use bytes::Bytes;
use std::io::{self, Read};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// How often a waiting reader looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(200);

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
    /// The network runtime and the import's cancel flag, when the reader should notice a
    /// cancel while nothing arrives.
    cancel: Option<(Handle, CancelFlag)>,
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
            cancel: None,
        }
    }

    /// Makes a read that waits for the network give up with `Cancelled` once `cancel`
    /// is set.
    pub(crate) fn with_cancel(mut self, handle: Handle, cancel: CancelFlag) -> Self {
        self.cancel = Some((handle, cancel));
        self
    }

    fn next_item(&mut self) -> io::Result<Option<Item>> {
        let Some((handle, cancel)) = &self.cancel else {
            return Ok(self.rx.blocking_recv());
        };
        loop {
            if cancel.is_cancelled() {
                return Err(to_io(ImportError::Cancelled));
            }
            let rx = &mut self.rx;
            // The timer is made inside the runtime (block_on enters it).
            let waited =
                handle.block_on(async { tokio::time::timeout(CANCEL_POLL, rx.recv()).await });
            if let Ok(item) = waited {
                return Ok(item);
            }
        }
    }
}

impl Read for BridgeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.next_item()? {
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
