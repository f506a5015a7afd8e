//! Import benchmarks (issue 5): `platter import` (the release CLI, in a child process) against
//! the tools people use today, on one 2 GiB image with 1 GiB of random data in 64 MiB runs
//! and 1 GiB of holes, all in the same run:
//! - a qcow2 file → a store volume and a raw file, against `qemu-img convert -O raw`;
//! - raw.gz over HTTP (a server in this process on 127.0.0.1) against
//!   `curl | gunzip > scratch; qemu-img convert scratch out`;
//! - a containerDisk from a local `docker-registry` against `skopeo copy` to an OCI
//!   directory plus `tar -xzf` of the layer: one pushed by `platter push`, one built by
//!   other tools (`qemu-img convert` + `umoci`, as KubeVirt users do).
//!
//! Every result is fsynced inside its timing (ours by the importer, the peers by `sync FILE`),
//! sources are warm in the page cache for everyone, and each figure is the best of `runs`
//! with the order of ours and the peers alternating between runs. Peak RSS comes from
//! `/usr/bin/time -f %M` (or VmHWM polled from /proc when it is missing).
//!
//! This module must never touch anything outside its work directory, never bind anything
//! but 127.0.0.1, and never kill a process it did not start.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};

use platter_testkit::registry::Registry;
use platter_types::format_size;

use crate::table::Table;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 2 << 30;
/// Data and hole runs alternate at this size.
const RUN: u64 = 64 * MIB;
const TIME: &str = "/usr/bin/time";
const REPO: &str = "bench/disk:v1";

macro_rules! argv {
    ($($a:expr),* $(,)?) => { vec![$(OsString::from($a)),*] };
}

// ---------------------------------------------------------------------------------------
// Measuring one command

/// One finished command: wall seconds, peak RSS in KiB, its stdout and stderr.
struct Run {
    secs: f64,
    rss_kib: Option<u64>,
    stdout: String,
    stderr: String,
}

