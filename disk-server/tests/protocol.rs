//! Protocol behaviour the installed tools cannot reach: extended headers, simple replies,
//! option errors, hole-aware reads, pipelining, metrics and graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use common::{pattern, TestServer};
use platter_disk_server::{BlockDevice, MemDevice, Metrics, ServerConfig, StaticExports};
use platter_nbd_proto::client::{frame, Client, Handshake, Options};
use platter_nbd_proto::consts::*;
use platter_nbd_proto::HeaderStyle;

const MIB: u64 = 1 << 20;

fn server(size: u64, config: ServerConfig) -> (TestServer, Arc<MemDevice>) {
    let exports = Arc::new(StaticExports::new());
    let disk = Arc::new(MemDevice::new(size));
    exports.insert("disk", "described", disk.clone());
    exports.insert("ro", "", Arc::new(MemDevice::new(MIB).into_read_only()));
    (TestServer::start(exports, config, false), disk)
}

/// Fails a stuck test instead of hanging the suite (not a timing assertion).
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(120);

fn connect(srv: &TestServer, o: &Options) -> Client<UnixStream> {
    let o = Options {
        io_timeout: Some(HANG_GUARD),
        ..o.clone()
    };
    Client::connect_unix(&srv.sock, &o).unwrap()
}

#[test]
fn extended_headers_end_to_end() {
    let (srv, disk) = server(8 << 30, ServerConfig::default());
    let mut c = connect(
        &srv,
        &Options {
            extended_headers: true,
            ..Options::new("disk")
        },
    );
    assert_eq!(c.header_style(), HeaderStyle::Extended);
    let data = pattern(1, 100_000);
    c.write(5 << 30, &data).unwrap();
    assert_eq!(c.read(5 << 30, data.len() as u64).unwrap(), data);
    // A 64-bit effect length: zero 4.5 GiB in one request.
    let r = c
        .call(0, CMD_WRITE_ZEROES, 0, (9 << 29) as u64, &[])
        .unwrap();
    assert_eq!(r.error, 0);
    let r = c.call(0, CMD_BLOCK_STATUS, 5 << 30, 3 << 30, &[]).unwrap();
    assert_eq!(r.error, 0);
    assert_eq!(r.extents[0].1, 0, "data first: {:?}", r.extents);
    assert!(r
        .extents
        .iter()
        .skip(1)
        .all(|e| e.1 == u64::from(STATE_HOLE | STATE_ZERO)));
    // Errors come as extended ERROR chunks.
    let r = c.call(0, CMD_READ, 8 << 30, 1, &[]).unwrap();
    assert_eq!(r.error, EINVAL);
    // A write without PAYLOAD_LEN is refused, and the stream stays in sync.
    let mut out = Vec::new();
    frame::encode_request(&mut out, HeaderStyle::Extended, 0, CMD_WRITE, 99, 0, 512);
    c.stream_mut().write_all(&out).unwrap();
    let mut hdr = [0u8; 32];
    c.stream_mut().read_exact(&mut hdr).unwrap();
    let (h, _) = frame::parse_reply_header(&hdr).unwrap().unwrap();
    let frame::ReplyHeader::Chunk {
        ty,
        len,
        cookie,
        offset,
        ..
    } = h
    else {
        panic!("{h:?}")
    };
    assert_eq!((ty, cookie, offset), (REPLY_TYPE_ERROR, 99, Some(0)));
    let mut p = vec![0u8; len as usize];
    c.stream_mut().read_exact(&mut p).unwrap();
    assert_eq!(c.read(5 << 30, 16).unwrap(), data[..16]);
    let mut buf = vec![0u8; 16];
    disk.read_at(&mut buf, 5 << 30).unwrap();
    assert_eq!(buf, data[..16]);
    c.disconnect().unwrap();
}

