//! Hostile clients (random bytes, bad lengths, unknown options and commands, disconnects
//! mid-request) against the server while a well-behaved client keeps working. The server
//! must answer with protocol errors or close that one connection: never panic, never stop
//! serving the others.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;

use common::{panics, pattern, run_ok, TestServer};
use platter_disk_server::{MemDevice, ServerConfig, StaticExports};
use platter_nbd_proto::client::{frame, Client, Handshake, Options};
use platter_nbd_proto::consts::*;
use platter_nbd_proto::HeaderStyle;

const MIB: u64 = 1 << 20;

/// Sends `bytes` (after an optional handshake prefix), half-closes, and reads until the
/// server closes. Returns what the server sent after the prefix.
fn hostile(sock: &std::path::Path, prefix: impl FnOnce(&mut UnixStream), bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).unwrap();
    prefix(&mut s);
    // The server may close before taking everything: that is allowed.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    rest
}

fn go(s: &mut UnixStream, extended: bool) {
    let mut h = Handshake::start(s).unwrap();
    if extended {
        h.extended_headers().unwrap();
    } else {
        h.structured_replies().unwrap();
    }
    h.go("disk").unwrap();
}

fn request(style: HeaderStyle, flags: u16, cmd: u16, offset: u64, len: u64) -> Vec<u8> {
    let mut v = Vec::new();
    frame::encode_request(&mut v, style, flags, cmd, 0xdead, offset, len);
    v
}

#[test]
fn hostile_clients_do_not_disturb_others() {
    let exports = Arc::new(StaticExports::new());
    exports.insert("disk", "", Arc::new(MemDevice::new(64 * MIB)));
    let srv = TestServer::start(exports, ServerConfig::default(), false);
    let sock = srv.sock.clone();

    // A well-behaved client keeps writing and verifying while the attacks run.
    let good_sock = sock.clone();
    let attacks_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = attacks_done.clone();
    let good = std::thread::spawn(move || {
        let mut c = Client::connect_unix(&good_sock, &Options::new("disk")).unwrap();
        let mut i = 0u64;
        while i < 300 || !done.load(std::sync::atomic::Ordering::SeqCst) {
            i += 1;
            let data = pattern(i, 4096 + (i as usize % 7) * 1000);
            let off = (i * 7919 * 4096) % (60 * MIB);
            c.write(off, &data).unwrap();
            assert_eq!(c.read(off, data.len() as u64).unwrap(), data);
        }
        c.disconnect().unwrap();
    });

    let nothing = |_: &mut UnixStream| {};
    // Random bytes straight away, in the option phase and in transmission.
    for seed in 0..20u64 {
        let junk = pattern(seed, (seed as usize * 3079) % 70_000);
        hostile(&sock, nothing, &junk);
        hostile(
            &sock,
            |s| {
                Handshake::start(s).unwrap();
            },
            &junk,
        );
        hostile(&sock, |s| go(s, seed % 2 == 0), &junk);
    }
    // Unknown client flags.
    let out = hostile(
        &sock,
        |s| {
            let mut g = [0u8; 18];
            s.read_exact(&mut g).unwrap();
        },
        &0xffu32.to_be_bytes(),
    );
    assert!(out.is_empty());
    // Option lengths: 4 GiB and 2 MiB close the connection; a disconnect mid-option too.
    for len in [u32::MAX, 2 << 20, 1000] {
        let mut opt = Vec::new();
        opt.extend_from_slice(&IHAVEOPT.to_be_bytes());
        opt.extend_from_slice(&OPT_GO.to_be_bytes());
        opt.extend_from_slice(&len.to_be_bytes());
        opt.extend_from_slice(&[0u8; 100]);
        hostile(
            &sock,
            |s| {
                Handshake::start(s).unwrap();
            },
            &opt,
        );
    }
    for extended in [false, true] {
        let style = if extended {
            HeaderStyle::Extended
        } else {
            HeaderStyle::Compact
        };
        let pl = if extended { CMD_FLAG_PAYLOAD_LEN } else { 0 };
        // A write announcing 64 MiB of payload: over the limit, the connection closes.
        hostile(
            &sock,
            |s| go(s, extended),
            &request(style, pl, CMD_WRITE, 0, 64 * MIB),
        );
        // A write cut off mid-payload, and a header cut in half.
        let mut cut = request(style, pl, CMD_WRITE, 0, MIB);
        cut.extend_from_slice(&[1u8; 1000]);
        hostile(&sock, |s| go(s, extended), &cut);
        hostile(
            &sock,
            |s| go(s, extended),
            &request(style, 0, CMD_READ, 0, 512)[..10],
        );
        // Wrong request magic.
        let other = if extended {
            HeaderStyle::Compact
        } else {
            HeaderStyle::Extended
        };
        hostile(
            &sock,
            |s| go(s, extended),
            &request(other, 0, CMD_READ, 0, 512),
        );
    }

    // Nonsense that deserves error replies, on a connection that stays usable.
    let mut c = Client::connect_unix(&sock, &Options::new("disk")).unwrap();
    for cmd in [8u16, 9, 100, 0xffff] {
        assert_eq!(c.call(0, cmd, 0, 0, &[]).unwrap().error, EINVAL);
    }
    assert_eq!(
        c.call(0, CMD_READ, u64::MAX - 10, 100, &[]).unwrap().error,
        EINVAL
    );
    assert_eq!(
        c.call(0, CMD_READ, 0, u32::MAX as u64, &[]).unwrap().error,
        EINVAL
    );
    assert_eq!(
        c.call(0, CMD_TRIM, u64::MAX, u32::MAX as u64, &[])
            .unwrap()
            .error,
        EINVAL
    );
    assert_eq!(
        c.call(0, CMD_WRITE_ZEROES, 64 * MIB, 1, &[]).unwrap().error,
        ENOSPC
    );
    assert_eq!(
        c.call(0, CMD_BLOCK_STATUS, 0, 0, &[]).unwrap().error,
        EINVAL
    );
    assert_eq!(
        c.call(0x8000, CMD_READ, 0, 512, &[]).unwrap().error,
        EINVAL,
        "unknown flag"
    );
    assert_eq!(
        c.call(0, CMD_READ, 0, 0, &[]).unwrap().error,
        0,
        "empty read"
    );
    assert_eq!(c.read(0, 16).unwrap().len(), 16);
    // Unknown options, over and over, then a normal handshake on the same connection.
    let mut h = Handshake::start(UnixStream::connect(&sock).unwrap()).unwrap();
    for o in 12..200u32 {
        assert_eq!(
            h.option(o, &pattern(u64::from(o), 64)).unwrap()[0].reply_type,
            REP_ERR_UNSUP
        );
    }
    drop(h);

    attacks_done.store(true, std::sync::atomic::Ordering::SeqCst);
    good.join().unwrap();
    // The server still serves new clients, and nothing panicked.
    run_ok(Command::new("qemu-io").args([
        "-f",
        "raw",
        "-c",
        "write -P 0x5a 0 64k",
        "-c",
        "read -P 0x5a 0 64k",
        &srv.uri("disk"),
    ]));
    assert_eq!(panics(), 0);
    let m = &srv.config.metrics;
    assert!(m.connections() >= 75, "{} connections", m.connections());
    let failures = m
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix("platter_nbd_handshake_failures_total ")
                .map(str::to_owned)
        })
        .unwrap();
    assert!(
        failures.parse::<u64>().unwrap() > 10,
        "{failures} handshake failures"
    );
}