/// Runs `argv` to completion under `/usr/bin/time -f %M` (or polling VmHWM when that is
/// missing, which only sees the direct child). Fails with the tail of stderr.
fn timed(work: &Path, argv: Vec<OsString>) -> Result<Run> {
    let (prog, args) = argv.split_first().context("empty command")?;
    let tf = work.join("time.out");
    let _ = fs::remove_file(&tf);
    let have_time = Path::new(TIME).exists();
    let mut cmd = if have_time {
        let mut c = Command::new(TIME);
        c.arg("-f").arg("%M").arg("-o").arg(&tf).arg(prog);
        c
    } else {
        Command::new(prog)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {argv:?}"))?;
    let pid = child.id();
    let done = AtomicBool::new(false);
    let (out, polled) = std::thread::scope(|s| {
        let poller = (!have_time).then(|| s.spawn(|| poll_hwm(pid, &done)));
        let out = child.wait_with_output();
        done.store(true, Ordering::Relaxed);
        (out, poller.and_then(|p| p.join().ok()).flatten())
    });
    let secs = t0.elapsed().as_secs_f64();
    let out = out.with_context(|| format!("waiting for {argv:?}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.lines().rev().take(8).collect::<Vec<_>>().join(" / ");
        bail!("{argv:?} failed ({}): {tail}", out.status);
    }
    let rss_kib = if have_time {
        fs::read_to_string(&tf)
            .ok()
            .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
    } else {
        polled
    };
    Ok(Run {
        secs,
        rss_kib,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Highest VmHWM (KiB) seen in /proc/PID/status until `done`.
fn poll_hwm(pid: u32, done: &AtomicBool) -> Option<u64> {
    let mut best = None;
    while !done.load(Ordering::Relaxed) {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        best = best.max(hwm);
        std::thread::sleep(Duration::from_millis(20));
    }
    best
}

/// Every contender starts with nothing dirty in the page cache: writeback left over
/// from the one before (a deleted store, a peer's scratch) must not land in its time.
/// Called once at the start of each contender, never between its timed steps.
fn settle() -> Result<()> {
    setup(&mut Command::new("sync")).map(|_| ())
}

/// Runs a setup command (not measured).
fn setup(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Bytes a file or directory tree allocates on disk.
fn allocated(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    let own = m.blocks() * 512;
    if !m.is_dir() {
        return own;
    }
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| allocated(&e.path())).sum::<u64>())
        .unwrap_or(0)
        + own
}

fn remove(p: &Path) {
    if p.is_dir() {
        let _ = fs::remove_dir_all(p);
    } else {
        let _ = fs::remove_file(p);
    }
}

// ---------------------------------------------------------------------------------------
// Results

/// How a scratch figure was obtained.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ScratchKind {
    /// Measured on disk (peers), or none at all.
    #[default]
    Measured,
    /// Our importer's own count of what it wrote to its unlinked temporary file (only
    /// the qcow2 clusters that came before the tables mapping them).
    Reported,
    /// A whole-image spool: estimated as the image's allocation (the file is unlinked).
    Estimated,
}

/// The best of several runs of one contender.
#[derive(Default, Clone)]
struct Best {
    secs: Option<f64>,
    rss_kib: Option<u64>,
    scratch: u64,
    scratch_kind: ScratchKind,
}

impl Best {
    fn add(&mut self, secs: f64, rss_kib: Option<u64>, scratch: u64) {
        self.secs = Some(self.secs.map_or(secs, |s| s.min(secs)));
        self.rss_kib = self.rss_kib.max(rss_kib);
        self.scratch = self.scratch.max(scratch);
    }
}

#[derive(Default)]
struct Results(BTreeMap<&'static str, Best>);

impl Results {
    fn add(&mut self, key: &'static str, secs: f64, rss: Option<u64>, scratch: u64) {
        self.0.entry(key).or_default().add(secs, rss, scratch);
    }
    fn get(&self, key: &str) -> Best {
        self.0.get(key).cloned().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// The image and its forms

/// The 2 GiB sparse raw image: 64 MiB of random data, then a 64 MiB hole, repeated.
fn make_raw(path: &Path) -> Result<()> {
    let f = File::create(path)?;
    f.set_len(SIZE)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut buf = vec![0u8; (4 * MIB) as usize];
    for run in 0..SIZE / RUN / 2 {
        for piece in 0..RUN / (4 * MIB) {
            rng.fill(&mut buf[..]);
            f.write_all_at(&buf, run * 2 * RUN + piece * 4 * MIB)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// An HTTP file server on 127.0.0.1 (GET and HEAD, single Range, If-Range), enough for the
// importer and curl; one thread per connection, bodies sent with io::copy (sendfile).

struct HttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl HttpServer {
    fn start(root: PathBuf) -> Result<HttpServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let root = root.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &root);
                });
            }
        });
        Ok(HttpServer { port, stop })
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let name = parts
        .next()
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let (mut range, mut if_range) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "if-range" => if_range = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let status_only = |w: &mut TcpStream, status: &str| {
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    if method != "GET" && method != "HEAD" {
        return status_only(&mut w, "405 Method Not Allowed");
    }
    // Only plain file names inside the root are served.
    let file = if name.is_empty() || name.contains('/') || name.starts_with('.') {
        None
    } else {
        File::open(root.join(&name)).ok()
    };
    let Some(file) = file else {
        return status_only(&mut w, "404 Not Found");
    };
    let meta = file.metadata()?;
    let len = meta.len();
    let etag = format!("\"{len}-{}\"", meta.mtime());
    let (mut start, mut end) = (0u64, len);
    let mut partial = false;
    if let Some(spec) = range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        if if_range.as_ref().is_none_or(|v| *v == etag) {
            let (a, z) = spec.split_once('-').unwrap_or((spec, ""));
            match (a.parse::<u64>(), z) {
                (Ok(a), "") if a < len => start = a,
                (Ok(a), z) => match z.parse::<u64>() {
                    Ok(z) if a <= z && a < len => (start, end) = (a, (z + 1).min(len)),
                    _ => return status_only(&mut w, "416 Range Not Satisfiable"),
                },
                _ => return status_only(&mut w, "416 Range Not Satisfiable"),
            }
            partial = true;
        }
    }
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\nAccept-Ranges: bytes\r\nETag: {etag}\r\nContent-Type: application/octet-stream\r\n",
        if partial { "206 Partial Content" } else { "200 OK" },
        end - start
    );
    if partial {
        head += &format!("Content-Range: bytes {start}-{}/{len}\r\n", end - 1);
    }
    head += "\r\n";
    w.write_all(head.as_bytes())?;
    if method == "GET" {
        let mut f = file;
        f.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut f.take(end - start), &mut w)?;
    }
    w.flush()
}

// ---------------------------------------------------------------------------------------
// References into the bench's docker-registry (testkit's)

fn reference(r: &Registry) -> String {
    reference_for(r, REPO)
}

fn reference_for(r: &Registry, repo: &str) -> String {
    format!("docker://127.0.0.1:{}/{repo}", r.port())
}

// ---------------------------------------------------------------------------------------
// The contenders

struct Bench {
    work: PathBuf,
    platter: PathBuf,
    results: Results,
    /// Allocated size of the containerDisk's disk.img, which is what our spool holds.
    layer_disk_alloc: u64,
}

/// The parts of our JSON import report the table needs.
struct Report {
    bytes_written: u64,
    spooled: bool,
}

/// What our importer says about temporary files in its JSON progress messages (stderr,
/// one event a line): `Some((bytes, kind))` if it wrote one, `None` if it did not.
fn our_scratch(stderr: &str) -> Option<(u64, ScratchKind)> {
    let texts = stderr.lines().filter_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v["text"].as_str().map(str::to_string)
    });
    let mut found = None;
    for t in texts {
        // "...; spooled N bytes to a temporary file (...)": the qcow2 stream fallback.
        if let Some(rest) = t.split("spooled ").nth(1) {
            if let Some(n) = bytes_to_temp(rest) {
                if n > 0 {
                    found = Some((n, ScratchKind::Reported));
                }
                continue;
            }
        }
        if t.contains("spooling it to a temporary file") {
            found = Some((0, ScratchKind::Estimated));
        }
    }
    found
}

