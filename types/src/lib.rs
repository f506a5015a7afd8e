//! IO-free types shared by every platter crate: object names, references to a volume or
//! a snapshot (`NAME[@SNAP]`), byte sizes (`512M`, `10G`) and HTTP headers (`Name: value`).
//!
//! Everything here is pure parsing and formatting. It must never touch a file, a socket
//! or the environment, so that every crate (and every untrusted-input parser) can use it.
#![forbid(unsafe_code)]

mod header;
mod name;
mod size;

pub use header::parse_header;
pub use name::{Name, NameError, VolumeRef};
pub use size::{format_size, parse_size, SizeError};
