//! `apply` on a real store, without a server: a file is applied whole or not at all;
//! every refusal names the document, the field and the reason; re-applying the same
//! spec is a no-op and a changed DataVolume spec is refused; references must resolve;
//! nothing is written by a dry run or a refused file.

use platter_api::Kind;
use platter_control::objects::{self, ObjectError};
use platter_control::{handle, Context, ErrorKind, Request};
use platter_snapshotter::Store;
use platter_types::Name;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("store")).unwrap();
    (dir, s)
}

const NOW: u64 = 1_796_590_800;

fn blank(name: &str, size: &str) -> String {
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: {name}\nspec:\n  source:\n    blank: {{}}\n  storage:\n    resources:\n      requests:\n        storage: {size}\n"
    )
}

fn clone_of(name: &str, src: &str) -> String {
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: {name}\nspec:\n  source:\n    pvc: {{namespace: default, name: {src}}}\n  storage: {{}}\n"
    )
}

fn vm(name: &str, dv: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        memory: {{guest: 128Mi}}
        devices:
          disks:
          - name: root
            disk: {{bus: virtio}}
      volumes:
      - name: root
        dataVolume: {{name: {dv}}}
"#
    )
}

fn names(store: &Store, kind: Kind) -> Vec<String> {
    objects::list(store, kind)
        .unwrap()
        .iter()
        .map(|s| s.name().to_string())
        .collect()
}