/// The count in "N bytes to a temporary file...".
fn bytes_to_temp(s: &str) -> Option<u64> {
    let (n, rest) = s.split_once(' ')?;
    if rest.starts_with("bytes to a temporary file") {
        n.parse().ok()
    } else {
        None
    }
}

impl Bench {
    /// `platter import SOURCE (NAME | --to-file)` in a fresh store or to a fresh file.
    fn ours(&mut self, key: &'static str, source: &str, to_file: bool) -> Result<()> {
        let store = self.work.join("store-run");
        let outfile = self.work.join("ours.raw");
        remove(&store);
        remove(&outfile);
        // The store is made beforehand, so its creation is not in the timing.
        drop(platter_snapshotter::Store::open(&store)?);
        settle()?;
        let mut a = argv![
            &self.platter,
            "--store",
            &store,
            "-o",
            "json",
            "import",
            source
        ];
        if to_file {
            a.extend(argv!["--to-file", &outfile]);
        } else {
            a.push("disk".into());
        }
        let r = timed(&self.work, a)?;
        let v: serde_json::Value = serde_json::from_str(&r.stdout)
            .with_context(|| format!("{key}: report {:?}", r.stdout))?;
        let rep = Report {
            bytes_written: v["bytes_written"].as_u64().unwrap_or(0),
            spooled: v["spooled"].as_bool().unwrap_or(false),
        };
        if v["size"].as_u64() != Some(SIZE) || rep.bytes_written != SIZE / 2 {
            bail!("{key}: unexpected import report {v}");
        }
        // The flag says whether a temporary file was used; the messages say how much.
        let (scratch, kind) = match (rep.spooled, our_scratch(&r.stderr)) {
            (false, _) => (0, ScratchKind::Measured),
            (true, Some((n, ScratchKind::Reported))) => (n, ScratchKind::Reported),
            (true, _) => (self.layer_disk_alloc, ScratchKind::Estimated),
        };
        self.results.add(key, r.secs, r.rss_kib, scratch);
        if kind != ScratchKind::Measured {
            if let Some(b) = self.results.0.get_mut(key) {
                b.scratch_kind = kind;
            }
        }
        remove(&store);
        remove(&outfile);
        Ok(())
    }

    /// `qemu-img convert [opts] -O raw QCOW2 out; sync out`.
    fn qemu_convert(&mut self, key: &'static str, qcow2: &Path, opts: &[&str]) -> Result<()> {
        let out = self.work.join("peer.raw");
        remove(&out);
        settle()?;
        let mut a = argv!["qemu-img", "convert"];
        a.extend(opts.iter().map(OsString::from));
        a.extend(argv!["-O", "raw", qcow2, &out]);
        let conv = timed(&self.work, a)?;
        let sync = timed(&self.work, argv!["sync", &out])?;
        check_len(&out)?;
        self.results.add(
            key,
            conv.secs + sync.secs,
            conv.rss_kib.max(sync.rss_kib),
            0,
        );
        remove(&out);
        Ok(())
    }

