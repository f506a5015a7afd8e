//! VirtualMachine transitions: waiting for DataVolumes, each run strategy, stop, errors,
//! deletion with owned objects, and adoption after a restart.

use platter_api::datavolume::DataVolumePhase as P;
use platter_api::{Object, VirtualMachine};

use super::*;

const NOW: Now = 1_796_590_800;

fn vm(strategy: &str) -> VirtualMachine {
    let yaml = format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {{name: web}}
spec:
  runStrategy: {strategy}
  dataVolumeTemplates:
  - metadata: {{name: web-root}}
    spec:
      source: {{registry: {{url: 'docker://127.0.0.1:5000/guest:v1'}}}}
      storage: {{resources: {{requests: {{storage: 1Gi}}}}}}
  template:
    spec:
      domain:
        memory: {{guest: 256Mi}}
        devices: {{disks: [{{name: root, disk: {{}}}}, {{name: scratch, disk: {{}}}}]}}
      volumes:
      - {{name: root, dataVolume: {{name: web-root}}}}
      - {{name: scratch, emptyDisk: {{capacity: 1Gi}}}}
"
    );
    let mut docs = platter_api::parse_documents(&yaml).unwrap();
    match docs.remove(0).unwrap().object {
        Object::VirtualMachine(v) => v,
        other => panic!("{other:?}"),
    }
}

fn seen(root: Option<P>, own: bool, domain: Domain) -> Observed {
    Observed {
        volumes: vec![
            ("root".into(), Backing::DataVolume(root)),
            ("scratch".into(), Backing::Own(own)),
        ],
        domain,
        deleting: false,
        owned_left: usize::from(root.is_some()),
        requested: None,
    }
}

fn status(d: &Decision) -> &str {
    d.status.printable_status.as_deref().unwrap_or("")
}

#[test]
fn a_vm_waits_for_its_datavolume_then_starts_and_runs() {
    let v = vm("Always");
    let first = reconcile(&v, &seen(None, false, Domain::Absent), NOW);
    assert_eq!(status(&first), "Provisioning");
    assert_eq!(first.actions, [Action::CreateDataVolume(0)]);
    let importing = reconcile(
        &v,
        &seen(Some(P::ImportInProgress), false, Domain::Absent),
        NOW,
    );
    assert_eq!(status(&importing), "Provisioning");
    assert!(
        importing.actions.is_empty(),
        "the DataVolume exists: not created twice"
    );
    let ready = reconcile(&v, &seen(Some(P::Succeeded), false, Domain::Absent), NOW);
    assert_eq!(status(&ready), "Starting");
    assert_eq!(ready.actions, [Action::PrepareDisks, Action::Start]);
    let mut v2 = v.clone();
    v2.status = Some(ready.status.clone());
    let up = reconcile(&v2, &seen(Some(P::Succeeded), true, Domain::Running), NOW);
    assert_eq!(status(&up), "Running");
    assert!(up.actions.is_empty());
    assert!(up.status.ready);
    assert!(crate::conditions::is_true(&up.status.conditions, "Ready"));
    assert_eq!(up.events[0].reason, "Running");
}

#[test]
fn a_running_domain_is_adopted_not_restarted() {
    // serve restarted: the VM's status is gone stale, its domain kept running.
    let d = reconcile(
        &vm("Always"),
        &seen(Some(P::Succeeded), true, Domain::Running),
        NOW,
    );
    assert_eq!(status(&d), "Running");
    assert!(!d.actions.contains(&Action::Start));
}

#[test]
fn run_strategies() {
    let ok = Some(P::Succeeded);
    let clean = Domain::Stopped {
        exit: Some(Exit::Clean),
    };
    let failed = Domain::Stopped {
        exit: Some(Exit::Failed),
    };
    for (strategy, domain, want_status, want_start) in [
        ("Halted", Domain::Absent, "Stopped", false),
        ("Halted", Domain::Running, "Stopping", false),
        ("Always", clean, "Starting", true),
        ("Always", failed, "Starting", true),
        ("Manual", Domain::Absent, "Stopped", false),
        ("Manual", Domain::Running, "Running", false),
        ("RerunOnFailure", Domain::Absent, "Starting", true),
        ("RerunOnFailure", failed, "Starting", true),
        ("RerunOnFailure", clean, "Stopped", false),
        ("Once", Domain::Absent, "Starting", true),
        ("Once", clean, "Stopped", false),
        ("Once", failed, "Stopped", false),
    ] {
        let d = reconcile(&vm(strategy), &seen(ok, true, domain), NOW);
        assert_eq!(status(&d), want_status, "{strategy} {domain:?}");
        assert_eq!(
            d.actions.contains(&Action::Start),
            want_start,
            "{strategy} {domain:?}"
        );
        if strategy == "Halted" && domain == Domain::Running {
            assert_eq!(d.actions, [Action::Stop]);
        }
    }
    let mut s = seen(ok, true, Domain::Running);
    s.requested = Some(StateChange::Stop);
    assert_eq!(reconcile(&vm("Manual"), &s, NOW).actions, [Action::Stop]);
    // A stopped RerunOnFailure VM a user stopped stays stopped, even after a crash.
    let mut s = seen(
        ok,
        true,
        Domain::Stopped {
            exit: Some(Exit::Failed),
        },
    );
    s.requested = Some(StateChange::Stop);
    assert!(reconcile(&vm("RerunOnFailure"), &s, NOW).actions.is_empty());
    assert!(!request_done(s.requested, s.domain));
    // A start request starts a Manual VM, and is done once it runs.
    s.requested = Some(StateChange::Start);
    s.domain = Domain::Stopped {
        exit: Some(Exit::Clean),
    };
    assert!(reconcile(&vm("Manual"), &s, NOW)
        .actions
        .contains(&Action::Start));
    assert!(request_done(s.requested, Domain::Running));
}

