//! NBD server benchmarks: ours (`platter serve`), `qemu-nbd` (raw writeback, raw O_DIRECT,
//! a qcow2 chain of depth 16) and `nbdkit file`, each on its own copy of the same 1 GiB of
//! random data, all driven by `fio --ioengine=nbd` in one run. Ours runs on a volume of
//! depth 1 and on one of depth 16, and writes also on a blank volume, so that the depth
//! column compares writes that allocate on both sides.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};

use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};

use crate::table::Table;

const SIZE: u64 = 1 << 30;
/// qemu-nbd serves one client at a time unless told otherwise: without this the jobs of a
/// multi-connection workload would queue behind each other (each running its full time
/// alone) and fio would sum their separate bandwidths as if they had run together.
const QEMU_SHARED: &str = "--shared=8";
const CHUNK: u64 = 4 << 20;

struct Workload {
    name: &'static str,
    rw: &'static str,
    bs: &'static str,
    qd: u32,
    jobs: u32,
}

/// Reads first, then writes: a write workload changes what the next one reads on the
/// volumes that are not reset (in place on depth 1 and on the peers' files).
const WORKLOADS: &[Workload] = &[
    Workload {
        name: "4K randread QD1",
        rw: "randread",
        bs: "4k",
        qd: 1,
        jobs: 1,
    },
    Workload {
        name: "4K randread QD32",
        rw: "randread",
        bs: "4k",
        qd: 32,
        jobs: 1,
    },
    Workload {
        name: "4K randread QD32 x4 conn",
        rw: "randread",
        bs: "4k",
        qd: 8,
        jobs: 4,
    },
    Workload {
        name: "1M read QD8",
        rw: "read",
        bs: "1m",
        qd: 8,
        jobs: 1,
    },
    Workload {
        name: "1M read QD8 x4 conn",
        rw: "read",
        bs: "1m",
        qd: 2,
        jobs: 4,
    },
    Workload {
        name: "4K randwrite QD1",
        rw: "randwrite",
        bs: "4k",
        qd: 1,
        jobs: 1,
    },
    Workload {
        name: "4K randwrite QD32",
        rw: "randwrite",
        bs: "4k",
        qd: 32,
        jobs: 1,
    },
    Workload {
        name: "4K randwrite QD32 x4 conn",
        rw: "randwrite",
        bs: "4k",
        qd: 8,
        jobs: 4,
    },
    Workload {
        name: "1M write QD8",
        rw: "write",
        bs: "1m",
        qd: 8,
        jobs: 1,
    },
    Workload {
        name: "1M write QD8 x4 conn",
        rw: "write",
        bs: "1m",
        qd: 2,
        jobs: 4,
    },
];

/// A running server process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Process {
    label: String,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        if !platter_testkit::terminate(&mut self.child, Duration::from_secs(20)) {
            eprintln!("{} did not stop on SIGTERM; it was killed", self.label);
        }
    }
}

/// Gives a volume its starting state back before a write run.
type Reset = Box<dyn Fn() -> Result<()>>;

/// One column of the table: an export of one of the running processes.
struct Contender {
    label: String,
    uri: String,
    /// Which workloads it runs (the blank volume only runs writes).
    reads: bool,
    /// Run before each of its write runs.
    reset: Option<Reset>,
    /// Files (or directories of them) that hold its data: read before every run.
    data: Vec<PathBuf>,
}

/// One fio run's result: IOPS and bytes/s summed over jobs, and fio's own CPU use (user +
/// system, percent of one CPU, averaged over jobs).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    iops: f64,
    bw: f64,
    client_cpu: f64,
}

