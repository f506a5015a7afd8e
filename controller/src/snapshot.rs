//! VirtualMachineSnapshot and VirtualMachineRestore: when the disks of a VM are
//! snapshotted (once, at one instant, also while it runs), when a restore may act (its
//! snapshot ready; the target stopped, or absent), and the status both carry, worded as
//! KubeVirt words it ("Operation complete", indications Online and NoGuestAgent).
//!
//! What a new VM restored from a snapshot looks like is decided here too
//! ([`restored_vm`]): the snapshot's VM under the target's name, each snapshotted disk
//! an owned DataVolume cloned from its snapshot.

use platter_api::datavolume::{DataVolumeSource, DataVolumeSpec, NamespacedName, PvcSpec};
use platter_api::meta::ObjectMeta;
use platter_api::snapshot::{
    SnapshotError, VirtualMachineRestore, VirtualMachineRestoreStatus, VirtualMachineSnapshot,
    VirtualMachineSnapshotStatus,
};
use platter_api::vm::{DataVolumeRef, DataVolumeTemplate};
use platter_api::{Quantity, VirtualMachine};

use crate::conditions::set;
use crate::{parse_rfc3339, rfc3339, Event, Now};

const COMPLETE: &str = "Operation complete";
/// KubeVirt's default `failureDeadline`.
const DEFAULT_DEADLINE: u64 = 5 * 60;

