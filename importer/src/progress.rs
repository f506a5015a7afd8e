//! Progress reporting: the events an import or push emits, and the trait the CLI
//! implements to render them as a bar, plain lines or JSON.
//!
//! Emitters must stay cheap: byte events are rate-limited here ([`Throttle`]) so a
//! renderer is never called more than a few times a second per stage.

use parking_lot::Mutex;
use serde::Serialize;
use std::time::{Duration, Instant};

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A phase began; `total` bytes are expected when known.
    Started { total: Option<u64> },
    /// Bytes done so far in the current phase (monotonic within a phase).
    Bytes { done: u64 },
    /// Something a person should read (what was detected, a retry, a spool).
    Message { text: String },
    /// How the work is done, for who asks (`platter -v`): which tar member is read, that
    /// a stream is decoded in one pass, how a push lays out its layer.
    Detail { text: String },
    /// The operation completed.
    Finished,
}

/// Receives events; called from several threads.
pub trait Progress: Send + Sync {
    fn event(&self, event: ProgressEvent);
}

/// Discards everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: ProgressEvent) {}
}

impl<F: Fn(ProgressEvent) + Send + Sync> Progress for F {
    fn event(&self, event: ProgressEvent) {
        self(event)
    }
}

/// Forwards `Bytes` events at most every 100 ms (always forwarding the final count on
/// [`Throttle::flush`]); other events pass straight through.
pub(crate) struct Throttle<'a> {
    inner: &'a dyn Progress,
    state: Mutex<(Instant, u64, bool)>,
}

impl<'a> Throttle<'a> {
    pub(crate) fn new(inner: &'a dyn Progress) -> Throttle<'a> {
        Throttle {
            inner,
            state: Mutex::new((Instant::now(), 0, false)),
        }
    }

    pub(crate) fn started(&self, total: Option<u64>) {
        *self.state.lock() = (Instant::now(), 0, false);
        self.inner.event(ProgressEvent::Started { total });
    }

    pub(crate) fn message(&self, text: impl Into<String>) {
        self.inner
            .event(ProgressEvent::Message { text: text.into() });
    }

    pub(crate) fn detail(&self, text: impl Into<String>) {
        self.inner
            .event(ProgressEvent::Detail { text: text.into() });
    }

    pub(crate) fn bytes(&self, done: u64) {
        let mut st = self.state.lock();
        st.1 = done;
        st.2 = true;
        if st.0.elapsed() >= Duration::from_millis(100) {
            st.0 = Instant::now();
            st.2 = false;
            drop(st);
            self.inner.event(ProgressEvent::Bytes { done });
        }
    }

    pub(crate) fn flush(&self) {
        let mut st = self.state.lock();
        if st.2 {
            st.2 = false;
            let done = st.1;
            drop(st);
            self.inner.event(ProgressEvent::Bytes { done });
        }
    }

    pub(crate) fn finished(&self) {
        self.flush();
        self.inner.event(ProgressEvent::Finished);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_tagged_json() {
        let e = ProgressEvent::Started { total: Some(5) };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"started","total":5}"#
        );
        let e = ProgressEvent::Message { text: "hi".into() };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"message","text":"hi"}"#
        );
    }

    #[test]
    fn throttle_always_delivers_the_last_count() {
        let seen = Mutex::new(Vec::new());
        let p = |e: ProgressEvent| seen.lock().push(e);
        let t = Throttle::new(&p);
        t.started(Some(10));
        for i in 0..10 {
            t.bytes(i + 1);
        }
        t.finished();
        let v = seen.lock();
        assert!(v.contains(&ProgressEvent::Bytes { done: 10 }));
        assert_eq!(v.last(), Some(&ProgressEvent::Finished));
    }
}
