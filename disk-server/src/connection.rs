//! The transmission phase of one client: one task that reads and parses requests in
//! batches, runs small ones inline, hands large ones to the IO threads, and writes every
//! reply produced meanwhile with one vectored write.
//!
//! Reading, writing and completions are multiplexed with a `select!` on split halves, so a
//! client that writes without reading (or the reverse) never deadlocks us. Memory is
//! bounded: we stop parsing when queued replies or in-flight IO pass their limits, and we
//! stop reading while a complete request is still unparsed. Replies may go out of order
//! (NBD allows it). This module must never panic on client input: protocol violations end
//! the connection, everything else becomes an NBD error reply.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::command::{execute, execute_split, validate, ExecConfig, Op, Session};
use crate::device::BlockDevice;
use crate::iopool::Job;
use crate::metrics::{ExportMetrics, OpKind};
use crate::negotiate::{Negotiated, BASE_ALLOCATION_ID};
use crate::out_queue::{BufPool, OutQueue, IOV};
use crate::poll::PollBudget;
use crate::server::{ConnError, Shared, SplitStream};
use platter_nbd_proto::consts::*;
use platter_nbd_proto::{self as proto, parse_request, put_error, ChunkTarget, HeaderStyle};

/// How much we ask the socket for at a time.
const READ_CHUNK: usize = 256 * 1024;
/// Stop parsing while this many reply bytes wait to be written.
const OUT_HIGH: usize = 4 << 20;
/// Most requests handed to the IO threads at once, per connection.
const MAX_INFLIGHT: usize = 64;
/// A request finished on an IO thread.
struct Done {
    reply: Vec<u8>,
    /// A read's data buffer and how much of it is the reply's data.
    data: Vec<u8>,
    data_used: usize,
    /// A write's payload buffer, returned for reuse.
    payload: Vec<u8>,
    kind: OpKind,
    bytes: u64,
    ok: bool,
    start: Instant,
    cost: usize,
    write: bool,
}

/// Why `process` stopped.
enum Stop {
    /// The next request is incomplete: read until the buffer holds this many bytes.
    Need(usize),
    /// A large write's payload is arriving: read it straight into its own buffer.
    Payload,
    /// Limits reached, or no more requests will be taken: do not read.
    Hold,
}

struct Conn {
    dev: Arc<dyn BlockDevice>,
    session: Session,
    exec: ExecConfig,
    metrics: Arc<ExportMetrics>,
    shared: Arc<Shared>,
    inline_max: u64,
    inline_write_max: u64,
    done_tx: mpsc::UnboundedSender<Done>,
    inflight: usize,
    inflight_bytes: usize,
    inflight_writes: usize,
    /// Offloaded writes wait here while another of this connection's writes runs: they
    /// would only contend for the device's write lock, while one at a time still overlaps
    /// device IO with reading the next payload.
    write_backlog: VecDeque<Job>,
    out: OutQueue,
    /// Written since the last flush we can vouch for: flush at close.
    dirty: bool,
    /// No more requests will be read (DISC, EOF or shutdown).
    closing: bool,
    disc: bool,
    /// A large write whose payload is still arriving.
    partial: Option<PartialWrite>,
    /// Payload buffers kept for reuse (fresh ones cost a page fault per 4 KiB).
    payload_spare: BufPool,
    /// Requests parsed since the connection last went idle.
    parsed: usize,
    /// The last request parsed was a large write: the next one probably is too, so read
    /// its header alone and let its payload go straight into its own buffer (reading ahead
    /// would pull the payload into the request buffer, to be copied out again).
    large_writes: bool,
}

/// A checked write headed for the IO threads, waiting for the rest of its payload.
struct PartialWrite {
    op: Op,
    t: ChunkTarget,
    start: Instant,
    buf: Vec<u8>,
    len: usize,
}

