//! Block IO on one volume or snapshot: reads resolve through the merged index with one
//! lookup, writes go to the writable top layer (in place where the top already holds the
//! block, else appended to its data file), flushes make completed writes durable.
//!
//! Crash safety rests on one ordering: an index record is written to the journal only
//! after the data it points to has been synced. Records of completed writes wait in
//! `pending` until a flush (or until enough accumulate). So after any crash the index
//! points only at data that was written, and a block reads as its old or new contents.
//!
//! Concurrency: `state` (index and chain) is locked only to look up or change the index,
//! never across IO. Mutations hold `gate` shared for their whole duration; freezing the
//! top layer for a snapshot takes it exclusively, so a snapshot sees every write wholly or
//! not at all. Sub-block writes serialize on a striped lock for their read-modify-write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use crate::blob::Blob;
use crate::error::{Result, StoreError};
use crate::extent_map::{ExtentMap, Piece, Target};
use crate::journal::{CommitError, JournalFile, Record, RecordKind};

/// Block size of the index (bytes). Sub-block IO is read-modify-write.
pub const BLOCK: u64 = 4096;
/// Pending index records past which they are appended to the journal uncommitted (to
/// bound memory without forcing a data sync).
const PENDING_LIMIT: usize = 64 * 1024;
const RMW_STRIPES: usize = 64;

/// What a byte range of a volume holds, as block status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Stored data (it may happen to be zeros).
    Data,
    /// Reads as zero, with storage reserved (a write-zeroes that must not punch holes).
    Zero,
    /// Unallocated: reads as zero, no storage behind it.
    Hole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BlockExtent {
    pub offset: u64,
    pub len: u64,
    pub kind: BlockKind,
}

pub(crate) type Chain = Arc<Vec<Arc<Blob>>>;

pub(crate) struct State {
    pub chain: Chain,
    /// The merged index of the whole chain.
    pub map: ExtentMap,
    /// The merged index of the chain below the top (what a trim falls back to).
    pub base: ExtentMap,
    pub size: u64,
    /// Next free physical block in the top layer's data file (append placement).
    pub next_phys: u64,
    /// Where the top layer puts a block it does not hold yet: at its own guest block
    /// number (true), so its data file is a sparse image of the volume and a range
    /// rewritten piecemeal still reads back in one piece, or at `next_phys` (false: a
    /// layer written by an older build, whose blocks may sit anywhere). See
    /// [`placement`].
    pub identity: bool,
    pub deleted: bool,
}

/// The store directory's pending sync: a catalog rename that no flush has made durable
/// yet. The next flush of any volume syncs the directory before it returns.
pub(crate) struct DirSync {
    pub path: std::path::PathBuf,
    pub needed: AtomicBool,
}

