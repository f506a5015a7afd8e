//! [`Qcow2Image`]: reads a qcow2 image (v2/v3, any cluster size from 512 B to 2 MiB,
//! zero clusters, zlib/zstd compressed clusters, extended L2 subclusters) as a
//! [`DiskImage`].
//!
//! The header is validated at open and the active L1 table loaded; L2 tables are read on
//! demand into a small LRU cache, and the last decompressed cluster is kept for
//! sequential reads. Each lookup goes through [`Geometry`] (pure decoding into
//! [`ClusterMap`]) before any data IO. A backing file is refused unless the caller opens
//! it and passes it in; this module never opens anything by name.

use super::compress::{self, DecompressError};
use super::header::{CompressionType, Header, HeaderExtensions, HEADER_READ_LEN};
use super::l2::{ClusterMap, Geometry, Piece};
use super::{FORMAT, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};
use crate::blockmap::{check_map_range, check_range};
use crate::{DiskImage, Extent, ExtentKind, Format, FormatError, ReadAt};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

/// Memory budget of the L2 table cache.
const L2_CACHE_BYTES: u64 = 8 << 20;
/// L2 tables a single `map` call may visit (bounds the work of one extent query).
const MAP_MAX_TABLES: usize = 32;

type Table = Arc<[u64]>;

/// A tiny LRU of decoded L2 tables, keyed by host offset.
struct L2Cache {
    capacity: usize,
    /// Most recently used last.
    entries: Vec<(u64, Table)>,
}

impl L2Cache {
    fn get(&mut self, offset: u64) -> Option<Table> {
        let pos = self.entries.iter().position(|(o, _)| *o == offset)?;
        let entry = self.entries.remove(pos);
        let table = entry.1.clone();
        self.entries.push(entry);
        Some(table)
    }

    fn insert(&mut self, offset: u64, table: Table) {
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((offset, table));
    }
}

/// A qcow2 image opened for reading.
pub struct Qcow2Image<R> {
    src: R,
    header: Header,
    ext: HeaderExtensions,
    geom: Geometry,
    compression: CompressionType,
    /// Active L1 entries covering the virtual size (raw, decoded on use).
    l1: Vec<u64>,
    l2_cache: Mutex<L2Cache>,
    /// Last decompressed cluster: (host offset of its compressed data, bytes).
    last_inflated: Mutex<Option<(u64, Arc<[u8]>)>>,
    backing: Option<Box<dyn DiskImage>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a cache lock cannot leave the cache inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads and validates the header and its extensions, without following anything.
pub fn read_header<R: ReadAt + ?Sized>(src: &R) -> Result<(Header, HeaderExtensions), FormatError> {
    let file_len = src
        .len()
        .map_err(|e| FormatError::io("reading qcow2 image length", e))?;
    let head = read_vec(src, 0, file_len.min(HEADER_READ_LEN as u64), "header")?;
    let header = Header::parse(&head)?;
    let cluster0_len = 1u64
        << header
            .cluster_bits
            .clamp(MIN_CLUSTER_BITS, MAX_CLUSTER_BITS);
    let cluster0 = read_vec(src, 0, file_len.min(cluster0_len), "header cluster")?;
    match HeaderExtensions::parse(&header, &cluster0) {
        Ok(ext) => {
            header.validate(file_len, &ext)?;
            Ok((header, ext))
        }
        Err(e) => {
            // Prefer the header's own complaint (encryption, features...) if it has one.
            header.validate(file_len, &HeaderExtensions::default())?;
            Err(e)
        }
    }
}

fn read_vec<R: ReadAt + ?Sized>(
    src: &R,
    offset: u64,
    len: u64,
    what: &str,
) -> Result<Vec<u8>, FormatError> {
    // Callers bound `len` (a cluster, the L1 table); this is the last line of defence.
    let len = usize::try_from(len).map_err(|_| FormatError::TooLarge {
        format: FORMAT,
        what: what.to_string(),
        value: len,
        limit: usize::MAX as u64,
    })?;
    let mut buf = vec![0u8; len];
    src.read_exact_at(&mut buf, offset)
        .map_err(|e| FormatError::io(format!("reading qcow2 {what} at {offset:#x}"), e))?;
    Ok(buf)
}

fn be_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_be_bytes(a)
        })
        .collect()
}

