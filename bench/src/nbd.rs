//! NBD server benchmarks: ours (`platter serve`), `qemu-nbd` (raw writeback, raw O_DIRECT,
//! a qcow2 chain of depth 16) and `nbdkit file`, each on its own copy of the same 1 GiB of
//! random data, all driven by `fio --ioengine=nbd` in one run.

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

/// Reads first, then writes: a write workload changes what the next one reads (in place
/// in a file written in large pieces on depth 1, copy-on-write into 4 KiB pieces of a fresh
/// layer on depth 16), and the page cache copies data written 4 KiB at a time about 3x
/// slower than data written in large pieces. Reads on untouched volumes compare what the
/// depth of the chain costs.
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

/// Starts one server under test.
type Starter = Box<dyn Fn() -> Result<Server>>;

/// A running server: its fio URI and the process to stop.
struct Server {
    label: String,
    uri: String,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn spawn(label: &str, cmd: &mut Command, sock: &Path, export: &str) -> Result<Server> {
    let _ = std::fs::remove_file(sock);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {label}"))?;
    let s = Server {
        label: label.into(),
        uri: format!("nbd+unix:///{export}?socket={}", sock.display()),
        child,
    };
    wait_for(sock)?;
    Ok(s)
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

/// A store with volume `v` holding the data, `depth` layers deep (one 4 KiB write each).
fn make_store(dir: &Path, data: &Path, depth: usize) -> Result<()> {
    let store = Store::open(dir)?;
    let name = Name::new("v")?;
    store.create_volume(&name, SIZE)?;
    let v = store.open_volume(&VolumeRef::parse("v")?)?;
    let f = File::open(data)?;
    let mut buf = vec![0u8; CHUNK as usize];
    for i in 0..SIZE / CHUNK {
        f.read_exact_at(&mut buf, i * CHUNK)?;
        v.write_at(&buf, i * CHUNK)?;
    }
    v.flush()?;
    for d in 1..depth {
        store.snapshot(&name, &Name::new(&format!("d{d}"))?)?;
        f.read_exact_at(&mut buf[..4096], d as u64 * 4096)?;
        v.write_at(&buf[..4096], d as u64 * 4096)?;
    }
    v.flush()?;
    Ok(())
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

/// Runs one fio job; returns IOPS and bytes/s summed over jobs.
fn fio(uri: &str, w: &Workload, runtime: u32, out: &Path) -> Result<(f64, f64)> {
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
    let side = if w.rw.contains("read") {
        &job["read"]
    } else {
        &job["write"]
    };
    Ok((
        side["iops"].as_f64().unwrap_or(0.0),
        side["bw_bytes"].as_f64().unwrap_or(0.0),
    ))
}

/// The sample with the median IOPS (the middle one of an odd count).
fn median(mut samples: Vec<(f64, f64)>) -> (f64, f64) {
    samples.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    samples
        .get(samples.len() / 2)
        .copied()
        .unwrap_or((0.0, 0.0))
}

pub fn run_all(
    dir: &Path,
    platter: &Path,
    runtime: u32,
    read_rounds: usize,
    tcp_port: u16,
) -> Result<String> {
    let data = dir.join("data.raw");
    make_data(&data)?;
    let mut servers_setup: Vec<(String, Starter)> = Vec::new();
    for depth in [1usize, 16] {
        let sdir = dir.join(format!("store-{depth}"));
        make_store(&sdir, &data, depth)?;
        let p = platter.to_path_buf();
        let label = format!("platter depth {depth}");
        let l2 = label.clone();
        servers_setup.push((
            label,
            Box::new(move || {
                spawn(
                    &l2,
                    Command::new(&p).arg("--store").arg(&sdir).arg("serve"),
                    &sdir.join("run/nbd.sock"),
                    "v",
                )
            }),
        ));
    }
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
        std::fs::copy(&data, &copy)?;
        let sock = dir.join(format!("{}.sock", label.replace(' ', "-")));
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        servers_setup.push((
            label.into(),
            Box::new(move || {
                spawn(
                    label,
                    Command::new("qemu-nbd")
                        .arg("-k")
                        .arg(&sock)
                        .args(["-x", "v"])
                        .args(&args)
                        .arg(&copy),
                    &sock,
                    "v",
                )
            }),
        ));
    }
    let chain = qcow2_chain(dir, &data, 16)?;
    let qsock = dir.join("qemu-chain.sock");
    servers_setup.push((
        "qemu-nbd qcow2 depth 16".into(),
        Box::new(move || {
            spawn(
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
                "v",
            )
        }),
    ));
    let kcopy = dir.join("nbdkit.raw");
    std::fs::copy(&data, &kcopy)?;
    let ksock = dir.join("nbdkit.sock");
    servers_setup.push((
        "nbdkit file".into(),
        Box::new(move || {
            spawn(
                "nbdkit file",
                Command::new("nbdkit")
                    .args(["-f", "-U"])
                    .arg(&ksock)
                    .args(["-e", "v", "--threads", "16", "file"])
                    .arg(&kcopy)
                    .arg("cache=none"),
                &ksock,
                "v",
            )
        }),
    ));

    let labels: Vec<String> = servers_setup.iter().map(|(l, _)| l.clone()).collect();
    let out = dir.join("fio.json");
    // Every server runs at once (each on its own copy) and each workload visits them in
    // an order rotated per workload, so noise from the machine falls on all of them alike
    // instead of on whoever ran during a busy minute.
    let servers = servers_setup
        .iter()
        .map(|(_, start)| start())
        .collect::<Result<Vec<Server>>>()?;
    let mut results: Vec<Vec<(f64, f64)>> = vec![vec![(0.0, 0.0); WORKLOADS.len()]; servers.len()];
    for (i, w) in WORKLOADS.iter().enumerate() {
        // Reads leave the volumes as they were, so they run `read_rounds` times (the order
        // rotated again each round) and the median counts: one 6 s sample on a shared
        // 2-core machine moves by 15%. Writes run once, since a second round would measure
        // something else (blocks the first round already took over).
        let rounds = if w.rw.contains("read") {
            read_rounds.max(1)
        } else {
            1
        };
        let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); servers.len()];
        for round in 0..rounds {
            for k in 0..servers.len() {
                let j = (i + round + k) % servers.len();
                let server = &servers[j];
                samples[j].push(
                    fio(&server.uri, w, runtime, &out)
                        .with_context(|| format!("{} {}", server.label, w.name))?,
                );
            }
        }
        for (j, s) in samples.into_iter().enumerate() {
            results[j][i] = median(s);
        }
    }
    drop(servers);
    // Once over TCP: ours and qemu-nbd writeback, 4K randread QD32 and 1M read.
    let tcp = tcp_runs(dir, platter, &data, runtime, tcp_port, &out)?;
    Ok(render(&labels, &results, &tcp, read_rounds))
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
    let ours = Command::new(platter)
        .arg("--store")
        .arg(&sdir)
        .arg("serve")
        .arg("--nbd-listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let s = Server {
        label: "platter tcp".into(),
        uri: format!("nbd://127.0.0.1:{port}/v"),
        child: ours,
    };
    wait_for(&sdir.join("run/nbd.sock"))?;
    let copy = dir.join("qemu-tcp.raw");
    std::fs::copy(data, &copy)?;
    let (r, _) = fio(&s.uri, workload("4K randread QD32")?, runtime, out)?;
    let (_, bw) = fio(&s.uri, workload("1M read QD8")?, runtime, out)?;
    rows.push(("platter".to_string(), r, bw));
    drop(s);
    let q = Command::new("qemu-nbd")
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
    let s = Server {
        label: "qemu tcp".into(),
        uri: format!("nbd://127.0.0.1:{}/v", port + 1),
        child: q,
    };
    std::thread::sleep(Duration::from_millis(500));
    let (r, _) = fio(&s.uri, workload("4K randread QD32")?, runtime, out)?;
    let (_, bw) = fio(&s.uri, workload("1M read QD8")?, runtime, out)?;
    rows.push(("qemu-nbd writeback".to_string(), r, bw));
    Ok(rows)
}