impl DirSync {
    pub fn sync_if_needed(&self) -> Result<()> {
        if self.needed.swap(false, Ordering::AcqRel) {
            if let Err(e) = crate::blob::sync_dir(&self.path) {
                self.needed.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Under identity placement, blocks below this (8 TiB) sit at their own offset; blocks
/// past it are appended after it, since ext4 files end at 16 TiB.
const IDENTITY_BLOCKS: u64 = 1 << 31;

/// How a top layer places new blocks, from the records it already holds: identity
/// placement if every stored block sits where it would put it, which holds for every
/// layer this build made (and for an empty one); else appending after the last stored
/// block (a layer from an older build). Returns `(next_phys, identity)`.
pub(crate) fn placement(records: &[Record]) -> (u64, bool) {
    let mut next = 0;
    let mut identity = true;
    for r in records {
        if let RecordKind::Data { phys } = r.kind {
            next = next.max(phys + r.len);
            identity &= phys == r.start || phys >= IDENTITY_BLOCKS;
        }
    }
    (next, identity)
}

/// One write of a plan: logical blocks `start..start+len` of the volume go to physical
/// blocks `phys..phys+len` of the top layer's data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: u64,
    len: u64,
    phys: u64,
}

/// Adds blocks `start..start+len` at `phys` to a write plan, joining them to the last
/// run when both continue it (blocks the layer held and blocks it takes over usually do,
/// under identity placement), so that they go out as one write.
fn push_run(plan: &mut Vec<Run>, start: u64, len: u64, phys: u64) {
    if let Some(last) = plan.last_mut() {
        if last.start + last.len == start && last.phys + last.len == phys {
            last.len += len;
            return;
        }
    }
    plan.push(Run { start, len, phys });
}

/// Where the top layer puts the run `start..start+len` it does not hold yet.
fn place(st: &State, start: u64, len: u64) -> u64 {
    match st.identity {
        true if start + len <= IDENTITY_BLOCKS => start,
        true => st.next_phys.max(IDENTITY_BLOCKS),
        false => st.next_phys,
    }
}

pub(crate) struct VolumeInner {
    pub label: String,
    dir_sync: Arc<DirSync>,
    read_only: bool,
    pub(crate) state: RwLock<State>,
    gate: RwLock<()>,
    pending: Mutex<Vec<Record>>,
    journal: Mutex<Option<JournalFile>>,
    dirty: AtomicBool,
    flush_lock: Mutex<()>,
    /// Set by the first failed sync (see [`VolumeInner::fence`]): its error text.
    fenced: std::sync::OnceLock<String>,
    rmw: Vec<Mutex<()>>,
    /// An import being written (see [`Blob::write_bulk`]); cleared never: a committed
    /// import is reopened as a fresh volume.
    pub(crate) bulk: AtomicBool,
}

/// A handle on a volume (read-write) or a snapshot (read-only). Cheap to clone; all
/// methods are blocking and may be called from many threads at once.
#[derive(Clone)]
pub struct Volume(pub(crate) Arc<VolumeInner>);

impl VolumeInner {
    pub fn new(
        label: String,
        state: State,
        journal: Option<JournalFile>,
        dir_sync: Arc<DirSync>,
    ) -> Arc<VolumeInner> {
        Arc::new(VolumeInner {
            label,
            dir_sync,
            read_only: journal.is_none(),
            state: RwLock::new(state),
            gate: RwLock::new(()),
            pending: Mutex::new(Vec::new()),
            journal: Mutex::new(journal),
            dirty: AtomicBool::new(false),
            flush_lock: Mutex::new(()),
            fenced: std::sync::OnceLock::new(),
            rmw: (0..RMW_STRIPES).map(|_| Mutex::new(())).collect(),
            bulk: AtomicBool::new(false),
        })
    }

    pub fn mark_deleted(&self) {
        self.state.write().deleted = true;
    }

    /// Waits for in-flight writes, flushes, and holds writes off until the guard is
    /// dropped: the volume's contents are a single point in time meanwhile.
    pub fn quiesce(&self) -> Result<Quiesced<'_>> {
        let gate = self.gate.write();
        self.flush()?;
        Ok(Quiesced {
            vol: self,
            _gate: gate,
        })
    }

    /// Makes every write that completed before the call durable: syncs the top layer's
    /// data, then commits the waiting index records to the journal.
    ///
    /// If it fails, nothing it took is lost: the records go back to `pending` (ahead of
    /// any that writes added meanwhile) and the data counts as unsynced again, so a later
    /// flush commits them or fails too; it never acknowledges writes an earlier failure
    /// dropped. A failed *sync* (of the data or of the journal) also fences the volume
    /// (see [`VolumeInner::fence`]): Linux may mark pages it failed to write back as clean,
    /// so a second sync can succeed with the data still not on disk.
    pub fn flush(&self) -> Result<()> {
        let _one = self.flush_lock.lock();
        self.check_fenced()?;
        let records = std::mem::take(&mut *self.pending.lock());
        let dirty = self.dirty.swap(false, Ordering::AcqRel);
        match self.commit(&records, dirty) {
            // What this flush made durable is reachable only through the catalog that
            // names this volume's top layer: that must be durable too. A flush with
            // nothing to make durable leaves the directory alone (a snapshot of an idle
            // volume stays one sync). A failure here is retried by the next flush
            // (`DirSync` keeps asking); the records are committed already.
            Ok(committed) if dirty || committed => self.dir_sync.sync_if_needed(),
            Ok(_) => Ok(()),
            Err(CommitError { error, sync_failed }) => {
                self.restore(records, dirty);
                if sync_failed {
                    self.fence(&error);
                }
                Err(error)
            }
        }
    }

    /// Syncs the data (if written since the last flush), then commits `records`; returns
    /// whether the journal committed anything.
    fn commit(&self, records: &[Record], dirty: bool) -> Result<bool, CommitError> {
        if dirty {
            let top = self.state.read().chain.last().cloned();
            if let Some(top) = top {
                top.sync().map_err(|error| CommitError {
                    error,
                    sync_failed: true,
                })?;
            }
        }
        crate::failpoint!("flush-after-data-sync");
        match self.journal.lock().as_mut() {
            Some(j) => j.commit(records),
            None => Ok(false),
        }
    }

    /// Puts records a failed flush or journal append took back in front of the ones
    /// writes added since, and marks the data unsynced again if it was.
    fn restore(&self, records: Vec<Record>, dirty: bool) {
        if dirty {
            self.dirty.store(true, Ordering::Release);
        }
        if records.is_empty() {
            return;
        }
        let mut pending = self.pending.lock();
        let newer = std::mem::replace(&mut *pending, records);
        pending.extend(newer);
    }

    /// Stops the volume taking writes and flushes after a failed sync: every later one
    /// fails with [`StoreError::Fenced`] naming this first failure, until the volume is
    /// closed by all its users and opened again (the store then rebuilds it from its
    /// journal and writes the journal's committed records again: see
    /// [`JournalFile::rewrite_committed`]). Reads go on. Writes since the last successful
    /// flush may or may not be on disk; each block reads as its old or its new contents.
    fn fence(&self, cause: &StoreError) {
        let first = self.fenced.get_or_init(|| cause.to_string());
        tracing::error!(volume = %self.label, cause = %first, "sync failed: volume takes no more writes until it is reopened");
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.get().is_some()
    }

    fn check_fenced(&self) -> Result<()> {
        match self.fenced.get() {
            Some(cause) => Err(StoreError::Fenced {
                volume: self.label.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for VolumeInner {
    fn drop(&mut self) {
        // A fenced volume has already said why it cannot flush.
        if !self.read_only && !self.state.get_mut().deleted && !self.is_fenced() {
            if let Err(e) = self.flush() {
                tracing::warn!(volume = %self.label, error = %e, "flush on close failed");
            }
        }
    }
}

/// Proof that a volume is quiescent; see [`VolumeInner::quiesce`].
pub(crate) struct Quiesced<'a> {
    vol: &'a VolumeInner,
    _gate: parking_lot::RwLockWriteGuard<'a, ()>,
}

impl Quiesced<'_> {
    /// The current chain and index, frozen (for a snapshot reading from them).
    pub fn frozen_view(&self) -> (Chain, ExtentMap, u64) {
        let st = self.vol.state.read();
        (st.chain.clone(), st.map.clone(), st.size)
    }

    /// Puts a new, empty writable layer on top; the old top becomes frozen.
    pub fn push_top(&self, blob: Arc<Blob>, journal: JournalFile) {
        let mut st = self.vol.state.write();
        let mut chain: Vec<Arc<Blob>> = st.chain.as_ref().clone();
        chain.push(blob);
        st.chain = Arc::new(chain);
        st.base = st.map.clone();
        st.next_phys = 0;
        st.identity = true;
        *self.vol.journal.lock() = Some(journal);
    }

    /// Replaces the whole state (after gc rewrote blobs under the volume).
    pub fn replace(&self, state: State, journal: Option<JournalFile>) {
        *self.vol.state.write() = state;
        if journal.is_some() {
            *self.vol.journal.lock() = journal;
        }
    }
}

/// Where the bytes of one piece of a read come from.
enum Source {
    Blob { depth: usize, offset: u64 },
    Zero,
}

impl Volume {
    pub fn label(&self) -> &str {
        &self.0.label
    }

    pub fn size(&self) -> u64 {
        self.0.state.read().size
    }

    pub fn read_only(&self) -> bool {
        self.0.read_only
    }

    fn check(&self, st: &State, offset: u64, len: u64) -> Result<()> {
        if st.deleted {
            return Err(StoreError::Deleted(self.0.label.clone()));
        }
        match offset.checked_add(len) {
            Some(end) if end <= st.size => Ok(()),
            _ => Err(StoreError::OutOfRange {
                object: self.0.label.clone(),
                offset,
                len,
                size: st.size,
            }),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.0.read_only {
            let r = platter_types::VolumeRef::parse(&self.0.label).map_err(StoreError::from)?;
            return Err(StoreError::ReadOnly(r));
        }
        self.0.check_fenced()
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let first = offset / BLOCK;
        let end = offset + len;
        let mut pieces = Vec::new();
        let chain = {
            let st = self.0.state.read();
            self.check(&st, offset, len)?;
            st.map
                .lookup_into(first, end.div_ceil(BLOCK) - first, &mut pieces);
            st.chain.clone()
        };
        for p in &pieces {
            let (from, to) = (
                (p.start * BLOCK).max(offset),
                ((p.start + p.len) * BLOCK).min(end),
            );
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match source(p, from) {
                Source::Zero => dst.fill(0),
                Source::Blob { depth, offset } => match chain.get(depth) {
                    Some(blob) => blob.read_at(dst, offset)?,
                    None => {
                        return Err(StoreError::damaged(
                            &self.0.label,
                            format!("index names layer {depth} of {}", chain.len()),
                        ))
                    }
                },
            }
        }
        Ok(())
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        let len = buf.len() as u64;
        self.check(&self.0.state.read(), offset, len)?;
        let _gate = self.0.gate.read();
        let end = offset + len;
        let mut pos = offset;
        let mut src = buf;
        while pos < end {
            let in_block = pos % BLOCK;
            if in_block != 0 || end - pos < BLOCK {
                let n = (BLOCK - in_block).min(end - pos) as usize;
                self.rmw(pos / BLOCK, in_block as usize, &src[..n])?;
                pos += n as u64;
                src = &src[n..];
            } else {
                let n = ((end - pos) / BLOCK * BLOCK) as usize;
                self.write_blocks(pos / BLOCK, &src[..n])?;
                pos += n as u64;
                src = &src[n..];
            }
        }
        self.maybe_flush()
    }

    /// Read-modify-write of part of one block.
    fn rmw(&self, block: u64, at: usize, data: &[u8]) -> Result<()> {
        let _stripe = self.0.rmw[(block as usize) % RMW_STRIPES].lock();
        let mut full = [0u8; BLOCK as usize];
        self.read_block_clipped(block, &mut full)?;
        full[at..at + data.len()].copy_from_slice(data);
        self.write_blocks(block, &full)
    }

    /// Reads one whole block, even the last partial one of a volume whose size is not a
    /// multiple of the block size (its tail reads as zero).
    fn read_block_clipped(&self, block: u64, out: &mut [u8; BLOCK as usize]) -> Result<()> {
        let size = self.size();
        let start = block * BLOCK;
        let n = BLOCK.min(size.saturating_sub(start)) as usize;
        out[n..].fill(0);
        self.read_at(&mut out[..n], start)
    }

    /// Writes whole blocks to the top layer.
    fn write_blocks(&self, first: u64, data: &[u8]) -> Result<()> {
        let count = data.len() as u64 / BLOCK;
        if let Some((top, plan)) = self.plan_in_place(first, count)? {
            return self.write_plan(&top, first, data, plan, Vec::new());
        }
        let mut plan: Vec<Run> = Vec::new();
        let mut fresh: Vec<Record> = Vec::new();
        let top = {
            let mut st = self.0.state.write();
            if st.deleted {
                return Err(StoreError::Deleted(self.0.label.clone()));
            }
            let depth = (st.chain.len() - 1) as u16;
            for p in st.map.lookup(first, count) {
                match p.target {
                    Some(Target::Data { depth: d, phys }) if d == depth => {
                        push_run(&mut plan, p.start, p.len, phys)
                    }
                    _ => {
                        let phys = place(&st, p.start, p.len);
                        st.next_phys = st.next_phys.max(phys + p.len);
                        st.map
                            .set(p.start, p.len, Some(Target::Data { depth, phys }));
                        push_run(&mut plan, p.start, p.len, phys);
                        fresh.push(Record {
                            start: p.start,
                            len: p.len,
                            kind: RecordKind::Data { phys },
                        });
                    }
                }
            }
            st.chain.last().cloned()
        };
        let top = top.ok_or_else(|| StoreError::damaged(&self.0.label, "volume has no layers"))?;
        self.write_plan(&top, first, data, plan, fresh)
    }

    /// The common case of a guest rewriting its own blocks: when the top layer already
    /// holds every block of the range, the writes go in place and the index does not
    /// change, so a shared lock is enough (in-place writers and readers do not queue
    /// behind each other). `None` when any block needs allocating.
    fn plan_in_place(&self, first: u64, count: u64) -> Result<Option<(Arc<Blob>, Vec<Run>)>> {
        let st = self.0.state.read();
        if st.deleted {
            return Err(StoreError::Deleted(self.0.label.clone()));
        }
        let Some(depth) = st.chain.len().checked_sub(1) else {
            return Err(StoreError::damaged(&self.0.label, "volume has no layers"));
        };
        let depth = depth as u16;
        let mut plan = Vec::new();
        for p in st.map.lookup(first, count) {
            match p.target {
                Some(Target::Data { depth: d, phys }) if d == depth => plan.push(Run {
                    start: p.start,
                    len: p.len,
                    phys,
                }),
                _ => return Ok(None),
            }
        }
        Ok(st.chain.last().cloned().map(|top| (top, plan)))
    }

    fn write_plan(
        &self,
        top: &Blob,
        first: u64,
        data: &[u8],
        plan: Vec<Run>,
        fresh: Vec<Record>,
    ) -> Result<()> {
        let bulk = self.0.bulk.load(Ordering::Relaxed);
        for Run { start, len, phys } in plan {
            let from = ((start - first) * BLOCK) as usize;
            let piece = &data[from..from + (len * BLOCK) as usize];
            if bulk {
                top.write_bulk(piece, phys * BLOCK)?;
            } else {
                top.write_at(piece, phys * BLOCK)?;
            }
        }
        // Data first, then dirty, then the records: see `VolumeInner::flush`.
        self.0.dirty.store(true, Ordering::Release);
        self.push_records(fresh);
        Ok(())
    }

    fn push_records(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let mut pending = self.0.pending.lock();
        for r in records {
            if let (Some(last), RecordKind::Data { phys }) = (pending.last_mut(), r.kind) {
                if let RecordKind::Data { phys: lp } = last.kind {
                    if last.start + last.len == r.start && lp + last.len == phys {
                        last.len += r.len;
                        continue;
                    }
                }
            }
            pending.push(r);
        }
    }

    /// Moves a large backlog of index records to the journal, uncommitted. Under the flush
    /// lock, so that a flush never commits records whose data it did not sync.
    fn maybe_flush(&self) -> Result<()> {
        if self.0.pending.lock().len() < PENDING_LIMIT {
            return Ok(());
        }
        let _one = self.0.flush_lock.lock();
        let records = std::mem::take(&mut *self.0.pending.lock());
        let appended = match self.0.journal.lock().as_mut() {
            Some(j) => j.append(&records),
            None => Ok(()),
        };
        if appended.is_err() {
            // Nothing was committed: the records wait for the next flush, as before.
            self.0.restore(records, false);
        }
        appended
    }

    /// Makes every write that completed before this call durable.
    pub fn flush(&self) -> Result<()> {
        if self.0.read_only {
            return Ok(());
        }
        self.0.flush()
    }

    /// Starts writeback of what bulk writes added to the top layer since the last call,
    /// without waiting: a hint for sequential writers (imports), never needed for
    /// correctness. `flush` is still what makes writes durable.
    pub fn start_writeback(&self) -> Result<()> {
        let top = self.0.state.read().chain.last().cloned();
        match top {
            Some(top) if !self.0.read_only => top.start_writeback(),
            _ => Ok(()),
        }
    }

    /// Discards a range: it reads as zero afterwards and its space goes back.
    pub fn trim(&self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len, true)
    }

    /// Zeroes a range. `may_unmap`: storage may be released (else it stays reserved).
    pub fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.zero_range(offset, len, may_unmap)
    }

    fn zero_range(&self, offset: u64, len: u64, unmap: bool) -> Result<()> {
        self.check_writable()?;
        self.check(&self.0.state.read(), offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let _gate = self.0.gate.read();
        let end = offset + len;
        let first_full = offset.div_ceil(BLOCK);
        let end_full = end / BLOCK;
        if first_full >= end_full {
            // No whole block inside: plain zero writes.
            return self.write_zero_bytes(offset, end);
        }
        self.write_zero_bytes(offset, first_full * BLOCK)?;
        self.write_zero_bytes(end_full * BLOCK, end)?;
        let (top, holes, records) = self.zero_blocks(first_full, end_full - first_full, unmap)?;
        for (phys, n) in holes {
            top.punch_hole(phys * BLOCK, n * BLOCK)?;
        }
        self.0.dirty.store(true, Ordering::Release);
        self.push_records(records);
        self.maybe_flush()
    }

    fn write_zero_bytes(&self, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let zeros = [0u8; BLOCK as usize];
        let mut pos = from;
        while pos < to {
            let n = (BLOCK - pos % BLOCK).min(to - pos);
            self.rmw(pos / BLOCK, (pos % BLOCK) as usize, &zeros[..n as usize])?;
            pos += n;
        }
        Ok(())
    }

    /// Marks whole blocks as zero in the index; returns the top layer's physical runs to
    /// punch and the records to journal.
    #[allow(clippy::type_complexity)]
    fn zero_blocks(
        &self,
        first: u64,
        count: u64,
        unmap: bool,
    ) -> Result<(Arc<Blob>, Vec<(u64, u64)>, Vec<Record>)> {
        let mut st: RwLockWriteGuard<'_, State> = self.0.state.write();
        if st.deleted {
            return Err(StoreError::Deleted(self.0.label.clone()));
        }
        let depth = (st.chain.len() - 1) as u16;
        let holes: Vec<(u64, u64)> = st
            .map
            .lookup(first, count)
            .into_iter()
            .filter_map(|p| match p.target {
                Some(Target::Data { depth: d, phys }) if d == depth => Some((phys, p.len)),
                _ => None,
            })
            .collect();
        let mut records = Vec::new();
        for b in st.base.lookup(first, count) {
            // Where nothing lies below, a discard simply forgets the blocks.
            let kind = match (b.target, unmap) {
                (None, true) => RecordKind::Clear,
                _ => RecordKind::Zero { unmapped: unmap },
            };
            let rec = Record {
                start: b.start,
                len: b.len,
                kind,
            };
            let target = rec.target(depth);
            st.map.set(b.start, b.len, target);
            records.push(rec);
        }
        let top = st
            .chain
            .last()
            .cloned()
            .ok_or_else(|| StoreError::damaged(&self.0.label, "volume has no layers"))?;
        Ok((top, holes, records))
    }

    /// Which parts of a byte range hold data, zeros, or nothing.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<BlockExtent>> {
        let st = self.0.state.read();
        self.check(&st, offset, len)?;
        let end = offset + len;
        let first = offset / BLOCK;
        let mut out: Vec<BlockExtent> = Vec::new();
        for p in st.map.lookup(first, end.div_ceil(BLOCK) - first) {
            let kind = match p.target {
                Some(Target::Data { .. }) => BlockKind::Data,
                Some(Target::Zero { unmapped: false }) => BlockKind::Zero,
                Some(Target::Zero { unmapped: true }) | None => BlockKind::Hole,
            };
            let (from, to) = (
                (p.start * BLOCK).max(offset),
                ((p.start + p.len) * BLOCK).min(end),
            );
            match out.last_mut() {
                Some(last) if last.kind == kind && last.offset + last.len == from => {
                    last.len += to - from
                }
                _ => out.push(BlockExtent {
                    offset: from,
                    len: to - from,
                    kind,
                }),
            }
        }
        Ok(out)
    }

    /// Bytes of data this volume's own top layer holds (not shared with anything).
    pub fn own_allocated_bytes(&self) -> u64 {
        self.0
            .state
            .read()
            .chain
            .last()
            .map(|b| b.allocated_bytes())
            .unwrap_or(0)
    }
}

fn source(p: &Piece, from: u64) -> Source {
    match p.target {
        Some(Target::Data { depth, phys }) => Source::Blob {
            depth: depth as usize,
            offset: phys * BLOCK + (from - p.start * BLOCK),
        },
        _ => Source::Zero,
    }
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("label", &self.0.label)
            .field("read_only", &self.0.read_only)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(start: u64, len: u64, phys: u64) -> Record {
        Record {
            start,
            len,
            kind: RecordKind::Data { phys },
        }
    }

    #[test]
    fn placement_keeps_identity_only_where_every_block_has_it() {
        assert_eq!(placement(&[]), (0, true));
        assert_eq!(placement(&[data(5, 3, 5), data(1, 1, 1)]), (8, true));
        // A layer from an older build appended its blocks: keep appending after them.
        assert_eq!(placement(&[data(5, 3, 0), data(1, 1, 3)]), (4, false));
        assert_eq!(placement(&[data(5, 3, 5), data(9, 1, 2)]), (8, false));
        // Blocks past 8 TiB are appended after it, and that is still identity placement.
        let far = (1u64 << 32) - 1;
        assert_eq!(
            placement(&[data(far, 1, IDENTITY_BLOCKS), data(2, 1, 2)]),
            (IDENTITY_BLOCKS + 1, true)
        );
    }
}
