//! A small blocking NBD client for tests, built on the crate's own framing. It speaks
//! what the installed tools cannot (extended headers) and what no polite client would
//! (hostile byte streams).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use platter_nbd_proto::consts::*;
use platter_nbd_proto::{self as proto, HeaderStyle, ReplyHeader, ReplyStyle};

pub trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

#[derive(Clone, Debug)]
pub struct Opts {
    pub export: String,
    pub structured: bool,
    pub extended: bool,
    pub meta: bool,
}

impl Opts {
    pub fn new(export: &str) -> Self {
        Opts {
            export: export.into(),
            structured: true,
            extended: false,
            meta: true,
        }
    }
}

/// One option reply: type and data.
pub type OptReply = (u32, Vec<u8>);

/// A completed reply.
#[derive(Debug, Default, Clone)]
pub struct Reply {
    pub cookie: u64,
    pub error: u32,
    /// Read data assembled at offsets relative to the request (holes filled with zeroes).
    pub data: Vec<u8>,
    pub holes: usize,
    pub data_chunks: usize,
    /// Block status extents: (length, flags).
    pub extents: Vec<(u64, u64)>,
}

pub struct Client<S: Stream> {
    pub s: S,
    pub size: u64,
    pub flags: u16,
    pub header: HeaderStyle,
    pub reply: ReplyStyle,
    next_cookie: u64,
    /// cookie -> (command, offset, length)
    pending: HashMap<u64, (u16, u64, u64)>,
    partial: HashMap<u64, Reply>,
}

pub fn read_exact<S: Read>(s: &mut S, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v)?;
    Ok(v)
}

/// Sends the client flags after reading the greeting.
pub fn greet<S: Stream>(s: &mut S) -> io::Result<u16> {
    let g = read_exact(s, 18)?;
    let flags = proto::parse_greeting(&g).unwrap().unwrap();
    s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())?;
    Ok(flags)
}

/// Sends one option and reads replies up to the final one.
pub fn option<S: Stream>(s: &mut S, opt: u32, data: &[u8]) -> io::Result<Vec<OptReply>> {
    let mut out = Vec::new();
    proto::encode_option(&mut out, opt, data);
    s.write_all(&out)?;
    read_option_replies(s)
}

pub fn read_option_replies<S: Stream>(s: &mut S) -> io::Result<Vec<OptReply>> {
    let mut replies = Vec::new();
    loop {
        let h = read_exact(s, OPTION_REPLY_HEADER_LEN)?;
        let h = proto::parse_option_reply_header(&h)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .unwrap();
        let data = read_exact(s, h.len as usize)?;
        let last = !matches!(h.reply_type, REP_SERVER | REP_INFO | REP_META_CONTEXT);
        replies.push((h.reply_type, data));
        if last {
            return Ok(replies);
        }
    }
}

impl<S: Stream> Client<S> {
    /// Full fixed-newstyle handshake ending with `NBD_OPT_GO`.
    pub fn handshake(mut s: S, o: &Opts) -> io::Result<Self> {
        greet(&mut s)?;
        let mut reply = ReplyStyle::Simple;
        let mut header = HeaderStyle::Compact;
        if o.extended {
            let r = option(&mut s, OPT_EXTENDED_HEADERS, &[])?;
            assert_eq!(r[0].0, REP_ACK);
            reply = ReplyStyle::Extended;
            header = HeaderStyle::Extended;
        } else if o.structured {
            let r = option(&mut s, OPT_STRUCTURED_REPLY, &[])?;
            assert_eq!(r[0].0, REP_ACK);
            reply = ReplyStyle::Structured;
        }
        if o.meta && reply != ReplyStyle::Simple {
            let data = proto::encode_meta_context_request(&o.export, &[META_BASE_ALLOCATION]);
            let r = option(&mut s, OPT_SET_META_CONTEXT, &data)?;
            assert_eq!(r.last().unwrap().0, REP_ACK, "{r:?}");
        }
        let r = option(
            &mut s,
            OPT_GO,
            &proto::encode_info_request(&o.export, &[INFO_BLOCK_SIZE]),
        )?;
        let (ty, _) = r.last().unwrap();
        if *ty != REP_ACK {
            return Err(io::Error::other(format!("GO refused: {ty:#x}")));
        }
        let export = r
            .iter()
            .find(|(t, d)| *t == REP_INFO && d.get(..2) == Some(&[0, 0]))
            .unwrap();
        let size = u64::from_be_bytes(export.1[2..10].try_into().unwrap());
        let flags = u16::from_be_bytes(export.1[10..12].try_into().unwrap());
        Ok(Client {
            s,
            size,
            flags,
            header,
            reply,
            next_cookie: 1,
            pending: HashMap::new(),
            partial: HashMap::new(),
        })
    }

