//! YAML and JSON documents as `platter apply -f` reads them: many documents per file
//! (`---`), each checked on its own and either accepted as a typed [`Object`] (with the
//! fields platter accepts but does not act on listed in [`Document::ignored`]) or
//! refused with a [`DocumentError`] naming the document, the field and the reason.
//!
//! Policy on fields platter does not act on (documented in docs/declarative.md): the
//! paths in [`IGNORED`] are accepted and reported once by `apply` (networking, scheduling,
//! device tuning: they change nothing about which disks a VM has or what is in them);
//! any other unknown field is refused by name, so nothing that matters is dropped.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::meta::Kind;
use crate::secret::{self, ConfigMap, Secret};
use crate::validate::{validate_name, Cause, Causes};
use crate::{
    datasource, datavolume, snapshot, vm, DataSource, DataVolume, VirtualMachine,
    VirtualMachineInstance, VirtualMachineRestore, VirtualMachineSnapshot,
};

/// A typed object of one of the kinds platter reconciles.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    DataVolume(DataVolume),
    DataSource(DataSource),
    VirtualMachine(VirtualMachine),
    VirtualMachineInstance(VirtualMachineInstance),
    VirtualMachineSnapshot(VirtualMachineSnapshot),
    VirtualMachineRestore(VirtualMachineRestore),
    Secret(Secret),
    ConfigMap(ConfigMap),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::DataVolume(_) => Kind::DataVolume,
            Object::DataSource(_) => Kind::DataSource,
            Object::VirtualMachine(_) => Kind::VirtualMachine,
            Object::VirtualMachineInstance(_) => Kind::VirtualMachineInstance,
            Object::VirtualMachineSnapshot(_) => Kind::VirtualMachineSnapshot,
            Object::VirtualMachineRestore(_) => Kind::VirtualMachineRestore,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
        }
    }

    pub fn metadata(&self) -> &crate::ObjectMeta {
        match self {
            Object::DataVolume(o) => &o.metadata,
            Object::DataSource(o) => &o.metadata,
            Object::VirtualMachine(o) => &o.metadata,
            Object::VirtualMachineInstance(o) => &o.metadata,
            Object::VirtualMachineSnapshot(o) => &o.metadata,
            Object::VirtualMachineRestore(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The namespace, `default` when the document gives none (as kubectl does).
    pub fn namespace(&self) -> &str {
        self.metadata()
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
    }
}

/// One accepted document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Position in the file, from 1.
    pub index: usize,
    /// The apiVersion as written (upstream or ours), kept for `get -o yaml`.
    pub api_version: String,
    pub object: Object,
    /// Fields given but not acted on (see [`IGNORED`]), as paths.
    pub ignored: Vec<String>,
}

/// Why one document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {index}{}: {}", describe(kind.as_deref(), name.as_deref()), join(causes))]
pub struct DocumentError {
    pub index: usize,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub causes: Vec<Cause>,
}

fn describe(kind: Option<&str>, name: Option<&str>) -> String {
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} {n})"),
        (Some(k), None) => format!(" ({k})"),
        (None, Some(n)) => format!(" ({n})"),
        (None, None) => String::new(),
    }
}

