//! The client's side of the framing: the encoders and parsers [`Client`](super::Client)
//! and [`Handshake`](super::Handshake) are built on, mirror images of the server side at
//! the crate root.
//!
//! Public so that tests can send what no well-behaved client would (truncated headers,
//! the wrong request magic, writes without their payload) with the exact bytes a client
//! sends. IO-free and panic-free like the rest of the crate; no length read here is
//! bounded: the caller bounds it before allocating.

use crate::consts::*;
use crate::transmission::HeaderStyle;
use crate::wire::{put_u16, put_u32, put_u64, Cursor};
use crate::ProtoError;

/// Parses the server's 18-byte greeting, answering the handshake flags.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<u16>, ProtoError> {
    let mut c = Cursor::new(buf);
    let (Some(magic), Some(opt), Some(flags)) = (c.u64(), c.u64(), c.u16()) else {
        return Ok(None);
    };
    if magic != NBDMAGIC || opt != IHAVEOPT {
        return Err(ProtoError::BadMagic {
            what: "greeting",
            got: magic,
        });
    }
    Ok(Some(flags))
}

/// The 4-byte client flags (`NBD_FLAG_C_*`) that answer the greeting.
pub fn encode_client_flags(out: &mut Vec<u8>, flags: u32) {
    put_u32(out, flags);
}

/// An option request (`IHAVEOPT`, option, length) with its data.
pub fn encode_option(out: &mut Vec<u8>, option: u32, data: &[u8]) {
    put_u64(out, IHAVEOPT);
    put_u32(out, option);
    put_u32(out, u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(data);
}

/// The data of `NBD_OPT_INFO`/`NBD_OPT_GO`.
pub fn encode_info_request(name: &str, requests: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, u32::try_from(name.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(name.as_bytes());
    put_u16(&mut out, u16::try_from(requests.len()).unwrap_or(u16::MAX));
    for r in requests {
        put_u16(&mut out, *r);
    }
    out
}

/// The data of `NBD_OPT_{LIST,SET}_META_CONTEXT`.
pub fn encode_meta_context_request(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, u32::try_from(export.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(export.as_bytes());
    put_u32(&mut out, u32::try_from(queries.len()).unwrap_or(u32::MAX));
    for q in queries {
        put_u32(&mut out, u32::try_from(q.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(q.as_bytes());
    }
    out
}

/// An option reply header: which option it answers, its type, and how many data bytes
/// follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option this replies to.
    pub option: u32,
    /// `NBD_REP_*`.
    pub reply_type: u32,
    /// Bytes of reply data that follow the header.
    pub len: u32,
}

/// Parses an option reply header (20 bytes). The data length is not bounded here.
pub fn parse_option_reply_header(buf: &[u8]) -> Result<Option<OptionReplyHeader>, ProtoError> {
    let mut c = Cursor::new(buf);
    let (Some(magic), Some(option), Some(reply_type), Some(len)) =
        (c.u64(), c.u32(), c.u32(), c.u32())
    else {
        return Ok(None);
    };
    if magic != OPT_REPLY_MAGIC {
        return Err(ProtoError::BadMagic {
            what: "option reply",
            got: magic,
        });
    }
    Ok(Some(OptionReplyHeader {
        option,
        reply_type,
        len,
    }))
}

/// A request header (the caller appends any payload). With [`HeaderStyle::Compact`] a
/// length over 32 bits is cut to `u32::MAX`.
pub fn encode_request(
    out: &mut Vec<u8>,
    style: HeaderStyle,
    flags: u16,
    command: u16,
    cookie: u64,
    offset: u64,
    length: u64,
) {
    match style {
        HeaderStyle::Compact => put_u32(out, REQUEST_MAGIC),
        HeaderStyle::Extended => put_u32(out, EXTENDED_REQUEST_MAGIC),
    }
    put_u16(out, flags);
    put_u16(out, command);
    put_u64(out, cookie);
    put_u64(out, offset);
    match style {
        HeaderStyle::Compact => put_u32(out, u32::try_from(length).unwrap_or(u32::MAX)),
        HeaderStyle::Extended => put_u64(out, length),
    }
}

/// A reply header as read off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// A simple reply; a successful read's data follows it.
    Simple {
        /// 0, or an NBD errno.
        error: u32,
        /// The cookie of the request it answers.
        cookie: u64,
    },
    /// A structured or extended reply chunk; `len` bytes of payload follow it.
    Chunk {
        /// `NBD_REPLY_FLAG_*` (`DONE` ends the reply).
        flags: u16,
        /// `NBD_REPLY_TYPE_*`.
        ty: u16,
        /// The cookie of the request it answers.
        cookie: u64,
        /// Echoed request offset (extended replies only).
        offset: Option<u64>,
        /// Bytes of payload that follow the header.
        len: u64,
    },
}

/// Parses a simple, structured or extended reply header, answering it and
/// the bytes it took.
pub fn parse_reply_header(buf: &[u8]) -> Result<Option<(ReplyHeader, usize)>, ProtoError> {
    let mut c = Cursor::new(buf);
    let Some(magic) = c.u32() else {
        return Ok(None);
    };
    match magic {
        SIMPLE_REPLY_MAGIC => {
            let (Some(error), Some(cookie)) = (c.u32(), c.u64()) else {
                return Ok(None);
            };
            Ok(Some((
                ReplyHeader::Simple { error, cookie },
                SIMPLE_REPLY_LEN,
            )))
        }
        STRUCTURED_REPLY_MAGIC => {
            let (Some(flags), Some(ty), Some(cookie), Some(len)) =
                (c.u16(), c.u16(), c.u64(), c.u32())
            else {
                return Ok(None);
            };
            let h = ReplyHeader::Chunk {
                flags,
                ty,
                cookie,
                offset: None,
                len: u64::from(len),
            };
            Ok(Some((h, STRUCTURED_REPLY_HEADER_LEN)))
        }
        EXTENDED_REPLY_MAGIC => {
            let (Some(flags), Some(ty), Some(cookie), Some(offset), Some(len)) =
                (c.u16(), c.u16(), c.u64(), c.u64(), c.u64())
            else {
                return Ok(None);
            };
            let h = ReplyHeader::Chunk {
                flags,
                ty,
                cookie,
                offset: Some(offset),
                len,
            };
            Ok(Some((h, EXTENDED_REPLY_HEADER_LEN)))
        }
        other => Err(ProtoError::BadMagic {
            what: "reply",
            got: u64::from(other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_headers_need_all_their_bytes() {
        let mut out = Vec::new();
        put_u32(&mut out, SIMPLE_REPLY_MAGIC);
        put_u32(&mut out, 0);
        put_u64(&mut out, 9);
        assert_eq!(
            parse_reply_header(&out).unwrap(),
            Some((
                ReplyHeader::Simple {
                    error: 0,
                    cookie: 9
                },
                SIMPLE_REPLY_LEN
            ))
        );
        assert_eq!(parse_reply_header(&out[..15]).unwrap(), None);
        assert!(parse_reply_header(&[0, 0, 0, 0]).is_err());
    }
}
