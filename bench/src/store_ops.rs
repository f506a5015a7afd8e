//! Store operations against the number of objects already in the store (issue 20's
//! target: flat, < 5 ms each at 10,000). One store grows from 10 to 1,000 to 10,000
//! volumes; at each size every operation is timed on fresh names, the median and the
//! slowest of the rounds are reported, and the ratio to the 10-volume median shows how
//! flat it is. Each operation includes its durable metadata commit (an fsync).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};

use crate::table::Table;

const ROUNDS: usize = 25;
const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn name(s: &str) -> Result<Name> {
    Ok(Name::new(s)?)
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() - 1])
}

/// Times of create, snapshot, clone (of the snapshot) and delete (of the clone).
fn one_round(store: &Store, i: usize) -> Result<[f64; 4]> {
    let (vol, clone) = (name(&format!("op-{i}"))?, name(&format!("op-{i}-c"))?);
    let t0 = Instant::now();
    store.create_volume(&vol, 1 << 30)?;
    let create = ms(t0);
    let t0 = Instant::now();
    store.snapshot(&vol, &name("s")?)?;
    let snapshot = ms(t0);
    let t0 = Instant::now();
    store.clone_volume(&VolumeRef::parse(&format!("op-{i}@s"))?, &clone)?;
    let clone_ms = ms(t0);
    let t0 = Instant::now();
    store.delete(&VolumeRef::volume(clone))?;
    let delete = ms(t0);
    // Back to the size being measured.
    store.delete(&VolumeRef::volume(vol))?;
    Ok([create, snapshot, clone_ms, delete])
}

pub fn run(dir: &Path) -> Result<Table> {
    let mut t = Table::new(
        "Store operations by volumes already in the store (ms, median / slowest of 25; ratio = median / median at 10)",
        &[
            "existing volumes",
            "create",
            "snapshot",
            "clone",
            "delete",
            "open store",
        ],
    );
    let sdir = dir.join("ops");
    let mut store = Store::open(&sdir)?;
    let mut have = 0;
    let mut base: Option<[f64; 4]> = None;
    for size in SIZES {
        while have < size {
            store.create_volume(&name(&format!("fill-{have}"))?, 1 << 30)?;
            have += 1;
        }
        let mut times: [Vec<f64>; 4] = Default::default();
        for i in 0..ROUNDS {
            for (k, v) in one_round(&store, i)?.into_iter().enumerate() {
                times[k].push(v);
            }
        }
        let stats: Vec<(f64, f64)> = times.into_iter().map(median_max).collect();
        let medians = [stats[0].0, stats[1].0, stats[2].0, stats[3].0];
        let b = *base.get_or_insert(medians);
        drop(store);
        let t0 = Instant::now();
        store = Store::open(&sdir)?;
        let open = ms(t0);
        let mut row = vec![size.to_string()];
        for (k, (med, max)) in stats.iter().enumerate() {
            row.push(format!("{med:.2} / {max:.2} ({:.2}x)", med / b[k]));
        }
        row.push(format!("{open:.0}"));
        t.row(row);
    }
    drop(store);
    std::fs::remove_dir_all(&sdir)?;
    Ok(t)
}