fn join(causes: &[Cause]) -> String {
    causes
        .iter()
        .map(Cause::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A file that is not YAML at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid YAML: {0}")]
pub struct SyntaxError(pub String);

/// Paths (from the document's root, `*` for every element of a list) that platter
/// accepts and does not act on, per kind. A VM's template and a VMI share the VMI part.
pub const IGNORED: &[(Kind, &str)] = &[
    (Kind::DataVolume, "spec.priorityClassName"),
    (Kind::DataVolume, "spec.pvc.selector"),
    (Kind::DataVolume, "spec.pvc.volumeName"),
    (Kind::DataVolume, "spec.storage.selector"),
    (Kind::DataVolume, "spec.storage.volumeName"),
    (
        Kind::VirtualMachine,
        "spec.dataVolumeTemplates.*.spec.priorityClassName",
    ),
];

/// Fields of a VMI spec platter accepts without acting on them (relative to the spec).
const IGNORED_VMI: &[&str] = &[
    "networks",
    "nodeSelector",
    "affinity",
    "tolerations",
    "topologySpreadConstraints",
    "evictionStrategy",
    "hostname",
    "subdomain",
    "dnsConfig",
    "dnsPolicy",
    "readinessProbe",
    "livenessProbe",
    "priorityClassName",
    "schedulerName",
    "accessCredentials",
    "architecture",
    "domain.machine",
    "domain.features",
    "domain.clock",
    "domain.chassis",
    "domain.ioThreadsPolicy",
    "domain.cpu.model",
    "domain.cpu.features",
    "domain.cpu.dedicatedCpuPlacement",
    "domain.firmware.uuid",
    "domain.firmware.serial",
    "domain.firmware.bootloader.bios",
    "domain.devices.interfaces",
    "domain.devices.rng",
    "domain.devices.inputs",
    "domain.devices.watchdog",
    "domain.devices.autoattachPodInterface",
    "domain.devices.autoattachGraphicsDevice",
    "domain.devices.autoattachSerialConsole",
    "domain.devices.autoattachMemBalloon",
    "domain.devices.networkInterfaceMultiqueue",
    "domain.devices.blockMultiQueue",
    "domain.devices.disks.*.cache",
    "domain.devices.disks.*.io",
    "domain.devices.disks.*.dedicatedIOThread",
    "domain.devices.disks.*.disk.pciAddress",
];

/// Metadata fields a server sets that may come back in `kubectl get -o yaml` output.
const IGNORED_META: &[&str] = &["metadata.managedFields", "metadata.selfLink"];

/// Parses a file of one or more YAML (or JSON) documents. Empty documents are skipped;
/// each other document yields an object or an error of its own.
///
/// The parser's budget is raised from its defaults (1,024 documents, 250,000 nodes) so
/// that one file can hold the 10,000 objects a store is built for; it still bounds
/// depth, aliases and scalar bytes against hostile input.
pub fn parse_documents(text: &str) -> Result<Vec<Result<Document, DocumentError>>, SyntaxError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 100_000,
            max_nodes: 10_000_000,
            max_events: 40_000_000,
        },
    };
    let values: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| SyntaxError(first_line(&e.to_string())))?;
    Ok(values
        .into_iter()
        .filter(|v| !v.is_null())
        .enumerate()
        .map(|(i, v)| parse_document(i + 1, v))
        .collect())
}

/// A value as YAML text (`get -o yaml`).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_default()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// Checks one document (already read as a JSON value).
pub fn parse_document(index: usize, mut v: Value) -> Result<Document, DocumentError> {
    let fail =
        |kind: Option<String>, name: Option<String>, field: &str, message: String| DocumentError {
            index,
            kind,
            name,
            causes: vec![Cause {
                field: field.to_string(),
                message,
            }],
        };
    let Some(map) = v.as_object() else {
        return Err(fail(
            None,
            None,
            "",
            "a document must be a mapping (an object)".into(),
        ));
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (Some(api_version), Some(kind_text)) = (text("apiVersion"), text("kind")) else {
        let missing = if text("apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        return Err(fail(
            text("kind"),
            name,
            missing,
            format!("{missing} is required"),
        ));
    };
    let kind = Kind::from_document(&api_version, &kind_text)
        .map_err(|m| fail(Some(kind_text.clone()), name.clone(), "apiVersion", m))?;
    let err_kind = Some(kind.to_string());
    if map
        .get("metadata")
        .and_then(|m| m.get("generateName"))
        .is_some()
    {
        return Err(fail(
            err_kind,
            name,
            "metadata.generateName",
            "cannot use generate name with apply: give metadata.name".into(),
        ));
    }
    let mut ignored = Vec::new();
    strip_ignored(&mut v, kind, &mut ignored);
    let object = decode(kind, v)
        .map_err(|(field, message)| fail(err_kind.clone(), name.clone(), &field, message))?;
    let mut causes = Causes::default();
    validate_name(
        &name.clone().unwrap_or_default(),
        "metadata.name",
        &mut causes,
    );
    validate(&object, &mut causes);
    if !causes.is_empty() {
        return Err(DocumentError {
            index,
            kind: err_kind,
            name,
            causes: causes.0,
        });
    }
    Ok(Document {
        index,
        api_version,
        object,
        ignored,
    })
}