/// Serves requests on `stream` until the client disconnects or the server shuts down.
/// `inbuf` holds bytes the handshake read past its last option.
pub(crate) async fn transmit<S: SplitStream>(
    stream: S,
    mut inbuf: BytesMut,
    n: Negotiated,
    shared: Arc<Shared>,
) -> Result<(), ConnError> {
    let (mut rd, mut wr) = stream.split_io();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let cfg = &shared.config;
    let mut c = Conn {
        metrics: shared.metrics.export(&n.name),
        session: n.session,
        exec: ExecConfig {
            sparse_read_min: cfg.sparse_read_min,
        },
        inline_max: u64::from(cfg.inline_max),
        inline_write_max: u64::from(cfg.inline_write_max),
        dev: n.device,
        done_tx,
        inflight: 0,
        inflight_bytes: 0,
        inflight_writes: 0,
        write_backlog: VecDeque::new(),
        out: OutQueue::new(),
        dirty: false,
        closing: false,
        disc: false,
        partial: None,
        payload_spare: BufPool::default(),
        parsed: 0,
        large_writes: false,
        shared: shared.clone(),
    };
    tracing::debug!(export = %n.name, header = ?c.session.header, reply = ?c.session.reply, "transmission");
    let mut need_flush = false;
    let mut read_max = READ_CHUNK;
    let mut poll = PollBudget::new();
    let result: Result<(), ConnError> = async {
        loop {
            let stop = if c.disc {
                Stop::Hold
            } else {
                c.process(&mut inbuf)?
            };
            let reading = match stop {
                Stop::Need(n) if !c.closing => {
                    let want = n.saturating_sub(inbuf.len());
                    // Small requests: read ahead to batch them. A large one, or the header
                    // of what is probably a large write: read just its bytes, so nothing is
                    // left behind to move when the buffer is reused.
                    read_max = if n > READ_CHUNK || c.large_writes {
                        want
                    } else {
                        want.max(READ_CHUNK)
                    };
                    inbuf.reserve(read_max);
                    true
                }
                Stop::Payload => !c.closing,
                _ => false,
            };
            if c.closing && c.inflight == 0 && c.out.is_empty() && !need_flush {
                return Ok(());
            }
            // Nothing to do but wait for the client: poll before sleeping if it sends one
            // request at a time (see `poll`).
            let idle = reading
                && S::POLLS
                && c.partial.is_none()
                && c.inflight == 0
                && c.out.is_empty()
                && !need_flush;
            let budget = if idle {
                poll.idle(std::mem::take(&mut c.parsed))
            } else {
                std::time::Duration::ZERO
            };
            let idle_since = idle.then(Instant::now);
            if !budget.is_zero() {
                if let Some(n) = spin::<S>(&mut rd, &mut inbuf, read_max, budget)? {
                    c.closing |= n == 0;
                    if let Some(t) = idle_since {
                        poll.waited(t.elapsed());
                    }
                    continue;
                }
            }
            tokio::select! {
                biased;
                Some(done) = done_rx.recv(), if c.inflight > 0 => c.complete(done),
                r = write_out(&mut wr, &c.out), if !c.out.is_empty() || need_flush => match r? {
                    Written::Bytes(0) => {
                        return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
                    }
                    Written::Bytes(n) => {
                        c.out.advance(n);
                        need_flush = S::NEEDS_FLUSH;
                    }
                    Written::Flushed => need_flush = false,
                },
                r = read_more(&mut rd, &mut inbuf, read_max, &mut c.partial), if reading => {
                    if r? == 0 {
                        c.closing = true;
                    }
                    if let Some(t) = idle_since {
                        poll.waited(t.elapsed());
                    }
                }
                _ = shared.shutdown.cancelled(), if !c.closing => c.closing = true,
                else => return Ok(()),
            }
        }
    }
    .await;
    // In-flight jobs hold their own device handle; wait for them so their writes are in
    // before the final flush.
    while c.inflight > 0 {
        match done_rx.recv().await {
            Some(d) => c.complete(d),
            None => break,
        }
    }
    if c.dirty {
        let dev = c.dev.clone();
        match tokio::task::spawn_blocking(move || dev.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(export = %n.name, error = %e, "flush at close failed"),
            Err(e) => tracing::warn!(export = %n.name, error = %e, "flush at close panicked"),
        }
    }
    if result.is_ok() {
        let _ = wr.shutdown().await;
    }
    result
}

impl Conn {
    /// Parses and dispatches every complete request in `inbuf`, within the limits.
    fn process(&mut self, inbuf: &mut BytesMut) -> Result<Stop, ConnError> {
        if let Some(p) = self.partial.take() {
            if p.buf.len() < p.len {
                self.partial = Some(p);
                return Ok(Stop::Payload);
            }
            self.dispatch(p.op, p.t, p.buf, p.start);
        }
        let max_inflight_bytes = self.shared.config.max_inflight_bytes;
        loop {
            if self.disc {
                return Ok(Stop::Hold);
            }
            if self.out.len() >= OUT_HIGH
                || self.inflight >= MAX_INFLIGHT
                || (self.inflight > 0 && self.inflight_bytes >= max_inflight_bytes)
            {
                return Ok(Stop::Hold);
            }
            let Some(req) = parse_request(inbuf, self.session.header, MAX_PAYLOAD_LEN)? else {
                return Ok(Stop::Need(header_len(self.session.header)));
            };
            self.parsed += 1;
            self.large_writes =
                req.command == CMD_WRITE && self.offloads_write(u64::from(req.payload_len));
            if self.large_writes {
                if let Ok(op) = validate(&req, &self.session) {
                    if self.start_write(&req, op, inbuf) {
                        continue;
                    }
                    return Ok(Stop::Payload);
                }
            }
            let total = req.wire_len();
            if inbuf.len() < total {
                return Ok(Stop::Need(total));
            }
            self.handle(&req, inbuf, total);
        }
    }

