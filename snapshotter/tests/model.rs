//! The store against a model: every volume and snapshot is a `Vec<u8>`; random sequences
//! of writes, trims, write-zeroes, snapshots, clones, deletes, resizes, gc and reopens must
//! read back exactly as the model says, and block status must agree with the data.

use std::collections::BTreeMap;

use platter_snapshotter::{BlockKind, Store, StoreError};
use platter_types::{Name, VolumeRef};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write {
        vol: usize,
        off: u64,
        len: u64,
        seed: u8,
    },
    Trim {
        vol: usize,
        off: u64,
        len: u64,
    },
    Zero {
        vol: usize,
        off: u64,
        len: u64,
        unmap: bool,
    },
    Snapshot {
        vol: usize,
    },
    Clone {
        src: usize,
    },
    Delete {
        obj: usize,
    },
    Resize {
        vol: usize,
        grow: u64,
    },
    Flush {
        vol: usize,
    },
    Reopen,
    Gc,
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0u64..70_000, 1u64..20_000);
    prop_oneof![
        6 => (any::<usize>(), range.clone(), any::<u8>()).prop_map(|(vol, (off, len), seed)| Op::Write { vol, off, len, seed }),
        2 => (any::<usize>(), range.clone()).prop_map(|(vol, (off, len))| Op::Trim { vol, off, len }),
        2 => (any::<usize>(), range, any::<bool>()).prop_map(|(vol, (off, len), unmap)| Op::Zero { vol, off, len, unmap }),
        2 => any::<usize>().prop_map(|vol| Op::Snapshot { vol }),
        2 => any::<usize>().prop_map(|src| Op::Clone { src }),
        1 => any::<usize>().prop_map(|obj| Op::Delete { obj }),
        1 => (any::<usize>(), 0u64..16).prop_map(|(vol, grow)| Op::Resize { vol, grow: grow * 512 }),
        1 => any::<usize>().prop_map(|vol| Op::Flush { vol }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Gc),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    store: Option<Store>,
    model: BTreeMap<VolumeRef, Vec<u8>>,
    origin: BTreeMap<Name, VolumeRef>,
    counter: usize,
}

impl Harness {
    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn volumes(&self) -> Vec<VolumeRef> {
        self.model
            .keys()
            .filter(|r| !r.is_snapshot())
            .cloned()
            .collect()
    }

    fn pick_volume(&self, i: usize) -> Option<VolumeRef> {
        let v = self.volumes();
        (!v.is_empty()).then(|| v[i % v.len()].clone())
    }

    fn fresh(&mut self, prefix: &str) -> Name {
        self.counter += 1;
        Name::new(&format!("{prefix}{}", self.counter)).unwrap()
    }