/// Removes the status (written by platter, never by users) and every [`IGNORED`] path.
fn strip_ignored(v: &mut Value, kind: Kind, found: &mut Vec<String>) {
    if let Some(m) = v.as_object_mut() {
        if m.remove("status").is_some() {
            found.push("status".into());
        }
    }
    let vmi_prefix = match kind {
        Kind::VirtualMachine => Some("spec.template.spec"),
        Kind::VirtualMachineInstance => Some("spec"),
        _ => None,
    };
    let mut paths: Vec<String> = IGNORED_META.iter().map(|p| p.to_string()).collect();
    paths.extend(
        IGNORED
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, p)| p.to_string()),
    );
    if let Some(prefix) = vmi_prefix {
        paths.extend(IGNORED_VMI.iter().map(|p| format!("{prefix}.{p}")));
    }
    for p in &paths {
        let segs: Vec<&str> = p.split('.').collect();
        remove_path(v, &segs, String::new(), found);
    }
}

/// Removes `segs` below `v`, recording each path removed; a mapping left empty by a
/// removal goes too (so `bootloader: {bios: {}}` leaves no empty `bootloader`).
fn remove_path(v: &mut Value, segs: &[&str], at: String, found: &mut Vec<String>) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    let join = |at: &str, seg: &str| {
        if at.is_empty() {
            seg.to_string()
        } else {
            format!("{at}.{seg}")
        }
    };
    if *first == "*" {
        if let Some(items) = v.as_array_mut() {
            for (i, item) in items.iter_mut().enumerate() {
                remove_path(item, rest, format!("{at}[{i}]"), found);
            }
        }
        return;
    }
    let Some(map) = v.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        if map.remove(*first).is_some() {
            found.push(join(&at, first));
        }
        return;
    }
    if let Some(child) = map.get_mut(*first) {
        let before = found.len();
        remove_path(child, rest, join(&at, first), found);
        if found.len() > before && child.as_object().is_some_and(Map::is_empty) {
            map.remove(*first);
        }
    }
}

fn typed<T: DeserializeOwned>(v: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        (field, e.into_inner().to_string())
    })
}

fn decode(kind: Kind, mut v: Value) -> Result<Object, (String, String)> {
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    Ok(match kind {
        Kind::DataVolume => Object::DataVolume(typed(v)?),
        Kind::DataSource => Object::DataSource(typed(v)?),
        Kind::VirtualMachine => Object::VirtualMachine(typed(v)?),
        Kind::VirtualMachineInstance => Object::VirtualMachineInstance(typed(v)?),
        Kind::VirtualMachineSnapshot => Object::VirtualMachineSnapshot(typed(v)?),
        Kind::VirtualMachineRestore => Object::VirtualMachineRestore(typed(v)?),
        Kind::Secret => {
            let mut s: Secret = typed(v)?;
            s.normalize();
            Object::Secret(s)
        }
        Kind::ConfigMap => Object::ConfigMap(typed(v)?),
    })
}

fn validate(o: &Object, causes: &mut Causes) {
    match o {
        Object::DataVolume(dv) => datavolume::validate_spec(&dv.spec, "spec", causes),
        Object::DataSource(ds) => datasource::validate_spec(&ds.spec, causes),
        Object::VirtualMachine(vm) => vm::validate_vm(&vm.spec, causes),
        Object::VirtualMachineInstance(vmi) => vm::validate_vmi(&vmi.spec, "spec", causes),
        Object::VirtualMachineSnapshot(s) => snapshot::validate_snapshot(&s.spec, causes),
        Object::VirtualMachineRestore(r) => snapshot::validate_restore(&r.spec, causes),
        Object::Secret(s) => secret::validate_secret(s, causes),
        Object::ConfigMap(c) => secret::validate_config_map(c, causes),
    }
}