fn wait_for(path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

fn spawn(label: &str, cmd: &mut Command, sock: &Path) -> Result<Process> {
    let _ = std::fs::remove_file(sock);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {label}"))?;
    let p = Process {
        label: label.into(),
        child,
    };
    wait_for(sock)?;
    Ok(p)
}

fn unix_uri(sock: &Path, export: &str) -> String {
    format!("nbd+unix:///{export}?socket={}", sock.display())
}

fn make_data(path: &Path) -> Result<()> {
    let f = File::create(path)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut buf = vec![0u8; CHUNK as usize];
    for i in 0..SIZE / CHUNK {
        rng.fill(&mut buf[..]);
        f.write_all_at(&buf, i * CHUNK)?;
    }
    f.sync_all()?;
    Ok(())
}

/// Layers below the top of the deep volume.
const DEEP_FROZEN: usize = 15;
/// The snapshot the deep volume is cloned from: 15 frozen layers, the data in the lowest.
const DEEP_BASE: &str = "base@d15";

/// Volume `name` of `store` holding the data, written as a guest would (64 KiB pieces).
fn fill_volume(store: &Store, name: &Name, data: &Path) -> Result<()> {
    store.create_volume(name, SIZE)?;
    let v = store.open_volume(&VolumeRef::parse(name.as_str())?)?;
    let f = File::open(data)?;
    let mut buf = vec![0u8; CHUNK as usize];
    for i in 0..SIZE / CHUNK {
        f.read_exact_at(&mut buf, i * CHUNK)?;
        v.write_at(&buf, i * CHUNK)?;
    }
    v.flush()?;
    Ok(())
}

/// The depth-1 store: `v` holds the data in its only layer, `blank` is empty.
fn make_shallow_store(dir: &Path, data: &Path) -> Result<()> {
    let store = Store::open(dir)?;
    fill_volume(&store, &Name::new("v")?, data)?;
    store.create_volume(&Name::new("blank")?, SIZE)?;
    Ok(())
}

/// The depth-16 store: `base` holds the data, then 15 snapshots with one 4 KiB write
/// between each; `v` is a clone of the last one, so its chain is 15 frozen layers and
/// its own empty top.
fn make_deep_store(dir: &Path, data: &Path) -> Result<()> {
    let store = Store::open(dir)?;
    let base = Name::new("base")?;
    fill_volume(&store, &base, data)?;
    let v = store.open_volume(&VolumeRef::parse("base")?)?;
    let f = File::open(data)?;
    let mut block = vec![0u8; 4096];
    for d in 1..=DEEP_FROZEN {
        if d > 1 {
            f.read_exact_at(&mut block, d as u64 * 4096)?;
            v.write_at(&block, d as u64 * 4096)?;
            v.flush()?;
        }
        store.snapshot(&base, &Name::new(&format!("d{d}"))?)?;
    }
    store.clone_volume(&VolumeRef::parse(DEEP_BASE)?, &Name::new("v")?)?;
    Ok(())
}

/// Reads the data ranges of a file, or of every file below a directory, into the page
/// cache. This machine pages out memory that nobody touched for about a minute (DAMON),
/// so without this a server's result would depend on how long it sat idle before its
/// run. Holes are skipped: reading them would fill the cache with zero pages that a
/// later write into the hole would find ready.
fn warm(path: &Path) -> Result<()> {
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            warm(&e?.path())?;
        }
        return Ok(());
    }
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let seek = |to: rustix::fs::SeekFrom| rustix::fs::seek(&f, to);
    let mut pos = 0u64;
    while pos < len {
        let data = match seek(rustix::fs::SeekFrom::Data(pos as i64)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        let hole = seek(rustix::fs::SeekFrom::Hole(data as i64)).map_err(std::io::Error::from)?;
        let mut at = data;
        while at < hole {
            let n = f.read_at(&mut buf[..(hole - at).min(1 << 20) as usize], at)?;
            if n == 0 {
                break;
            }
            at += n as u64;
        }
        pos = hole;
    }
    Ok(())
}

/// A reset that deletes volume `name` and makes it again with `platter volume MAKE…`,
/// through the running server's control socket.
fn remake(
    platter: &Path,
    store: &Path,
    name: &'static str,
    make: &'static [&'static str],
) -> Reset {
    let (platter, store) = (platter.to_path_buf(), store.to_path_buf());
    Box::new(move || {
        let volume = |args: &[&str]| {
            run(Command::new(&platter)
                .arg("--store")
                .arg(&store)
                .arg("volume")
                .args(args))
        };
        volume(&["delete", name])?;
        volume(make).map(|_| ())
    })
}

