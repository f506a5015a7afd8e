//! Positional, shared-reference reads of an image: the only way format readers see their
//! input. Implemented for local files, in-memory buffers and `Arc`s of either, so parsers
//! are tested on bytes in memory and the importer can plug in an HTTP Range reader.
//!
//! [`WriteAt`] is the matching positional output used by the qcow2 writer.
//!
//! [`read_exact`] is the readers' shared way to turn a short or failed read into a
//! [`FormatError`].
//!
//! Nothing here seeks (reads take `&self` and are safe to issue from several threads)
//! and nothing opens files by path.

use std::io;
use std::sync::Arc;

use crate::FormatError;

/// Random-access reads by absolute offset.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` if the source is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The total length of the source in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the source holds no bytes at all.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Fills `buf` from `offset` of a `format` image: a source that ends too soon is
/// [`FormatError::Truncated`] naming `what`; any other failure is an IO error naming the
/// format (upper-cased, e.g. "VDI"), `what` and the offset.
pub(crate) fn read_exact(
    format: &str,
    src: &dyn ReadAt,
    buf: &mut [u8],
    offset: u64,
    what: &str,
) -> Result<(), FormatError> {
    src.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FormatError::Truncated {
                what: what.into(),
                offset,
            }
        } else {
            let format = format.to_ascii_uppercase();
            FormatError::io(format!("reading {format} {what} at offset {offset}"), e)
        }
    })
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// An image held in memory (tests, small images, already-downloaded data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemImage(pub Vec<u8>);

impl MemImage {
    pub fn new(bytes: Vec<u8>) -> Self {
        MemImage(bytes)
    }
}

impl From<Vec<u8>> for MemImage {
    fn from(v: Vec<u8>) -> Self {
        MemImage(v)
    }
}

impl ReadAt for MemImage {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.as_slice().read_exact_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| {
                let end = start.checked_add(buf.len())?;
                self.get(start..end)
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} past end of {}-byte buffer",
                        buf.len(),
                        self.len()
                    ),
                )
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(Vec::len(self) as u64)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
}

/// Positional writes, the output side of the qcow2 writer: a local file, or a buffer in
/// tests. Writes past the end extend the output (the gap reads as zeros).
pub trait WriteAt {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the total length (truncating or extending with zeros).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl WriteAt for std::fs::File {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }
}

fn mem_len(len: u64) -> io::Result<usize> {
    usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "length exceeds memory"))
}

impl WriteAt for Vec<u8> {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let start = mem_len(offset)?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "length exceeds memory"))?;
        if self.len() < end {
            self.resize(end, 0);
        }
        self[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.resize(mem_len(len)?, 0);
        Ok(())
    }
}

impl WriteAt for MemImage {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        WriteAt::set_len(&mut self.0, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_reads_and_bounds() {
        let m = MemImage(vec![1, 2, 3, 4, 5]);
        let mut b = [0u8; 2];
        m.read_exact_at(&mut b, 3).unwrap();
        assert_eq!(b, [4, 5]);
        assert_eq!(
            m.read_exact_at(&mut b, 4).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(m.read_exact_at(&mut b, u64::MAX).is_err());
        assert_eq!(ReadAt::len(&m).unwrap(), 5);
        let a: Arc<dyn ReadAt> = Arc::new(m);
        a.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(b, [1, 2]);
    }

    #[test]
    fn file_reads() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello world").unwrap();
        let mut b = [0u8; 5];
        ReadAt::read_exact_at(&f, &mut b, 6).unwrap();
        assert_eq!(&b, b"world");
        assert_eq!(ReadAt::len(&f).unwrap(), 11);
        assert!(ReadAt::read_exact_at(&f, &mut b, 8).is_err());
    }

    struct Broken;

    impl ReadAt for Broken {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            Err(io::Error::other("disk on fire"))
        }

        fn len(&self) -> io::Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn read_exact_names_format_and_what() {
        let m = MemImage(vec![0; 4]);
        let mut b = [0u8; 8];
        match read_exact("vdi", &m, &mut b, 0, "header") {
            Err(FormatError::Truncated { what, offset: 0 }) => assert_eq!(what, "header"),
            other => panic!("{other:?}"),
        }
        read_exact("vdi", &m, &mut b[..4], 0, "header").unwrap();
        let e = read_exact("vhdx", &Broken, &mut b, 7, "BAT").unwrap_err();
        assert!(matches!(e, FormatError::Io { .. }));
        assert!(
            e.to_string().contains("reading VHDX BAT at offset 7"),
            "{e}"
        );
    }

    #[test]
    fn vec_write_at_extends() {
        let mut v = Vec::new();
        v.write_all_at(b"ab", 3).unwrap();
        assert_eq!(v, [0, 0, 0, b'a', b'b']);
        v.write_all_at(b"x", 0).unwrap();
        WriteAt::set_len(&mut v, 8).unwrap();
        assert_eq!(v, [b'x', 0, 0, b'a', b'b', 0, 0, 0]);
    }
}
