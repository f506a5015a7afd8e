//! Transmission-phase commands: checking a request against what was negotiated
//! ([`validate`]) and running it against a [`BlockDevice`] into an encoded reply
//! ([`execute`]).
//!
//! No sockets here: a reply is appended to a caller-owned buffer, so the same code runs on
//! the connection task (small IO) and on the IO threads (large IO). Nothing here may panic
//! on client input: every range is checked before the device sees it.

use crate::device::{BlockDevice, DeviceError, Extent, ExtentKind};
use crate::metrics::OpKind;
use platter_nbd_proto::consts::*;
use platter_nbd_proto::{
    clamp_extents, put_block_status, put_data_chunk_header, put_done, put_error, put_hole_chunk,
    put_ok, put_simple_reply, read_reply_prefix_len, ChunkTarget, HeaderStyle, ReplyStyle, Request,
    StatusExtent,
};

/// What the handshake fixed for one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session {
    pub header: HeaderStyle,
    pub reply: ReplyStyle,
    /// The id of `base:allocation` if the client selected it for this export.
    pub meta_context: Option<u32>,
    pub size: u64,
    pub read_only: bool,
    pub fast_zero: bool,
}

/// A checked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read {
        offset: u64,
        len: u32,
        df: bool,
    },
    Write {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Disc,
    Flush,
    Trim {
        offset: u64,
        len: u64,
        fua: bool,
    },
    Cache {
        offset: u64,
        len: u64,
    },
    WriteZeroes {
        offset: u64,
        len: u64,
        may_unmap: bool,
        fua: bool,
    },
    BlockStatus {
        offset: u64,
        len: u64,
        req_one: bool,
    },
}

impl Op {
    pub(crate) fn kind(&self) -> Option<OpKind> {
        Some(match self {
            Op::Read { .. } => OpKind::Read,
            Op::Write { .. } => OpKind::Write,
            Op::Disc => return None,
            Op::Flush => OpKind::Flush,
            Op::Trim { .. } => OpKind::Trim,
            Op::Cache { .. } => OpKind::Cache,
            Op::WriteZeroes { .. } => OpKind::WriteZeroes,
            Op::BlockStatus { .. } => OpKind::BlockStatus,
        })
    }

    /// Bytes of device IO, used to choose between inline and the IO threads.
    pub(crate) fn io_len(&self) -> u64 {
        match *self {
            Op::Read { len, .. } | Op::Write { len, .. } => u64::from(len),
            Op::Trim { len, .. } | Op::WriteZeroes { len, .. } => len,
            _ => 0,
        }
    }
}

/// A request refused before touching the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub errno: u32,
    pub message: String,
}

fn reject(errno: u32, message: impl Into<String>) -> Rejection {
    Rejection {
        errno,
        message: message.into(),
    }
}

fn range(offset: u64, len: u64, size: u64, errno: u32) -> Result<(), Rejection> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(reject(
            errno,
            format!("range {offset}+{len} is outside the export ({size} bytes)"),
        )),
    }
}