fn qcow2_chain(dir: &Path, data: &Path, depth: usize) -> Result<PathBuf> {
    let mut top = dir.join("chain-0.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(data)
        .arg(&top))?;
    for i in 1..depth {
        let next = dir.join(format!("chain-{i}.qcow2"));
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&top)
            .arg(&next))?;
        run(Command::new("qemu-io")
            .args(["-c", &format!("write -P 7 {} 4k", i * 4096)])
            .arg(&next))?;
        top = next;
    }
    Ok(top)
}

fn workload(name: &str) -> Result<&'static Workload> {
    WORKLOADS
        .iter()
        .find(|w| w.name == name)
        .with_context(|| format!("no workload {name}"))
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs one fio job.
fn fio(uri: &str, w: &Workload, runtime: u32, out: &Path) -> Result<Sample> {
    let _ = std::fs::remove_file(out);
    // Start every run with no dirty pages of an earlier one: with a gigabyte of dirty
    // page cache waiting for writeback, 4 KiB writes of the next run ran at a third of
    // their speed.
    run(&mut Command::new("sync"))?;
    run(Command::new("fio").args([
        "--name=b",
        "--ioengine=nbd",
        &format!("--uri={uri}"),
        &format!("--rw={}", w.rw),
        &format!("--bs={}", w.bs),
        &format!("--iodepth={}", w.qd),
        &format!("--numjobs={}", w.jobs),
        "--group_reporting",
        &format!("--runtime={runtime}"),
        "--time_based",
        "--ramp_time=1",
        "--size=1G",
        // No per-IO clock reads for latency statistics (the table has none): in the
        // single-job rows fio itself is the limit (a whole core), and every IO it timed
        // was CPU it did not spend driving the server.
        "--gtod_reduce=1",
        "--output-format=json",
        &format!("--output={}", out.display()),
    ]))?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out)?)?;
    let job = &v["jobs"][0];
    // With group reporting, jobs that ran one after another (a server that takes one
    // client at a time) would be summed as if they had run together: refuse that.
    let elapsed = job["elapsed"].as_f64().unwrap_or(0.0);
    if elapsed > 2.0 * f64::from(runtime + 1) + 2.0 {
        bail!(
            "{} jobs of {} took {elapsed} s for a {runtime} s run: the server serialized the connections",
            w.jobs,
            w.name
        );
    }
    let side = if w.is_read() {
        &job["read"]
    } else {
        &job["write"]
    };
    let cpu = job["usr_cpu"].as_f64().unwrap_or(0.0) + job["sys_cpu"].as_f64().unwrap_or(0.0);
    Ok(Sample {
        iops: side["iops"].as_f64().unwrap_or(0.0),
        bw: side["bw_bytes"].as_f64().unwrap_or(0.0),
        client_cpu: cpu,
    })
}

/// The sample with the median IOPS (the middle one of an odd count).
fn median(mut samples: Vec<Sample>) -> Option<Sample> {
    samples.sort_by(|a, b| a.iops.total_cmp(&b.iops).then(a.bw.total_cmp(&b.bw)));
    samples.get(samples.len() / 2).copied()
}

/// Columns of the table that are ours, in this order; the peers follow.
const SHALLOW: usize = 0;
const DEEP: usize = 1;
const BLANK: usize = 2;
const PEERS_FROM: usize = 3;

/// Our two stores, served by two `platter serve` processes: depth 1 (`v` with the data,
/// and `blank`) and depth 16 (`v`, a clone of a 15-layer chain whose lowest layer holds
/// the data).
fn ours(dir: &Path, data: &Path, platter: &Path) -> Result<(Vec<Process>, Vec<Contender>)> {
    let shallow = dir.join("store-1");
    let deep = dir.join("store-16");
    make_shallow_store(&shallow, data)?;
    make_deep_store(&deep, data)?;
    let mut procs = Vec::new();
    for (label, sdir) in [("platter depth 1", &shallow), ("platter depth 16", &deep)] {
        procs.push(spawn(
            label,
            Command::new(platter).arg("--store").arg(sdir).arg("serve"),
            &sdir.join("run/nbd.sock"),
        )?);
    }
    let contenders = vec![
        Contender {
            label: "platter depth 1".into(),
            uri: unix_uri(&shallow.join("run/nbd.sock"), "v"),
            reads: true,
            reset: None,
            data: vec![shallow.join("blobs")],
        },
        Contender {
            label: "platter depth 16 (fresh top)".into(),
            uri: unix_uri(&deep.join("run/nbd.sock"), "v"),
            reads: true,
            data: vec![deep.join("blobs")],
            reset: Some(remake(platter, &deep, "v", &["clone", DEEP_BASE, "v"])),
        },
        Contender {
            label: "platter depth 1, blank".into(),
            uri: unix_uri(&shallow.join("run/nbd.sock"), "blank"),
            reads: false,
            data: vec![shallow.join("blobs")],
            reset: Some(remake(
                platter,
                &shallow,
                "blank",
                &["create", "blank", "--size", "1G"],
            )),
        },
    ];
    Ok((procs, contenders))
}

