//! A small blocking NBD client over any `Read + Write` stream (a unix socket, TCP, or a
//! `&mut` of either), built on this crate's framing.
//!
//! [`Client::handshake`] (or [`Client::connect_unix`], [`Client::connect_tcp`]) runs the
//! fixed-newstyle handshake up to `NBD_OPT_GO`; [`Handshake`] does it a step at a time for
//! callers that negotiate by hand (one raw option at a time). In the transmission phase
//! [`Client::call`] sends one request and waits for its reply, and the typed calls
//! ([`Client::read`], [`Client::write`], …) are built on it; [`Client::send`] and
//! [`Client::recv`] keep many requests in flight, their replies in any order.
//!
//! The client trusts nothing the server sends: every length is checked against what was
//! asked for (or a fixed bound) before anything is allocated for it, a protocol violation
//! is a [`ClientError`], never a panic. What the client itself sends is not checked: tests
//! use it to send requests a server must refuse.

pub mod frame;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::consts::*;
use crate::wire::Cursor;
use crate::{HeaderStyle, ProtoError, ReplyStyle};
use frame::ReplyHeader;

/// The largest option reply the client reads (NBD strings are at most 4096 bytes).
pub const MAX_OPTION_REPLY_LEN: u32 = 64 * 1024;
/// The most option reply data one option may produce in all its replies (`NBD_OPT_LIST`
/// on a server with many exports sends one reply per export).
pub const MAX_OPTION_REPLIES_LEN: usize = 16 << 20;
/// The largest reply chunk payload, other than the data of a read, the client reads.
pub const MAX_CHUNK_LEN: u64 = MAX_PAYLOAD_LEN as u64;
/// Writes with payloads up to this size go out in one `write` with their header; bigger
/// ones are written after it, not copied.
const COALESCE_MAX: usize = 64 * 1024;

/// What the client asks for in [`Client::handshake`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The export to open (`""` is the server's default export).
    pub export: String,
    /// Negotiate structured replies (`NBD_OPT_STRUCTURED_REPLY`): reads may come as data
    /// and hole chunks, errors carry messages, block status becomes possible.
    pub structured_replies: bool,
    /// Negotiate extended headers (`NBD_OPT_EXTENDED_HEADERS`; 64-bit lengths). Implies
    /// extended replies, so `structured_replies` is not asked for then.
    pub extended_headers: bool,
    /// Select the `base:allocation` metadata context (for block status); only with
    /// structured replies or extended headers.
    pub base_allocation: bool,
    /// Read and write timeout set on the socket by [`Client::connect_unix`] and
    /// [`Client::connect_tcp`] (a stream handed to [`Client::handshake`] keeps its own).
    pub io_timeout: Option<Duration>,
}

impl Options {
    /// Structured replies and `base:allocation` on `export`, compact headers, no timeout.
    pub fn new(export: &str) -> Self {
        Options {
            export: export.into(),
            structured_replies: true,
            extended_headers: false,
            base_allocation: true,
            io_timeout: None,
        }
    }
}

/// What went wrong talking to a server. Every variant says what the client was doing.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be opened.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// The socket path or address.
        target: String,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing the stream failed (including a timeout, or the server closing).
    #[error("{during}: {source}")]
    Io {
        /// What the client was doing.
        during: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The server's bytes cannot be parsed (a wrong magic number).
    #[error("{during}: {source}")]
    Framing {
        /// What the client was reading.
        during: &'static str,
        /// Why.
        source: ProtoError,
    },
    /// The server does not offer fixed-newstyle negotiation, the only one this client
    /// speaks.
    #[error("the server does not speak fixed-newstyle NBD (handshake flags {0:#x})")]
    NotFixedNewstyle(u16),
    /// The server answered an option with an error reply (or a final reply other than
    /// `ACK`).
    #[error("NBD_OPT_{} refused with {} ({reply_type:#x}): {message}", option_name(*.option), reply_name(*.reply_type))]
    OptionRefused {
        /// The option.
        option: u32,
        /// The final reply's type.
        reply_type: u32,
        /// The server's message (the reply's data, lossily decoded).
        message: String,
    },
    /// A request failed on the server: its reply carried an errno.
    #[error("NBD {} of {len} bytes at {offset} failed with {} ({errno}){}", command_name(*.command), error_name(*.errno), message_suffix(.message))]
    Command {
        /// `NBD_CMD_*`.
        command: u16,
        /// The request's offset.
        offset: u64,
        /// The request's length.
        len: u64,
        /// The NBD errno (`consts::EIO`, …).
        errno: u32,
        /// The server's message, if it sent one (structured error chunks).
        message: String,
    },
    /// [`Client::call`] (or a typed call) with requests of [`Client::send`] still in
    /// flight: their replies would be taken for its own.
    #[error("{0} requests are in flight: receive their replies before a call")]
    InFlight(usize),
    /// The server broke the protocol; the connection is unusable.
    #[error("the server broke the protocol: {0}")]
    Violation(String),
}

