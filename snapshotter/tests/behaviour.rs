//! Behaviour that the model test does not pin down: space accounting with punched holes,
//! O(1) snapshots of large sparse volumes, imports that vanish unless committed, gc
//! deduplication, and concurrent async readers and writers.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use platter_snapshotter::{BlockKind, Kind, Store};
use platter_types::{Name, VolumeRef};

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn r(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

fn du(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            du(&e.path())
        } else {
            m.blocks() * 512
        };
    }
    total
}

#[test]
fn huge_sparse_volumes_cost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("big"), 16 << 40).unwrap();
    let v = store.open_volume(&r("big")).unwrap();
    let end = (16u64 << 40) - 4096;
    v.write_at(&[1u8; 4096], end).unwrap();
    v.flush().unwrap();
    let mut b = [0u8; 4096];
    v.read_at(&mut b, end).unwrap();
    assert_eq!(b, [1u8; 4096]);
    assert!(
        du(dir.path()) < 1 << 20,
        "a 16 TiB volume uses {} bytes",
        du(dir.path())
    );
    let st = v.block_status(0, 16 << 40).unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].kind, BlockKind::Hole);
    assert_eq!(st[1].kind, BlockKind::Data);
}

#[test]
fn trim_and_write_zeroes_give_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("v"), 64 << 20).unwrap();
    let v = store.open_volume(&r("v")).unwrap();
    v.write_at(&vec![9u8; 32 << 20], 0).unwrap();
    v.flush().unwrap();
    let full = du(dir.path());
    assert!(full >= 32 << 20);
    v.trim(0, 16 << 20).unwrap();
    v.write_zeroes(16 << 20, 8 << 20, true).unwrap();
    v.flush().unwrap();
    let after = du(dir.path());
    assert!(
        after <= full - (23 << 20),
        "trim freed only {} bytes",
        full - after
    );
    let st = v.block_status(0, 64 << 20).unwrap();
    assert_eq!(st[0].kind, BlockKind::Hole);
    assert_eq!(st[0].len, 24 << 20);
    assert_eq!(st[1].kind, BlockKind::Data);
    // Without unmap, zeroes are reported as allocated zeroes.
    v.write_zeroes(24 << 20, 4096, false).unwrap();
    assert_eq!(
        v.block_status(24 << 20, 4096).unwrap()[0].kind,
        BlockKind::Zero
    );
}

#[test]
fn snapshots_and_clones_copy_nothing_and_diverge() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("v"), 1 << 30).unwrap();
    let v = store.open_volume(&r("v")).unwrap();
    v.write_at(&vec![1u8; 8 << 20], 0).unwrap();
    let before = du(dir.path());
    let info = store.snapshot(&n("v"), &n("s1")).unwrap();
    assert_eq!(info.kind, Kind::Snapshot);
    store.clone_volume(&r("v@s1"), &n("c1")).unwrap();
    store.clone_volume(&r("v"), &n("c2")).unwrap();
    assert!(
        du(dir.path()) < before + (1 << 20),
        "snapshot and clones copied data"
    );
    v.write_at(&[2u8; 4096], 0).unwrap();
    let c1 = store.open_volume(&r("c1")).unwrap();
    c1.write_at(&[3u8; 4096], 4096).unwrap();
    let mut b = [0u8; 8192];
    store
        .open_volume(&r("v@s1"))
        .unwrap()
        .read_at(&mut b, 0)
        .unwrap();
    assert_eq!(b, [1u8; 8192]);
    c1.read_at(&mut b, 0).unwrap();
    assert_eq!((b[0], b[4096]), (1, 3));
    store
        .open_volume(&r("c2"))
        .unwrap()
        .read_at(&mut b, 0)
        .unwrap();
    assert_eq!(b, [1u8; 8192]);
    let info = store.inspect(&r("v")).unwrap();
    assert_eq!(info.snapshots, vec!["v@s1"]);
    assert_eq!(info.clones, vec!["c2"]);
    assert_eq!(store.inspect(&r("v@s1")).unwrap().clones, vec!["c1"]);
    assert_eq!(
        store.inspect(&r("c1")).unwrap().origin.as_deref(),
        Some("v@s1")
    );
}