/// The peers, each on its own copy of the data.
fn peers(dir: &Path, data: &Path) -> Result<(Vec<Process>, Vec<Contender>)> {
    let mut procs = Vec::new();
    let mut contenders = Vec::new();
    let mut add = |label: &str, cmd: &mut Command, sock: &Path, data: Vec<PathBuf>| {
        procs.push(spawn(label, cmd, sock)?);
        contenders.push(Contender {
            label: label.into(),
            uri: unix_uri(sock, "v"),
            reads: true,
            reset: None,
            data,
        });
        anyhow::Ok(())
    };
    for (label, args) in [
        (
            "qemu-nbd writeback",
            vec!["-f", "raw", "-t", QEMU_SHARED, "--cache=writeback"],
        ),
        (
            "qemu-nbd O_DIRECT",
            vec![
                "-f",
                "raw",
                "-t",
                QEMU_SHARED,
                "--cache=none",
                "--aio=native",
            ],
        ),
    ] {
        let copy = dir.join(format!("{}.raw", label.replace(' ', "-")));
        std::fs::copy(data, &copy)?;
        let sock = dir.join(format!("{}.sock", label.replace(' ', "-")));
        add(
            label,
            Command::new("qemu-nbd")
                .arg("-k")
                .arg(&sock)
                .args(["-x", "v"])
                .args(&args)
                .arg(&copy),
            &sock,
            vec![copy.clone()],
        )?;
    }
    let chain = qcow2_chain(dir, data, 16)?;
    let qsock = dir.join("qemu-chain.sock");
    add(
        "qemu-nbd qcow2 depth 16",
        Command::new("qemu-nbd")
            .arg("-k")
            .arg(&qsock)
            .args([
                "-x",
                "v",
                "-f",
                "qcow2",
                "-t",
                QEMU_SHARED,
                "--cache=writeback",
            ])
            .arg(&chain),
        &qsock,
        (0..16)
            .map(|i| dir.join(format!("chain-{i}.qcow2")))
            .collect(),
    )?;
    let kcopy = dir.join("nbdkit.raw");
    std::fs::copy(data, &kcopy)?;
    let ksock = dir.join("nbdkit.sock");
    add(
        "nbdkit file",
        Command::new("nbdkit")
            .args(["-f", "-U"])
            .arg(&ksock)
            .args(["-e", "v", "--threads", "16", "file"])
            .arg(&kcopy)
            .arg("cache=none"),
        &ksock,
        vec![kcopy.clone()],
    )?;
    Ok((procs, contenders))
}