impl ClientError {
    /// The NBD errno of a failed request ([`ClientError::Command`]).
    pub fn errno(&self) -> Option<u32> {
        match self {
            ClientError::Command { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

fn violation(what: impl fmt::Display) -> ClientError {
    ClientError::Violation(what.to_string())
}

fn read_exact<S: Read>(s: &mut S, buf: &mut [u8], during: &'static str) -> Result<()> {
    s.read_exact(buf)
        .map_err(|source| ClientError::Io { during, source })
}

/// Reads `len` bytes; the caller has bounded `len`.
fn read_vec<S: Read>(s: &mut S, len: u64, during: &'static str) -> Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| violation(format!("{during}: {len} bytes")))?;
    let mut v = vec![0u8; len];
    read_exact(s, &mut v, during)?;
    Ok(v)
}

fn write_all<S: Write>(s: &mut S, buf: &[u8], during: &'static str) -> Result<()> {
    s.write_all(buf)
        .map_err(|source| ClientError::Io { during, source })
}

/// One reply to an option: its type (`NBD_REP_*`) and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionReply {
    /// `NBD_REP_*`.
    pub reply_type: u32,
    /// The reply's data, as sent.
    pub data: Vec<u8>,
}

/// A metadata context the server selected: its id (which block status chunks carry) and
/// name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContext {
    /// The id block status replies carry for this context.
    pub id: u32,
    /// Its name, e.g. `base:allocation`.
    pub name: String,
}

/// The block size constraints of an export (`NBD_INFO_BLOCK_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// Requests must be aligned to this.
    pub min: u32,
    /// Requests should be aligned to this.
    pub preferred: u32,
    /// No read or write payload may be larger.
    pub max: u32,
}

/// The option phase of a connection, after the greeting and before `NBD_OPT_GO`: one
/// option at a time, raw ([`Handshake::option`]) or typed.
pub struct Handshake<S> {
    stream: S,
    server_flags: u16,
    header: HeaderStyle,
    reply: ReplyStyle,
}

impl<S: Read + Write> Handshake<S> {
    /// Reads the server's greeting and answers with the client flags (fixed newstyle, and
    /// no zeroes if the server offers it).
    pub fn start(mut stream: S) -> Result<Self> {
        let mut greeting = [0u8; 18];
        read_exact(&mut stream, &mut greeting, "reading the greeting")?;
        let server_flags = frame::parse_greeting(&greeting)
            .map_err(|source| ClientError::Framing {
                during: "reading the greeting",
                source,
            })?
            .ok_or_else(|| violation("short greeting"))?;
        if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(ClientError::NotFixedNewstyle(server_flags));
        }
        let mut client = FLAG_C_FIXED_NEWSTYLE;
        if server_flags & FLAG_NO_ZEROES != 0 {
            client |= FLAG_C_NO_ZEROES;
        }
        let mut out = Vec::with_capacity(4);
        frame::encode_client_flags(&mut out, client);
        write_all(&mut stream, &out, "sending the client flags")?;
        Ok(Handshake {
            stream,
            server_flags,
            header: HeaderStyle::Compact,
            reply: ReplyStyle::Simple,
        })
    }

    /// The handshake flags of the server's greeting (`NBD_FLAG_FIXED_NEWSTYLE`, …).
    pub fn server_flags(&self) -> u16 {
        self.server_flags
    }

