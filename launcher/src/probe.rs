//! What an NBD export holds: whether a volume is an ISO 9660 image (attached as a CD-ROM)
//! or a disk, told from its first bytes as `platter serve` exports them.
//!
//! Why over NBD: the store is locked by the running server, and a cached image may have
//! been imported by an earlier command whose import report is gone; its bytes are the one
//! thing always at hand. The NBD client is [`platter_nbd_proto::client`] (which bounds
//! every length the server sends before allocating for it); detection is
//! [`platter_formats::detect`]. Nothing here writes to an export.

use std::path::Path;
use std::time::Duration;

use platter_formats::Format;
use platter_nbd_proto::client::{Client, ClientError, Options};

use crate::error::{LauncherError, Result};

/// Bytes read from the start of an export: up to and including the ISO 9660 primary
/// volume descriptor (sector 16 of 2048-byte sectors), where `CD001` sits.
pub const PROBE_LEN: u64 = 16 * 2048 + 2048;
/// How long one socket read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Reads the head of `export` from the NBD server on `socket` and classifies it: the
/// handshake (`NBD_OPT_GO`, simple replies), one read of the export's first
/// [`PROBE_LEN`] bytes (or all of a smaller export), and a disconnect.
pub fn export_content(socket: &Path, export: &str) -> Result<Content> {
    let fail = |e: ClientError| LauncherError::Probe {
        export: export.to_string(),
        socket: socket.to_path_buf(),
        message: e.to_string(),
    };
    let options = Options {
        structured_replies: false,
        base_allocation: false,
        io_timeout: Some(IO_TIMEOUT),
        ..Options::new(export)
    };
    let mut client = Client::connect_unix(socket, &options).map_err(fail)?;
    let size = client.size();
    let head = client.read(0, size.min(PROBE_LEN)).map_err(fail)?;
    // The bytes are in hand: a failed goodbye changes nothing.
    let _ = client.disconnect();
    Ok(classify(&head, size))
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
