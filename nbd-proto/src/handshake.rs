//! Fixed-newstyle handshake framing: the server greeting, client flags, option requests and
//! option replies, parsed from and encoded into byte buffers.
//!
//! IO-free: callers hand in the bytes they have; parsers answer `Ok(None)` when more bytes
//! are needed, an error when the bytes can never become valid, and never panic. Lengths are
//! checked against the buffer (and the protocol's bounds) before anything is allocated.
//! The client's side (parsing the greeting and option replies, encoding options) is in
//! [`crate::client::frame`].

use crate::consts::*;
use crate::wire::{put_str_bounded, put_u16, put_u32, put_u64, Cursor};
use crate::ProtoError;

/// The server's first message: `NBDMAGIC`, `IHAVEOPT`, handshake flags (18 bytes).
pub fn encode_greeting(out: &mut Vec<u8>, handshake_flags: u16) {
    put_u64(out, NBDMAGIC);
    put_u64(out, IHAVEOPT);
    put_u16(out, handshake_flags);
}

/// What the client said in its 32-bit flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientFlags {
    pub fixed_newstyle: bool,
    pub no_zeroes: bool,
}

/// Parses the client's flags; unknown bits are a hard error (the spec says drop the
/// connection).
pub fn parse_client_flags(buf: &[u8]) -> Result<Option<ClientFlags>, ProtoError> {
    let Some(flags) = Cursor::new(buf).u32() else {
        return Ok(None);
    };
    if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(ProtoError::UnknownClientFlags(flags));
    }
    Ok(Some(ClientFlags {
        fixed_newstyle: flags & FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes: flags & FLAG_C_NO_ZEROES != 0,
    }))
}

/// The fixed part of an option request: which option, and how many data bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

/// Parses an option header (16 bytes). The data length is not bounded here: the caller
/// decides whether to read, drain or refuse it (see [`MAX_OPTION_LEN`]).
pub fn parse_option_header(buf: &[u8]) -> Result<Option<OptionHeader>, ProtoError> {
    let mut c = Cursor::new(buf);
    let (Some(magic), Some(option), Some(len)) = (c.u64(), c.u32(), c.u32()) else {
        return Ok(None);
    };
    if magic != IHAVEOPT {
        return Err(ProtoError::BadMagic {
            what: "option",
            got: magic,
        });
    }
    Ok(Some(OptionHeader { option, len }))
}

/// The data of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub requests: Vec<u16>,
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest {
    pub export: String,
    pub queries: Vec<String>,
}

/// A parsed option request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    ExportName(String),
    Abort,
    List,
    StartTls,
    Info(InfoRequest),
    Go(InfoRequest),
    StructuredReply,
    ListMetaContext(MetaContextRequest),
    SetMetaContext(MetaContextRequest),
    ExtendedHeaders,
    /// An option this server does not know: answered with `NBD_REP_ERR_UNSUP`.
    Unknown(u32),
}