fn refused(store: &Store, text: &str) -> String {
    match objects::apply(store, "f.yaml", text, false, NOW) {
        Err(e @ ObjectError::Documents { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_file_is_applied_whole_or_not_at_all() {
    let (_d, s) = store();
    let text = format!("{}---\n{}", blank("good", "1Gi"), blank("bad", "2Ng"));
    let msg = refused(&s, &text);
    assert!(msg.contains("document 2") && msg.contains("bad"), "{msg}");
    assert!(msg.contains("nothing was applied"), "{msg}");
    assert!(names(&s, Kind::DataVolume).is_empty());

    // Both documents wrong: both named, in one error.
    let text = format!("{}---\n{}", clone_of("c1", "nosuch"), blank("x", "2Ng"));
    let msg = refused(&s, &text);
    assert!(
        msg.contains("document 1") && msg.contains("spec.source.pvc"),
        "{msg}"
    );
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(msg.contains("document 2"), "{msg}");

    // Fixed, the same file goes in whole: the clone's source is in the file.
    let text = format!("{}---\n{}", blank("good", "1Gi"), clone_of("c1", "good"));
    let applied = objects::apply(&s, "f.yaml", &text, false, NOW).unwrap();
    let actions: Vec<&str> = applied.results.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["created", "created"]);
    assert_eq!(names(&s, Kind::DataVolume), ["c1", "good"]);
    let stored = objects::get(&s, Kind::DataVolume, "default/good")
        .unwrap()
        .unwrap();
    assert_eq!(stored.api_version, "cdi.kubevirt.io/v1beta1");
    assert_eq!(
        stored.object["metadata"]["creationTimestamp"],
        "2026-12-06T21:00:00Z"
    );
    assert!(stored.object["metadata"]["uid"].as_str().unwrap().len() == 36);
}

#[test]
fn same_spec_is_unchanged_and_a_changed_one_is_refused() {
    let (_d, s) = store();
    objects::apply(&s, "f", &blank("d", "1Gi"), false, NOW).unwrap();
    let again = objects::apply(&s, "f", &blank("d", "1Gi"), false, NOW + 5).unwrap();
    assert_eq!(again.results[0].action, "unchanged");
    let msg = refused(&s, &blank("d", "2Gi"));
    assert!(msg.contains("Cannot update spec of DataVolume d"), "{msg}");
    assert!(msg.contains("document 1 (DataVolume d): spec:"), "{msg}");
    let kept = objects::get(&s, Kind::DataVolume, "default/d")
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.object["spec"]["storage"]["resources"]["requests"]["storage"],
        "1Gi"
    );

    // A VM's run strategy may change; its template may not.
    objects::apply(&s, "f", &vm("v", "d"), false, NOW).unwrap();
    let started = vm("v", "d").replace("Halted", "Always");
    let r = objects::apply(&s, "f", &started, false, NOW).unwrap();
    assert_eq!(r.results[0].action, "configured");
    let v = objects::get(&s, Kind::VirtualMachine, "default/v")
        .unwrap()
        .unwrap();
    assert_eq!(v.object["spec"]["runStrategy"], "Always");
    assert_eq!(v.object["metadata"]["generation"], 2);
    let msg = refused(&s, &started.replace("128Mi", "256Mi"));
    assert!(msg.contains("spec.template"), "{msg}");
}

#[test]
fn references_must_resolve_and_names_must_be_free() {
    let (_d, s) = store();
    let msg = refused(&s, &vm("v", "nosuch"));
    assert!(
        msg.contains("spec.template.spec.volumes[0].dataVolume.name")
            && msg.contains("DataVolume default/nosuch does not exist"),
        "{msg}"
    );
    // The DataVolume in the same file is enough.
    objects::apply(
        &s,
        "f",
        &format!("{}---\n{}", vm("v", "d"), blank("d", "64Mi")),
        false,
        NOW,
    )
    .unwrap();

    s.create_volume(&Name::new("taken").unwrap(), 1 << 20)
        .unwrap();
    let msg = refused(&s, &blank("taken", "1Gi"));
    assert!(msg.contains("volume taken exists already"), "{msg}");

    let msg = refused(
        &s,
        &format!("{}---\n{}", blank("twice", "1Gi"), blank("twice", "1Gi")),
    );
    assert!(msg.contains("given twice"), "{msg}");

    let msg = refused(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");
    assert!(
        msg.contains("Pod") && msg.contains("not one platter knows"),
        "{msg}"
    );
}

#[test]
fn syntax_errors_and_empty_files_are_refused() {
    let (_d, s) = store();
    let e = objects::apply(&s, "f.yaml", "a: [unclosed", false, NOW).unwrap_err();
    assert!(matches!(e, ObjectError::Syntax { .. }), "{e}");
    assert!(e.to_string().contains("f.yaml"), "{e}");
    let e = objects::apply(&s, "f.yaml", "", false, NOW).unwrap_err();
    assert!(e.to_string().contains("no documents"), "{e}");
}

#[test]
fn a_dry_run_writes_nothing_and_apply_needs_serve() {
    let (_d, s) = store();
    let r = objects::apply(&s, "f", &blank("d", "1Gi"), true, NOW).unwrap();
    assert!(r.dry_run);
    assert_eq!(r.results[0].action, "created");
    assert!(names(&s, Kind::DataVolume).is_empty());

    // Through the dispatcher without a server: the error says how to start one.
    let req = Request::Apply {
        file: "f".into(),
        text: blank("d", "1Gi"),
        dry_run: false,
    };
    let e = handle(&s, req, Context::default(), &mut |_| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.to_string().contains("platter serve is not running"),
        "{e}"
    );
    assert!(names(&s, Kind::DataVolume).is_empty());
}

#[test]
fn a_datavolume_a_vm_uses_is_not_deleted() {
    let (_d, s) = store();
    objects::apply(
        &s,
        "f",
        &format!("{}---\n{}", vm("v", "d"), blank("d", "64Mi")),
        false,
        NOW,
    )
    .unwrap();
    let e = objects::delete(&s, Kind::DataVolume, "default/d", NOW).unwrap_err();
    assert!(e.to_string().contains("VirtualMachine default/v"), "{e}");
    assert!(!objects::get(&s, Kind::DataVolume, "default/d")
        .unwrap()
        .unwrap()
        .deleting());
    let e = objects::delete(&s, Kind::DataVolume, "default/nosuch", NOW).unwrap_err();
    assert!(matches!(e, ObjectError::NotFound { .. }), "{e}");
    // Marked, not removed: the reconciler removes it with what it made.
    objects::delete(&s, Kind::VirtualMachine, "default/v", NOW).unwrap();
    assert!(objects::get(&s, Kind::VirtualMachine, "default/v")
        .unwrap()
        .unwrap()
        .deleting());
}

fn snapshot_doc(name: &str, vm: &str) -> String {
    format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\nmetadata:\n  name: {name}\nspec:\n  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {vm}}}\n"
    )
}