    fn offloads_write(&self, len: u64) -> bool {
        len > self.inline_write_max && self.shared.pool.is_some()
    }

    /// Whether a checked request goes to the IO threads.
    fn offloads(&self, op: &Op) -> bool {
        match op {
            Op::Write { len, .. } => self.offloads_write(u64::from(*len)),
            Op::Flush => self.shared.pool.is_some(),
            op => op.io_len() > self.inline_max && self.shared.pool.is_some(),
        }
    }

    /// Takes a large write's header and whatever payload `inbuf` holds into a payload
    /// buffer; answers whether the payload is complete (and dispatched).
    fn start_write(&mut self, req: &proto::Request, op: Op, inbuf: &mut BytesMut) -> bool {
        let start = Instant::now();
        self.note_write(&op);
        let t = target(req, self.session);
        let len = req.payload_len as usize;
        inbuf.advance(req.header_len);
        let avail = inbuf.len().min(len);
        let mut buf = self.payload_spare.take(len);
        buf.extend_from_slice(inbuf.get(..avail).unwrap_or(&[]));
        inbuf.advance(avail);
        if avail == len {
            self.dispatch(op, t, buf, start);
            return true;
        }
        self.partial = Some(PartialWrite {
            op,
            t,
            start,
            buf,
            len,
        });
        false
    }

    /// Tracks whether the device has unflushed writes from this connection.
    fn note_write(&mut self, op: &Op) {
        if matches!(
            op,
            Op::Write { .. } | Op::Trim { .. } | Op::WriteZeroes { .. }
        ) {
            self.dirty = true;
        } else if *op == Op::Flush && self.inflight_writes == 0 {
            self.dirty = false;
        }
    }

    /// Runs or dispatches one complete request and consumes it from `inbuf`.
    fn handle(&mut self, req: &proto::Request, inbuf: &mut BytesMut, total: usize) {
        let start = Instant::now();
        let t = target(req, self.session);
        let op = match validate(req, &self.session) {
            Ok(op) => op,
            Err(rej) => {
                inbuf.advance(total);
                self.out.append(64 + rej.message.len(), |o| {
                    put_error(o, t, rej.errno, &rej.message)
                });
                if let Some(kind) = kind_of(req.command) {
                    self.metrics.record(kind, 0, false, start.elapsed());
                }
                return;
            }
        };
        let Some(kind) = op.kind() else {
            // NBD_CMD_DISC: finish what is in flight, then close.
            inbuf.advance(total);
            self.disc = true;
            self.closing = true;
            return;
        };
        self.note_write(&op);
        if self.offloads(&op) {
            inbuf.advance(total);
            self.dispatch(op, t, Vec::new(), start);
            return;
        }
        let payload = inbuf.get(req.header_len..total).unwrap_or(&[]);
        let (dev, exec) = (&self.dev, self.exec);
        let ok = self.out.append(reply_size(&op, t), |o| {
            execute(dev.as_ref(), &op, payload, t, BASE_ALLOCATION_ID, exec, o)
        });
        inbuf.advance(total);
        self.metrics.record(kind, op.io_len(), ok, start.elapsed());
    }

