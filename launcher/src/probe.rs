//! What an NBD export holds: whether a volume is an ISO 9660 image (attached as a CD-ROM)
//! or a disk, told from its first bytes as `platter serve` exports them.
//!
//! Why over NBD: the store is locked by the running server, and a cached image may have
//! been imported by an earlier command whose import report is gone; its bytes are the one
//! thing always at hand. The handshake and framing come from
//! [`platter_nbd_proto`]; detection from [`platter_formats::detect`]. Nothing
//! here writes to an export, and every length the server sends is bounded before it is
//! allocated for.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use platter_formats::Format;
use platter_nbd_proto::client::frame::{
    encode_client_flags, encode_info_request, encode_option, encode_request, parse_greeting,
    parse_option_reply_header, parse_reply_header, ReplyHeader,
};
use platter_nbd_proto::{consts::*, HeaderStyle};

use crate::error::{LauncherError, Result};

/// Bytes read from the start of an export: up to and including the ISO 9660 primary
/// volume descriptor (sector 16 of 2048-byte sectors), where `CD001` sits.
pub const PROBE_LEN: u64 = 16 * 2048 + 2048;
/// The longest option reply accepted (NBD strings are at most 4096 bytes).
const MAX_OPTION_REPLY: u32 = 64 * 1024;
/// How long one socket read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const COOKIE: u64 = 0x706c_6174_7465_7221;

/// What a volume is to a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// An ISO 9660 image (a CD/DVD, possibly hybrid): a read-only CD-ROM.
    Iso,
    /// Anything else: a disk.
    Disk,
}

/// Classifies the first bytes of a volume (`head`, at most [`PROBE_LEN`] of them) of
/// `size` bytes. Pure.
pub fn classify(head: &[u8], size: u64) -> Content {
    match platter_formats::detect(head, Some(size)) {
        Format::Iso => Content::Iso,
        _ => Content::Disk,
    }
}

/// Reads the head of `export` from the NBD server on `socket` and classifies it.
pub fn export_content(socket: &Path, export: &str) -> Result<Content> {
    let fail = |message: String| LauncherError::Probe {
        export: export.to_string(),
        socket: socket.to_path_buf(),
        message,
    };
    let mut s = UnixStream::connect(socket).map_err(|e| fail(format!("connect: {e}")))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| fail(format!("set timeouts: {e}")))?;
    let (size, head) = read_head(&mut s, export).map_err(fail)?;
    Ok(classify(&head, size))
}

/// The handshake (`NBD_OPT_GO`), one read of the export's first [`PROBE_LEN`] bytes (or
/// all of a smaller export), and a disconnect. Answers the export's size and the bytes.
fn read_head(s: &mut UnixStream, export: &str) -> Result<(u64, Vec<u8>), String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting)
        .map_err(|e| io("reading the greeting", e))?;
    let flags = parse_greeting(&greeting)
        .map_err(|e| e.to_string())?
        .ok_or("short greeting")?;
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err("the server does not speak fixed newstyle NBD".into());
    }
    let mut out = Vec::new();
    let mut client = FLAG_C_FIXED_NEWSTYLE;
    if flags & FLAG_NO_ZEROES != 0 {
        client |= FLAG_C_NO_ZEROES;
    }
    encode_client_flags(&mut out, client);
    encode_option(&mut out, OPT_GO, &encode_info_request(export, &[]));
    s.write_all(&out).map_err(|e| io("sending NBD_OPT_GO", e))?;

    let mut size = None;
    loop {
        let mut hdr = [0u8; 20];
        s.read_exact(&mut hdr)
            .map_err(|e| io("reading an option reply", e))?;
        let h = parse_option_reply_header(&hdr)
            .map_err(|e| e.to_string())?
            .ok_or("short option reply")?;
        if h.len > MAX_OPTION_REPLY {
            return Err(format!("option reply of {} bytes", h.len));
        }
        let mut data = vec![0u8; h.len as usize];
        s.read_exact(&mut data)
            .map_err(|e| io("reading an option reply", e))?;
        match h.reply_type {
            REP_ACK => break,
            REP_INFO => {
                // NBD_INFO_EXPORT: type u16, size u64, transmission flags u16.
                if let [0, 0, b @ ..] = data.as_slice() {
                    if let Some(bytes) = b.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                        size = Some(u64::from_be_bytes(bytes));
                    }
                }
            }
            t if t & (1 << 31) != 0 => {
                // An error reply's data is a message for humans.
                let msg = String::from_utf8_lossy(&data);
                let why = if t == REP_ERR_UNKNOWN {
                    "no such export"
                } else {
                    "refused"
                };
                return Err(format!("{why}: {}", msg.trim()));
            }
            _ => {}
        }
    }
    let size = size.ok_or("the server sent no export size")?;
    let len = size.min(PROBE_LEN);
    let mut req = Vec::new();
    encode_request(&mut req, HeaderStyle::Compact, 0, CMD_READ, COOKIE, 0, len);
    s.write_all(&req).map_err(|e| io("sending a read", e))?;
    let mut hdr = [0u8; SIMPLE_REPLY_LEN];
    s.read_exact(&mut hdr)
        .map_err(|e| io("reading the read reply", e))?;
    match parse_reply_header(&hdr).map_err(|e| e.to_string())? {
        Some((ReplyHeader::Simple { error: 0, cookie }, _)) if cookie == COOKIE => {}
        Some((ReplyHeader::Simple { error, .. }, _)) if error != 0 => {
            return Err(format!("read failed with NBD error {error}"))
        }
        other => return Err(format!("unexpected read reply {other:?}")),
    }
    // `len` is at most PROBE_LEN: bounded before allocating.
    let mut head = vec![0u8; len as usize];
    s.read_exact(&mut head)
        .map_err(|e| io("reading the data", e))?;
    let mut disc = Vec::new();
    encode_request(
        &mut disc,
        HeaderStyle::Compact,
        0,
        CMD_DISC,
        COOKIE + 1,
        0,
        0,
    );
    let _ = s.write_all(&disc);
    Ok((size, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_isos_from_disks() {
        let mut iso = vec![0u8; PROBE_LEN as usize];
        iso[0x8000..0x8006].copy_from_slice(b"\x01CD001");
        assert_eq!(classify(&iso, 1 << 30), Content::Iso);
        // A hybrid ISO (an MBR in front) is still an ISO.
        iso[510..512].copy_from_slice(&[0x55, 0xaa]);
        assert_eq!(classify(&iso, 1 << 30), Content::Iso);
        assert_eq!(classify(&[0u8; 512], 512), Content::Disk);
        assert_eq!(classify(&[], 0), Content::Disk);
        let mut ext4 = vec![0u8; PROBE_LEN as usize];
        ext4[0x438..0x43a].copy_from_slice(&[0x53, 0xef]);
        assert_eq!(classify(&ext4, 64 << 20), Content::Disk);
    }
}
