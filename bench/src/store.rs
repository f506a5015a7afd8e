//! Store benchmarks (issue: volume store). Each figure is measured beside its peer in the
//! same run; the table reports both and their ratio.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};

use platter_snapshotter::{Store, Volume};
use platter_types::{Name, VolumeRef};

use crate::table::Table;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn name(s: &str) -> Name {
    Name::new(s).unwrap_or_else(|_| unreachable!("bench names are valid"))
}

fn random_buf(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

pub fn run(dir: Option<&Path>) -> Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("platter-bench-")
        .tempdir_in(dir.unwrap_or(Path::new("target")))?;
    let mut out = String::from("## Volume store benchmarks\n\n");
    out += &snapshot_latency(tmp.path())?.to_string();
    out += "\n";
    out += &chain_reads(tmp.path())?.to_string();
    out += "\n";
    out += &sequential(tmp.path())?.to_string();
    out += "\n";
    out += &crate::store_ops::run(tmp.path())?.to_string();
    Ok(out)
}

/// The store-operations table alone.
pub fn run_ops(dir: Option<&Path>) -> Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("platter-bench-")
        .tempdir_in(dir.unwrap_or(Path::new("target")))?;
    Ok(format!(
        "## Volume store operations\n\n{}",
        crate::store_ops::run(tmp.path())?
    ))
}