    /// Sends a request (with payload for writes); returns its cookie.
    pub fn send(&mut self, flags: u16, cmd: u16, offset: u64, len: u64, payload: &[u8]) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let mut out = Vec::with_capacity(32 + payload.len());
        let mut flags = flags;
        if self.header == HeaderStyle::Extended && !payload.is_empty() {
            flags |= CMD_FLAG_PAYLOAD_LEN;
        }
        proto::encode_request(&mut out, self.header, flags, cmd, cookie, offset, len);
        out.extend_from_slice(payload);
        self.s.write_all(&out).unwrap();
        self.pending.insert(cookie, (cmd, offset, len));
        cookie
    }

    /// Reads chunks until some request's reply is complete.
    pub fn recv(&mut self) -> io::Result<Reply> {
        loop {
            let mut head = read_exact(&mut self.s, 4)?;
            let rest = match u32::from_be_bytes(head[..4].try_into().unwrap()) {
                SIMPLE_REPLY_MAGIC => 12,
                STRUCTURED_REPLY_MAGIC => 16,
                EXTENDED_REPLY_MAGIC => 28,
                m => return Err(io::Error::other(format!("bad reply magic {m:#x}"))),
            };
            head.extend(read_exact(&mut self.s, rest)?);
            let (h, _) = proto::parse_reply_header(&head).unwrap().unwrap();
            match h {
                ReplyHeader::Simple { error, cookie } => {
                    let (cmd, _, len) = self.pending.remove(&cookie).expect("unknown cookie");
                    let mut r = Reply {
                        cookie,
                        error,
                        ..Reply::default()
                    };
                    if cmd == CMD_READ && error == 0 {
                        r.data = read_exact(&mut self.s, len as usize)?;
                    }
                    return Ok(r);
                }
                ReplyHeader::Chunk {
                    flags,
                    ty,
                    cookie,
                    len,
                    ..
                } => {
                    let payload = read_exact(&mut self.s, len as usize)?;
                    let &(_, req_off, req_len) = self.pending.get(&cookie).expect("unknown cookie");
                    let r = self.partial.entry(cookie).or_insert_with(|| Reply {
                        cookie,
                        ..Reply::default()
                    });
                    apply_chunk(r, ty, &payload, req_off, req_len);
                    if flags & REPLY_FLAG_DONE != 0 {
                        self.pending.remove(&cookie);
                        return Ok(self.partial.remove(&cookie).unwrap());
                    }
                }
            }
        }
    }

    pub fn call(&mut self, flags: u16, cmd: u16, offset: u64, len: u64, payload: &[u8]) -> Reply {
        let c = self.send(flags, cmd, offset, len, payload);
        let r = self.recv().unwrap();
        assert_eq!(r.cookie, c);
        r
    }

    pub fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, u32> {
        let r = self.call(0, CMD_READ, offset, len, &[]);
        if r.error != 0 {
            return Err(r.error);
        }
        let mut d = r.data;
        d.resize(len as usize, 0);
        Ok(d)
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), u32> {
        let r = self.call(0, CMD_WRITE, offset, data.len() as u64, data);
        if r.error != 0 {
            Err(r.error)
        } else {
            Ok(())
        }
    }

    pub fn disconnect(mut self) {
        let mut out = Vec::new();
        proto::encode_request(&mut out, self.header, 0, CMD_DISC, 0, 0, 0);
        let _ = self.s.write_all(&out);
    }
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn apply_chunk(r: &mut Reply, ty: u16, p: &[u8], req_off: u64, req_len: u64) {
    match ty {
        REPLY_TYPE_NONE => {}
        REPLY_TYPE_OFFSET_DATA => {
            let off = be64(p) - req_off;
            let data = &p[8..];
            assert!(
                off + data.len() as u64 <= req_len,
                "data chunk outside request"
            );
            if r.data.len() < req_len as usize {
                r.data.resize(req_len as usize, 0);
            }
            r.data[off as usize..off as usize + data.len()].copy_from_slice(data);
            r.data_chunks += 1;
        }
        REPLY_TYPE_OFFSET_HOLE => {
            let off = be64(p) - req_off;
            let len = u64::from(be32(&p[8..]));
            assert!(
                len > 0 && off + len <= req_len,
                "hole chunk outside request"
            );
            if r.data.len() < req_len as usize {
                r.data.resize(req_len as usize, 0);
            }
            r.data[off as usize..(off + len) as usize].fill(0);
            r.holes += 1;
        }
        REPLY_TYPE_BLOCK_STATUS => {
            for e in p[4..].chunks(8) {
                r.extents
                    .push((u64::from(be32(e)), u64::from(be32(&e[4..]))));
            }
        }
        REPLY_TYPE_BLOCK_STATUS_EXT => {
            let n = be32(&p[4..]) as usize;
            assert_eq!(p.len(), 8 + 16 * n);
            for e in p[8..].chunks(16) {
                r.extents.push((be64(e), be64(&e[8..])));
            }
        }
        t if t & 0x8000 != 0 => {
            r.error = be32(p);
            let mlen = u16::from_be_bytes([p[4], p[5]]) as usize;
            assert!(6 + mlen <= p.len());
        }
        t => panic!("unexpected chunk type {t}"),
    }
}