/// Why an option's data was refused; the session goes on with an error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("option {name} takes no data but {len} bytes were sent")]
    UnexpectedData { name: &'static str, len: usize },
    #[error("option {name}: data ends inside {what}")]
    Truncated {
        name: &'static str,
        what: &'static str,
    },
    #[error("option {name}: {extra} bytes after the last field")]
    TrailingBytes { name: &'static str, extra: usize },
    #[error("option {name}: {what} is not valid UTF-8")]
    BadUtf8 {
        name: &'static str,
        what: &'static str,
    },
    #[error("option {name}: {what} is {len} bytes, over the 4096-byte limit")]
    StringTooLong {
        name: &'static str,
        what: &'static str,
        len: usize,
    },
}

impl OptionError {
    /// The option reply type that reports this error.
    pub fn reply_type(&self) -> u32 {
        REP_ERR_INVALID
    }
}

/// Parses the data of an option whose header said `option`. `data` must be exactly the
/// option's data (the caller has bounded and read it).
pub fn parse_option(option: u32, data: &[u8]) -> Result<ClientOption, OptionError> {
    let name = option_name(option);
    let no_data = |opt: ClientOption| {
        if data.is_empty() {
            Ok(opt)
        } else {
            Err(OptionError::UnexpectedData {
                name,
                len: data.len(),
            })
        }
    };
    match option {
        OPT_EXPORT_NAME => Ok(ClientOption::ExportName(string(name, "export name", data)?)),
        // The spec says a server SHOULD ignore data sent with ABORT.
        OPT_ABORT => Ok(ClientOption::Abort),
        OPT_LIST => no_data(ClientOption::List),
        OPT_STARTTLS => no_data(ClientOption::StartTls),
        OPT_STRUCTURED_REPLY => no_data(ClientOption::StructuredReply),
        OPT_EXTENDED_HEADERS => no_data(ClientOption::ExtendedHeaders),
        OPT_INFO => parse_info(name, data).map(ClientOption::Info),
        OPT_GO => parse_info(name, data).map(ClientOption::Go),
        OPT_LIST_META_CONTEXT => parse_meta(name, data).map(ClientOption::ListMetaContext),
        OPT_SET_META_CONTEXT => parse_meta(name, data).map(ClientOption::SetMetaContext),
        other => Ok(ClientOption::Unknown(other)),
    }
}

fn string(name: &'static str, what: &'static str, bytes: &[u8]) -> Result<String, OptionError> {
    if bytes.len() > MAX_STRING_LEN {
        return Err(OptionError::StringTooLong {
            name,
            what,
            len: bytes.len(),
        });
    }
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| OptionError::BadUtf8 { name, what })
}

/// A 32-bit length followed by that many bytes of string.
fn len_string(
    c: &mut Cursor<'_>,
    name: &'static str,
    what: &'static str,
) -> Result<String, OptionError> {
    let truncated = OptionError::Truncated { name, what };
    let len = c.u32().ok_or(truncated.clone())?;
    let len = usize::try_from(len).map_err(|_| truncated.clone())?;
    if len > c.remaining() {
        return Err(truncated);
    }
    let bytes = c.bytes(len).ok_or(truncated)?;
    string(name, what, bytes)
}

fn parse_info(name: &'static str, data: &[u8]) -> Result<InfoRequest, OptionError> {
    let mut c = Cursor::new(data);
    let export = len_string(&mut c, name, "export name")?;
    let count = c.u16().ok_or(OptionError::Truncated {
        name,
        what: "information request count",
    })?;
    let count = usize::from(count);
    if count.saturating_mul(2) > c.remaining() {
        return Err(OptionError::Truncated {
            name,
            what: "information requests",
        });
    }
    let mut requests = Vec::with_capacity(count);
    for _ in 0..count {
        if let Some(r) = c.u16() {
            requests.push(r);
        }
    }
    if c.remaining() != 0 {
        return Err(OptionError::TrailingBytes {
            name,
            extra: c.remaining(),
        });
    }
    Ok(InfoRequest {
        name: export,
        requests,
    })
}

fn parse_meta(name: &'static str, data: &[u8]) -> Result<MetaContextRequest, OptionError> {
    let mut c = Cursor::new(data);
    let export = len_string(&mut c, name, "export name")?;
    let count = c.u32().ok_or(OptionError::Truncated {
        name,
        what: "query count",
    })?;
    // Every query takes at least its 4-byte length: bound the count by the data left.
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count.saturating_mul(4) > c.remaining() {
        return Err(OptionError::Truncated {
            name,
            what: "queries",
        });
    }
    let mut queries = Vec::with_capacity(count);
    for _ in 0..count {
        queries.push(len_string(&mut c, name, "query")?);
    }
    if c.remaining() != 0 {
        return Err(OptionError::TrailingBytes {
            name,
            extra: c.remaining(),
        });
    }
    Ok(MetaContextRequest { export, queries })
}

/// An option reply header followed by `data`.
pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
    put_u64(out, OPT_REPLY_MAGIC);
    put_u32(out, option);
    put_u32(out, reply_type);
    put_u32(out, u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(data);
}

