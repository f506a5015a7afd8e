//! Exit statuses, one scheme for every command: 0 done, 1 failed, 2 a usage error (the
//! command line asks for something impossible), 130/143 cancelled by SIGINT/SIGTERM.
//!
//! A usage error is clap's, a [`Usage`] error raised here for what clap cannot check
//! (a reference without `@SNAP`, a push destination without a transport, VM resources
//! out of range), or a request the control API refuses as `invalid` (a bad size, name,
//! option, source or destination), whether it ran in-process or in `platter serve`.

use platter_control::error::{import_kind, store_kind};
use platter_control::transfer::ParamError;
use platter_control::{ControlError, ErrorKind, Failure};
use platter_importer::ImportError;
use platter_snapshotter::StoreError;

/// A command line that is wrong in a way clap cannot tell; the message says how.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;

/// The kind and object of the first typed error in the chain of `e`, if any.
fn typed(e: &anyhow::Error) -> Option<(ErrorKind, Option<String>)> {
    e.chain().find_map(|c| {
        if let Some(c) = c.downcast_ref::<ControlError>() {
            let f = c.failure();
            Some((f.kind, f.object))
        } else if let Some(i) = c.downcast_ref::<ImportError>() {
            Some((import_kind(i), i.object()))
        } else if let Some(s) = c.downcast_ref::<StoreError>() {
            Some((store_kind(s), s.object()))
        } else if let Some(p) = c.downcast_ref::<ParamError>() {
            Some((ErrorKind::Invalid, Some(p.what.to_string())))
        } else if c.is::<Usage>() {
            Some((ErrorKind::Invalid, None))
        } else {
            None
        }
    })
}

/// The kind of the first typed error in the chain of `e`, if any.
pub fn kind(e: &anyhow::Error) -> Option<ErrorKind> {
    typed(e).map(|(k, _)| k)
}

/// `e` as `-o json` prints it on stderr, with `message` (the line people get).
pub fn failure(e: &anyhow::Error, message: String) -> Failure {
    let (kind, object) = typed(e).unwrap_or((ErrorKind::Failed, None));
    Failure::new(kind, object, message)
}

/// The exit status of a command that failed with `e` (not cancelled: see `interrupt`).
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if kind(e) == Some(ErrorKind::Invalid) {
        USAGE
    } else {
        FAILED
    }
}