/// Checks a request's command, flags, lengths and range against the session.
pub(crate) fn validate(req: &Request, s: &Session) -> Result<Op, Rejection> {
    let f = req.flags;
    let ext = s.header == HeaderStyle::Extended;
    let fua = f & CMD_FLAG_FUA != 0;
    let allowed = match req.command {
        CMD_READ if s.reply != ReplyStyle::Simple => CMD_FLAG_FUA | CMD_FLAG_DF,
        CMD_WRITE if ext => CMD_FLAG_FUA | CMD_FLAG_PAYLOAD_LEN,
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
        CMD_BLOCK_STATUS => CMD_FLAG_FUA | CMD_FLAG_REQ_ONE,
        CMD_DISC => u16::MAX,
        _ => CMD_FLAG_FUA,
    };
    if f & !allowed != 0 {
        return Err(reject(
            EINVAL,
            format!(
                "flags {f:#x} are not valid for {}",
                command_name(req.command)
            ),
        ));
    }
    let (offset, len) = (req.offset, req.length);
    match req.command {
        CMD_READ => {
            range(offset, len, s.size, EINVAL)?;
            if len > u64::from(MAX_READ_LEN) {
                // EOVERFLOW is for clients that negotiated structured replies; the spec
                // wants EINVAL for the others.
                let errno = match s.reply {
                    ReplyStyle::Simple => EINVAL,
                    _ => EOVERFLOW,
                };
                return Err(reject(
                    errno,
                    format!("read of {len} bytes is over the {MAX_READ_LEN}-byte limit"),
                ));
            }
            Ok(Op::Read {
                offset,
                len: len as u32,
                df: f & CMD_FLAG_DF != 0,
            })
        }
        CMD_WRITE => {
            if ext && f & CMD_FLAG_PAYLOAD_LEN == 0 {
                return Err(reject(EINVAL, "write without NBD_CMD_FLAG_PAYLOAD_LEN"));
            }
            if s.read_only {
                return Err(reject(EPERM, "the export is read-only"));
            }
            range(offset, len, s.size, ENOSPC)?;
            Ok(Op::Write {
                offset,
                len: req.payload_len,
                fua,
            })
        }
        CMD_DISC => Ok(Op::Disc),
        CMD_FLUSH => Ok(Op::Flush),
        CMD_TRIM => {
            if s.read_only {
                return Err(reject(EPERM, "the export is read-only"));
            }
            range(offset, len, s.size, EINVAL)?;
            Ok(Op::Trim { offset, len, fua })
        }
        CMD_CACHE => {
            range(offset, len, s.size, EINVAL)?;
            Ok(Op::Cache { offset, len })
        }
        CMD_WRITE_ZEROES => {
            if s.read_only {
                return Err(reject(EPERM, "the export is read-only"));
            }
            range(offset, len, s.size, ENOSPC)?;
            if f & CMD_FLAG_FAST_ZERO != 0 && !s.fast_zero {
                return Err(reject(ENOTSUP, "zeroing is not faster than writing here"));
            }
            Ok(Op::WriteZeroes {
                offset,
                len,
                may_unmap: f & CMD_FLAG_NO_HOLE == 0,
                fua,
            })
        }
        CMD_BLOCK_STATUS => {
            if s.meta_context.is_none() {
                return Err(reject(EINVAL, "no metadata context was negotiated"));
            }
            if len == 0 {
                return Err(reject(EINVAL, "block status of zero bytes"));
            }
            range(offset, len, s.size, EINVAL)?;
            Ok(Op::BlockStatus {
                offset,
                len,
                req_one: f & CMD_FLAG_REQ_ONE != 0,
            })
        }
        other => Err(reject(EINVAL, format!("unknown command {other}"))),
    }
}

/// Tunables of [`execute`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExecConfig {
    /// Reads at least this long ask the device for holes and answer them with
    /// `OFFSET_HOLE` chunks (structured replies, without `DF`).
    pub sparse_read_min: u32,
}

/// The largest range one block-status reply describes (4 GiB less 4 KiB: fits a compact
/// extent and keeps device walks bounded).
pub(crate) const MAX_STATUS_QUERY: u64 = (1 << 32) - 4096;
/// The most extents one block-status reply carries.
pub(crate) const MAX_STATUS_EXTENTS: usize = 1 << 16;

/// Runs `op` against `dev`, appending its complete reply to `out`. `payload` is a write's
/// data. Answers whether it succeeded. Never panics on device errors: they become error
/// replies.
pub(crate) fn execute(
    dev: &dyn BlockDevice,
    op: &Op,
    payload: &[u8],
    t: ChunkTarget,
    meta_context: u32,
    cfg: ExecConfig,
    out: &mut Vec<u8>,
) -> bool {
    let start = out.len();
    let res = match *op {
        Op::Read { offset, len, df } => read(dev, offset, len, df, t, cfg, out),
        Op::Write { offset, fua, .. } => dev
            .write_at(payload, offset)
            .and_then(|()| fua_flush(dev, fua))
            .map(|()| put_ok(out, t)),
        Op::Disc => Ok(()),
        Op::Flush => dev.flush().map(|()| put_ok(out, t)),
        Op::Trim { offset, len, fua } => dev
            .trim(offset, len)
            .and_then(|()| fua_flush(dev, fua))
            .map(|()| put_ok(out, t)),
        Op::Cache { offset, len } => dev.cache(offset, len).map(|()| put_ok(out, t)),
        Op::WriteZeroes {
            offset,
            len,
            may_unmap,
            fua,
        } => dev
            .write_zeroes(offset, len, may_unmap)
            .and_then(|()| fua_flush(dev, fua))
            .map(|()| put_ok(out, t)),
        Op::BlockStatus {
            offset,
            len,
            req_one,
        } => block_status(dev, offset, len, req_one, t, meta_context, out),
    };
    match res {
        Ok(()) => true,
        Err(e) => {
            out.truncate(start);
            put_error(out, t, e.errno(), &e.to_string());
            false
        }
    }
}