    /// `curl -s URL | gunzip > scratch; qemu-img convert -W -O raw scratch out; sync out`.
    fn curl_gunzip(&mut self, key: &'static str, url: &str) -> Result<()> {
        let scratch = self.work.join("peer-scratch.raw");
        let out = self.work.join("peer.raw");
        remove(&scratch);
        remove(&out);
        settle()?;
        let script = format!(
            "set -e; curl -sf '{url}' | gunzip > '{s}'; qemu-img convert -W -O raw '{s}' '{o}'; sync '{o}'",
            s = scratch.display(),
            o = out.display()
        );
        let r = timed(&self.work, argv!["sh", "-c", &script])?;
        check_len(&scratch)?;
        check_len(&out)?;
        let peak_extra = allocated(&scratch);
        self.results.add(key, r.secs, r.rss_kib, peak_extra);
        remove(&scratch);
        remove(&out);
        Ok(())
    }

    /// `skopeo copy docker://… oci:DIR:v1`, then `tar -xzf` of the layer blob and `sync`
    /// of disk.img; then, as a second peer, also `qemu-img convert -W -O raw` of disk.img
    /// (a raw disk like ours).
    fn skopeo(&mut self, key: &'static str, key_raw: &'static str, reference: &str) -> Result<()> {
        let oci = self.work.join("peer-oci");
        let ext = self.work.join("peer-extract");
        let out = self.work.join("peer.raw");
        for p in [&oci, &ext, &out] {
            remove(p);
        }
        fs::create_dir_all(&ext)?;
        settle()?;
        let mut oci_ref = OsString::from("oci:");
        oci_ref.push(&oci);
        oci_ref.push(":v1");
        let copy = timed(
            &self.work,
            argv![
                "skopeo",
                "copy",
                "-q",
                "--src-tls-verify=false",
                reference,
                oci_ref
            ],
        )?;
        let t0 = Instant::now();
        let blob = layer_blob(&oci)?;
        let find = t0.elapsed().as_secs_f64();
        let untar = timed(&self.work, argv!["tar", "-xzf", &blob, "-C", &ext])?;
        let disk = ext.join("disk/disk.img");
        let sync = timed(&self.work, argv!["sync", &disk])?;
        let secs = copy.secs + find + untar.secs + sync.secs;
        let rss = copy.rss_kib.max(untar.rss_kib).max(sync.rss_kib);
        let oci_alloc = allocated(&oci);
        self.layer_disk_alloc = allocated(&disk);
        self.results.add(key, secs, rss, oci_alloc);
        let conv = timed(
            &self.work,
            argv!["qemu-img", "convert", "-W", "-O", "raw", &disk, &out],
        )?;
        let sync2 = timed(&self.work, argv!["sync", &out])?;
        check_len(&out)?;
        self.results.add(
            key_raw,
            secs + conv.secs + sync2.secs,
            rss.max(conv.rss_kib).max(sync2.rss_kib),
            oci_alloc + self.layer_disk_alloc,
        );
        for p in [&oci, &ext, &out] {
            remove(p);
        }
        Ok(())
    }
}

fn check_len(p: &Path) -> Result<()> {
    let len = fs::metadata(p)
        .with_context(|| p.display().to_string())?
        .len();
    if len != SIZE {
        bail!("{} is {len} bytes, not {SIZE}", p.display());
    }
    Ok(())
}

/// The path of the first layer blob of the only image in an OCI layout.
pub(crate) fn layer_blob(oci: &Path) -> Result<PathBuf> {
    let blob = |digest: &str| -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .with_context(|| format!("digest {digest}"))?;
        Ok(oci.join("blobs/sha256").join(hex))
    };
    let index: serde_json::Value = serde_json::from_slice(&fs::read(oci.join("index.json"))?)?;
    let m = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json has no manifest")?;
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(blob(m)?)?)?;
    let l = manifest["layers"][0]["digest"]
        .as_str()
        .context("manifest has no layer")?;
    blob(l)
}

// ---------------------------------------------------------------------------------------
// The run

const Q_STORE: &str = "qcow2 → volume";
const Q_FILE: &str = "qcow2 → raw file";
const Q_PEER: &str = "qemu-img convert -O raw; sync";
const Q_PEER_W: &str = "qemu-img convert -W -O raw; sync";
const G_STORE: &str = "raw.gz over HTTP → volume";
const G_FILE: &str = "raw.gz over HTTP → raw file";
const G_PEER: &str = "curl | gunzip > scratch; qemu-img convert -W -O raw; sync";
const R_STORE: &str = "containerDisk from registry → volume";
const R_FILE: &str = "containerDisk from registry → raw file";
const R_PEER: &str = "skopeo copy docker:// oci:; tar -xzf layer; sync";
const U_STORE: &str = "containerDisk (qemu-img + umoci) from registry → volume";
const U_FILE: &str = "containerDisk (qemu-img + umoci) from registry → raw file";
/// The containerDisk built by other tools.
const UMOCI_REPO: &str = "bench/umoci:v1";
const R_PEER_RAW: &str = "skopeo copy; tar -xzf; qemu-img convert -W -O raw; sync";

