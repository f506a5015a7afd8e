//! `platter apply/get/describe/delete/wait/upload` end to end: a real `platter serve`
//! reconciling DataVolumes and VirtualMachines written as CDI and KubeVirt users write
//! them, a real libvirtd with a TCG guest, a real docker-registry and an HTTP server
//! started here. Deadlines only bound waiting; nothing asserts on timing.

mod common;
mod vm_support;
use common::*;
use vm_support::*;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(120);

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn blank(name: &str, size: &str) -> String {
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: {name}\nspec:\n  source:\n    blank: {{}}\n  storage:\n    resources:\n      requests:\n        storage: {size}\n"
    )
}

fn dv_with(name: &str, source: &str, size: &str) -> String {
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: {name}\nspec:\n  source:\n{source}\n  pvc:\n    accessModes: [ReadWriteOnce]\n    resources:\n      requests:\n        storage: {size}\n"
    )
}

/// The object's document (`get KIND NAME -o json`), or None once it is gone.
fn object(store: &Path, kind: &str, name: &str) -> Option<serde_json::Value> {
    let out = platter(store, &["-o", "json", "get", kind, name]);
    match out.status.success() {
        true => Some(serde_json::from_slice(&out.stdout).unwrap()),
        false => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("does not exist"), "get {kind} {name}: {err}");
            None
        }
    }
}