fn fua_flush(dev: &dyn BlockDevice, fua: bool) -> Result<(), DeviceError> {
    if fua {
        dev.flush()
    } else {
        Ok(())
    }
}

/// Appends `len` bytes read from `dev` at `offset` to `out`.
fn read_into(
    dev: &dyn BlockDevice,
    offset: u64,
    len: usize,
    out: &mut Vec<u8>,
) -> Result<(), DeviceError> {
    let at = out.len();
    out.resize(at + len, 0);
    match out.get_mut(at..) {
        Some(buf) => dev.read_at(buf, offset),
        None => Err(DeviceError::Other("read buffer".into())),
    }
}

/// How a structured read is answered: no runs (or one data run) means one data chunk.
fn read_plan(
    dev: &dyn BlockDevice,
    offset: u64,
    len: u32,
    df: bool,
    t: ChunkTarget,
    cfg: ExecConfig,
) -> Vec<Run> {
    if t.style == ReplyStyle::Simple || df || len == 0 || len < cfg.sparse_read_min {
        return Vec::new();
    }
    dev.block_status(offset, u64::from(len))
        .map(|ext| read_runs(offset, u64::from(len), &ext))
        .unwrap_or_default()
}

fn dense(runs: &[Run]) -> bool {
    match runs {
        [] => true,
        [only] => !only.zero,
        _ => false,
    }
}

/// The header of a read reply whose `len` data bytes follow it in one piece.
fn put_read_header(out: &mut Vec<u8>, t: ChunkTarget, offset: u64, len: u32) {
    if t.style == ReplyStyle::Simple {
        put_simple_reply(out, 0, t.cookie);
    } else {
        put_data_chunk_header(out, t, REPLY_FLAG_DONE, offset, u64::from(len));
    }
}

fn read(
    dev: &dyn BlockDevice,
    offset: u64,
    len: u32,
    df: bool,
    t: ChunkTarget,
    cfg: ExecConfig,
    out: &mut Vec<u8>,
) -> Result<(), DeviceError> {
    let runs = read_plan(dev, offset, len, df, t, cfg);
    read_runs_into(dev, offset, len, &runs, t, out)
}

/// Appends a read's reply following `runs` (see [`read_plan`]).
fn read_runs_into(
    dev: &dyn BlockDevice,
    offset: u64,
    len: u32,
    runs: &[Run],
    t: ChunkTarget,
    out: &mut Vec<u8>,
) -> Result<(), DeviceError> {
    out.reserve(read_reply_prefix_len(t.style) + len as usize);
    if len == 0 && t.style != ReplyStyle::Simple {
        put_done(out, t);
        return Ok(());
    }
    if dense(runs) {
        put_read_header(out, t, offset, len);
        return read_into(dev, offset, len as usize, out);
    }
    let last = runs.len() - 1;
    for (i, r) in runs.iter().enumerate() {
        let flags = if i == last { REPLY_FLAG_DONE } else { 0 };
        if r.zero {
            put_hole_chunk(out, t, flags, r.offset, r.len as u32);
        } else {
            put_data_chunk_header(out, t, flags, r.offset, r.len);
            read_into(dev, r.offset, r.len as usize, out)?;
        }
    }
    Ok(())
}

/// Runs a request like [`execute`], except that the data of a read answered in one piece
/// goes into `data` instead of after its header in `out`. `data` is a reused buffer: only
/// its growth is zero-filled, which saves clearing large buffers before every read.
/// Answers success and how many leading bytes of `data` belong to the reply.
pub(crate) fn execute_split(
    dev: &dyn BlockDevice,
    op: &Op,
    t: ChunkTarget,
    meta_context: u32,
    cfg: ExecConfig,
    out: &mut Vec<u8>,
    data: &mut Vec<u8>,
) -> (bool, usize) {
    let Op::Read { offset, len, df } = *op else {
        return (execute(dev, op, &[], t, meta_context, cfg, out), 0);
    };
    let runs = read_plan(dev, offset, len, df, t, cfg);
    if len == 0 || !dense(&runs) {
        let start = out.len();
        return match read_runs_into(dev, offset, len, &runs, t, out) {
            Ok(()) => (true, 0),
            Err(e) => {
                out.truncate(start);
                put_error(out, t, e.errno(), &e.to_string());
                (false, 0)
            }
        };
    }
    let n = len as usize;
    if data.len() < n {
        data.resize(n, 0);
    }
    let res = match data.get_mut(..n) {
        Some(buf) => dev.read_at(buf, offset),
        None => Err(DeviceError::Other("read buffer".into())),
    };
    match res {
        Ok(()) => {
            put_read_header(out, t, offset, len);
            (true, n)
        }
        Err(e) => {
            put_error(out, t, e.errno(), &e.to_string());
            (false, 0)
        }
    }
}

