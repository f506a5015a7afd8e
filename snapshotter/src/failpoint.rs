//! Named fault points for recovery tests, compiled in only with the `failpoints` feature.
//!
//! Two kinds:
//! - crash points (`failpoint!`): a test child process sets `PLATTER_FAILPOINT=NAME` and
//!   the store kills its own process (as `kill -9` would) when it reaches that point;
//! - error points (`failpoint_err!`): a test arms `NAME` with [`arm_error`] in its own
//!   process, and the next N passes through that point fail with the given `io::Error`
//!   instead of doing their IO (an `EIO` from a data sync, say).
//!
//! Without the feature both macros are empty and cost nothing.

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("PLATTER_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        // SIGKILL semantics: no destructors, no buffered writes, nothing flushed.
        std::process::abort();
    }
}

#[cfg(feature = "failpoints")]
mod errors {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use parking_lot::Mutex;

    /// Whether any error point is armed: the common case costs one relaxed load.
    static ANY: AtomicBool = AtomicBool::new(false);
    /// Error point name -> (passes left to fail, errno).
    static ARMED: Mutex<Option<HashMap<String, (u32, i32)>>> = Mutex::new(None);

    /// Makes the next `times` passes through error point `name` fail with `errno`.
    pub fn arm_error(name: &str, errno: i32, times: u32) {
        ARMED
            .lock()
            .get_or_insert_with(HashMap::new)
            .insert(name.to_string(), (times, errno));
        ANY.store(true, Ordering::Release);
    }

    /// Disarms every error point.
    pub fn disarm_all() {
        *ARMED.lock() = None;
        ANY.store(false, Ordering::Release);
    }

    pub fn take_error(name: &str) -> Option<std::io::Error> {
        if !ANY.load(Ordering::Acquire) {
            return None;
        }
        let mut armed = ARMED.lock();
        let map = armed.as_mut()?;
        let (left, errno) = map.get_mut(name)?;
        if *left == 0 {
            return None;
        }
        *left -= 1;
        Some(std::io::Error::from_raw_os_error(*errno))
    }
}

#[cfg(feature = "failpoints")]
pub use errors::{arm_error, disarm_all, take_error};

#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    };
}

/// `failpoint_err!("name")` evaluates to `Some(io::Error)` when a test armed that error
/// point (with the `failpoints` feature), else `None`.
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint_err {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        let e = $crate::failpoint::take_error($name);
        #[cfg(not(feature = "failpoints"))]
        let e: Option<std::io::Error> = None;
        e
    }};
}
