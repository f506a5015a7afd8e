//! Snapshot and restore transitions: waiting for the source, taking once, the deadline,
//! deletion by policy; a restore waiting for its snapshot and a stopped target, rolling
//! back or creating a VM, never overwriting another VM; what a restored VM looks like.

use platter_api::{Object, VirtualMachine};

use super::*;

const NOW: Now = 1_796_590_800;

fn parse(yaml: &str) -> Object {
    let mut docs = platter_api::parse_documents(yaml).unwrap();
    docs.remove(0).unwrap().object
}

fn snap(extra: &str) -> VirtualMachineSnapshot {
    let y = format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\nmetadata:\n  name: s1\n  creationTimestamp: '{}'\nspec:\n  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: web}}\n{extra}",
        rfc3339(NOW)
    );
    match parse(&y) {
        Object::VirtualMachineSnapshot(s) => s,
        o => panic!("{o:?}"),
    }
}

fn restore(target: &str) -> VirtualMachineRestore {
    let y = format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineRestore\nmetadata: {{name: r1}}\nspec:\n  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {target}}}\n  virtualMachineSnapshotName: s1\n"
    );
    match parse(&y) {
        Object::VirtualMachineRestore(r) => r,
        o => panic!("{o:?}"),
    }
}

fn source(running: bool, ready: bool) -> Option<Source> {
    Some(Source {
        uid: "u-1".into(),
        running,
        volumes_ready: ready,
    })
}

fn observed(source: Option<Source>, taken: bool) -> SnapshotObserved {
    SnapshotObserved {
        source,
        taken,
        deleting: false,
    }
}

fn cond<'a>(cs: &'a [platter_api::Condition], t: &str) -> (&'a str, &'a str) {
    let c = cs.iter().find(|c| c.type_ == t).unwrap();
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn a_snapshot_waits_for_its_source_then_is_taken_once() {
    let s = snap("");
    let d = reconcile_snapshot(&s, &observed(None, false), NOW + 1);
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phase.as_deref(), Some("InProgress"));
    assert_eq!(
        cond(&d.status.conditions, "Progressing"),
        ("False", "Source does not exist")
    );
    let d = reconcile_snapshot(&s, &observed(source(false, false), false), NOW + 1);
    assert!(d.actions.is_empty(), "disks not ready: wait");
    // Running: taken online, with KubeVirt's indications.
    let d = reconcile_snapshot(&s, &observed(source(true, true), false), NOW + 1);
    assert_eq!(d.actions, vec![SnapshotAction::Take]);
    assert_eq!(d.status.indications, vec!["Online", "NoGuestAgent"]);
    assert_eq!(d.status.source_uid.as_deref(), Some("u-1"));
    assert!(!d.status.ready_to_use);
    let mut s = s;
    s.status = Some(d.status);
    let d = reconcile_snapshot(&s, &observed(source(true, true), true), NOW + 2);
    assert!(d.actions.is_empty(), "taken once: {:?}", d.actions);
    assert_eq!(d.status.phase.as_deref(), Some("Succeeded"));
    assert!(d.status.ready_to_use);
    assert_eq!(
        d.status.creation_time.as_deref(),
        Some(rfc3339(NOW + 2).as_str())
    );
    assert_eq!(cond(&d.status.conditions, "Ready"), ("True", COMPLETE));
    assert_eq!(
        cond(&d.status.conditions, "Progressing"),
        ("False", COMPLETE)
    );
    assert_eq!(d.events.len(), 1);
    s.status = Some(d.status);
    let d = reconcile_snapshot(&s, &observed(None, true), NOW + 9);
    assert!(d.events.is_empty() && d.actions.is_empty());
    assert_eq!(
        d.status.creation_time.as_deref(),
        Some(rfc3339(NOW + 2).as_str())
    );
}

#[test]
fn a_snapshot_fails_after_its_deadline_and_stays_failed() {
    let s = snap("  failureDeadline: 1m\n");
    let d = reconcile_snapshot(&s, &observed(None, false), NOW + 61);
    assert_eq!(d.status.phase.as_deref(), Some("Failed"));
    assert_eq!(
        d.status.error.as_ref().and_then(|e| e.message.as_deref()),
        Some("snapshot deadline exceeded")
    );
    assert!(d.events[0].warning);
    let mut s = s;
    s.status = Some(d.status);
    let d = reconcile_snapshot(&s, &observed(source(false, true), false), NOW + 62);
    assert!(d.actions.is_empty(), "no retry after failing");
    // The default deadline is 5 minutes; 0 turns it off.
    let d = reconcile_snapshot(&snap(""), &observed(None, false), NOW + 299);
    assert_eq!(d.status.phase.as_deref(), Some("InProgress"));
    let d = reconcile_snapshot(
        &snap("  failureDeadline: 0s\n"),
        &observed(None, false),
        NOW + 9999,
    );
    assert_eq!(d.status.phase.as_deref(), Some("InProgress"));
}

#[test]
fn deleting_a_snapshot_follows_its_deletion_policy() {
    let gone = |s: &VirtualMachineSnapshot, taken| {
        let seen = SnapshotObserved {
            source: None,
            taken,
            deleting: true,
        };
        reconcile_snapshot(s, &seen, NOW).actions
    };
    assert_eq!(gone(&snap(""), true), vec![SnapshotAction::DeleteContent]);
    assert_eq!(
        gone(&snap(""), false),
        vec![SnapshotAction::RemoveFinalizer]
    );
    let retain = snap("  deletionPolicy: Retain\n");
    assert_eq!(gone(&retain, true), vec![SnapshotAction::RemoveFinalizer]);
}