    /// Sends one option with `data` as given and reads its replies up to the final one
    /// (anything but `SERVER`, `INFO` and `META_CONTEXT`), whatever they say. Replies that
    /// answer another option, or carry more than [`MAX_OPTION_REPLY_LEN`] bytes, are
    /// errors.
    pub fn option(&mut self, option: u32, data: &[u8]) -> Result<Vec<OptionReply>> {
        let mut out = Vec::with_capacity(OPTION_HEADER_LEN + data.len());
        frame::encode_option(&mut out, option, data);
        write_all(&mut self.stream, &out, "sending an option")?;
        self.read_option_replies(option)
    }

    fn read_option_replies(&mut self, option: u32) -> Result<Vec<OptionReply>> {
        const DURING: &str = "reading an option reply";
        let mut replies = Vec::new();
        let mut total = 0usize;
        loop {
            let mut hdr = [0u8; OPTION_REPLY_HEADER_LEN];
            read_exact(&mut self.stream, &mut hdr, DURING)?;
            let h = frame::parse_option_reply_header(&hdr)
                .map_err(|source| ClientError::Framing {
                    during: DURING,
                    source,
                })?
                .ok_or_else(|| violation("short option reply header"))?;
            if h.option != option {
                return Err(violation(format!(
                    "a reply to option {} answered option {}",
                    option, h.option
                )));
            }
            if h.len > MAX_OPTION_REPLY_LEN {
                return Err(violation(format!(
                    "an option reply of {} bytes, over the {MAX_OPTION_REPLY_LEN}-byte limit",
                    h.len
                )));
            }
            total = total.saturating_add(h.len as usize);
            if total > MAX_OPTION_REPLIES_LEN {
                return Err(violation(format!(
                    "option replies of over {MAX_OPTION_REPLIES_LEN} bytes in all"
                )));
            }
            let data = read_vec(&mut self.stream, u64::from(h.len), DURING)?;
            let last = !matches!(h.reply_type, REP_SERVER | REP_INFO | REP_META_CONTEXT);
            replies.push(OptionReply {
                reply_type: h.reply_type,
                data,
            });
            if last {
                return Ok(replies);
            }
        }
    }

    /// [`Handshake::option`], requiring the final reply to be `ACK`.
    fn option_acked(&mut self, option: u32, data: &[u8]) -> Result<Vec<OptionReply>> {
        let replies = self.option(option, data)?;
        match replies.last() {
            Some(last) if last.reply_type == REP_ACK => Ok(replies),
            Some(last) => Err(ClientError::OptionRefused {
                option,
                reply_type: last.reply_type,
                message: String::from_utf8_lossy(&last.data).trim().to_string(),
            }),
            None => Err(violation("an option without replies")),
        }
    }

    /// Negotiates structured replies (`NBD_OPT_STRUCTURED_REPLY`).
    pub fn structured_replies(&mut self) -> Result<()> {
        self.option_acked(OPT_STRUCTURED_REPLY, &[])?;
        self.reply = ReplyStyle::Structured;
        Ok(())
    }

    /// Negotiates extended headers (`NBD_OPT_EXTENDED_HEADERS`): 64-bit request lengths
    /// and extended reply chunks.
    pub fn extended_headers(&mut self) -> Result<()> {
        self.option_acked(OPT_EXTENDED_HEADERS, &[])?;
        self.reply = ReplyStyle::Extended;
        self.header = HeaderStyle::Extended;
        Ok(())
    }

    /// Selects metadata contexts on `export` (`NBD_OPT_SET_META_CONTEXT`), answering the
    /// ones the server chose.
    pub fn set_meta_context(&mut self, export: &str, queries: &[&str]) -> Result<Vec<MetaContext>> {
        let data = frame::encode_meta_context_request(export, queries);
        let replies = self.option_acked(OPT_SET_META_CONTEXT, &data)?;
        let mut contexts = Vec::new();
        for r in replies.iter().filter(|r| r.reply_type == REP_META_CONTEXT) {
            let (id, name) = r
                .data
                .split_first_chunk::<4>()
                .ok_or_else(|| violation("a META_CONTEXT reply without its id"))?;
            contexts.push(MetaContext {
                id: u32::from_be_bytes(*id),
                name: String::from_utf8_lossy(name).into_owned(),
            });
        }
        Ok(contexts)
    }

