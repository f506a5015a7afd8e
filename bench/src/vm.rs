//! VM benchmarks (issue 6): `platter vm create --image docker://…` (the release CLI, in
//! child processes, against a real `platter serve`, `docker-registry` and libvirtd) against
//! pull-then-boot (`skopeo copy`, `tar -xzf`, `qemu-img convert -O qcow2`, then
//! `virsh create` of an equivalent domain on that local file), all in the same run:
//! - time to the guest's first console line (the kernel's `Linux version …`: the firmware
//!   and boot loader have read the kernel and initramfs from the disk), to its /init
//!   starting (`PLATTER-INIT`) and to its `PLATTER-BOOTED` marker (root file system
//!   mounted), ours with a cold image cache (the import is in the time) and a warm one,
//!   the peer without and with its prepare time;
//! - the extra disk space per VM for ten VMs from one image.
//!
//! Console times come from polling the serial log file (written by virtlogd) every 10 ms,
//! from the moment the create command is launched. Everything lives in a 0755 temp dir
//! under /tmp, which qemu (user `libvirt-qemu`) can traverse.
//!
//! This module must never touch a libvirt domain or process it did not create, never
//! bind anything but 127.0.0.1, and must leave no domain behind, whatever happens.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use platter_testkit::registry::Registry;
use platter_types::format_size;

use crate::table::Table;

const URI: &str = "qemu:///system";
/// Every guest gets this much memory, ours and the peer's.
pub(crate) const MEMORY_MIB: u64 = 256;
/// Longest wait for a guest to finish (it boots, writes and powers off in ~5-10 s).
const GUEST_DEADLINE: Duration = Duration::from_secs(120);
/// VMs from one image for the disk space figure.
const TEN: usize = 10;
/// How many of those run at once (the machine has 2 cores).
const AT_ONCE: usize = 2;
const MIB: f64 = 1048576.0;

// ---------------------------------------------------------------------------------------
// Processes we start, stopped on drop

/// A `docker-registry` on 127.0.0.1 at a free port, killed on drop (testkit's, with
/// its data in `dir`).
pub(crate) fn start_registry(dir: &Path) -> Result<Registry> {
    Registry::try_plain_in(dir).map_err(anyhow::Error::msg)
}

/// `platter serve` on the bench's store; SIGTERM (then SIGKILL) on drop.
pub(crate) struct Serve(Child);

impl Serve {
    pub(crate) fn start(platter: &Path, store: &Path) -> Result<Serve> {
        let mut child = Command::new(platter)
            .arg("--store")
            .arg(store)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting platter serve")?;
        let err = child.stderr.take().context("serve stderr")?;
        let serve = Serve(child);
        // It says where it listens once both sockets are bound; it exits if it cannot.
        let mut err = BufReader::new(err);
        let mut said = String::new();
        loop {
            let mut line = String::new();
            if err.read_line(&mut line)? == 0 {
                bail!("platter serve did not start: {said}");
            }
            said.push_str(&line);
            if line.contains("NBD on") {
                break;
            }
        }
        std::thread::spawn(move || for _ in err.lines() {});
        Ok(serve)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        platter_testkit::terminate(&mut self.0, Duration::from_secs(20));
    }
}

/// Destroys and undefines the bench's domains (named with its unique prefix) however the
/// run ends; domains already gone are fine.
#[derive(Default)]
pub(crate) struct DomainGuard(pub(crate) Vec<String>);

impl Drop for DomainGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            for verb in ["destroy", "undefine"] {
                let _ = Command::new("virsh")
                    .args(["-c", URI, verb, name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Commands

/// Runs a command to success; returns its stdout.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) struct Platter {
    pub(crate) bin: PathBuf,
    pub(crate) store: PathBuf,
}

impl Platter {
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--store").arg(&self.store).args(args);
        c.env("PLATTER_LOG", "error");
        c
    }

    pub(crate) fn ok(&self, args: &[&str]) -> Result<String> {
        run(&mut self.cmd(args))
    }

    pub(crate) fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = vec!["-o", "json"];
        a.extend_from_slice(args);
        let out = self.ok(&a)?;
        serde_json::from_str(&out).with_context(|| format!("platter {args:?}: {out}"))
    }