fn fmt_result(w: &Workload, (iops, bw): (f64, f64)) -> String {
    if w.bs == "4k" {
        format!("{:.1}k IOPS", iops / 1000.0)
    } else {
        format!("{:.2} GiB/s", bw / (1u64 << 30) as f64)
    }
}

fn render(
    labels: &[String],
    results: &[Vec<(f64, f64)>],
    tcp: &[(String, f64, f64)],
    read_rounds: usize,
) -> String {
    let mut header: Vec<&str> = vec!["workload"];
    header.extend(labels.iter().map(String::as_str));
    header.extend(["best peer", "ours / best peer", "depth 16 / depth 1"]);
    let title = format!(
        "NBD servers, fio --ioengine=nbd over a unix socket, 1 GiB of random data (reads: median of {read_rounds} rounds, writes: one round)"
    );
    let mut t = Table::new(&title, &header);
    for (i, w) in WORKLOADS.iter().enumerate() {
        let metric = |r: &(f64, f64)| if w.bs == "4k" { r.0 } else { r.1 };
        let mut cells = vec![w.name.to_string()];
        cells.extend(results.iter().map(|r| fmt_result(w, r[i])));
        let (best_idx, best) = results
            .iter()
            .enumerate()
            .skip(2)
            .map(|(j, r)| (j, metric(&r[i])))
            .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
        cells.push(format!(
            "{} ({})",
            labels.get(best_idx).map(String::as_str).unwrap_or("?"),
            fmt_result(w, results[best_idx][i])
        ));
        cells.push(format!("{:.2}x", metric(&results[0][i]) / best.max(1.0)));
        cells.push(format!(
            "{:.2}x",
            metric(&results[1][i]) / metric(&results[0][i]).max(1.0)
        ));
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
    format!("{t}\n{DEPTH_NOTE}\n\n{tt}")
}

/// What the depth column compares on the write rows.
const DEPTH_NOTE: &str = "Depth 16 / depth 1 on the write rows: the depth-16 volume's first \
write to a block is a copy-on-write into its fresh top layer (a new page-cache page, and on this \
VM often a guest page the hypervisor has to back first), the depth-1 volume overwrites its own \
cached blocks in place; the same fresh-clone 4 KiB QD32 run ranged from 23k to 117k IOPS between \
identical runs. The read rows compare the chain itself.";

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_takes_the_middle_sample_by_iops() {
        let s = vec![(30.0, 1.0), (10.0, 3.0), (20.0, 2.0)];
        assert_eq!(median(s), (20.0, 2.0));
        assert_eq!(median(vec![(5.0, 9.0)]), (5.0, 9.0));
        assert_eq!(median(Vec::new()), (0.0, 0.0));
    }
}