/// A piece of a read: data to send, or zeroes to announce as a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub offset: u64,
    pub len: u64,
    pub zero: bool,
}

/// Cuts `offset..offset+len` into data and zero runs from a device's extents, clipping
/// them to the range, merging neighbours, and treating anything they fail to cover as data.
pub(crate) fn read_runs(offset: u64, len: u64, ext: &[Extent]) -> Vec<Run> {
    let end = offset.saturating_add(len);
    let mut runs: Vec<Run> = Vec::new();
    let push = |runs: &mut Vec<Run>, o: u64, l: u64, zero: bool| {
        if l == 0 {
            return;
        }
        match runs.last_mut() {
            Some(last) if last.zero == zero && last.offset + last.len == o => last.len += l,
            _ => runs.push(Run {
                offset: o,
                len: l,
                zero,
            }),
        }
    };
    let mut at = offset;
    for e in ext {
        let s = e.offset.max(at);
        let t = e.offset.saturating_add(e.len).min(end);
        if t <= s {
            continue;
        }
        push(&mut runs, at, s - at, false);
        push(&mut runs, s, t - s, e.kind != ExtentKind::Data);
        at = t;
        if at >= end {
            break;
        }
    }
    push(&mut runs, at, end.saturating_sub(at), false);
    runs
}

