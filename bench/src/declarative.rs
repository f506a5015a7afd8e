//! Declarative benchmarks (issue 20), all against a real `platter serve`, docker-registry
//! and libvirtd, in child processes of the release CLI:
//! - time from `platter apply -f` of a VirtualMachine whose root disk is a registry
//!   dataVolumeTemplate to the guest's `PLATTER-BOOTED`, against doing the same by hand
//!   (`platter import docker://… VOL` then `platter vm create --volume VOL --start`) in the
//!   same run;
//! - scale: 1,000 DataVolumes (500 blank, 500 O(1) clones of one of them) and 200 VMs
//!   (Halted) applied in one file: the apply, the time until every DataVolume is
//!   Succeeded, `get dv` and `get vm` of all of them, and store operations through the
//!   server with 10 objects against with 1,200;
//! - a DataVolume with `source.pvc` of a 10 GiB volume full of data (an O(1) clone),
//!   against copying that disk's 10 GiB file with `cp` (what a copying clone costs), same
//!   run.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::table::Table;
use crate::vm::{bootable_guest, wait_off, watch, DomainGuard, Platter, Serve, MEMORY_MIB};

const DVS: usize = 1000;
const VMS: usize = 200;
const DEADLINE: Duration = Duration::from_secs(600);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

fn vm_yaml(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: RerunOnFailure
  dataVolumeTemplates:
  - metadata:
      name: {name}-root
    spec:
      source:
        registry:
          url: {image}
      storage:
        resources:
          requests:
            storage: 256Mi
  template:
    spec:
      domain:
        memory:
          guest: {MEMORY_MIB}Mi
        devices:
          disks:
          - name: root
            disk: {{bus: virtio}}
      volumes:
      - name: root
        dataVolume:
          name: {name}-root
"#
    )
}

/// Seconds from `apply` to `PLATTER-BOOTED`; the VM is deleted (with its disk) after.
fn by_apply(p: &Platter, work: &Path, name: &str, image: &str) -> Result<f64> {
    let file = work.join(format!("{name}.yaml"));
    std::fs::write(&file, vm_yaml(name, image))?;
    let log = p.console_log(name)?;
    let t0 = Instant::now();
    p.ok(&["apply", "-f", &file.to_string_lossy()])?;
    let marks = watch(&log, t0, None)?;
    wait_off(name)?;
    p.ok(&["delete", "vm", name, "--timeout", "120s"])?;
    Ok(marks.booted)
}