/// An error reply carrying a human-readable message (cut at 4096 bytes).
pub fn encode_option_error(out: &mut Vec<u8>, option: u32, reply_type: u32, message: &str) {
    let mut msg = Vec::new();
    put_str_bounded(&mut msg, message);
    encode_option_reply(out, option, reply_type, &msg);
}

/// `NBD_REP_SERVER`: an export name, then its description.
pub fn encode_rep_server(out: &mut Vec<u8>, option: u32, name: &str, description: &str) {
    let mut data = Vec::with_capacity(4 + name.len() + description.len());
    let name = crate::wire::truncate_str(name, MAX_STRING_LEN);
    put_u32(&mut data, u32::try_from(name.len()).unwrap_or(0));
    data.extend_from_slice(name.as_bytes());
    put_str_bounded(&mut data, description);
    encode_option_reply(out, option, REP_SERVER, &data);
}

/// `NBD_REP_INFO` with `NBD_INFO_EXPORT`.
pub fn encode_info_export(out: &mut Vec<u8>, option: u32, size: u64, flags: u16) {
    let mut data = Vec::with_capacity(12);
    put_u16(&mut data, INFO_EXPORT);
    put_u64(&mut data, size);
    put_u16(&mut data, flags);
    encode_option_reply(out, option, REP_INFO, &data);
}

/// `NBD_REP_INFO` with `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`.
pub fn encode_info_string(out: &mut Vec<u8>, option: u32, info: u16, s: &str) {
    let mut data = Vec::with_capacity(2 + s.len());
    put_u16(&mut data, info);
    put_str_bounded(&mut data, s);
    encode_option_reply(out, option, REP_INFO, &data);
}

/// `NBD_REP_INFO` with `NBD_INFO_BLOCK_SIZE`.
pub fn encode_info_block_size(out: &mut Vec<u8>, option: u32, min: u32, preferred: u32, max: u32) {
    let mut data = Vec::with_capacity(14);
    put_u16(&mut data, INFO_BLOCK_SIZE);
    put_u32(&mut data, min);
    put_u32(&mut data, preferred);
    put_u32(&mut data, max);
    encode_option_reply(out, option, REP_INFO, &data);
}