fn restore_doc(name: &str, target: &str, snap: &str) -> String {
    format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineRestore\nmetadata:\n  name: {name}\nspec:\n  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {target}}}\n  virtualMachineSnapshotName: {snap}\n"
    )
}

#[test]
fn restores_name_snapshots_that_exist_and_both_specs_are_immutable() {
    let (_d, s) = store();
    let msg = refused(&s, &restore_doc("r1", "web", "nosuch"));
    assert!(
        msg.contains("spec.virtualMachineSnapshotName")
            && msg.contains("VirtualMachineSnapshot \"nosuch\" does not exist"),
        "{msg}"
    );
    assert!(names(&s, Kind::VirtualMachineRestore).is_empty());
    // The snapshot in the same file will do; its VM may come later.
    let text = format!(
        "{}---\n{}",
        snapshot_doc("s1", "web"),
        restore_doc("r1", "web2", "s1")
    );
    let r = objects::apply(&s, "f", &text, false, NOW).unwrap();
    assert_eq!(r.results.len(), 2);
    assert_eq!(names(&s, Kind::VirtualMachineSnapshot), ["s1"]);
    assert_eq!(names(&s, Kind::VirtualMachineRestore), ["r1"]);
    let msg = refused(&s, &snapshot_doc("s1", "other"));
    assert!(
        msg.contains("Cannot update spec of VirtualMachineSnapshot s1"),
        "{msg}"
    );
    let msg = refused(&s, &restore_doc("r1", "web3", "s1"));
    assert!(
        msg.contains("Cannot update spec of VirtualMachineRestore r1"),
        "{msg}"
    );
    // A restore into a new VM may not take the name of a VirtualMachineInstance.
    objects::apply(&s, "f", &blank("idisk", "1Mi"), false, NOW).unwrap();
    objects::apply(&s, "f", &vmi("busy", "idisk"), false, NOW).unwrap();
    let msg = refused(&s, &restore_doc("r2", "busy", "s1"));
    assert!(
        msg.contains("spec.target.name: a VirtualMachineInstance named busy exists already"),
        "{msg}"
    );
}

/// A DataVolume whose source is a snapshot (`platter volume snapshot`, or the disk
/// snapshots of a VirtualMachineSnapshot) is an O(1) clone of it; a name that two
/// volumes' snapshots share is not guessed at.
#[test]
fn a_datavolume_from_a_snapshot_is_a_clone_of_it() {
    let (d, s) = store();
    s.create_volume(&Name::new("disk").unwrap(), 1 << 20)
        .unwrap();
    let vol = s
        .open_volume(&platter_types::VolumeRef::parse("disk").unwrap())
        .unwrap();
    vol.write_at(&[7u8; 4096], 0).unwrap();
    s.snapshot(&Name::new("disk").unwrap(), &Name::new("gold").unwrap())
        .unwrap();
    vol.write_at(&[8u8; 4096], 0).unwrap();
    drop(vol);
    s.create_volume(&Name::new("other").unwrap(), 1 << 20)
        .unwrap();
    s.snapshot(&Name::new("other").unwrap(), &Name::new("twice").unwrap())
        .unwrap();
    s.snapshot(&Name::new("disk").unwrap(), &Name::new("twice").unwrap())
        .unwrap();
    let from = |name: &str, snap: &str| {
        format!(
            "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: {name}\nspec:\n  source:\n    snapshot: {{namespace: default, name: {snap}}}\n  storage: {{}}\n"
        )
    };
    let text = format!(
        "{}---\n{}",
        from("fromgold", "gold"),
        from("ambiguous", "twice")
    );
    objects::apply(&s, "f", &text, false, NOW).unwrap();
    let host = std::sync::Arc::new(platter_control::vm::VmHost::new(d.path().join("nbd.sock")));
    let rec = objects::Reconciler::new(s.clone(), host);
    // The clone in one pass, its Succeeded in the next.
    rec.pass().unwrap();
    rec.pass().unwrap();
    let dv = objects::get(&s, Kind::DataVolume, "default/fromgold")
        .unwrap()
        .unwrap();
    assert_eq!(dv.object["status"]["phase"], "Succeeded", "{}", dv.object);
    let info = s
        .inspect(&platter_types::VolumeRef::parse("fromgold").unwrap())
        .unwrap();
    assert_eq!(info.origin.as_deref(), Some("disk@gold"));
    let v = s
        .open_volume(&platter_types::VolumeRef::parse("fromgold").unwrap())
        .unwrap();
    let mut b = [0u8; 4096];
    v.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [7u8; 4096]);
    let dv = objects::get(&s, Kind::DataVolume, "default/ambiguous")
        .unwrap()
        .unwrap();
    assert_eq!(dv.object["status"]["phase"], "Pending", "{}", dv.object);
    assert!(dv.object.to_string().contains("CloneSourceNotFound"));
    assert!(s
        .inspect(&platter_types::VolumeRef::parse("ambiguous").unwrap())
        .is_err());
}

