//! The client against scripted servers: the server's bytes are made by this crate's
//! server-side encoders (or are arbitrary), and what the client writes is parsed back by
//! the server-side parsers.

use std::io::{self, Read, Write};

use proptest::prelude::*;

use super::*;
use crate::{
    encode_greeting, encode_info_block_size, encode_info_export, encode_meta_context,
    encode_option_error, encode_option_reply, parse_option, parse_option_header, parse_request,
    put_block_status, put_data_chunk_header, put_done, put_error, put_hole_chunk, put_simple_reply,
    ChunkTarget, ClientOption, StatusExtent,
};

/// A stream that reads a fixed script and records what is written.
struct Script {
    input: io::Cursor<Vec<u8>>,
    written: Vec<u8>,
}

impl Script {
    fn new(input: Vec<u8>) -> Self {
        Script {
            input: io::Cursor::new(input),
            written: Vec::new(),
        }
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const SIZE: u64 = 1 << 20;
const TFLAGS: u16 = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_DF;

/// A server's side of a handshake with structured replies and `base:allocation`.
fn structured_server() -> Vec<u8> {
    let mut s = Vec::new();
    encode_greeting(&mut s, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    encode_option_reply(&mut s, OPT_STRUCTURED_REPLY, REP_ACK, &[]);
    encode_meta_context(&mut s, OPT_SET_META_CONTEXT, 1, META_BASE_ALLOCATION);
    encode_option_reply(&mut s, OPT_SET_META_CONTEXT, REP_ACK, &[]);
    encode_info_export(&mut s, OPT_GO, SIZE, TFLAGS);
    encode_info_block_size(&mut s, OPT_GO, 1, 4096, MAX_PAYLOAD_LEN);
    encode_option_reply(&mut s, OPT_GO, REP_ACK, &[]);
    s
}

/// The options the client sent, parsed by the server side.
fn options_sent(written: &[u8]) -> (u32, Vec<ClientOption>) {
    let flags = u32::from_be_bytes(written[..4].try_into().unwrap());
    let mut rest = &written[4..];
    let mut opts = Vec::new();
    while !rest.is_empty() {
        let h = parse_option_header(rest).unwrap().unwrap();
        let end = OPTION_HEADER_LEN + h.len as usize;
        opts.push(parse_option(h.option, &rest[OPTION_HEADER_LEN..end]).unwrap());
        rest = &rest[end..];
    }
    (flags, opts)
}

#[test]
fn handshake_negotiates_what_it_was_asked() {
    let c = Client::handshake(Script::new(structured_server()), &Options::new("disk")).unwrap();
    assert_eq!((c.size(), c.flags()), (SIZE, TFLAGS));
    assert_eq!(c.reply_style(), ReplyStyle::Structured);
    assert_eq!(c.header_style(), HeaderStyle::Compact);
    assert_eq!(
        c.block_size(),
        Some(BlockSize {
            min: 1,
            preferred: 4096,
            max: MAX_PAYLOAD_LEN
        })
    );
    let (flags, opts) = options_sent(&c.stream.written);
    assert_eq!(flags, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    assert_eq!(opts.len(), 3);
    assert_eq!(opts[0], ClientOption::StructuredReply);
    assert!(matches!(&opts[1], ClientOption::SetMetaContext(m)
        if m.export == "disk" && m.queries == [META_BASE_ALLOCATION]));
    assert!(matches!(&opts[2], ClientOption::Go(i)
        if i.name == "disk" && i.requests == [INFO_BLOCK_SIZE]));
}

#[test]
fn refusals_and_bad_greetings_are_errors() {
    let mut s = Vec::new();
    encode_greeting(&mut s, FLAG_FIXED_NEWSTYLE);
    encode_option_error(&mut s, OPT_GO, REP_ERR_UNKNOWN, "no export nope");
    let o = Options {
        structured_replies: false,
        ..Options::new("nope")
    };
    let err = Client::handshake(Script::new(s), &o).err().unwrap();
    assert!(matches!(
        err,
        ClientError::OptionRefused {
            option: OPT_GO,
            reply_type: REP_ERR_UNKNOWN,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("ERR_UNKNOWN") && msg.contains("no export nope"),
        "{msg}"
    );

    let mut s = Vec::new();
    encode_greeting(&mut s, 0);
    assert!(matches!(
        Handshake::start(Script::new(s)),
        Err(ClientError::NotFixedNewstyle(0))
    ));
    assert!(matches!(
        Handshake::start(Script::new(b"NBDMAGIC".to_vec())),
        Err(ClientError::Io { .. })
    ));
    // A reply to another option than the one asked.
    let mut s = Vec::new();
    encode_greeting(&mut s, FLAG_FIXED_NEWSTYLE);
    encode_option_reply(&mut s, OPT_LIST, REP_ACK, &[]);
    let mut h = Handshake::start(Script::new(s)).unwrap();
    assert!(matches!(
        h.option(OPT_STRUCTURED_REPLY, &[]),
        Err(ClientError::Violation(_))
    ));
}

/// A structured client whose server answers with `replies`.
fn client_with(replies: &[u8]) -> Client<Script> {
    let mut s = structured_server();
    s.extend_from_slice(replies);
    Client::handshake(Script::new(s), &Options::new("disk")).unwrap()
}

fn target(cookie: u64, offset: u64) -> ChunkTarget {
    ChunkTarget {
        style: ReplyStyle::Structured,
        cookie,
        request_offset: offset,
    }
}

#[test]
fn structured_reads_are_assembled() {
    // Cookies start at 1: the read is request 1.
    let t = target(1, 4096);
    let mut s = Vec::new();
    put_hole_chunk(&mut s, t, 0, 4096, 512);
    put_data_chunk_header(&mut s, t, 0, 4096 + 512, 4);
    s.extend_from_slice(b"abcd");
    put_done(&mut s, t);
    let mut c = client_with(&s);
    let r = c.call(0, CMD_READ, 4096, 1024, &[]).unwrap();
    assert_eq!((r.error, r.holes, r.data_chunks), (0, 1, 1));
    assert_eq!(r.data.len(), 1024);
    assert_eq!(&r.data[512..516], b"abcd");
    assert!(r.data[..512].iter().chain(&r.data[516..]).all(|b| *b == 0));
    // The request went out as the server parses it.
    let sent = &c.stream.written;
    let req = &sent[sent.len() - REQUEST_HEADER_LEN..];
    let q = parse_request(req, HeaderStyle::Compact, MAX_PAYLOAD_LEN)
        .unwrap()
        .unwrap();
    assert_eq!(
        (q.command, q.cookie, q.offset, q.length),
        (CMD_READ, 1, 4096, 1024)
    );
}

#[test]
fn errors_block_status_and_simple_replies() {
    let mut s = Vec::new();
    put_error(&mut s, target(1, 0), EIO, "disk on fire");
    let ext = [
        StatusExtent {
            len: 4096,
            flags: 0,
        },
        StatusExtent {
            len: 8192,
            flags: STATE_HOLE | STATE_ZERO,
        },
    ];
    put_block_status(&mut s, target(2, 0), 1, &ext);
    put_simple_reply(&mut s, ENOSPC, 3);
    put_simple_reply(&mut s, 0, 4);
    let mut c = client_with(&s);
    let err = c.read(0, 512).err().unwrap();
    assert_eq!(err.errno(), Some(EIO));
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert_eq!(
        c.block_status(0, 12288).unwrap(),
        vec![(4096, 0), (8192, u64::from(STATE_HOLE | STATE_ZERO))]
    );
    assert_eq!(c.write(0, b"x").err().unwrap().errno(), Some(ENOSPC));
    c.flush().unwrap();
}

#[test]
fn pipelined_replies_come_in_any_order() {
    let mut s = Vec::new();
    put_simple_reply(&mut s, 0, 2);
    put_simple_reply(&mut s, 0, 1);
    s.extend_from_slice(&[7u8; 16]);
    let mut c = client_with(&s);
    assert_eq!(c.send(0, CMD_READ, 0, 16, &[]).unwrap(), 1);
    assert_eq!(c.send(0, CMD_WRITE, 0, 3, b"abc").unwrap(), 2);
    assert!(matches!(c.flush(), Err(ClientError::InFlight(2))));
    assert_eq!(c.recv().unwrap().cookie, 2);
    let r = c.recv().unwrap();
    assert_eq!((r.cookie, r.data), (1, vec![7u8; 16]));
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn replies_outside_the_request_are_violations() {
    let t = target(1, 0);
    let mut s = Vec::new();
    put_data_chunk_header(&mut s, t, 0, 100, 8);
    s.extend_from_slice(&[0u8; 8]);
    let mut c = client_with(&s);
    assert!(matches!(
        c.call(0, CMD_READ, 0, 104, &[]),
        Err(ClientError::Violation(_))
    ));
    // A chunk announcing more than the read asked for is refused before it is read.
    let mut s = Vec::new();
    put_data_chunk_header(&mut s, t, 0, 0, 1 << 40);
    let mut c = client_with(&s);
    assert!(matches!(
        c.call(0, CMD_READ, 0, 512, &[]),
        Err(ClientError::Violation(_))
    ));
    let mut s = Vec::new();
    put_simple_reply(&mut s, 0, 99);
    let mut c = client_with(&s);
    assert!(matches!(c.flush(), Err(ClientError::Violation(_))));
}

proptest! {
    #[test]
    fn handshake_never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut s = Vec::new();
        encode_greeting(&mut s, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        s.extend_from_slice(&data);
        let _ = Client::handshake(Script::new(s), &Options::new("disk"));
        let _ = Handshake::start(Script::new(data));
    }

    #[test]
    fn replies_never_panic_on_garbage(
        data in proptest::collection::vec(any::<u8>(), 0..256),
        magic in prop_oneof![
            Just(SIMPLE_REPLY_MAGIC),
            Just(STRUCTURED_REPLY_MAGIC),
            Just(EXTENDED_REPLY_MAGIC)
        ],
        cmd in prop_oneof![Just(CMD_READ), Just(CMD_BLOCK_STATUS), Just(CMD_FLUSH)],
    ) {
        let mut s = magic.to_be_bytes().to_vec();
        s.extend_from_slice(&data);
        let mut c = client_with(&s);
        c.send(0, cmd, 0, 4096, &[]).unwrap();
        while c.recv().is_ok() {}
    }

    #[test]
    fn chunks_with_a_known_cookie_never_panic(
        ty in any::<u16>(),
        flags in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut s = Vec::new();
        crate::put_chunk_header(&mut s, target(1, 0), flags, ty, payload.len() as u64);
        s.extend_from_slice(&payload);
        let mut c = client_with(&s);
        let _ = c.call(0, CMD_READ, 0, 64, &[]);
    }
}
