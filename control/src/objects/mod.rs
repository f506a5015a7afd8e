//! Declarative objects (DataVolume, VirtualMachine, ...) as `platter serve` keeps them: in
//! the store's records table, one record per object under its kind and `namespace/name`,
//! changed in transactions with the volumes they make. `apply` checks a whole file and
//! writes all of its objects or none; `get` and `delete` work on one kind; the reconciler
//! ([`reconciler`]) moves each object towards its spec and writes its status and events.
//!
//! What a record holds ([`Stored`]): the apiVersion the user wrote, the kind, the object
//! (metadata, spec, status) as JSON, the object's events, and the reconciler's own
//! bookkeeping ([`Internal`]: failed attempts, an upload that is ready) so that a restart
//! of `serve` resumes every object where it was.

mod access;
mod apply;
mod error;
pub mod reconciler;
mod world;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use platter_api::{Kind, Object};
use platter_controller::{Event, Now};
use platter_snapshotter::Store;
use platter_types::Name;

use crate::api::{Event as ApiEvent, Response};
use crate::vm::VmHost;
use crate::{Context, ControlError};

pub use apply::{apply, Applied, ApplyResult};
pub use error::ObjectError;
pub use reconciler::{Reconciler, Runtime};

/// Most events kept per object (the oldest go first), as Kubernetes keeps only recent ones.
const MAX_EVENTS: usize = 50;

/// One object as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    pub api_version: String,
    pub kind: Kind,
    /// metadata, spec and status, as the typed object serializes them.
    pub object: Value,
    #[serde(default)]
    pub events: Vec<EventRecord>,
    #[serde(default)]
    pub internal: Internal,
}

/// An event as `describe` shows it: repeated events are counted, not repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub first_timestamp: String,
    pub last_timestamp: String,
    pub count: u32,
}

/// The reconciler's own bookkeeping for an object (never shown as status).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Internal {
    /// Failed attempts of the DataVolume's import, clone or upload.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_failure: Option<FailureRecord>,
    /// A DataVolume with an upload source is ready for `platter upload`.
    #[serde(default)]
    pub upload_ready: bool,
    /// A VirtualMachineSnapshot's content, written in the transaction that took the
    /// disks' snapshots: present exactly when they exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<SnapshotContent>,
    /// A VirtualMachine's start or stop asked for by `platter vm start/stop` and not yet
    /// carried out (KubeVirt keeps these in `status.stateChangeRequests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<platter_controller::vm::StateChange>,
    /// A VirtualMachineInstance's status in the VM shape its decisions read (its own
    /// status has the VMI shape: phase and conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_status: Option<Value>,
}

/// What a VirtualMachineSnapshot holds: the VM as it was, and one store snapshot per
/// disk (its DataVolumes and claims; throw-away disks are not kept, as in KubeVirt).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotContent {
    pub api_version: String,
    pub vm: Value,
    pub disks: Vec<ContentDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentDisk {
    /// The VM volume (`spec.template.spec.volumes[].name`).
    pub volume: String,
    /// The platter volume, and its snapshot's name (`VOLUME@SNAPSHOT`).
    pub store_volume: String,
    pub snapshot: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    pub message: String,
    pub fatal: bool,
    pub at: Now,
}

impl Stored {
    pub fn new(api_version: &str, object: &Object) -> Stored {
        Stored {
            api_version: api_version.to_string(),
            kind: object.kind(),
            object: object_value(object),
            events: Vec::new(),
            internal: Internal::default(),
        }
    }

    /// The typed object.
    pub fn typed(&self) -> Result<Object, ObjectError> {
        let damaged = |e: serde_json::Error| ObjectError::Damaged {
            object: self.describe(),
            detail: e.to_string(),
        };
        let v = self.object.clone();
        Ok(match self.kind {
            Kind::DataVolume => Object::DataVolume(serde_json::from_value(v).map_err(damaged)?),
            Kind::DataSource => Object::DataSource(serde_json::from_value(v).map_err(damaged)?),
            Kind::VirtualMachine => {
                Object::VirtualMachine(serde_json::from_value(v).map_err(damaged)?)
            }
            Kind::VirtualMachineInstance => {
                Object::VirtualMachineInstance(serde_json::from_value(v).map_err(damaged)?)
            }
            Kind::VirtualMachineSnapshot => {
                Object::VirtualMachineSnapshot(serde_json::from_value(v).map_err(damaged)?)
            }
            Kind::VirtualMachineRestore => {
                Object::VirtualMachineRestore(serde_json::from_value(v).map_err(damaged)?)
            }
            Kind::Secret => Object::Secret(serde_json::from_value(v).map_err(damaged)?),
            Kind::ConfigMap => Object::ConfigMap(serde_json::from_value(v).map_err(damaged)?),
        })
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
    }

