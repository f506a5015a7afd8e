//! VirtualMachine: which DataVolumes it waits for, when its domain is started or stopped
//! (by run strategy), and KubeVirt's printableStatus and Ready condition.
//!
//! printableStatus: Stopped, Provisioning (DataVolumes not ready), Starting, Running,
//! Stopping, Terminating (being deleted), DataVolumeError (a DataVolume failed),
//! ErrorPvcNotFound (a volume names a DataVolume or claim that does not exist).

use platter_api::datavolume::DataVolumePhase;
use platter_api::vm::{RunStrategy, VirtualMachineSpec, VirtualMachineStatus, VmiTemplate};
use platter_api::{VirtualMachine, VirtualMachineInstance};

use crate::conditions::set;
use crate::{rfc3339, Event, Now};

/// A volume's backing as the executor found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A DataVolume (the VM's own template, or one applied separately) and its phase.
    DataVolume(Option<DataVolumePhase>),
    /// A claim (platter volume) that exists, or not.
    Claim(bool),
    /// Made by the VM itself (containerDisk clone, emptyDisk, cloud-init seed): whether
    /// it has been prepared.
    Own(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Not defined in libvirt.
    Absent,
    Running,
    /// Defined, not running; `exit` says how it last ended, if it ran since defined.
    Stopped {
        exit: Option<Exit>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off.
    Clean,
    /// It crashed or was killed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Per volume of the template, in order: (volume name, backing).
    pub volumes: Vec<(String, Backing)>,
    pub domain: Domain,
    /// The object is being deleted (finalizer pending).
    pub deleting: bool,
    /// DataVolumes this VM owns (from its templates) that still exist.
    pub owned_left: usize,
    /// A start or stop asked for by `platter vm start/stop` (KubeVirt's state change
    /// requests), not yet carried out.
    pub requested: Option<StateChange>,
}

/// A start or stop asked for by a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StateChange {
    Start,
    Stop,
}

/// What a start or stop request does to a VM of `strategy`, as KubeVirt's `virtctl
/// start/stop` do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The run strategy changes (Halted → Always on start; Always and Once → Halted on
    /// stop).
    SetStrategy(RunStrategy),
    /// A request is kept until it is carried out (Manual, RerunOnFailure).
    Keep(StateChange),
    /// Refused, saying why.
    Refused(String),
}

pub fn state_request(strategy: RunStrategy, change: StateChange, running: bool) -> RequestOutcome {
    use RunStrategy::*;
    match (change, strategy) {
        (StateChange::Start, Always | Once) => RequestOutcome::Refused(format!(
            "{strategy:?} does not support manual start requests"
        )),
        (StateChange::Start, Halted) => RequestOutcome::SetStrategy(Always),
        (StateChange::Start, Manual | RerunOnFailure) if running => {
            RequestOutcome::Refused("VM is already running".into())
        }
        (StateChange::Stop, Always | Once) => RequestOutcome::SetStrategy(Halted),
        (StateChange::Stop, Halted) if !running => {
            RequestOutcome::Refused("VM is not running".into())
        }
        (change, _) => RequestOutcome::Keep(change),
    }
}

/// Whether a kept request is done (a start once the guest runs; a stop stays, so that
/// RerunOnFailure does not start a guest a user stopped, until a start replaces it).
pub fn request_done(requested: Option<StateChange>, domain: Domain) -> bool {
    requested == Some(StateChange::Start) && domain == Domain::Running
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the DataVolume of `spec.dataVolumeTemplates[i]` (owned by this VM).
    CreateDataVolume(usize),
    /// Prepare the VM's own disks (containerDisk clones, emptyDisks, cloud-init seed).
    PrepareDisks,
    /// Define the domain (if needed) and start it.
    Start,
    /// ACPI shutdown, then power off after the grace period.
    Stop,
    /// Power off, undefine, delete the VM's own disks and the DataVolumes it owns.
    Teardown,
    /// Nothing is left: drop the finalizer, the object goes.
    RemoveFinalizer,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: VirtualMachineStatus,
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
}

/// Whether the run strategy wants the guest running now.
fn wants_running(strategy: RunStrategy, domain: Domain) -> bool {
    match strategy {
        RunStrategy::Always => true,
        RunStrategy::Halted => false,
        // Started and stopped by `platter vm start/stop` only: keep what is.
        RunStrategy::Manual => domain == Domain::Running,
        RunStrategy::RerunOnFailure => !matches!(
            domain,
            Domain::Stopped {
                exit: Some(Exit::Clean)
            }
        ),
        RunStrategy::Once => matches!(
            domain,
            Domain::Absent | Domain::Running | Domain::Stopped { exit: None }
        ),
    }
}

pub fn reconcile(vm: &VirtualMachine, seen: &Observed, now: Now) -> Decision {
    let ts = rfc3339(now);
    let prev = vm.status.clone().unwrap_or_default();
    let mut st = VirtualMachineStatus {
        run_strategy: vm.spec.strategy(),
        ..prev.clone()
    };
    let mut actions = Vec::new();
    let printable = if seen.deleting {
        if seen.domain == Domain::Absent && seen.owned_left == 0 {
            actions.push(Action::RemoveFinalizer);
        } else {
            actions.push(Action::Teardown);
        }
        "Terminating"
    } else {
        decide(vm, seen, &mut actions)
    };
    let running = seen.domain == Domain::Running;
    st.created = seen.domain != Domain::Absent;
    st.ready = running && printable == "Running";
    let (reason, message) = match printable {
        "Running" => ("", String::new()),
        "Provisioning" => ("Provisioning", "waiting for DataVolumes".to_string()),
        "DataVolumeError" => ("DataVolumeError", "a DataVolume failed".to_string()),
        "ErrorPvcNotFound" => ("ErrorPvcNotFound", missing(seen)),
        other => (other, String::new()),
    };
    set(&mut st.conditions, "Ready", st.ready, reason, &message, &ts);
    let mut events = Vec::new();
    if prev.printable_status.as_deref() != Some(printable) {
        let name = vm.metadata.name.as_deref().unwrap_or_default();
        events.push(match printable {
            "DataVolumeError" | "ErrorPvcNotFound" => {
                Event::warning(printable, format!("VirtualMachine {name}: {message}"))
            }
            _ => Event::normal(
                printable,
                format!("VirtualMachine {name} is {}", printable.to_lowercase()),
            ),
        });
    }
    st.printable_status = Some(printable.to_string());
    Decision {
        status: st,
        actions,
        events,
    }
}