#[test]
fn uncommitted_imports_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    {
        let t = store.create_temp_volume(1 << 20).unwrap();
        t.write_at(&[5u8; 4096], 0).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
        0
    );
    let t = store.create_temp_volume(1 << 20).unwrap();
    t.write_at(&[5u8; 4096], 0).unwrap();
    t.commit(&n("imported")).unwrap();
    let mut b = [0u8; 4096];
    store
        .open_volume(&r("imported"))
        .unwrap()
        .read_at(&mut b, 0)
        .unwrap();
    assert_eq!(b, [5u8; 4096]);
    // An import that a crash interrupted is removed at the next open: copy the store as
    // a crash would leave it, with the import in flight.
    let t = store.create_temp_volume(1 << 20).unwrap();
    t.write_at(&[6u8; 4096], 0).unwrap();
    t.flush().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.path().display()))
        .arg(crashed.path())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(crashed.path().join("lock")).unwrap();
    assert_eq!(
        std::fs::read_dir(crashed.path().join("blobs"))
            .unwrap()
            .count(),
        2
    );
    let reopened = Store::open(crashed.path()).unwrap();
    assert_eq!(reopened.list().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_dir(crashed.path().join("blobs"))
            .unwrap()
            .count(),
        1
    );
    drop(t);
}

#[test]
fn gc_seals_and_deduplicates_identical_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for name in ["a", "b"] {
        store.create_volume(&n(name), 16 << 20).unwrap();
        let v = store.open_volume(&r(name)).unwrap();
        // Same contents written in a different order: different files, same layer.
        if name == "a" {
            v.write_at(&vec![4u8; 4 << 20], 0).unwrap();
            v.write_at(&vec![5u8; 4 << 20], 8 << 20).unwrap();
        } else {
            v.write_at(&vec![5u8; 4 << 20], 8 << 20).unwrap();
            v.write_at(&vec![4u8; 4 << 20], 0).unwrap();
        }
        store.snapshot(&n(name), &n("base")).unwrap();
    }
    let before = du(dir.path());
    let report = store.gc().unwrap();
    assert_eq!(report.layers_sealed, 2);
    assert_eq!(report.layers_deduplicated, 1);
    assert!(report.bytes_freed >= 8 << 20, "{report:?}");
    assert!(du(dir.path()) <= before - (8 << 20));
    let a = store.inspect(&r("a@base")).unwrap();
    let b = store.inspect(&r("b@base")).unwrap();
    assert!(a.chain[0].blob.starts_with("sha256-"));
    assert_eq!(a.chain[0].blob, b.chain[0].blob);
    for name in ["a", "b@base"] {
        let mut buf = vec![0u8; 16 << 20];
        store
            .open_volume(&r(name))
            .unwrap()
            .read_at(&mut buf, 0)
            .unwrap();
        assert!(
            buf[..4 << 20].iter().all(|&x| x == 4)
                && buf[8 << 20..12 << 20].iter().all(|&x| x == 5)
        );
    }
    // Writes keep working after gc rebuilt the indexes, and survive a reopen.
    store
        .open_volume(&r("a"))
        .unwrap()
        .write_at(&[8u8; 512], 100)
        .unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let mut b = [0u8; 512];
    store
        .open_volume(&r("a"))
        .unwrap()
        .read_at(&mut b, 100)
        .unwrap();
    assert_eq!(b, [8u8; 512]);
}

