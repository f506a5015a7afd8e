//! The handshake phase over a stream: option haggling until the client picks an export
//! (`GO`/`EXPORT_NAME`), asks for TLS, or leaves.
//!
//! Framing comes from [`platter_nbd_proto`]; this module only decides answers and does the IO.
//! It reads at most [`MAX_OPTION_LEN`] bytes of option data into memory (bigger options are
//! drained up to [`DRAIN_MAX`] and refused, or the connection is closed), and it never
//! keeps state across a STARTTLS, as the spec requires.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::command::Session;
use crate::device::{BlockDevice, ExportError};
use crate::server::{ConnError, Shared};
use platter_nbd_proto::consts::*;
use platter_nbd_proto::{
    self as proto, ClientFlags, ClientOption, HeaderStyle, InfoRequest, ReplyStyle,
};

/// Option data bigger than [`MAX_OPTION_LEN`] but at most this is read and thrown away
/// before `NBD_REP_ERR_TOO_BIG`; anything bigger closes the connection.
pub(crate) const DRAIN_MAX: u32 = 1 << 20;

/// The id `base:allocation` gets in `NBD_OPT_SET_META_CONTEXT` replies.
pub(crate) const BASE_ALLOCATION_ID: u32 = 1;

/// What the negotiation has established so far.
pub(crate) struct HandshakeState {
    pub client: ClientFlags,
    pub tls_active: bool,
    /// FORCEDTLS: TLS is configured and this is a TCP client.
    pub tls_required: bool,
    structured: bool,
    extended: bool,
    meta_export: Option<String>,
}

impl HandshakeState {
    pub(crate) fn new(client: ClientFlags, tls_required: bool) -> Self {
        HandshakeState {
            client,
            tls_active: false,
            tls_required,
            structured: false,
            extended: false,
            meta_export: None,
        }
    }

    /// After STARTTLS nothing negotiated before it survives.
    pub(crate) fn start_tls(&mut self) {
        self.tls_active = true;
        self.structured = false;
        self.extended = false;
        self.meta_export = None;
    }

    fn reply_style(&self) -> ReplyStyle {
        if self.extended {
            ReplyStyle::Extended
        } else if self.structured {
            ReplyStyle::Structured
        } else {
            ReplyStyle::Simple
        }
    }
}

/// The export a client picked.
pub(crate) struct Negotiated {
    pub name: String,
    pub device: Arc<dyn BlockDevice>,
    pub session: Session,
}

pub(crate) enum Outcome {
    Go(Negotiated),
    StartTls,
    Close,
}

/// Reads until `buf` holds at least `n` bytes.
pub(crate) async fn fill<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    n: usize,
) -> Result<(), ConnError> {
    while buf.len() < n {
        buf.reserve(n - buf.len());
        if s.read_buf(buf).await? == 0 {
            return Err(ConnError::Eof);
        }
    }
    Ok(())
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, out: &[u8]) -> Result<(), ConnError> {
    s.write_all(out).await?;
    s.flush().await?;
    Ok(())
}

/// The transmission flags for a device under this negotiation.
fn transmission_flags(dev: &dyn BlockDevice, st: &HandshakeState) -> u16 {
    let mut f = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_CACHE;
    // Every connection shares the device and flush is device-wide.
    f |= FLAG_CAN_MULTI_CONN;
    if dev.read_only() {
        f |= FLAG_READ_ONLY;
    } else {
        f |= FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
    }
    if st.structured || st.extended {
        f |= FLAG_SEND_DF;
    }
    f
}