    pub(crate) fn console_log(&self, vm: &str) -> Result<PathBuf> {
        let vm = platter_types::Name::new(vm)?;
        Ok(platter_types::StoreLayout::new(&self.store).console_log(&vm))
    }

    /// `volume list --all` as (name, allocated bytes).
    fn volumes(&self) -> Result<Vec<(String, u64)>> {
        let v = self.json(&["volume", "list", "--all"])?;
        Ok(v.as_array()
            .context("volume list is not an array")?
            .iter()
            .filter_map(|v| {
                Some((
                    v["name"].as_str()?.to_string(),
                    v["allocated"].as_u64().unwrap_or(0),
                ))
            })
            .collect())
    }

    /// Deletes the image cache (`img-*` volumes and their `@base`), so the next
    /// `vm create --image` imports again.
    fn drop_image_cache(&self) -> Result<()> {
        let mut names: Vec<String> = self
            .volumes()?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("img-"))
            .collect();
        // Snapshots (NAME@SNAP) before their volumes.
        names.sort_by_key(|n| !n.contains('@'));
        for n in names {
            self.ok(&["volume", "delete", &n])?;
        }
        Ok(())
    }
}

fn domstate(name: &str) -> Option<String> {
    let out = Command::new("virsh")
        .args(["-c", URI, "domstate", name])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until a domain is shut off or gone (a transient domain goes when it powers off).
pub(crate) fn wait_off(name: &str) -> Result<()> {
    let deadline = Instant::now() + GUEST_DEADLINE;
    loop {
        match domstate(name) {
            None => return Ok(()),
            Some(s) if s == "shut off" => return Ok(()),
            Some(s) if Instant::now() > deadline => bail!("domain {name} still {s}"),
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `du -B1 -s`: allocated bytes of a tree.
fn du(p: &Path) -> Result<u64> {
    let out = run(Command::new("du").arg("-B1").arg("-s").arg(p))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du {}: {out}", p.display()))
}

// ---------------------------------------------------------------------------------------
// Watching a console

/// Seconds from launch to each console event.
#[derive(Debug, Clone, Default)]
pub(crate) struct Marks {
    first_line: f64,
    /// `PLATTER-INIT`: the guest's /init started.
    init: f64,
    pub(crate) booted: f64,
    /// What the first line said (for the report's notes).
    first_text: String,
}

/// Polls a console log until `PLATTER-DONE`, noting when the first line, the
/// `PLATTER-INIT` and the `PLATTER-BOOTED` markers appeared (seconds since `t0`).
/// `launcher` is the create command, if it is still running: it must succeed.
pub(crate) fn watch(log: &Path, t0: Instant, mut launcher: Option<&mut Child>) -> Result<Marks> {
    let (mut first, mut init, mut booted) = (None, None, None);
    let mut first_text = String::new();
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        let now = t0.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&text);
        if first.is_none() && text.contains('\n') {
            first = Some(now);
            first_text = text.lines().next().unwrap_or("").trim().to_string();
        }
        // Firmware escape sequences may precede it on its line.
        if init.is_none() && text.lines().any(|l| l.trim().ends_with("PLATTER-INIT")) {
            init = Some(now);
        }
        if booted.is_none() && text.lines().any(|l| l.trim() == "PLATTER-BOOTED") {
            booted = Some(now);
        }
        if text.contains("PLATTER-ERROR") {
            bail!("guest failed ({}):\n{text}", log.display());
        }
        if let Some(child) = launcher.as_deref_mut() {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    bail!("create failed ({status}): {}", err.trim());
                }
                launcher = None;
            }
        }
        if text.lines().any(|l| l.trim() == "PLATTER-DONE") && launcher.is_none() {
            return match (first, init, booted) {
                (Some(first_line), Some(init), Some(booted)) => Ok(Marks {
                    first_line,
                    init,
                    booted,
                    first_text,
                }),
                _ => bail!(
                    "no PLATTER-INIT or PLATTER-BOOTED in {} (testdata guest out of date?):\n{text}",
                    log.display()
                ),
            };
        }
        if t0.elapsed() > GUEST_DEADLINE {
            bail!("guest not done in {GUEST_DEADLINE:?}; console:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// The contenders

struct Bench {
    work: PathBuf,
    p: Platter,
    image: String,
    prefix: String,
    guard: DomainGuard,
    /// The accelerator our VMs got (the peer uses the same).
    accel: String,
    n: usize,
    peer_qcow2_alloc: u64,
}

impl Bench {
    fn next_name(&mut self, tag: &str) -> String {
        self.n += 1;
        let name = format!("{}-{tag}{}", self.prefix, self.n);
        self.guard.0.push(name.clone());
        name
    }

    /// `platter vm create NAME --image … --start`, timed to the console events; the VM is
    /// deleted after it powers off.
    fn ours(&mut self, tag: &str) -> Result<Marks> {
        let vm = self.next_name(tag);
        let log = self.p.console_log(&vm)?;
        let mem = format!("{MEMORY_MIB}M");
        let mut cmd = self.p.cmd(&[
            "-o",
            "json",
            "vm",
            "create",
            &vm,
            "--image",
            &self.image,
            "--memory",
            &mem,
            "--start",
        ]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let t0 = Instant::now();
        let mut child = cmd.spawn().context("platter vm create")?;
        let marks = watch(&log, t0, Some(&mut child))?;
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut out)?;
        }
        if let Ok(rec) = serde_json::from_str::<serde_json::Value>(&out) {
            if let Some(a) = rec["accel"]["accel"].as_str() {
                self.accel = a.to_string();
            }
        }
        wait_off(&vm)?;
        self.p.ok(&["vm", "delete", &vm])?;
        Ok(marks)
    }

    /// Pull-then-boot: skopeo copy, tar -xzf, qemu-img convert -O qcow2 (the prepare
    /// time), then `virsh create` of the equivalent domain. Returns (prepare s, marks).
    fn peer(&mut self, registry_ref: &str) -> Result<(f64, Marks)> {
        let dir = self.work.join("peer");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("extract"))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let qcow2 = dir.join("disk.qcow2");
        let t0 = Instant::now();
        run(Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false", registry_ref])
            .arg(format!("oci:{}:v1", dir.join("oci").display())))?;
        let blob = crate::import::layer_blob(&dir.join("oci"))?;
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(dir.join("extract")))?;
        run(Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(dir.join("extract/disk/disk.img"))
            .arg(&qcow2))?;
        let prepare = t0.elapsed().as_secs_f64();
        self.peer_qcow2_alloc = du(&qcow2)?;
        std::fs::set_permissions(&qcow2, std::fs::Permissions::from_mode(0o644))?;

        let name = self.next_name("peer");
        let log = dir.join("console.log");
        let xml = dir.join("domain.xml");
        std::fs::write(&xml, peer_domain_xml(&name, &self.accel, &qcow2, &log))?;
        let t1 = Instant::now();
        let mut child = Command::new("virsh")
            .args(["-c", URI, "create"])
            .arg(&xml)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("virsh create")?;
        let marks = watch(&log, t1, Some(&mut child))?;
        wait_off(&name)?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok((prepare, marks))
    }

    /// Ten VMs from one (cached) image, `AT_ONCE` at a time, each booted to
    /// `PLATTER-DONE`; returns (growth of STORE/blobs, sum of the throw-away volumes'
    /// allocated bytes, STORE/blobs before). The VMs are deleted afterwards.
    fn ten(&mut self) -> Result<(u64, u64, u64)> {
        let blobs = self.p.store.join("blobs");
        let before = du(&blobs)?;
        let mem = format!("{MEMORY_MIB}M");
        let mut vms = Vec::new();
        for _ in 0..TEN.div_ceil(AT_ONCE) {
            let batch: Vec<String> = (0..AT_ONCE).map(|_| self.next_name("ten")).collect();
            let t0 = Instant::now();
            for vm in &batch {
                self.p.ok(&[
                    "vm",
                    "create",
                    vm,
                    "--image",
                    &self.image,
                    "--memory",
                    &mem,
                    "--start",
                ])?;
            }
            for vm in &batch {
                watch(&self.p.console_log(vm)?, t0, None)?;
                wait_off(vm)?;
            }
            vms.extend(batch);
        }
        let after = du(&blobs)?;
        let disks: Vec<String> = vms.iter().map(|v| format!("{v}-disk")).collect();
        let sum = self
            .p
            .volumes()?
            .into_iter()
            .filter(|(n, _)| disks.contains(n))
            .map(|(_, a)| a)
            .sum();
        for vm in &vms {
            self.p.ok(&["vm", "delete", vm])?;
        }
        Ok((after.saturating_sub(before), sum, before))
    }
}

/// The peer's domain: what ours is (TCG or KVM as ours got, same memory, one vCPU, BIOS
/// boot, virtio disk with cache=none, user-mode virtio-net, serial console to a file),
/// but on a local qcow2 file instead of an NBD export.
fn peer_domain_xml(name: &str, accel: &str, qcow2: &Path, log: &Path) -> String {
    let ty = if accel == "kvm" { "kvm" } else { "qemu" };
    let kib = MEMORY_MIB * 1024;
    format!(
        "<domain type='{ty}'>
  <name>{name}</name>
  <memory unit='KiB'>{kib}</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>
      <source file='{q}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{l}'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <target type='serial' port='0'/>
    </console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
",
        q = qcow2.display(),
        l = log.display()
    )
}

// ---------------------------------------------------------------------------------------
// The run

/// The BIOS-bootable test guest, built by testdata/build-bootable.sh (cached).
pub(crate) fn bootable_guest() -> Result<PathBuf> {
    run(Command::new("bash").arg("testdata/build-bootable.sh"))
        .context("testdata/build-bootable.sh (run from the repository's top directory)")?;
    let out = std::env::var_os("PLATTER_TESTDATA")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/testdata"));
    let boot = std::path::absolute(out.join("boot.raw"))?;
    if !boot.is_file() {
        bail!("{} was not built", boot.display());
    }
    Ok(boot)
}

#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn best(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
    fn cell(&self) -> String {
        format!("{:.2} ({:.2})", self.best(), self.median())
    }
}

