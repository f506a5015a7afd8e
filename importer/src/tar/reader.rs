//! A forward-only tar reader over any byte stream, applying GNU long names and pax records,
//! refusing entries that would leave the tree (`..`, absolute paths, escaping links).
//!
//! It never buffers entry data: the caller reads an entry's bytes through
//! [`TarReader::entry_reader`] or they are skipped. Long-name/pax payloads are bounded by
//! [`MAX_META_LEN`].

use super::header::{
    padding, parse_header, parse_pax, EntryKind, HeaderError, PathError, SafePath, BLOCK,
    MAX_META_LEN,
};
use std::io::{self, Read};

/// An input that can skip forward cheaply (a seekable source) or by reading.
pub trait TarInput: Read {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut *self).take(n), &mut io::sink())?;
        if copied != n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

impl<R: Read + ?Sized> TarInput for Box<R> {}
impl TarInput for &[u8] {}

/// A file (or link, or directory) in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: SafePath,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub link_target: Option<Vec<u8>>,
    /// Offset of the entry's first data byte from the start of the archive.
    pub data_offset: u64,
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("tar header at offset {offset}: {source}")]
    Header {
        offset: u64,
        #[source]
        source: HeaderError,
    },
    #[error("tar entry at offset {offset}: {source}")]
    Path {
        offset: u64,
        #[source]
        source: PathError,
    },
    #[error("tar entry {path} links to {target:?}, outside the archive tree")]
    LinkEscape { path: String, target: String },
    #[error("tar metadata record at offset {offset} is {len} bytes, more than the {max} allowed")]
    MetaTooLarge { offset: u64, len: u64, max: u64 },
    #[error("tar archive truncated at offset {offset}")]
    Truncated { offset: u64 },
    #[error("reading tar archive at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

/// Forward-only reader; see the module doc.
pub struct TarReader<R> {
    inner: R,
    /// Archive offset of the next byte `inner` yields.
    pos: u64,
    /// Unread data bytes of the current entry, then its padding.
    remaining: u64,
    pad: u64,
    finished: bool,
}

impl<R: TarInput> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            pad: 0,
            finished: false,
        }
    }

    /// Returns the inner reader (positioned wherever reading stopped).
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn io_err(&self, e: io::Error) -> TarError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            TarError::Truncated { offset: self.pos }
        } else {
            TarError::Io {
                offset: self.pos,
                source: e,
            }
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), TarError> {
        if n == 0 {
            return Ok(());
        }
        self.inner.skip(n).map_err(|e| self.io_err(e))?;
        self.pos += n;
        Ok(())
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut block[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        self.pos += got as u64;
        match got {
            0 => Ok(None), // EOF without end marker: tolerated, as GNU tar does
            BLOCK => Ok(Some(block)),
            _ => Err(TarError::Truncated { offset: self.pos }),
        }
    }

    fn read_meta(&mut self, len: u64, offset: u64) -> Result<Vec<u8>, TarError> {
        if len > MAX_META_LEN {
            return Err(TarError::MetaTooLarge {
                offset,
                len,
                max: MAX_META_LEN,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.io_err(e))?;
        self.pos += len;
        self.skip(padding(len))?;
        Ok(buf)
    }

    /// Advances to the next file entry (skipping the unread rest of the current one).
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        if self.finished {
            return Ok(None);
        }
        let rest = self.remaining + self.pad;
        self.remaining = 0;
        self.pad = 0;
        self.skip(rest)?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax_size: Option<u64> = None;
        loop {
            let offset = self.pos;
            let Some(block) = self.read_block()? else {
                self.finished = true;
                return Ok(None);
            };
            let Some(h) =
                parse_header(&block).map_err(|source| TarError::Header { offset, source })?
            else {
                self.finished = true;
                return Ok(None);
            };
            match h.kind {
                EntryKind::GnuLongName => {
                    let mut v = self.read_meta(h.size, offset)?;
                    v.retain(|&b| b != 0);
                    long_name = Some(v);
                }
                EntryKind::GnuLongLink => {
                    let mut v = self.read_meta(h.size, offset)?;
                    v.retain(|&b| b != 0);
                    long_link = Some(v);
                }
                EntryKind::PaxLocal => {
                    let data = self.read_meta(h.size, offset)?;
                    let rec =
                        parse_pax(&data).map_err(|source| TarError::Header { offset, source })?;
                    if rec.path.is_some() {
                        long_name = rec.path;
                    }
                    if rec.link_path.is_some() {
                        long_link = rec.link_path;
                    }
                    if rec.size.is_some() {
                        pax_size = rec.size;
                    }
                }
                EntryKind::PaxGlobal => {
                    self.read_meta(h.size, offset)?;
                }
                kind => {
                    let name = long_name.take().unwrap_or(h.name);
                    let path = SafePath::parse(&name)
                        .map_err(|source| TarError::Path { offset, source })?;
                    let size = match kind {
                        // Link and directory sizes carry no data (GNU tar may record one).
                        EntryKind::HardLink | EntryKind::Symlink | EntryKind::Directory => 0,
                        _ => pax_size.take().unwrap_or(h.size),
                    };
                    let link_target = match kind {
                        EntryKind::HardLink | EntryKind::Symlink => {
                            let t = long_link.take().unwrap_or(h.link_name);
                            if !path.link_target_stays_inside(&t, kind == EntryKind::HardLink) {
                                return Err(TarError::LinkEscape {
                                    path: path.to_string(),
                                    target: String::from_utf8_lossy(&t).chars().take(200).collect(),
                                });
                            }
                            Some(t)
                        }
                        _ => None,
                    };
                    self.remaining = size;
                    self.pad = padding(size);
                    return Ok(Some(TarEntry {
                        path,
                        kind,
                        size,
                        mode: h.mode,
                        uid: h.uid,
                        gid: h.gid,
                        link_target,
                        data_offset: self.pos,
                    }));
                }
            }
        }
    }

    /// Reads the current entry's data; returns EOF at the entry's end. A short archive is
    /// an `UnexpectedEof` error, not a silent end.
    pub fn entry_reader(&mut self) -> EntryReader<'_, R> {
        EntryReader { tar: self }
    }
}