/// Writes 1 GiB in 1 MiB pieces spread over the volume, flushed.
fn write_gib_spread(v: &Volume, size: u64) -> Result<()> {
    let buf = random_buf(MIB as usize, 1);
    let stride = (size / 1024) / MIB * MIB;
    for i in 0..1024u64 {
        v.write_at(&buf, i * stride.max(MIB))?;
    }
    v.flush()?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn snapshot_latency(dir: &Path) -> Result<Table> {
    let mut t = Table::new(
        "Snapshot and clone latency with 1 GiB written (median of 5; target < 5 ms, flat in size)",
        &[
            "volume size",
            "snapshot ms",
            "clone ms",
            "snapshot with 4 KiB unflushed ms",
            "index runs",
        ],
    );
    for (label, size) in [("1 GiB", GIB), ("100 GiB", 100 * GIB), ("10 TiB", 10 << 40)] {
        let sdir = dir.join(format!("snap-{}", size));
        let store = Store::open(&sdir)?;
        store.create_volume(&name("v"), size)?;
        let v = store.open_volume(&VolumeRef::parse("v")?)?;
        write_gib_spread(&v, size)?;
        let (mut snaps, mut dirty, mut clones) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..5 {
            let t0 = Instant::now();
            store.snapshot(&name("v"), &name(&format!("s{i}")))?;
            snaps.push(t0.elapsed().as_secs_f64() * 1e3);
            let t0 = Instant::now();
            store.clone_volume(
                &VolumeRef::parse(&format!("v@s{i}"))?,
                &name(&format!("c{i}")),
            )?;
            clones.push(t0.elapsed().as_secs_f64() * 1e3);
            // A live volume has unflushed writes: the snapshot flushes them first.
            v.write_at(&[7u8; 4096], i * 4096)?;
            let t0 = Instant::now();
            store.snapshot(&name("v"), &name(&format!("d{i}")))?;
            dirty.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let runs = v.block_status(0, size)?.len();
        t.row(vec![
            label.into(),
            format!("{:.2}", median(snaps)),
            format!("{:.2}", median(clones)),
            format!("{:.2}", median(dirty)),
            runs.to_string(),
        ]);
        drop(v);
        drop(store);
        std::fs::remove_dir_all(&sdir)?;
    }
    Ok(t)
}

/// Sequential 4 KiB reads through the store API over the first `size` bytes: IOPS.
fn store_reads(v: &Volume, size: u64) -> Result<f64> {
    let mut buf = vec![0u8; 4096];
    let n = size / 4096;
    let t0 = Instant::now();
    for i in 0..n {
        v.read_at(&mut buf, i * 4096)?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `qemu-img bench` 4 KiB reads over a qcow2 chain of `depth` overlays: IOPS.
fn qemu_chain_reads(dir: &Path, raw: &Path, depth: usize, size: u64) -> Result<f64> {
    let base = dir.join("q-0.qcow2");
    if !base.exists() {
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-O", "qcow2"])
                .arg(raw)
                .arg(&base),
        )?;
    }
    let mut top = base.clone();
    for i in 1..=depth {
        let next = dir.join(format!("q-{i}.qcow2"));
        if !next.exists() {
            run_ok(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                    .arg(&top)
                    .arg(&next),
            )?;
            run_ok(
                Command::new("qemu-io")
                    .args(["-c", &format!("write -P 7 {} 4k", (i as u64 * 4096) % size)])
                    .arg(&next),
            )?;
        }
        top = next;
    }
    let count = size / 4096;
    let t0 = Instant::now();
    run_ok(
        Command::new("qemu-img")
            .args([
                "bench",
                "-c",
                &count.to_string(),
                "-d",
                "1",
                "-s",
                "4096",
                "-t",
                "writeback",
                "-i",
                "threads",
            ])
            .arg(&top),
    )
    .or_else(|_| {
        run_ok(
            Command::new("qemu-img")
                .args(["bench", "-c", &count.to_string(), "-d", "1", "-s", "4096"])
                .arg(&top),
        )
    })?;
    Ok(count as f64 / t0.elapsed().as_secs_f64())
}

/// Random 4 KiB reads for about `secs`: IOPS.
fn random_reads_for(v: &Volume, size: u64, secs: f64, seed: u64) -> Result<f64> {
    let mut buf = vec![0u8; 4096];
    let n = size / 4096;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let mut done = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        for _ in 0..4096 {
            v.read_at(&mut buf, rng.gen_range(0..n) * 4096)?;
        }
        done += 4096;
    }
    Ok(done as f64 / t0.elapsed().as_secs_f64())
}

fn chain_reads(dir: &Path) -> Result<Table> {
    let size = GIB;
    let mut t = Table::new(
        "4 KiB reads over 1 GiB of data by chain depth (one 4 KiB write per layer above the data; store API, 1 thread, median of 7 interleaved rounds; qemu-img bench -t writeback -d 1 on a qcow2 chain of the same depth, page cache warm for both)",
        &["depth", "ours seq IOPS", "ours rand IOPS", "ours vs depth 1", "qemu-img IOPS", "qemu vs its depth 1", "ours seq / qemu"],
    );
    let raw = dir.join("chain.raw");
    {
        let f = File::create(&raw)?;
        for i in 0..(size / (4 * MIB)) {
            f.write_all_at(&random_buf((4 * MIB) as usize, i), i * 4 * MIB)?;
        }
    }
    let sdir = dir.join("chain-store");
    let store = Store::open(&sdir)?;
    store.create_volume(&name("data"), size)?;
    {
        let v = store.open_volume(&VolumeRef::parse("data")?)?;
        let f = File::open(&raw)?;
        let mut buf = vec![0u8; (4 * MIB) as usize];
        for i in 0..(size / (4 * MIB)) {
            f.read_exact_at(&mut buf, i * 4 * MIB)?;
            v.write_at(&buf, i * 4 * MIB)?;
        }
        v.flush()?;
    }
    // Depth 1: the data layer alone (a snapshot of it). Deeper: clones of it with one
    // small write per layer, so every volume reads the same data through its own chain.
    store.snapshot(&name("data"), &name("base"))?;
    let mut vols = vec![(1usize, store.open_volume(&VolumeRef::parse("data@base")?)?)];
    for depth in [16usize, 64] {
        let vname = format!("d{depth}");
        store.clone_volume(&VolumeRef::parse("data@base")?, &name(&vname))?;
        let v = store.open_volume(&VolumeRef::parse(&vname)?)?;
        for layer in 2..depth {
            v.write_at(&[7u8; 4096], (layer as u64 * 4096) % size)?;
            store.snapshot(&name(&vname), &name(&format!("l{layer}")))?;
        }
        vols.push((depth, v));
    }
    let mut rand: Vec<Vec<f64>> = vec![Vec::new(); vols.len()];
    let mut seq: Vec<Vec<f64>> = vec![Vec::new(); vols.len()];
    for round in 0..7 {
        for (i, (_, v)) in vols.iter().enumerate() {
            rand[i].push(random_reads_for(v, size, 0.4, round)?);
            if round < 3 {
                seq[i].push(store_reads(v, size / 4)?);
            }
        }
    }
    let mut q = Vec::new();
    for (depth, _) in &vols {
        q.push(qemu_chain_reads(dir, &raw, depth - 1, size)?);
    }
    let ours1 = median(rand[0].clone());
    for (i, (depth, _)) in vols.iter().enumerate() {
        let (s, r) = (median(seq[i].clone()), median(rand[i].clone()));
        t.row(vec![
            depth.to_string(),
            format!("{s:.0}"),
            format!("{r:.0}"),
            format!("{:.2}x", r / ours1),
            format!("{:.0}", q[i]),
            format!("{:.2}x", q[i] / q[0]),
            format!("{:.0}x", s / q[i]),
        ]);
    }
    Ok(t)
}

/// Writes 1 GiB in 1 MiB requests to a fresh plain file, synced: MiB/s.
fn file_write(path: &Path, buf: &[u8], size: u64) -> Result<f64> {
    let _ = std::fs::remove_file(path);
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let t0 = Instant::now();
    for i in 0..(size / MIB) {
        f.write_all_at(buf, i * MIB)?;
    }
    f.sync_data()?;
    Ok((size / MIB) as f64 / t0.elapsed().as_secs_f64())
}

/// Writes 1 GiB in 1 MiB requests to a fresh store volume, flushed: MiB/s.
fn store_write(store: &Store, vol: &str, buf: &[u8], size: u64) -> Result<(f64, Volume)> {
    store.create_volume(&name(vol), size)?;
    let v = store.open_volume(&VolumeRef::parse(vol)?)?;
    let t0 = Instant::now();
    for i in 0..(size / MIB) {
        v.write_at(buf, i * MIB)?;
    }
    v.flush()?;
    Ok(((size / MIB) as f64 / t0.elapsed().as_secs_f64(), v))
}

fn read_rate(mut read: impl FnMut(&mut [u8], u64) -> Result<()>, size: u64) -> Result<f64> {
    let mut rb = vec![0u8; MIB as usize];
    let t0 = Instant::now();
    for i in 0..(size / MIB) {
        read(&mut rb, i * MIB)?;
    }
    Ok((size / MIB) as f64 / t0.elapsed().as_secs_f64())
}

fn sequential(dir: &Path) -> Result<Table> {
    let size = GIB;
    let mut t = Table::new(
        "Sequential 1 GiB in 1 MiB requests to fresh targets, written then flushed, then read (page cache warm for both); median of 3 rounds, order alternating",
        &["", "plain file MiB/s", "store MiB/s", "store / file"],
    );
    let buf = random_buf(MIB as usize, 3);
    let path = dir.join("plain.raw");
    let store = Store::open(&dir.join("seq-store"))?;
    let (mut fw, mut sw, mut fr, mut sr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let vol = format!("v{round}");
        let (s, v) = if round % 2 == 0 {
            fw.push(file_write(&path, &buf, size)?);
            store_write(&store, &vol, &buf, size)?
        } else {
            let r = store_write(&store, &vol, &buf, size)?;
            fw.push(file_write(&path, &buf, size)?);
            r
        };
        sw.push(s);
        let f = File::open(&path)?;
        fr.push(read_rate(|b, o| Ok(f.read_exact_at(b, o)?), size)?);
        sr.push(read_rate(|b, o| Ok(v.read_at(b, o)?), size)?);
        drop(v);
        store.delete(&VolumeRef::parse(&vol)?)?;
    }
    for (label, file, ours) in [("write", fw, sw), ("read", fr, sr)] {
        let (f, s) = (median(file), median(ours));
        t.row(vec![
            label.into(),
            format!("{f:.0}"),
            format!("{s:.0}"),
            format!("{:.2}x", s / f),
        ]);
    }
    std::fs::remove_file(&path)?;
    Ok(t)
}