/// first line, /init, booted
#[derive(Default)]
struct Pair(Samples, Samples, Samples);

impl Pair {
    fn add(&mut self, m: &Marks, plus: f64) {
        self.0 .0.push(m.first_line + plus);
        self.1 .0.push(m.init + plus);
        self.2 .0.push(m.booted + plus);
    }
}

/// At most the first 60 characters of a console line, for the report.
fn short(line: &str) -> String {
    match line.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// Runs everything; returns the markdown report.
pub fn run_all(platter: &Path, runs: usize) -> Result<String> {
    let started = Instant::now();
    let runs = runs.max(1);
    let guest = bootable_guest()?;
    let guest_size = std::fs::metadata(&guest)?.len();
    let tmp = tempfile::Builder::new()
        .prefix("platter-bench-vm-")
        .tempdir_in("/tmp")?;
    // qemu (user libvirt-qemu) must reach the NBD socket and the peer's files.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let work = tmp.path().to_path_buf();
    let p = Platter {
        bin: platter.to_path_buf(),
        store: work.join("store"),
    };

    let registry = start_registry(&work.join("registry"))?;
    let reference = format!("docker://127.0.0.1:{}/platter/guest:bench", registry.port());
    p.ok(&["import", &guest.to_string_lossy(), "guest"])?;
    p.ok(&["push", "guest", &reference])?;
    p.ok(&["volume", "delete", "guest"])?;
    let serve = Serve::start(platter, &p.store)?;
    let setup_secs = started.elapsed().as_secs_f64();

    let mut b = Bench {
        work: work.clone(),
        p,
        image: reference.clone(),
        prefix: format!("pbench{}", std::process::id()),
        guard: DomainGuard::default(),
        accel: "tcg".into(),
        n: 0,
        peer_qcow2_alloc: 0,
    };
    let (mut cold, mut warm) = (Pair::default(), Pair::default());
    let (mut peer_boot, mut peer_all) = (Pair::default(), Pair::default());
    let mut prepare = Samples::default();
    let mut import_alone = Samples::default();
    let mut first_texts = (String::new(), String::new());
    for round in 0..runs {
        let peer_first = round % 2 == 1;
        let mut peer = |b: &mut Bench| -> Result<()> {
            let (prep, m) = b.peer(&reference)?;
            prepare.0.push(prep);
            peer_boot.add(&m, 0.0);
            peer_all.add(&m, prep);
            first_texts.1 = m.first_text;
            Ok(())
        };
        if peer_first {
            peer(&mut b)?;
        }
        b.p.drop_image_cache()?;
        let m = b.ours("cold")?;
        cold.add(&m, 0.0);
        first_texts.0 = m.first_text;
        warm.add(&b.ours("warm")?, 0.0);
        if !peer_first {
            peer(&mut b)?;
        }
        // Where the cold start's extra time goes: the import alone, through the server.
        let t0 = Instant::now();
        b.p.ok(&["import", &reference, "import-alone"])?;
        import_alone.0.push(t0.elapsed().as_secs_f64());
        b.p.ok(&["volume", "delete", "import-alone"])?;
    }
    let image_alloc: u64 =
        b.p.volumes()?
            .into_iter()
            .filter(|(n, _)| n.starts_with("img-"))
            .map(|(_, a)| a)
            .sum();
    let (growth, sum_alloc, blobs_before) = b.ten()?;
    let accel = b.accel.clone();
    let peer_qcow2 = b.peer_qcow2_alloc;
    drop(b);
    drop(serve);
    drop(registry);

    let mut t = Table::new(
        &format!(
            "Boot from a containerDisk in a local registry: seconds from launching the create command to the guest's first console line (the kernel's), to its /init starting (`PLATTER-INIT`) and to `PLATTER-BOOTED` (root mounted), best (median) of {runs}; {accel}, {MEMORY_MIB} MiB, 1 vCPU, BIOS boot"
        ),
        &[
            "contender",
            "first console line s",
            "PLATTER-INIT s",
            "PLATTER-BOOTED s",
            "peer pull-then-boot / this (booted)",
        ],
    );
    let ratio = |x: &Pair| format!("{:.2}x", peer_all.2.best() / x.2.best());
    let (cold, warm, peer_boot) = (&cold, &warm, &peer_boot);
    let peer_all = &peer_all;
    t.row(vec![
        "ours, cold cache: `platter vm create --image docker://… --start` (import in the time)"
            .into(),
        cold.0.cell(),
        cold.1.cell(),
        cold.2.cell(),
        ratio(cold),
    ]);
    t.row(vec![
        "ours, warm cache (cached by digest: O(1) clone)".into(),
        warm.0.cell(),
        warm.1.cell(),
        warm.2.cell(),
        ratio(warm),
    ]);
    t.row(vec![
        "peer, boot only: `virsh create` on the prepared local qcow2".into(),
        peer_boot.0.cell(),
        peer_boot.1.cell(),
        peer_boot.2.cell(),
        ratio(peer_boot),
    ]);
    t.row(vec![
        "peer, pull-then-boot: prepare + boot".into(),
        peer_all.0.cell(),
        peer_all.1.cell(),
        peer_all.2.cell(),
        ratio(peer_all),
    ]);
    t.row(vec![
        "ours import alone: `platter import docker://… NAME` (through the server)".into(),
        "–".into(),
        "–".into(),
        import_alone.cell(),
        "–".into(),
    ]);
    t.row(vec![
        "peer prepare alone: `skopeo copy`; `tar -xzf`; `qemu-img convert -O qcow2`".into(),
        "–".into(),
        "–".into(),
        prepare.cell(),
        "–".into(),
    ]);

    let per_vm = growth / TEN as u64;
    let mut d = Table::new(
        &format!("Extra disk space per VM: {TEN} VMs from one image, each booted to `PLATTER-DONE` (it appends a line to its disk and powers off), {AT_ONCE} at a time"),
        &["measure", "bytes", "per VM", "vs image allocated", "target"],
    );
    let pct = |x: u64| {
        if image_alloc == 0 {
            "–".to_string()
        } else {
            format!("{:.2} %", x as f64 * 100.0 / image_alloc as f64)
        }
    };
    d.row(vec![
        "image: virtual size / allocated in the store (shared)".into(),
        format!("{} / {}", format_size(guest_size), format_size(image_alloc)),
        "–".into(),
        "100 %".into(),
        "–".into(),
    ]);
    d.row(vec![
        "ours: `du -B1 -s STORE/blobs` with only the cached image".into(),
        format!("{blobs_before} ({:.2} MiB)", blobs_before as f64 / MIB),
        "–".into(),
        pct(blobs_before),
        "–".into(),
    ]);
    d.row(vec![
        format!("ours: growth of `du -B1 -s STORE/blobs` over the {TEN} VMs"),
        format!("{growth} ({:.2} MiB)", growth as f64 / MIB),
        format_size(per_vm),
        pct(per_vm),
        format!(
            "only the VM's writes {}",
            if per_vm * 10 < image_alloc.max(1) {
                "✓"
            } else {
                "✗"
            }
        ),
    ]);
    d.row(vec![
        "ours: sum of `allocated` of the throw-away volumes".into(),
        format!("{sum_alloc} ({:.2} MiB)", sum_alloc as f64 / MIB),
        format_size(sum_alloc / TEN as u64),
        pct(sum_alloc / TEN as u64),
        "–".into(),
    ]);
    d.row(vec![
        "peer: one converted qcow2 per VM (`du -B1`)".into(),
        format!("{} per VM", format_size(peer_qcow2)),
        format_size(peer_qcow2),
        pct(peer_qcow2),
        "–".into(),
    ]);
    Ok(format!(
        "## VM benchmarks\n\n{t}\n{d}\nOurs: the release `platter` CLI against `platter serve` (NBD over a unix socket) and libvirtd (`{URI}`); the containerDisk (the BIOS-bootable test guest, testdata/build-bootable.sh) was pushed by `platter push` to `docker-registry` on 127.0.0.1. Console times are polled every 10 ms from the serial log file; the first line was {:?} (ours) and {:?} (peer){}. The peer's domain has the same accel, memory, vCPU, virtio disk (cache=none), user-mode virtio-net and serial file as ours. Setup {setup_secs:.0} s, total {:.0} s.\n",
        short(&first_texts.0),
        short(&first_texts.1),
        if first_texts.0.contains("Linux version") && first_texts.1.contains("Linux version") {
            ": the guest's kernel runs with `loglevel=6` (testdata/build-bootable.sh), so its first line marks the hand-over from the boot loader, after the BIOS and syslinux have read the kernel and initramfs from the disk; then the kernel boots to /init, which loads the virtio modules and mounts the root file system"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    ))
}