pub fn run_all(
    dir: &Path,
    platter: &Path,
    runtime: u32,
    rounds: usize,
    tcp_port: u16,
) -> Result<String> {
    let data = dir.join("data.raw");
    make_data(&data)?;
    // Every server runs at once (each on its own copy) and each workload visits them in
    // an order rotated per workload and round, so noise from the machine falls on all of
    // them alike instead of on whoever ran during a busy minute.
    let (mut procs, mut contenders) = ours(dir, &data, platter)?;
    let (peer_procs, peer_contenders) = peers(dir, &data)?;
    procs.extend(peer_procs);
    contenders.extend(peer_contenders);
    let out = dir.join("fio.json");
    let n = contenders.len();
    let mut results: Vec<Vec<Option<Sample>>> = vec![vec![None; WORKLOADS.len()]; n];
    for (i, w) in WORKLOADS.iter().enumerate() {
        // One 6 s sample on a shared 2-core machine moves by 15%: every workload runs
        // `rounds` times and the median counts. Writes give the volumes that have a reset
        // their starting state back before every run, so each round measures the same.
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); n];
        for round in 0..rounds.max(1) {
            for k in 0..n {
                let j = (i + round + k) % n;
                let c = &contenders[j];
                if w.is_read() && !c.reads {
                    continue;
                }
                if let (false, Some(reset)) = (w.is_read(), &c.reset) {
                    reset().with_context(|| format!("resetting {}", c.label))?;
                }
                for d in &c.data {
                    warm(d).with_context(|| format!("reading {}", d.display()))?;
                }
                samples[j].push(
                    fio(&c.uri, w, runtime, &out)
                        .with_context(|| format!("{} {}", c.label, w.name))?,
                );
            }
        }
        for (j, s) in samples.into_iter().enumerate() {
            results[j][i] = median(s);
        }
    }
    drop(procs);
    // Once over TCP: ours and qemu-nbd writeback, 4K randread QD32 and 1M read.
    let tcp = tcp_runs(dir, platter, &data, runtime, tcp_port, &out)?;
    let labels: Vec<String> = contenders.into_iter().map(|c| c.label).collect();
    Ok(render(&labels, &results, &tcp, rounds))
}

fn tcp_runs(
    dir: &Path,
    platter: &Path,
    data: &Path,
    runtime: u32,
    port: u16,
    out: &Path,
) -> Result<Vec<(String, f64, f64)>> {
    let sdir = dir.join("store-1");
    let mut rows = Vec::new();
    let uri = format!("nbd://127.0.0.1:{port}/v");
    let ours = spawn(
        "platter tcp",
        Command::new(platter)
            .arg("--store")
            .arg(&sdir)
            .arg("serve")
            .arg("--nbd-listen")
            .arg(format!("127.0.0.1:{port}")),
        &sdir.join("run/nbd.sock"),
    )?;
    let r = fio(&uri, workload("4K randread QD32")?, runtime, out)?;
    let bw = fio(&uri, workload("1M read QD8")?, runtime, out)?;
    rows.push(("platter".to_string(), r.iops, bw.bw));
    drop(ours);
    let copy = dir.join("qemu-tcp.raw");
    std::fs::copy(data, &copy)?;
    let child = Command::new("qemu-nbd")
        .args([
            "-p",
            &(port + 1).to_string(),
            "-b",
            "127.0.0.1",
            "-x",
            "v",
            "-f",
            "raw",
            "-t",
            QEMU_SHARED,
            "--cache=writeback",
        ])
        .arg(&copy)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let q = Process {
        label: "qemu-nbd tcp".into(),
        child,
    };
    std::thread::sleep(Duration::from_millis(500));
    let uri = format!("nbd://127.0.0.1:{}/v", port + 1);
    let r = fio(&uri, workload("4K randread QD32")?, runtime, out)?;
    let bw = fio(&uri, workload("1M read QD8")?, runtime, out)?;
    rows.push(("qemu-nbd writeback".to_string(), r.iops, bw.bw));
    drop(q);
    Ok(rows)
}

impl Workload {
    fn is_read(&self) -> bool {
        self.rw.contains("read")
    }

    /// What the table compares: IOPS for 4 KiB requests, bytes/s for 1 MiB ones.
    fn metric(&self, s: &Sample) -> f64 {
        if self.bs == "4k" {
            s.iops
        } else {
            s.bw
        }
    }

    fn show(&self, s: Option<&Sample>) -> String {
        match s {
            None => "-".into(),
            Some(s) if self.bs == "4k" => format!("{:.1}k IOPS", s.iops / 1000.0),
            Some(s) => format!("{:.2} GiB/s", s.bw / (1u64 << 30) as f64),
        }
    }
}

/// `a / b` of the workload's metric, or "-" when either is missing.
fn ratio(w: &Workload, a: Option<&Sample>, b: Option<&Sample>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if w.metric(b) > 0.0 => format!("{:.2}x", w.metric(a) / w.metric(b)),
        _ => "-".into(),
    }
}