    /// Hands a request to the IO threads; its reply comes back through `done_tx`.
    fn dispatch(&mut self, op: Op, t: ChunkTarget, payload: Vec<u8>, start: Instant) {
        let Some(kind) = op.kind() else {
            return;
        };
        let write = matches!(
            op,
            Op::Write { .. } | Op::Trim { .. } | Op::WriteZeroes { .. }
        );
        let is_read = matches!(op, Op::Read { .. });
        let mut reply = self
            .out
            .take_spare(if is_read { 64 } else { reply_size(&op, t) });
        let mut data = if is_read {
            self.out.take_data()
        } else {
            Vec::new()
        };
        let cost = reply_size(&op, t).max(payload.len());
        let (dev, exec, tx) = (self.dev.clone(), self.exec, self.done_tx.clone());
        self.inflight += 1;
        self.inflight_bytes += cost;
        self.inflight_writes += usize::from(write);
        let job = move || {
            // A panicking device must not leave this request unanswered (the connection
            // would wait for it forever) nor kill an IO thread.
            let m = BASE_ALLOCATION_ID;
            let (ok, data_used) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if is_read {
                    execute_split(dev.as_ref(), &op, t, m, exec, &mut reply, &mut data)
                } else {
                    let ok = execute(dev.as_ref(), &op, &payload, t, m, exec, &mut reply);
                    (ok, 0)
                }
            }))
            .unwrap_or_else(|_| {
                reply.clear();
                put_error(&mut reply, t, EIO, "internal error in the device");
                (false, 0)
            });
            let _ = tx.send(Done {
                reply,
                data,
                data_used,
                payload,
                kind,
                bytes: op.io_len(),
                ok,
                start,
                cost,
                write,
            });
        };
        let job: Job = Box::new(job);
        if write && self.inflight_writes > 1 {
            self.write_backlog.push_back(job);
        } else if let Some(pool) = &self.shared.pool {
            pool.submit(job);
        }
    }

    fn complete(&mut self, d: Done) {
        self.inflight = self.inflight.saturating_sub(1);
        self.inflight_bytes = self.inflight_bytes.saturating_sub(d.cost);
        self.inflight_writes = self.inflight_writes.saturating_sub(usize::from(d.write));
        if d.write {
            if let (Some(job), Some(pool)) = (self.write_backlog.pop_front(), &self.shared.pool) {
                pool.submit(job);
            }
        }
        self.metrics
            .record(d.kind, d.bytes, d.ok, d.start.elapsed());
        self.out.push(d.reply);
        if d.data_used > 0 {
            self.out.push_data(d.data, d.data_used);
        } else {
            self.out.recycle_data(d.data);
        }
        self.payload_spare.put(d.payload);
    }
}

fn target(req: &proto::Request, s: Session) -> ChunkTarget {
    ChunkTarget {
        style: s.reply,
        cookie: req.cookie,
        request_offset: req.offset,
    }
}

/// Reads from the client: into a large write's own payload buffer while one is arriving,
/// else into the request buffer. Answers 0 at end of stream.
async fn read_more<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    inbuf: &mut BytesMut,
    max: usize,
    partial: &mut Option<PartialWrite>,
) -> std::io::Result<usize> {
    match partial {
        Some(p) => {
            let left = p.len.saturating_sub(p.buf.len());
            rd.read_buf(&mut BufMut::limit(&mut p.buf, left)).await
        }
        None => rd.read_buf(&mut BufMut::limit(inbuf, max)).await,
    }
}

/// Asks the socket for the client's next bytes without waiting, again and again for at
/// most `budget`: `Some(n)` when it read (0 at end of stream), `None` when nothing came.
fn spin<S: SplitStream>(
    rd: &mut S::R,
    inbuf: &mut BytesMut,
    max: usize,
    budget: std::time::Duration,
) -> std::io::Result<Option<usize>> {
    let deadline = Instant::now() + budget;
    let mut chunk = [0u8; 4096];
    let want = max.clamp(1, chunk.len());
    loop {
        match S::try_read(rd, chunk.get_mut(..want).unwrap_or(&mut [])) {
            Ok(n) => {
                inbuf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                return Ok(Some(n));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::yield_now();
    }
}

enum Written {
    Bytes(usize),
    Flushed,
}

/// Writes as much of the queue as the socket takes in one vectored write, or, when the
/// queue is empty, flushes buffered TLS records.
async fn write_out<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    out: &OutQueue,
) -> std::io::Result<Written> {
    if out.is_empty() {
        wr.flush().await?;
        return Ok(Written::Flushed);
    }
    let mut iov = [IoSlice::new(&[]); IOV];
    let n = out.slices(&mut iov);
    let written = wr.write_vectored(iov.get(..n).unwrap_or(&[])).await?;
    Ok(Written::Bytes(written))
}

fn header_len(style: HeaderStyle) -> usize {
    match style {
        HeaderStyle::Compact => REQUEST_HEADER_LEN,
        HeaderStyle::Extended => EXTENDED_REQUEST_HEADER_LEN,
    }
}

/// A guess at a reply's size, to size buffers once.
fn reply_size(op: &Op, t: ChunkTarget) -> usize {
    match *op {
        Op::Read { len, .. } => proto::read_reply_prefix_len(t.style) + len as usize,
        Op::BlockStatus { .. } => 1024,
        _ => 64,
    }
}

fn kind_of(command: u16) -> Option<OpKind> {
    Some(match command {
        CMD_READ => OpKind::Read,
        CMD_WRITE => OpKind::Write,
        CMD_FLUSH => OpKind::Flush,
        CMD_TRIM => OpKind::Trim,
        CMD_CACHE => OpKind::Cache,
        CMD_WRITE_ZEROES => OpKind::WriteZeroes,
        CMD_BLOCK_STATUS => OpKind::BlockStatus,
        _ => return None,
    })
}