    /// `DataVolume default/disk`, as errors and logs name it.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace(), self.name())
    }

    /// The object as `get -o yaml|json` shows it: apiVersion and kind first.
    pub fn document(&self) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        out.insert("kind".into(), Value::String(self.kind.to_string()));
        if let Value::Object(m) = &self.object {
            for (k, v) in m {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    }

    pub fn deleting(&self) -> bool {
        !self.object["metadata"]["deletionTimestamp"].is_null()
    }

    /// Adds events at `now`, counting a repeat of the last one instead of adding it.
    pub fn record_events(&mut self, events: &[Event], now: Now) {
        let ts = platter_controller::rfc3339(now);
        for e in events {
            let type_ = if e.warning { "Warning" } else { "Normal" };
            if let Some(last) = self.events.last_mut() {
                if last.type_ == type_ && last.reason == e.reason && last.message == e.message {
                    last.count = last.count.saturating_add(1);
                    last.last_timestamp = ts.clone();
                    continue;
                }
            }
            self.events.push(EventRecord {
                type_: type_.into(),
                reason: e.reason.clone(),
                message: e.message.clone(),
                first_timestamp: ts.clone(),
                last_timestamp: ts.clone(),
                count: 1,
            });
        }
        let excess = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..excess);
    }
}

/// The JSON of a typed object (its serializers cannot fail: string keys only).
pub fn object_value(o: &Object) -> Value {
    let v = match o {
        Object::DataVolume(x) => serde_json::to_value(x),
        Object::DataSource(x) => serde_json::to_value(x),
        Object::VirtualMachine(x) => serde_json::to_value(x),
        Object::VirtualMachineInstance(x) => serde_json::to_value(x),
        Object::VirtualMachineSnapshot(x) => serde_json::to_value(x),
        Object::VirtualMachineRestore(x) => serde_json::to_value(x),
        Object::Secret(x) => serde_json::to_value(x),
        Object::ConfigMap(x) => serde_json::to_value(x),
    };
    v.unwrap_or(Value::Null)
}

/// The record key of an object: `namespace/name`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The platter name (volume, VM record, libvirt domain) of object `name` in `namespace`:
/// the name itself in `default`, else `NAMESPACE_NAME` (`_` is in no Kubernetes name, so
/// two objects never share one).
pub fn local_name(namespace: &str, name: &str) -> Result<Name, ObjectError> {
    let text = if namespace == "default" {
        name.to_string()
    } else {
        format!("{namespace}_{name}")
    };
    Name::new(&text).map_err(|e| ObjectError::LocalName {
        object: format!("{namespace}/{name}"),
        detail: e.to_string(),
    })
}

