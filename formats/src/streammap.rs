//! Planning a one-pass decode of the images whose block tables come before their data when
//! `qemu-img` writes them (dynamic VHD, VDI, VHDX, monolithicSparse VMDK), for an image
//! that arrives as a forward-only stream (inside gzip/xz/zstd, on stdin, in a tar).
//!
//! [`plan`] is given the bytes of the stream read so far (its prefix) and answers with
//! what it needs next ([`Plan::Need`]: the bytes up to a file offset), that the image
//! cannot be decoded in one pass ([`Plan::NotStreamable`]: the caller spools it) or a
//! [`HostMap`]: the sorted, non-overlapping file ranges that hold guest data, each with
//! the guest offset it maps to (contiguous runs merged), and the guest ranges that read
//! as zero. The caller then passes the rest of the stream once, copying mapped ranges out
//! and skipping the rest.
//!
//! The tables are read by the very loaders the random-access readers use, through a
//! [`ReadAt`] over the prefix that notes how far a read reached; the file length, which
//! a stream does not know until it ends, is `UNKNOWN_LEN`, so "past the end of the
//! file" becomes "truncated" when the stream ends too soon. Limits and error texts are
//! the readers'. Two table entries mapping the same file bytes are refused as corrupt: a
//! stream cannot read bytes twice. The run lists are bounded ([`MAX_RUNS`]); past that
//! the image is not streamable.
//!
//! Pure: no IO; the caller reads the stream.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{vdi, vhd, vhdx, vmdk, Format, FormatError, ReadAt};

/// The file length given to the table loaders for a stream: nothing is past its end
/// until it ends, and then the caller reports a truncated stream.
pub(crate) const UNKNOWN_LEN: u64 = u64::MAX;

/// Most data runs (and, separately, zero ranges) a map may hold: 1 Mi runs are 32 MiB of
/// memory, and cover a whole 2 TiB VHD at its usual 2 MiB block size.
pub const MAX_RUNS: usize = 1 << 20;

/// What the planner needs or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The stream's bytes up to this file offset are needed to go on.
    Need(u64),
    /// The image cannot be decoded in one pass, for this reason (a caller spools it and
    /// lets the random-access reader decide).
    NotStreamable(String),
    /// Every table has been read.
    Map(HostMap),
}

/// File bytes that hold guest data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRun {
    /// File offset of the run's first byte: its sector bitmap when `bitmap_len > 0`.
    pub host: u64,
    /// Bytes of VHD sector bitmap in front of the data (0: none). A run with a bitmap is
    /// exactly one block: sector `i` of the data reads as zero unless bit `i` is set.
    pub bitmap_len: u32,
    /// Guest offset of the first data byte.
    pub guest: u64,
    /// Guest bytes.
    pub len: u64,
}

impl HostRun {
    /// File offset of the first data byte.
    pub fn data_host(&self) -> u64 {
        self.host + u64::from(self.bitmap_len)
    }

    /// File offset just past the run.
    pub fn host_end(&self) -> u64 {
        self.data_host() + self.len
    }
}

/// Where a stream's guest data is: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMap {
    pub virtual_size: u64,
    /// Sorted by `host`, non-overlapping.
    pub runs: Vec<HostRun>,
    /// Guest ranges `(offset, len)` that read as zero, sorted and merged.
    pub zeros: Vec<(u64, u64)>,
}

/// Plans the decode of a `format` image from the first bytes of its stream. Errors are
/// the random-access reader's for the same tables; see the module docs.
pub fn plan(format: Format, prefix: &[u8]) -> Result<Plan, FormatError> {
    let src = Prefix::new(prefix);
    let res = match format {
        Format::Vhd => vhd::stream_plan(&src),
        Format::Vdi => vdi::stream_plan(&src),
        Format::Vhdx => vhdx::stream_plan(&src),
        Format::Vmdk => vmdk::stream_plan(&src),
        other => Ok(Plan::NotStreamable(format!(
            "{other} images are not planned from their tables"
        ))),
    };
    // A read past the prefix means the answer may change with more bytes, whatever the
    // loader made of the missing ones.
    match src.want() {
        want if want > prefix.len() as u64 => Ok(Plan::Need(want)),
        _ => res,
    }
}

/// Zeroes the sectors of `buf` whose bit is clear in a VHD sector `bitmap`; `buf` holds
/// the block's guest bytes from `offset` bytes into the block.
pub fn apply_bitmap(bitmap: &[u8], offset: u64, buf: &mut [u8]) {
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let sector = pos / vhd::SECTOR;
        let n = usize::try_from(vhd::SECTOR - pos % vhd::SECTOR)
            .map_or(buf.len() - done, |n| n.min(buf.len() - done));
        if !vhd::sector_present(bitmap, sector) {
            buf[done..done + n].fill(0);
        }
        done += n;
    }
}

