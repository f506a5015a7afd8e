//! Transmission-phase framing: compact and extended request headers, and simple,
//! structured and extended replies, parsed from and encoded into byte buffers.
//!
//! IO-free. Request parsing bounds the payload length before the caller allocates for it;
//! reply encoders append to a caller-owned `Vec<u8>` so the server can batch many replies
//! into one buffer and reuse it. The client's side (encoding requests, parsing reply
//! headers) is in [`crate::client::frame`].

use crate::consts::*;
use crate::wire::{put_str_bounded, put_u16, put_u32, put_u64, Cursor};
use crate::ProtoError;

/// Which request header the client uses (fixed by the negotiation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderStyle {
    /// 28 bytes, 32-bit length.
    Compact,
    /// 32 bytes, 64-bit length (`NBD_OPT_EXTENDED_HEADERS`).
    Extended,
}

/// Which replies the server sends (fixed by the negotiation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStyle {
    /// Simple replies only.
    Simple,
    /// Structured replies (`NBD_OPT_STRUCTURED_REPLY`); simple ones allowed without payload.
    Structured,
    /// Extended reply chunks only (`NBD_OPT_EXTENDED_HEADERS`).
    Extended,
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    /// Effect length (or, for writes, payload length).
    pub length: u64,
    /// Bytes of payload that follow the header on the wire.
    pub payload_len: u32,
    /// Bytes the header took (28 or 32).
    pub header_len: usize,
}

impl Request {
    /// Header plus payload: the bytes this request occupies on the wire.
    pub fn wire_len(&self) -> usize {
        self.header_len + self.payload_len as usize
    }
}

/// Parses one request header from the front of `buf`. `Ok(None)`: not enough bytes yet.
/// Errors (wrong magic, payload over `max_payload`) leave the stream unsynchronised: the
/// caller must hard-disconnect.
pub fn parse_request(
    buf: &[u8],
    style: HeaderStyle,
    max_payload: u32,
) -> Result<Option<Request>, ProtoError> {
    let header_len = match style {
        HeaderStyle::Compact => REQUEST_HEADER_LEN,
        HeaderStyle::Extended => EXTENDED_REQUEST_HEADER_LEN,
    };
    if buf.len() < header_len {
        return Ok(None);
    }
    let mut c = Cursor::new(buf);
    let magic = c.u32().unwrap_or(0);
    let flags = c.u16().unwrap_or(0);
    let command = c.u16().unwrap_or(0);
    let cookie = c.u64().unwrap_or(0);
    let offset = c.u64().unwrap_or(0);
    let (want_magic, length) = match style {
        HeaderStyle::Compact => (REQUEST_MAGIC, u64::from(c.u32().unwrap_or(0))),
        HeaderStyle::Extended => (EXTENDED_REQUEST_MAGIC, c.u64().unwrap_or(0)),
    };
    if magic != want_magic {
        return Err(ProtoError::BadMagic {
            what: "request",
            got: u64::from(magic),
        });
    }
    let has_payload = match style {
        HeaderStyle::Compact => command == CMD_WRITE,
        HeaderStyle::Extended => flags & CMD_FLAG_PAYLOAD_LEN != 0,
    };
    let payload_len = if has_payload {
        if length > u64::from(max_payload) {
            return Err(ProtoError::PayloadTooLarge {
                cookie,
                len: length,
                max: max_payload,
            });
        }
        length as u32
    } else {
        0
    };
    Ok(Some(Request {
        flags,
        command,
        cookie,
        offset,
        length,
        payload_len,
        header_len,
    }))
}

/// A simple reply header (16 bytes); a successful read's data follows it.
pub fn put_simple_reply(out: &mut Vec<u8>, error: u32, cookie: u64) {
    put_u32(out, SIMPLE_REPLY_MAGIC);
    put_u32(out, error);
    put_u64(out, cookie);
}

/// What every reply chunk of one request shares.
#[derive(Debug, Clone, Copy)]
pub struct ChunkTarget {
    pub style: ReplyStyle,
    pub cookie: u64,
    /// The request's offset, echoed by extended reply headers.
    pub request_offset: u64,
}

