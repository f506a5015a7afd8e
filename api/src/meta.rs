//! What every object has: its kind and API version, Kubernetes object metadata, and the
//! conditions that status carries.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Our own API group; every kind is accepted under it as well as under its upstream one.
pub const PLATTER_GROUP: &str = "platter.dev";
pub const PLATTER_VERSION: &str = "platter.dev/v1beta1";

/// The kinds platter keeps: those it reconciles, and the two core kinds they refer to
/// (see [`Kind::reconciled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    DataVolume,
    DataSource,
    VirtualMachine,
    VirtualMachineInstance,
    VirtualMachineSnapshot,
    VirtualMachineRestore,
    Secret,
    ConfigMap,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::DataVolume,
        Kind::DataSource,
        Kind::VirtualMachine,
        Kind::VirtualMachineInstance,
        Kind::VirtualMachineSnapshot,
        Kind::VirtualMachineRestore,
        Kind::Secret,
        Kind::ConfigMap,
    ];

    /// False for Secrets and ConfigMaps: data that DataVolumes read, with no status, no
    /// events and nothing to reconcile (a delete removes them at once).
    pub fn reconciled(self) -> bool {
        !matches!(self, Kind::Secret | Kind::ConfigMap)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DataVolume => "DataVolume",
            Kind::DataSource => "DataSource",
            Kind::VirtualMachine => "VirtualMachine",
            Kind::VirtualMachineInstance => "VirtualMachineInstance",
            Kind::VirtualMachineSnapshot => "VirtualMachineSnapshot",
            Kind::VirtualMachineRestore => "VirtualMachineRestore",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
        }
    }

    /// The upstream apiVersions this kind is accepted under (besides ours).
    pub fn upstream_versions(self) -> &'static [&'static str] {
        match self {
            Kind::DataVolume | Kind::DataSource => &["cdi.kubevirt.io/v1beta1"],
            Kind::VirtualMachine | Kind::VirtualMachineInstance => {
                &["kubevirt.io/v1", "kubevirt.io/v1alpha3"]
            }
            Kind::VirtualMachineSnapshot | Kind::VirtualMachineRestore => &[
                "snapshot.kubevirt.io/v1beta1",
                "snapshot.kubevirt.io/v1alpha1",
            ],
            Kind::Secret | Kind::ConfigMap => &["v1"],
        }
    }

    /// kubectl's plural resource name.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::DataVolume => "datavolumes",
            Kind::DataSource => "datasources",
            Kind::VirtualMachine => "virtualmachines",
            Kind::VirtualMachineInstance => "virtualmachineinstances",
            Kind::VirtualMachineSnapshot => "virtualmachinesnapshots",
            Kind::VirtualMachineRestore => "virtualmachinerestores",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
        }
    }

    /// kubectl's short names.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::DataVolume => &["dv", "dvs"],
            Kind::DataSource => &["das"],
            Kind::VirtualMachine => &["vm", "vms"],
            Kind::VirtualMachineInstance => &["vmi", "vmis"],
            Kind::VirtualMachineSnapshot => &["vmsnapshot", "vmsnapshots"],
            Kind::VirtualMachineRestore => &["vmrestore", "vmrestores"],
            Kind::Secret => &[],
            Kind::ConfigMap => &["cm"],
        }
    }

    /// The name a message suggests for this kind on a command line (`dv`, `secrets`).
    pub fn cli_name(self) -> &'static str {
        self.short_names()
            .first()
            .copied()
            .unwrap_or_else(|| self.plural())
    }

    /// The kind a command line names, as kubectl resolves it: plural, singular, short
    /// name or kind, case-insensitive, optionally qualified by a group (`dv.cdi.kubevirt.io`).
    pub fn from_cli(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let base = lower.split('.').next().unwrap_or_default();
        Kind::ALL.into_iter().find(|k| {
            let kind = k.as_str().to_ascii_lowercase();
            base == kind || base == k.plural() || k.short_names().contains(&base)
        })
    }

    /// The kind named by a document's `apiVersion` and `kind`, or why it is not one.
    pub fn from_document(api_version: &str, kind: &str) -> Result<Kind, String> {
        let k = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| {
                format!(
                    "kind {kind:?} is not one platter knows (it knows {})",
                    Kind::ALL.map(Kind::as_str).join(", ")
                )
            })?;
        if api_version == PLATTER_VERSION || k.upstream_versions().contains(&api_version) {
            return Ok(k);
        }
        Err(format!(
            "apiVersion {api_version:?} is not one platter accepts for {kind} (use {} or {PLATTER_VERSION})",
            k.upstream_versions().join(" or ")
        ))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object metadata users write and platter keeps (a subset of Kubernetes'
/// ObjectMeta; the server-set fields are filled by platter).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// A status condition, as Kubernetes writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `{name}` references to Secrets and ConfigMaps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    #[serde(default)]
    pub name: String,
}

/// A reference to an object of some kind in the same namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TypedLocalObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    pub kind: String,
    pub name: String,
}

/// requests/limits of a PVC or a VM domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, crate::Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, crate::Quantity>,
}