#[test]
fn simple_replies_and_errnos() {
    let (srv, _) = server(4 * MIB, ServerConfig::default());
    let mut c = connect(
        &srv,
        &Options {
            structured_replies: false,
            base_allocation: false,
            ..Options::new("disk")
        },
    );
    c.write(4095, b"hello").unwrap();
    assert_eq!(c.read(4095, 5).unwrap(), b"hello");
    assert_eq!(c.read(4 * MIB - 1, 2).unwrap_err().errno(), Some(EINVAL));
    assert_eq!(
        c.write(4 * MIB - 1, b"ab").unwrap_err().errno(),
        Some(ENOSPC)
    );
    assert_eq!(
        c.call(0, 77, 0, 0, &[]).unwrap().error,
        EINVAL,
        "unknown command"
    );
    assert_eq!(
        c.call(0, CMD_BLOCK_STATUS, 0, 512, &[]).unwrap().error,
        EINVAL
    );
    assert_eq!(
        c.call(CMD_FLAG_DF, CMD_READ, 0, 512, &[]).unwrap().error,
        EINVAL
    );
    assert_eq!(
        c.call(0, CMD_READ, 0, u32::MAX as u64, &[]).unwrap().error,
        EINVAL
    );
    assert_eq!(c.call(CMD_FLAG_FUA, CMD_FLUSH, 0, 0, &[]).unwrap().error, 0);
    assert_eq!(c.call(0, CMD_CACHE, 0, 4096, &[]).unwrap().error, 0);
    c.disconnect().unwrap();

    let mut ro = connect(&srv, &Options::new("ro"));
    assert_ne!(ro.flags() & FLAG_READ_ONLY, 0);
    assert_eq!(ro.write(0, b"x").unwrap_err().errno(), Some(EPERM));
    assert_eq!(ro.call(0, CMD_TRIM, 0, 512, &[]).unwrap().error, EPERM);
    assert_eq!(
        ro.call(0, CMD_WRITE_ZEROES, 0, 512, &[]).unwrap().error,
        EPERM
    );
}

#[test]
fn reads_of_holes_use_hole_chunks_unless_df() {
    let (srv, disk) = server(4 * MIB, ServerConfig::default());
    disk.write_at(&[7u8; 4096], 64 * 1024).unwrap();
    let mut c = connect(&srv, &Options::new("disk"));
    assert_ne!(c.flags() & FLAG_SEND_DF, 0);
    let r = c.call(0, CMD_READ, 0, 256 * 1024, &[]).unwrap();
    assert_eq!((r.error, r.holes, r.data_chunks), (0, 2, 1));
    assert_eq!(&r.data[64 * 1024..68 * 1024], &[7u8; 4096][..]);
    assert!(r.data[..64 * 1024].iter().all(|b| *b == 0));
    let r = c.call(CMD_FLAG_DF, CMD_READ, 0, 256 * 1024, &[]).unwrap();
    assert_eq!((r.error, r.holes, r.data_chunks), (0, 0, 1));
    // REQ_ONE: exactly one extent, no longer than asked.
    let r = c
        .call(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 0, 1000, &[])
        .unwrap();
    assert_eq!(r.extents, vec![(1000, u64::from(STATE_HOLE | STATE_ZERO))]);
}

#[test]
fn pipelined_requests_all_complete() {
    // Small inline_max so reads and writes also go through the IO threads.
    let config = ServerConfig {
        inline_max: 1024,
        inline_write_max: 8192,
        ..ServerConfig::default()
    };
    let (srv, disk) = server(64 * MIB, config);
    let mut c = connect(&srv, &Options::new("disk"));
    let mut expect = std::collections::HashMap::new();
    for i in 0..200u64 {
        let len = if i % 3 == 0 { 65536 } else { 4096 };
        let data = pattern(i, len);
        let cookie = c.send(0, CMD_WRITE, i * 65536, len as u64, &data).unwrap();
        expect.insert(cookie, ());
    }
    for _ in 0..200 {
        let r = c.recv().unwrap();
        assert_eq!(r.error, 0);
        assert!(expect.remove(&r.cookie).is_some());
    }
    let mut reads = std::collections::HashMap::new();
    for i in 0..200u64 {
        let len = if i % 3 == 0 { 65536 } else { 4096 };
        reads.insert(
            c.send(0, CMD_READ, i * 65536, len, &[]).unwrap(),
            pattern(i, len as usize),
        );
    }
    for _ in 0..200 {
        let r = c.recv().unwrap();
        assert_eq!(r.data, reads.remove(&r.cookie).unwrap());
    }
    let mut b = vec![0u8; 4096];
    disk.read_at(&mut b, 65536).unwrap();
    assert_eq!(b, pattern(1, 4096));
}