/// Haggles options on `s` until the client enters transmission, asks for TLS or leaves.
pub(crate) async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    st: &mut HandshakeState,
    shared: &Shared,
) -> Result<Outcome, ConnError> {
    let mut out = Vec::with_capacity(256);
    loop {
        fill(s, buf, OPTION_HEADER_LEN).await?;
        let Some(h) = proto::parse_option_header(buf)? else {
            continue;
        };
        buf.advance(OPTION_HEADER_LEN);
        out.clear();
        if h.len > MAX_OPTION_LEN {
            if h.option == OPT_EXPORT_NAME || h.len > DRAIN_MAX {
                return Err(ConnError::Closed("oversized option"));
            }
            drain(s, buf, h.len as usize).await?;
            let msg = format!("option data of {} bytes is over the limit", h.len);
            proto::encode_option_error(&mut out, h.option, REP_ERR_TOO_BIG, &msg);
            send(s, &out).await?;
            continue;
        }
        let len = h.len as usize;
        fill(s, buf, len).await?;
        let parsed = proto::parse_option(h.option, buf.get(..len).unwrap_or(&[]));
        buf.advance(len);
        let opt = match parsed {
            Ok(o) => o,
            Err(e) if h.option == OPT_EXPORT_NAME => {
                tracing::debug!(error = %e, "bad EXPORT_NAME");
                return Err(ConnError::Closed("bad EXPORT_NAME"));
            }
            Err(e) => {
                proto::encode_option_error(&mut out, h.option, e.reply_type(), &e.to_string());
                send(s, &out).await?;
                continue;
            }
        };
        tracing::trace!(option = option_name(h.option), "option");
        let outcome = answer(opt, h.option, st, shared, &mut out)?;
        if !out.is_empty() {
            send(s, &out).await?;
        }
        match outcome {
            Some(Outcome::StartTls) if !buf.is_empty() => {
                return Err(ConnError::Closed("data sent before the TLS handshake"));
            }
            Some(o) => return Ok(o),
            None => {}
        }
    }
}

async fn drain<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    mut n: usize,
) -> Result<(), ConnError> {
    while n > 0 {
        if buf.is_empty() {
            buf.reserve(n.min(64 * 1024));
            if s.read_buf(buf).await? == 0 {
                return Err(ConnError::Eof);
            }
        }
        let k = n.min(buf.len());
        buf.advance(k);
        n -= k;
    }
    Ok(())
}

/// Decides the reply to one option, appending it to `out`. `Ok(Some(_))` ends haggling.
fn answer(
    opt: ClientOption,
    code: u32,
    st: &mut HandshakeState,
    shared: &Shared,
    out: &mut Vec<u8>,
) -> Result<Option<Outcome>, ConnError> {
    let err =
        |out: &mut Vec<u8>, ty: u32, msg: &str| proto::encode_option_error(out, code, ty, msg);
    let needs_tls = st.tls_required && !st.tls_active;
    match opt {
        ClientOption::Abort => {
            proto::encode_option_reply(out, code, REP_ACK, &[]);
            return Ok(Some(Outcome::Close));
        }
        ClientOption::StartTls => {
            if shared.tls.is_none() {
                err(out, REP_ERR_POLICY, "TLS is not configured on this server");
            } else if st.tls_active {
                err(out, REP_ERR_INVALID, "TLS is already active");
            } else {
                proto::encode_option_reply(out, code, REP_ACK, &[]);
                return Ok(Some(Outcome::StartTls));
            }
        }
        ClientOption::ExportName(name) => {
            if needs_tls || st.extended {
                return Err(ConnError::Closed("EXPORT_NAME refused"));
            }
            let (name, device) =
                open(shared, &name).map_err(|_| ConnError::Closed("unknown export"))?;
            let n = negotiated(st, name, device);
            proto::encode_export_name_reply(
                out,
                n.session.size,
                transmission_flags(n.device.as_ref(), st),
                st.client.no_zeroes,
            );
            return Ok(Some(Outcome::Go(n)));
        }
        _ if needs_tls => err(out, REP_ERR_TLS_REQD, "this server requires TLS"),
        ClientOption::List => {
            for e in shared.exports.list() {
                proto::encode_rep_server(out, code, &e.name, &e.description);
            }
            proto::encode_option_reply(out, code, REP_ACK, &[]);
        }
        ClientOption::Info(req) => {
            info(req, code, st, shared, out);
        }
        ClientOption::Go(req) => {
            if let Some(n) = info(req, code, st, shared, out) {
                return Ok(Some(Outcome::Go(n)));
            }
        }
        ClientOption::StructuredReply => {
            if st.extended {
                err(
                    out,
                    REP_ERR_EXT_HEADER_REQD,
                    "extended headers are already in use",
                );
            } else {
                st.structured = true;
                proto::encode_option_reply(out, code, REP_ACK, &[]);
            }
        }
        ClientOption::ExtendedHeaders => {
            st.extended = true;
            proto::encode_option_reply(out, code, REP_ACK, &[]);
        }
        ClientOption::ListMetaContext(req) | ClientOption::SetMetaContext(req) => {
            let set = code == OPT_SET_META_CONTEXT;
            if set {
                st.meta_export = None;
            }
            let opened = open(shared, &req.export);
            if !(st.structured || st.extended) {
                err(out, REP_ERR_INVALID, "negotiate structured replies first");
            } else if let Err(e) = &opened {
                err(out, REP_ERR_UNKNOWN, &e.to_string());
            } else if let Ok((resolved, _)) = opened {
                let wanted = if set {
                    req.queries.iter().any(|q| q == META_BASE_ALLOCATION)
                } else {
                    req.queries.is_empty()
                        || req
                            .queries
                            .iter()
                            .any(|q| q == "base:" || q == META_BASE_ALLOCATION)
                };
                if wanted {
                    let id = if set { BASE_ALLOCATION_ID } else { 0 };
                    proto::encode_meta_context(out, code, id, META_BASE_ALLOCATION);
                    if set {
                        st.meta_export = Some(resolved);
                    }
                }
                proto::encode_option_reply(out, code, REP_ACK, &[]);
            }
        }
        ClientOption::Unknown(o) => {
            err(out, REP_ERR_UNSUP, &format!("option {o} is not supported"));
        }
    }
    Ok(None)
}