#[test]
fn kernel_boot_and_pull_secrets_are_checked_at_apply() {
    let (_d, s) = store();
    let with = |extra_domain: &str, volume: &str| {
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: k}}\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        memory: {{guest: 128Mi}}\n{extra_domain}      volumes:\n      - {volume}\n"
        )
    };
    let cd = "{name: r, containerDisk: {image: 'r/i:1'}}";
    let initrd_only = with(
        "        firmware: {kernelBoot: {container: {image: 'r/k:1', initrdPath: /boot/i}}}\n",
        cd,
    );
    let e = refused(&s, &initrd_only);
    assert!(
        e.contains("kernelBoot.container.kernelPath: an initrd alone cannot be booted"),
        "{e}"
    );
    let secret = with(
        "        firmware: {kernelBoot: {container: {image: 'r/k:1', kernelPath: /k, imagePullSecret: s}}}\n",
        cd,
    );
    let e = refused(&s, &secret);
    assert!(
        e.contains("kernelBoot.container.imagePullSecret: Secret default/s does not exist"),
        "{e}"
    );
    let pulled = with(
        "",
        "{name: r, containerDisk: {image: 'r/i:1', imagePullSecret: s}}",
    );
    let e = refused(&s, &pulled);
    assert!(
        e.contains("volumes[0].containerDisk.imagePullSecret: Secret default/s does not exist"),
        "{e}"
    );
    assert!(names(&s, Kind::VirtualMachine).is_empty());
    // Kernel boot from an image with network data in the seed is accepted.
    let good = with(
        "        firmware: {kernelBoot: {kernelArgs: console=ttyS0, container: {image: 'r/k:1', kernelPath: /boot/vmlinuz}}}\n",
        "{name: ci, cloudInitNoCloud: {userData: x, networkData: 'version: 2'}}",
    );
    objects::apply(&s, "f.yaml", &good, false, NOW).unwrap();
    assert_eq!(names(&s, Kind::VirtualMachine), ["k"]);
    // With its Secret in the same file, a pull secret is accepted.
    let pulled = pulled.replace("name: k}", "name: k2}");
    let pull_secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/dockerconfigjson\nstringData: {.dockerconfigjson: '{\"auths\": {}}'}\n";
    objects::apply(
        &s,
        "f.yaml",
        &format!("{pulled}---\n{pull_secret}"),
        false,
        NOW,
    )
    .unwrap();
    assert_eq!(names(&s, Kind::VirtualMachine), ["k", "k2"]);
}

fn vmi(name: &str, dv: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata:\n  name: {name}\nspec:\n  domain:\n    memory: {{guest: 128Mi}}\n  volumes:\n  - name: root\n    dataVolume: {{name: {dv}}}\n"
    )
}

