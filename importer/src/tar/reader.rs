//! A forward-only tar reader over any byte stream, applying GNU long names and pax records,
//! refusing entries that would leave the tree (`..`, absolute paths, escaping links).
//! The archive root (`./` from `tar -C dir .`, `.` from umoci) is a directory entry like
//! any other for the tools that write it, and carries nothing: it is passed over. Pax
//! global headers are ignored, as containerd does.
//!
//! It never buffers entry data: the caller reads an entry's bytes through
//! [`TarReader::entry_reader`] or they are skipped. Long-name/pax payloads are bounded by
//! [`MAX_META_LEN`].

use super::header::{
    padding, parse_header, parse_number, parse_pax, EntryKind, HeaderError, PathError, PaxRecords,
    RawHeader, SafePath, BLOCK, MAX_META_LEN, SPARSE_EXT_FLAG,
};
use super::sparse::{old_gnu_entries, pax1_map, Piece, SparseMap};
use std::io::{self, Read};
use std::sync::Arc;

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
    /// Modification time in seconds since the epoch (pax `mtime` when given).
    pub mtime: i64,
    /// Bytes the entry's data takes in the archive from `data_offset`: `size`, except
    /// for a sparse file, whose holes are not stored.
    pub stored_size: u64,
    /// A sparse file's map (GNU `tar -S`): [`TarReader::entry_reader`] expands it.
    pub sparse: Option<Arc<SparseMap>>,
    pub link_target: Option<Vec<u8>>,
    /// Offset of the entry's first data byte from the start of the archive.
    pub data_offset: u64,
}

impl TarEntry {
    /// Checks that the entry's data ends within an archive of `len` bytes (a seekable
    /// archive is read by offset, so the walk alone does not prove it).
    pub fn check_within(&self, len: u64) -> Result<(), TarError> {
        match self.data_offset.checked_add(self.stored_size) {
            Some(end) if end <= len => Ok(()),
            _ => Err(TarError::Truncated { offset: len }),
        }
    }
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
    #[error("tar entry {path} is a GNU sparse file in pax format 0.x, which platter does not expand; make the archive with GNU tar's default --sparse format (1.0) or without --sparse")]
    Sparse { path: String },
    #[error("tar archive truncated at offset {offset}")]
    Truncated { offset: u64 },
    #[error("reading tar archive at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

/// GNU long names and pax records read so far for the next file header.
#[derive(Default)]
struct Pending {
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
    sparse: bool,
    sparse_version: (Option<u64>, Option<u64>),
    sparse_real_size: Option<u64>,
}

impl Pending {
    fn add_pax(&mut self, rec: PaxRecords) {
        // A sparse file's real name is in GNU.sparse.name; `path` is a made-up one.
        if let Some(n) = rec.sparse_name.or(rec.path) {
            self.name = Some(n);
        }
        self.link = rec.link_path.or(self.link.take());
        self.size = rec.size.or(self.size);
        self.uid = rec.uid.or(self.uid);
        self.gid = rec.gid.or(self.gid);
        self.mtime = rec.mtime.or(self.mtime);
        self.sparse |= rec.sparse;
        self.sparse_version = (
            rec.sparse_version.0.or(self.sparse_version.0),
            rec.sparse_version.1.or(self.sparse_version.1),
        );
        self.sparse_real_size = rec.sparse_real_size.or(self.sparse_real_size);
    }
}

/// A GNU long name's payload up to its terminating NUL (as Go reads it).
fn until_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(end) = v.iter().position(|&b| b == 0) {
        v.truncate(end);
    }
    v
}

/// How an entry kind is named in errors.
pub(crate) fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Regular => "regular file",
        EntryKind::HardLink => "hard link",
        EntryKind::Symlink => "symbolic link",
        EntryKind::Directory => "directory",
        EntryKind::Special => "device or FIFO",
        EntryKind::Sparse => "GNU sparse file",
        _ => "special tar entry",
    }
}

/// What [`TarReader::sparse_entry`] decides: kind, size, stored size, map.
type SparseEntry = (EntryKind, u64, u64, Option<Arc<SparseMap>>);