/// The stream's prefix as a [`ReadAt`] that notes the furthest byte a read asked for.
pub(crate) struct Prefix<'a> {
    bytes: &'a [u8],
    want: AtomicU64,
}

impl<'a> Prefix<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Prefix {
            bytes,
            want: AtomicU64::new(0),
        }
    }

    /// The furthest file offset a read or [`Prefix::require`] asked for.
    pub(crate) fn want(&self) -> u64 {
        self.want.load(Ordering::Relaxed)
    }

    /// Asks for the bytes up to `end` at once (so a loader that will read many tables
    /// gets them in one round); a truncation error naming `what` if they are not here.
    pub(crate) fn require(&self, end: u64, what: &str) -> Result<(), FormatError> {
        self.want.fetch_max(end, Ordering::Relaxed);
        if end > self.bytes.len() as u64 {
            return Err(FormatError::Truncated {
                what: what.into(),
                offset: self.bytes.len() as u64,
            });
        }
        Ok(())
    }
}

impl ReadAt for Prefix<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        self.want.fetch_max(end, Ordering::Relaxed);
        self.bytes.read_exact_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the length of a stream is not known before it ends",
        ))
    }
}

/// Collects a map from pieces given in guest order; merges as it goes and stops
/// collecting (the image is then not streamable) past [`MAX_RUNS`].
pub(crate) struct MapBuilder {
    format: &'static str,
    size: u64,
    runs: Vec<HostRun>,
    zeros: Vec<(u64, u64)>,
    overflow: bool,
}

impl MapBuilder {
    pub(crate) fn new(format: &'static str, size: u64) -> Self {
        MapBuilder {
            format,
            size,
            runs: Vec::new(),
            zeros: Vec::new(),
            overflow: false,
        }
    }

    /// Guest `guest..guest+len` reads as zero.
    pub(crate) fn zero(&mut self, guest: u64, len: u64) {
        if len == 0 || self.overflow {
            return;
        }
        if let Some((g, l)) = self.zeros.last_mut() {
            if *g + *l == guest {
                *l += len;
                return;
            }
        }
        if self.zeros.len() >= MAX_RUNS {
            self.overflow = true;
        } else {
            self.zeros.push((guest, len));
        }
    }

    /// Guest `guest..guest+len` is stored at file offset `host`.
    pub(crate) fn data(&mut self, guest: u64, len: u64, host: u64) {
        self.push(HostRun {
            host,
            bitmap_len: 0,
            guest,
            len,
        });
    }

    /// A VHD block: its sector bitmap (`bitmap_len` bytes) at `host`, its data after it.
    pub(crate) fn masked(&mut self, guest: u64, len: u64, host: u64, bitmap_len: u32) {
        self.push(HostRun {
            host,
            bitmap_len,
            guest,
            len,
        });
    }

    fn push(&mut self, run: HostRun) {
        if run.len == 0 || self.overflow {
            return;
        }
        if let Some(last) = self.runs.last_mut() {
            if joins(last, &run) {
                last.len += run.len;
                return;
            }
        }
        if self.runs.len() >= MAX_RUNS {
            self.overflow = true;
            return;
        }
        self.runs.push(run);
    }

    /// Sorts the runs by file offset, merges them again and refuses overlaps.
    pub(crate) fn finish(mut self) -> Result<Plan, FormatError> {
        if self.overflow {
            return Ok(Plan::NotStreamable(format!(
                "its data is split into more than {MAX_RUNS} separate runs"
            )));
        }
        self.runs.sort_unstable_by_key(|r| r.host);
        let mut runs: Vec<HostRun> = Vec::with_capacity(self.runs.len());
        for run in self.runs {
            if let Some(last) = runs.last_mut() {
                if run.host < last.host_end() {
                    return Err(FormatError::corrupt(
                        self.format,
                        format!(
                            "guest offsets {} and {} both map file offset {} (a stream cannot read bytes twice)",
                            last.guest,
                            run.guest,
                            run.host.max(last.data_host()),
                        ),
                    ));
                }
                if joins(last, &run) {
                    last.len += run.len;
                    continue;
                }
            }
            runs.push(run);
        }
        runs.shrink_to_fit();
        Ok(Plan::Map(HostMap {
            virtual_size: self.size,
            runs,
            zeros: self.zeros,
        }))
    }
}

/// `b` continues `a` in the file and on the guest (and neither carries a bitmap).
fn joins(a: &HostRun, b: &HostRun) -> bool {
    a.bitmap_len == 0 && b.bitmap_len == 0 && a.host_end() == b.host && a.guest + a.len == b.guest
}

