//! platter's NBD server: serves block devices (store volumes, files, memory) to NBD
//! clients (qemu, libnbd tools, the kernel) over unix sockets and TCP, with optional TLS.
//!
//! Layout: the IO-free wire protocol is its own crate, [`platter_nbd_proto`]; [`device`]
//! holds the traits the server serves ([`BlockDevice`], [`ExportProvider`]);
//! [`server::run`] accepts clients and runs the handshake; the transmission phase lives in
//! `connection` (IO) and `command` (what a request does). [`metrics`] counts and serves
//! Prometheus text.
//!
//! Nothing a client sends may panic the server or make it allocate without bound.
#![forbid(unsafe_code)]

mod command;
mod connection;
pub mod device;
pub mod filedev;
mod iopool;
pub mod memdev;
pub mod metrics;
mod negotiate;
mod out_queue;
mod poll;
pub mod server;
pub mod store_exports;
pub mod tls;

pub use device::{
    BlockDevice, DeviceError, ExportError, ExportInfo, ExportProvider, Extent, ExtentKind,
    StaticExports,
};
pub use filedev::FileDevice;
pub use memdev::MemDevice;
pub use metrics::{serve_metrics, Metrics};
pub use server::{run, Listener, ServerConfig, ServerError};
pub use store_exports::{StoreExports, VolumeDevice};
pub use tls::{TlsConfig, TlsError};
