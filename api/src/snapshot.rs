//! KubeVirt's `VirtualMachineSnapshot` and `VirtualMachineRestore`
//! (snapshot.kubevirt.io/v1beta1): every disk of a VM at one instant, and that instant
//! put back into the VM or into a new one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{Condition, ObjectMeta, TypedLocalObjectReference};
use crate::validate::Causes;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshot {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: VirtualMachineSnapshotSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineSnapshotStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineSnapshotSpec {
    pub source: TypedLocalObjectReference,
    /// "Delete" (the default) or "Retain".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_deadline: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotStatus {
    /// InProgress, Succeeded, Failed, Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default)]
    pub ready_to_use: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indications: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestore {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: VirtualMachineRestoreSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineRestoreStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineRestoreSpec {
    /// The VM to restore into: the snapshot's own VM (stopped), or a name that does not
    /// exist yet (a new VM).
    pub target: TypedLocalObjectReference,
    pub virtual_machine_snapshot_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreStatus {
    #[serde(default)]
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_data_volumes: Vec<String>,
}

fn validate_vm_ref(r: &TypedLocalObjectReference, at: &str, causes: &mut Causes) {
    if r.kind != "VirtualMachine" {
        causes.push(
            format!("{at}.kind"),
            format!(
                "invalid kind {:?}, only VirtualMachine is supported",
                r.kind
            ),
        );
    }
    if let Some(g) = r.api_group.as_deref() {
        if g != "kubevirt.io" && g != crate::meta::PLATTER_GROUP {
            causes.push(
                format!("{at}.apiGroup"),
                format!("invalid apiGroup {g:?}, only kubevirt.io is supported"),
            );
        }
    }
    if r.name.is_empty() {
        causes.push(format!("{at}.name"), "missing name");
    }
}

pub fn validate_snapshot(s: &VirtualMachineSnapshotSpec, causes: &mut Causes) {
    validate_vm_ref(&s.source, "spec.source", causes);
    if let Some(p) = s.deletion_policy.as_deref() {
        if p != "Delete" && p != "Retain" {
            causes.push(
                "spec.deletionPolicy",
                format!("Unsupported value: \"{p}\": supported values: \"Delete\", \"Retain\""),
            );
        }
    }
}

pub fn validate_restore(s: &VirtualMachineRestoreSpec, causes: &mut Causes) {
    validate_vm_ref(&s.target, "spec.target", causes);
    if s.virtual_machine_snapshot_name.is_empty() {
        causes.push("spec.virtualMachineSnapshotName", "missing snapshot name");
    }
}
