//! Image-type and wrapper detection by magic bytes, in one place.
//!
//! [`detect`] looks at the first bytes of a file ([`DETECT_HEAD_LEN`] is enough for every
//! format, including the ISO 9660 volume descriptor at 0x8001); a fixed VHD keeps its only
//! footer in the last 512 bytes, which [`detect_tail`] checks. [`detect_wrapper`] spots
//! compression/archive wrappers (gzip, xz, zstd, bzip2, tar) around an image.
//!
//! Pure functions on byte slices: this module must never do IO.

use std::fmt;
use std::str::FromStr;

/// How many leading bytes [`detect`] needs to recognise every format it knows.
pub const DETECT_HEAD_LEN: usize = 0x8800;

/// A disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
    Iso,
}

impl Format {
    /// Every format, in the order the CLI lists them.
    pub const ALL: [Format; 7] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vhd,
        Format::Vhdx,
        Format::Vdi,
        Format::Iso,
    ];

    /// The lowercase name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Iso => "iso",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no known format (or wrapper).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown image format {0:?} (expected one of raw, qcow2, vmdk, vhd, vhdx, vdi, iso)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
const VMDK_SPARSE_MAGIC: &[u8] = b"KDMV";
const VMDK_DESCRIPTOR: &[u8] = b"# Disk DescriptorFile";
const VHDX_MAGIC: &[u8] = b"vhdxfile";
const VHD_COOKIE: &[u8] = b"conectix";
const VDI_SIGNATURE_OFFSET: usize = 0x40;
const VDI_SIGNATURE: [u8; 4] = 0xbeda_107f_u32.to_le_bytes();
const ISO_MAGIC_OFFSET: usize = 0x8001;
const ISO_MAGIC: &[u8] = b"CD001";
const VHD_FOOTER_LEN: usize = 512;

fn has_at(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.get(offset..)
        .is_some_and(|rest| rest.starts_with(magic))
}

/// Guesses the format of an image from its first bytes (pass [`DETECT_HEAD_LEN`] bytes or
/// the whole file if shorter). `file_len` lets a fixed VHD be recognised when `head` holds
/// the whole file; for larger files call [`detect_tail`] on the last 512 bytes when this
/// returns [`Format::Raw`]. Anything unrecognised is raw.
pub fn detect(head: &[u8], file_len: Option<u64>) -> Format {
    if head.starts_with(QCOW2_MAGIC) {
        return Format::Qcow2;
    }
    if head.starts_with(VMDK_SPARSE_MAGIC) || head.starts_with(VMDK_DESCRIPTOR) {
        return Format::Vmdk;
    }
    if head.starts_with(VHDX_MAGIC) {
        return Format::Vhdx;
    }
    // A dynamic VHD starts with a copy of its footer.
    if head.starts_with(VHD_COOKIE) {
        return Format::Vhd;
    }
    if has_at(head, VDI_SIGNATURE_OFFSET, &VDI_SIGNATURE) {
        return Format::Vdi;
    }
    if has_at(head, ISO_MAGIC_OFFSET, ISO_MAGIC) {
        return Format::Iso;
    }
    let whole_file = file_len.is_some_and(|len| len == head.len() as u64);
    if whole_file && head.len() >= VHD_FOOTER_LEN {
        let tail = &head[head.len() - VHD_FOOTER_LEN..];
        if detect_tail(tail) {
            return Format::Vhd;
        }
    }
    Format::Raw
}

/// True if `tail512` (the last 512 bytes of a file) is a VHD footer, as a fixed VHD has.
pub fn detect_tail(tail512: &[u8]) -> bool {
    tail512.starts_with(VHD_COOKIE)
}

/// A compression or archive layer around an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wrapper {
    Gzip,
    Xz,
    Zstd,
    Bzip2,
    Tar,
}

impl Wrapper {
    pub fn name(self) -> &'static str {
        match self {
            Wrapper::Gzip => "gzip",
            Wrapper::Xz => "xz",
            Wrapper::Zstd => "zstd",
            Wrapper::Bzip2 => "bzip2",
            Wrapper::Tar => "tar",
        }
    }
}

impl fmt::Display for Wrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const TAR_MAGIC_OFFSET: usize = 257;

/// Recognises a compression/archive wrapper from the first bytes of a stream (512 bytes
/// are enough for tar's "ustar" at offset 257).
pub fn detect_wrapper(head: &[u8]) -> Option<Wrapper> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Wrapper::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Wrapper::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Wrapper::Zstd)
    } else if head.starts_with(b"BZh") && head.get(3).is_some_and(|b| (b'1'..=b'9').contains(b)) {
        // The block-size digit after "BZh" keeps random text starting "BZh" from matching.
        Some(Wrapper::Bzip2)
    } else if has_at(head, TAR_MAGIC_OFFSET, b"ustar") {
        Some(Wrapper::Tar)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: usize, magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; DETECT_HEAD_LEN];
        v[offset..offset + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn detects_each_format() {
        assert_eq!(detect(&at(0, b"QFI\xfb\0\0\0\x03"), None), Format::Qcow2);
        assert_eq!(detect(&at(0, b"KDMV"), None), Format::Vmdk);
        assert_eq!(
            detect(b"# Disk DescriptorFile\nversion=1\n", None),
            Format::Vmdk
        );
        assert_eq!(detect(&at(0, b"vhdxfile"), None), Format::Vhdx);
        assert_eq!(detect(&at(0, b"conectix"), None), Format::Vhd);
        assert_eq!(
            detect(&at(0x40, &[0x7f, 0x10, 0xda, 0xbe]), None),
            Format::Vdi
        );
        assert_eq!(detect(&at(0x8001, b"CD001"), None), Format::Iso);
        assert_eq!(detect(&at(0, b"\xeb\x63\x90"), None), Format::Raw);
        assert_eq!(detect(&[], None), Format::Raw);
        assert_eq!(detect(b"QF", None), Format::Raw);
    }

    #[test]
    fn short_head_is_raw_not_panic() {
        assert_eq!(detect(&[0u8; 0x41], None), Format::Raw);
        assert_eq!(detect(&[0u8; 0x8003], None), Format::Raw);
    }

    #[test]
    fn fixed_vhd_by_tail() {
        let mut whole = vec![0u8; 4096];
        whole[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        assert_eq!(detect(&whole, Some(4096)), Format::Vhd);
        // Head shorter than the file: tail not visible, the caller must use detect_tail.
        assert_eq!(detect(&whole, Some(1 << 20)), Format::Raw);
        assert!(detect_tail(&whole[4096 - 512..]));
        assert!(!detect_tail(&[0u8; 512]));
        assert!(!detect_tail(b"conec"));
    }

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        }
        assert_eq!("QCOW2".parse::<Format>().unwrap(), Format::Qcow2);
        assert!("qcow3".parse::<Format>().is_err());
    }

    #[test]
    fn wrappers() {
        assert_eq!(detect_wrapper(&[0x1f, 0x8b, 8, 0]), Some(Wrapper::Gzip));
        assert_eq!(
            detect_wrapper(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]),
            Some(Wrapper::Xz)
        );
        assert_eq!(
            detect_wrapper(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(Wrapper::Zstd)
        );
        assert_eq!(detect_wrapper(b"BZh91AY&SY"), Some(Wrapper::Bzip2));
        assert_eq!(detect_wrapper(b"BZhx"), None);
        assert_eq!(detect_wrapper(&at(257, b"ustar\0")), Some(Wrapper::Tar));
        assert_eq!(detect_wrapper(&at(0, b"QFI\xfb")), None);
        assert_eq!(detect_wrapper(&[]), None);
    }
}