/// See [`TarReader::entry_reader`].
pub struct EntryReader<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: TarInput> Read for EntryReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.tar.remaining).unwrap_or(usize::MAX));
        let n = self.tar.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("tar entry truncated at archive offset {}", self.tar.pos),
            ));
        }
        self.tar.remaining -= n as u64;
        self.tar.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::header::{build_header, NewHeader};
    use super::*;

    fn entry(name: &str, kind: EntryKind, data: &[u8]) -> Vec<u8> {
        let h = NewHeader {
            name,
            kind,
            size: data.len() as u64,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut v = build_header(&h).unwrap().to_vec();
        v.extend_from_slice(data);
        v.resize(v.len() + padding(data.len() as u64) as usize, 0);
        v
    }

    #[test]
    fn reads_entries_and_data() {
        let mut tar = entry("disk/", EntryKind::Directory, b"");
        tar.extend(entry("disk/disk.img", EntryKind::Regular, b"hello world"));
        tar.extend(entry("other", EntryKind::Regular, &[7u8; 600]));
        tar.extend([0u8; 1024]);
        let mut r = TarReader::new(&tar[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.kind, EntryKind::Directory);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path.to_string(), "disk/disk.img");
        let mut s = String::new();
        r.entry_reader().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.size, 600);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn refuses_escapes_and_truncation() {
        let tar = entry("../evil", EntryKind::Regular, b"x");
        assert!(matches!(
            TarReader::new(&tar[..]).next_entry(),
            Err(TarError::Path { .. })
        ));
        let mut link = build_header(&NewHeader {
            name: "disk/disk.img",
            kind: EntryKind::Symlink,
            size: 0,
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: 0,
        })
        .unwrap();
        link[157..168].copy_from_slice(b"/etc/passwd");
        // Fix the checksum after editing the link name.
        link[148..156].copy_from_slice(b"        ");
        let sum: u64 = link.iter().map(|&x| u64::from(x)).sum();
        link[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        assert!(matches!(
            TarReader::new(&link[..]).next_entry(),
            Err(TarError::LinkEscape { .. })
        ));
        let tar = entry("disk/disk.img", EntryKind::Regular, &[1u8; 2000]);
        let cut = &tar[..1000];
        let mut r = TarReader::new(cut);
        r.next_entry().unwrap().unwrap();
        let mut sink = Vec::new();
        assert!(r.entry_reader().read_to_end(&mut sink).is_err());
    }
}