/// The plan for a disk of fixed-size blocks, each stored whole at a file offset or reading
/// as zero (VDI, VHDX): `blocks` as the readers' [`crate::blockmap::BlockMap`] holds them.
pub(crate) fn blocks_plan(
    format: &'static str,
    block_size: u64,
    size: u64,
    blocks: &[Option<u64>],
) -> Result<Plan, FormatError> {
    let mut map = MapBuilder::new(format, size);
    for (i, b) in (0u64..).zip(blocks) {
        let guest = i * block_size;
        if guest >= size {
            break;
        }
        let len = crate::blockmap::guest_block_len(i, block_size, size);
        match b {
            Some(at) => map.data(guest, len, *at),
            None => map.zero(guest, len),
        }
    }
    map.finish()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Runs a plan over a whole image held in memory, as the importer does over a stream.

    use super::*;

    /// Decodes `image` as a stream would be: grows the prefix to each `Need`, then applies
    /// the map. `Ok(None)`: not streamable. Checks the map's invariants on the way: runs
    /// sorted and disjoint, every guest byte covered exactly once.
    pub(crate) fn stream_decode(
        format: Format,
        image: &[u8],
    ) -> Result<Option<Vec<u8>>, FormatError> {
        let mut len = 0usize;
        let map = loop {
            match plan(format, &image[..len])? {
                Plan::Need(want) => {
                    assert!(want > len as u64, "need {want} with {len} bytes");
                    if want > image.len() as u64 {
                        return Err(FormatError::Truncated {
                            what: "tables".into(),
                            offset: image.len() as u64,
                        });
                    }
                    len = want as usize;
                }
                Plan::NotStreamable(_) => return Ok(None),
                Plan::Map(m) => break m,
            }
        };
        // The decode below holds the whole disk twice in memory: a mutated header's
        // virtual size of many gigabytes would take the test process down, so such an
        // image is left to the reader's checks (no stream result to compare).
        if map.virtual_size > 1 << 26 {
            return Ok(None);
        }
        let size = usize::try_from(map.virtual_size).unwrap();
        let mut out = vec![0xeeu8; size];
        let mut covered = vec![0u8; size];
        for &(g, l) in &map.zeros {
            let (g, l) = (g as usize, l as usize);
            out[g..g + l].fill(0);
            covered[g..g + l].iter_mut().for_each(|c| *c += 1);
        }
        let mut prev_end = 0u64;
        for r in &map.runs {
            assert!(r.host >= prev_end, "runs overlap or are unsorted: {map:?}");
            prev_end = r.host_end();
            if r.host_end() > image.len() as u64 {
                return Err(FormatError::Truncated {
                    what: format!("data for guest offset {}", r.guest),
                    offset: image.len() as u64,
                });
            }
            let bitmap = &image[r.host as usize..r.data_host() as usize];
            let data = &image[r.data_host() as usize..r.host_end() as usize];
            let (g, l) = (r.guest as usize, r.len as usize);
            out[g..g + l].copy_from_slice(data);
            if r.bitmap_len > 0 {
                apply_bitmap(bitmap, 0, &mut out[g..g + l]);
            }
            covered[g..g + l].iter_mut().for_each(|c| *c += 1);
        }
        if let Some(i) = covered.iter().position(|&c| c != 1) {
            panic!("guest byte {i} covered {} times: {map:?}", covered[i]);
        }
        Ok(Some(out))
    }

    /// The map planned from `prefix` (which must hold every table).
    pub(crate) fn map_of(format: Format, prefix: &[u8]) -> HostMap {
        match plan(format, prefix) {
            Ok(Plan::Map(m)) => m,
            other => panic!("no map: {other:?}"),
        }
    }

    /// `(host, guest, len)` of each run of `m`.
    pub(crate) fn runs(m: &HostMap) -> Vec<(u64, u64, u64)> {
        m.runs.iter().map(|r| (r.host, r.guest, r.len)).collect()
    }

    /// `image` maps some file bytes twice: a stream cannot read them twice.
    pub(crate) fn assert_rereading_refused(format: Format, image: &[u8]) {
        match stream_decode(format, image) {
            Err(FormatError::Corrupt { detail, .. }) => {
                assert!(detail.contains("cannot read bytes twice"), "{detail}")
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    /// Reads every guest byte of `img`.
    pub(crate) fn read_all(img: &dyn crate::DiskImage) -> Result<Vec<u8>, FormatError> {
        let size = usize::try_from(img.virtual_size()).unwrap();
        let mut out = vec![0u8; size];
        img.read_at(&mut out, 0)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builder_merges_sorts_and_refuses_overlaps() {
        let mut m = MapBuilder::new("test", 100);
        m.data(0, 10, 1000);
        m.data(10, 10, 1010);
        m.zero(20, 5);
        m.zero(25, 5);
        m.data(30, 10, 500);
        m.masked(40, 10, 1020, 512);
        m.data(50, 50, 1542);
        let Plan::Map(map) = m.finish().unwrap() else {
            panic!()
        };
        assert_eq!(map.zeros, vec![(20, 10)]);
        assert_eq!(
            map.runs,
            vec![
                HostRun {
                    host: 500,
                    bitmap_len: 0,
                    guest: 30,
                    len: 10
                },
                HostRun {
                    host: 1000,
                    bitmap_len: 0,
                    guest: 0,
                    len: 20
                },
                HostRun {
                    host: 1020,
                    bitmap_len: 512,
                    guest: 40,
                    len: 10
                },
                HostRun {
                    host: 1542,
                    bitmap_len: 0,
                    guest: 50,
                    len: 50
                },
            ]
        );

        // Pieces out of guest order: after sorting, a run that continues another on the
        // file and on the guest is merged; one contiguous only on the file is not.
        let mut m = MapBuilder::new("test", 40);
        m.data(10, 10, 2010);
        m.data(0, 10, 2000);
        m.data(20, 10, 1000);
        m.data(30, 10, 990);
        let Plan::Map(map) = m.finish().unwrap() else {
            panic!()
        };
        assert_eq!(map.runs.len(), 3);
        assert_eq!((map.runs[2].guest, map.runs[2].len), (0, 20));

        let mut m = MapBuilder::new("test", 20);
        m.data(0, 10, 100);
        m.data(10, 10, 105);
        let e = m.finish().unwrap_err().to_string();
        assert!(e.contains("cannot read bytes twice"), "{e}");
    }

    #[test]
    fn too_many_runs_is_not_streamable() {
        let mut m = MapBuilder::new("test", u64::MAX);
        for i in 0..=MAX_RUNS as u64 {
            m.data(i * 2, 1, i * 3);
        }
        assert!(matches!(m.finish(), Ok(Plan::NotStreamable(_))));
    }

    #[test]
    fn prefix_notes_how_far_reads_reach() {
        let p = Prefix::new(&[1, 2, 3, 4]);
        let mut b = [0u8; 2];
        p.read_exact_at(&mut b, 1).unwrap();
        assert_eq!((b, p.want()), ([2, 3], 3));
        assert!(p.read_exact_at(&mut b, 3).is_err());
        assert_eq!(p.want(), 5);
        assert!(p.require(4, "x").is_ok());
        assert!(p.require(100, "x").is_err());
        assert_eq!(p.want(), 100);
        assert!(p.read_exact_at(&mut b, u64::MAX).is_err());
        assert_eq!(p.want(), u64::MAX);
        assert!(p.len().is_err());
    }

    #[test]
    fn bitmap_masks_sectors() {
        let mut buf = vec![7u8; 2048];
        // Sectors 0 and 3 present.
        apply_bitmap(&[0x90], 0, &mut buf);
        assert!(buf[..512].iter().all(|&b| b == 7));
        assert!(buf[512..1536].iter().all(|&b| b == 0));
        assert!(buf[1536..].iter().all(|&b| b == 7));
        // From mid-sector 2: 256 bytes of sector 2 (absent) then sector 3 (present).
        let mut buf = vec![7u8; 768];
        apply_bitmap(&[0x90], 1280, &mut buf);
        assert!(buf[..256].iter().all(|&b| b == 0));
        assert!(buf[256..].iter().all(|&b| b == 7));
        // Past the bitmap: absent.
        let mut buf = vec![7u8; 512];
        apply_bitmap(&[0xff], 8 * 512, &mut buf);
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn other_formats_are_not_planned() {
        assert!(matches!(
            plan(Format::Qcow2, &[]),
            Ok(Plan::NotStreamable(_))
        ));
        assert_eq!(plan(Format::Vdi, &[]).unwrap(), Plan::Need(512));
    }

    fn planned_formats() -> [Format; 4] {
        [Format::Vhd, Format::Vdi, Format::Vhdx, Format::Vmdk]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for f in planned_formats() {
                if let Ok(Plan::Need(n)) = plan(f, &bytes) {
                    prop_assert!(n > bytes.len() as u64);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_with_magic_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 600..4096),
        ) {
            for (f, at, magic) in [
                (Format::Vhd, 0, &b"conectix"[..]),
                (Format::Vdi, 0x40, &0xbeda_107f_u32.to_le_bytes()[..]),
                (Format::Vhdx, 0, &b"vhdxfile"[..]),
                (Format::Vmdk, 0, &b"KDMV\x01\x00\x00\x00"[..]),
            ] {
                let mut b = bytes.clone();
                b[at..at + magic.len()].copy_from_slice(magic);
                match plan(f, &b) {
                    Ok(Plan::Need(n)) => prop_assert!(n > b.len() as u64),
                    Ok(Plan::Map(m)) => {
                        prop_assert!(m.runs.windows(2).all(|w| w[0].host_end() <= w[1].host));
                    }
                    _ => {}
                }
            }
        }
    }
}