/// The best peer's column for workload `i`.
fn best_peer(w: &Workload, results: &[Vec<Option<Sample>>], i: usize) -> Option<usize> {
    (PEERS_FROM..results.len())
        .filter(|&j| results[j][i].is_some())
        .max_by(|&a, &b| {
            let m = |j: usize| results[j][i].as_ref().map_or(0.0, |s| w.metric(s));
            m(a).total_cmp(&m(b))
        })
}

fn render(
    labels: &[String],
    results: &[Vec<Option<Sample>>],
    tcp: &[(String, f64, f64)],
    rounds: usize,
) -> String {
    let mut header: Vec<&str> = vec!["workload"];
    header.extend(labels.iter().map(String::as_str));
    header.extend([
        "best peer",
        "ours / best peer",
        "depth 16 / depth 1",
        "fio CPU: ours / best peer",
    ]);
    let title = format!(
        "NBD servers, fio --ioengine=nbd over a unix socket, 1 GiB of random data (median of {rounds} rounds)"
    );
    let mut t = Table::new(&title, &header);
    for (i, w) in WORKLOADS.iter().enumerate() {
        let at = |j: usize| results.get(j).and_then(|r| r[i].as_ref());
        let mut cells = vec![w.name.to_string()];
        cells.extend((0..results.len()).map(|j| w.show(at(j))));
        let best = best_peer(w, results, i);
        let best_sample = best.and_then(at);
        cells.push(format!(
            "{} ({})",
            best.and_then(|j| labels.get(j)).map_or("?", String::as_str),
            w.show(best_sample)
        ));
        cells.push(ratio(w, at(SHALLOW), best_sample));
        // Reads: the same data below a chain of 16 or of 1. Writes: both volumes start
        // every run with an empty top (a fresh clone, a blank volume), so both allocate.
        let base = if w.is_read() { SHALLOW } else { BLANK };
        cells.push(ratio(w, at(DEEP), at(base)));
        let cpu = |s: Option<&Sample>| s.map_or("-".into(), |s| format!("{:.0}%", s.client_cpu));
        cells.push(format!("{} / {}", cpu(at(SHALLOW)), cpu(best_sample)));
        t.row(cells);
    }
    let mut tt = Table::new(
        "Over TCP (127.0.0.1)",
        &["server", "4K randread QD32", "1M read QD8"],
    );
    for (l, iops, bw) in tcp {
        tt.row(vec![
            l.clone(),
            format!("{:.1}k IOPS", iops / 1000.0),
            format!("{:.2} GiB/s", bw / (1u64 << 30) as f64),
        ]);
    }
    format!("{t}\n{NOTES}\n\n{tt}")
}

/// What the columns compare.
const NOTES: &str = "\
- *ours / best peer* compares `platter depth 1` (a volume holding the data, rewritten in \
place like the peers' raw files) with the best peer of the row.
- *depth 16 / depth 1*: on read rows, the same data read through a chain of 16 layers and \
of 1. On write rows both sides start every run with an empty top layer (`depth 16` is \
re-cloned from the 15-layer chain, `depth 1, blank` is re-created), so both allocate \
fresh blocks and only the depth differs. Allocating costs more here than rewriting \
cached blocks in place (`platter depth 1`): every fresh block needs a new page-cache \
page, and a page this VM's kernel has not touched lately must first be backed by the \
host (2 GiB written to tmpfs: 5.3 s the first time, 0.7 s right after).
- *fio CPU*: fio's own CPU use (user + system) per job, averaged over its jobs. Near 100% \
a single-job row is bound by the client (libnbd makes 4 recv, 1 send and 1 poll calls \
per 4 KiB read), not by the server. fio runs with `--gtod_reduce=1` (no latency \
statistics, which the table does not use) so that less of its CPU goes to timing IOs.";

#[cfg(test)]
mod tests {
    use super::{median, Sample};

    fn s(iops: f64, bw: f64) -> Sample {
        Sample {
            iops,
            bw,
            client_cpu: 0.0,
        }
    }

    #[test]
    fn median_takes_the_middle_sample_by_iops() {
        let v = vec![s(30.0, 1.0), s(10.0, 3.0), s(20.0, 2.0)];
        assert_eq!(median(v), Some(s(20.0, 2.0)));
        assert_eq!(median(vec![s(5.0, 9.0)]), Some(s(5.0, 9.0)));
        assert_eq!(median(Vec::new()), None);
    }
}