fn block_status(
    dev: &dyn BlockDevice,
    offset: u64,
    len: u64,
    req_one: bool,
    t: ChunkTarget,
    context: u32,
    out: &mut Vec<u8>,
) -> Result<(), DeviceError> {
    let qlen = len.min(MAX_STATUS_QUERY);
    let end = offset + qlen;
    let ext = dev.block_status(offset, qlen)?;
    let mut at = offset;
    let status = ext.iter().filter_map(|e| {
        // Keep only what lies in [at, end): extents must be consecutive from `offset`.
        let s = e.offset.max(at);
        let stop = e.offset.saturating_add(e.len).min(end);
        if s != at || stop <= s {
            return None;
        }
        at = stop;
        let flags = match e.kind {
            ExtentKind::Data => 0,
            ExtentKind::Zero => STATE_ZERO,
            ExtentKind::Hole => STATE_HOLE | STATE_ZERO,
        };
        Some(StatusExtent {
            len: stop - s,
            flags,
        })
    });
    let max_len = match t.style {
        ReplyStyle::Extended => u64::MAX,
        _ => u64::from(u32::MAX),
    };
    let mut list = clamp_extents(status, max_len, MAX_STATUS_EXTENTS, req_one, len);
    if list.is_empty() {
        // A device that says nothing about the range: report it as plain data.
        list.push(StatusExtent {
            len: qlen.min(max_len & !511).max(1),
            flags: 0,
        });
    }
    put_block_status(out, t, context, &list);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memdev::MemDevice;
    use platter_nbd_proto::client::frame::{encode_request, parse_reply_header, ReplyHeader};
    use platter_nbd_proto::parse_request;

    fn session(reply: ReplyStyle) -> Session {
        Session {
            header: HeaderStyle::Compact,
            reply,
            meta_context: Some(1),
            size: 1 << 20,
            read_only: false,
            fast_zero: true,
        }
    }

    fn req(flags: u16, command: u16, offset: u64, length: u64) -> Request {
        let mut b = Vec::new();
        encode_request(
            &mut b,
            HeaderStyle::Compact,
            flags,
            command,
            1,
            offset,
            length,
        );
        parse_request(&b, HeaderStyle::Compact, MAX_PAYLOAD_LEN)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn validation_errnos() {
        let s = session(ReplyStyle::Structured);
        let e = |r: Result<Op, Rejection>| r.unwrap_err().errno;
        assert_eq!(e(validate(&req(0, CMD_READ, 1 << 20, 1), &s)), EINVAL);
        assert_eq!(e(validate(&req(0, CMD_WRITE, 1 << 20, 1), &s)), ENOSPC);
        assert_eq!(
            e(validate(&req(0, CMD_WRITE_ZEROES, 0, 1 << 21), &s)),
            ENOSPC
        );
        assert_eq!(e(validate(&req(0, 42, 0, 0), &s)), EINVAL);
        assert_eq!(e(validate(&req(CMD_FLAG_DF, CMD_WRITE, 0, 1), &s)), EINVAL);
        assert_eq!(e(validate(&req(0, CMD_BLOCK_STATUS, 0, 0), &s)), EINVAL);
        let big = Session { size: 1 << 40, ..s };
        let over = u64::from(MAX_READ_LEN) + 1;
        assert_eq!(e(validate(&req(0, CMD_READ, 0, over), &big)), EOVERFLOW);
        let big_simple = Session {
            reply: ReplyStyle::Simple,
            ..big
        };
        assert_eq!(e(validate(&req(0, CMD_READ, 0, over), &big_simple)), EINVAL);
        // Over the advertised maximum but within what is served.
        let served = u64::from(MAX_PAYLOAD_LEN) + (18 << 20);
        for sess in [&big, &big_simple] {
            assert!(matches!(
                validate(&req(0, CMD_READ, 0, served), sess),
                Ok(Op::Read { len, .. }) if u64::from(len) == served
            ));
        }
        let ro = Session {
            read_only: true,
            ..s
        };
        assert_eq!(e(validate(&req(0, CMD_WRITE, 1 << 30, 1), &ro)), EPERM);
        assert_eq!(e(validate(&req(0, CMD_TRIM, 0, 1), &ro)), EPERM);
        let simple = session(ReplyStyle::Simple);
        assert_eq!(
            e(validate(&req(CMD_FLAG_DF, CMD_READ, 0, 1), &simple)),
            EINVAL
        );
        let nometa = Session {
            meta_context: None,
            ..s
        };
        assert_eq!(
            e(validate(&req(0, CMD_BLOCK_STATUS, 0, 1), &nometa)),
            EINVAL
        );
        assert_eq!(
            validate(&req(CMD_FLAG_NO_HOLE, CMD_WRITE_ZEROES, 0, 10), &s).unwrap(),
            Op::WriteZeroes {
                offset: 0,
                len: 10,
                may_unmap: false,
                fua: false
            }
        );
    }

    #[test]
    fn runs_cover_the_range() {
        let x = |offset, len, kind| Extent { offset, len, kind };
        let r = read_runs(
            100,
            10000,
            &[
                x(0, 4096, ExtentKind::Data),
                x(4096, 4096, ExtentKind::Hole),
                x(8192, 8192, ExtentKind::Zero),
            ],
        );
        assert_eq!(
            r,
            vec![
                Run {
                    offset: 100,
                    len: 3996,
                    zero: false
                },
                Run {
                    offset: 4096,
                    len: 6004,
                    zero: true
                },
            ]
        );
        // Gaps are data.
        let r = read_runs(0, 100, &[x(50, 10, ExtentKind::Hole)]);
        assert_eq!(r.len(), 3);
        assert_eq!(
            read_runs(0, 10, &[]),
            vec![Run {
                offset: 0,
                len: 10,
                zero: false
            }]
        );
    }

    #[test]
    fn sparse_read_reply() {
        let dev = MemDevice::new(1 << 20);
        dev.write_at(&[5u8; 4096], 8192).unwrap();
        let t = ChunkTarget {
            style: ReplyStyle::Structured,
            cookie: 3,
            request_offset: 0,
        };
        let op = Op::Read {
            offset: 0,
            len: 16384,
            df: false,
        };
        let cfg = ExecConfig { sparse_read_min: 0 };
        let mut out = Vec::new();
        assert!(execute(&dev, &op, &[], t, 1, cfg, &mut out));
        // hole 0..8192, data 8192..12288, hole 12288..16384
        let mut types = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let (h, n) = parse_reply_header(&out[at..]).unwrap().unwrap();
            let ReplyHeader::Chunk { ty, len, flags, .. } = h else {
                panic!()
            };
            types.push((ty, flags));
            at += n + len as usize;
        }
        assert_eq!(
            types,
            vec![
                (REPLY_TYPE_OFFSET_HOLE, 0),
                (REPLY_TYPE_OFFSET_DATA, 0),
                (REPLY_TYPE_OFFSET_HOLE, REPLY_FLAG_DONE)
            ]
        );
        // DF forces one data chunk.
        out.clear();
        let op = Op::Read {
            offset: 0,
            len: 16384,
            df: true,
        };
        assert!(execute(&dev, &op, &[], t, 1, cfg, &mut out));
        assert_eq!(out.len(), 20 + 8 + 16384);
    }
}
