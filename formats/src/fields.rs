//! Fixed-width integer fields at byte offsets of on-disk structures (headers, footers,
//! table entries), shared by the VDI, VHD, VHDX and VMDK parsers.
//!
//! A field that lies (partly) outside the buffer reads as zero instead of panicking:
//! callers check buffer lengths and field values themselves. Pure; never does IO and
//! never validates what a field means.

/// The `N` bytes at `at`, or all zeros if they are not all inside `b`.
pub(crate) fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = b.get(at..at + N) {
        a.copy_from_slice(s);
    }
    a
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes_at(b, at))
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes_at(b, at))
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, at))
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes_at(b, at))
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes_at(b, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_zeros_outside() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le16(&b, 0), 0x0201);
        assert_eq!(le32(&b, 1), 0x0504_0302);
        assert_eq!(le64(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(be32(&b, 0), 0x0102_0304);
        assert_eq!(be64(&b, 0), 0x0102_0304_0506_0708);
        assert_eq!(le32(&b, 6), 0);
        assert_eq!(be64(&b, 2), 0);
        assert_eq!(bytes_at::<16>(&b, 0), [0u8; 16]);
        assert_eq!(bytes_at::<2>(&b, 7), [8, 9]);
    }
}