#[test]
fn go_durations() {
    assert_eq!(parse_duration("5m"), Some(300));
    assert_eq!(parse_duration("1h30m"), Some(5400));
    assert_eq!(parse_duration("90s"), Some(90));
    assert_eq!(parse_duration("0"), Some(0));
    assert_eq!(parse_duration("1500ms"), Some(0));
    for bad in ["", "5", "m", "5x", "-1m", "99999999999999999999h"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn a_restore_waits_then_acts_once() {
    let r = restore("web");
    let at = |snapshot, target| reconcile_restore(&r, &RestoreObserved { snapshot, target }, NOW);
    let d = at(None, Target::Source { running: false });
    assert!(d.actions.is_empty() && !d.status.complete);
    assert_eq!(
        cond(&d.status.conditions, "Ready"),
        ("False", "Snapshot does not exist")
    );
    assert!(at(Some(false), Target::Absent).actions.is_empty());
    let d = at(Some(true), Target::Source { running: true });
    assert!(d.actions.is_empty());
    assert_eq!(
        cond(&d.status.conditions, "Ready"),
        ("False", "Target running")
    );
    let d = at(Some(true), Target::Other);
    assert!(d.actions.is_empty(), "another VM is never overwritten");
    let d = at(Some(true), Target::Source { running: false });
    assert_eq!(d.actions, vec![RestoreAction::RollBack]);
    assert!(d.status.complete);
    assert_eq!(
        d.status.restore_time.as_deref(),
        Some(rfc3339(NOW).as_str())
    );
    assert_eq!(cond(&d.status.conditions, "Ready"), ("True", COMPLETE));
    let d2 = at(Some(true), Target::Absent);
    assert_eq!(d2.actions, vec![RestoreAction::CreateVm]);
    // Complete: nothing more, whatever is seen.
    let mut done = r.clone();
    done.status = Some(d.status);
    let d = reconcile_restore(
        &done,
        &RestoreObserved {
            snapshot: None,
            target: Target::Source { running: true },
        },
        NOW + 5,
    );
    assert!(d.actions.is_empty() && d.status.complete && d.events.is_empty());
}

fn web() -> VirtualMachine {
    let y = "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: web, uid: u-1, labels: {app: web}}
spec:
  runStrategy: Always
  dataVolumeTemplates:
  - metadata: {name: web-root}
    spec:
      source: {registry: {url: 'docker://127.0.0.1:5000/guest:v1'}}
      storage: {resources: {requests: {storage: 1Gi}}}
  template:
    spec:
      domain:
        memory: {guest: 128Mi}
        devices: {disks: [{name: root, disk: {}}, {name: data, disk: {}}, {name: scratch, disk: {}}]}
      volumes:
      - {name: root, dataVolume: {name: web-root}}
      - {name: data, persistentVolumeClaim: {claimName: web-data}}
      - {name: scratch, emptyDisk: {capacity: 1Gi}}
";
    match parse(y) {
        Object::VirtualMachine(v) => v,
        o => panic!("{o:?}"),
    }
}

#[test]
fn a_restored_vm_owns_clones_of_the_snapshotted_disks() {
    let disks = [
        SnapshotDisk {
            volume: "root".into(),
            snapshot: "vmsnapshot-abc-root".into(),
            size: 1 << 30,
        },
        SnapshotDisk {
            volume: "data".into(),
            snapshot: "vmsnapshot-abc-data".into(),
            size: 4096,
        },
    ];
    let uid = "0f1e2d3c-aaaa-bbbb";
    let vm = restored_vm(&web(), "web2", "default", uid, &disks);
    assert_eq!(vm.metadata.name.as_deref(), Some("web2"));
    assert_eq!(vm.metadata.uid, None, "a new object gets its own uid");
    assert_eq!(
        vm.metadata.labels.get("app").map(String::as_str),
        Some("web")
    );
    let names: Vec<_> = vm
        .spec
        .data_volume_templates
        .iter()
        .map(|t| t.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["restore-0f1e2d3c-root", "restore-0f1e2d3c-data"]
    );
    let t = &vm.spec.data_volume_templates[1];
    let src = t.spec.source.as_ref().unwrap().snapshot.as_ref().unwrap();
    assert_eq!(
        (src.namespace.as_str(), src.name.as_str()),
        ("default", "vmsnapshot-abc-data")
    );
    let size = t.spec.storage.as_ref().unwrap().storage_request().unwrap();
    assert_eq!(size.value().ok(), Some(4096));
    let vols = &vm.spec.template.spec.volumes;
    assert_eq!(
        vols[0].data_volume.as_ref().unwrap().name,
        "restore-0f1e2d3c-root"
    );
    assert_eq!(
        vols[1].data_volume.as_ref().unwrap().name,
        "restore-0f1e2d3c-data"
    );
    assert!(vols[1].persistent_volume_claim.is_none());
    assert!(
        vols[2].empty_disk.is_some(),
        "throw-away disks stay as they were"
    );
}
