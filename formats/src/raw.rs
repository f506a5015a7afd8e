//! Raw images: guest offset N is file offset N. The map reports data everywhere; finding
//! zero blocks is the importer's job (it reads the bytes anyway).
//!
//! Reads only through [`ReadAt`]; never opens files.

use crate::blockmap::{check_map_range, check_range};
use crate::{DiskImage, Extent, ExtentKind, Format, FormatError, ReadAt};

/// A raw disk image over any [`ReadAt`] source; its virtual size is the source length.
pub struct RawImage<R> {
    src: R,
    size: u64,
}

impl<R: ReadAt> RawImage<R> {
    /// Opens `src` as a raw image whose size is `src.len()`.
    pub fn open(src: R) -> Result<Self, FormatError> {
        let size = src
            .len()
            .map_err(|e| FormatError::io("reading raw image length", e))?;
        Ok(RawImage { src, size })
    }

    /// Gives the source back.
    pub fn into_inner(self) -> R {
        self.src
    }
}

impl<R: ReadAt> DiskImage for RawImage<R> {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        check_map_range(offset, max_len, self.size)?;
        Ok(Extent {
            len: max_len.min(self.size - offset),
            kind: ExtentKind::Data,
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), FormatError> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.src
            .read_exact_at(buf, offset)
            .map_err(|e| FormatError::io(format!("reading raw image at offset {offset}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readat::MemImage;

    #[test]
    fn raw_maps_and_reads() {
        let img = RawImage::open(MemImage((0..100u8).collect())).unwrap();
        assert_eq!(img.virtual_size(), 100);
        assert_eq!(
            img.map(90, 50).unwrap(),
            Extent {
                len: 10,
                kind: ExtentKind::Data
            }
        );
        assert!(img.map(100, 1).is_err());
        let mut b = [0u8; 3];
        img.read_at(&mut b, 97).unwrap();
        assert_eq!(b, [97, 98, 99]);
        assert!(matches!(
            img.read_at(&mut b, 98),
            Err(FormatError::OutOfRange { .. })
        ));
    }
}
