//! Named crash points for recovery tests, compiled in only with the `failpoints` feature.
//!
//! A test child process sets `PLATTER_FAILPOINT=NAME` and the store kills its own process
//! (as `kill -9` would) when it reaches that point. Without the feature the macro is empty.

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

#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    };
}