/// Resolves a requested name (the empty name means the configured default) and opens it.
fn open(shared: &Shared, name: &str) -> Result<(String, Arc<dyn BlockDevice>), ExportError> {
    let name = match (name, &shared.config.default_export) {
        ("", Some(d)) => d.as_str(),
        (n, _) => n,
    };
    let dev = shared.exports.open(name)?;
    Ok((name.to_owned(), dev))
}

fn negotiated(st: &HandshakeState, name: String, device: Arc<dyn BlockDevice>) -> Negotiated {
    let meta_context = match &st.meta_export {
        Some(m) if *m == name => Some(BASE_ALLOCATION_ID),
        _ => None,
    };
    let session = Session {
        header: if st.extended {
            HeaderStyle::Extended
        } else {
            HeaderStyle::Compact
        },
        reply: st.reply_style(),
        meta_context,
        size: device.size(),
        read_only: device.read_only(),
        fast_zero: device.fast_zero(),
    };
    Negotiated {
        name,
        device,
        session,
    }
}

/// Answers `NBD_OPT_INFO`/`NBD_OPT_GO`; for a successful GO, answers the export.
fn info(
    req: InfoRequest,
    code: u32,
    st: &HandshakeState,
    shared: &Shared,
    out: &mut Vec<u8>,
) -> Option<Negotiated> {
    let (name, device) = match open(shared, &req.name) {
        Ok(x) => x,
        Err(e) => {
            proto::encode_option_error(out, code, REP_ERR_UNKNOWN, &e.to_string());
            return None;
        }
    };
    let flags = transmission_flags(device.as_ref(), st);
    proto::encode_info_export(out, code, device.size(), flags);
    if req.requests.contains(&INFO_NAME) {
        proto::encode_info_string(out, code, INFO_NAME, &name);
    }
    if req.requests.contains(&INFO_DESCRIPTION) {
        if let Some(d) = shared.exports.description(&name) {
            proto::encode_info_string(out, code, INFO_DESCRIPTION, &d);
        }
    }
    proto::encode_info_block_size(
        out,
        code,
        MIN_BLOCK_SIZE,
        PREFERRED_BLOCK_SIZE,
        MAX_PAYLOAD_LEN,
    );
    proto::encode_option_reply(out, code, REP_ACK, &[]);
    (code == OPT_GO).then(|| negotiated(st, name, device))
}