/// A sealed layer's journal is its index compacted (one record per extent), not its write
/// history: 2,000 flushed rewrites of 8 blocks (plus a zeroed and a trimmed range) seal
/// into a handful of records, and every block reads back as before, also after a reopen.
#[test]
fn sealing_writes_a_compacted_index() {
    use platter_snapshotter::journal::JournalFile;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("a"), 1 << 20).unwrap();
    let v = store.open_volume(&r("a")).unwrap();
    // A block rewritten in place adds no record; one trimmed and written again adds two.
    for i in 0..1000u32 {
        let block = u64::from(i % 8);
        v.trim(block * 4096, 4096).unwrap();
        v.write_at(&[(i % 251) as u8; 4096], block * 4096).unwrap();
        v.flush().unwrap();
    }
    v.write_zeroes(64 << 10, 8192, false).unwrap();
    v.trim(128 << 10, 4096).unwrap();
    v.flush().unwrap();
    let mut before = vec![0u8; 1 << 20];
    v.read_at(&mut before, 0).unwrap();
    let history = |blob: &str| {
        let path = dir.path().join("blobs").join(blob).join("journal");
        JournalFile::open(&path, false).unwrap().1.len()
    };
    let frozen = store.inspect(&r("a")).unwrap().chain[0].blob.clone();
    assert!(history(&frozen) >= 2000, "{}", history(&frozen));
    store.snapshot(&n("a"), &n("s")).unwrap();
    store.gc().unwrap();
    let sealed = store.inspect(&r("a@s")).unwrap().chain[0].blob.clone();
    assert!(sealed.starts_with("sha256-"), "{sealed}");
    // One record per extent: eight data blocks, the zeroed and the trimmed range.
    assert!(history(&sealed) <= 10, "{} records", history(&sealed));
    drop(v);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    for target in ["a", "a@s"] {
        let mut after = vec![0u8; 1 << 20];
        store
            .open_volume(&r(target))
            .unwrap()
            .read_at(&mut after, 0)
            .unwrap();
        assert!(after == before, "{target} reads differently after sealing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_async_readers_and_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for name in ["x", "y"] {
        store.create_volume(&n(name), 8 << 20).unwrap();
    }
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let store = store.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let v = store
                .open_volume(&r(if t % 2 == 0 { "x" } else { "y" }))
                .unwrap();
            // Each task owns its own 512-byte slots: sub-block writes to shared blocks.
            for i in 0..200u64 {
                let off = (i * 16 + t / 2) * 512;
                v.write_at(&[(t as u8) ^ (i as u8) | 1; 512], off).unwrap();
                let mut b = [0u8; 512];
                v.read_at(&mut b, off).unwrap();
                assert_eq!(b, [(t as u8) ^ (i as u8) | 1; 512]);
            }
        }));
    }
    let snapshotter = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..10 {
                store.snapshot(&n("x"), &n(&format!("s{i}"))).unwrap();
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    snapshotter.await.unwrap();
    for t in 0..16u64 {
        let v = store
            .open_volume(&r(if t % 2 == 0 { "x" } else { "y" }))
            .unwrap();
        for i in 0..200u64 {
            let mut b = [0u8; 512];
            v.read_at(&mut b, (i * 16 + t / 2) * 512).unwrap();
            assert_eq!(
                b,
                [(t as u8) ^ (i as u8) | 1; 512],
                "task {t} write {i} lost"
            );
        }
    }
}

#[test]
fn imports_can_change_size_before_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut t = store.create_temp_volume(1 << 20).unwrap();
    t.write_at(&[3u8; 8192], (1 << 20) - 8192).unwrap();
    t.set_size(1 << 19).unwrap();
    t.set_size(2 << 20).unwrap();
    let mut b = vec![0u8; 8192];
    t.read_at(&mut b, (1 << 20) - 8192).unwrap();
    assert!(b.iter().all(|&x| x == 0), "data past a shrink came back");
    t.write_at(&[4u8; 512], (2 << 20) - 512).unwrap();
    let info = t.commit(&n("grown")).unwrap();
    assert_eq!(info.size, 2 << 20);
    assert!(store
        .create_temp_volume(1 << 20)
        .unwrap()
        .set_size(1000)
        .is_err());
}

/// Copies a store directory as a crash would leave it (the lock file aside).
fn crash_copy(dir: &std::path::Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(copy.path().join("lock")).unwrap();
    copy
}

