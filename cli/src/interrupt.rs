//! Ctrl-C (SIGINT) and SIGTERM during long work (import, push).
//!
//! The first signal asks the work to stop: in-process it sets the importer's cancel flag;
//! through a running server it shuts down the write side of the control connection, which
//! makes the server cancel. Either way the command waits until what the work wrote is
//! removed, then ends with one line ("import cancelled") and exit status 128+signal. A
//! second signal exits at once (an unfinished in-process import is then discarded the next
//! time the store opens).
//!
//! Never used for quick commands: they keep the default signal behaviour.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use platter_importer::CancelFlag;
use tokio::signal::unix::{signal, SignalKind};

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// The error a command ends with when a signal stopped it.
#[derive(Debug, thiserror::Error)]
#[error("{what} cancelled")]
pub struct Interrupted {
    pub what: &'static str,
    pub signal: i32,
}

impl Interrupted {
    /// The conventional exit status of a command stopped by `signal`.
    pub fn exit_code(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(1)
    }
}

struct Shared {
    cancel: CancelFlag,
    /// The first signal received (0: none yet).
    signal: AtomicI32,
    /// A control connection to half-close on the first signal.
    socket: Mutex<Option<UnixStream>>,
}

impl Shared {
    fn received(&self, sig: i32) {
        if self
            .signal
            .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            eprintln!("platter: interrupted again: exiting without cleaning up");
            std::process::exit(128 + sig);
        }
        self.cancel.cancel();
        if let Ok(s) = self.socket.lock() {
            if let Some(s) = s.as_ref() {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
    }
}

/// Watches for SIGINT and SIGTERM from creation until the process ends.
pub struct Interrupts {
    shared: Arc<Shared>,
}

impl Interrupts {
    /// Installs the handlers now (so a signal right after this call is not missed) and
    /// watches on a thread of its own.
    pub fn watch() -> Result<Interrupts> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting the signal watcher")?;
        let (mut int, mut term) = {
            let _guard = rt.enter();
            (
                signal(SignalKind::interrupt()).context("watching SIGINT")?,
                signal(SignalKind::terminate()).context("watching SIGTERM")?,
            )
        };
        let shared = Arc::new(Shared {
            cancel: CancelFlag::new(),
            signal: AtomicI32::new(0),
            socket: Mutex::new(None),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("platter-signals".into())
            .spawn(move || {
                rt.block_on(async move {
                    loop {
                        let sig = tokio::select! {
                            r = int.recv() => r.map(|_| SIGINT),
                            r = term.recv() => r.map(|_| SIGTERM),
                        };
                        match sig {
                            Some(sig) => s.received(sig),
                            None => return,
                        }
                    }
                })
            })
            .context("starting the signal watcher")?;
        Ok(Interrupts { shared })
    }

    /// The flag a signal sets, for work done in this process.
    pub fn cancel_flag(&self) -> CancelFlag {
        self.shared.cancel.clone()
    }

    /// Half-closes `stream` on a signal (at once if one came already): the server then
    /// cancels the request and still sends its reply.
    pub fn shutdown_on_signal(&self, stream: UnixStream) {
        if let Ok(mut s) = self.shared.socket.lock() {
            if self.signal().is_some() {
                let _ = stream.shutdown(Shutdown::Write);
            }
            *s = Some(stream);
        }
    }

    /// The first signal received, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.shared.signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// A failure after a signal is the cancellation the user asked for, reported as
    /// [`Interrupted`]; work that finished regardless stands.
    pub fn outcome<T>(&self, r: Result<T>, what: &'static str) -> Result<T> {
        match (r, self.signal()) {
            (Err(_), Some(signal)) => Err(Interrupted { what, signal }.into()),
            (r, _) => r,
        }
    }
}