    /// Opens `export` (`NBD_OPT_GO`, asking for the block size constraints too) and enters
    /// the transmission phase.
    pub fn go(mut self, export: &str) -> Result<Client<S>> {
        let data = frame::encode_info_request(export, &[INFO_BLOCK_SIZE]);
        let replies = self.option_acked(OPT_GO, &data)?;
        let mut export_info = None;
        let mut block_size = None;
        for r in replies.iter().filter(|r| r.reply_type == REP_INFO) {
            let mut c = Cursor::new(&r.data);
            match c.u16() {
                Some(INFO_EXPORT) => match (c.u64(), c.u16()) {
                    (Some(size), Some(flags)) => export_info = Some((size, flags)),
                    _ => return Err(violation("a short NBD_INFO_EXPORT")),
                },
                Some(INFO_BLOCK_SIZE) => match (c.u32(), c.u32(), c.u32()) {
                    (Some(min), Some(preferred), Some(max)) => {
                        block_size = Some(BlockSize {
                            min,
                            preferred,
                            max,
                        })
                    }
                    _ => return Err(violation("a short NBD_INFO_BLOCK_SIZE")),
                },
                _ => {}
            }
        }
        let (size, flags) = export_info.ok_or_else(|| {
            violation(format!("NBD_OPT_GO for {export:?} sent no NBD_INFO_EXPORT"))
        })?;
        Ok(Client {
            stream: self.stream,
            size,
            flags,
            block_size,
            header: self.header,
            reply: self.reply,
            next_cookie: 1,
            pending: HashMap::new(),
            partial: HashMap::new(),
            out: Vec::new(),
        })
    }

    /// The stream, for a caller that goes on by hand.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

/// A completed reply to one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The cookie of the request ([`Client::send`] answered it).
    pub cookie: u64,
    /// 0, or the NBD errno the request failed with.
    pub error: u32,
    /// The server's message with an error (structured replies only).
    pub message: String,
    /// A read's data, at offsets relative to the request, holes filled with zeroes.
    pub data: Vec<u8>,
    /// How many `OFFSET_HOLE` chunks the read came in.
    pub holes: usize,
    /// How many `OFFSET_DATA` chunks the read came in.
    pub data_chunks: usize,
    /// Block status extents of every context, in order: (length, `NBD_STATE_*` flags).
    pub extents: Vec<(u64, u64)>,
}

/// What the client remembers of a request in flight.
#[derive(Debug, Clone, Copy)]
struct Pending {
    command: u16,
    offset: u64,
    len: u64,
}

/// A connection in the transmission phase.
pub struct Client<S> {
    stream: S,
    size: u64,
    flags: u16,
    block_size: Option<BlockSize>,
    header: HeaderStyle,
    reply: ReplyStyle,
    next_cookie: u64,
    pending: HashMap<u64, Pending>,
    /// Structured replies that have had chunks but not their last one.
    partial: HashMap<u64, Reply>,
    /// Reused for request headers.
    out: Vec<u8>,
}

impl Client<UnixStream> {
    /// Connects to the unix socket at `path` and runs [`Client::handshake`].
    pub fn connect_unix(path: &Path, options: &Options) -> Result<Self> {
        let connect = |source| ClientError::Connect {
            target: path.display().to_string(),
            source,
        };
        let s = UnixStream::connect(path).map_err(connect)?;
        s.set_read_timeout(options.io_timeout)
            .and_then(|()| s.set_write_timeout(options.io_timeout))
            .map_err(connect)?;
        Client::handshake(s, options)
    }
}

impl Client<TcpStream> {
    /// Connects to `addr` over TCP (no Nagle delay) and runs [`Client::handshake`].
    pub fn connect_tcp<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        options: &Options,
    ) -> Result<Self> {
        let connect = |source| ClientError::Connect {
            target: addr.to_string(),
            source,
        };
        let s = TcpStream::connect(&addr).map_err(connect)?;
        s.set_nodelay(true)
            .and_then(|()| s.set_read_timeout(options.io_timeout))
            .and_then(|()| s.set_write_timeout(options.io_timeout))
            .map_err(connect)?;
        Client::handshake(s, options)
    }
}