impl<R: ReadAt> Qcow2Image<R> {
    /// Opens an image; fails with [`FormatError::BackingFile`] if it has a backing file.
    pub fn open(src: R) -> Result<Self, FormatError> {
        Self::open_inner(src, None)
    }

    /// Opens an image whose unallocated clusters read from `backing` (opened by the
    /// caller from the name in [`read_header`]'s extensions). An image without a backing
    /// file ignores `backing`.
    pub fn open_with_backing(src: R, backing: Box<dyn DiskImage>) -> Result<Self, FormatError> {
        Self::open_inner(src, Some(backing))
    }

    fn open_inner(src: R, backing: Option<Box<dyn DiskImage>>) -> Result<Self, FormatError> {
        let (header, ext) = read_header(&src)?;
        let backing = match (header.has_backing_file(), backing) {
            (false, _) => None,
            (true, Some(b)) => Some(b),
            (true, None) => {
                return Err(FormatError::BackingFile {
                    path: ext.backing_file.clone().unwrap_or_default(),
                })
            }
        };
        let file_len = src
            .len()
            .map_err(|e| FormatError::io("reading qcow2 image length", e))?;
        let geom = Geometry {
            cluster_bits: header.cluster_bits,
            extended_l2: header.extended_l2(),
            virtual_size: header.size,
            file_len,
        };
        // Only the entries covering the virtual size matter (the rest hold VM state).
        let l1_len = header.l1_entries_needed() * 8;
        let l1 = be_words(&read_vec(&src, header.l1_table_offset, l1_len, "L1 table")?);
        let capacity = (L2_CACHE_BYTES / geom.cluster_size()).max(2) as usize;
        Ok(Qcow2Image {
            compression: header.compression()?,
            src,
            header,
            ext,
            geom,
            l1,
            l2_cache: Mutex::new(L2Cache {
                capacity,
                entries: Vec::new(),
            }),
            last_inflated: Mutex::new(None),
            backing,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn extensions(&self) -> &HeaderExtensions {
        &self.ext
    }

    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    pub fn into_inner(self) -> R {
        self.src
    }

    /// Where guest cluster `cluster` lives.
    pub fn cluster_map(&self, cluster: u64) -> Result<ClusterMap, FormatError> {
        let guest = cluster
            .checked_mul(self.geom.cluster_size())
            .filter(|&g| g < self.geom.virtual_size)
            .ok_or(FormatError::OutOfRange {
                offset: cluster,
                len: 1,
                virtual_size: self.geom.virtual_size,
            })?;
        let (l1_index, l2_index, _) = self.geom.split(guest);
        match self.l2_table(l1_index)? {
            None => Ok(ClusterMap::Unallocated),
            Some(t) => self.decode(&t, l2_index, cluster),
        }
    }

    /// The L2 table for an L1 index, from the cache or the image (None: unallocated).
    fn l2_table(&self, l1_index: u64) -> Result<Option<Table>, FormatError> {
        let raw = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i))
            .copied()
            .unwrap_or(0);
        let Some(offset) = self.geom.decode_l1(raw, l1_index)? else {
            return Ok(None);
        };
        if let Some(t) = lock(&self.l2_cache).get(offset) {
            return Ok(Some(t));
        }
        let bytes = read_vec(&self.src, offset, self.geom.cluster_size(), "L2 table")?;
        let table: Table = be_words(&bytes).into();
        lock(&self.l2_cache).insert(offset, table.clone());
        Ok(Some(table))
    }

    fn decode(
        &self,
        table: &[u64],
        l2_index: usize,
        cluster: u64,
    ) -> Result<ClusterMap, FormatError> {
        let words = self.geom.l2_entry_len() / 8;
        let at = l2_index * words;
        let entry = table.get(at).copied().unwrap_or(0);
        let bitmap = if words == 2 {
            table.get(at + 1).copied().unwrap_or(0)
        } else {
            0
        };
        self.geom.decode_l2(entry, bitmap, cluster)
    }

    /// Calls `f(guest_offset, len, piece)` for consecutive pieces covering
    /// `offset..offset+len`, loading at most `max_tables` L2 tables (unallocated L1
    /// entries cost no IO and do not count).
    fn walk(
        &self,
        offset: u64,
        len: u64,
        max_tables: usize,
        mut f: impl FnMut(u64, u64, Piece) -> Result<ControlFlow<()>, FormatError>,
    ) -> Result<(), FormatError> {
        let end = offset + len;
        let mut pos = offset;
        let mut loaded = 0;
        while pos < end && loaded < max_tables {
            let (l1_index, _, _) = self.geom.split(pos);
            let span_end = end.min((l1_index + 1).saturating_mul(self.geom.l2_span()));
            let Some(table) = self.l2_table(l1_index)? else {
                if f(pos, span_end - pos, Piece::Unallocated)?.is_break() {
                    return Ok(());
                }
                pos = span_end;
                continue;
            };
            loaded += 1;
            while pos < span_end {
                let (_, l2_index, in_cluster) = self.geom.split(pos);
                let cluster = pos >> self.geom.cluster_bits;
                let map = self.decode(&table, l2_index, cluster)?;
                let (piece, run) = map.piece_at(in_cluster, &self.geom);
                let run = run.min(span_end - pos);
                if f(pos, run, piece)?.is_break() {
                    return Ok(());
                }
                pos += run;
            }
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes of a data cluster at `host`; bytes past the end of the
    /// file read as zeros (QEMU may leave the tail of the last cluster unwritten).
    fn read_data(&self, buf: &mut [u8], host: u64) -> Result<(), FormatError> {
        let avail = self
            .geom
            .file_len
            .saturating_sub(host)
            .min(buf.len() as u64) as usize;
        let (present, missing) = buf.split_at_mut(avail);
        missing.fill(0);
        if present.is_empty() {
            return Ok(());
        }
        self.src
            .read_exact_at(present, host)
            .map_err(|e| FormatError::io(format!("reading qcow2 data at {host:#x}"), e))
    }

    /// The decompressed contents of the compressed cluster stored at `host`.
    fn inflated(&self, host: u64, len: u64, cluster: u64) -> Result<Arc<[u8]>, FormatError> {
        if let Some((h, data)) = lock(&self.last_inflated).as_ref() {
            if *h == host {
                return Ok(data.clone());
            }
        }
        // `len` is at most two clusters (the sector-count field's range) and inside the file.
        let input = read_vec(&self.src, host, len, "compressed cluster")?;
        let mut out = vec![0u8; self.geom.cluster_size() as usize];
        compress::decompress(self.compression, &input, &mut out).map_err(
            |e: DecompressError| {
                FormatError::corrupt(
                    FORMAT,
                    format!("compressed guest cluster {cluster} at host offset {host:#x}: {e}"),
                )
            },
        )?;
        let data: Arc<[u8]> = out.into();
        *lock(&self.last_inflated) = Some((host, data.clone()));
        Ok(data)
    }

    fn read_piece(&self, buf: &mut [u8], pos: u64, piece: Piece) -> Result<(), FormatError> {
        match piece {
            Piece::Zero => buf.fill(0),
            Piece::Unallocated => self.read_backing(buf, pos)?,
            Piece::Data { host } => self.read_data(buf, host)?,
            Piece::Compressed { host, len } => {
                let cluster = pos >> self.geom.cluster_bits;
                let data = self.inflated(host, len, cluster)?;
                let start = (pos & (self.geom.cluster_size() - 1)) as usize;
                let src = data.get(start..start + buf.len()).ok_or_else(|| {
                    FormatError::corrupt(FORMAT, format!("read past compressed cluster {cluster}"))
                })?;
                buf.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn read_backing(&self, buf: &mut [u8], pos: u64) -> Result<(), FormatError> {
        let Some(backing) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
        // A backing image smaller than this one reads as zeros past its end.
        let avail = backing
            .virtual_size()
            .saturating_sub(pos)
            .min(buf.len() as u64) as usize;
        let (present, missing) = buf.split_at_mut(avail);
        missing.fill(0);
        if !present.is_empty() {
            backing.read_at(present, pos)?;
        }
        Ok(())
    }

    fn kind_of(piece: Piece) -> Option<ExtentKind> {
        match piece {
            Piece::Data { .. } | Piece::Compressed { .. } => Some(ExtentKind::Data),
            Piece::Zero => Some(ExtentKind::Zero),
            Piece::Unallocated => None,
        }
    }

    fn map_backing(&self, pos: u64, len: u64) -> Result<Extent, FormatError> {
        match &self.backing {
            Some(b) if pos < b.virtual_size() => b.map(pos, len.min(b.virtual_size() - pos)),
            _ => Ok(Extent {
                len,
                kind: ExtentKind::Zero,
            }),
        }
    }
}

impl<R: ReadAt> DiskImage for Qcow2Image<R> {
    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn virtual_size(&self) -> u64 {
        self.geom.virtual_size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        let size = self.geom.virtual_size;
        check_map_range(offset, max_len, size)?;
        let len = max_len.min(size - offset);
        let mut found: Option<(ExtentKind, u64)> = None;
        let mut backed: Option<Extent> = None;
        self.walk(offset, len, MAP_MAX_TABLES, |pos, run, piece| {
            let kind = match Self::kind_of(piece) {
                Some(k) => k,
                None if self.backing.is_none() => ExtentKind::Zero,
                None if found.is_none() => {
                    // The backing image decides; ask it about this run only.
                    backed = Some(self.map_backing(pos, run)?);
                    return Ok(ControlFlow::Break(()));
                }
                None => return Ok(ControlFlow::Break(())),
            };
            match &mut found {
                None => found = Some((kind, run)),
                Some((k, total)) if *k == kind => *total += run,
                Some(_) => return Ok(ControlFlow::Break(())),
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if let Some(e) = backed {
            return Ok(e);
        }
        let (kind, len) = found.ok_or_else(|| {
            FormatError::corrupt(FORMAT, format!("no mapping found at guest offset {offset}"))
        })?;
        Ok(Extent { len, kind })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), FormatError> {
        check_range(offset, buf.len() as u64, self.geom.virtual_size)?;
        // Data pieces that are contiguous in the file too are read with one call:
        // (start in buf, host offset, length) of the run not yet read.
        let mut pending: Option<(usize, u64, usize)> = None;
        let mut done = 0usize;
        self.walk(offset, buf.len() as u64, usize::MAX, |pos, run, piece| {
            let run = run as usize;
            if let Piece::Data { host } = piece {
                match &mut pending {
                    Some((_, h, n)) if *h + *n as u64 == host => *n += run,
                    _ => {
                        if let Some((at, h, n)) = pending.take() {
                            self.read_data(&mut buf[at..at + n], h)?;
                        }
                        pending = Some((done, host, run));
                    }
                }
            } else {
                if let Some((at, h, n)) = pending.take() {
                    self.read_data(&mut buf[at..at + n], h)?;
                }
                self.read_piece(&mut buf[done..done + run], pos, piece)?;
            }
            done += run;
            Ok(ControlFlow::Continue(()))
        })?;
        if let Some((at, h, n)) = pending {
            self.read_data(&mut buf[at..at + n], h)?;
        }
        Ok(())
    }
}
