//! What a volume is to a guest: an ISO 9660 image (attached as a CD-ROM) or a disk, told
//! from its first bytes ([`platter_formats::detect`]). Pure: the caller reads the bytes
//! (the control plane records the answer with the image cache's entry; the launcher
//! reads no volume and speaks no NBD itself).

use platter_formats::Format;

/// Bytes read from the start of an export: up to and including the ISO 9660 primary
/// volume descriptor (sector 16 of 2048-byte sectors), where `CD001` sits.
pub const PROBE_LEN: u64 = 16 * 2048 + 2048;

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
