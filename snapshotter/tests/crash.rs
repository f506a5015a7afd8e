//! Crash consistency under `kill -9`: a child process (this test binary, re-executed)
//! writes, flushes and snapshots at random; the parent kills it at a random moment (or the
//! child aborts itself at a named crash point), reopens the store and checks that every
//! flushed write is there and that no byte holds anything but a value written to it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};
use rand::{Rng, SeedableRng};

const SIZE: u64 = 256 * 1024;
const MAX_OPS: usize = 4000;
const ITERATIONS: u64 = 200;
const FAILPOINTS: [&str; 4] = [
    "journal-before-header",
    "flush-after-data-sync",
    "freeze-before-catalog",
    "meta-before-commit",
];

#[derive(Debug, Clone, Copy)]
enum Op {
    Write { off: u64, len: u64 },
    Flush,
    Snapshot,
}

/// The child's operations, reproducible from the seed.
fn ops(seed: u64) -> Vec<Op> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..MAX_OPS)
        .map(|_| match rng.gen_range(0..100) {
            0..=9 => Op::Flush,
            10 => Op::Snapshot,
            _ => {
                let len = if rng.gen_bool(0.5) {
                    rng.gen_range(1..9000)
                } else {
                    4096 * rng.gen_range(1..4)
                };
                let off = if rng.gen_bool(0.5) {
                    rng.gen_range(0..SIZE - len)
                } else {
                    rng.gen_range(0..(SIZE - len) / 4096) * 4096
                };
                Op::Write { off, len }
            }
        })
        .collect()
}

fn pattern(write: usize, pos: u64) -> u8 {
    let mut x = (write as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ pos.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    (x as u8) | 1
}

fn volume() -> VolumeRef {
    VolumeRef::parse("v").unwrap()
}

/// The child: runs only when re-executed by `kill_at_random_points`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("PLATTER_CRASH_DIR") else {
        return;
    };
    let seed: u64 = std::env::var("PLATTER_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(dir.as_ref()).unwrap();
    let vol = store.open_volume(&volume()).unwrap();
    for (i, op) in ops(seed).into_iter().enumerate() {
        match op {
            Op::Write { off, len } => {
                let buf: Vec<u8> = (0..len).map(|p| pattern(i, off + p)).collect();
                vol.write_at(&buf, off).unwrap();
            }
            Op::Flush => {
                vol.flush().unwrap();
                // Everything before op i is durable now.
                println!("F {i}");
            }
            Op::Snapshot => {
                store
                    .snapshot(
                        &Name::new("v").unwrap(),
                        &Name::new(&format!("s{i}")).unwrap(),
                    )
                    .unwrap();
                println!("F {i}");
            }
        }
    }
    std::thread::sleep(Duration::from_secs(60));
}

fn check(dir: &std::path::Path, seed: u64, flushed: Option<usize>) {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
    let vol = store.open_volume(&volume()).unwrap();
    let mut got = vec![0u8; SIZE as usize];
    vol.read_at(&mut got, 0).unwrap();
    let ops = ops(seed);
    // For each byte: the last flushed write covering it, and every write after the flush.
    let flushed_end = flushed.map_or(0, |f| f + 1);
    let mut last_flushed: Vec<Option<usize>> = vec![None; SIZE as usize];
    let mut later: Vec<Vec<usize>> = vec![Vec::new(); SIZE as usize];
    for (i, op) in ops.iter().enumerate() {
        if let Op::Write { off, len } = *op {
            for p in off..off + len {
                if i < flushed_end {
                    last_flushed[p as usize] = Some(i);
                } else if later[p as usize].len() < 64 {
                    later[p as usize].push(i);
                }
            }
        }
    }
    for p in 0..SIZE {
        let b = got[p as usize];
        let ok_flushed = match last_flushed[p as usize] {
            Some(w) => b == pattern(w, p),
            None => b == 0,
        };
        let ok_later = later[p as usize].iter().any(|&w| b == pattern(w, p));
        assert!(
            ok_flushed || ok_later,
            "seed {seed}: byte {p} = {b:#x} was never written there (last flushed write {:?})",
            last_flushed[p as usize]
        );
    }
    // Snapshots that made it into the catalog must be readable.
    for info in store.list().unwrap() {
        let r = VolumeRef::parse(&info.name).unwrap();
        let mut buf = vec![0u8; SIZE as usize];
        store.open_volume(&r).unwrap().read_at(&mut buf, 0).unwrap();
    }
}

#[test]
fn kill_at_random_points() {
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut killed_mid_run = 0;
    for seed in 0..ITERATIONS {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.create_volume(&Name::new("v").unwrap(), SIZE).unwrap();
        }
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env("PLATTER_CRASH_DIR", dir.path())
            .env("PLATTER_CRASH_SEED", seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // One run in four dies at a named crash point instead of a random moment.
        if seed % 4 == 3 {
            cmd.env(
                "PLATTER_FAILPOINT",
                FAILPOINTS[(seed / 4) as usize % FAILPOINTS.len()],
            );
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("F ") {
                    last = n.trim().parse::<usize>().ok();
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..60)));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        let flushed = reader.join().unwrap();
        check(dir.path(), seed, flushed);
    }
    assert!(
        killed_mid_run > ITERATIONS / 2,
        "only {killed_mid_run} children were still running when killed"
    );
}