/// Reads object (kind, namespace/name).
pub fn get(store: &Store, kind: Kind, key: &str) -> Result<Option<Stored>, ObjectError> {
    match store.get_record(kind.as_str(), key) {
        Ok(v) => parse(kind, key, v).map(Some),
        Err(platter_snapshotter::StoreError::NoSuchRecord { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every object of `kind`, by key.
pub fn list(store: &Store, kind: Kind) -> Result<Vec<Stored>, ObjectError> {
    store
        .list_records(kind.as_str())?
        .into_iter()
        .map(|(k, v)| parse(kind, &k, v))
        .collect()
}

fn parse(kind: Kind, key: &str, v: Value) -> Result<Stored, ObjectError> {
    serde_json::from_value(v).map_err(|e| ObjectError::Damaged {
        object: format!("{kind} {key}"),
        detail: e.to_string(),
    })
}

/// The record change that writes `s`.
pub fn put_change(s: &Stored) -> platter_snapshotter::RecordChange {
    platter_snapshotter::RecordChange::Put {
        kind: s.kind.as_str().to_string(),
        name: key(s.namespace(), s.name()),
        value: serde_json::to_value(s).unwrap_or(Value::Null),
    }
}

/// The record change that removes `s` (its finalizer done).
pub fn delete_change(s: &Stored) -> platter_snapshotter::RecordChange {
    platter_snapshotter::RecordChange::Delete {
        kind: s.kind.as_str().to_string(),
        name: key(s.namespace(), s.name()),
    }
}

/// Marks object (kind, key) for deletion: the reconciler tears down what it made and
/// then removes it. A DataVolume a VM's disks still use is refused, naming the VM.
/// Held across every read-check-write of object records in this process (apply, delete,
/// start/stop requests, the reconciler's status writes), so that none of them writes back
/// an object another changed after it read it: the reconciler then skips its write and
/// looks again in the next pass, as a Kubernetes controller does on a resourceVersion
/// conflict.
static WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn writing<T>(f: impl FnOnce() -> T) -> T {
    let _held = WRITES.lock().unwrap_or_else(|p| p.into_inner());
    f()
}

/// Writes `after` if the stored object is still `before` (else nothing: it changed
/// meanwhile, and the next pass decides again from what it is now).
pub(crate) fn put_if_unchanged(
    store: &Store,
    before: &Stored,
    after: &Stored,
) -> Result<bool, ObjectError> {
    writing(|| {
        let current = get(store, before.kind, &key(before.namespace(), before.name()))?;
        if current.as_ref() != Some(before) {
            return Ok(false);
        }
        store.change_records(&[put_change(after)])?;
        Ok(true)
    })
}

pub fn delete(store: &Store, kind: Kind, key: &str, now: Now) -> Result<Stored, ObjectError> {
    writing(|| delete_unlocked(store, kind, key, now))
}

fn delete_unlocked(store: &Store, kind: Kind, key: &str, now: Now) -> Result<Stored, ObjectError> {
    let mut s = get(store, kind, key)?.ok_or_else(|| ObjectError::NotFound {
        kind,
        key: key.to_string(),
    })?;
    if s.deleting() {
        return Ok(s);
    }
    if kind == Kind::DataVolume {
        apply::check_dv_unused(store, &s)?;
    }
    // Nothing was made from it and nothing reconciles it: it goes at once (a DataVolume
    // importing with it has already read it).
    if !kind.reconciled() {
        store.change_records(&[delete_change(&s)])?;
        return Ok(s);
    }
    if let Value::Object(meta) = &mut s.object["metadata"] {
        meta.insert(
            "deletionTimestamp".into(),
            Value::String(platter_controller::rfc3339(now)),
        );
    }
    store.change_records(&[put_change(&s)])?;
    Ok(s)
}

/// The host of `platter serve`, or the error that says to start it.
pub fn serving<'a>(host: Option<&'a VmHost>, store: &Store) -> Result<&'a VmHost, ObjectError> {
    host.ok_or_else(|| ObjectError::NotServing {
        dir: store.dir().to_path_buf(),
    })
}

/// `get`: object `name` of `kind` (in `namespace`, default `default`), or every object of
/// `kind` (in `namespace` if given, else in all).
pub fn query(
    store: &Store,
    kind: Kind,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<Vec<Stored>, ObjectError> {
    match name {
        Some(n) => {
            let k = key(namespace.unwrap_or("default"), n);
            let s = get(store, kind, &k)?.ok_or(ObjectError::NotFound { kind, key: k })?;
            Ok(vec![s])
        }
        None => Ok(list(store, kind)?
            .into_iter()
            .filter(|s| namespace.is_none_or(|ns| s.namespace() == ns))
            .collect()),
    }
}

/// `platter upload DV FILE|-`: imports the client's stream into the DataVolume's volume
/// once the DataVolume is UploadReady. A failed upload leaves the DataVolume ready for
/// another try, as CDI's upload proxy does.
pub fn upload(
    store: &Store,
    namespace: &str,
    name: &str,
    ctx: Context,
    events: &mut dyn FnMut(ApiEvent),
) -> Result<Response, ControlError> {
    let host = ctx.vm_host.clone();
    let host = serving(host.as_deref(), store)?;
    let k = key(namespace, name);
    let s = get(store, Kind::DataVolume, &k)?.ok_or(ObjectError::NotFound {
        kind: Kind::DataVolume,
        key: k.clone(),
    })?;
    let Object::DataVolume(dv) = s.typed()? else {
        return Err(ObjectError::NotFound {
            kind: Kind::DataVolume,
            key: k,
        }
        .into());
    };
    let upload_error = |detail: String| ObjectError::Upload {
        dv: k.clone(),
        detail,
    };
    if dv.spec.source.as_ref().is_none_or(|s| s.upload.is_none()) {
        return Err(upload_error("its source is not upload: nothing to upload into".into()).into());
    }
    let phase = dv.status.as_ref().and_then(|s| s.phase);
    if phase != Some(platter_api::datavolume::DataVolumePhase::UploadReady) {
        return Err(upload_error(format!(
            "not ready for an upload (phase {}); wait for UploadReady",
            phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "none yet".into())
        ))
        .into());
    }
    let id = reconciler::job_id(Kind::DataVolume, &k);
    let job = host
        .runtime()
        .begin(&id)
        .ok_or_else(|| upload_error("an upload into it is under way already".into()))?;
    let local = local_name(namespace, name)?;
    let params = crate::api::ImportParams {
        size: platter_controller::datavolume::requested_size(&dv),
        ..Default::default()
    };
    let r = crate::transfer::import(store, "-", &local, &params, ctx, &mut |e| {
        job.track(e.clone());
        events(e);
    });
    host.runtime().finish(&job, Ok(()));
    match r? {
        Response::Imported { volume, .. } => Ok(Response::Uploaded {
            name: name.to_string(),
            volume,
        }),
        other => Ok(other),
    }
}

/// Refuses `vm delete` of a VM that a VirtualMachine object made: the object would make
/// it again; `platter delete vm NAME` removes both.
/// The namespace and name of the object whose platter name is `local`.
fn object_of(local: &Name) -> (&str, &str) {
    local
        .as_str()
        .split_once('_')
        .unwrap_or(("default", local.as_str()))
}

/// The kind of the object (VirtualMachine or VirtualMachineInstance) that makes VM `vm`.
pub fn declared_by(store: &Store, vm: &Name) -> Result<Option<Kind>, ObjectError> {
    let (ns, name) = object_of(vm);
    for kind in [Kind::VirtualMachine, Kind::VirtualMachineInstance] {
        if get(store, kind, &key(ns, name))?.is_some() {
            return Ok(Some(kind));
        }
    }
    Ok(None)
}

/// Whether an object makes VM `vm`.
pub fn declares(store: &Store, vm: &Name) -> Result<bool, ObjectError> {
    Ok(declared_by(store, vm)?.is_some())
}

pub fn check_not_declared(store: &Store, vm: &Name) -> Result<(), ObjectError> {
    let (ns, name) = object_of(vm);
    if let Some(kind) = declared_by(store, vm)? {
        let short = kind.cli_name();
        return Err(ObjectError::Managed {
            vm: vm.to_string(),
            object: format!("{kind} {ns}/{name}"),
            command: match ns {
                "default" => format!("platter delete {short} {name}"),
                _ => format!("platter delete {short} {name} -n {ns}"),
            },
        });
    }
    Ok(())
}

/// `platter vm start/stop NAME` of a declarative VM (NAME is its platter name): what
/// `virtctl start/stop` does. `None` when no VirtualMachine object has that name (the
/// VM is one of `vm create`). Otherwise the object is changed (its run strategy, or a
/// kept request) for the reconciler to act on, and the reply says what was done.
pub fn request_state(
    store: &Store,
    vm: &Name,
    change: platter_controller::vm::StateChange,
) -> Result<Option<String>, ObjectError> {
    use platter_controller::vm::{state_request, RequestOutcome, StateChange};
    let (ns, name) = object_of(vm);
    let k = key(ns, name);
    let verb = match change {
        StateChange::Start => "start",
        StateChange::Stop => "stop",
    };
    writing(|| {
        if get(store, Kind::VirtualMachineInstance, &k)?.is_some() {
            return Err(ObjectError::Request {
                vm: k.clone(),
                verb,
                detail: format!(
                    "it is a VirtualMachineInstance, which runs once: delete it to stop it (platter delete vmi {name}{})",
                    if ns == "default" { String::new() } else { format!(" -n {ns}") }
                ),
            });
        }
        let Some(mut s) = get(store, Kind::VirtualMachine, &k)? else {
            return Ok(None);
        };
        let Object::VirtualMachine(typed) = s.typed()? else {
            return Ok(None);
        };
        if s.deleting() {
            return Err(ObjectError::Refused {
                what: format!("VirtualMachine {k}"),
                detail: "it is being deleted".into(),
            });
        }
        let strategy = typed
            .spec
            .strategy()
            .unwrap_or(platter_api::vm::RunStrategy::Halted);
        let running = reconciler::domain(&mut None, vm)? == platter_controller::vm::Domain::Running;
        let message = match state_request(strategy, change, running) {
            RequestOutcome::Refused(why) => {
                return Err(ObjectError::Request {
                    vm: k,
                    verb,
                    detail: why,
                })
            }
            RequestOutcome::SetStrategy(to) => {
                if let Value::Object(spec) = &mut s.object["spec"] {
                    spec.remove("running");
                    spec.insert(
                        "runStrategy".into(),
                        serde_json::to_value(to).unwrap_or(Value::Null),
                    );
                }
                format!("VirtualMachine {k}: runStrategy {strategy:?} → {to:?}")
            }
            RequestOutcome::Keep(c) => {
                s.internal.requested = Some(c);
                format!("VirtualMachine {k}: {verb} requested (runStrategy {strategy:?})")
            }
        };
        store.change_records(&[put_change(&s)])?;
        Ok(Some(message))
    })
}

/// Seconds since the Unix epoch.
pub fn now() -> Now {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