    fn clip(&self, r: &VolumeRef, off: u64, len: u64) -> (u64, u64) {
        let size = self.model[r].len() as u64;
        let off = off % size;
        (off, len.min(size - off))
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Write {
                vol,
                off,
                len,
                seed,
            } => {
                let Some(r) = self.pick_volume(vol) else {
                    return;
                };
                let (off, len) = self.clip(&r, off, len);
                let data: Vec<u8> = (0..len)
                    .map(|i| seed.wrapping_add((i % 251) as u8) | 1)
                    .collect();
                self.store()
                    .open_volume(&r)
                    .unwrap()
                    .write_at(&data, off)
                    .unwrap();
                self.model.get_mut(&r).unwrap()[off as usize..(off + len) as usize]
                    .copy_from_slice(&data);
            }
            Op::Trim { vol, off, len } | Op::Zero { vol, off, len, .. } => {
                let Some(r) = self.pick_volume(vol) else {
                    return;
                };
                let (off, len) = self.clip(&r, off, len);
                let v = self.store().open_volume(&r).unwrap();
                match op {
                    Op::Zero { unmap, .. } => v.write_zeroes(off, len, unmap).unwrap(),
                    _ => v.trim(off, len).unwrap(),
                }
                self.model.get_mut(&r).unwrap()[off as usize..(off + len) as usize].fill(0);
            }
            Op::Snapshot { vol } => {
                let Some(r) = self.pick_volume(vol) else {
                    return;
                };
                let s = self.fresh("s");
                self.store().snapshot(&r.volume, &s).unwrap();
                let data = self.model[&r].clone();
                self.model.insert(
                    VolumeRef {
                        volume: r.volume.clone(),
                        snapshot: Some(s),
                    },
                    data,
                );
            }
            Op::Clone { src } => {
                let all: Vec<VolumeRef> = self.model.keys().cloned().collect();
                if all.is_empty() {
                    return;
                }
                let src = all[src % all.len()].clone();
                let n = self.fresh("c");
                self.store().clone_volume(&src, &n).unwrap();
                self.model
                    .insert(VolumeRef::volume(n.clone()), self.model[&src].clone());
                self.origin.insert(n, src);
            }
            Op::Delete { obj } => {
                let all: Vec<VolumeRef> = self.model.keys().cloned().collect();
                if all.is_empty() {
                    return;
                }
                let r = all[obj % all.len()].clone();
                let has_clones = self.origin.values().any(|o| {
                    o.volume == r.volume && (r.snapshot.is_none() || o.snapshot == r.snapshot)
                });
                match self.store().delete(&r) {
                    Err(StoreError::HasDependants { .. }) => {
                        assert!(has_clones, "refused {r} without clones")
                    }
                    Err(e) => panic!("delete {r}: {e}"),
                    Ok(()) => {
                        assert!(!has_clones, "deleted {r} although clones depend on it");
                        self.model.retain(|k, _| {
                            if r.is_snapshot() {
                                k != &r
                            } else {
                                k.volume != r.volume
                            }
                        });
                        if !r.is_snapshot() {
                            self.origin.remove(&r.volume);
                        }
                        assert!(self.store().open_volume(&r).is_err());
                    }
                }
            }
            Op::Resize { vol, grow } => {
                let Some(r) = self.pick_volume(vol) else {
                    return;
                };
                let new = self.model[&r].len() as u64 + grow;
                self.store().resize(&r.volume, new).unwrap();
                self.model.get_mut(&r).unwrap().resize(new as usize, 0);
            }
            Op::Flush { vol } => {
                let Some(r) = self.pick_volume(vol) else {
                    return;
                };
                self.store().open_volume(&r).unwrap().flush().unwrap();
            }
            Op::Reopen => {
                self.store = None;
                self.store = Some(Store::open(self.dir.path()).unwrap());
            }
            Op::Gc => {
                self.store().gc().unwrap();
            }
        }
    }

    fn verify(&self) {
        for (r, want) in &self.model {
            let v = self.store().open_volume(r).unwrap();
            assert_eq!(v.size(), want.len() as u64, "{r} size");
            let mut got = vec![0u8; want.len()];
            v.read_at(&mut got, 0).unwrap();
            if &got != want {
                let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
                panic!("{r}: first difference at byte {at}");
            }
            let mut pos = 0;
            for e in v.block_status(0, want.len() as u64).unwrap() {
                assert_eq!(e.offset, pos, "{r}: block status is not contiguous");
                if e.kind != BlockKind::Data {
                    let z = &want[e.offset as usize..(e.offset + e.len) as usize];
                    assert!(
                        z.iter().all(|&b| b == 0),
                        "{r}: {:?} extent at {} holds data",
                        e.kind,
                        e.offset
                    );
                }
                pos += e.len;
            }
            assert_eq!(pos, want.len() as u64);
            let info = self.store().inspect(r).unwrap();
            assert_eq!(info.size, want.len() as u64);
        }
        let listed = self.store().list().unwrap();
        assert_eq!(listed.len(), self.model.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(sizes in proptest::collection::vec(1u64..200, 1..3), ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut h = Harness { dir, store: Some(store), model: BTreeMap::new(), origin: BTreeMap::new(), counter: 0 };
        for s in sizes {
            let n = h.fresh("v");
            // Sizes of any multiple of 512, so partial last blocks are exercised.
            h.store().create_volume(&n, s * 512).unwrap();
            h.model.insert(VolumeRef::volume(n), vec![0u8; (s * 512) as usize]);
        }
        for o in ops {
            h.apply(o);
        }
        h.verify();
        h.apply(Op::Reopen);
        h.verify();
        h.apply(Op::Gc);
        h.verify();
    }
}
