//! A power cut during a flush's journal sync may leave the new header on disk without
//! the records it covers. The layer then opens at the commit before (its writes were
//! never acknowledged), is not reported damaged, and later commits never pick up the
//! lost records or any left over from the crashed writer.

use platter_snapshotter::journal::{Header, HEADER_SLOT, RECORDS_START};
use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};

fn journals(store: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(store.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path().join("journal"))
        .collect()
}

/// Zeroes the records of the newest commit, as a power cut before they reached the disk.
fn lose_newest_commit(journal: &std::path::Path) {
    let mut bytes = std::fs::read(journal).unwrap();
    let slot = HEADER_SLOT as usize;
    let newest = [&bytes[..slot], &bytes[slot..2 * slot]]
        .into_iter()
        .filter_map(|s| Header::decode(s).ok())
        .max_by_key(|h| h.seq)
        .unwrap();
    let at = RECORDS_START as usize;
    bytes[at + newest.start as usize..at + newest.committed as usize].fill(0);
    std::fs::write(journal, bytes).unwrap();
}

fn read(store: &Store, at: u64) -> Vec<u8> {
    let v = store.open_volume(&VolumeRef::parse("v").unwrap()).unwrap();
    let mut b = vec![0u8; 4096];
    v.read_at(&mut b, at).unwrap();
    b
}

#[test]
fn an_incomplete_commit_is_rolled_back_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .create_volume(&Name::new("v").unwrap(), 1 << 20)
            .unwrap();
        let v = store.open_volume(&VolumeRef::parse("v").unwrap()).unwrap();
        v.write_at(&[1u8; 4096], 0).unwrap();
        v.flush().unwrap();
        v.write_at(&[2u8; 4096], 8192).unwrap();
        v.flush().unwrap();
    }
    let j = journals(dir.path());
    assert_eq!(j.len(), 1);
    lose_newest_commit(&j[0]);
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(read(&store, 0), vec![1u8; 4096], "the first flush stays");
        assert_eq!(
            read(&store, 8192),
            vec![0u8; 4096],
            "the lost commit is gone whole"
        );
        let v = store.open_volume(&VolumeRef::parse("v").unwrap()).unwrap();
        v.write_at(&[3u8; 4096], 4096).unwrap();
        v.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(read(&store, 0), vec![1u8; 4096]);
    assert_eq!(read(&store, 4096), vec![3u8; 4096]);
    assert_eq!(read(&store, 8192), vec![0u8; 4096]);
    drop(store);
    // And that new commit lost the same way falls back to the first one again.
    lose_newest_commit(&j[0]);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(read(&store, 0), vec![1u8; 4096]);
    assert_eq!(read(&store, 4096), vec![0u8; 4096]);
}
