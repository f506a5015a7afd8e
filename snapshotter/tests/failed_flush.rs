//! A flush that fails never makes a later flush lie: the records it took stay pending
//! (a failed write is retried by the next flush), and a failed sync fences the volume
//! (no write or flush succeeds on it until it is reopened, which rebuilds it from its
//! journal). Errors are injected at the store's error points (`failpoints` feature).
//!
//! Error points are process-wide, so every test here takes `SERIAL` first.

use std::sync::Mutex;

use platter_snapshotter::failpoint::{arm_error, disarm_all};
use platter_snapshotter::{Store, StoreError, Volume};
use platter_types::{Name, VolumeRef};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;
const BLOCKS: u64 = 200;
const STRIDE: u64 = 3;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    disarm_all();
    g
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn vref(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

fn block(i: u64, gen: u8) -> Vec<u8> {
    let mut b = vec![gen; 4096];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

/// 200 separate 4 KiB blocks (never adjacent, so 200 index records).
fn write_blocks(v: &Volume, gen: u8) {
    for i in 0..BLOCKS {
        v.write_at(&block(i, gen), i * STRIDE * 4096).unwrap();
    }
}

fn assert_blocks(v: &Volume, gen: u8) {
    let mut buf = vec![0u8; 4096];
    for i in 0..BLOCKS {
        v.read_at(&mut buf, i * STRIDE * 4096).unwrap();
        assert!(buf == block(i, gen), "block {i} lost (gen {gen})");
    }
}

fn setup() -> (tempfile::TempDir, Store, Volume) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&name("disk"), 4 << 20).unwrap();
    let v = store.open_volume(&vref("disk")).unwrap();
    (dir, store, v)
}

fn reopen(dir: &tempfile::TempDir, store: Store, v: Volume) -> (Store, Volume) {
    drop(v);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let v = store.open_volume(&vref("disk")).unwrap();
    (store, v)
}

/// The failures a retry may follow: the journal could not be written (a full
/// filesystem), so nothing was committed and nothing is fenced.
#[test]
fn a_failed_journal_write_keeps_the_writes_for_the_next_flush() {
    let _g = serial();
    for point in ["journal-append", "journal-write-header"] {
        let (dir, store, v) = setup();
        write_blocks(&v, 1);
        arm_error(point, ENOSPC, 1);
        let err = v.flush().expect_err(point);
        assert!(err.to_string().contains("No space left"), "{point}: {err}");
        // The next flush succeeds, and so it must have committed every block.
        v.flush().unwrap();
        let (_store, v) = reopen(&dir, store, v);
        assert_blocks(&v, 1);
    }
}

#[test]
fn writes_during_a_failed_flush_keep_their_order() {
    let _g = serial();
    let (dir, store, v) = setup();
    write_blocks(&v, 1);
    arm_error("journal-append", ENOSPC, 1);
    v.flush().unwrap_err();
    // Newer writes of the same blocks must win over the records put back.
    write_blocks(&v, 2);
    v.flush().unwrap();
    let (_store, v) = reopen(&dir, store, v);
    assert_blocks(&v, 2);
}

/// A failed data sync cannot be retried (the kernel may have dropped the pages): the
/// volume is fenced, and no later flush on it reports success.
#[test]
fn a_failed_data_sync_fences_the_volume() {
    let _g = serial();
    let (dir, store, v) = setup();
    write_blocks(&v, 1);
    v.flush().unwrap();
    write_blocks(&v, 2);
    arm_error("blob-data-sync", EIO, 1);
    let err = v.flush().unwrap_err();
    assert!(err.to_string().contains("Input/output error"), "{err}");
    for _ in 0..2 {
        assert!(
            matches!(v.flush(), Err(StoreError::Fenced { .. })),
            "a fenced volume never flushes"
        );
    }
    let err = v.write_at(&[7u8; 4096], 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("volume disk takes no writes or flushes: a sync failed"),
        "{err}"
    );
    // Snapshots need a flush: refused too, so no snapshot claims unsynced data.
    assert!(store.snapshot(&name("disk"), &name("s")).is_err());
    // Reads go on.
    v.read_at(&mut [0u8; 4096], 0).unwrap();

    // Once nobody holds it, the store rebuilds it from the journal: the first flush's
    // blocks are there (rewritten in place since, unflushed: each reads as the flushed
    // or the newer contents), and it works again.
    drop(v);
    let v = store.open_volume(&vref("disk")).unwrap();
    let mut buf = vec![0u8; 4096];
    for i in 0..BLOCKS {
        v.read_at(&mut buf, i * STRIDE * 4096).unwrap();
        assert!(buf == block(i, 1) || buf == block(i, 2), "block {i}");
    }
    write_blocks(&v, 3);
    v.flush().unwrap();
    let (_store, v) = reopen(&dir, store, v);
    assert_blocks(&v, 3);
}

#[test]
fn a_failed_journal_sync_fences_and_reopening_rewrites_the_journal() {
    let _g = serial();
    let (dir, store, v) = setup();
    write_blocks(&v, 1);
    arm_error("journal-sync", EIO, 1);
    v.flush().unwrap_err();
    assert!(matches!(v.flush(), Err(StoreError::Fenced { .. })));
    // Held elsewhere: the fenced instance stays (two users must see one volume).
    let other = store.open_volume(&vref("disk")).unwrap();
    assert!(matches!(other.flush(), Err(StoreError::Fenced { .. })));
    drop(other);
    drop(v);
    // The reopen writes the committed records again and syncs them: that sync is the
    // one armed now, so the reopen fails rather than trusting pages it cannot vouch for.
    arm_error("journal-sync", EIO, 1);
    assert!(store.open_volume(&vref("disk")).is_err());
    let v = store.open_volume(&vref("disk")).unwrap();
    v.flush().unwrap();
    // The failed commit's header may or may not count: each block is old or new.
    let mut buf = vec![0u8; 4096];
    for i in 0..BLOCKS {
        v.read_at(&mut buf, i * STRIDE * 4096).unwrap();
        assert!(
            buf == block(i, 1) || buf.iter().all(|&b| b == 0),
            "block {i}"
        );
    }
    write_blocks(&v, 2);
    v.flush().unwrap();
    let (_store, v) = reopen(&dir, store, v);
    assert_blocks(&v, 2);
}