#[test]
fn option_haggling_errors_keep_the_session() {
    let (srv, _) = server(MIB, ServerConfig::default());
    let mut s = UnixStream::connect(&srv.sock).unwrap();
    let mut h = Handshake::start(&mut s).unwrap();
    assert_eq!(h.server_flags(), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    assert_eq!(
        h.option(1234, b"junk").unwrap()[0].reply_type,
        REP_ERR_UNSUP
    );
    assert_eq!(
        h.option(OPT_LIST, b"x").unwrap()[0].reply_type,
        REP_ERR_INVALID
    );
    assert_eq!(
        h.option(OPT_STARTTLS, &[]).unwrap()[0].reply_type,
        REP_ERR_POLICY
    );
    assert_eq!(
        h.option(OPT_GO, b"\0\0\0\x09trunc").unwrap()[0].reply_type,
        REP_ERR_INVALID
    );
    // Over the 64 KiB option limit: drained, refused, and the session goes on.
    let big = vec![0u8; 100 * 1024];
    assert_eq!(
        h.option(OPT_INFO, &big).unwrap()[0].reply_type,
        REP_ERR_TOO_BIG
    );
    let meta = frame::encode_meta_context_request("disk", &["base:allocation"]);
    assert_eq!(
        h.option(OPT_SET_META_CONTEXT, &meta).unwrap()[0].reply_type,
        REP_ERR_INVALID,
        "meta context before structured replies"
    );
    assert_eq!(
        h.option(OPT_STRUCTURED_REPLY, &[]).unwrap()[0].reply_type,
        REP_ACK
    );
    let list = frame::encode_meta_context_request("disk", &[]);
    let r = h.option(OPT_LIST_META_CONTEXT, &list).unwrap();
    assert_eq!(r[0].reply_type, REP_META_CONTEXT);
    assert_eq!(&r[0].data[4..], b"base:allocation");
    let r = h
        .option(
            OPT_SET_META_CONTEXT,
            &frame::encode_meta_context_request("nope", &["base:allocation"]),
        )
        .unwrap();
    assert_eq!(r[0].reply_type, REP_ERR_UNKNOWN);
    let r = h
        .option(OPT_GO, &frame::encode_info_request("nope", &[]))
        .unwrap();
    assert_eq!(r[0].reply_type, REP_ERR_UNKNOWN);
    let r = h
        .option(
            OPT_INFO,
            &frame::encode_info_request("disk", &[INFO_NAME, INFO_DESCRIPTION]),
        )
        .unwrap();
    let infos: Vec<u16> = r
        .iter()
        .filter(|x| x.reply_type == REP_INFO)
        .map(|x| u16::from_be_bytes([x.data[0], x.data[1]]))
        .collect();
    assert!(
        infos.contains(&INFO_EXPORT)
            && infos.contains(&INFO_NAME)
            && infos.contains(&INFO_DESCRIPTION)
    );
    let r = h.option(OPT_LIST, &[]).unwrap();
    assert_eq!(r.iter().filter(|x| x.reply_type == REP_SERVER).count(), 2);
    assert_eq!(h.option(OPT_ABORT, &[]).unwrap()[0].reply_type, REP_ACK);
    let mut rest = Vec::new();
    h.into_inner().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "server closes after ABORT");
}