/// Forward-only reader; see the module doc.
pub struct TarReader<R> {
    inner: R,
    /// Archive offset of the next byte `inner` yields.
    pos: u64,
    /// Unread data bytes of the current entry, then its padding.
    remaining: u64,
    pad: u64,
    /// The current entry's sparse map, the file offset reached in it and a fragment hint.
    sparse: Option<(Arc<SparseMap>, u64, usize)>,
    finished: bool,
}

impl<R: TarInput> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            pad: 0,
            sparse: None,
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
        self.sparse = None;
        self.skip(rest)?;
        let mut pending = Pending::default();
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
                    pending.name = Some(until_nul(self.read_meta(h.size, offset)?));
                }
                EntryKind::GnuLongLink => {
                    pending.link = Some(until_nul(self.read_meta(h.size, offset)?));
                }
                EntryKind::PaxLocal => {
                    let data = self.read_meta(h.size, offset)?;
                    let rec =
                        parse_pax(&data).map_err(|source| TarError::Header { offset, source })?;
                    pending.add_pax(rec);
                }
                EntryKind::PaxGlobal => {
                    self.read_meta(h.size, offset)?;
                }
                _ => {
                    let mut h = h;
                    if h.sparse_extended {
                        self.read_sparse_extensions(&mut h.sparse_runs, offset)?;
                    }
                    let p = std::mem::take(&mut pending);
                    if let Some(entry) = self.make_entry(h, p, offset)? {
                        return Ok(Some(entry));
                    }
                }
            }
        }
    }

    /// Reads the extension blocks of an old GNU sparse map (bounded like metadata).
    fn read_sparse_extensions(
        &mut self,
        runs: &mut Vec<(u64, u64)>,
        offset: u64,
    ) -> Result<(), TarError> {
        let header = |source| TarError::Header { offset, source };
        for _ in 0..MAX_META_LEN / BLOCK as u64 {
            let Some(block) = self.read_block()? else {
                return Err(TarError::Truncated { offset: self.pos });
            };
            old_gnu_entries(&block[..SPARSE_EXT_FLAG], 21, parse_number, runs).map_err(header)?;
            if block[SPARSE_EXT_FLAG] == 0 {
                return Ok(());
            }
        }
        Err(TarError::MetaTooLarge {
            offset,
            len: MAX_META_LEN + 1,
            max: MAX_META_LEN,
        })
    }

    /// Reads the map a pax 1.0 sparse member stores ahead of its data (at most
    /// `stored` bytes, bounded like metadata); returns the runs and the bytes it took.
    fn read_pax1_map(
        &mut self,
        stored: u64,
        offset: u64,
    ) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let bad = |what| TarError::Header {
            offset,
            source: HeaderError::Sparse(what),
        };
        let mut buf = Vec::new();
        while (buf.len() as u64) < stored.min(MAX_META_LEN) {
            let Some(block) = self.read_block()? else {
                return Err(TarError::Truncated { offset: self.pos });
            };
            buf.extend_from_slice(&block);
            if let Some(map) = pax1_map(&buf).map_err(bad)? {
                return Ok(map);
            }
        }
        Err(bad("the pax sparse map does not end inside the member"))
    }

    /// For a sparse file: its kind, real size, stored size and map (`Regular` with a map
    /// for old GNU and pax 1.0, which are expanded; `Sparse` without one for pax 0.x,
    /// which is not).
    fn sparse_entry(
        &mut self,
        h: &RawHeader,
        p: &Pending,
        stored: u64,
        offset: u64,
    ) -> Result<SparseEntry, TarError> {
        let bad = |what| TarError::Header {
            offset,
            source: HeaderError::Sparse(what),
        };
        let (runs, real, data) = if h.kind == EntryKind::Sparse {
            (h.sparse_runs.clone(), h.real_size, stored)
        } else if p.sparse_version == (Some(1), Some(0)) {
            let real = p
                .sparse_real_size
                .ok_or_else(|| bad("pax sparse 1.0 member without GNU.sparse.realsize"))?;
            let (runs, used) = self.read_pax1_map(stored, offset)?;
            let data = stored
                .checked_sub(used)
                .ok_or_else(|| bad("the pax sparse map is larger than the member"))?;
            (runs, real, data)
        } else {
            return Ok((EntryKind::Sparse, stored, stored, None));
        };
        let map = SparseMap::new(&runs, real, data).map_err(bad)?;
        Ok((EntryKind::Regular, real, data, Some(Arc::new(map))))
    }

    /// The entry a file header describes with the metadata before it applied; `None` for
    /// the archive root.
    fn make_entry(
        &mut self,
        mut h: RawHeader,
        mut p: Pending,
        offset: u64,
    ) -> Result<Option<TarEntry>, TarError> {
        let path_err = |source| TarError::Path { offset, source };
        let kind = match h.kind {
            EntryKind::Regular if p.sparse => EntryKind::Sparse,
            k => k,
        };
        let name = p.name.take().unwrap_or_else(|| std::mem::take(&mut h.name));
        let Some(path) = SafePath::parse_entry(&name).map_err(path_err)? else {
            if kind == EntryKind::Directory {
                return Ok(None);
            }
            let root = String::from_utf8_lossy(&name).chars().take(200).collect();
            return Err(path_err(PathError::RootNotDirectory(root, kind_name(kind))));
        };
        // Header-only kinds carry no data whatever their size field says (GNU tar may
        // record one), as in Go's archive/tar: the next header follows at once.
        let (kind, size, stored_size, sparse) = match kind {
            EntryKind::HardLink
            | EntryKind::Symlink
            | EntryKind::Directory
            | EntryKind::Special => (kind, 0, 0, None),
            EntryKind::Sparse => self.sparse_entry(&h, &p, p.size.unwrap_or(h.size), offset)?,
            _ => {
                let size = p.size.unwrap_or(h.size);
                (kind, size, size, None)
            }
        };
        let link_target = match kind {
            EntryKind::HardLink | EntryKind::Symlink => {
                let t = p.link.unwrap_or(h.link_name);
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
        self.remaining = stored_size;
        self.pad = padding(stored_size);
        self.sparse = sparse.clone().map(|m| (m, 0, 0));
        Ok(Some(TarEntry {
            path,
            kind,
            size,
            mode: h.mode,
            uid: p.uid.unwrap_or(h.uid),
            gid: p.gid.unwrap_or(h.gid),
            mtime: p
                .mtime
                .unwrap_or(i64::try_from(h.mtime).unwrap_or(i64::MAX)),
            stored_size,
            sparse,
            link_target,
            data_offset: self.pos,
        }))
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
        let Some((map, pos, hint)) = &mut self.tar.sparse else {
            return self.tar.read_stored(buf);
        };
        let at = *pos;
        let Some(piece) = map.locate(at, hint) else {
            return Ok(0);
        };
        let n = match piece {
            Piece::Hole { len } => {
                let n = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                n
            }
            // Data pieces come in stored order, so their bytes are the next stored ones.
            Piece::Data { len, .. } => {
                let n = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
                let got = self.tar.read_stored(&mut buf[..n])?;
                if got == 0 && n > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("sparse tar entry ends before its data at file offset {at}"),
                    ));
                }
                got
            }
        };
        if let Some((_, pos, _)) = &mut self.tar.sparse {
            *pos += n as u64;
        }
        Ok(n)
    }
}