/// `NBD_REP_META_CONTEXT`: a context id and name.
pub fn encode_meta_context(out: &mut Vec<u8>, option: u32, id: u32, name: &str) {
    let mut data = Vec::with_capacity(4 + name.len());
    put_u32(&mut data, id);
    put_str_bounded(&mut data, name);
    encode_option_reply(out, option, REP_META_CONTEXT, &data);
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, transmission flags and, unless the client
/// negotiated `NO_ZEROES`, 124 bytes of zeroes.
pub fn encode_export_name_reply(out: &mut Vec<u8>, size: u64, flags: u16, no_zeroes: bool) {
    put_u64(out, size);
    put_u16(out, flags);
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::frame::*;
    use proptest::prelude::*;

    #[test]
    fn greeting_round_trips() {
        let mut out = Vec::new();
        encode_greeting(&mut out, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(out.len(), 18);
        assert_eq!(&out[..8], b"NBDMAGIC");
        assert_eq!(&out[8..16], b"IHAVEOPT");
        assert_eq!(parse_greeting(&out).unwrap(), Some(3));
        assert_eq!(parse_greeting(&out[..17]).unwrap(), None);
    }

    #[test]
    fn client_flags() {
        assert_eq!(parse_client_flags(&[0, 0]).unwrap(), None);
        let f = parse_client_flags(&[0, 0, 0, 3]).unwrap().unwrap();
        assert!(f.fixed_newstyle && f.no_zeroes);
        assert!(matches!(
            parse_client_flags(&[0, 0, 0, 4]),
            Err(ProtoError::UnknownClientFlags(4))
        ));
    }

    #[test]
    fn option_round_trips() {
        let mut out = Vec::new();
        encode_option(&mut out, OPT_GO, &encode_info_request("disk", &[3, 1]));
        let h = parse_option_header(&out).unwrap().unwrap();
        assert_eq!(h.option, OPT_GO);
        let data = &out[OPTION_HEADER_LEN..];
        assert_eq!(h.len as usize, data.len());
        assert_eq!(
            parse_option(h.option, data).unwrap(),
            ClientOption::Go(InfoRequest {
                name: "disk".into(),
                requests: vec![3, 1]
            })
        );
        let meta = encode_meta_context_request("disk", &["base:allocation", "qemu:x"]);
        assert_eq!(
            parse_option(OPT_SET_META_CONTEXT, &meta).unwrap(),
            ClientOption::SetMetaContext(MetaContextRequest {
                export: "disk".into(),
                queries: vec!["base:allocation".into(), "qemu:x".into()]
            })
        );
    }

    #[test]
    fn option_errors() {
        assert!(matches!(
            parse_option(OPT_LIST, &[1]),
            Err(OptionError::UnexpectedData { .. })
        ));
        assert!(matches!(
            parse_option(OPT_GO, &[0, 0, 0, 9, b'a']),
            Err(OptionError::Truncated { .. })
        ));
        let mut info = encode_info_request("a", &[]);
        info.push(0);
        assert!(matches!(
            parse_option(OPT_INFO, &info),
            Err(OptionError::TrailingBytes { .. })
        ));
        assert!(matches!(
            parse_option(OPT_EXPORT_NAME, &[0xff]),
            Err(OptionError::BadUtf8 { .. })
        ));
        // A huge query count with no data behind it must not allocate.
        assert!(matches!(
            parse_option(OPT_LIST_META_CONTEXT, &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(OptionError::Truncated { .. })
        ));
        assert_eq!(
            parse_option(99, &[1, 2]).unwrap(),
            ClientOption::Unknown(99)
        );
        assert!(parse_option_header(b"IHAVEOPX\0\0\0\x01\0\0\0\0").is_err());
    }

    #[test]
    fn reply_encodings() {
        let mut out = Vec::new();
        encode_info_export(&mut out, OPT_GO, 1 << 30, 0x1234);
        let h = parse_option_reply_header(&out).unwrap().unwrap();
        assert_eq!((h.option, h.reply_type, h.len), (OPT_GO, REP_INFO, 12));
        out.clear();
        encode_export_name_reply(&mut out, 5, 1, false);
        assert_eq!(out.len(), 134);
        out.clear();
        encode_export_name_reply(&mut out, 5, 1, true);
        assert_eq!(out.len(), 10);
        out.clear();
        encode_option_error(&mut out, OPT_GO, REP_ERR_UNKNOWN, &"x".repeat(5000));
        let h = parse_option_reply_header(&out).unwrap().unwrap();
        assert_eq!(h.len as usize, MAX_STRING_LEN);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(opt in 0u32..16, data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_option(opt, &data);
            let _ = parse_option_header(&data);
            let _ = parse_client_flags(&data);
            let _ = parse_greeting(&data);
            let _ = parse_option_reply_header(&data);
        }

        #[test]
        fn meta_requests_round_trip(export in "[a-z@]{0,20}", qs in proptest::collection::vec("[a-z:]{0,30}", 0..8)) {
            let refs: Vec<&str> = qs.iter().map(String::as_str).collect();
            let data = encode_meta_context_request(&export, &refs);
            let parsed = parse_option(OPT_LIST_META_CONTEXT, &data).unwrap();
            prop_assert_eq!(parsed, ClientOption::ListMetaContext(MetaContextRequest { export, queries: qs }));
        }

        #[test]
        fn truncated_options_are_errors(export in "[a-z]{0,20}", reqs in proptest::collection::vec(any::<u16>(), 0..8), cut in 0usize..64) {
            let data = encode_info_request(&export, &reqs);
            let cut = cut.min(data.len());
            let r = parse_option(OPT_INFO, &data[..cut]);
            if cut < data.len() {
                prop_assert!(r.is_err());
            } else {
                prop_assert!(r.is_ok());
            }
        }
    }
}