impl<S: Read + Write> Client<S> {
    /// The whole handshake: greeting, extended headers or structured replies, the
    /// `base:allocation` context, and `NBD_OPT_GO` on `options.export`. Any refusal is an
    /// error.
    pub fn handshake(stream: S, options: &Options) -> Result<Self> {
        let mut h = Handshake::start(stream)?;
        if options.extended_headers {
            h.extended_headers()?;
        } else if options.structured_replies {
            h.structured_replies()?;
        }
        if options.base_allocation && h.reply != ReplyStyle::Simple {
            h.set_meta_context(&options.export, &[META_BASE_ALLOCATION])?;
        }
        h.go(&options.export)
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The export's transmission flags (`NBD_FLAG_READ_ONLY`, `NBD_FLAG_SEND_DF`, …).
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The export's block size constraints, if the server sent them.
    pub fn block_size(&self) -> Option<BlockSize> {
        self.block_size
    }

    /// The request header negotiated.
    pub fn header_style(&self) -> HeaderStyle {
        self.header
    }

    /// The replies negotiated.
    pub fn reply_style(&self) -> ReplyStyle {
        self.reply
    }

    /// The stream, for tests that write or read raw bytes in between (the client does not
    /// buffer: what it has not read is still in the stream).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Sends one request (its payload, for writes, as given; with extended headers a
    /// non-empty payload sets `NBD_CMD_FLAG_PAYLOAD_LEN`) and answers its cookie. The
    /// reply comes from [`Client::recv`].
    pub fn send(
        &mut self,
        flags: u16,
        command: u16,
        offset: u64,
        len: u64,
        payload: &[u8],
    ) -> Result<u64> {
        const DURING: &str = "sending a request";
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        let mut flags = flags;
        if self.header == HeaderStyle::Extended && !payload.is_empty() {
            flags |= CMD_FLAG_PAYLOAD_LEN;
        }
        self.out.clear();
        frame::encode_request(
            &mut self.out,
            self.header,
            flags,
            command,
            cookie,
            offset,
            len,
        );
        if payload.len() <= COALESCE_MAX {
            self.out.extend_from_slice(payload);
            write_all(&mut self.stream, &self.out, DURING)?;
        } else {
            write_all(&mut self.stream, &self.out, DURING)?;
            write_all(&mut self.stream, payload, DURING)?;
        }
        self.pending.insert(
            cookie,
            Pending {
                command,
                offset,
                len,
            },
        );
        Ok(cookie)
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Reads replies until one request's reply is complete, and answers it (whatever its
    /// `error`).
    pub fn recv(&mut self) -> Result<Reply> {
        const DURING: &str = "reading a reply";
        loop {
            let mut head = [0u8; EXTENDED_REPLY_HEADER_LEN];
            read_exact(&mut self.stream, &mut head[..4], DURING)?;
            let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let len = match magic {
                SIMPLE_REPLY_MAGIC => SIMPLE_REPLY_LEN,
                STRUCTURED_REPLY_MAGIC => STRUCTURED_REPLY_HEADER_LEN,
                EXTENDED_REPLY_MAGIC => EXTENDED_REPLY_HEADER_LEN,
                got => {
                    return Err(ClientError::Framing {
                        during: DURING,
                        source: ProtoError::BadMagic {
                            what: "reply",
                            got: u64::from(got),
                        },
                    })
                }
            };
            read_exact(&mut self.stream, &mut head[4..len], DURING)?;
            let (h, _) = frame::parse_reply_header(&head[..len])
                .map_err(|source| ClientError::Framing {
                    during: DURING,
                    source,
                })?
                .ok_or_else(|| violation("a short reply header"))?;
            match h {
                ReplyHeader::Simple { error, cookie } => {
                    let p = self.pending.remove(&cookie).ok_or_else(|| {
                        violation(format!("a reply to unknown cookie {cookie:#x}"))
                    })?;
                    self.partial.remove(&cookie);
                    let mut r = Reply {
                        cookie,
                        error,
                        ..Reply::default()
                    };
                    // The data's length is the request's own, not the server's word.
                    if p.command == CMD_READ && error == 0 {
                        r.data = read_vec(&mut self.stream, p.len, "reading a read's data")?;
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
                    let p = *self.pending.get(&cookie).ok_or_else(|| {
                        violation(format!("a reply chunk for unknown cookie {cookie:#x}"))
                    })?;
                    let max = if ty == REPLY_TYPE_OFFSET_DATA {
                        p.len.saturating_add(8)
                    } else {
                        MAX_CHUNK_LEN
                    };
                    if len > max {
                        return Err(violation(format!(
                            "a reply chunk of type {ty} with {len} bytes, over the {max}-byte limit"
                        )));
                    }
                    let payload = read_vec(&mut self.stream, len, DURING)?;
                    let r = self.partial.entry(cookie).or_insert_with(|| Reply {
                        cookie,
                        ..Reply::default()
                    });
                    apply_chunk(r, ty, &payload, p)?;
                    if flags & REPLY_FLAG_DONE != 0 {
                        self.pending.remove(&cookie);
                        return self
                            .partial
                            .remove(&cookie)
                            .ok_or_else(|| violation("a reply lost its chunks"));
                    }
                }
            }
        }
    }

    /// Sends one request and waits for its reply (whatever its `error`). Refused while
    /// requests of [`Client::send`] are in flight.
    pub fn call(
        &mut self,
        flags: u16,
        command: u16,
        offset: u64,
        len: u64,
        payload: &[u8],
    ) -> Result<Reply> {
        if !self.pending.is_empty() {
            return Err(ClientError::InFlight(self.pending.len()));
        }
        let cookie = self.send(flags, command, offset, len, payload)?;
        let r = self.recv()?;
        if r.cookie != cookie {
            return Err(violation(format!(
                "the reply to {cookie:#x} came for {:#x}",
                r.cookie
            )));
        }
        Ok(r)
    }

    /// [`Client::call`], with a failed request as [`ClientError::Command`].
    fn call_ok(
        &mut self,
        flags: u16,
        command: u16,
        offset: u64,
        len: u64,
        payload: &[u8],
    ) -> Result<Reply> {
        let r = self.call(flags, command, offset, len, payload)?;
        if r.error != 0 {
            return Err(ClientError::Command {
                command,
                offset,
                len,
                errno: r.error,
                message: r.message,
            });
        }
        Ok(r)
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut data = self.call_ok(0, CMD_READ, offset, len, &[])?.data;
        // A read of only holes, or of nothing, comes without data bytes.
        let len = usize::try_from(len).map_err(|_| violation("a read longer than memory"))?;
        data.resize(len, 0);
        Ok(data)
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.call_ok(0, CMD_WRITE, offset, data.len() as u64, data)
            .map(drop)
    }

    /// Makes every completed write durable (`NBD_CMD_FLUSH`).
    pub fn flush(&mut self) -> Result<()> {
        self.call_ok(0, CMD_FLUSH, 0, 0, &[]).map(drop)
    }

    /// Discards `len` bytes at `offset` (`NBD_CMD_TRIM`).
    pub fn trim(&mut self, offset: u64, len: u64) -> Result<()> {
        self.call_ok(0, CMD_TRIM, offset, len, &[]).map(drop)
    }

    /// Zeroes `len` bytes at `offset` (`NBD_CMD_WRITE_ZEROES`, with `NBD_CMD_FLAG_*` flags
    /// such as `NO_HOLE` or `FAST_ZERO`).
    pub fn write_zeroes(&mut self, offset: u64, len: u64, flags: u16) -> Result<()> {
        self.call_ok(flags, CMD_WRITE_ZEROES, offset, len, &[])
            .map(drop)
    }

    /// The allocation status of `len` bytes at `offset` (`NBD_CMD_BLOCK_STATUS`; needs
    /// `base_allocation` in [`Options`]): (length, `NBD_STATE_*` flags) extents.
    pub fn block_status(&mut self, offset: u64, len: u64) -> Result<Vec<(u64, u64)>> {
        Ok(self.call_ok(0, CMD_BLOCK_STATUS, offset, len, &[])?.extents)
    }

    /// Sends `NBD_CMD_DISC` and answers the stream (the server closes it).
    pub fn disconnect(mut self) -> Result<S> {
        self.out.clear();
        frame::encode_request(&mut self.out, self.header, 0, CMD_DISC, 0, 0, 0);
        write_all(&mut self.stream, &self.out, "sending a disconnect")?;
        Ok(self.stream)
    }
}

fn be64(b: &[u8]) -> Option<u64> {
    Cursor::new(b).u64()
}

fn be32(b: &[u8]) -> Option<u32> {
    Cursor::new(b).u32()
}

/// `[off, off + len)` relative to the request, if it lies inside it.
fn in_request(p: Pending, offset: u64, len: u64) -> Option<(usize, usize)> {
    let off = offset.checked_sub(p.offset)?;
    let end = off.checked_add(len)?;
    if end > p.len {
        return None;
    }
    Some((usize::try_from(off).ok()?, usize::try_from(end).ok()?))
}

/// Makes room for a read's data: all of the request, zeroes where no chunk says otherwise.
fn ensure_data(r: &mut Reply, p: Pending) -> Result<()> {
    let len = usize::try_from(p.len).map_err(|_| violation("a read longer than memory"))?;
    if r.data.len() < len {
        r.data.resize(len, 0);
    }
    Ok(())
}

/// Adds one chunk of a structured or extended reply to `r`.
fn apply_chunk(r: &mut Reply, ty: u16, p: &[u8], req: Pending) -> Result<()> {
    let short = || violation(format!("a short reply chunk of type {ty}"));
    match ty {
        REPLY_TYPE_NONE => {}
        REPLY_TYPE_OFFSET_DATA => {
            let offset = be64(p).ok_or_else(short)?;
            let data = p.get(8..).ok_or_else(short)?;
            let (from, to) = in_request(req, offset, data.len() as u64)
                .ok_or_else(|| violation("a data chunk outside its request"))?;
            ensure_data(r, req)?;
            r.data
                .get_mut(from..to)
                .ok_or_else(|| violation("a data chunk outside its request"))?
                .copy_from_slice(data);
            r.data_chunks += 1;
        }
        REPLY_TYPE_OFFSET_HOLE => {
            let (offset, len) = match (be64(p), p.get(8..).and_then(be32)) {
                (Some(o), Some(l)) if p.len() == 12 && l > 0 => (o, u64::from(l)),
                _ => return Err(violation("a malformed hole chunk")),
            };
            let (from, to) = in_request(req, offset, len)
                .ok_or_else(|| violation("a hole chunk outside its request"))?;
            ensure_data(r, req)?;
            r.data
                .get_mut(from..to)
                .ok_or_else(|| violation("a hole chunk outside its request"))?
                .fill(0);
            r.holes += 1;
        }
        REPLY_TYPE_BLOCK_STATUS => {
            let descs = p.get(4..).ok_or_else(short)?;
            if descs.len() % 8 != 0 {
                return Err(violation("a block status chunk with a partial extent"));
            }
            for e in descs.chunks_exact(8) {
                let (len, flags) = (be32(e).ok_or_else(short)?, be32(&e[4..]).ok_or_else(short)?);
                r.extents.push((u64::from(len), u64::from(flags)));
            }
        }
        REPLY_TYPE_BLOCK_STATUS_EXT => {
            let n = p.get(4..).and_then(be32).ok_or_else(short)?;
            let descs = p.get(8..).ok_or_else(short)?;
            if descs.len() as u64 != 16 * u64::from(n) {
                return Err(violation(format!(
                    "an extended block status chunk announcing {n} extents in {} bytes",
                    descs.len()
                )));
            }
            for e in descs.chunks_exact(16) {
                let (len, flags) = (be64(e).ok_or_else(short)?, be64(&e[8..]).ok_or_else(short)?);
                r.extents.push((len, flags));
            }
        }
        t if t & 0x8000 != 0 => {
            let mut c = Cursor::new(p);
            let (errno, mlen) = match (c.u32(), c.u16()) {
                (Some(e), Some(l)) => (e, usize::from(l)),
                _ => return Err(short()),
            };
            let message = c
                .bytes(mlen)
                .ok_or_else(|| violation("an error chunk whose message overruns it"))?;
            r.error = errno;
            r.message = String::from_utf8_lossy(message).into_owned();
        }
        t => return Err(violation(format!("a reply chunk of unknown type {t}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
