//! Decoding a qcow2 image from a forward-only byte stream (an image inside gzip/xz/zstd,
//! a containerDisk layer, stdin) without seeking, and for the usual layouts without
//! keeping any of it.
//!
//! [`Qcow2Stream`] is fed the image's bytes in file order. It reads the header from
//! cluster 0, collects the L1 table and each L2 table as their host offsets come by,
//! and from then on knows, for every host byte still to come, whether it is guest data
//! (emitted at once), part of a compressed cluster (collected, then emitted whole) or
//! metadata. Images written by `qemu-img convert` put the L1 table and each L2 table
//! before the data clusters it maps, so nothing is kept.
//!
//! Other layouts are decoded too, never lost: while some L2 table (or the L1 table) has
//! not been read, host bytes of unknown meaning are handed to the caller's stash
//! ([`StreamHandler::stash`]) and asked back ([`StreamHandler::recall`]) when a table
//! read later maps them. The stash is released as soon as every table has been read.
//! Memory stays bounded: waiting references are kept as merged runs per L2 table (never
//! a dense map of the disk), and past [`StreamLimits::max_pending_runs`] a table is
//! itself stashed and decoded at the end.
//!
//! Refuses what [`super::Qcow2Image`] refuses (backing files, encryption, external data
//! files, bad geometry) with the same errors, and also data that it could only get by
//! reading bytes twice (a cluster mapped by two entries, a data cluster inside an L2
//! table): those are corrupt images, and a stream cannot go back.
//!
//! Pure: no IO here. The handler receives guest data and holds the stash.

use super::header::{Header, HeaderExtensions, HEADER_READ_LEN};
use super::l2::Geometry;
use super::{FORMAT, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};
use crate::FormatError;
use runs::{table_runs, Run};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

mod handler;
mod runs;
#[cfg(test)]
mod tests;

pub use handler::{
    decompress_cluster, CompressedCluster, StreamHandler, StreamInfo, StreamLimits, StreamStats,
};

/// Largest piece asked back from the stash at once.
const RECALL_PIECE: usize = 1 << 20;

enum Role {
    L1 {
        buf: Vec<u8>,
    },
    /// An L2 table used by the L1 entries `l2s[first..first + count]`.
    L2 {
        buf: Vec<u8>,
        first: usize,
        count: usize,
    },
    Data {
        guest: u64,
    },
    Compressed {
        guest: u64,
        buf: Vec<u8>,
    },
}

/// Host bytes `start..end` someone is waiting for.
struct Item {
    start: u64,
    end: u64,
    role: Role,
}

impl Item {
    fn collects(&self) -> u64 {
        match self.role {
            Role::L2 { .. } | Role::Compressed { .. } => self.end - self.start,
            _ => 0,
        }
    }
}

/// The runs of one L2 table, sorted by host offset, consumed from `next`.
struct RunTable {
    runs: Vec<Run>,
    next: usize,
}

struct Meta {
    header: Header,
    ext: HeaderExtensions,
    geom: Geometry,
}

/// The streaming decoder. See the module docs.
pub struct Qcow2Stream {
    limits: StreamLimits,
    /// Host bytes consumed.
    pos: u64,
    /// Cluster 0 being collected (None once the header is parsed).
    head: Option<Vec<u8>>,
    meta: Option<Meta>,
    /// The L1 table, until the stream reaches it.
    pending_l1: Option<Item>,
    l1_done: bool,
    /// (L2 table offset, L1 index), sorted; tables from `l2_next` on are still to come.
    l2s: Vec<(u64, u64)>,
    l2_next: usize,
    tables: Vec<RunTable>,
    free_tables: Vec<usize>,
    /// (next host offset, table) of tables with runs left.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    pending_runs: usize,
    active: Vec<Item>,
    active_l2: usize,
    collecting: u64,
    stash_live: bool,
    /// Host ranges given to the stash, merged and sorted.
    stashed: Vec<(u64, u64)>,
    /// Deferred tables: (offset, first, count) as in [`Role::L2`].
    deferred: Vec<(u64, usize, usize)>,
    scratch: Vec<u8>,
    stats: StreamStats,
    finished: bool,
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn corrupt(detail: String) -> FormatError {
    FormatError::corrupt(FORMAT, detail)
}

impl Default for Qcow2Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Qcow2Stream {
    pub fn new() -> Qcow2Stream {
        Self::with_limits(StreamLimits::default())
    }

