//! Format detection of a whole random-access source: [`detect`] on its first bytes, and
//! for what reads as raw, a look at the last 512 bytes for the footer a fixed VHD keeps
//! only there. The one place that decides "raw or fixed VHD" for files, HTTP sources with
//! ranges, tar members and local images alike.

use std::io;

use crate::detect::{detect, detect_tail, Format};
use crate::readat::ReadAt;

/// The format of `src` (`len` bytes) whose first bytes are `head` (up to
/// [`crate::detect::DETECT_HEAD_LEN`], or all of a shorter source).
pub fn probe(src: &dyn ReadAt, head: &[u8], len: u64) -> io::Result<Format> {
    let format = detect(head, Some(len));
    if format != Format::Raw || len < 512 {
        return Ok(format);
    }
    let mut tail = [0u8; 512];
    src.read_exact_at(&mut tail, len - 512)?;
    Ok(match detect_tail(&tail) {
        true => Format::Vhd,
        false => Format::Raw,
    })
}

/// The virtual size an image declares in its fixed header (in `head`, its first bytes),
/// for the formats that keep it there: qcow2, a sparse VMDK, a dynamic VHD (its footer
/// copy), VDI. `None` for the others, or when the header does not parse.
pub fn declared_virtual_size(head: &[u8], format: Format) -> Option<u64> {
    match format {
        Format::Qcow2 => crate::qcow2::Header::parse(head).ok().map(|h| h.size),
        Format::Vmdk => crate::vmdk::parse_sparse_header(head)
            .ok()?
            .capacity
            .checked_mul(512),
        Format::Vhd => crate::vhd::parse_footer(head).ok().map(|f| f.current_size),
        Format::Vdi => crate::vdi::parse_header(head).ok().map(|h| h.disk_size),
        Format::Raw | Format::Vhdx | Format::Iso => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fixed VHD footer for a disk of `size` bytes.
    fn fixed_footer(size: u64) -> Vec<u8> {
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        f[48..56].copy_from_slice(&size.to_be_bytes());
        f[60..64].copy_from_slice(&2u32.to_be_bytes());
        let c = crate::vhd::checksum(&f, 64);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn a_raw_disk_with_a_footer_is_a_fixed_vhd() {
        let mut img = vec![7u8; 64 << 10];
        let head = img[..4096].to_vec();
        assert_eq!(probe(&img, &head, img.len() as u64).unwrap(), Format::Raw);
        img.extend(fixed_footer(64 << 10));
        assert_eq!(probe(&img, &head, img.len() as u64).unwrap(), Format::Vhd);
        assert_eq!(
            crate::vhd::fixed_footer_size(&img[64 << 10..]),
            Some(64 << 10)
        );
        // A source shorter than it says: the tail read fails, as an error.
        assert!(probe(&img[..1000].to_vec(), &head, img.len() as u64).is_err());
    }

    #[test]
    fn declared_sizes_come_from_each_format_parser() {
        let mut q = vec![0u8; 512];
        q[..4].copy_from_slice(b"QFI\xfb");
        q[4..8].copy_from_slice(&3u32.to_be_bytes());
        q[20..24].copy_from_slice(&16u32.to_be_bytes());
        q[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        q[100..104].copy_from_slice(&104u32.to_be_bytes());
        assert_eq!(declared_virtual_size(&q, Format::Qcow2), Some(1 << 30));
        assert_eq!(declared_virtual_size(&q, Format::Raw), None);
        let mut dynamic = fixed_footer(5 << 20);
        dynamic[60..64].copy_from_slice(&3u32.to_be_bytes());
        let c = crate::vhd::checksum(&dynamic, 64);
        dynamic[64..68].copy_from_slice(&c.to_be_bytes());
        assert_eq!(declared_virtual_size(&dynamic, Format::Vhd), Some(5 << 20));
        assert_eq!(crate::vhd::fixed_footer_size(&dynamic), None, "not fixed");
    }

    proptest! {
        #[test]
        fn arbitrary_heads_never_panic(head in proptest::collection::vec(any::<u8>(), 0..2048)) {
            for f in Format::ALL {
                let _ = declared_virtual_size(&head, f);
            }
            let _ = crate::vhd::fixed_footer_size(&head);
            let _ = probe(&head, &head, head.len() as u64);
        }
    }
}