/// Polls `get` until `done` says so; returns every value of `field` seen on the way.
fn watch(
    store: &Path,
    kind: &str,
    name: &str,
    field: &str,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let o = object(store, kind, name).unwrap_or_else(|| panic!("{kind} {name} went away"));
        let v = o["status"][field].as_str().unwrap_or_default().to_string();
        if seen.last() != Some(&v) {
            seen.push(v);
        }
        if done(&o) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {name}: not done within {PATIENCE:?}; saw {seen:?}; now {o}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn phase(o: &serde_json::Value) -> &str {
    o["status"]["phase"].as_str().unwrap_or_default()
}

fn volumes(store: &Path) -> Vec<String> {
    json(store, &["volume", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

fn exported(store: &Path, volume: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("{volume}.raw"));
    ok(store, &["volume", "export", volume, out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

#[test]
fn datavolumes_blank_clone_and_upload_then_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = write(
        &dir.path().join("dvs.yaml"),
        &format!(
            "{}---\napiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: copy\nspec:\n  source:\n    pvc: {{namespace: default, name: base}}\n  storage:\n    resources:\n      requests:\n        storage: 128Mi\n",
            blank("base", "64Mi")
        ),
    );

    // No server: a dry run checks, a real apply says how to start one.
    let out = ok(&store, &["apply", "-f", &file, "--dry-run"]);
    assert!(out.contains("datavolume/base created (dry run)"), "{out}");
    let err = fails(&store, &["apply", "-f", &file]);
    assert!(err.contains("platter serve is not running"), "{err}");

    let _srv = Serve::start(&store);
    let out = ok(&store, &["apply", "-f", &file]);
    assert!(
        out.contains("datavolume/base created") && out.contains("datavolume/copy created"),
        "{out}"
    );
    ok(
        &store,
        &[
            "wait",
            "dv",
            "copy",
            "--for",
            "condition=Ready",
            "--timeout",
            "60s",
        ],
    );
    let out = ok(&store, &["apply", "-f", &file]);
    assert!(out.contains("datavolume/copy unchanged"), "{out}");

    let table = ok(&store, &["get", "dv"]);
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "PHASE", "PROGRESS", "RESTARTS", "AGE"]);
    for l in lines {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(&cols[1..4], ["Succeeded", "100.0%", "0"], "{table}");
    }
    let yaml = ok(&store, &["get", "datavolumes", "copy", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: DataVolume") && yaml.contains("phase: Succeeded"),
        "{yaml}"
    );
    let desc = ok(&store, &["describe", "dv", "copy"]);
    assert!(
        desc.contains("Events:") && desc.contains("CloneSucceeded"),
        "{desc}"
    );
    // The clone is O(1) and grown to what it asked for.
    let copy = json(&store, &["volume", "inspect", "copy"]);
    assert_eq!(copy["size"], 128 << 20);
    assert_eq!(copy["origin"].as_str().unwrap(), "base");

    // A changed spec is refused; so is a file with one bad document, whole.
    let changed = write(&dir.path().join("changed.yaml"), &blank("base", "1Gi"));
    let err = fails(&store, &["apply", "-f", &changed]);
    assert!(
        err.contains("Cannot update spec of DataVolume base"),
        "{err}"
    );
    let bad = write(
        &dir.path().join("bad.yaml"),
        &format!("{}---\n{}", blank("fresh", "64Mi"), blank("broken", "2Ng")),
    );
    let out = platter(&store, &["apply", "-f", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("document 2 (DataVolume broken)") && err.contains("nothing was applied"),
        "{err}"
    );
    assert!(object(&store, "dv", "fresh").is_none());

    // Upload: ready first, then filled from a file.
    let up = write(
        &dir.path().join("up.yaml"),
        &dv_with("up", "    upload: {}", "4Mi"),
    );
    ok(&store, &["apply", "-f", &up]);
    watch(&store, "dv", "up", "phase", |o| phase(o) == "UploadReady");
    let image: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8 + 1).collect();
    let img = dir.path().join("up.raw");
    std::fs::write(&img, &image).unwrap();
    let out = ok(&store, &["upload", "up", img.to_str().unwrap()]);
    assert!(out.contains("uploaded into DataVolume up"), "{out}");
    ok(
        &store,
        &[
            "wait",
            "dv",
            "up",
            "--for",
            "condition=Ready",
            "--timeout",
            "60s",
        ],
    );
    let data = exported(&store, "up", dir.path());
    assert_eq!(data.len(), 4 << 20);
    assert!(data[..1 << 20] == image[..], "uploaded data differs");
    let err = fails(&store, &["upload", "up", img.to_str().unwrap()]);
    assert!(err.contains("not ready for an upload"), "{err}");

    // A DataSource names the uploaded disk; a DataVolume with a sourceRef (and no size:
    // the source's) is a clone of what it names.
    let golden = write(
        &dir.path().join("golden.yaml"),
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataSource\nmetadata: {name: golden}\nspec:\n  source:\n    pvc: {namespace: default, name: up}\n---\napiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: from-golden}\nspec:\n  sourceRef: {kind: DataSource, name: golden}\n  storage: {}\n",
    );
    let out = ok(&store, &["apply", "-f", &golden]);
    assert!(out.contains("datasource/golden created"), "{out}");
    ok(
        &store,
        &[
            "wait",
            "das",
            "golden",
            "--for",
            "condition=Ready",
            "--timeout",
            "60s",
        ],
    );
    watch(&store, "dv", "from-golden", "phase", |o| {
        phase(o) == "Succeeded"
    });
    assert_eq!(exported(&store, "from-golden", dir.path()), data);
    assert_eq!(
        json(&store, &["volume", "inspect", "from-golden"])["origin"],
        "up"
    );
    assert!(ok(&store, &["get", "das"]).contains("golden"));
    let missing = write(
        &dir.path().join("missing.yaml"),
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: orphan}\nspec:\n  sourceRef: {kind: DataSource, name: nosuch}\n  storage: {}\n",
    );
    let err = fails(&store, &["apply", "-f", &missing]);
    assert!(
        err.contains("spec.sourceRef: DataSource default/nosuch does not exist"),
        "{err}"
    );
    ok(&store, &["delete", "dv", "from-golden"]);
    ok(&store, &["delete", "das", "golden"]);
    assert!(object(&store, "das", "golden").is_none());

    // Delete: the volume goes with the object; the source waits for its clone.
    let out = ok(&store, &["delete", "dv", "copy"]);
    assert!(out.contains("datavolume \"copy\" deleted"), "{out}");
    ok(&store, &["delete", "dv", "base"]);
    ok(&store, &["delete", "dv", "up"]);
    assert!(volumes(&store).is_empty(), "{:?}", volumes(&store));
    assert_eq!(ok(&store, &["get", "dv"]), "");
    let err = fails(&store, &["delete", "dv", "nosuch"]);
    assert!(
        err.contains("DataVolume default/nosuch does not exist"),
        "{err}"
    );
}

#[test]
fn an_import_survives_sigkill_of_serve_and_a_bad_checksum_fails_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let total: u64 = 48 << 20;
    let http = SlowHttp::start(total);
    let file = write(
        &dir.path().join("http.yaml"),
        &dv_with(
            "web",
            &format!("    http:\n      url: {}", http.url()),
            "64Mi",
        ),
    );
    let mut srv = Serve::start(&store);
    ok(&store, &["apply", "-f", &file]);
    // Under way, with CDI's progress text.
    let mut progress = String::new();
    watch(&store, "dv", "web", "phase", |o| {
        progress = o["status"]["progress"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        phase(o) == "ImportInProgress" && progress.ends_with('%') && progress != "0.00%"
    });
    assert!(progress.contains('.'), "{progress}");
    srv.kill9_and_restart();
    ok(
        &store,
        &[
            "wait",
            "dv",
            "web",
            "--for",
            "condition=Ready",
            "--timeout",
            "120s",
        ],
    );
    let o = object(&store, "dv", "web").unwrap();
    assert_eq!(o["status"]["progress"], "100.0%");
    // The killed attempt left nothing; the volume holds exactly what was served.
    assert_eq!(volumes(&store), ["web"]);
    let data = exported(&store, "web", dir.path());
    assert_eq!(data.len(), 64 << 20);
    assert!(
        data[..total as usize] == slow_http_bytes(total)[..],
        "imported data differs"
    );
    assert!(data[total as usize..].iter().all(|b| *b == 0));
    let desc = ok(&store, &["describe", "dv", "web"]);
    assert!(
        desc.contains("ImportInProgress") && desc.contains("ImportSucceeded"),
        "{desc}"
    );

    // A checksum mismatch is fatal: Failed at once, no retries, nothing left.
    let small = SlowHttp::start(1 << 20);
    let bad = write(
        &dir.path().join("bad.yaml"),
        &dv_with(
            "sum",
            &format!(
                "    http:\n      url: {}\n      checksum: sha256:{}",
                small.url(),
                "0".repeat(64)
            ),
            "4Mi",
        ),
    );
    ok(&store, &["apply", "-f", &bad]);
    watch(&store, "dv", "sum", "phase", |o| phase(o) == "Failed");
    let o = object(&store, "dv", "sum").unwrap();
    assert_eq!(o["status"]["restartCount"], 0);
    let desc = ok(&store, &["describe", "dv", "sum"]);
    assert!(
        desc.contains("ImportFailed") && desc.contains("checksum"),
        "{desc}"
    );
    assert_eq!(volumes(&store), ["web"]);
}

/// A VirtualMachine whose root disk is a DataVolume template imported from a
/// containerDisk in the local registry, plus an emptyDisk: the DataVolume succeeds, the
/// VM goes Provisioning → Starting → Running and boots, `vm list` shows it, its disks
/// cannot be deleted from under it, and `platter delete vm` removes the domain, the
/// DataVolume and every disk.
#[test]
fn a_vm_from_a_registry_datavolume_template_boots_and_delete_removes_it_all() {
    let env = Env::new("decl");
    let g = guest_files();
    let reg = Registry::start_plain();
    let srv = Serve::start(&env.store);
    let vm = env.vm("d");
    let vm2 = format!("{vm}-r");
    let _guard = VmGuard(vec![vm.clone(), vm2.clone()]);
    env.ok(&["import", g.boot.to_str().unwrap(), "bootsrc"]);
    let image = format!("docker://127.0.0.1:{}/platter/guest:decl", reg.port);
    env.ok(&["push", "bootsrc", &image]);
    env.ok(&["volume", "delete", "bootsrc"]);
    let root = format!("{vm}-root");
    let data = format!("{vm}-data");
    let yaml = format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {vm}
spec:
  runStrategy: RerunOnFailure
  dataVolumeTemplates:
  - metadata:
      name: {root}
    spec:
      source:
        registry:
          url: {image}
      storage:
        resources:
          requests:
            storage: 256Mi
  - metadata:
      name: {data}
    spec:
      source:
        blank: {{}}
      storage:
        resources:
          requests:
            storage: 16Mi
  template:
    spec:
      domain:
        memory:
          guest: 256Mi
        devices:
          disks:
          - name: root
            disk: {{bus: virtio}}
            bootOrder: 1
          - name: scratch
            disk: {{bus: virtio}}
          - name: data
            disk: {{bus: virtio}}
          interfaces:
          - name: default
            masquerade: {{}}
      networks:
      - name: default
        pod: {{}}
      volumes:
      - name: root
        dataVolume:
          name: {root}
      - name: scratch
        emptyDisk:
          capacity: 64Mi
      - name: data
        dataVolume:
          name: {data}
"#
    );
    let file = write(&env.path("vm.yaml"), &yaml);
    let out = env.ok(&["apply", "-f", &file]);
    assert!(
        out.contains(&format!("virtualmachine/{vm} created")),
        "{out}"
    );
    assert!(
        out.contains("accepted but not acted on: spec.template.spec.networks"),
        "{out}"
    );

    let statuses = watch(&env.store, "vm", &vm, "printableStatus", |o| {
        o["status"]["printableStatus"] == "Running"
    });
    assert!(statuses.contains(&"Running".to_string()), "{statuses:?}");
    let dv = object(&env.store, "dv", &root).unwrap();
    assert_eq!(phase(&dv), "Succeeded");
    assert_eq!(dv["metadata"]["ownerReferences"][0]["name"], vm.as_str());
    wait_console(
        &env.store,
        &vm,
        &[
            "PLATTER-BOOTED",
            "PLATTER-READ: hello from the platter bootable disk",
            "PLATTER-DONE",
        ],
    );
    let desc = env.ok(&["describe", "vm", &vm]);
    let order: Vec<usize> = ["Provisioning", "Starting", "Running"]
        .iter()
        .map(|r| {
            desc.find(&format!("Normal  {r}"))
                .unwrap_or_else(|| panic!("{r}: {desc}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{desc}");
    // The guest powered itself off: RerunOnFailure leaves it stopped.
    watch(&env.store, "vm", &vm, "printableStatus", |o| {
        o["status"]["printableStatus"] == "Stopped"
    });

    snapshot_and_restore(&env, &srv, &vm, &vm2, &data);

    let list = env.ok(&["vm", "list"]);
    assert!(list.contains(&vm) && list.contains(&root), "{list}");
    // Columns line up with the header however long the names (they were fixed widths).
    let header = list.lines().next().unwrap_or_default();
    let starts: Vec<usize> = ["STATE", "ACCEL", "MEMORY", "CPUS", "DISKS"]
        .iter()
        .map(|h| header.find(h).unwrap_or_else(|| panic!("{h}: {list}")))
        .collect();
    for row in list.lines().skip(1) {
        for &at in &starts {
            let b = row.as_bytes();
            assert!(b[at - 1] == b' ' && b[at] != b' ', "column at {at}: {list}");
        }
    }
    let err = fails(&env.store, &["volume", "delete", &root]);
    assert!(err.contains(&vm), "{err}");
    let err = fails(&env.store, &["vm", "delete", &vm]);
    assert!(err.contains(&format!("platter delete vm {vm}")), "{err}");
    let err = fails(&env.store, &["delete", "dv", &root]);
    assert!(
        err.contains(&format!("VirtualMachine default/{vm}")),
        "{err}"
    );

    env.ok(&["delete", "vm", &vm]);
    assert!(object(&env.store, "vm", &vm).is_none());
    assert!(object(&env.store, "dv", &root).is_none());
    let left = volumes(&env.store);
    assert!(
        left.iter()
            .all(|v| !v.starts_with(&vm) && !v.starts_with("restore-")),
        "{left:?}"
    );
    assert!(!env.ok(&["vm", "list"]).contains(&vm));
    assert_no_domain(&vm);
}

/// Applies a VirtualMachineSnapshot `snap` of `vm` and waits until it is Ready; its
/// document then.
fn take_snapshot(env: &Env, vm: &str, snap: &str) -> serde_json::Value {
    let yaml = format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\nmetadata:\n  name: {snap}\nspec:\n  source:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: {vm}\n"
    );
    let out = env.ok(&[
        "apply",
        "-f",
        &write(&env.path(&format!("{snap}.yaml")), &yaml),
    ]);
    assert!(
        out.contains(&format!("virtualmachinesnapshot/{snap} created")),
        "{out}"
    );
    env.ok(&[
        "wait",
        "vmsnapshot",
        snap,
        "--for",
        "condition=Ready",
        "--timeout",
        "2m",
    ]);
    object(&env.store, "vmsnapshot", snap).unwrap()
}

/// Writes 64 KiB of `byte` at offset 0 of `volume` through the server's NBD export.
fn nbd_fill(srv: &Serve, volume: &str, byte: u8) {
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", &format!("write -P {byte} 0 64k")])
        .arg(srv.uri(volume))
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-io: {out:?}");
}

fn first_64k(env: &Env, volume: &str) -> Vec<u8> {
    let mut b = exported(&env.store, volume, env.dir.path());
    b.truncate(64 << 10);
    b
}

/// A VirtualMachineSnapshot of the (stopped) two-disk VM, then two restores: into a new
/// VM, which boots from the snapshot's root disk and has its data disk as it was at the
/// snapshot; and back into the VM itself. Deleting the snapshot waits for the restored
/// VM's disks, which are clones of it, to go first.
fn snapshot_and_restore(env: &Env, srv: &Serve, vm: &str, vm2: &str, data: &str) {
    nbd_fill(srv, data, 0x11);
    let snap = format!("{vm}-snap");
    let o = take_snapshot(env, vm, &snap);
    assert_eq!(o["status"]["phase"], "Succeeded", "{o}");
    assert_eq!(o["status"]["readyToUse"], true, "{o}");
    assert!(o["status"]["creationTime"].is_string(), "{o}");
    let got = env.ok(&["get", "vmsnapshot"]);
    assert!(got.contains(&snap) && got.contains("Succeeded"), "{got}");
    // Written after the snapshot: not in it.
    nbd_fill(srv, data, 0x5a);
    assert_eq!(first_64k(env, data), vec![0x5a; 64 << 10]);

    let restore = |name: &str, target: &str| {
        let yaml = format!(
            "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineRestore\nmetadata:\n  name: {name}\nspec:\n  target:\n    apiGroup: kubevirt.io\n    kind: VirtualMachine\n    name: {target}\n  virtualMachineSnapshotName: {snap}\n"
        );
        env.ok(&[
            "apply",
            "-f",
            &write(&env.path(&format!("{name}.yaml")), &yaml),
        ]);
        watch(&env.store, "vmrestore", name, "restoreTime", |o| {
            o["status"]["complete"] == true
        });
    };
    // Into a new VM: it boots from the snapshot's root disk.
    restore(&format!("{vm}-to-new"), vm2);
    watch(&env.store, "vm", vm2, "printableStatus", |o| {
        o["status"]["printableStatus"] == "Running"
    });
    // It waited for its restored DataVolumes first (a phase that may pass between two
    // looks, so read from its events).
    let desc = env.ok(&["describe", "vm", vm2]);
    assert!(desc.contains("Normal  Provisioning"), "{desc}");
    wait_console(
        &env.store,
        vm2,
        &[
            "PLATTER-BOOTED",
            "PLATTER-READ: hello from the platter bootable disk",
            "PLATTER-DONE",
        ],
    );
    watch(&env.store, "vm", vm2, "printableStatus", |o| {
        o["status"]["printableStatus"] == "Stopped"
    });
    let o = object(&env.store, "vm", vm2).unwrap();
    let restored = o["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .and_then(|v| v["dataVolume"]["name"].as_str())
        .unwrap()
        .to_string();
    assert!(restored.starts_with("restore-"), "{o}");
    assert_eq!(first_64k(env, &restored), vec![0x11; 64 << 10]);
    // Into the VM itself (stopped): its data disk is the snapshot's again.
    restore(&format!("{vm}-back"), vm);
    assert_eq!(first_64k(env, data), vec![0x11; 64 << 10]);

    // The restored VM's disks are clones of the snapshot: it goes first, then the
    // snapshot and its disk snapshots.
    env.ok(&["delete", "vm", vm2]);
    assert!(object(&env.store, "dv", &restored).is_none());
    env.ok(&["delete", "vmsnapshot", &snap]);
    let left = json(&env.store, &["volume", "list"]).to_string();
    assert!(!left.contains("vmsnapshot-"), "{left}");
}

/// Pushes an ordinary container image holding the test guest's kernel and initramfs
/// (`/boot/vmlinuz`, `/boot/initrd.gz`), built by umoci and copied by skopeo, to `reg`.
fn push_kernel_image(env: &Env, reg: &Registry) -> String {
    let g = guest_files();
    let d = env.dir.path().display();
    let image = format!("127.0.0.1:{}/platter/kernel:1", reg.port);
    let script = format!(
        "set -e; cd {d}; umoci init --layout K; umoci new --image K:1; \
         umoci unpack --image K:1 kb >/dev/null; mkdir -p kb/rootfs/boot; \
         cp {} kb/rootfs/boot/vmlinuz; cp {} kb/rootfs/boot/initrd.gz; \
         umoci repack --image K:1 kb; rm -rf kb; \
         skopeo copy -q --dest-tls-verify=false oci:K:1 docker://{image}",
        g.kernel.display(),
        g.initrd.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "building the kernel image: {out:?}");
    image
}

/// The `tick <n>` the guest wrote at offset 0 of `target` (a volume or snapshot).
fn tick(env: &Env, target: &str) -> u64 {
    let b = exported(&env.store, target, env.dir.path());
    let line = String::from_utf8_lossy(&b[..512]).to_string();
    line.trim_end_matches('\0')
        .trim()
        .strip_prefix("tick ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{target}: no tick at offset 0: {line:?}"))
}

/// A VM that boots its kernel from a container image (`firmware.kernelBoot.container`)
/// with two blank disks that the guest writes a tick to every second, first disk `a` then
/// disk `b`. A VirtualMachineSnapshot taken while it runs is online, and its two disks are
/// from one instant: `a` holds `b`'s tick or the next one, never an older or a later one.
/// A kernel path the image lacks fails the VM with the path named, and defines nothing.
/// The cloud-init seed carries the VM's network data. `vm start/stop` act on the
/// objects as `virtctl` does: a Manual VM runs only when asked, an Always one is Halted
/// by a stop. `serve` killed while the guest runs adopts it when it comes back.
/// Deleting the VM removes the domain and the kernel it was given.
#[test]
fn an_online_snapshot_of_a_running_kernel_boot_vm_is_of_one_instant() {
    let env = Env::new("kboot");
    let reg = Registry::start_plain();
    let mut srv = Serve::start(&env.store);
    let vm = env.vm("k");
    let bad = env.vm("nok");
    let _guard = VmGuard(vec![vm.clone(), bad.clone()]);
    let image = push_kernel_image(&env, &reg);
    let (a, b) = (format!("{vm}-a"), format!("{vm}-b"));
    let vm_yaml = |name: &str, strategy: &str, kernel: &str| {
        format!(
            r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: {strategy}
  dataVolumeTemplates:
  - metadata: {{name: {name}-a}}
    spec:
      source: {{blank: {{}}}}
      storage: {{resources: {{requests: {{storage: 4Mi}}}}}}
  - metadata: {{name: {name}-b}}
    spec:
      source: {{blank: {{}}}}
      storage: {{resources: {{requests: {{storage: 4Mi}}}}}}
  template:
    spec:
      domain:
        memory: {{guest: 256Mi}}
        firmware:
          kernelBoot:
            kernelArgs: "console=ttyS0 platter.root=none platter.hold=600 platter.ticks=/dev/vda,/dev/vdb"
            container:
              image: {image}
              kernelPath: {kernel}
              initrdPath: /boot/initrd.gz
        devices:
          disks:
          - {{name: a, disk: {{bus: virtio}}}}
          - {{name: b, disk: {{bus: virtio}}}}
      volumes:
      - {{name: a, dataVolume: {{name: {name}-a}}}}
      - {{name: b, dataVolume: {{name: {name}-b}}}}
      - name: ci
        cloudInitNoCloud:
          userData: '#cloud-config'
          networkDataBase64: dmVyc2lvbjogMgpldGhlcm5ldHM6IHt9Cg==
"#
        )
    };
    let file = write(
        &env.path("vm.yaml"),
        &vm_yaml(&vm, "Manual", "/boot/vmlinuz"),
    );
    env.ok(&["apply", "-f", &file]);
    let file = write(
        &env.path("bad.yaml"),
        &vm_yaml(&bad, "Always", "/boot/nosuch"),
    );
    env.ok(&["apply", "-f", &file]);

    // Manual: nothing runs until `vm start` (virtctl start) asks for it.
    watch(&env.store, "dv", &b, "phase", |o| phase(o) == "Succeeded");
    std::thread::sleep(Duration::from_secs(2));
    let o = object(&env.store, "vm", &vm).unwrap();
    assert_eq!(o["status"]["printableStatus"], "Stopped", "{o}");
    let out = env.ok(&["vm", "start", &vm]);
    assert!(
        out.contains("start requested (runStrategy Manual)"),
        "{out}"
    );
    watch(&env.store, "vm", &vm, "printableStatus", |o| {
        o["status"]["printableStatus"] == "Running"
    });
    wait_console(&env.store, &vm, &["PLATTER-INIT", "PLATTER-TICK 3"]);
    let err = fails(&env.store, &["vm", "start", &vm]);
    assert!(err.contains("VM is already running"), "{err}");

    let snap = format!("{vm}-snap");
    let o = take_snapshot(&env, &vm, &snap);
    assert_eq!(o["status"]["readyToUse"], true, "{o}");
    let indications = o["status"]["indications"].to_string();
    assert!(indications.contains("Online"), "{o}");
    let disk_snap = |volume: &str| {
        let info = json(&env.store, &["volume", "inspect", volume]);
        info["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .find(|s| s.starts_with(&format!("{volume}@vmsnapshot-")))
            .unwrap_or_else(|| panic!("{volume} has no snapshot of {snap}: {info}"))
            .to_string()
    };
    let (ta, tb) = (tick(&env, &disk_snap(&a)), tick(&env, &disk_snap(&b)));
    assert!(
        tb >= 1,
        "the snapshot was taken before the guest ticked: a {ta}, b {tb}"
    );
    assert!(
        ta == tb || ta == tb + 1,
        "the disks are not from one instant: a holds tick {ta}, b tick {tb}"
    );
    // The guest goes on writing after the snapshot; the snapshot does not change.
    wait_console(&env.store, &vm, &[&format!("PLATTER-TICK {}", ta + 3)]);
    assert!(tick(&env, &a) > ta);
    assert_eq!(tick(&env, &disk_snap(&a)), ta);

    // A stop request stops the Manual VM and it stays stopped; a start runs it again.
    let out = env.ok(&["vm", "stop", &vm]);
    assert!(out.contains("stop requested"), "{out}");
    watch(&env.store, "vm", &vm, "printableStatus", |o| {
        o["status"]["printableStatus"] == "Stopped"
    });
    env.ok(&["vm", "start", &vm]);
    watch(&env.store, "vm", &vm, "printableStatus", |o| {
        o["status"]["printableStatus"] == "Running"
    });

    // `serve` killed and started again adopts the running guest: the same domain goes
    // on ticking (its disks reconnect), it is not started again.
    wait_console(&env.store, &vm, &["PLATTER-TICK 2"]);
    let domid = || {
        let out = Command::new("virsh")
            .args(["-c", VIRSH_URI, "domid", &vm])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before = domid();
    let last_tick = |text: &str| {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("PLATTER-TICK "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    let seen = last_tick(&console(&env.store, &vm));
    srv.kill9_and_restart();
    let text = wait_console(&env.store, &vm, &[&format!("PLATTER-TICK {}", seen + 3)]);
    assert_eq!(
        text.matches("PLATTER-INIT").count(),
        1,
        "the guest booted again:\n{text}"
    );
    assert_eq!(domid(), before, "another domain runs the VM now");
    let o = object(&env.store, "vm", &vm).unwrap();
    assert_eq!(o["status"]["printableStatus"], "Running", "{o}");

    // The VM whose image lacks the kernel: the failure names the path, nothing is defined.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let desc = env.ok(&["describe", "vm", &bad]);
        if desc.contains("no file /boot/nosuch") {
            break;
        }
        assert!(Instant::now() < deadline, "no failure event: {desc}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!env.ok(&["vm", "list"]).contains(&bad));
    // Always: a start is refused; a stop makes it Halted, as virtctl does.
    let err = fails(&env.store, &["vm", "start", &bad]);
    assert!(
        err.contains("Always does not support manual start requests"),
        "{err}"
    );
    let out = env.ok(&["vm", "stop", &bad]);
    assert!(out.contains("runStrategy Always → Halted"), "{out}");
    let o = object(&env.store, "vm", &bad).unwrap();
    assert_eq!(o["spec"]["runStrategy"], "Halted", "{o}");
    // The cloud-init seed carries the network data as `network-config`.
    let seed = env.store.join("vms").join(format!("{vm}.seed.iso"));
    let out = Command::new("isoinfo")
        .args(["-R", "-i"])
        .arg(&seed)
        .args(["-x", "/network-config"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "version: 2\nethernets: {}\n",
        "{out:?}"
    );
    let boot_dir = env.store.join("vms").join(format!("{vm}.boot"));
    assert!(boot_dir.join("kernel").is_file() && boot_dir.join("initrd").is_file());

    env.ok(&["delete", "vmsnapshot", &snap]);
    env.ok(&["delete", "vm", &vm]);
    env.ok(&["delete", "vm", &bad]);
    assert!(object(&env.store, "vm", &vm).is_none());
    assert!(!boot_dir.exists(), "{} left behind", boot_dir.display());
    assert!(!env.store.join("vms").join(format!("{bad}.boot")).exists());
    assert_no_domain(&vm);
}

/// A VirtualMachineInstance from a containerDisk runs once: Scheduling/Running while the
/// guest boots, Succeeded when it powers itself off, and it is not started again. `vm
/// list` shows it; `vm delete` and `vm start` point at the object; `platter delete vmi`
/// removes the domain and its throw-away disk.
#[test]
fn a_vmi_runs_once_to_succeeded_and_delete_removes_it() {
    let env = Env::new("vmi");
    let g = guest_files();
    // A registry with TLS from a CA the host trusts (SSL_CERT_FILE, as
    // update-ca-certificates would) and htpasswd: pulled with the VMI's imagePullSecret.
    let reg = Registry::start_tls_auth();
    let ca_dir = reg.ca.clone().unwrap();
    let ca_file = ca_dir.join("ca.crt");
    let _srv = Serve::start_with_env(&env.store, &[("SSL_CERT_FILE", &ca_file)]);
    let vmi = env.vm("i");
    let _guard = VmGuard(vec![vmi.clone()]);
    env.ok(&["import", g.boot.to_str().unwrap(), "bootsrc"]);
    let image = format!("127.0.0.1:{}/platter/guest:vmi", reg.port);
    let ca = ca_dir.to_str().unwrap();
    let to = format!("docker://{image}");
    env.ok(&[
        "push",
        "bootsrc",
        &to,
        "--creds",
        "user:secret",
        "--cert-dir",
        ca,
    ]);
    let pull = format!(
        r#"{{"auths": {{"127.0.0.1:{}": {{"username": "user", "password": "secret"}}}}}}"#,
        reg.port
    );
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata:\n  name: {vmi}\nspec:\n  domain:\n    memory: {{guest: 256Mi}}\n    devices:\n      disks:\n      - {{name: root, disk: {{bus: virtio}}}}\n  volumes:\n  - {{name: root, containerDisk: {{image: '{image}', imagePullSecret: pull}}}}\n---\n\
apiVersion: v1\nkind: Secret\nmetadata: {{name: pull}}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{pull}'\n"
    );
    let out = env.ok(&["apply", "-f", &write(&env.path("vmi.yaml"), &yaml)]);
    assert!(
        out.contains(&format!("virtualmachineinstance/{vmi} created")),
        "{out}"
    );
    let phases = watch(&env.store, "vmi", &vmi, "phase", |o| {
        phase(o) == "Succeeded"
    });
    assert!(phases.contains(&"Running".to_string()), "{phases:?}");
    let text = console(&env.store, &vmi);
    assert!(
        text.contains("PLATTER-READ: hello from the platter bootable disk"),
        "{text}"
    );
    let got = env.ok(&["get", "vmi"]);
    assert!(got.contains(&vmi) && got.contains("Succeeded"), "{got}");
    assert!(env.ok(&["vm", "list"]).contains(&vmi));
    let err = fails(&env.store, &["vm", "delete", &vmi]);
    assert!(err.contains(&format!("platter delete vmi {vmi}")), "{err}");
    let err = fails(&env.store, &["vm", "start", &vmi]);
    assert!(err.contains("runs once"), "{err}");
    // Run once: still Succeeded, and shut off, a while later.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        phase(&object(&env.store, "vmi", &vmi).unwrap()),
        "Succeeded"
    );
    assert_eq!(state(&env.store, &vmi), "shut-off");

    env.ok(&["delete", "vmi", &vmi]);
    let deadline = Instant::now() + PATIENCE;
    while object(&env.store, "vmi", &vmi).is_some() {
        assert!(Instant::now() < deadline, "vmi {vmi} not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = volumes(&env.store);
    assert!(left.iter().all(|v| !v.starts_with(&vmi)), "{left:?}");
    assert_no_domain(&vmi);
}

/// Scale, through `apply` as users would: one file with 500 blank DataVolumes, 500 O(1)
/// clones of one image DataVolume and 200 VirtualMachines (Halted: defined, not
/// started) that use them. Every DataVolume succeeds, every VM is Stopped, `get` lists
/// them all, and every clone shares the image's data (no copy). (Timings are the
/// declarative benchmark's: `scripts/bench.sh declarative`.)
#[test]
fn a_thousand_datavolumes_and_two_hundred_vms_through_one_apply() {
    let env = Env::new("scale");
    let _srv = Serve::start(&env.store);
    let img = env.path("img.raw");
    std::fs::write(&img, vec![0x5au8; 4 << 20]).unwrap();
    env.ok(&["import", img.to_str().unwrap(), "scale-image"]);
    let mut docs = Vec::new();
    for i in 0..500 {
        docs.push(blank(&format!("b{i}"), "1Mi"));
        docs.push(dv_with(
            &format!("c{i}"),
            "    pvc: {namespace: default, name: scale-image}",
            "4Mi",
        ));
    }
    for i in 0..200 {
        docs.push(format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: v{i}}}\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain: {{memory: {{guest: 128Mi}}}}\n      volumes:\n      - {{name: root, dataVolume: {{name: c{i}}}}}\n      - {{name: data, dataVolume: {{name: b{i}}}}}\n"
        ));
    }
    let file = write(&env.path("scale.yaml"), &docs.join("---\n"));
    let out = env.ok(&["apply", "-f", &file]);
    assert_eq!(out.matches(" created").count(), 1200, "{out}");

    let deadline = Instant::now() + PATIENCE;
    loop {
        let list = json(&env.store, &["get", "dv"]);
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1000);
        if items.iter().all(|o| phase(o) == "Succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "not every DataVolume succeeded");
        std::thread::sleep(Duration::from_millis(500));
    }
    loop {
        let list = json(&env.store, &["get", "vm"]);
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 200);
        if items
            .iter()
            .all(|o| o["status"]["printableStatus"] == "Stopped")
        {
            break;
        }
        assert!(Instant::now() < deadline, "not every VM is Stopped");
        std::thread::sleep(Duration::from_millis(500));
    }
    let table = env.ok(&["get", "dv"]);
    assert_eq!(table.lines().count(), 1001, "a header and one row each");
    // The clones are O(1): each is the image's data with nothing of its own.
    let c = json(&env.store, &["volume", "inspect", "c499"]);
    let empty = json(&env.store, &["volume", "inspect", "b0"]);
    assert_eq!(c["allocated"], empty["allocated"], "{c}");
    assert_eq!(
        c["origin"].as_str().map(|o| o.starts_with("scale-image")),
        Some(true),
        "{c}"
    );
    assert_eq!(volumes(&env.store).len(), 1001);
}

/// DataVolumes whose sources need what Secrets and ConfigMaps hold, read when the import
/// starts: an HTTPS server from a throw-away CA that wants basic auth and two headers
/// (one given in the DataVolume, one in a Secret), and a TLS registry with htpasswd. The
/// first HTTP attempt runs with a wrong password and fails (retried, not fatal); the
/// Secret is then re-applied with the right one and the import goes through. A Secret's
/// values are never printed by `get` or `describe`.
#[test]
fn datavolumes_import_with_the_secrets_and_config_maps_they_name() {
    use platter_testkit::http::{Behaviour, HttpServer};
    use platter_testkit::registry::Registry;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let disk: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let http = HttpServer::start_tls();
    http.add("disk.img", disk.clone());
    http.set(Behaviour {
        basic_auth: Some(("alice".into(), "s3cret-pw".into())),
        require_headers: vec![
            ("X-Token".into(), "abc".into()),
            ("X-Hidden".into(), "from a secret".into()),
        ],
        ..Default::default()
    });
    let pem = |ca_dir: &Path| {
        let text = std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap();
        text.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let web_ca = pem(http.ca_dir.as_ref().unwrap());

    let _srv = Serve::start(&store);
    let reg = Registry::start_tls_auth();
    let reg_ca = reg.ca.clone().unwrap();
    let raw = write(&dir.path().join("disk.raw"), "");
    std::fs::write(&raw, &disk).unwrap();
    ok(&store, &["import", &raw, "src"]);
    let image = format!("docker://{}", reg.reference("sec/disk:1"));
    let ca_arg = reg_ca.to_str().unwrap();
    ok(
        &store,
        &[
            "push",
            "src",
            &image,
            "--creds",
            "user:secret",
            "--cert-dir",
            ca_arg,
        ],
    );
    ok(&store, &["volume", "delete", "src"]);

    let creds = |password: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: web-creds}}\ntype: Opaque\nstringData:\n  accessKeyId: alice\n  secretKey: {password}\n")
    };
    let yaml = format!(
        "{wrong}---\n\
apiVersion: v1\nkind: Secret\nmetadata: {{name: hdr}}\nstringData:\n  token: 'X-Hidden: from a secret'\n---\n\
apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web-ca}}\ndata:\n  ca.pem: |\n{web_ca}---\n\
apiVersion: v1\nkind: Secret\nmetadata: {{name: reg-creds}}\ndata:\n  accessKeyId: dXNlcg==\n  secretKey: c2VjcmV0\n---\n\
apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: reg-ca}}\ndata:\n  ca.crt: |\n{reg}---\n\
{web}---\n{img}",
        wrong = creds("wrong"),
        reg = pem(&reg_ca),
        web = dv_with(
            "web",
            &format!("    http:\n      url: {}\n      secretRef: web-creds\n      certConfigMap: web-ca\n      extraHeaders: ['X-Token: abc']\n      secretExtraHeaders: [hdr]", http.url("disk.img")),
            "8Mi",
        ),
        img = dv_with(
            "img",
            &format!("    registry:\n      url: {image}\n      secretRef: reg-creds\n      certConfigMap: reg-ca"),
            "8Mi",
        ),
    );
    let out = ok(
        &store,
        &["apply", "-f", &write(&dir.path().join("s.yaml"), &yaml)],
    );
    assert!(
        out.contains("secret/web-creds created") && out.contains("configmap/reg-ca created"),
        "{out}"
    );
    let wait = |name: &str| {
        ok(
            &store,
            &[
                "wait",
                "dv",
                name,
                "--for",
                "condition=Ready",
                "--timeout",
                "120s",
            ],
        );
    };
    wait("img");
    assert_eq!(exported(&store, "img", dir.path())[..disk.len()], disk[..]);

    // The wrong password: refused by the server, retried, not Failed.
    watch(&store, "dv", "web", "phase", |o| {
        o["status"]["restartCount"].as_i64() >= Some(1)
    });
    let o = object(&store, "dv", "web").unwrap();
    assert_ne!(phase(&o), "Failed", "{o}");
    let desc = ok(&store, &["describe", "dv", "web"]);
    assert!(desc.contains("401"), "{desc}");
    let out = ok(
        &store,
        &[
            "apply",
            "-f",
            &write(&dir.path().join("c.yaml"), &creds("s3cret-pw")),
        ],
    );
    assert!(out.contains("secret/web-creds configured"), "{out}");
    wait("web");
    assert_eq!(exported(&store, "web", dir.path())[..disk.len()], disk[..]);

    let table = ok(&store, &["get", "secrets"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("web-creds"))
        .unwrap_or_default();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[..3], ["web-creds", "Opaque", "2"], "{table}");
    let desc = ok(&store, &["describe", "secret", "web-creds"]);
    assert!(
        desc.contains("secretKey:  9 bytes") && !desc.contains("s3cret"),
        "{desc}"
    );
    let desc = ok(&store, &["describe", "cm", "web-ca"]);
    assert!(desc.contains("BEGIN CERTIFICATE"), "{desc}");
    ok(&store, &["delete", "secret", "hdr"]);
    assert!(object(&store, "secret", "hdr").is_none());
}