#[test]
fn instances_are_applied_once_and_never_share_a_vm_name() {
    let (_d, s) = store();
    objects::apply(&s, "f.yaml", &blank("disk", "1Mi"), false, NOW).unwrap();
    let e = refused(&s, &vmi("i", "nosuch"));
    assert!(
        e.contains("(VirtualMachineInstance i): spec.volumes[0].dataVolume.name: DataVolume default/nosuch does not exist"),
        "{e}"
    );
    objects::apply(&s, "f.yaml", &vmi("i", "disk"), false, NOW).unwrap();
    assert_eq!(names(&s, Kind::VirtualMachineInstance), ["i"]);
    // The same document again is a no-op; a changed spec is refused.
    objects::apply(&s, "f.yaml", &vmi("i", "disk"), false, NOW).unwrap();
    let e = refused(&s, &vmi("i", "other"));
    assert!(
        e.contains("Cannot update spec of VirtualMachineInstance i"),
        "{e}"
    );
    // A VM may not take the VMI's name, nor a VMI a VM's, also within one file.
    let e = refused(&s, &vm("i", "disk"));
    assert!(
        e.contains("metadata.name: a VirtualMachineInstance named i exists already"),
        "{e}"
    );
    objects::apply(&s, "f.yaml", &blank("disk2", "1Mi"), false, NOW).unwrap();
    objects::apply(&s, "f.yaml", &vm("v", "disk2"), false, NOW).unwrap();
    let e = refused(&s, &vmi("v", "disk"));
    assert!(e.contains("a VirtualMachine named v exists already"), "{e}");
    let both = format!("{}---\n{}", vm("w", "disk"), vmi("w", "disk"));
    let e = refused(&s, &both);
    assert!(e.contains("cannot share a name"), "{e}");
    assert_eq!(names(&s, Kind::VirtualMachine), ["v"]);
    // Its DataVolume is held while the VMI uses it.
    let e = objects::delete(&s, Kind::DataVolume, "default/disk", NOW).unwrap_err();
    assert!(
        e.to_string().contains("VirtualMachineInstance default/i"),
        "{e}"
    );
}

#[test]
fn a_datasource_may_be_pointed_at_another_image() {
    let (_d, s) = store();
    let ds = |pvc: &str| {
        format!("apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataSource\nmetadata: {{name: g}}\nspec:\n  source:\n    pvc: {{namespace: default, name: {pvc}}}\n")
    };
    let first = objects::apply(&s, "f.yaml", &ds("v1"), false, NOW).unwrap();
    assert_eq!(first.results[0].action, "created");
    let moved = objects::apply(&s, "f.yaml", &ds("v2"), false, NOW).unwrap();
    assert_eq!(moved.results[0].action, "configured");
    let stored = objects::get(&s, Kind::DataSource, "default/g")
        .unwrap()
        .unwrap();
    assert_eq!(stored.object["spec"]["source"]["pvc"]["name"], "v2");
    assert_eq!(stored.object["metadata"]["generation"], 2);
}

#[test]
fn a_new_run_strategy_replaces_a_kept_start_or_stop() {
    let (_d, s) = store();
    objects::apply(&s, "f.yaml", &blank("root", "1Mi"), false, NOW).unwrap();
    objects::apply(&s, "f.yaml", &vm("m", "root"), false, NOW).unwrap();
    let mut stored = objects::get(&s, Kind::VirtualMachine, "default/m")
        .unwrap()
        .unwrap();
    stored.internal.requested = Some(platter_controller::vm::StateChange::Stop);
    s.change_records(&[objects::put_change(&stored)]).unwrap();
    let always = vm("m", "root").replace("runStrategy: Halted", "runStrategy: Always");
    let r = objects::apply(&s, "f.yaml", &always, false, NOW).unwrap();
    assert_eq!(r.results[0].action, "configured");
    let after = objects::get(&s, Kind::VirtualMachine, "default/m")
        .unwrap()
        .unwrap();
    assert_eq!(after.object["spec"]["runStrategy"], "Always");
    assert_eq!(after.internal.requested, None);
}

fn secret(name: &str, user: &str, password: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: Opaque\nstringData:\n  accessKeyId: {user}\n  secretKey: {password}\n")
}

fn config_map(name: &str, pem: &str) -> String {
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata:\n  ca.pem: |\n{indented}")
}

fn http_dv(name: &str, extra: &str) -> String {
    format!("apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: {name}}}\nspec:\n  source:\n    http:\n      url: https://127.0.0.1:1/disk.img\n{extra}  storage:\n    resources:\n      requests:\n        storage: 1Gi\n")
}

