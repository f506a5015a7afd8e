//! KubeVirt's `VirtualMachine` and `VirtualMachineInstance` (kubevirt.io/v1): what the
//! guest gets (CPUs, memory, disks, firmware) and which volumes back its disks. Fields
//! platter does not act on are listed in `document::IGNORED` (accepted, reported once)
//! or refused by serde (unknown field, named).

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::datavolume::DataVolumeSpec;
use crate::meta::{Condition, ObjectMeta, ResourceRequirements};
use crate::validate::Causes;
use crate::Quantity;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: VirtualMachineSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunStrategy {
    Always,
    Halted,
    Manual,
    RerunOnFailure,
    Once,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineSpec {
    /// Deprecated upstream in favour of `runStrategy`; both at once are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    /// Kept as text so an unknown strategy is refused with KubeVirt's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,
    pub template: VmiTemplate,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_volume_templates: Vec<DataVolumeTemplate>,
}

impl VirtualMachineSpec {
    /// The effective run strategy: `runStrategy`, else `running` (true = Always, false =
    /// Halted), else Halted (KubeVirt's default since `running` was deprecated). `None` for
    /// a strategy that validation refuses.
    pub fn strategy(&self) -> Option<RunStrategy> {
        match (&self.run_strategy, self.running) {
            (Some(s), _) => serde_json::from_value(serde_json::Value::String(s.clone())).ok(),
            (None, Some(true)) => Some(RunStrategy::Always),
            (None, _) => Some(RunStrategy::Halted),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmiTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    pub spec: VmiSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataVolumeTemplate {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: DataVolumeSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstance {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: VmiSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmiSpec {
    #[serde(default)]
    pub domain: DomainSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub devices: Devices,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Quantity>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Devices {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Disk {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<CdromTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskTarget {
    /// virtio (default), sata, scsi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdromTarget {
    /// sata (default), scsi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Firmware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_boot: Option<KernelBoot>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelBoot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<KernelBootContainer>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelBootContainer {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_disk: Option<ContainerDiskSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_no_cloud: Option<CloudInitNoCloud>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_disk: Option<EmptyDisk>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDiskSource {
    /// A registry reference (`registry:5000/img:tag`, with or without `docker://`).
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataVolumeRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotpluggable: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRef {
    pub claim_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudInitNoCloud {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data_base64: Option<String>,
}

impl CloudInitNoCloud {
    /// The user data as the guest gets it (`userData`, or `userDataBase64` decoded);
    /// empty when neither is given.
    pub fn user_data_bytes(&self) -> Result<Vec<u8>, String> {
        Ok(one_of(&self.user_data, &self.user_data_base64, "userDataBase64")?.unwrap_or_default())
    }

    /// The network configuration (`networkData`, or `networkDataBase64` decoded).
    pub fn network_data_bytes(&self) -> Result<Option<Vec<u8>>, String> {
        one_of(
            &self.network_data,
            &self.network_data_base64,
            "networkDataBase64",
        )
    }
}

fn one_of(
    text: &Option<String>,
    b64: &Option<String>,
    field: &str,
) -> Result<Option<Vec<u8>>, String> {
    use base64::Engine;
    match (text, b64) {
        (Some(t), _) => Ok(Some(t.clone().into_bytes())),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map(Some)
            .map_err(|e| format!("{field} is not valid base64: {e}")),
        (None, None) => Ok(None),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDisk {
    pub capacity: Quantity,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// Stopped, Provisioning, Starting, Running, Paused, Stopping, Terminating,
    /// CrashLoopBackOff, Migrating, Unknown, ErrorUnschedulable, ErrImagePull,
    /// ImagePullBackOff, ErrorPvcNotFound, DataVolumeError, WaitingForVolumeBinding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<String>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub created: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<RunStrategy>,
}

/// What a volume is backed by, for the checks below.
fn source_count(v: &Volume) -> usize {
    [
        v.container_disk.is_some(),
        v.data_volume.is_some(),
        v.persistent_volume_claim.is_some(),
        v.cloud_init_no_cloud.is_some(),
        v.empty_disk.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count()
}

/// Validates a VirtualMachine spec as KubeVirt's webhook does, in its words.
pub fn validate_vm(spec: &VirtualMachineSpec, causes: &mut Causes) {
    if spec.running.is_some() && spec.run_strategy.is_some() {
        causes.push(
            "spec.running",
            "Running and RunStrategy are mutually exclusive",
        );
    }
    if let Some(s) = &spec.run_strategy {
        if spec.strategy().is_none() {
            causes.push("spec.runStrategy", format!("Invalid RunStrategy ({s})"));
        }
    }
    validate_vmi(&spec.template.spec, "spec.template.spec", causes);
    for (i, t) in spec.data_volume_templates.iter().enumerate() {
        let at = format!("spec.dataVolumeTemplate[{i}]");
        let name = t.metadata.name.as_deref().unwrap_or_default();
        if name.is_empty() {
            causes.push(
                format!("{at}.name"),
                format!("'name' field must not be empty for DataVolumeTemplate entry {at}."),
            );
            continue;
        }
        let referenced = spec.template.spec.volumes.iter().any(|v| {
            v.data_volume.as_ref().is_some_and(|d| d.name == name)
                || v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == name)
        });
        if !referenced {
            causes.push(
                at.clone(),
                format!("DataVolumeTemplate entry {at} must be referenced in the VMI template's 'volumes' list"),
            );
        }
        crate::datavolume::validate_spec(
            &t.spec,
            &format!("spec.dataVolumeTemplates[{i}].spec"),
            causes,
        );
    }
}

/// KubeVirt's rules for `firmware.kernelBoot`: arguments only with a kernel from a
/// container, an image, at least one of the two paths, each absolute without `.` or `..`.
fn validate_kernel_boot(k: &KernelBoot, at: &str, causes: &mut Causes) {
    let Some(c) = &k.container else {
        if k.kernel_args.as_deref().is_some_and(|a| !a.is_empty()) {
            causes.push(
                format!("{at}.kernelArgs"),
                format!(
                    "{at}.kernelArgs can be provided only with an external kernel ({at}.container)"
                ),
            );
        }
        return;
    };
    let cat = format!("{at}.container");
    if c.image.trim().is_empty() {
        causes.push(
            format!("{cat}.image"),
            format!("{cat} must be defined with an image"),
        );
    }
    let kernel = c.kernel_path.as_deref().filter(|p| !p.is_empty());
    let initrd = c.initrd_path.as_deref().filter(|p| !p.is_empty());
    if kernel.is_none() && initrd.is_none() {
        causes.push(
            cat.clone(),
            format!(
                "{cat} must be defined with at least one of the following: kernelPath, initrdPath"
            ),
        );
    }
    for (field, path) in [("kernelPath", kernel), ("initrdPath", initrd)] {
        let Some(path) = path else { continue };
        let clean = path.starts_with('/')
            && path.len() > 1
            && !path.ends_with('/')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean {
            causes.push(
                format!("{cat}.{field}"),
                format!(
                    "{cat}.{field} must be an absolute path to a file without relative components"
                ),
            );
        }
    }
}

/// Validates a VMI spec (a VM's template, or a VirtualMachineInstance).
pub fn validate_vmi(spec: &VmiSpec, at: &str, causes: &mut Causes) {
    let d = &spec.domain;
    let guest = d.memory.as_ref().and_then(|m| m.guest.as_ref());
    let requested = d.resources.as_ref().and_then(|r| r.requests.get("memory"));
    match guest.or(requested) {
        None => causes.push(
            format!("{at}.domain.resources.requests.memory"),
            format!(
                "{at}.domain.resources.requests.memory or {at}.domain.memory.guest must be set"
            ),
        ),
        Some(q) if q.is_zero() || q.value().is_err() => causes.push(
            format!("{at}.domain.memory.guest"),
            format!("{at}.domain.memory.guest must be greater than zero (got {q})"),
        ),
        Some(_) => {}
    }
    if let Some(k) = d.firmware.as_ref().and_then(|f| f.kernel_boot.as_ref()) {
        validate_kernel_boot(k, &format!("{at}.domain.firmware.kernelBoot"), causes);
    }
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let vat = format!("{at}.volumes[{i}]");
        if !volumes.insert(v.name.as_str()) {
            causes.push(
                format!("{vat}.name"),
                format!("{vat}.name '{}' must be unique.", v.name),
            );
        }
        match source_count(v) {
            0 => causes.push(vat.clone(), "must have at least one volume source (containerDisk, dataVolume, persistentVolumeClaim, cloudInitNoCloud or emptyDisk)"),
            1 => {}
            _ => causes.push(vat.clone(), "must have only one volume source"),
        }
        if let Some(ci) = &v.cloud_init_no_cloud {
            let cat = format!("{vat}.cloudInitNoCloud");
            if ci.user_data.is_some() && ci.user_data_base64.is_some() {
                causes.push(
                    cat.clone(),
                    format!("{cat} must have only one userdatasource set."),
                );
            }
            if ci.network_data.is_some() && ci.network_data_base64.is_some() {
                causes.push(
                    cat.clone(),
                    format!("{cat} must have only one networkdata source set."),
                );
            }
            if let Err(e) = ci.user_data_bytes() {
                causes.push(format!("{cat}.userDataBase64"), e);
            }
            if let Err(e) = ci.network_data_bytes() {
                causes.push(format!("{cat}.networkDataBase64"), e);
            }
        }
        if let Some(e) = &v.empty_disk {
            if e.capacity.is_zero() || e.capacity.value().is_err() {
                causes.push(
                    format!("{at}.volumes[{i}].emptyDisk.capacity"),
                    "capacity must be greater than zero",
                );
            }
        }
    }
    let mut disks = BTreeSet::new();
    for (i, disk) in d.devices.disks.iter().enumerate() {
        let dat = format!("{at}.domain.devices.disks[{i}]");
        if !disks.insert(disk.name.as_str()) {
            causes.push(
                format!("{dat}.name"),
                format!("{dat}.name '{}' must be unique.", disk.name),
            );
        }
        if !volumes.contains(disk.name.as_str()) {
            causes.push(
                format!("{dat}.name"),
                format!("{dat}.name '{}' not found.", disk.name),
            );
        }
        if disk.disk.is_some() && disk.cdrom.is_some() {
            causes.push(
                dat.clone(),
                format!("{dat} can only have a single target type defined"),
            );
        }
        let bus = disk
            .disk
            .as_ref()
            .and_then(|t| t.bus.as_deref())
            .or(disk.cdrom.as_ref().and_then(|t| t.bus.as_deref()));
        if let Some(b) = bus {
            if !["virtio", "sata", "scsi"].contains(&b) {
                causes.push(
                    format!("{dat}.bus"),
                    format!("{dat} is set with an unrecognized bus {b}, must be one of: [virtio sata scsi]"),
                );
            }
        }
        if disk.boot_order == Some(0) {
            causes.push(
                format!("{dat}.bootOrder"),
                format!("{dat} must have a boot order > 0, if supplied"),
            );
        }
    }
    if let Some(c) = &d.cpu {
        for (what, n) in [
            ("cores", c.cores),
            ("sockets", c.sockets),
            ("threads", c.threads),
        ] {
            if n == Some(0) {
                causes.push(
                    format!("{at}.domain.cpu.{what}"),
                    format!("{at}.domain.cpu.{what} must be greater than zero"),
                );
            }
        }
    }
}

impl Cpu {
    /// vCPUs: sockets × cores × threads, each 1 when absent.
    pub fn vcpus(&self) -> u32 {
        let n = |v: Option<u32>| v.unwrap_or(1).max(1);
        n(self.sockets)
            .saturating_mul(n(self.cores))
            .saturating_mul(n(self.threads))
    }
}