#[test]
fn a_large_unflushed_backlog_spills_uncommitted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("v"), 1 << 30).unwrap();
    let v = store.open_volume(&r("v")).unwrap();
    v.write_at(&[9u8; 4096], 0).unwrap();
    v.flush().unwrap();
    // 80 Ki separate runs of allocated zeroes: more index records than the writer keeps.
    for i in 0..80 * 1024u64 {
        v.write_zeroes((2 * i + 2) * 4096, 4096, false).unwrap();
    }
    let journal_len = |d: &std::path::Path| -> u64 {
        let blob = std::fs::read_dir(d.join("blobs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::metadata(blob.join("journal")).unwrap().len()
    };
    assert!(
        journal_len(dir.path()) > 64 * 1024 * 32,
        "the backlog was not moved to the journal"
    );
    // A crash now: the spilled records were never committed, so none of them count.
    let crashed = crash_copy(dir.path());
    let c = Store::open(crashed.path()).unwrap();
    let cv = c.open_volume(&r("v")).unwrap();
    let st = cv.block_status(0, 1 << 30).unwrap();
    assert_eq!(st[0].kind, BlockKind::Data);
    assert!(
        st[1..].iter().all(|e| e.kind == BlockKind::Hole),
        "uncommitted records were used"
    );
    // After a flush, all of them do.
    v.flush().unwrap();
    let crashed = crash_copy(dir.path());
    let c = Store::open(crashed.path()).unwrap();
    let st = c
        .open_volume(&r("v"))
        .unwrap()
        .block_status(0, 1 << 30)
        .unwrap();
    assert_eq!(
        st.iter().filter(|e| e.kind == BlockKind::Zero).count(),
        80 * 1024
    );
    let mut b = [0u8; 4096];
    c.open_volume(&r("v")).unwrap().read_at(&mut b, 0).unwrap();
    assert_eq!(b, [9u8; 4096]);
}

/// Writes larger than the store's internal write piece, in-place rewrites that span
/// blocks the top layer holds and blocks it does not, writeback hints in between, and a
/// reopen: every byte reads back as last written.
#[test]
fn large_and_in_place_writes_read_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let size = 8u64 << 20;
    let mut model = vec![0u8; size as usize];
    let mut put = |v: &platter_snapshotter::Volume, off: usize, len: usize, seed: u8| {
        let buf: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ seed).collect();
        v.write_at(&buf, off as u64).unwrap();
        model[off..off + len].copy_from_slice(&buf);
    };
    {
        let store = Store::open(dir.path()).unwrap();
        store.create_volume(&n("v"), size).unwrap();
        let v = store.open_volume(&r("v")).unwrap();
        put(&v, 4096, 3 << 20, 1); // fresh, many pieces
        v.start_writeback().unwrap();
        put(&v, 8192, 1 << 20, 2); // wholly in place
        put(&v, (3 << 20) - 4096, 2 << 20, 3); // half in place, half fresh
        put(&v, 100, 70_000, 4); // unaligned, in place
        v.start_writeback().unwrap();
        store.snapshot(&n("v"), &n("s")).unwrap();
        put(&v, 0, 5 << 20, 5); // after a snapshot nothing is in place
        v.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let v = store.open_volume(&r("v")).unwrap();
    let mut got = vec![0u8; size as usize];
    v.read_at(&mut got, 0).unwrap();
    assert!(got == model, "volume differs from what was written");
}

/// A layer puts each block it takes over at the block's own offset in its data file, so
/// a range rewritten piecemeal in any order reads back from one contiguous piece (and
/// the data of the layer written before the snapshot is not moved).
#[test]
fn blocks_a_layer_takes_over_sit_at_their_own_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_volume(&n("v"), 1 << 20).unwrap();
    let v = store.open_volume(&r("v")).unwrap();
    v.write_at(&[1u8; 64 * 4096], 0).unwrap();
    store.snapshot(&n("v"), &n("s")).unwrap();
    for (block, byte) in [(40u64, 0xaau8), (10, 0xbb), (11, 0xcc), (9, 0xdd)] {
        v.write_at(&[byte; 4096], block * 4096).unwrap();
    }
    v.flush().unwrap();
    let at = |data: &std::path::Path, block: u64| -> u8 {
        let mut b = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(data).unwrap(),
            &mut b,
            block * 4096,
        )
        .map(|_| b[0])
        .unwrap_or(0)
    };
    let tops: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path().join("data"))
        .filter(|d| at(d, 40) == 0xaa)
        .collect();
    assert_eq!(tops.len(), 1, "no layer holds block 40 at offset 40");
    assert_eq!(
        [at(&tops[0], 9), at(&tops[0], 10), at(&tops[0], 11)],
        [0xdd, 0xbb, 0xcc]
    );
    let mut got = vec![0u8; 64 * 4096];
    v.read_at(&mut got, 0).unwrap();
    assert!(got[9 * 4096..12 * 4096]
        .chunks(4096)
        .zip([0xdd, 0xbb, 0xcc])
        .all(|(c, b)| c.iter().all(|&x| x == b)));
    assert!(got[..9 * 4096].iter().all(|&x| x == 1));
}