/// Runs everything in a new temp dir under `dir`; returns the markdown report.
pub fn run(dir: &Path, platter: &Path, runs: usize) -> Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("platter-bench-import-")
        .tempdir_in(dir)?;
    let work = tmp.path().to_path_buf();
    let started = Instant::now();
    let runs = runs.max(1);

    // Setup (not measured): the raw image, its qcow2 and gzip forms, the servers, the
    // containerDisk pushed by us from a store volume.
    let raw = work.join("image.raw");
    make_raw(&raw)?;
    let qcow2 = work.join("image.qcow2");
    setup(
        Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow2),
    )?;
    let www = work.join("www");
    fs::create_dir_all(&www)?;
    setup(
        Command::new("gzip")
            .args(["-c", "-6"])
            .arg(&raw)
            .stdout(File::create(www.join("image.raw.gz"))?),
    )?;
    let gz_len = fs::metadata(www.join("image.raw.gz"))?.len();
    remove(&raw);
    let http = HttpServer::start(www)?;
    let registry = crate::vm::start_registry(&work.join("registry"))?;
    let src_store = work.join("store-src");
    setup(
        Command::new(platter)
            .arg("--store")
            .arg(&src_store)
            .arg("import")
            .arg(&qcow2)
            .arg("disk"),
    )?;
    setup(Command::new(platter).arg("--store").arg(&src_store).args([
        "push",
        "disk",
        &reference(&registry),
    ]))?;
    remove(&src_store);
    // The same qcow2 (made by qemu-img) as a containerDisk built by other tools: umoci
    // writes a gzip layer with /disk/disk.img, skopeo copies it to the registry.
    let lay = work.join("umoci");
    setup(Command::new("sh").arg("-c").arg(format!(
        "set -e; umoci init --layout '{l}'; umoci new --image '{l}:cd'; \
         umoci insert --image '{l}:cd' '{q}' /disk/disk.img; \
         skopeo copy -q --dest-tls-verify=false 'oci:{l}:cd' '{r}'",
        l = lay.display(),
        q = qcow2.display(),
        r = reference_for(&registry, UMOCI_REPO),
    )))?;
    remove(&lay);
    let setup_secs = started.elapsed().as_secs_f64();

    let mut b = Bench {
        work: work.clone(),
        platter: platter.to_path_buf(),
        results: Results::default(),
        layer_disk_alloc: 0,
    };
    let q = qcow2.to_string_lossy().into_owned();
    let url = http.url("image.raw.gz");
    let reg = reference(&registry);
    let umoci = reference_for(&registry, UMOCI_REPO);
    for round in 0..runs {
        let ours_first = round % 2 == 1;
        // The peer runs first in the registry group of round 0, so the size of our spool
        // (the layer's disk.img) is known before our first registry import.
        for group in 0..3 {
            for side in [ours_first, !ours_first] {
                match (group, side) {
                    (0, true) => {
                        b.ours(Q_STORE, &q, false)?;
                        b.ours(Q_FILE, &q, true)?;
                    }
                    (0, false) => {
                        b.qemu_convert(Q_PEER, &qcow2, &[])?;
                        b.qemu_convert(Q_PEER_W, &qcow2, &["-W"])?;
                    }
                    (1, true) => {
                        b.ours(G_STORE, &url, false)?;
                        b.ours(G_FILE, &url, true)?;
                    }
                    (1, false) => b.curl_gunzip(G_PEER, &url)?,
                    (_, true) => {
                        b.ours(R_STORE, &reg, false)?;
                        b.ours(R_FILE, &reg, true)?;
                        b.ours(U_STORE, &umoci, false)?;
                        b.ours(U_FILE, &umoci, true)?;
                    }
                    (_, false) => b.skopeo(R_PEER, R_PEER_RAW, &reg)?,
                }
            }
        }
    }
    drop(http);
    drop(registry);
    Ok(render(
        &b.results,
        runs,
        gz_len,
        fs::metadata(&qcow2)?.len(),
        setup_secs,
        started.elapsed().as_secs_f64(),
    ))
}