#[test]
fn export_name_without_zeroes() {
    let (srv, _) = server(MIB, ServerConfig::default());
    let mut s = UnixStream::connect(&srv.sock).unwrap();
    Handshake::start(&mut s).unwrap();
    let mut out = Vec::new();
    frame::encode_option(&mut out, OPT_EXPORT_NAME, b"disk");
    s.write_all(&out).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), MIB);
    // Straight into transmission with simple replies.
    out.clear();
    frame::encode_request(&mut out, HeaderStyle::Compact, 0, CMD_READ, 5, 0, 8);
    s.write_all(&out).unwrap();
    let mut r = [0u8; 24];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
    // Unknown exports end the session (EXPORT_NAME cannot report errors).
    let mut s = UnixStream::connect(&srv.sock).unwrap();
    Handshake::start(&mut s).unwrap();
    out.clear();
    frame::encode_option(&mut out, OPT_EXPORT_NAME, b"nope");
    s.write_all(&out).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn metrics_are_served_over_http() {
    let metrics = Metrics::new();
    let config = ServerConfig {
        metrics: metrics.clone(),
        ..ServerConfig::default()
    };
    let (srv, _) = server(4 * MIB, config);
    let listener = srv
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = srv.rt.spawn(platter_disk_server::serve_metrics(
        listener,
        metrics.clone(),
        stop.clone(),
    ));
    let mut c = connect(&srv, &Options::new("disk"));
    c.write(0, &[1u8; 8192]).unwrap();
    c.read(0, 4096).unwrap();
    let get = |path: &str| {
        let mut t = std::net::TcpStream::connect(addr).unwrap();
        write!(t, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut s = String::new();
        t.read_to_string(&mut s).unwrap();
        s
    };
    let body = get("/metrics");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("platter_nbd_ops_total{export=\"disk\",op=\"write\"} 1"),
        "{body}"
    );
    assert!(body.contains("platter_nbd_bytes_total{export=\"disk\",op=\"write\"} 8192"));
    assert!(body.contains("platter_nbd_export_clients{export=\"disk\"} 1"));
    assert!(body.contains(
        "platter_nbd_request_duration_seconds_bucket{export=\"disk\",op=\"read\",le=\"+Inf\"} 1"
    ));
    assert!(get("/other").starts_with("HTTP/1.1 404"));
    c.disconnect().unwrap();
    stop.cancel();
    srv.rt.block_on(task).unwrap().unwrap();
}

/// A device whose reads wait at a gate, so a test can hold requests in flight.
struct Gated {
    inner: MemDevice,
    state: std::sync::Mutex<(usize, bool)>,
    cv: std::sync::Condvar,
}