/// A structured or extended chunk header announcing `payload_len` bytes of payload.
/// With [`ReplyStyle::Simple`] (a caller bug) it writes a structured header anyway.
pub fn put_chunk_header(out: &mut Vec<u8>, t: ChunkTarget, flags: u16, ty: u16, payload_len: u64) {
    match t.style {
        ReplyStyle::Extended => {
            put_u32(out, EXTENDED_REPLY_MAGIC);
            put_u16(out, flags);
            put_u16(out, ty);
            put_u64(out, t.cookie);
            put_u64(out, t.request_offset);
            put_u64(out, payload_len);
        }
        ReplyStyle::Structured | ReplyStyle::Simple => {
            put_u32(out, STRUCTURED_REPLY_MAGIC);
            put_u16(out, flags);
            put_u16(out, ty);
            put_u64(out, t.cookie);
            put_u32(out, u32::try_from(payload_len).unwrap_or(u32::MAX));
        }
    }
}

/// Bytes a chunk header takes in this style.
pub fn chunk_header_len(style: ReplyStyle) -> usize {
    match style {
        ReplyStyle::Extended => EXTENDED_REPLY_HEADER_LEN,
        ReplyStyle::Structured | ReplyStyle::Simple => STRUCTURED_REPLY_HEADER_LEN,
    }
}

/// A successful reply without payload: a simple reply where allowed, else `NONE`+`DONE`.
pub fn put_ok(out: &mut Vec<u8>, t: ChunkTarget) {
    match t.style {
        ReplyStyle::Simple | ReplyStyle::Structured => put_simple_reply(out, 0, t.cookie),
        ReplyStyle::Extended => put_chunk_header(out, t, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0),
    }
}

/// A final error reply: a simple reply with `errno`, or an `ERROR` chunk with `message`.
pub fn put_error(out: &mut Vec<u8>, t: ChunkTarget, errno: u32, message: &str) {
    match t.style {
        ReplyStyle::Simple => put_simple_reply(out, errno, t.cookie),
        ReplyStyle::Structured | ReplyStyle::Extended => {
            let msg = crate::wire::truncate_str(message, MAX_STRING_LEN);
            put_chunk_header(
                out,
                t,
                REPLY_FLAG_DONE,
                REPLY_TYPE_ERROR,
                6 + msg.len() as u64,
            );
            put_u32(out, errno);
            put_u16(out, msg.len() as u16);
            put_str_bounded(out, msg);
        }
    }
}

/// The `NONE` chunk that ends a structured reply.
pub fn put_done(out: &mut Vec<u8>, t: ChunkTarget) {
    put_chunk_header(out, t, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0);
}

/// An `OFFSET_HOLE` chunk: `len` bytes at `offset` read as zeroes.
pub fn put_hole_chunk(out: &mut Vec<u8>, t: ChunkTarget, flags: u16, offset: u64, len: u32) {
    put_chunk_header(out, t, flags, REPLY_TYPE_OFFSET_HOLE, 12);
    put_u64(out, offset);
    put_u32(out, len);
}

/// The header of an `OFFSET_DATA` chunk; the caller appends exactly `data_len` bytes.
pub fn put_data_chunk_header(
    out: &mut Vec<u8>,
    t: ChunkTarget,
    flags: u16,
    offset: u64,
    data_len: u64,
) {
    put_chunk_header(out, t, flags, REPLY_TYPE_OFFSET_DATA, 8 + data_len);
    put_u64(out, offset);
}

/// Bytes before the data of an `OFFSET_DATA` chunk (or of a simple read reply).
pub fn read_reply_prefix_len(style: ReplyStyle) -> usize {
    match style {
        ReplyStyle::Simple => SIMPLE_REPLY_LEN,
        other => chunk_header_len(other) + 8,
    }
}

/// One `base:allocation` extent: its length and `NBD_STATE_*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusExtent {
    pub len: u64,
    pub flags: u32,
}

/// A final `BLOCK_STATUS` (or, with extended headers, `BLOCK_STATUS_EXT`) chunk for one
/// metadata context. Compact chunks carry 32-bit lengths: the caller must have split
/// extents to fit (see [`clamp_extents`]).
pub fn put_block_status(out: &mut Vec<u8>, t: ChunkTarget, context_id: u32, ext: &[StatusExtent]) {
    let n = ext.len() as u64;
    match t.style {
        ReplyStyle::Extended => {
            put_chunk_header(
                out,
                t,
                REPLY_FLAG_DONE,
                REPLY_TYPE_BLOCK_STATUS_EXT,
                8 + 16 * n,
            );
            put_u32(out, context_id);
            put_u32(out, u32::try_from(n).unwrap_or(u32::MAX));
            for e in ext {
                put_u64(out, e.len);
                put_u64(out, u64::from(e.flags));
            }
        }
        ReplyStyle::Structured | ReplyStyle::Simple => {
            put_chunk_header(out, t, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, 4 + 8 * n);
            put_u32(out, context_id);
            for e in ext {
                put_u32(out, u32::try_from(e.len).unwrap_or(u32::MAX));
                put_u32(out, e.flags);
            }
        }
    }
}