impl<R: TarInput> TarReader<R> {
    /// Reads the current entry's stored bytes; EOF at their end.
    fn read_stored(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("tar entry truncated at archive offset {}", self.pos),
            ));
        }
        self.remaining -= n as u64;
        self.pos += n as u64;
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

    /// Every entry of an archive: (path, kind, data).
    fn walk(tar: &[u8]) -> Result<Vec<(String, EntryKind, Vec<u8>)>, TarError> {
        let mut r = TarReader::new(tar);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut data = Vec::new();
            r.entry_reader()
                .read_to_end(&mut data)
                .map_err(|e| TarError::Io {
                    offset: 0,
                    source: e,
                })?;
            out.push((e.path.to_string(), e.kind, data));
        }
        Ok(out)
    }

    fn names(tar: &[u8]) -> Vec<String> {
        walk(tar).unwrap().into_iter().map(|(n, _, _)| n).collect()
    }

    use super::super::testing::{self as t, Magic};

    #[test]
    fn the_root_is_passed_over_in_every_spelling() {
        // `tar -C dir .` (GNU), umoci repack, and odd but harmless spellings.
        for (root, magic) in [
            (&b"./"[..], Magic::Gnu),
            (b".", Magic::Ustar),
            (b".//.", Magic::Ustar),
            (b"./.", Magic::V7),
        ] {
            let mut tar = t::member(root, b'5', b"", magic);
            tar.extend(t::member(b"./disk/", b'5', b"", magic));
            tar.extend(t::member(b"./disk/disk.img", b'0', b"DISK", magic));
            tar.extend(t::end());
            let all = walk(&tar).unwrap();
            assert_eq!(
                all,
                vec![
                    ("disk".into(), EntryKind::Directory, vec![]),
                    ("disk/disk.img".into(), EntryKind::Regular, b"DISK".to_vec()),
                ],
                "root {root:?}"
            );
        }
        // A pax path naming the root is the root too.
        let mut tar = t::pax(b'x', &[("path", b"./")]);
        tar.extend(t::member(b"ignored", b'5', b"", Magic::Ustar));
        tar.extend(t::member(b"disk/disk.img", b'0', b"x", Magic::Ustar));
        assert_eq!(names(&tar), ["disk/disk.img"]);
    }

    #[test]
    fn the_root_as_anything_but_a_directory_is_refused() {
        for (root, flag) in [(&b"./"[..], b'0'), (b".", b'2'), (b"./", b'1')] {
            let tar = t::member(root, flag, b"", Magic::Ustar);
            let e = walk(&tar).unwrap_err();
            assert!(
                matches!(
                    e,
                    TarError::Path {
                        source: PathError::RootNotDirectory(..),
                        ..
                    }
                ),
                "{root:?} {flag}: {e}"
            );
        }
        // An empty name is not a spelling of the root.
        let e = walk(&t::member(b"", b'5', b"", Magic::Ustar)).unwrap_err();
        assert!(
            matches!(
                e,
                TarError::Path {
                    source: PathError::Empty,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn members_without_directory_entries() {
        // `tar -cf x.tar disk/disk.img`: no `disk/` entry before the file.
        let mut tar = t::member(b"disk/disk.img", b'0', b"abc", Magic::Gnu);
        tar.extend(t::end());
        let all = walk(&tar).unwrap();
        assert_eq!(
            all,
            [("disk/disk.img".into(), EntryKind::Regular, b"abc".to_vec())]
        );
        let p = SafePath::parse(b"disk/disk.img").unwrap();
        assert_eq!(
            super::super::classify_layer_entry(&p),
            super::super::LayerEntry::DiskChild("disk.img".into())
        );
    }

    #[test]
    fn ustar_prefix_names() {
        let long_dir = "d".repeat(120);
        let mut h = t::header(b"disk.img", b'0', 2, Magic::Ustar);
        h[345..345 + long_dir.len()].copy_from_slice(long_dir.as_bytes());
        t::fix_checksum(&mut h);
        let mut tar = h.to_vec();
        t::push_data(&mut tar, b"hi");
        assert_eq!(names(&tar), [format!("{long_dir}/disk.img")]);
    }

    #[test]
    fn pax_local_records_apply_to_the_next_entry_only() {
        let long = format!("disk/{}.qcow2", "n".repeat(150));
        let mut tar = t::pax(
            b'x',
            &[
                ("path", long.as_bytes()),
                ("size", b"5"),
                ("mtime", b"1765056555.123456789"),
                ("atime", b"1765056555.5"),
                ("uid", b"4000000000"),
                ("gid", b"107"),
                ("comment", b"a value with = and\nnewline"),
            ],
        );
        // The header's own size field is stale: pax `size` wins.
        tar.extend(t::header(b"short-name", b'0', 0, Magic::Ustar));
        t::push_data(&mut tar, b"12345");
        tar.extend(t::member(b"next", b'0', b"n", Magic::Ustar));
        tar.extend(t::end());
        let mut r = TarReader::new(&tar[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path.to_string(), long);
        assert_eq!(
            (e.size, e.uid, e.gid, e.mtime),
            (5, 4_000_000_000, 107, 1765056555)
        );
        let mut d = Vec::new();
        r.entry_reader().read_to_end(&mut d).unwrap();
        assert_eq!(d, b"12345");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.path.to_string(), e.size, e.uid), ("next".into(), 1, 107));
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn pax_global_headers_are_ignored() {
        // As `git archive` writes one, and a hostile one that tries to rename everything.
        let mut tar = t::pax(b'g', &[("comment", b"0123abcd")]);
        tar.extend(t::pax(b'g', &[("path", b"../../evil"), ("size", b"999")]));
        tar.extend(t::member(b"./disk/disk.img", b'0', b"ok", Magic::Ustar));
        tar.extend(t::end());
        let all = walk(&tar).unwrap();
        assert_eq!(
            all,
            [("disk/disk.img".into(), EntryKind::Regular, b"ok".to_vec())]
        );
    }

    #[test]
    fn gnu_long_names_and_links() {
        let long = format!("./disk/{}.img", "l".repeat(200));
        let mut tar = t::gnu_long(b'L', long.as_bytes());
        tar.extend(t::member(&long.as_bytes()[..100], b'0', b"L", Magic::Gnu));
        let target = format!("{}.img", "t".repeat(150));
        tar.extend(t::gnu_long(b'K', target.as_bytes()));
        tar.extend(t::member(b"disk/link", b'2', b"", Magic::Gnu));
        tar.extend(t::end());
        let mut r = TarReader::new(&tar[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path.to_string(), long.trim_start_matches("./"));
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.kind, EntryKind::Symlink);
        assert_eq!(e.link_target.as_deref(), Some(target.as_bytes()));
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn escapes_through_long_names_and_pax_are_refused() {
        let cases: Vec<Vec<u8>> = vec![
            [
                t::gnu_long(b'L', b"../evil"),
                t::member(b"ok", b'0', b"", Magic::Gnu),
            ]
            .concat(),
            [
                t::pax(b'x', &[("path", b"/etc/passwd")]),
                t::member(b"ok", b'0', b"", Magic::Ustar),
            ]
            .concat(),
            [
                t::pax(b'x', &[("path", b"./disk/../../x")]),
                t::member(b"ok", b'0', b"", Magic::Ustar),
            ]
            .concat(),
            t::member(b"/", b'5', b"", Magic::Ustar),
            t::member(b"./../disk.img", b'0', b"", Magic::Ustar),
        ];
        for (i, tar) in cases.iter().enumerate() {
            let e = walk(tar).unwrap_err();
            assert!(matches!(e, TarError::Path { .. }), "case {i}: {e}");
        }
        let link = [
            t::pax(b'x', &[("linkpath", b"../../etc/shadow")]),
            t::member(b"disk/disk.img", b'2', b"", Magic::Ustar),
        ]
        .concat();
        assert!(matches!(walk(&link), Err(TarError::LinkEscape { .. })));
        let hard = [
            t::gnu_long(b'K', b"/etc/shadow"),
            t::member(b"disk/disk.img", b'1', b"", Magic::Gnu),
        ]
        .concat();
        assert!(matches!(walk(&hard), Err(TarError::LinkEscape { .. })));
    }

    #[test]
    fn header_only_kinds_carry_no_data() {
        // A char device and a directory whose size fields claim data: Go's archive/tar
        // reads the next header right after them, so must we.
        let mut tar = t::header(b"dev/null", b'3', 1024, Magic::Ustar).to_vec();
        tar.extend(t::header(b"dir/", b'5', 512, Magic::Ustar));
        tar.extend(t::member(b"disk/disk.img", b'0', b"d", Magic::Ustar));
        tar.extend(t::end());
        assert_eq!(names(&tar), ["dev/null", "dir", "disk/disk.img"]);
    }

    #[test]
    fn signed_checksums_are_accepted() {
        let mut h = t::header("disk/\u{e9}.img".as_bytes(), b'0', 0, Magic::Ustar);
        h[148..156].copy_from_slice(b"        ");
        let signed: i64 = h.iter().map(|&x| i64::from(x as i8)).sum();
        h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        assert_eq!(names(&h), ["disk/\u{e9}.img"]);
        h[0] ^= 1;
        assert!(matches!(walk(&h), Err(TarError::Header { .. })));
    }

    /// A file of `size` zeros with `runs` of data from `stored`, as a sparse member reads.
    fn expanded(size: usize, runs: &[(usize, &[u8])]) -> Vec<u8> {
        let mut v = vec![0u8; size];
        for (at, d) in runs {
            v[*at..*at + d.len()].copy_from_slice(d);
        }
        v
    }

    #[test]
    fn old_gnu_sparse_members_are_expanded() {
        // `S` with one run in the header and one in an extension block (GNU tar's
        // default with -S), then a normal member.
        let mut h = t::header(b"disk.img", b'S', 5, Magic::Gnu);
        h[386..398].copy_from_slice(b"00000001000\0"); // offset 512
        h[398..410].copy_from_slice(b"00000000003\0"); // 3 bytes
        h[482] = 1;
        h[483..495].copy_from_slice(b"00000004000\0"); // real size 2048
        t::fix_checksum(&mut h);
        let mut ext = [0u8; BLOCK];
        ext[..12].copy_from_slice(b"00000002734\0"); // offset 1500
        ext[12..24].copy_from_slice(b"00000000002\0");
        ext[24..36].copy_from_slice(b"00000004000\0"); // GNU tar's closing empty run
        ext[36..48].copy_from_slice(b"00000000000\0");
        let mut tar = h.to_vec();
        tar.extend(ext);
        t::push_data(&mut tar, b"abcde");
        tar.extend(t::member(b"after", b'0', b"z", Magic::Gnu));
        tar.extend(t::end());
        let all = walk(&tar).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].0.as_str(), all[0].1),
            ("disk.img", EntryKind::Regular)
        );
        assert_eq!(all[0].2, expanded(2048, &[(512, b"abc"), (1500, b"de")]));
        assert_eq!(all[1].2, b"z");
        let mut r = TarReader::new(&tar[..]);
        let e = super::super::next_disk_member(&mut r, Some(tar.len() as u64))
            .unwrap()
            .unwrap();
        assert_eq!((e.size, e.stored_size, e.data_offset), (2048, 5, 1024));
        // A map that does not add up to the stored bytes is refused.
        let mut bad = tar.clone();
        bad[398..410].copy_from_slice(b"00000000004\0");
        let mut hb = [0u8; BLOCK];
        hb.copy_from_slice(&bad[..BLOCK]);
        t::fix_checksum(&mut hb);
        bad[..BLOCK].copy_from_slice(&hb);
        assert!(matches!(
            walk(&bad),
            Err(TarError::Header {
                source: HeaderError::Sparse(_),
                ..
            })
        ));
    }

    #[test]
    fn pax_sparse_members() {
        // pax 1.0 (GNU tar --format=posix -S): the map leads the data, the real name is
        // in GNU.sparse.name.
        let mut tar = t::pax(
            b'x',
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"disk/disk.img"),
                ("GNU.sparse.realsize", b"1200"),
            ],
        );
        let mut data = b"2\n0\n3\n1000\n2\n".to_vec();
        data.resize(BLOCK, 0);
        data.extend_from_slice(b"xyzuv");
        tar.extend(t::member(
            b"./GNUSparseFile.1/disk.img",
            b'0',
            &data,
            Magic::Ustar,
        ));
        // pax 0.1 (GNU.sparse.map) is not expanded: marked, and refused as the disk.
        tar.extend(t::pax(
            b'x',
            &[("GNU.sparse.map", b"0,1"), ("GNU.sparse.size", b"10")],
        ));
        tar.extend(t::member(b"old.img", b'0', b"q", Magic::Ustar));
        tar.extend(t::end());
        let all = walk(&tar).unwrap();
        assert_eq!(
            (all[0].0.as_str(), all[0].1),
            ("disk/disk.img", EntryKind::Regular)
        );
        assert_eq!(all[0].2, expanded(1200, &[(0, b"xyz"), (1000, b"uv")]));
        assert_eq!(
            (all[1].0.as_str(), all[1].1),
            ("old.img", EntryKind::Sparse)
        );
        let mut r = TarReader::new(&tar[..]);
        assert!(super::super::next_disk_member(&mut r, None)
            .unwrap()
            .is_some());
        assert!(matches!(
            super::super::next_disk_member(&mut r, None),
            Err(TarError::Sparse { .. })
        ));
    }

    #[test]
    fn oversized_metadata_is_refused_before_allocating() {
        let tar = t::header(b"././@LongLink", b'L', 1 << 40, Magic::Gnu);
        assert!(matches!(walk(&tar), Err(TarError::MetaTooLarge { .. })));
        let tar = t::header(b"PaxHeaders/x", b'x', MAX_META_LEN + 1, Magic::Ustar);
        assert!(matches!(walk(&tar), Err(TarError::MetaTooLarge { .. })));
    }

    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        /// One member with fuzzed fields but a valid checksum, so the walk goes deep.
        fn fuzzed_member() -> impl Strategy<Value = Vec<u8>> {
            (
                proptest::collection::vec(any::<u8>(), 0..120),
                prop_oneof![
                    Just(b'0'),
                    Just(b'1'),
                    Just(b'2'),
                    Just(b'5'),
                    Just(b'3'),
                    Just(b'S'),
                    Just(b'L'),
                    Just(b'K'),
                    Just(b'x'),
                    Just(b'g'),
                    any::<u8>()
                ],
                prop_oneof![0u64..2000, any::<u64>().prop_map(|s| s % (1 << 33))],
                proptest::collection::vec(any::<u8>(), 0..1200),
                any::<u8>(),
                // The GNU area (sparse map, real size) as digits or anything.
                prop_oneof![
                    proptest::collection::vec(b'0'..=b'7', 155),
                    proptest::collection::vec(any::<u8>(), 155),
                ],
            )
                .prop_map(|(name, flag, size, data, ext, gnu)| {
                    let mut h = t::header(&name, flag, size, Magic::Gnu);
                    if ext & 2 != 0 {
                        h[345..500].copy_from_slice(&gnu);
                    }
                    h[482] = ext & 1;
                    t::fix_checksum(&mut h);
                    let mut v = h.to_vec();
                    v.extend(data);
                    v
                })
        }

        fn walk_all(bytes: &[u8]) {
            let mut r = TarReader::new(bytes);
            for _ in 0..64 {
                match r.next_entry() {
                    Ok(Some(_)) => {
                        let _ = io::copy(&mut r.entry_reader(), &mut io::sink());
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            let mut r = TarReader::new(bytes);
            let _ = super::super::super::next_disk_member(&mut r, Some(bytes.len() as u64));
        }

        proptest! {
            #[test]
            fn on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
                walk_all(&bytes);
            }

            #[test]
            fn on_fuzzed_members(members in proptest::collection::vec(fuzzed_member(), 1..6)) {
                walk_all(&members.concat());
            }

            #[test]
            fn on_fuzzed_pax_sparse_maps(
                real in prop_oneof![0u64..5000, any::<u64>()],
                map in "[0-9\n]{0,80}",
                data in proptest::collection::vec(any::<u8>(), 0..1500),
            ) {
                let mut tar = t::pax(
                    b'x',
                    &[
                        ("GNU.sparse.major", b"1"),
                        ("GNU.sparse.minor", b"0"),
                        ("GNU.sparse.realsize", real.to_string().as_bytes()),
                    ],
                );
                let mut body = map.into_bytes();
                body.extend(data);
                tar.extend(t::member(b"disk.img", b'0', &body, Magic::Ustar));
                walk_all(&tar);
            }

            #[test]
            fn on_fuzzed_pax(records in proptest::collection::vec(
                ("[a-zA-Z.]{0,20}", proptest::collection::vec(any::<u8>(), 0..80)), 0..5)) {
                let recs: Vec<(&str, &[u8])> =
                    records.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                let mut tar = t::pax(b'x', &recs);
                tar.extend(t::member(b"disk/disk.img", b'0', b"x", Magic::Ustar));
                walk_all(&tar);
            }
        }
    }
}
