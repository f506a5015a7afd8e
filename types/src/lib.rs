//! IO-free types shared by every platter crate: object names, references to a volume or
//! a snapshot (`NAME[@SNAP]`), byte sizes (`512M`, `10G`), HTTP headers (`Name: value`)
//! and the paths inside a store directory ([`StoreLayout`]).
//!
//! Everything here is pure parsing and formatting. It must never touch a file, a socket
//! or the environment, so that every crate (and every untrusted-input parser) can use it.
#![forbid(unsafe_code)]

mod header;
mod layout;
mod name;
mod size;

pub use header::parse_header;
pub use layout::StoreLayout;
pub use name::{Name, NameError, VolumeRef};
pub use size::{format_size, parse_size, SizeError};
