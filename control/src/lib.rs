//! The control API: every change to a store, whether the `platter` CLI opens the store
//! itself or talks to a running `platter serve`, is one [`Request`] handled by one
//! dispatcher ([`dispatch::handle`]). A reconcile loop (the controller) drives the same
//! enum. The transport is newline-delimited JSON on a unix socket (`STORE/run/control.sock`,
//! mode 0600: not reachable from the network).
//!
//! This crate never parses command lines and never prints: it returns typed results.
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod dispatch;
pub mod error;
pub mod export;
mod export_qcow2;
pub mod objects;
pub mod server;
pub mod transfer;
pub mod vm;
pub mod vms;

pub use api::{Event, Reply, Request, Response};
pub use dispatch::{handle, Context, Stdin};
pub use error::{ControlError, ErrorKind, Failure};