impl Gated {
    fn wait_entered(&self, n: usize) {
        let mut g = self.state.lock().unwrap();
        while g.0 < n {
            // A hang guard, not a timing assertion.
            let (next, t) = self.cv.wait_timeout(g, HANG_GUARD).unwrap();
            assert!(
                !t.timed_out(),
                "only {} of {n} requests reached the device",
                next.0
            );
            g = next;
        }
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

impl BlockDevice for Gated {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, b: &mut [u8], o: u64) -> Result<(), platter_disk_server::DeviceError> {
        let mut g = self.state.lock().unwrap();
        g.0 += 1;
        self.cv.notify_all();
        while !g.1 {
            g = self.cv.wait(g).unwrap();
        }
        drop(g);
        self.inner.read_at(b, o)
    }
    fn write_at(&self, b: &[u8], o: u64) -> Result<(), platter_disk_server::DeviceError> {
        self.inner.write_at(b, o)
    }
    fn flush(&self) -> Result<(), platter_disk_server::DeviceError> {
        self.inner.flush()
    }
    fn trim(&self, o: u64, l: u64) -> Result<(), platter_disk_server::DeviceError> {
        self.inner.trim(o, l)
    }
    fn write_zeroes(
        &self,
        o: u64,
        l: u64,
        u: bool,
    ) -> Result<(), platter_disk_server::DeviceError> {
        self.inner.write_zeroes(o, l, u)
    }
    fn block_status(
        &self,
        o: u64,
        l: u64,
    ) -> Result<Vec<platter_disk_server::Extent>, platter_disk_server::DeviceError> {
        self.inner.block_status(o, l)
    }
}

#[test]
fn shutdown_finishes_in_flight_requests_and_flushes() {
    const N: u64 = 8;
    let config = ServerConfig {
        inline_max: 4096,
        inline_write_max: 4096,
        io_threads: N as usize,
        ..ServerConfig::default()
    };
    let exports = Arc::new(StaticExports::new());
    let disk = Arc::new(Gated {
        inner: MemDevice::new(64 * MIB),
        state: std::sync::Mutex::new((0, false)),
        cv: std::sync::Condvar::new(),
    });
    exports.insert("disk", "", disk.clone());
    let mut srv = TestServer::start(exports, config, false);
    let mut c = connect(&srv, &Options::new("disk"));
    // One small (inline) write, so the device has something to flush at shutdown.
    c.write(7 * MIB, &pattern(7, 4096)).unwrap();
    // Large reads go to the IO threads, one per thread.
    for i in 0..N {
        c.send(CMD_FLAG_DF, CMD_READ, i * MIB, 65536, &[]).unwrap();
    }
    // Every read is now held inside the device: the server has them in flight.
    disk.wait_entered(N as usize);
    srv.cancel();
    disk.open();
    srv.stop().unwrap();
    let mut seen = 0;
    while let Ok(r) = c.recv() {
        assert_eq!(r.error, 0);
        assert_eq!(r.data.len(), 65536);
        seen += 1;
    }
    assert_eq!(seen, N, "every in-flight request was answered");
    assert!(disk.inner.flush_count() >= 1, "device flushed at shutdown");
    let mut b = vec![0u8; 16];
    disk.inner.read_at(&mut b, 7 * MIB).unwrap();
    assert_eq!(b, pattern(7, 16));
}

#[test]
fn default_export_takes_the_empty_name() {
    let config = ServerConfig {
        default_export: Some("disk".into()),
        ..ServerConfig::default()
    };
    let (srv, disk) = server(4 * MIB, config);
    disk.write_at(&[9u8; 4096], 0).unwrap();
    let mut c = connect(&srv, &Options::new(""));
    assert_eq!(c.size(), 4 * MIB);
    // The meta context chosen for "" applies to the export "" resolves to.
    let r = c.call(0, CMD_BLOCK_STATUS, 0, 8192, &[]).unwrap();
    assert_eq!(r.error, 0);
    assert_eq!(r.extents[0], (4096, 0));
    assert_eq!(c.read(0, 2).unwrap(), vec![9, 9]);
}

/// Reads over the advertised 32 MiB maximum (the reference suite's 35-50 MB reads) are
/// served up to 64 MiB with either reply style; over that, a simple-reply client gets
/// EINVAL as the spec says and a structured one EOVERFLOW, and both connections go on.
#[test]
fn reads_over_the_advertised_maximum_are_served_up_to_64_mib() {
    let size = 80 * MIB;
    let (srv, disk) = server(size, ServerConfig::default());
    let data = pattern(11, size as usize);
    disk.write_at(&data, 0).unwrap();
    for structured in [false, true] {
        let mut c = connect(
            &srv,
            &Options {
                structured_replies: structured,
                base_allocation: false,
                ..Options::new("disk")
            },
        );
        assert_eq!(
            c.block_size().map(|b| b.max),
            Some(MAX_PAYLOAD_LEN),
            "advertised maximum"
        );
        for (offset, len) in [(3 * MIB, 48 * MIB), (MIB, u64::from(MAX_READ_LEN))] {
            let got = c.read(offset, len).unwrap();
            let want = &data[offset as usize..(offset + len) as usize];
            assert!(got == want, "structured {structured}: {len}-byte read");
        }
        let over = u64::from(MAX_READ_LEN) + 4096;
        let errno = if structured { EOVERFLOW } else { EINVAL };
        assert_eq!(
            c.call(0, CMD_READ, 0, over, &[]).unwrap().error,
            errno,
            "structured {structured}"
        );
        assert_eq!(c.read(0, 4096).unwrap(), &data[..4096]);
        c.disconnect().unwrap();
    }
}