/// The snapshot's source VM as the executor found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uid: String,
    pub running: bool,
    /// Every disk to snapshot (DataVolumes, claims) exists and is ready.
    pub volumes_ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotObserved {
    /// `None`: no VM of that name.
    pub source: Option<Source>,
    /// The disks' snapshots exist (taken on an earlier pass).
    pub taken: bool,
    pub deleting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Snapshot every disk of the source at one instant, with this status, in one
    /// transaction.
    Take,
    /// Delete the disks' snapshots (deletionPolicy Delete).
    DeleteContent,
    /// Nothing is left: the object goes.
    RemoveFinalizer,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotDecision {
    pub status: VirtualMachineSnapshotStatus,
    pub actions: Vec<SnapshotAction>,
    pub events: Vec<Event>,
}

/// A Go duration as KubeVirt's `failureDeadline` takes it (`5m`, `1h30m`, `90s`), in
/// whole seconds; `None` when it is not one.
pub fn parse_duration(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while let Some(c) = rest.chars().next() {
        if c.is_ascii_digit() {
            num.push(c);
            rest = &rest[1..];
            continue;
        }
        let (unit, len) = match rest {
            r if r.starts_with("ms") => (0, 2),
            r if r.starts_with('h') => (3600, 1),
            r if r.starts_with('m') => (60, 1),
            r if r.starts_with('s') => (1, 1),
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        num.clear();
        rest = &rest[len..];
    }
    match num.is_empty() {
        true => Some(total),
        // "0" alone is a valid Go duration; other bare numbers are not.
        false => (num == "0" && total == 0).then_some(0),
    }
}

pub fn reconcile_snapshot(
    snap: &VirtualMachineSnapshot,
    seen: &SnapshotObserved,
    now: Now,
) -> SnapshotDecision {
    let ts = rfc3339(now);
    let prev = snap.status.clone().unwrap_or_default();
    let mut st = prev.clone();
    let mut actions = Vec::new();
    let mut events = Vec::new();
    let name = snap.metadata.name.as_deref().unwrap_or_default();
    let vm = &snap.spec.source.name;
    if seen.deleting {
        let retain = snap.spec.deletion_policy.as_deref() == Some("Retain");
        actions.push(match seen.taken && !retain {
            true => SnapshotAction::DeleteContent,
            false => SnapshotAction::RemoveFinalizer,
        });
        return SnapshotDecision {
            status: st,
            actions,
            events,
        };
    }
    let phase = prev.phase.as_deref();
    if seen.taken {
        st.phase = Some("Succeeded".into());
        st.ready_to_use = true;
        st.creation_time = prev.creation_time.clone().or(Some(ts.clone()));
        set(&mut st.conditions, "Progressing", false, COMPLETE, "", &ts);
        set(&mut st.conditions, "Ready", true, COMPLETE, "", &ts);
        if phase != Some("Succeeded") {
            events.push(Event::normal(
                "SuccessfulVirtualMachineSnapshotContentCreate",
                format!("Successfully created VirtualMachineSnapshotContent for {name}"),
            ));
        }
    } else if phase == Some("Failed") {
        // A failed snapshot stays failed, as KubeVirt's does: delete it and apply again.
    } else if past_deadline(snap, now) {
        let msg = "snapshot deadline exceeded";
        st.phase = Some("Failed".into());
        st.error = Some(SnapshotError {
            message: Some(msg.into()),
            time: Some(ts.clone()),
        });
        set(&mut st.conditions, "Progressing", false, "Failed", msg, &ts);
        set(&mut st.conditions, "Ready", false, "Failed", msg, &ts);
        events.push(Event::warning(
            "VirtualMachineSnapshotFailed",
            format!("VirtualMachineSnapshot {name}: {msg}"),
        ));
    } else {
        st.phase = Some("InProgress".into());
        st.ready_to_use = false;
        match &seen.source {
            None => {
                set(
                    &mut st.conditions,
                    "Progressing",
                    false,
                    "Source does not exist",
                    &format!("VirtualMachine {vm} does not exist"),
                    &ts,
                );
                set(&mut st.conditions, "Ready", false, "Not ready", "", &ts);
            }
            Some(src) => {
                st.source_uid = Some(src.uid.clone());
                st.indications = match src.running {
                    true => vec!["Online".into(), "NoGuestAgent".into()],
                    false => Vec::new(),
                };
                if src.volumes_ready {
                    actions.push(SnapshotAction::Take);
                    set(
                        &mut st.conditions,
                        "Progressing",
                        true,
                        "Source locked and operation in progress",
                        "",
                        &ts,
                    );
                } else {
                    set(
                        &mut st.conditions,
                        "Progressing",
                        false,
                        "Source not ready",
                        &format!("the disks of VirtualMachine {vm} are not ready yet"),
                        &ts,
                    );
                }
                set(&mut st.conditions, "Ready", false, "Not ready", "", &ts);
            }
        }
    }
    SnapshotDecision {
        status: st,
        actions,
        events,
    }
}

fn past_deadline(snap: &VirtualMachineSnapshot, now: Now) -> bool {
    let deadline = snap
        .spec
        .failure_deadline
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_DEADLINE);
    // 0 turns the deadline off, as in KubeVirt.
    if deadline == 0 {
        return false;
    }
    snap.metadata
        .creation_timestamp
        .as_deref()
        .and_then(parse_rfc3339)
        .is_some_and(|c| now > c.saturating_add(deadline))
}

/// The restore's target as the executor found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// No VM of that name: the restore makes one.
    Absent,
    /// The snapshot's own VM.
    Source { running: bool },
    /// Another VM that exists: not overwritten.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreObserved {
    /// The snapshot: `None` when it does not exist, else whether it is ready to use.
    pub snapshot: Option<bool>,
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreAction {
    /// Put the source VM's disks back to the snapshot (it is stopped), with this status,
    /// in one transaction.
    RollBack,
    /// Create the target VM from the snapshot ([`restored_vm`]), with this status, in one
    /// transaction.
    CreateVm,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestoreDecision {
    /// The status to write: with the action when there is one (both or neither).
    pub status: VirtualMachineRestoreStatus,
    pub actions: Vec<RestoreAction>,
    pub events: Vec<Event>,
}

pub fn reconcile_restore(
    r: &VirtualMachineRestore,
    seen: &RestoreObserved,
    now: Now,
) -> RestoreDecision {
    let ts = rfc3339(now);
    let prev = r.status.clone().unwrap_or_default();
    let mut st = prev.clone();
    let mut actions = Vec::new();
    let mut events = Vec::new();
    if prev.complete {
        return RestoreDecision {
            status: st,
            actions,
            events,
        };
    }
    let snap = &r.spec.virtual_machine_snapshot_name;
    let target = &r.spec.target.name;
    let waiting = |st: &mut VirtualMachineRestoreStatus, reason: &str, msg: String| {
        set(&mut st.conditions, "Progressing", false, reason, &msg, &ts);
        set(&mut st.conditions, "Ready", false, reason, &msg, &ts);
    };
    match (seen.snapshot, seen.target) {
        (None, _) => waiting(
            &mut st,
            "Snapshot does not exist",
            format!("VirtualMachineSnapshot {snap} does not exist"),
        ),
        (Some(false), _) => waiting(
            &mut st,
            "Snapshot not ready",
            format!("VirtualMachineSnapshot {snap} is not ready to use"),
        ),
        (Some(true), Target::Other) => waiting(
            &mut st,
            "Target exists",
            format!(
                "VirtualMachine {target} exists and is not the source of {snap}: restore into it or into a new name"
            ),
        ),
        (Some(true), Target::Source { running: true }) => waiting(
            &mut st,
            "Target running",
            format!("waiting for VirtualMachine {target} to be stopped (runStrategy Halted)"),
        ),
        (Some(true), t) => {
            actions.push(match t {
                Target::Absent => RestoreAction::CreateVm,
                _ => RestoreAction::RollBack,
            });
            st.complete = true;
            st.restore_time = Some(ts.clone());
            set(&mut st.conditions, "Progressing", false, COMPLETE, "", &ts);
            set(&mut st.conditions, "Ready", true, COMPLETE, "", &ts);
            events.push(Event::normal(
                "VirtualMachineRestoreComplete",
                format!(
                    "Successfully completed VirtualMachineRestore {}",
                    r.metadata.name.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    RestoreDecision {
        status: st,
        actions,
        events,
    }
}

/// One snapshotted disk: the VM volume it backs, the store snapshot's name (what a
/// DataVolume's `source.snapshot.name` names) and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotDisk {
    pub volume: String,
    pub snapshot: String,
    pub size: u64,
}

/// An object's uid cut to its first 8 hex digits: names made of it stay inside 63
/// characters.
fn short_uid(uid: &str) -> String {
    uid.chars().filter(|c| *c != '-').take(8).collect()
}

/// The name of the DataVolume a restore makes for volume `volume`, as KubeVirt names
/// its restored claims (`restore-<uid>-<volume>`).
pub fn restored_dv_name(restore_uid: &str, volume: &str) -> String {
    format!("restore-{}-{volume}", short_uid(restore_uid))
}

/// The name of the store snapshot a VirtualMachineSnapshot takes of volume `volume`, as
/// KubeVirt names its VolumeSnapshots (`vmsnapshot-<uid>-volume-<volume>`).
pub fn disk_snapshot_name(snapshot_uid: &str, volume: &str) -> String {
    format!("vmsnapshot-{}-volume-{volume}", short_uid(snapshot_uid))
}

/// The VM a restore into a new name creates: the snapshot's VM (`saved`) named
/// `target`, each snapshotted volume now an owned DataVolume (a template) cloned from its
/// snapshot; other volumes (containerDisks, emptyDisks, cloud-init) as they were.
pub fn restored_vm(
    saved: &VirtualMachine,
    target: &str,
    namespace: &str,
    restore_uid: &str,
    disks: &[SnapshotDisk],
) -> VirtualMachine {
    let mut vm = saved.clone();
    vm.metadata = ObjectMeta {
        name: Some(target.to_string()),
        namespace: Some(namespace.to_string()),
        labels: saved.metadata.labels.clone(),
        annotations: saved.metadata.annotations.clone(),
        ..ObjectMeta::default()
    };
    vm.status = None;
    let mut templates = Vec::new();
    for d in disks {
        let Some(v) = vm
            .spec
            .template
            .spec
            .volumes
            .iter_mut()
            .find(|v| v.name == d.volume)
        else {
            continue;
        };
        let old = v.data_volume.as_ref().map(|x| x.name.clone()).or_else(|| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        });
        vm.spec
            .data_volume_templates
            .retain(|t| t.metadata.name.is_none() || t.metadata.name != old);
        let name = restored_dv_name(restore_uid, &d.volume);
        v.persistent_volume_claim = None;
        v.data_volume = Some(DataVolumeRef {
            name: name.clone(),
            hotpluggable: None,
        });
        let mut storage = PvcSpec::default();
        if let Ok(q) = Quantity::parse(&d.size.to_string()) {
            storage.resources.requests.insert("storage".into(), q);
        }
        templates.push(DataVolumeTemplate {
            metadata: ObjectMeta {
                name: Some(name),
                ..ObjectMeta::default()
            },
            spec: DataVolumeSpec {
                source: Some(DataVolumeSource {
                    snapshot: Some(NamespacedName {
                        namespace: namespace.to_string(),
                        name: d.snapshot.clone(),
                    }),
                    ..DataVolumeSource::default()
                }),
                storage: Some(storage),
                ..DataVolumeSpec::default()
            },
        });
    }
    vm.spec.data_volume_templates.extend(templates);
    vm
}

#[cfg(test)]
mod tests;