fn missing(seen: &Observed) -> String {
    let names: Vec<&str> = seen
        .volumes
        .iter()
        .filter(|(_, b)| matches!(b, Backing::DataVolume(None) | Backing::Claim(false)))
        .map(|(n, _)| n.as_str())
        .collect();
    format!(
        "volumes {} name objects that do not exist",
        names.join(", ")
    )
}

fn decide(vm: &VirtualMachine, seen: &Observed, actions: &mut Vec<Action>) -> &'static str {
    let strategy = vm.spec.strategy().unwrap_or(RunStrategy::Halted);
    let running = seen.domain == Domain::Running;
    // Owned DataVolumes are created whatever the run strategy, as KubeVirt does.
    for (i, t) in vm.spec.data_volume_templates.iter().enumerate() {
        let name = t.metadata.name.as_deref().unwrap_or_default();
        let exists = vm_volume_dv(vm, name).is_some_and(|vol| {
            seen.volumes
                .iter()
                .any(|(n, b)| n == vol && matches!(b, Backing::DataVolume(Some(_))))
        });
        if !exists {
            actions.push(Action::CreateDataVolume(i));
        }
    }
    let templated = |vol: &str| {
        vm.spec.template.spec.volumes.iter().any(|v| {
            v.name == vol
                && v.data_volume.as_ref().is_some_and(|d| {
                    vm.spec
                        .data_volume_templates
                        .iter()
                        .any(|t| t.metadata.name.as_deref() == Some(d.name.as_str()))
                })
        })
    };
    let mut provisioning = false;
    let mut own_ready = true;
    for (name, b) in &seen.volumes {
        match b {
            Backing::DataVolume(Some(DataVolumePhase::Failed)) => return "DataVolumeError",
            Backing::DataVolume(Some(DataVolumePhase::Succeeded)) => {}
            Backing::DataVolume(Some(_)) => provisioning = true,
            Backing::DataVolume(None) if templated(name) => provisioning = true,
            Backing::DataVolume(None) | Backing::Claim(false) => return "ErrorPvcNotFound",
            Backing::Claim(true) => {}
            Backing::Own(ready) => own_ready &= *ready,
        }
    }
    let want = match seen.requested {
        Some(StateChange::Start) => true,
        Some(StateChange::Stop) => false,
        None => wants_running(strategy, seen.domain),
    };
    if !want {
        if running {
            actions.push(Action::Stop);
            return "Stopping";
        }
        return "Stopped";
    }
    if provisioning {
        return "Provisioning";
    }
    if running {
        return "Running";
    }
    if !own_ready {
        actions.push(Action::PrepareDisks);
    }
    actions.push(Action::Start);
    "Starting"
}

/// A VirtualMachineInstance reconciled as the VM it behaves like: its spec as the
/// template, run once (KubeVirt runs a standalone VMI once and never restarts it), with
/// the VM-shaped status the executor keeps for it.
pub fn vm_of_vmi(
    vmi: &VirtualMachineInstance,
    kept: Option<VirtualMachineStatus>,
) -> VirtualMachine {
    VirtualMachine {
        metadata: vmi.metadata.clone(),
        spec: VirtualMachineSpec {
            running: None,
            run_strategy: Some("Once".into()),
            template: VmiTemplate {
                metadata: None,
                spec: vmi.spec.clone(),
            },
            data_volume_templates: Vec::new(),
        },
        status: kept,
    }
}

/// The phase KubeVirt gives a VMI in the state the VM decision found: Pending while its
/// volumes are not ready, Scheduling while it is being started, Running, then Succeeded
/// (the guest powered off) or Failed (it crashed).
pub fn vmi_phase(printable: &str, domain: Domain) -> &'static str {
    match domain {
        Domain::Running => "Running",
        Domain::Stopped {
            exit: Some(Exit::Clean),
        } => "Succeeded",
        Domain::Stopped {
            exit: Some(Exit::Failed),
        } => "Failed",
        Domain::Stopped { exit: None } => "Scheduled",
        Domain::Absent => match printable {
            "Starting" => "Scheduling",
            _ => "Pending",
        },
    }
}

/// A VMI's status (`phase`, `conditions`) from the decision's VM-shaped one.
pub fn vmi_status(st: &VirtualMachineStatus, domain: Domain) -> serde_json::Value {
    let printable = st.printable_status.as_deref().unwrap_or_default();
    serde_json::json!({
        "phase": vmi_phase(printable, domain),
        "conditions": st.conditions,
    })
}

/// The template volume that uses DataVolume `dv`.
fn vm_volume_dv<'a>(vm: &'a VirtualMachine, dv: &str) -> Option<&'a str> {
    vm.spec
        .template
        .spec
        .volumes
        .iter()
        .find(|v| v.data_volume.as_ref().is_some_and(|d| d.name == dv))
        .map(|v| v.name.as_str())
}

#[cfg(test)]
mod tests;
