//! The NBD protocol (NetworkBlockDevice/nbd `doc/proto.md`, with the `EXTENDED_HEADERS`
//! extension) as pure framing: bytes in, typed messages out, and typed replies encoded
//! into byte buffers (the mini-redis `frame.rs` model).
//!
//! Nothing here touches a socket, a device or a clock, so every parser is unit-tested and
//! fuzzed with arbitrary bytes on its own. Parsers must never panic and must bound every
//! length before allocating.
//!
//! Layout: [`consts`] holds the numbers of the protocol; the handshake framing (greeting,
//! options, option replies) and the transmission framing (requests, simple, structured and
//! extended replies) are re-exported at the crate root, as the server side uses them.
//! [`client`] is a small blocking client over any `Read + Write` stream, with the
//! client's side of the framing in [`client::frame`]; the workspace's tests, and anything
//! else that speaks NBD as a client, use it.
#![forbid(unsafe_code)]

pub mod client;
pub mod consts;
mod handshake;
mod transmission;
mod wire;

pub use handshake::*;
pub use transmission::*;

/// A framing error that leaves the byte stream unusable: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A message did not start with the magic number its position requires.
    #[error("bad {what} magic {got:#x}")]
    BadMagic {
        /// Which message: "greeting", "option", "option reply", "request", "reply".
        what: &'static str,
        /// The magic read off the wire.
        got: u64,
    },
    /// The client's flags had bits this protocol version does not define.
    #[error("client sent unknown flags {0:#x}")]
    UnknownClientFlags(u32),
    /// A request announced more payload than the receiver accepts.
    #[error("request {cookie:#x} announces a payload of {len} bytes, over the {max}-byte limit")]
    PayloadTooLarge {
        /// The request's cookie.
        cookie: u64,
        /// The announced payload length.
        len: u64,
        /// The receiver's limit.
        max: u32,
    },
}
