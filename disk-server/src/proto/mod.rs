//! The NBD protocol as pure framing: bytes in, typed messages out, and typed replies
//! encoded into byte buffers (the mini-redis `frame.rs` model).
//!
//! Nothing here touches a socket, a device or a clock, so every parser is unit-tested and
//! fuzzed with arbitrary bytes on its own. Parsers must never panic and must bound every
//! length before allocating.

pub mod consts;
mod handshake;
mod transmission;
mod wire;

pub use handshake::*;
pub use transmission::*;

/// A framing error that leaves the byte stream unusable: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("bad {what} magic {got:#x}")]
    BadMagic { what: &'static str, got: u64 },
    #[error("client sent unknown flags {0:#x}")]
    UnknownClientFlags(u32),
    #[error("request {cookie:#x} announces a payload of {len} bytes, over the {max}-byte limit")]
    PayloadTooLarge { cookie: u64, len: u64, max: u32 },
}