    pub fn with_limits(limits: StreamLimits) -> Qcow2Stream {
        Qcow2Stream {
            limits,
            pos: 0,
            head: Some(Vec::new()),
            meta: None,
            pending_l1: None,
            l1_done: false,
            l2s: Vec::new(),
            l2_next: 0,
            tables: Vec::new(),
            free_tables: Vec::new(),
            heap: BinaryHeap::new(),
            pending_runs: 0,
            active: Vec::new(),
            active_l2: 0,
            collecting: 0,
            stash_live: true,
            stashed: Vec::new(),
            deferred: Vec::new(),
            scratch: Vec::new(),
            stats: StreamStats::default(),
            finished: false,
        }
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Host bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The header, once parsed.
    pub fn header(&self) -> Option<&Header> {
        self.meta.as_ref().map(|m| &m.header)
    }

    /// Consumes the next bytes of the image.
    pub fn feed<H: StreamHandler>(&mut self, mut input: &[u8], h: &mut H) -> Result<(), H::Error> {
        if self.finished {
            return Err(FormatError::InvalidInput {
                format: FORMAT,
                detail: "bytes fed after the end of the stream".into(),
            }
            .into());
        }
        while let Some(head) = &mut self.head {
            let want = head_want(head);
            if head.len() >= want {
                self.finish_header(None, h)?;
                break;
            }
            if input.is_empty() {
                return Ok(());
            }
            let take = (want - head.len()).min(input.len());
            head.extend_from_slice(&input[..take]);
            self.pos += take as u64;
            input = &input[take..];
        }
        if input.is_empty() {
            return Ok(());
        }
        self.body(input, h)
    }

    /// The stream ended: reports what is missing (as the reader would for a file of
    /// this length) and releases the stash.
    pub fn finish<H: StreamHandler>(&mut self, h: &mut H) -> Result<StreamStats, H::Error> {
        if self.finished {
            return Ok(self.stats);
        }
        self.finished = true;
        let len = self.pos;
        if let Some(head) = &self.head {
            // The file is shorter than cluster 0: parse what there is, as the reader does.
            Header::parse(head)?;
            self.finish_header(Some(len), h)?;
        }
        let Some(meta) = &self.meta else {
            return Err(corrupt("no header".into()).into());
        };
        let mut geom = meta.geom;
        geom.file_len = len;
        meta.header.validate(len, &meta.ext)?;
        if !self.l1_done {
            return Err(corrupt(format!(
                "L1 table incomplete at the end of the stream ({len} bytes)"
            ))
            .into());
        }
        // L2 tables that never came are past the end of the file.
        let missing = self
            .active
            .iter()
            .filter_map(|it| match it.role {
                Role::L2 { first, .. } => Some(first),
                _ => None,
            })
            .chain(self.l2_next..self.l2s.len())
            .next();
        if let Some(k) = missing {
            let (off, index) = self.l2s[k];
            geom.decode_l1(off, index)?;
            return Err(corrupt(format!("L2 table at {off:#x} incomplete")).into());
        }
        for (off, first, count) in std::mem::take(&mut self.deferred) {
            let mut buf = vec![0u8; geom.cluster_size() as usize];
            self.recall_checked(off, &mut buf, "deferred L2 table", h)?;
            self.decode_l2(off, &buf, first, count, len, false, h)?;
        }
        self.activate_due(len, h)?;
        for it in std::mem::take(&mut self.active) {
            self.end_item(it, &geom, h)?;
        }
        while let Some(Reverse((_, t))) = self.heap.pop() {
            let table = std::mem::take(&mut self.tables[t].runs);
            let next = self.tables[t].next;
            for run in table.into_iter().skip(next) {
                let it = self.run_item(run);
                self.end_item(it, &geom, h)?;
            }
        }
        if self.stash_live {
            self.stash_live = false;
            self.stashed = Vec::new();
            h.release_stash()?;
        }
        Ok(self.stats)
    }

    /// An item still open at the end of a `len`-byte file: the reader zero-fills data
    /// clusters that start inside the file and refuses those that start past it.
    fn end_item<H: StreamHandler>(
        &mut self,
        it: Item,
        geom: &Geometry,
        h: &mut H,
    ) -> Result<(), H::Error> {
        let len = geom.file_len;
        let cs = geom.cluster_size();
        match it.role {
            Role::Data { guest } => {
                let last_base = (it.end - 1) & !(cs - 1);
                if last_base >= len {
                    let cluster = guest.wrapping_add(last_base).wrapping_sub(it.start) / cs;
                    let bitmap = if geom.extended_l2 {
                        u64::from(u32::MAX)
                    } else {
                        0
                    };
                    geom.decode_l2(last_base, bitmap, cluster)?;
                    return Err(corrupt(format!(
                        "guest cluster {cluster} is past the end of the file"
                    ))
                    .into());
                }
                let from = it.start.max(len);
                if from < it.end {
                    h.zero(guest + (from - it.start), it.end - from)?;
                }
                Ok(())
            }
            Role::Compressed { guest, buf } => {
                if it.start >= len {
                    return Err(corrupt(format!(
                        "compressed guest cluster {} at {:#x} is past the end of the file ({len} bytes)",
                        guest / cs,
                        it.start
                    ))
                    .into());
                }
                self.emit_compressed(guest, it.start, &buf, h)
            }
            Role::L1 { .. } | Role::L2 { .. } => Err(corrupt(format!(
                "table at {:#x} incomplete at the end of the stream",
                it.start
            ))
            .into()),
        }
    }

    fn meta(&self) -> Result<&Meta, FormatError> {
        self.meta
            .as_ref()
            .ok_or_else(|| corrupt("image data before its header".into()))
    }

    /// Parses and validates cluster 0 (`file_len` when the stream already ended).
    fn finish_header<H: StreamHandler>(
        &mut self,
        file_len: Option<u64>,
        h: &mut H,
    ) -> Result<(), H::Error> {
        let head = self.head.take().unwrap_or_default();
        let header = Header::parse(&head)?;
        let fl = file_len.unwrap_or(u64::MAX);
        let ext = match HeaderExtensions::parse(&header, &head) {
            Ok(ext) => {
                header.validate(fl, &ext)?;
                ext
            }
            Err(e) => {
                header.validate(fl, &HeaderExtensions::default())?;
                return Err(e.into());
            }
        };
        if header.has_backing_file() {
            return Err(FormatError::BackingFile {
                path: ext.backing_file.clone().unwrap_or_default(),
            }
            .into());
        }
        let geom = Geometry {
            cluster_bits: header.cluster_bits,
            extended_l2: header.extended_l2(),
            virtual_size: header.size,
            file_len: fl,
        };
        let info = StreamInfo {
            virtual_size: header.size,
            cluster_size: geom.cluster_size(),
            compression: header.compression()?,
            header: header.clone(),
        };
        h.start(&info)?;
        let l1_len = header.l1_entries_needed() * 8;
        let l1_off = header.l1_table_offset;
        self.meta = Some(Meta { header, ext, geom });
        if l1_len == 0 {
            self.l1_done = true;
            return self.maybe_release(h);
        }
        // `validate` bounded the L1 table (32 MiB) and put it past cluster 0.
        self.pending_l1 = Some(Item {
            start: l1_off,
            end: l1_off + l1_len,
            role: Role::L1 {
                buf: Vec::with_capacity(l1_len as usize),
            },
        });
        Ok(())
    }

    /// Consumes body bytes (after cluster 0) starting at `self.pos`.
    fn body<H: StreamHandler>(&mut self, input: &[u8], h: &mut H) -> Result<(), H::Error> {
        let base = self.pos;
        let end = base + input.len() as u64;
        let mut cur = base;
        loop {
            self.activate_due(cur, h)?;
            if cur >= end {
                break;
            }
            let seg_end = self.next_boundary(cur, end);
            let slice = &input[(cur - base) as usize..(seg_end - base) as usize];
            if self.active.is_empty() {
                if self.stash_live {
                    self.stash(cur, slice, h)?;
                }
            } else {
                for it in &mut self.active {
                    match &mut it.role {
                        Role::Data { guest } => h.data(*guest + (cur - it.start), slice)?,
                        Role::L1 { buf } | Role::L2 { buf, .. } | Role::Compressed { buf, .. } => {
                            buf.extend_from_slice(slice)
                        }
                    }
                }
            }
            cur = seg_end;
            self.pos = cur;
            self.complete_ended(cur, h)?;
        }
        self.pos = end;
        Ok(())
    }

    fn next_boundary(&self, cur: u64, end: u64) -> u64 {
        let mut b = end;
        for it in &self.active {
            b = b.min(it.end);
        }
        if let Some(&(off, _)) = self.l2s.get(self.l2_next) {
            b = b.min(off);
        }
        if let Some(it) = &self.pending_l1 {
            b = b.min(it.start);
        }
        if let Some(Reverse((host, _))) = self.heap.peek() {
            b = b.min(*host);
        }
        // Everything at or before `cur` was activated, so `b > cur`; stay safe anyway.
        b.max(cur + 1).min(end)
    }

    fn stash<H: StreamHandler>(
        &mut self,
        host: u64,
        bytes: &[u8],
        h: &mut H,
    ) -> Result<(), H::Error> {
        let end = host + bytes.len() as u64;
        // Ranges stay sorted, disjoint and merged; puts nearly always extend the last one.
        let at = self.stashed.partition_point(|r| r.1 < host);
        let merge_to = at + self.stashed[at..].partition_point(|r| r.0 <= end);
        if at == merge_to {
            if self.stashed.len() >= self.limits.max_stash_ranges {
                return Err(corrupt(format!(
                    "more than {} separate out-of-order ranges before host offset {host:#x}: too fragmented to decode as a stream; import it from a seekable file",
                    self.limits.max_stash_ranges
                ))
                .into());
            }
            self.stashed.insert(at, (host, end));
        } else {
            let lo = self.stashed[at].0.min(host);
            let hi = self.stashed[merge_to - 1].1.max(end);
            self.stashed.drain(at + 1..merge_to);
            self.stashed[at] = (lo, hi);
        }
        self.stats.stashed += bytes.len() as u64;
        h.stash(host, bytes)
    }

    fn is_stashed(&self, host: u64, end: u64) -> bool {
        let at = self.stashed.partition_point(|r| r.0 <= host);
        at > 0 && self.stashed[at - 1].1 >= end
    }

    /// Asks the stash for `buf.len()` bytes at `host`, which must have been stashed.
    fn recall_checked<H: StreamHandler>(
        &mut self,
        host: u64,
        buf: &mut [u8],
        what: &str,
        h: &mut H,
    ) -> Result<(), H::Error> {
        let end = host + buf.len() as u64;
        if !self.stash_live || !self.is_stashed(host, end) {
            return Err(corrupt(format!(
                "{what} at host offset {host:#x} comes before the table that maps it and overlaps other data or metadata (a cluster mapped twice?); a stream cannot go back for it, import the image from a seekable file"
            ))
            .into());
        }
        self.stats.recalled += buf.len() as u64;
        h.recall(host, buf)
    }

    /// Takes an item starting at or before stream position `cur`: bytes of it already
    /// passed come from the stash; the rest is served as the stream goes on.
    fn admit<H: StreamHandler>(
        &mut self,
        mut it: Item,
        cur: u64,
        h: &mut H,
    ) -> Result<(), H::Error> {
        if it.start < cur {
            let upto = it.end.min(cur);
            let what = match it.role {
                Role::L1 { .. } => "the L1 table",
                Role::L2 { .. } => "an L2 table",
                Role::Compressed { .. } => "a compressed cluster",
                Role::Data { .. } => "a data cluster",
            };
            match &mut it.role {
                Role::Data { guest } => {
                    let guest = *guest;
                    let mut scratch = std::mem::take(&mut self.scratch);
                    let mut at = it.start;
                    let mut res = Ok(());
                    while at < upto && res.is_ok() {
                        let n = ((upto - at) as usize).min(RECALL_PIECE);
                        scratch.resize(n, 0);
                        res = self
                            .recall_checked(at, &mut scratch, what, h)
                            .and_then(|()| h.data(guest + (at - it.start), &scratch));
                        at += n as u64;
                    }
                    self.scratch = scratch;
                    res?;
                }
                Role::L1 { buf } | Role::L2 { buf, .. } | Role::Compressed { buf, .. } => {
                    buf.resize((upto - it.start) as usize, 0);
                    let mut tmp = std::mem::take(buf);
                    let res = self.recall_checked(it.start, &mut tmp, what, h);
                    *buf = tmp;
                    res?;
                }
            }
            if it.end <= cur {
                return self.complete(it, cur, h);
            }
        }
        if self.active.len() >= self.limits.max_active {
            return Err(corrupt(format!(
                "more than {} references to host offset {cur:#x}",
                self.limits.max_active
            ))
            .into());
        }
        let c = it.collects();
        if self.collecting + c > self.limits.max_collect_bytes {
            return Err(corrupt(format!(
                "overlapping compressed clusters and tables at host offset {cur:#x} need more than {} bytes at once",
                self.limits.max_collect_bytes
            ))
            .into());
        }
        self.collecting += c;
        if matches!(it.role, Role::L2 { .. }) {
            self.active_l2 += 1;
        }
        self.active.push(it);
        Ok(())
    }

    /// Moves every table and run starting at or before `cur` into service.
    fn activate_due<H: StreamHandler>(&mut self, cur: u64, h: &mut H) -> Result<(), H::Error> {
        if self.pending_l1.as_ref().is_some_and(|it| it.start <= cur) {
            if let Some(it) = self.pending_l1.take() {
                self.admit(it, cur, h)?;
            }
        }
        loop {
            if let Some(&(off, _)) = self.l2s.get(self.l2_next) {
                if off <= cur {
                    let first = self.l2_next;
                    let count = self.l2s[first..].iter().take_while(|e| e.0 == off).count();
                    self.l2_next += count;
                    let cs = self.meta()?.geom.cluster_size();
                    let it = Item {
                        start: off,
                        end: off + cs,
                        role: Role::L2 {
                            buf: Vec::with_capacity(cs as usize),
                            first,
                            count,
                        },
                    };
                    self.admit(it, cur, h)?;
                    continue;
                }
            }
            let t = match self.heap.peek() {
                Some(Reverse((host, t))) if *host <= cur => *t,
                _ => return Ok(()),
            };
            self.heap.pop();
            let table = &mut self.tables[t];
            let from = table.next;
            let upto = from + table.runs[from..].partition_point(|r| r.host <= cur);
            let due: Vec<Run> = table.runs[from..upto].to_vec();
            table.next = upto;
            match table.runs.get(upto) {
                Some(run) => self.heap.push(Reverse((run.host, t))),
                None => {
                    table.runs = Vec::new();
                    self.free_tables.push(t);
                }
            }
            self.pending_runs = self.pending_runs.saturating_sub(due.len());
            for run in due {
                let it = self.run_item(run);
                self.admit(it, cur, h)?;
            }
        }
    }

    fn run_item(&self, run: Run) -> Item {
        let end = run.host + u64::from(run.len);
        let role = if run.compressed {
            Role::Compressed {
                guest: run.guest,
                buf: Vec::with_capacity(run.len as usize),
            }
        } else {
            Role::Data { guest: run.guest }
        };
        Item {
            start: run.host,
            end,
            role,
        }
    }

    /// Completes every active item ending at `cur`.
    fn complete_ended<H: StreamHandler>(&mut self, cur: u64, h: &mut H) -> Result<(), H::Error> {
        if !self.active.iter().any(|it| it.end <= cur) {
            return Ok(());
        }
        let (done, keep): (Vec<Item>, Vec<Item>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|it| it.end <= cur);
        self.active = keep;
        for it in done {
            self.collecting -= it.collects();
            if matches!(it.role, Role::L2 { .. }) {
                self.active_l2 -= 1;
            }
            self.complete(it, cur, h)?;
        }
        self.maybe_release(h)
    }

    fn complete<H: StreamHandler>(
        &mut self,
        it: Item,
        cur: u64,
        h: &mut H,
    ) -> Result<(), H::Error> {
        match it.role {
            Role::L1 { buf } => self.decode_l1(&buf, cur, h),
            Role::L2 { buf, first, count } => {
                self.decode_l2(it.start, &buf, first, count, cur, true, h)
            }
            Role::Compressed { guest, buf } => self.emit_compressed(guest, it.start, &buf, h),
            Role::Data { .. } => Ok(()),
        }
    }

    fn emit_compressed<H: StreamHandler>(
        &mut self,
        guest: u64,
        host: u64,
        input: &[u8],
        h: &mut H,
    ) -> Result<(), H::Error> {
        let geom = self.meta()?.geom;
        let len = geom.cluster_size().min(geom.virtual_size - guest) as usize;
        h.compressed(CompressedCluster {
            guest,
            len,
            host,
            input,
        })
    }

    fn maybe_release<H: StreamHandler>(&mut self, h: &mut H) -> Result<(), H::Error> {
        if self.stash_live
            && self.l1_done
            && self.l2_next >= self.l2s.len()
            && self.active_l2 == 0
            && self.deferred.is_empty()
        {
            self.stash_live = false;
            self.stashed = Vec::new();
            h.release_stash()?;
        }
        Ok(())
    }

    fn decode_l1<H: StreamHandler>(
        &mut self,
        buf: &[u8],
        cur: u64,
        h: &mut H,
    ) -> Result<(), H::Error> {
        let geom = self.meta()?.geom;
        let span = geom.l2_span();
        let vsize = geom.virtual_size;
        let mut l2s = Vec::new();
        // Guest start of a run of unallocated L1 entries, reported as one zero range.
        let mut zero_from: Option<u64> = None;
        for (i, word) in buf.chunks_exact(8).enumerate() {
            let i = i as u64;
            match geom.decode_l1(be64(word, 0), i)? {
                None => {
                    zero_from.get_or_insert(i * span);
                }
                Some(off) => {
                    if let Some(z) = zero_from.take() {
                        h.zero(z, (i * span).min(vsize) - z)?;
                    }
                    l2s.push((off, i));
                }
            }
        }
        if let Some(z) = zero_from {
            if z < vsize {
                h.zero(z, vsize - z)?;
            }
        }
        l2s.sort_unstable();
        self.l2s = l2s;
        self.l2_next = 0;
        self.l1_done = true;
        self.activate_due(cur, h)?;
        self.maybe_release(h)
    }

    /// Decodes the L2 table at `off` for the L1 entries `l2s[first..first+count]`:
    /// zero ranges are reported now, data runs wait for their bytes (or come from the
    /// stash if already passed). With `may_defer`, a table that would hold too many runs
    /// goes to the stash to be decoded at the end.
    #[allow(clippy::too_many_arguments)]
    fn decode_l2<H: StreamHandler>(
        &mut self,
        off: u64,
        buf: &[u8],
        first: usize,
        count: usize,
        cur: u64,
        may_defer: bool,
        h: &mut H,
    ) -> Result<(), H::Error> {
        let geom = self.meta()?.geom;
        let mut runs = Vec::new();
        let mut zeros: Vec<(u64, u64)> = Vec::new();
        for k in first..first + count {
            let index = self.l2s.get(k).map_or(0, |e| e.1);
            table_runs(&geom, index, buf, &mut runs, &mut zeros)?;
        }
        // Deferring needs the stash, which is live while any table is still to come.
        if may_defer
            && self.stash_live
            && self.pending_runs + runs.len() > self.limits.max_pending_runs
        {
            if !self.is_stashed(off, off + buf.len() as u64) {
                self.stash(off, buf, h)?;
            }
            self.deferred.push((off, first, count));
            self.stats.deferred_tables += 1;
            return Ok(());
        }
        for (g, n) in zeros {
            h.zero(g, n)?;
        }
        // Guest order is usually host order already; the sort keeps ties in guest order.
        runs.sort_by_key(|r| r.host);
        // Runs already passed are served now; the rest wait in a table.
        let split = runs.partition_point(|r| r.host <= cur);
        for run in runs.drain(..split) {
            let it = self.run_item(run);
            self.admit(it, cur, h)?;
        }
        if runs.is_empty() {
            return Ok(());
        }
        self.pending_runs += runs.len();
        let next_host = runs[0].host;
        let table = RunTable { runs, next: 0 };
        let t = match self.free_tables.pop() {
            Some(t) => {
                self.tables[t] = table;
                t
            }
            None => {
                self.tables.push(table);
                self.tables.len() - 1
            }
        };
        self.heap.push(Reverse((next_host, t)));
        Ok(())
    }
}

/// How many bytes of cluster 0 to collect, given what is there.
fn head_want(head: &[u8]) -> usize {
    match Header::parse(head) {
        Ok(h) if head.len() >= HEADER_READ_LEN => {
            1usize << h.cluster_bits.clamp(MIN_CLUSTER_BITS, MAX_CLUSTER_BITS)
        }
        _ => HEADER_READ_LEN,
    }
}