/// A command as a table cell: in backticks, with `|` escaped for markdown tables.
fn code(s: &str) -> String {
    format!("`{}`", s.replace('|', "\\|"))
}

fn secs(b: &Best) -> String {
    b.secs.map_or("–".into(), |s| format!("{s:.2}"))
}

fn rss(b: &Best) -> String {
    b.rss_kib
        .map_or("n/a".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

fn scratch(b: &Best) -> String {
    match (b.scratch, b.scratch_kind) {
        (0, _) => "0".into(),
        (n, ScratchKind::Measured) => format_size(n),
        (n, ScratchKind::Reported) => format!("{} (out-of-order clusters)", format_size(n)),
        (n, ScratchKind::Estimated) => format!("≈ {} (spool)", format_size(n)),
    }
}

fn render(
    r: &Results,
    runs: usize,
    gz_len: u64,
    qcow2_len: u64,
    setup_secs: f64,
    total_secs: f64,
) -> String {
    let mut t = Table::new(
        &format!(
            "Imports of a 2 GiB image (1 GiB random data in 64 MiB runs, 1 GiB holes), best of {runs}; every result fsynced inside the timing (ours by the importer, peers by `sync FILE`); sources warm in the page cache; a global `sync` before each contender (untimed); ours = the `platter` release CLI"
        ),
        &[
            "import",
            "ours s",
            "ours peak RSS",
            "ours scratch",
            "best peer",
            "peer s",
            "peer peak RSS",
            "peer scratch",
            "speedup (peer s / ours s)",
            "target",
        ],
    );
    let best_of = |keys: &[&'static str]| -> (&'static str, Best) {
        keys.iter()
            .map(|k| (*k, r.get(k)))
            .min_by(|a, b| {
                let x = a.1.secs.unwrap_or(f64::MAX);
                x.total_cmp(&b.1.secs.unwrap_or(f64::MAX))
            })
            .unwrap_or(("?", Best::default()))
    };
    let rows: [(&str, &[&'static str], f64); 8] = [
        (Q_STORE, &[Q_PEER, Q_PEER_W], 1.2),
        (Q_FILE, &[Q_PEER, Q_PEER_W], 1.2),
        (G_STORE, &[G_PEER], 1.5),
        (G_FILE, &[G_PEER], 1.5),
        (R_STORE, &[R_PEER], 1.2),
        (R_FILE, &[R_PEER], 1.2),
        (U_STORE, &[R_PEER], 1.2),
        (U_FILE, &[R_PEER], 1.2),
    ];
    for (ours_key, peers, target) in rows {
        let o = r.get(ours_key);
        let (pk, p) = best_of(peers);
        let ratio = match (o.secs, p.secs) {
            (Some(o), Some(p)) if o > 0.0 => p / o,
            _ => 0.0,
        };
        t.row(vec![
            ours_key.into(),
            secs(&o),
            rss(&o),
            scratch(&o),
            code(pk),
            secs(&p),
            rss(&p),
            scratch(&p),
            format!("{ratio:.2}x"),
            format!("≥ {target}x {}", if ratio >= target { "✓" } else { "✗" }),
        ]);
    }
    let mut pt = Table::new(
        "Every peer (best of the runs; peak RSS = the largest single process)",
        &["peer", "s", "peak RSS", "peak extra disk (scratch)"],
    );
    for k in [Q_PEER, Q_PEER_W, G_PEER, R_PEER, R_PEER_RAW] {
        let p = r.get(k);
        pt.row(vec![code(k), secs(&p), rss(&p), scratch(&p)]);
    }
    format!(
        "## Import benchmarks\n\n{t}\n{pt}\nqcow2 {}; raw.gz {} (gzip -6), served by an HTTP server in the bench process on 127.0.0.1; the containerDisk was pushed by `platter push` (qcow2 disk.img, gzip layer) to `docker-registry` on 127.0.0.1, and the same qcow2 made by `qemu-img convert` was also packed by `umoci` (gzip layer) and copied there by `skopeo` (its peer row is the `skopeo copy` of the first, same data). A qcow2 in a layer is decoded as a stream in one pass; our scratch is what the importer reports writing to its unlinked temporary file, which only holds clusters that come before the L1/L2 tables mapping them (none in `platter push` or `qemu-img` output: both put the tables first). Setup {setup_secs:.0} s, total {total_secs:.0} s.\n",
        format_size(qcow2_len),
        format_size(gz_len),
    )
}