/// Seconds from `import` to `PLATTER-BOOTED` through `vm create --volume --start`.
fn by_hand(p: &Platter, name: &str, image: &str) -> Result<f64> {
    let vol = format!("{name}-root");
    let log = p.console_log(name)?;
    let t0 = Instant::now();
    p.ok(&["import", image, &vol])?;
    let mem = format!("{MEMORY_MIB}M");
    let mut child = p
        .cmd(&[
            "vm", "create", name, "--volume", &vol, "--memory", &mem, "--start",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("platter vm create")?;
    let marks = watch(&log, t0, Some(&mut child))?;
    wait_off(name)?;
    p.ok(&["vm", "delete", name])?;
    p.ok(&["volume", "delete", &vol])?;
    Ok(marks.booted)
}

fn scale_yaml() -> String {
    let mut y = String::new();
    for i in 0..DVS / 2 {
        y.push_str(&format!(
            "---\napiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: blank-{i}\nspec:\n  source:\n    blank: {{}}\n  storage:\n    resources:\n      requests:\n        storage: 16Mi\n"
        ));
        y.push_str(&format!(
            "---\napiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: clone-{i}\nspec:\n  source:\n    pvc: {{namespace: default, name: blank-0}}\n  storage: {{}}\n"
        ));
    }
    for i in 0..VMS {
        y.push_str(&format!(
            "---\napiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: idle-{i}\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        memory: {{guest: 128Mi}}\n        devices:\n          disks:\n          - name: root\n            disk: {{bus: virtio}}\n      volumes:\n      - name: root\n        dataVolume: {{name: clone-{i}}}\n"
        ));
    }
    y
}

/// Median seconds of `volume create/snapshot/clone/delete` through the server, 5 each.
fn store_ops(p: &Platter, tag: &str) -> Result<[f64; 4]> {
    let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for i in 0..5 {
        let v = format!("op-{tag}-{i}");
        let c = format!("op-{tag}-{i}-c");
        let snap = format!("{v}@s");
        t[0].push(timed(|| {
            p.ok(&["volume", "create", &v, "--size", "16M"]).map(drop)
        })?);
        t[1].push(timed(|| p.ok(&["volume", "snapshot", &snap]).map(drop))?);
        t[2].push(timed(|| p.ok(&["volume", "clone", &snap, &c]).map(drop))?);
        p.ok(&["volume", "delete", &c])?;
        t[3].push(timed(|| p.ok(&["volume", "delete", &v]).map(drop))?);
    }
    Ok(t.map(median))
}

pub fn run(platter: &Path, runs: usize) -> Result<String> {
    let runs = runs.max(1);
    let guest = bootable_guest()?;
    let tmp = tempfile::Builder::new()
        .prefix("platter-bench-decl-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let work = tmp.path().to_path_buf();
    let p = Platter {
        bin: platter.to_path_buf(),
        store: work.join("store"),
    };
    let registry = crate::vm::start_registry(&work.join("registry"))?;
    let image = format!("docker://127.0.0.1:{}/platter/guest:decl", registry.port());
    p.ok(&["import", &guest.to_string_lossy(), "guest"])?;
    p.ok(&["push", "guest", &image])?;
    p.ok(&["volume", "delete", "guest"])?;
    let serve = Serve::start(platter, &p.store)?;
    let prefix = format!("pdecl{}", std::process::id());
    let mut guard = DomainGuard::default();

    let (mut applied, mut hand) = (Vec::new(), Vec::new());
    for round in 0..runs {
        let a = format!("{prefix}-a{round}");
        let h = format!("{prefix}-h{round}");
        guard.0.push(a.clone());
        guard.0.push(h.clone());
        // Alternate who goes first: the registry's and the page cache's warmth even out.
        if round % 2 == 0 {
            applied.push(by_apply(&p, &work, &a, &image)?);
            hand.push(by_hand(&p, &h, &image)?);
        } else {
            hand.push(by_hand(&p, &h, &image)?);
            applied.push(by_apply(&p, &work, &a, &image)?);
        }
    }
    let mut boot = Table::new(
        &format!("Boot from a registry image: seconds from the first command to `PLATTER-BOOTED`, median of {runs} (TCG, {MEMORY_MIB} MiB, BIOS boot, import in the time)"),
        &["how", "to PLATTER-BOOTED s", "by hand / this"],
    );
    let (ma, mh) = (median(applied.clone()), median(hand.clone()));
    boot.row(vec![
        "`platter apply -f vm.yaml` (VirtualMachine with a registry dataVolumeTemplate)".into(),
        format!("{ma:.2}"),
        format!("{:.2}x", mh / ma),
    ]);
    boot.row(vec![
        "by hand: `platter import docker://… VOL` + `platter vm create --volume VOL --start`"
            .into(),
        format!("{mh:.2}"),
        "1.00x".into(),
    ]);

    let small = store_ops(&p, "small")?;
    // Before the 1,200 objects: what is timed is the clone, not a loop over them all.
    let (clone_s, cp_s) = big_clone(&p, &work)?;
    let file = work.join("scale.yaml");
    std::fs::write(&file, scale_yaml())?;
    let apply_s = timed(|| p.ok(&["apply", "-f", &file.to_string_lossy()]).map(drop))?;
    let t0 = Instant::now();
    loop {
        let list = p.json(&["get", "dv"])?;
        let items = list["items"].as_array().context("get dv: no items")?;
        let done = items
            .iter()
            .filter(|o| o["status"]["phase"] == "Succeeded")
            .count();
        if done == DVS {
            break;
        }
        if t0.elapsed() > DEADLINE {
            bail!("{done} of {DVS} DataVolumes Succeeded after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let converge_s = t0.elapsed().as_secs_f64();
    let mut get_dv = Vec::new();
    let mut get_vm = Vec::new();
    for _ in 0..5 {
        get_dv.push(timed(|| p.ok(&["get", "dv"]).map(drop))?);
        get_vm.push(timed(|| p.ok(&["get", "vm"]).map(drop))?);
    }
    let large = store_ops(&p, "large")?;
    drop(guard);
    drop(serve);
    drop(registry);

    let mut scale = Table::new(
        &format!("Scale: {DVS} DataVolumes (half blank 16 MiB, half O(1) clones of one) and {VMS} Halted VMs in one file"),
        &["step", "seconds"],
    );
    scale.row(vec![
        format!("`apply -f` of the {} documents", DVS + VMS),
        format!("{apply_s:.2}"),
    ]);
    scale.row(vec![
        format!("until all {DVS} DataVolumes are Succeeded"),
        format!("{converge_s:.2}"),
    ]);
    scale.row(vec![
        format!("`get dv` ({DVS} rows), median of 5 (target < 0.2)"),
        format!("{:.3}", median(get_dv)),
    ]);
    scale.row(vec![
        format!("`get vm` ({VMS} rows), median of 5"),
        format!("{:.3}", median(get_vm)),
    ]);
    let mut ops = Table::new(
        "Store operations through `platter serve` (whole CLI round trip, ms, median of 5) with 10 objects and with 1,200 declarative objects and their volumes",
        &["op", "10 objects ms", "1,200 objects ms", "ratio"],
    );
    for (i, op) in [
        "volume create",
        "volume snapshot",
        "volume clone",
        "volume delete",
    ]
    .iter()
    .enumerate()
    {
        ops.row(vec![
            op.to_string(),
            format!("{:.1}", small[i] * 1000.0),
            format!("{:.1}", large[i] * 1000.0),
            format!("{:.2}x", large[i] / small[i]),
        ]);
    }
    let mut big = Table::new(
        "A DataVolume clone (`source.pvc`) of a 10 GiB volume holding 10 GiB of data, against a copy of its file",
        &["how", "seconds", "cp / this"],
    );
    big.row(vec![
        "`apply` of the DataVolume until Succeeded (O(1): no data copied)".into(),
        format!("{clone_s:.3}"),
        format!("{:.0}x", cp_s / clone_s),
    ]);
    big.row(vec![
        "`cp --reflink=never` of the 10 GiB raw file".into(),
        format!("{cp_s:.3}"),
        "1x".into(),
    ]);
    Ok(format!("{boot}\n{scale}\n{ops}\n{big}"))
}

/// A 10 GiB volume full of data, cloned by a DataVolume (`source.pvc`), against `cp` of
/// the same 10 GiB file. The clone must own no data of its own.
fn big_clone(p: &Platter, work: &Path) -> Result<(f64, f64)> {
    let raw = work.join("big.raw");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "yes platter | head -c {} > {}",
            10u64 << 30,
            raw.display()
        ))
        .status()?;
    if !status.success() {
        bail!("writing {}", raw.display());
    }
    p.ok(&["import", &raw.to_string_lossy(), "big"])?;
    let copy = work.join("big.copy");
    let cp_s = timed(|| {
        let st = std::process::Command::new("cp")
            .arg("--reflink=never")
            .arg(&raw)
            .arg(&copy)
            .status()?;
        if !st.success() {
            bail!("cp failed");
        }
        Ok(())
    })?;
    std::fs::remove_file(&copy)?;
    std::fs::remove_file(&raw)?;
    let file = work.join("big-dv.yaml");
    std::fs::write(
        &file,
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: big-clone}\nspec:\n  source:\n    pvc: {namespace: default, name: big}\n  storage: {}\n",
    )?;
    let clone_s = timed(|| {
        p.ok(&["apply", "-f", &file.to_string_lossy()])?;
        let t0 = Instant::now();
        loop {
            let o = p.json(&["get", "dv", "big-clone"])?;
            if o["status"]["phase"] == "Succeeded" {
                return Ok(());
            }
            if t0.elapsed() > DEADLINE {
                bail!("big-clone not Succeeded: {o}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })?;
    let info = p.json(&["volume", "inspect", "big-clone"])?;
    let own = info["allocated"].as_u64().unwrap_or(u64::MAX);
    if own > 1 << 20 {
        bail!("the clone owns {own} bytes: data was copied");
    }
    p.ok(&["delete", "dv", "big-clone"])?;
    p.ok(&["volume", "delete", "big"])?;
    Ok((clone_s, cp_s))
}
