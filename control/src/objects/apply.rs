//! `platter apply -f`: every document of a file checked (syntax, kind, fields, the
//! upstream validation, references, immutable specs), then all of them written in one
//! transaction, or none.
//!
//! Why all or none: a file usually describes one system (a VM and the disks it needs);
//! applying part of it would leave a VM waiting for a disk whose document was refused,
//! and re-applying the fixed file must not trip over the half that went in.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use platter_api::{parse_documents, DataVolume, Document, Kind, Object, VirtualMachine};
use platter_controller::Now;
use platter_snapshotter::Store;
use platter_types::VolumeRef;

use super::{get, key, local_name, put_change, ObjectError, Stored};

/// What apply did (or, with `--dry-run`, would do) with one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// `created`, `unchanged` or `configured` (kubectl's words).
    pub action: String,
    /// Fields given but not acted on (docs/declarative.md).
    #[serde(default)]
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub dry_run: bool,
    pub results: Vec<ApplyResult>,
}

/// Applies the documents of `text` (`file` names it in errors).
pub fn apply(
    store: &Store,
    file: &str,
    text: &str,
    dry_run: bool,
    now: Now,
) -> Result<Applied, ObjectError> {
    let docs = parse_documents(text).map_err(|e| ObjectError::Syntax {
        file: file.to_string(),
        detail: e.to_string(),
    })?;
    // Read, checked and written as one step against the reconciler's writes.
    super::writing(|| apply_parsed(store, file, docs, dry_run, now))
}