#[test]
fn start_and_stop_requests_as_virtctl_makes_them() {
    use RequestOutcome::*;
    use RunStrategy::*;
    use StateChange::*;
    for (strategy, change, running, want) in [
        (
            Always,
            Start,
            false,
            Refused("Always does not support manual start requests".into()),
        ),
        (
            Once,
            Start,
            false,
            Refused("Once does not support manual start requests".into()),
        ),
        (Halted, Start, false, SetStrategy(Always)),
        (Manual, Start, false, Keep(Start)),
        (Manual, Start, true, Refused("VM is already running".into())),
        (RerunOnFailure, Start, false, Keep(Start)),
        (Always, Stop, true, SetStrategy(Halted)),
        (Once, Stop, true, SetStrategy(Halted)),
        (Halted, Stop, false, Refused("VM is not running".into())),
        (Halted, Stop, true, Keep(Stop)),
        (Manual, Stop, true, Keep(Stop)),
        (RerunOnFailure, Stop, true, Keep(Stop)),
    ] {
        assert_eq!(
            state_request(strategy, change, running),
            want,
            "{strategy:?} {change:?}"
        );
    }
}

#[test]
fn failed_and_missing_volumes() {
    let d = reconcile(
        &vm("Always"),
        &seen(Some(P::Failed), true, Domain::Absent),
        NOW,
    );
    assert_eq!(status(&d), "DataVolumeError");
    assert!(!d.actions.contains(&Action::Start));
    assert!(d.events[0].warning);
    let mut s = seen(Some(P::Succeeded), true, Domain::Absent);
    s.volumes.push(("data".into(), Backing::Claim(false)));
    let d = reconcile(&vm("Always"), &s, NOW);
    assert_eq!(status(&d), "ErrorPvcNotFound");
    let ready = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ErrorPvcNotFound")
    );
    assert!(ready.message.contains("data"), "{}", ready.message);
}

#[test]
fn deletion_tears_down_then_releases() {
    let mut s = seen(Some(P::Succeeded), true, Domain::Running);
    s.deleting = true;
    let d = reconcile(&vm("Always"), &s, NOW);
    assert_eq!(
        (status(&d), d.actions.clone()),
        ("Terminating", vec![Action::Teardown])
    );
    s.domain = Domain::Absent;
    s.owned_left = 1;
    assert_eq!(
        reconcile(&vm("Always"), &s, NOW).actions,
        [Action::Teardown],
        "owned DataVolumes go with it"
    );
    s.owned_left = 0;
    assert_eq!(
        reconcile(&vm("Always"), &s, NOW).actions,
        [Action::RemoveFinalizer]
    );
}

#[test]
fn a_vmi_runs_once_and_ends_succeeded_or_failed() {
    let docs = platter_api::parse_documents(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: i}\nspec:\n  domain:\n    memory: {guest: 128Mi}\n    devices: {disks: [{name: root, disk: {}}]}\n  volumes: [{name: root, containerDisk: {image: 'r/i:1'}}]\n",
    )
    .unwrap();
    let Object::VirtualMachineInstance(vmi) = docs.into_iter().next().unwrap().unwrap().object
    else {
        panic!()
    };
    let vm = vm_of_vmi(&vmi, None);
    assert_eq!(vm.spec.strategy(), Some(RunStrategy::Once));
    let own = |ready, domain| Observed {
        volumes: vec![("root".into(), Backing::Own(ready))],
        domain,
        deleting: false,
        owned_left: 0,
        requested: None,
    };
    let d = reconcile(&vm, &own(false, Domain::Absent), NOW);
    assert_eq!(d.actions, [Action::PrepareDisks, Action::Start]);
    assert_eq!(vmi_status(&d.status, Domain::Absent)["phase"], "Scheduling");
    let d = reconcile(&vm, &own(true, Domain::Running), NOW);
    assert_eq!(vmi_status(&d.status, Domain::Running)["phase"], "Running");
    for (exit, phase) in [(Exit::Clean, "Succeeded"), (Exit::Failed, "Failed")] {
        let stopped = Domain::Stopped { exit: Some(exit) };
        let d = reconcile(&vm, &own(true, stopped), NOW);
        assert!(
            d.actions.is_empty(),
            "a VMI is never started again: {:?}",
            d.actions
        );
        assert_eq!(vmi_status(&d.status, stopped)["phase"], phase);
    }
    assert_eq!(vmi_phase("Provisioning", Domain::Absent), "Pending");
}