/// Shapes extents for a block-status reply: merges neighbours with equal flags, drops
/// empty ones, cuts extents so each length fits in `max_extent_len` (keeping a multiple of
/// 512 where it cuts), keeps at most `max_count`, and with `req_one` keeps only the first,
/// no longer than `request_len`.
pub fn clamp_extents(
    ext: impl IntoIterator<Item = StatusExtent>,
    max_extent_len: u64,
    max_count: usize,
    req_one: bool,
    request_len: u64,
) -> Vec<StatusExtent> {
    let max_extent_len = (max_extent_len & !511).max(512);
    let mut out: Vec<StatusExtent> = Vec::new();
    for e in ext {
        if e.len == 0 {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.flags == e.flags => last.len = last.len.saturating_add(e.len),
            _ => out.push(e),
        }
    }
    let mut split = Vec::with_capacity(out.len().min(max_count));
    'outer: for mut e in out {
        while e.len > max_extent_len {
            if split.len() >= max_count {
                break 'outer;
            }
            split.push(StatusExtent {
                len: max_extent_len,
                flags: e.flags,
            });
            e.len -= max_extent_len;
        }
        if split.len() >= max_count {
            break;
        }
        split.push(e);
    }
    if req_one {
        split.truncate(1);
        if let Some(first) = split.first_mut() {
            first.len = first.len.min(request_len);
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::frame::*;
    use proptest::prelude::*;

    fn target(style: ReplyStyle) -> ChunkTarget {
        ChunkTarget {
            style,
            cookie: 7,
            request_offset: 4096,
        }
    }

    #[test]
    fn request_round_trips() {
        for style in [HeaderStyle::Compact, HeaderStyle::Extended] {
            let mut out = Vec::new();
            let flags = if style == HeaderStyle::Extended {
                CMD_FLAG_PAYLOAD_LEN
            } else {
                0
            };
            encode_request(&mut out, style, flags, CMD_WRITE, 9, 512, 1024);
            let r = parse_request(&out, style, MAX_PAYLOAD_LEN)
                .unwrap()
                .unwrap();
            assert_eq!((r.command, r.cookie, r.offset), (CMD_WRITE, 9, 512));
            assert_eq!((r.length, r.payload_len), (1024, 1024));
            assert_eq!(r.header_len, out.len());
            assert_eq!(
                parse_request(&out[..out.len() - 1], style, 1 << 20).unwrap(),
                None
            );
        }
    }

    #[test]
    fn request_limits() {
        let mut out = Vec::new();
        encode_request(&mut out, HeaderStyle::Compact, 0, CMD_WRITE, 1, 0, 1 << 26);
        assert!(matches!(
            parse_request(&out, HeaderStyle::Compact, MAX_PAYLOAD_LEN),
            Err(ProtoError::PayloadTooLarge { .. })
        ));
        // A huge read carries no payload: the server answers it with an error instead.
        out.clear();
        encode_request(&mut out, HeaderStyle::Extended, 0, CMD_READ, 1, 0, 1 << 40);
        let r = parse_request(&out, HeaderStyle::Extended, MAX_PAYLOAD_LEN)
            .unwrap()
            .unwrap();
        assert_eq!((r.length, r.payload_len), (1 << 40, 0));
        // Wrong magic for the negotiated style.
        assert!(parse_request(&out, HeaderStyle::Compact, MAX_PAYLOAD_LEN).is_err());
    }

    #[test]
    fn replies_parse_back() {
        for style in [
            ReplyStyle::Simple,
            ReplyStyle::Structured,
            ReplyStyle::Extended,
        ] {
            let mut out = Vec::new();
            put_error(&mut out, target(style), EIO, "boom");
            let (h, n) = parse_reply_header(&out).unwrap().unwrap();
            match h {
                ReplyHeader::Simple { error, cookie } => {
                    assert_eq!((error, cookie, style), (EIO, 7, ReplyStyle::Simple));
                    assert_eq!(n, out.len());
                }
                ReplyHeader::Chunk {
                    flags,
                    ty,
                    len,
                    offset,
                    ..
                } => {
                    assert_eq!((flags, ty, len), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 10));
                    assert_eq!(offset.is_some(), style == ReplyStyle::Extended);
                    assert_eq!(n + 10, out.len());
                }
            }
        }
    }

    #[test]
    fn block_status_encoding() {
        let ext = [
            StatusExtent {
                len: 4096,
                flags: 0,
            },
            StatusExtent {
                len: 8192,
                flags: 3,
            },
        ];
        let mut out = Vec::new();
        put_block_status(&mut out, target(ReplyStyle::Structured), 1, &ext);
        assert_eq!(out.len(), 20 + 4 + 16);
        out.clear();
        put_block_status(&mut out, target(ReplyStyle::Extended), 1, &ext);
        assert_eq!(out.len(), 32 + 8 + 32);
    }

    #[test]
    fn clamp_merges_splits_and_limits() {
        let e = |len, flags| StatusExtent { len, flags };
        let got = clamp_extents(
            [e(512, 0), e(512, 0), e(0, 1), e(3 << 32, 3)],
            u32::MAX as u64,
            100,
            false,
            0,
        );
        assert_eq!(got[0], e(1024, 0));
        assert!(got[1..]
            .iter()
            .all(|x| x.len <= u32::MAX as u64 && x.flags == 3));
        assert_eq!(got[1..].iter().map(|x| x.len).sum::<u64>(), 3 << 32);
        let one = clamp_extents([e(8192, 0), e(512, 3)], u32::MAX as u64, 100, true, 4096);
        assert_eq!(one, vec![e(4096, 0)]);
        let few = clamp_extents([e(1 << 40, 0)], 1 << 20, 3, false, 0);
        assert_eq!(few.len(), 3);
    }

    proptest! {
        #[test]
        fn request_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64), ext in any::<bool>()) {
            let style = if ext { HeaderStyle::Extended } else { HeaderStyle::Compact };
            match parse_request(&data, style, MAX_PAYLOAD_LEN) {
                Ok(Some(r)) => prop_assert!(r.payload_len <= MAX_PAYLOAD_LEN),
                Ok(None) => prop_assert!(data.len() < r_len(style)),
                Err(_) => {}
            }
            let _ = parse_reply_header(&data);
        }

        #[test]
        fn magic_prefixed_garbage(rest in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut data = REQUEST_MAGIC.to_be_bytes().to_vec();
            data.extend_from_slice(&rest);
            let _ = parse_request(&data, HeaderStyle::Compact, MAX_PAYLOAD_LEN);
            let mut data = EXTENDED_REQUEST_MAGIC.to_be_bytes().to_vec();
            data.extend_from_slice(&rest);
            if let Ok(Some(r)) = parse_request(&data, HeaderStyle::Extended, MAX_PAYLOAD_LEN) {
                prop_assert!(r.payload_len <= MAX_PAYLOAD_LEN);
            }
            for magic in [SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, EXTENDED_REPLY_MAGIC] {
                let mut data = magic.to_be_bytes().to_vec();
                data.extend_from_slice(&rest);
                let _ = parse_reply_header(&data);
            }
        }

        #[test]
        fn clamp_preserves_total(lens in proptest::collection::vec((0u64..1<<34, 0u32..4), 0..20)) {
            let ext: Vec<StatusExtent> = lens.iter().map(|&(len, flags)| StatusExtent { len, flags }).collect();
            let total: u64 = ext.iter().map(|e| e.len).sum();
            let got = clamp_extents(ext, u32::MAX as u64, usize::MAX, false, 0);
            prop_assert_eq!(got.iter().map(|e| e.len).sum::<u64>(), total);
            prop_assert!(got.iter().all(|e| e.len > 0 && e.len <= u32::MAX as u64));
            prop_assert!(got.windows(2).all(|w| w[0].flags != w[1].flags || w[0].len == (u32::MAX as u64 & !511)));
        }
    }

    fn r_len(style: HeaderStyle) -> usize {
        match style {
            HeaderStyle::Compact => REQUEST_HEADER_LEN,
            HeaderStyle::Extended => EXTENDED_REQUEST_HEADER_LEN,
        }
    }
}