fn apply_parsed(
    store: &Store,
    file: &str,
    docs: Vec<Result<Document, platter_api::DocumentError>>,
    dry_run: bool,
    now: Now,
) -> Result<Applied, ObjectError> {
    let mut errors = Vec::new();
    let mut accepted: Vec<Document> = Vec::new();
    for d in docs {
        match d {
            Ok(doc) => accepted.push(doc),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if accepted.is_empty() && errors.is_empty() {
        return Err(ObjectError::Documents {
            file: file.to_string(),
            errors: vec!["no documents".into()],
        });
    }
    let batch = Batch::new(&accepted);
    let mut writes = Vec::new();
    let mut results = Vec::new();
    let mut seen = BTreeSet::new();
    for doc in &accepted {
        let o = &doc.object;
        let k = key(o.namespace(), o.name());
        let fail = |field: &str, msg: String| {
            format!(
                "document {} ({} {}): {}{msg}",
                doc.index,
                o.kind(),
                o.name(),
                if field.is_empty() {
                    String::new()
                } else {
                    format!("{field}: ")
                }
            )
        };
        if !seen.insert((o.kind(), k.clone())) {
            errors.push(fail("metadata.name", "given twice in this file".into()));
            continue;
        }
        let existing = match get(store, o.kind(), &k) {
            Ok(e) => e,
            Err(e) => {
                errors.push(fail("", e.to_string()));
                continue;
            }
        };
        let checked = match &existing {
            Some(old) => update(old, o),
            None => create_checks(store, o, &batch),
        };
        match checked {
            Err((field, msg)) => errors.push(fail(&field, msg)),
            Ok(change) => {
                let action = match (&existing, &change) {
                    (None, _) => "created",
                    (Some(_), None) => "unchanged",
                    (Some(_), Some(_)) => "configured",
                };
                let stored = match (existing, change) {
                    (None, _) => {
                        let mut s = Stored::new(&doc.api_version, o);
                        fill_server_fields(&mut s, now);
                        Some(s)
                    }
                    (Some(_), None) => None,
                    (Some(_), Some(s)) => Some(s),
                };
                if let Some(s) = stored {
                    writes.push(put_change(&s));
                }
                results.push(ApplyResult {
                    kind: o.kind(),
                    namespace: o.namespace().to_string(),
                    name: o.name().to_string(),
                    action: action.into(),
                    ignored: doc.ignored.clone(),
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(ObjectError::Documents {
            file: file.to_string(),
            errors,
        });
    }
    if !dry_run && !writes.is_empty() {
        store.change_records(&writes)?;
    }
    Ok(Applied { dry_run, results })
}

/// uid, creationTimestamp, generation: what a Kubernetes API server sets on create.
pub(super) fn fill_server_fields(s: &mut Stored, now: Now) {
    let uid = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(s.kind.as_str());
        h.update(s.namespace());
        h.update(s.name());
        h.update(now.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        h.update(nanos.to_le_bytes());
        let d = h.finalize();
        let x: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &x[0..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        )
    };
    if let Value::Object(meta) = &mut s.object["metadata"] {
        meta.insert("uid".into(), Value::String(uid));
        meta.insert(
            "creationTimestamp".into(),
            Value::String(platter_controller::rfc3339(now)),
        );
        meta.insert("generation".into(), Value::from(1));
        if !meta.contains_key("namespace") {
            meta.insert("namespace".into(), Value::String("default".into()));
        }
    }
}

/// The objects of the file, for references between them.
struct Batch {
    dvs: BTreeSet<String>,
    /// VirtualMachines and VirtualMachineInstances of the file, by `ns/name`.
    vms: BTreeSet<String>,
    vmis: BTreeSet<String>,
    /// DataSources of the file, by `ns/name`.
    data_sources: BTreeSet<String>,
    /// VirtualMachineSnapshots of the file, by `ns/name`.
    snapshots: BTreeSet<String>,
    /// Secrets and ConfigMaps of the file, by `ns/name`.
    secrets: BTreeSet<String>,
    config_maps: BTreeSet<String>,
}

impl Batch {
    fn new(docs: &[Document]) -> Batch {
        let mut dvs = BTreeSet::new();
        let (mut vms, mut vmis) = (BTreeSet::new(), BTreeSet::new());
        let mut snapshots = BTreeSet::new();
        let mut data_sources = BTreeSet::new();
        let (mut secrets, mut config_maps) = (BTreeSet::new(), BTreeSet::new());
        for d in docs {
            match &d.object {
                Object::VirtualMachineSnapshot(x) => {
                    snapshots.insert(key(d.object.namespace(), name_of(&x.metadata)));
                }
                Object::DataVolume(dv) => {
                    dvs.insert(key(d.object.namespace(), name_of(&dv.metadata)));
                }
                Object::VirtualMachine(vm) => {
                    vms.insert(key(d.object.namespace(), name_of(&vm.metadata)));
                    for t in &vm.spec.data_volume_templates {
                        dvs.insert(key(d.object.namespace(), name_of(&t.metadata)));
                    }
                }
                Object::VirtualMachineInstance(vmi) => {
                    vmis.insert(key(d.object.namespace(), name_of(&vmi.metadata)));
                }
                Object::DataSource(ds) => {
                    data_sources.insert(key(d.object.namespace(), name_of(&ds.metadata)));
                }
                Object::Secret(x) => {
                    secrets.insert(key(d.object.namespace(), name_of(&x.metadata)));
                }
                Object::ConfigMap(x) => {
                    config_maps.insert(key(d.object.namespace(), name_of(&x.metadata)));
                }
                _ => {}
            }
        }
        Batch {
            dvs,
            vms,
            vmis,
            data_sources,
            snapshots,
            secrets,
            config_maps,
        }
    }
}

fn name_of(m: &platter_api::ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or_default()
}

type Refusal = (String, String);

fn bump_generation(s: &mut Stored) {
    if let Some(g) = s.object["metadata"]["generation"].as_i64() {
        s.object["metadata"]["generation"] = Value::from(g + 1);
    }
}

/// A document for an object that exists: the same spec is a no-op; a DataVolume's spec
/// cannot change (as CDI refuses it); a VM's run strategy may change, nothing else yet.
fn update(old: &Stored, new: &Object) -> Result<Option<Stored>, Refusal> {
    if old.deleting() {
        return Err((
            String::new(),
            format!(
                "{} is being deleted: wait for it to go (platter wait {} {} --for delete)",
                old.describe(),
                old.kind.cli_name(),
                old.name()
            ),
        ));
    }
    let new_value = super::object_value(new);
    if !new.kind().reconciled() {
        return update_data(old, new_value);
    }
    let old_spec = &old.object["spec"];
    let new_spec = &new_value["spec"];
    if old_spec == new_spec {
        return Ok(None);
    }
    match new {
        // A DataSource is a pointer: moving it to a newer image is what it is for.
        Object::DataSource(_) => {
            let mut s = old.clone();
            s.object["spec"] = new_spec.clone();
            bump_generation(&mut s);
            Ok(Some(s))
        }
        Object::VirtualMachine(_) => {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Value::Object(m) = &mut v {
                    m.remove("running");
                    m.remove("runStrategy");
                }
                v
            };
            if strip(old_spec) != strip(new_spec) {
                return Err((
                    "spec.template".into(),
                    "changing a VirtualMachine's template or dataVolumeTemplates is not supported: \
                     only spec.runStrategy (or spec.running) may change; delete the VM and apply it again"
                        .into(),
                ));
            }
            let mut s = old.clone();
            s.object["spec"] = new_spec.clone();
            bump_generation(&mut s);
            // A new run strategy replaces a start or stop asked for under the old one.
            s.internal.requested = None;
            Ok(Some(s))
        }
        _ => Err((
            "spec".into(),
            format!(
                "Cannot update spec of {} {}: the spec is immutable once created (delete it and apply again)",
                new.kind(),
                new.name()
            ),
        )),
    }
}

/// A Secret or ConfigMap: its content (everything but metadata) may change, unless it was
/// made `immutable`; DataVolumes read it when their import starts.
fn update_data(old: &Stored, new_value: Value) -> Result<Option<Stored>, Refusal> {
    let content = |v: &Value| {
        let mut v = v.clone();
        if let Value::Object(m) = &mut v {
            m.remove("metadata");
        }
        v
    };
    let new_content = content(&new_value);
    if content(&old.object) == new_content {
        return Ok(None);
    }
    if old.object["immutable"] == Value::Bool(true) {
        return Err((
            "data".into(),
            format!(
                "field is immutable when `immutable` is set: delete {} {} and apply it again",
                old.kind.cli_name(),
                old.name()
            ),
        ));
    }
    let mut s = old.clone();
    if let (Value::Object(obj), Value::Object(fresh)) = (&mut s.object, new_content) {
        obj.retain(|k, _| k == "metadata");
        obj.extend(fresh);
    }
    Ok(Some(s))
}

/// A new object: what it names must exist (in the store or in this file), and the platter
/// names it will take must be free.
fn create_checks(store: &Store, o: &Object, batch: &Batch) -> Result<Option<Stored>, Refusal> {
    // Data only: no platter name is made of it, and it names nothing.
    if let Object::Secret(_) | Object::ConfigMap(_) = o {
        return Ok(None);
    }
    let ns = o.namespace();
    let local =
        local_name(ns, o.name()).map_err(|e| ("metadata.name".to_string(), e.to_string()))?;
    match o {
        Object::Secret(_) | Object::ConfigMap(_) => {}
        Object::DataVolume(dv) => {
            check_dv_new(store, dv, ns, "", batch)?;
        }
        // Its source may come later (a DataVolume still importing): it is Ready then.
        Object::DataSource(_) => {}
        Object::VirtualMachine(vm) => {
            check_vm_new(store, Kind::VirtualMachine, vm, ns, &local, batch)?;
        }
        // The source VM may come later: the snapshot waits for it (until its deadline).
        Object::VirtualMachineSnapshot(_) => {}
        Object::VirtualMachineRestore(r) => {
            let snap = &r.spec.virtual_machine_snapshot_name;
            let k = key(ns, snap);
            if !batch.snapshots.contains(&k) && !exists(store, Kind::VirtualMachineSnapshot, &k) {
                return Err((
                    "spec.virtualMachineSnapshotName".into(),
                    format!("VirtualMachineSnapshot {snap:?} does not exist in namespace {ns}"),
                ));
            }
            // A new VM of that name would be another's domain.
            let target = local_name(ns, &r.spec.target.name)
                .map_err(|e| ("spec.target.name".to_string(), e.to_string()))?;
            if crate::vm::records::get(store, &target)
                .ok()
                .flatten()
                .is_some()
                && !exists(store, Kind::VirtualMachine, &key(ns, &r.spec.target.name))
            {
                return Err((
                    "spec.target.name".into(),
                    format!("vm {target} exists already (made by platter vm create): restore into another name"),
                ));
            }
            if exists(
                store,
                Kind::VirtualMachineInstance,
                &key(ns, &r.spec.target.name),
            ) {
                return Err((
                    "spec.target.name".into(),
                    format!(
                        "a VirtualMachineInstance named {} exists already in namespace {ns}",
                        r.spec.target.name
                    ),
                ));
            }
        }
        Object::VirtualMachineInstance(vmi) => {
            let vm = platter_controller::vm::vm_of_vmi(vmi, None);
            check_vm_new(store, Kind::VirtualMachineInstance, &vm, ns, &local, batch).map_err(
                |(field, msg)| {
                    // The checks speak of a VM's template; a VMI's spec is that template.
                    let field = match field.strip_prefix("spec.template.spec.") {
                        Some(rest) => format!("spec.{rest}"),
                        None => field,
                    };
                    (field, msg)
                },
            )?;
        }
    }
    Ok(None)
}

/// Whether object `key` of `kind` is in the store (one that cannot be read counts as
/// absent here: the reconciler reports it).
fn exists(store: &Store, kind: Kind, key: &str) -> bool {
    get(store, kind, key).ok().flatten().is_some()
}

fn volume_exists(store: &Store, name: &platter_types::Name) -> bool {
    store.inspect(&VolumeRef::volume(name.clone())).is_ok()
}

/// A DataVolume (or a VM's template, at `at`) that is new: its volume name is free and its
/// clone source exists.
fn check_dv_new(
    store: &Store,
    dv_spec_owner: &DataVolume,
    ns: &str,
    at: &str,
    batch: &Batch,
) -> Result<(), Refusal> {
    let name = name_of(&dv_spec_owner.metadata);
    check_dv_parts(store, &dv_spec_owner.spec, ns, name, at, batch)
}

fn check_dv_parts(
    store: &Store,
    spec: &platter_api::datavolume::DataVolumeSpec,
    ns: &str,
    name: &str,
    at: &str,
    batch: &Batch,
) -> Result<(), Refusal> {
    let local = local_name(ns, name).map_err(|e| (format!("{at}metadata.name"), e.to_string()))?;
    if volume_exists(store, &local) {
        return Err((
            format!("{at}metadata.name"),
            format!("volume {local} exists already and was not made by this DataVolume: choose another name, or delete the volume"),
        ));
    }
    let source = spec.source.as_ref();
    if let Some(src) = source.and_then(|s| s.pvc.as_ref()) {
        let src_ns = src.namespace_or(ns);
        let vol = local_name(src_ns, &src.name)
            .map_err(|e| (format!("{at}spec.source.pvc"), e.to_string()))?;
        if !volume_exists(store, &vol) && !batch.dvs.contains(&key(src_ns, &src.name)) {
            let dv_exists = exists(store, Kind::DataVolume, &key(src_ns, &src.name));
            if !dv_exists {
                return Err((
                    format!("{at}spec.source.pvc"),
                    format!("the source claim {src_ns}/{} does not exist (no volume {vol}, no DataVolume of that name)", src.name),
                ));
            }
        }
    }
    if let Some(r) = &spec.source_ref {
        let k = key(r.namespace.as_deref().unwrap_or(ns), &r.name);
        if !batch.data_sources.contains(&k) && !exists(store, Kind::DataSource, &k) {
            return Err((
                format!("{at}spec.sourceRef"),
                format!("DataSource {k} does not exist (nor is it in this file)"),
            ));
        }
    }
    // Read when the import starts; they must exist now so that a typo shows at once.
    let refs = |at_src: &str, secret: &Option<String>, cm: &Option<String>| {
        let mut out = Vec::new();
        if let Some(n) = secret {
            out.push((format!("{at_src}.secretRef"), Kind::Secret, n.clone()));
        }
        if let Some(n) = cm {
            out.push((
                format!("{at_src}.certConfigMap"),
                Kind::ConfigMap,
                n.clone(),
            ));
        }
        out
    };
    let mut wanted = Vec::new();
    if let Some(h) = source.and_then(|s| s.http.as_ref()) {
        let at_src = format!("{at}spec.source.http");
        wanted.extend(refs(&at_src, &h.secret_ref, &h.cert_config_map));
        for (i, n) in h.secret_extra_headers.iter().enumerate() {
            wanted.push((
                format!("{at_src}.secretExtraHeaders[{i}]"),
                Kind::Secret,
                n.clone(),
            ));
        }
    }
    if let Some(r) = source.and_then(|s| s.registry.as_ref()) {
        let at_src = format!("{at}spec.source.registry");
        wanted.extend(refs(&at_src, &r.secret_ref, &r.cert_config_map));
    }
    for (field, kind, name) in wanted {
        known(store, batch, kind, ns, &name, &field)?;
    }
    Ok(())
}

/// A Secret or ConfigMap an object names must be in the store or in the file.
fn known(
    store: &Store,
    batch: &Batch,
    kind: Kind,
    ns: &str,
    name: &str,
    field: &str,
) -> Result<(), Refusal> {
    let k = key(ns, name);
    let in_file = match kind {
        Kind::Secret => batch.secrets.contains(&k),
        Kind::ConfigMap => batch.config_maps.contains(&k),
        _ => false,
    };
    if in_file || exists(store, kind, &k) {
        return Ok(());
    }
    Err((
        field.to_string(),
        format!("{kind} {k} does not exist (nor is it in this file)"),
    ))
}

fn check_vm_new(
    store: &Store,
    kind: Kind,
    vm: &VirtualMachine,
    ns: &str,
    local: &platter_types::Name,
    batch: &Batch,
) -> Result<(), Refusal> {
    if crate::vm::records::get(store, local)
        .ok()
        .flatten()
        .is_some()
    {
        return Err((
            "metadata.name".into(),
            format!("vm {local} exists already (made by platter vm create): choose another name"),
        ));
    }
    // A VM and a VMI of one name would be one libvirt domain.
    let name = name_of(&vm.metadata);
    let k = key(ns, name);
    let (other, in_file) = match kind {
        Kind::VirtualMachineInstance => (Kind::VirtualMachine, &batch.vms),
        _ => (Kind::VirtualMachineInstance, &batch.vmis),
    };
    if in_file.contains(&k) || exists(store, other, &k) {
        return Err((
            "metadata.name".into(),
            format!("a {other} named {name} exists already in namespace {ns}; a VirtualMachine and a VirtualMachineInstance cannot share a name here"),
        ));
    }
    for (i, t) in vm.spec.data_volume_templates.iter().enumerate() {
        let at = format!("spec.dataVolumeTemplates[{i}].");
        let name = name_of(&t.metadata);
        if !exists(store, Kind::DataVolume, &key(ns, name)) {
            check_dv_parts(store, &t.spec, ns, name, &at, batch)?;
        }
    }
    let spec = &vm.spec.template.spec;
    if let Some(k) = spec
        .domain
        .firmware
        .as_ref()
        .and_then(|f| f.kernel_boot.as_ref())
    {
        let at = "spec.template.spec.domain.firmware.kernelBoot.container";
        if let Some(c) = &k.container {
            if let Some(n) = &c.image_pull_secret {
                let field = format!("{at}.imagePullSecret");
                known(store, batch, Kind::Secret, ns, n, &field)?;
            }
            if c.kernel_path.as_deref().is_none_or(str::is_empty) {
                return Err((
                    format!("{at}.kernelPath"),
                    "an initrd alone cannot be booted: give the kernel's path too".into(),
                ));
            }
        }
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        let at = format!("spec.template.spec.volumes[{i}]");
        if let Some(n) = v
            .container_disk
            .as_ref()
            .and_then(|c| c.image_pull_secret.as_ref())
        {
            let field = format!("{at}.containerDisk.imagePullSecret");
            known(store, batch, Kind::Secret, ns, n, &field)?;
        }
        if let Some(d) = &v.data_volume {
            let k = key(ns, &d.name);
            let known = batch.dvs.contains(&k) || exists(store, Kind::DataVolume, &k);
            if !known {
                return Err((
                    format!("{at}.dataVolume.name"),
                    format!("DataVolume {k} does not exist (nor is it in this file or the VM's dataVolumeTemplates)"),
                ));
            }
        }
        if let Some(c) = &v.persistent_volume_claim {
            let k = key(ns, &c.claim_name);
            let vol = local_name(ns, &c.claim_name).map_err(|e| {
                (
                    format!("{at}.persistentVolumeClaim.claimName"),
                    e.to_string(),
                )
            })?;
            let known = volume_exists(store, &vol)
                || batch.dvs.contains(&k)
                || exists(store, Kind::DataVolume, &k);
            if !known {
                return Err((
                    format!("{at}.persistentVolumeClaim.claimName"),
                    format!(
                        "claim {k} does not exist (no volume {vol}, no DataVolume of that name)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses to delete a DataVolume whose volume a VM uses, naming the VM.
pub(crate) fn check_dv_unused(store: &Store, dv: &Stored) -> Result<(), ObjectError> {
    let local = local_name(dv.namespace(), dv.name())?;
    // A VM object that names it (a dataVolume or a claim), other than the owner that is
    // deleting it: KubeVirt's VMs keep their DataVolumes while they exist.
    let owner = dv.object["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .map(str::to_string);
    let mut users = super::list(store, Kind::VirtualMachine)?;
    users.extend(super::list(store, Kind::VirtualMachineInstance)?);
    for vm in users {
        if vm.deleting() && owner.as_deref() == Some(vm.name()) {
            continue;
        }
        let volumes = match vm.typed() {
            Ok(Object::VirtualMachine(v)) => v.spec.template.spec.volumes,
            Ok(Object::VirtualMachineInstance(v)) => v.spec.volumes,
            _ => continue,
        };
        let uses = volumes.iter().any(|vol| {
            vol.data_volume
                .as_ref()
                .is_some_and(|d| d.name == dv.name())
                || vol
                    .persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == dv.name())
        });
        if uses && vm.namespace() == dv.namespace() {
            return Err(ObjectError::InUse {
                what: dv.describe(),
                by: vm.describe(),
            });
        }
    }
    if let Err(e) = crate::vm::check_volume_unused(store, &VolumeRef::volume(local)) {
        let f = e.failure();
        if f.kind == crate::ErrorKind::InUse {
            return Err(ObjectError::Refused {
                what: dv.describe(),
                detail: f.message,
            });
        }
    }
    Ok(())
}