/// Secrets and ConfigMaps are kept as the API server keeps them (stringData folded into
/// data), may change unless immutable, go at once on delete, and a DataVolume that names
/// one that is neither stored nor in the file is refused naming the field.
#[test]
fn secrets_and_config_maps_are_stored_and_datavolume_references_resolve() {
    let (_d, s) = store();
    let refs = "      secretRef: creds\n      certConfigMap: ca\n      extraHeaders: [\"X-A: 1\"]\n      secretExtraHeaders: [hdrs]\n";
    let msg = refused(&s, &http_dv("web", refs));
    assert!(
        msg.contains("spec.source.http.secretRef: Secret default/creds does not exist"),
        "{msg}"
    );
    let hdrs = "apiVersion: v1\nkind: Secret\nmetadata: {name: hdrs}\ndata:\n  h1: WC1COiAy\n";
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    let text = [
        http_dv("web", refs),
        secret("creds", "alice", "pw"),
        config_map("ca", pem),
        hdrs.to_string(),
    ]
    .join("---\n");
    let applied = objects::apply(&s, "f.yaml", &text, false, NOW).unwrap();
    let actions: Vec<_> = applied.results.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["created"; 4]);
    let stored = objects::get(&s, Kind::Secret, "default/creds")
        .unwrap()
        .unwrap();
    assert_eq!(stored.object["data"]["accessKeyId"], "YWxpY2U=");
    assert!(stored.object["stringData"].is_null(), "{}", stored.object);
    assert_eq!(stored.object["type"], "Opaque");
    let cm = objects::get(&s, Kind::ConfigMap, "default/ca")
        .unwrap()
        .unwrap();
    assert_eq!(cm.object["data"]["ca.pem"], format!("{pem}\n"));

    // Same content: unchanged; new content: configured; an immutable one stays.
    let again = objects::apply(&s, "f.yaml", &secret("creds", "alice", "pw"), false, NOW).unwrap();
    assert_eq!(again.results[0].action, "unchanged");
    let moved = objects::apply(&s, "f.yaml", &secret("creds", "alice", "pw2"), false, NOW).unwrap();
    assert_eq!(moved.results[0].action, "configured");
    let stored = objects::get(&s, Kind::Secret, "default/creds")
        .unwrap()
        .unwrap();
    assert_eq!(stored.object["data"]["secretKey"], "cHcy");
    assert!(stored.object["metadata"]["uid"].is_string());
    let fixed = format!("{}immutable: true\n", secret("fixed", "a", "b"));
    objects::apply(&s, "f.yaml", &fixed, false, NOW).unwrap();
    let changed = format!("{}immutable: true\n", secret("fixed", "a", "c"));
    let msg = refused(&s, &changed);
    assert!(
        msg.contains("field is immutable when `immutable` is set"),
        "{msg}"
    );

    // Bad documents name the field.
    let bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: b}\ndata:\n  k: '%%'\n";
    assert!(refused(&s, bad).contains("data.k: not valid base64"));
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata:\n  'a/b': x\n";
    assert!(refused(&s, bad).contains("data[a/b]: a valid config key"));
    let bad = "apiVersion: v2\nkind: Secret\nmetadata: {name: b}\n";
    assert!(refused(&s, bad).contains("apiVersion \"v2\" is not one platter accepts for Secret"));
    let msg = refused(&s, &http_dv("h", "      extraHeaders: [\"no colon\"]\n"));
    assert!(
        msg.contains("spec.source.http.extraHeaders[0]: \"no colon\" is not a header"),
        "{msg}"
    );
    let reg = "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: r}\nspec:\n  source:\n    registry:\n      url: docker://127.0.0.1:1/x:1\n      certConfigMap: nosuch\n  storage: {resources: {requests: {storage: 1Gi}}}\n";
    let msg = refused(&s, reg);
    assert!(
        msg.contains("spec.source.registry.certConfigMap: ConfigMap default/nosuch does not exist"),
        "{msg}"
    );

    let msg = refused(&s, &http_dv("e", "      secretRef: ''\n"));
    assert!(
        msg.contains("spec.source.http.secretRef: name is required"),
        "{msg}"
    );

    // A Secret is deleted at once (nothing reconciles it); kubectl's names find it.
    objects::delete(&s, Kind::Secret, "default/hdrs", NOW).unwrap();
    assert!(objects::get(&s, Kind::Secret, "default/hdrs")
        .unwrap()
        .is_none());
    assert_eq!(Kind::from_cli("cm"), Some(Kind::ConfigMap));
    assert_eq!(Kind::from_cli("secrets"), Some(Kind::Secret));
}
