//! The embedded controller of `platter serve`: one thread that, every second or when
//! woken (an apply, a delete, a job that ended), observes every object, asks the pure
//! decision functions of `platter-controller` what to do, does it, and writes back the
//! status and events. Slow work (imports, preparing a VM's disks, an ACPI shutdown) runs
//! as a job on its own thread; the loop only looks at how far it got.
//!
//! Nothing the loop knows lives only in memory, except which jobs run: a restarted
//! `serve` observes the same store and libvirt and decides the same, so an import that
//! was under way starts again (the importer left nothing behind) and a running VM is
//! adopted as it runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;

use platter_api::datavolume::{DataVolumePhase, DataVolumeSpec};
use platter_api::{DataVolume, Kind, Object, VirtualMachine};
use platter_controller::{datavolume as dvr, snapshot as sr, vm as vmr, Event as CEvent, Now};
use platter_importer::CancelFlag;
use platter_launcher::{LastExit, Launcher, LauncherError, VmSpec, VmState};
use platter_snapshotter::{RecordChange, Store};
use platter_types::{Name, VolumeRef};

use super::world::{self, Backing};
use super::{
    delete_change, get, key, list, local_name, now, put_change, ContentDisk, FailureRecord,
    ObjectError, SnapshotContent, Stored,
};
use crate::api::{Event, ImportParams};
use crate::vm::VmHost;
use crate::{Context, ControlError, ErrorKind};

/// How often every object is looked at when nothing wakes the loop.
const TICK: Duration = Duration::from_secs(1);

/// What the loop and the request handlers share: the jobs under way, and the bell.
#[derive(Debug, Default)]
pub struct Runtime {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    bell: (Mutex<bool>, Condvar),
}

/// Work under way for one object.
#[derive(Debug, Default)]
pub struct Job {
    pub done: AtomicU64,
    /// Bytes expected, `u64::MAX` when not known.
    pub total: AtomicU64,
    pub cancel: CancelFlag,
    finished: Mutex<Option<Result<(), FailureRecord>>>,
}

impl Job {
    fn new() -> Job {
        Job {
            total: AtomicU64::new(u64::MAX),
            ..Job::default()
        }
    }

    /// The progress events of an import, counted here.
    pub fn track(&self, e: Event) {
        if let Event::Progress { done, total } = e {
            self.done.store(done, Ordering::Relaxed);
            self.total
                .store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    fn progress(&self) -> (u64, Option<u64>) {
        let t = self.total.load(Ordering::Relaxed);
        (
            self.done.load(Ordering::Relaxed),
            (t != u64::MAX).then_some(t),
        )
    }
}

impl Runtime {
    /// Wakes the loop now.
    pub fn wake(&self) {
        let (m, c) = &self.bell;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        c.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let (m, c) = &self.bell;
        let mut rung = m.lock().unwrap_or_else(|p| p.into_inner());
        if !*rung {
            rung = c
                .wait_timeout(rung, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *rung = false;
    }

    fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Registers a job for `id` unless one runs; `None` if one does.
    pub fn begin(&self, id: &str) -> Option<Arc<Job>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.contains_key(id) {
            return None;
        }
        let j = Arc::new(Job::new());
        jobs.insert(id.to_string(), j.clone());
        Some(j)
    }

    /// Records how job `id` ended; the loop collects it on its next pass.
    pub fn finish(&self, job: &Job, result: Result<(), FailureRecord>) {
        *job.finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.wake();
    }

    /// The job of `id`: still running (`Some(None)`), or its result, removed (`Some(Some)`).
    fn poll(&self, id: &str) -> Option<Option<Result<(), FailureRecord>>> {
        let job = self.job(id)?;
        let done = job
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if done.is_some() {
            self.jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
        Some(done)
    }

    fn cancel(&self, id: &str) {
        if let Some(j) = self.job(id) {
            j.cancel.cancel();
        }
    }
}

/// The id of an object's job.
pub fn job_id(kind: Kind, key: &str) -> String {
    format!("{kind} {key}")
}

/// A failure as the decision functions see it: fatal when retrying cannot help.
pub fn failure_of(e: &ControlError, at: Now) -> FailureRecord {
    let f = e.failure();
    FailureRecord {
        message: f.message,
        fatal: matches!(
            f.kind,
            ErrorKind::Damaged | ErrorKind::Invalid | ErrorKind::Unsupported
        ),
        at,
    }
}

pub struct Reconciler {
    store: Store,
    host: Arc<VmHost>,
}

impl Reconciler {
    pub fn new(store: Store, host: Arc<VmHost>) -> Reconciler {
        Reconciler { store, host }
    }

    /// Runs passes until `stop` is set (then the jobs under way are cancelled).
    pub fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.pass() {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
            self.host.runtime().wait(TICK);
        }
        let jobs = self.host.runtime().jobs.lock().map(|j| j.clone());
        if let Ok(jobs) = jobs {
            for j in jobs.values() {
                j.cancel.cancel();
            }
        }
    }

    /// One look at every object.
    pub fn pass(&self) -> Result<(), ObjectError> {
        for s in list(&self.store, Kind::DataSource)? {
            let id = s.describe();
            if let Err(e) = self.data_source(s) {
                tracing::warn!(object = %id, error = %e, "reconciling");
            }
        }
        // DataVolumes first: a VM then sees the phase its DataVolumes have now (an import
        // that just ended is Succeeded in this pass, not the next one).
        for s in list(&self.store, Kind::DataVolume)? {
            let id = s.describe();
            if let Err(e) = self.dv(s) {
                tracing::warn!(object = %id, error = %e, "reconciling");
            }
        }
        let vms = list(&self.store, Kind::VirtualMachine)?;
        let vmis = list(&self.store, Kind::VirtualMachineInstance)?;
        let snapshots = list(&self.store, Kind::VirtualMachineSnapshot)?;
        // One look at the DataVolumes and one libvirt connection for all the VMs.
        let dvs = match vms.is_empty() && vmis.is_empty() && snapshots.is_empty() {
            true => Vec::new(),
            false => list(&self.store, Kind::DataVolume)?,
        };
        let mut libvirt = None;
        for s in vms.iter().chain(&vmis) {
            let id = s.describe();
            if let Err(e) = self.vm(s.clone(), &dvs, &mut libvirt) {
                tracing::warn!(object = %id, error = %e, "reconciling");
            }
        }
        for s in snapshots {
            let id = s.describe();
            if let Err(e) = self.vm_snapshot(s, &vms, &dvs, &mut libvirt) {
                tracing::warn!(object = %id, error = %e, "reconciling");
            }
        }
        for s in list(&self.store, Kind::VirtualMachineRestore)? {
            let id = s.describe();
            if let Err(e) = self.vm_restore(s, &vms, &mut libvirt) {
                tracing::warn!(object = %id, error = %e, "reconciling");
            }
        }
        Ok(())
    }

    /// A DataSource is Ready while what it names exists (a DataVolume's volume only once
    /// that DataVolume succeeded); it holds nothing, so a delete removes it at once.
    fn data_source(&self, mut s: Stored) -> Result<(), ObjectError> {
        let before = s.clone();
        if s.deleting() {
            self.store.change_records(&[delete_change(&s)])?;
            return Ok(());
        }
        let Object::DataSource(ds) = s.typed()? else {
            return Ok(());
        };
        let ns = s.namespace().to_string();
        let src = &ds.spec.source;
        let target = resolve_source(&self.store, src.pvc.as_ref(), src.snapshot.as_ref(), &ns);
        let dv_ok = src.pvc.as_ref().is_none_or(|p| {
            get(
                &self.store,
                Kind::DataVolume,
                &key(p.namespace_or(&ns), &p.name),
            )
            .ok()
            .flatten()
            .is_none_or(|d| d.object["status"]["phase"] == "Succeeded")
        });
        let ready = dv_ok && target.is_some_and(|t| self.store.inspect(&t).is_ok());
        let what = match (&src.pvc, &src.snapshot) {
            (Some(p), _) => format!("PersistentVolumeClaim {}", p.name),
            (None, Some(n)) => format!("VolumeSnapshot {}", n.name),
            (None, None) => String::new(),
        };
        let t = now();
        let mut conditions: Vec<platter_api::Condition> =
            serde_json::from_value(s.object["status"]["conditions"].clone()).unwrap_or_default();
        let (reason, message) = match ready {
            true => ("Ready", String::new()),
            false => ("NotFound", format!("{what} not found or not ready")),
        };
        platter_controller::conditions::set(
            &mut conditions,
            "Ready",
            ready,
            reason,
            &message,
            &platter_controller::rfc3339(t),
        );
        s.object["status"] = serde_json::json!({
            "conditions": conditions,
            "source": src,
        });
        self.save(&before, &s)
    }

    fn rt(&self) -> &Runtime {
        self.host.runtime()
    }

    /// Writes `s` back if anything in it changed other than the conditions' heartbeat
    /// times (which the decision functions refresh on every look): a thousand objects at
    /// rest cost no writes.
    fn save(&self, before: &Stored, s: &Stored) -> Result<(), ObjectError> {
        if without_heartbeats(before) != without_heartbeats(s) {
            super::put_if_unchanged(&self.store, before, s)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // DataVolumes

    fn dv(&self, mut s: Stored) -> Result<(), ObjectError> {
        let before = s.clone();
        let Object::DataVolume(dv) = s.typed()? else {
            return Ok(());
        };
        let k = key(s.namespace(), s.name());
        let id = job_id(Kind::DataVolume, &k);
        let local = local_name(s.namespace(), s.name())?;
        let t = now();
        if s.deleting() {
            return self.dv_delete(&s, &id, &local);
        }
        let mut running = None;
        match self.rt().poll(&id) {
            Some(None) => running = self.rt().job(&id).map(|j| j.progress()),
            Some(Some(Ok(()))) => {}
            Some(Some(Err(f))) => {
                s.internal.failures = s.internal.failures.saturating_add(1);
                s.internal.last_failure = Some(f);
            }
            None => {}
        }
        let volume = match self.store.inspect(&VolumeRef::volume(local.clone())) {
            Ok(v) => Some(dvr::Volume {
                size: v.size,
                awaiting_upload: false,
            }),
            Err(_) if s.internal.upload_ready => Some(dvr::Volume {
                size: 0,
                awaiting_upload: true,
            }),
            Err(_) => None,
        };
        let clone_source = match volume {
            Some(_) => None,
            None => clone_source(&self.store, &dv.spec, s.namespace())
                .and_then(|src| self.store.inspect(&src).ok())
                .map(|v| v.size),
        };
        let seen = dvr::Observed {
            volume,
            running: if volume.is_some_and(|v| !v.awaiting_upload) {
                None
            } else {
                running
            },
            failures: s.internal.failures,
            last_failure: s.internal.last_failure.as_ref().map(|f| dvr::Failure {
                message: f.message.clone(),
                fatal: f.fatal,
                at: f.at,
            }),
            clone_source,
            data_source: dv.spec.source_ref.as_ref().is_some_and(|r| {
                let ns = r.namespace.as_deref().unwrap_or(s.namespace());
                data_source(&self.store, &key(ns, &r.name)).is_some()
            }),
        };
        let d = dvr::reconcile(&dv, &seen, t);
        for a in &d.actions {
            match a {
                dvr::Action::Import { size } => self.start_import(&dv, &s, &id, &local, *size),
                dvr::Action::CreateBlank { size } => {
                    let r = self.store.create_volume(&local, *size).map(|_| ());
                    self.made(&mut s, r.map_err(ControlError::from), t);
                }
                dvr::Action::Clone { size } => {
                    let r = self.clone_into(&dv.spec, s.namespace(), &local, *size);
                    self.made(&mut s, r, t);
                }
                dvr::Action::PrepareUpload { .. } => s.internal.upload_ready = true,
            }
        }
        s.object["status"] = serde_json::to_value(&d.status).unwrap_or(Value::Null);
        s.record_events(&d.events, t);
        if let Some(after) = d.requeue_after {
            tracing::debug!(object = %s.describe(), after, "retry scheduled");
        }
        self.save(&before, &s)
    }

    /// A synchronous action's failure, counted like a job's.
    fn note(&self, s: &mut Stored, r: Result<(), ControlError>, t: Now) {
        if let Err(e) = r {
            s.internal.failures = s.internal.failures.saturating_add(1);
            s.internal.last_failure = Some(failure_of(&e, t));
        }
    }

    /// Notes a volume made within the pass; once it is there, the next pass (which makes
    /// the DataVolume Succeeded) starts at once rather than a tick later.
    fn made(&self, s: &mut Stored, r: Result<(), ControlError>, t: Now) {
        if r.is_ok() {
            self.rt().wake();
        }
        self.note(s, r, t);
    }

    fn clone_into(
        &self,
        spec: &DataVolumeSpec,
        ns: &str,
        local: &Name,
        size: Option<u64>,
    ) -> Result<(), ControlError> {
        let Some(src) = clone_source(&self.store, spec, ns) else {
            return Ok(());
        };
        self.store.clone_volume(&src, local)?;
        if let Some(size) = size {
            self.store.resize(local, size.div_ceil(4096) * 4096)?;
        }
        Ok(())
    }

    fn start_import(&self, dv: &DataVolume, s: &Stored, id: &str, local: &Name, size: Option<u64>) {
        let Some(src) = dv.spec.source.as_ref() else {
            return;
        };
        let (source, checksum) = if let Some(h) = &src.http {
            (h.url.clone(), h.checksum.clone())
        } else if let Some(r) = &src.registry {
            let url = r.url.clone().unwrap_or_default();
            let url = match url.strip_prefix("oci-archive://") {
                Some(path) => format!("oci-archive:{path}"),
                None => url,
            };
            (url, None)
        } else {
            return;
        };
        let Some(job) = self.rt().begin(id) else {
            return;
        };
        let platform = src
            .registry
            .as_ref()
            .and_then(|r| r.platform.as_ref())
            .and_then(|p| p.architecture.clone())
            .map(|a| format!("linux/{a}"));
        let mut params = ImportParams {
            checksum,
            size,
            ..ImportParams::default()
        };
        params.registry.platform = platform;
        let store = self.store.clone();
        let host = self.host.clone();
        let name = local.clone();
        let what = s.describe();
        let (ns, src) = (s.namespace().to_string(), src.clone());
        std::thread::spawn(move || {
            let ctx = Context {
                cancel: job.cancel.clone(),
                stdin: crate::Stdin::Absent,
                vm_host: Some(host.clone()),
            };
            tracing::info!(object = %what, %source, "import started");
            // The Secrets and ConfigMaps are read now, as an importer pod mounts them.
            let access = super::access::source_access(&store, &ns, &src, params.registry);
            let r = access.map_err(ControlError::from).and_then(|registry| {
                let params = ImportParams { registry, ..params };
                crate::transfer::import(&store, &source, &name, &params, ctx, &mut |e| job.track(e))
            });
            let r = r.map(|_| ()).map_err(|e| failure_of(&e, now()));
            host.runtime().finish(&job, r);
        });
    }

    fn dv_delete(&self, s: &Stored, id: &str, local: &Name) -> Result<(), ObjectError> {
        if self.rt().job(id).is_some() {
            self.rt().cancel(id);
            // Collected (and the job gone) on a later pass.
            let _ = self.rt().poll(id);
            return Ok(());
        }
        // Deleting a volume deletes its snapshots: one a VirtualMachineSnapshot keeps
        // holds the DataVolume until that snapshot is deleted.
        let keepers: Vec<String> = list(&self.store, Kind::VirtualMachineSnapshot)?
            .iter()
            .filter(|v| {
                v.internal
                    .content
                    .as_ref()
                    .is_some_and(|c| c.disks.iter().any(|d| d.store_volume == local.as_str()))
            })
            .map(|v| v.name().to_string())
            .collect();
        if !keepers.is_empty() {
            let mut after = s.clone();
            after.record_events(
                &[CEvent::warning(
                    "DeleteFailed",
                    format!(
                        "volume {local} has snapshots of VirtualMachineSnapshot {}: delete that first",
                        keepers.join(", ")
                    ),
                )],
                now(),
            );
            return self.save(s, &after);
        }
        let gone = delete_change(s);
        match self.store.delete_with(
            &VolumeRef::volume(local.clone()),
            std::slice::from_ref(&gone),
        ) {
            Ok(()) => Ok(()),
            Err(platter_snapshotter::StoreError::NoSuchVolume(_)) => {
                Ok(self.store.change_records(&[gone])?)
            }
            Err(e) => {
                let mut after = s.clone();
                after.record_events(
                    &[CEvent::warning(
                        "DeleteFailed",
                        format!("volume {local} cannot be deleted: {e}"),
                    )],
                    now(),
                );
                self.save(s, &after)
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // VirtualMachines

    fn vm(
        &self,
        mut s: Stored,
        dvs: &[Stored],
        libvirt: &mut Option<Launcher>,
    ) -> Result<(), ObjectError> {
        let before = s.clone();
        // A VirtualMachineInstance is reconciled as the VM it runs like (once).
        let (vm, is_vmi) = match s.typed()? {
            Object::VirtualMachine(vm) => (vm, false),
            Object::VirtualMachineInstance(vmi) => {
                let kept = s
                    .internal
                    .vm_status
                    .clone()
                    .and_then(|v| serde_json::from_value(v).ok());
                (vmr::vm_of_vmi(&vmi, kept), true)
            }
            _ => return Ok(()),
        };
        let ns = s.namespace().to_string();
        let k = key(&ns, s.name());
        let id = job_id(s.kind, &k);
        let local = local_name(&ns, s.name())?;
        let t = now();
        let mut busy = false;
        match self.rt().poll(&id) {
            Some(None) => busy = true,
            Some(Some(Err(f))) => {
                s.record_events(&[CEvent::warning("SyncFailed", f.message.clone())], t);
                s.internal.failures = s.internal.failures.saturating_add(1);
                s.internal.last_failure = Some(f);
            }
            Some(Some(Ok(()))) | None => {}
        }
        let backings = world::backings(&vm, &ns)?;
        let dv_phase = |name: &str| -> Option<Option<DataVolumePhase>> {
            dvs.iter()
                .find(|d| d.namespace() == ns && d.name() == name)
                .map(|d| {
                    serde_json::from_value::<DataVolumePhase>(d.object["status"]["phase"].clone())
                        .ok()
                })
        };
        let exists = |v: &Name| self.store.inspect(&VolumeRef::volume(v.clone())).is_ok();
        let volumes = backings
            .iter()
            .map(|(n, b)| {
                let seen = match b {
                    Backing::DataVolume { dv, .. } => vmr::Backing::DataVolume(
                        dv_phase(dv).map(|p| p.unwrap_or(DataVolumePhase::Pending)),
                    ),
                    Backing::Claim { claim, volume } => match dv_phase(claim) {
                        Some(p) => {
                            vmr::Backing::DataVolume(Some(p.unwrap_or(DataVolumePhase::Pending)))
                        }
                        None => vmr::Backing::Claim(exists(volume)),
                    },
                    Backing::ContainerDisk { volume, .. } | Backing::EmptyDisk { volume, .. } => {
                        vmr::Backing::Own(exists(volume))
                    }
                    Backing::CloudInit { .. } => vmr::Backing::Own(true),
                    Backing::KernelBoot(k) => vmr::Backing::Own(
                        crate::vm::BootFiles::of(&self.store, &local, k.initrd_path.is_some())
                            .is_ok_and(|f| f.present()),
                    ),
                };
                (n.clone(), seen)
            })
            .collect();
        let domain = domain(libvirt, &local)?;
        let owned_left = dvs
            .iter()
            .filter(|d| {
                d.namespace() == ns
                    && d.object["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| {
                            o.iter()
                                .any(|r| r["kind"] == "VirtualMachine" && r["name"] == s.name())
                        })
            })
            .count();
        let seen = vmr::Observed {
            volumes,
            domain,
            deleting: s.deleting(),
            owned_left,
            requested: s.internal.requested,
        };
        let d = vmr::reconcile(&vm, &seen, t);
        if vmr::request_done(seen.requested, seen.domain) {
            s.internal.requested = None;
        }
        if !busy {
            for a in &d.actions {
                if !self.vm_act(a, &vm, &mut s, &local, &backings, &id, t)? {
                    break;
                }
            }
        }
        if matches!(d.actions.last(), Some(vmr::Action::RemoveFinalizer)) && !busy {
            return Ok(());
        }
        if is_vmi {
            s.internal.vm_status = serde_json::to_value(&d.status).ok();
            s.object["status"] = vmr::vmi_status(&d.status, seen.domain);
        } else {
            s.object["status"] = serde_json::to_value(&d.status).unwrap_or(Value::Null);
        }
        s.record_events(&d.events, t);
        self.save(&before, &s)
    }

    /// Does one action; `false` when the rest must wait (a job was started).
    #[allow(clippy::too_many_arguments)]
    fn vm_act(
        &self,
        a: &vmr::Action,
        vm: &VirtualMachine,
        s: &mut Stored,
        local: &Name,
        backings: &[(String, Backing)],
        id: &str,
        t: Now,
    ) -> Result<bool, ObjectError> {
        match a {
            vmr::Action::CreateDataVolume(i) => {
                if let Some(tpl) = vm.spec.data_volume_templates.get(*i) {
                    self.create_owned_dv(s, tpl)?;
                    // Its import or clone starts in the next pass, now rather than a tick on.
                    self.rt().wake();
                }
                Ok(true)
            }
            vmr::Action::PrepareDisks => {
                let wait = s
                    .internal
                    .last_failure
                    .as_ref()
                    .map(|f| (f.at + dvr::backoff(s.internal.failures)).saturating_sub(t))
                    .unwrap_or(0);
                if wait > 0 {
                    return Ok(false);
                }
                let Some(job) = self.rt().begin(id) else {
                    return Ok(false);
                };
                let store = self.store.clone();
                let host = self.host.clone();
                let backings = backings.to_vec();
                let vm = local.clone();
                let ns = s.namespace().to_string();
                std::thread::spawn(move || {
                    let r = prepare_disks(&store, &host, (&ns, &vm), &backings, &job.cancel)
                        .map_err(|e| failure_of(&e, now()));
                    host.runtime().finish(&job, r);
                });
                Ok(false)
            }
            vmr::Action::Start => {
                let r = self.start(vm, local, backings);
                if let Err(e) = r {
                    let f = failure_of(&e, t);
                    s.record_events(&[CEvent::warning("FailedCreate", f.message.clone())], t);
                    s.internal.failures = s.internal.failures.saturating_add(1);
                    s.internal.last_failure = Some(f);
                } else {
                    s.internal.last_failure = None;
                    s.internal.failures = 0;
                }
                Ok(true)
            }
            vmr::Action::Stop => {
                let Some(job) = self.rt().begin(id) else {
                    return Ok(false);
                };
                let host = self.host.clone();
                let store = self.store.clone();
                let name = local.clone();
                let grace = world::grace(vm);
                std::thread::spawn(move || {
                    let r = crate::vm::stop(&store, &name, grace, None)
                        .map(|_| ())
                        .map_err(|e| failure_of(&e, now()));
                    host.runtime().finish(&job, r);
                });
                Ok(false)
            }
            vmr::Action::Teardown => {
                self.teardown(s, local)?;
                Ok(true)
            }
            vmr::Action::RemoveFinalizer => {
                self.store.change_records(&[delete_change(s)])?;
                Ok(true)
            }
        }
    }

    fn start(
        &self,
        vm: &VirtualMachine,
        local: &Name,
        backings: &[(String, Backing)],
    ) -> Result<(), ControlError> {
        if crate::vm::records::get(&self.store, local)?.is_none() {
            let mut spec = VmSpec::new(local.clone(), world::disks(vm, backings));
            spec.memory_bytes = world::memory(vm);
            spec.cpus = world::cpus(vm);
            let kernel = backings.iter().find_map(|(_, b)| match b {
                Backing::KernelBoot(k) => Some(k),
                _ => None,
            });
            if let Some(k) = kernel {
                let files = crate::vm::BootFiles::of(&self.store, local, k.initrd_path.is_some())
                    .map_err(ControlError::from)?;
                spec.boot = platter_launcher::Boot::Kernel {
                    kernel: files.kernel,
                    initrd: files.initrd,
                    cmdline: k.kernel_args.clone(),
                };
            }
            let seed = backings.iter().find_map(|(_, b)| match b {
                Backing::CloudInit {
                    user_data,
                    network_data,
                } => Some(crate::vm::Seed::Declared {
                    user_data: user_data.clone(),
                    network_config: network_data.clone(),
                }),
                _ => None,
            });
            crate::vm::define_prepared(&self.store, &self.host, spec, seed)?;
        }
        crate::vm::start(&self.store, Some(&self.host), local, None).map(|_| ())
    }

    /// The domain, its record and throw-away disks go; owned DataVolumes are marked for
    /// deletion (the loop deletes them next).
    fn teardown(&self, s: &Stored, local: &Name) -> Result<(), ObjectError> {
        if crate::vm::records::get(&self.store, local)
            .ok()
            .flatten()
            .is_some()
        {
            if let Err(e) = crate::vm::delete(&self.store, Some(&self.host), local, None) {
                let mut after = s.clone();
                after.record_events(&[CEvent::warning("DeleteFailed", e.to_string())], now());
                return self.save(s, &after);
            }
        } else {
            if let Ok(l) = Launcher::new(None) {
                let _ = l.delete(local.as_str());
            }
            // Boot files taken for a VM that was never defined.
            crate::vm::remove_boot_files(&self.store, local);
        }
        for dv in list(&self.store, Kind::DataVolume)? {
            let owned = dv.namespace() == s.namespace()
                && dv.object["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| {
                        o.iter()
                            .any(|r| r["kind"] == "VirtualMachine" && r["name"] == s.name())
                    });
            if owned && !dv.deleting() {
                super::delete(
                    &self.store,
                    Kind::DataVolume,
                    &key(dv.namespace(), dv.name()),
                    now(),
                )?;
            }
        }
        Ok(())
    }

    fn create_owned_dv(
        &self,
        vm: &Stored,
        tpl: &platter_api::vm::DataVolumeTemplate,
    ) -> Result<(), ObjectError> {
        let name = tpl.metadata.name.clone().unwrap_or_default();
        if get(&self.store, Kind::DataVolume, &key(vm.namespace(), &name))?.is_some() {
            return Ok(());
        }
        let mut meta = tpl.metadata.clone();
        meta.namespace = Some(vm.namespace().to_string());
        meta.owner_references = vec![platter_api::meta::OwnerReference {
            api_version: vm.api_version.clone(),
            kind: "VirtualMachine".into(),
            name: vm.name().to_string(),
            uid: vm.object["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }];
        let dv = DataVolume {
            metadata: meta,
            spec: tpl.spec.clone(),
            status: None,
        };
        let api_version = if vm.api_version.starts_with(platter_api::meta::PLATTER_GROUP) {
            platter_api::meta::PLATTER_VERSION
        } else {
            "cdi.kubevirt.io/v1beta1"
        };
        let mut stored = Stored::new(api_version, &Object::DataVolume(dv));
        super::apply::fill_server_fields(&mut stored, now());
        let change = put_change(&stored);
        let RecordChange::Put { kind, name, value } = change else {
            return Ok(());
        };
        match self
            .store
            .change_records(&[RecordChange::Create { kind, name, value }])
        {
            Ok(()) | Err(platter_snapshotter::StoreError::Exists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // -----------------------------------------------------------------------------------
    // VirtualMachineSnapshots and VirtualMachineRestores

    /// The disks a snapshot of `vm` keeps: its DataVolumes and claims, as (VM volume,
    /// platter volume, its size when it exists and its DataVolume, if any, succeeded).
    fn persistent_disks(
        &self,
        vm: &VirtualMachine,
        ns: &str,
        dvs: &[Stored],
    ) -> Result<Vec<(String, Name, Option<u64>)>, ObjectError> {
        let mut out = Vec::new();
        for (vol, b) in world::backings(vm, ns)? {
            let (dv, volume) = match &b {
                Backing::DataVolume { dv, volume } | Backing::Claim { claim: dv, volume } => {
                    (dv.clone(), volume.clone())
                }
                _ => continue,
            };
            let dv_ok = dvs
                .iter()
                .find(|d| d.namespace() == ns && d.name() == dv)
                .is_none_or(|d| d.object["status"]["phase"] == "Succeeded");
            let size = match dv_ok {
                true => self
                    .store
                    .inspect(&VolumeRef::volume(volume.clone()))
                    .ok()
                    .map(|i| i.size),
                false => None,
            };
            out.push((vol, volume, size));
        }
        Ok(out)
    }

    fn vm_snapshot(
        &self,
        mut s: Stored,
        vms: &[Stored],
        dvs: &[Stored],
        libvirt: &mut Option<Launcher>,
    ) -> Result<(), ObjectError> {
        let before = s.clone();
        let Object::VirtualMachineSnapshot(snap) = s.typed()? else {
            return Ok(());
        };
        let ns = s.namespace().to_string();
        let t = now();
        let source_vm = vms
            .iter()
            .find(|v| v.namespace() == ns && v.name() == snap.spec.source.name && !v.deleting());
        let mut disks = Vec::new();
        let source = match source_vm {
            None => None,
            Some(v) => {
                let Object::VirtualMachine(vm) = v.typed()? else {
                    return Ok(());
                };
                disks = self.persistent_disks(&vm, &ns, dvs)?;
                let local = local_name(&ns, v.name())?;
                Some(sr::Source {
                    uid: v.object["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    running: domain(libvirt, &local)? == vmr::Domain::Running,
                    // A VM with only containerDisks and emptyDisks has nothing to keep but
                    // itself, as in KubeVirt, and is snapshotted at once.
                    volumes_ready: disks.iter().all(|d| d.2.is_some()),
                })
            }
        };
        let mut seen = sr::SnapshotObserved {
            source,
            taken: s.internal.content.is_some(),
            deleting: s.deleting(),
        };
        let d = sr::reconcile_snapshot(&snap, &seen, t);
        let k = key(&ns, s.name());
        for a in &d.actions {
            match a {
                sr::SnapshotAction::Take => {
                    let (Some(v), Some(uid)) = (source_vm, s.object["metadata"]["uid"].as_str())
                    else {
                        continue;
                    };
                    let mut content = SnapshotContent {
                        api_version: v.api_version.clone(),
                        vm: v.object.clone(),
                        disks: Vec::new(),
                    };
                    let mut pairs = Vec::new();
                    for (vol, volume, size) in &disks {
                        let snap_name =
                            Name::new(&sr::disk_snapshot_name(uid, vol)).map_err(|e| {
                                ObjectError::LocalName {
                                    object: k.clone(),
                                    detail: e.to_string(),
                                }
                            })?;
                        // Known here: Take is decided only when every size is.
                        let size = size.unwrap_or(0);
                        content.disks.push(ContentDisk {
                            volume: vol.clone(),
                            store_volume: volume.to_string(),
                            snapshot: snap_name.to_string(),
                            size,
                        });
                        pairs.push((volume.clone(), snap_name));
                    }
                    // The status after taking, written with the snapshots themselves.
                    // From this pass's status, which says how it was taken (online).
                    seen.taken = true;
                    let mut taking = snap.clone();
                    taking.status = Some(d.status.clone());
                    let done = sr::reconcile_snapshot(&taking, &seen, t);
                    let mut after = s.clone();
                    after.internal.content = Some(content);
                    after.object["status"] =
                        serde_json::to_value(&done.status).unwrap_or(Value::Null);
                    after.record_events(&d.events, t);
                    after.record_events(&done.events, t);
                    match self.store.snapshot_many(&pairs, &[put_change(&after)]) {
                        Ok(_) => return Ok(()),
                        Err(e) => s.record_events(
                            &[CEvent::warning(
                                "SnapshotFailed",
                                format!(
                                    "snapshotting the disks of VirtualMachine {}: {e}",
                                    snap.spec.source.name
                                ),
                            )],
                            t,
                        ),
                    }
                }
                sr::SnapshotAction::DeleteContent => return self.delete_content(&s),
                sr::SnapshotAction::RemoveFinalizer => {
                    self.store.change_records(&[delete_change(&s)])?;
                    return Ok(());
                }
            }
        }
        s.object["status"] = serde_json::to_value(&d.status).unwrap_or(Value::Null);
        s.record_events(&d.events, t);
        self.save(&before, &s)
    }

    /// Deletes a snapshot's disk snapshots one at a time, each with the record that no
    /// longer lists it; one that clones still depend on (a restored VM) waits.
    fn delete_content(&self, s: &Stored) -> Result<(), ObjectError> {
        let mut after = s.clone();
        while let Some(disk) = after.internal.content.as_mut().and_then(|c| c.disks.pop()) {
            let r = VolumeRef::parse(&format!("{}@{}", disk.store_volume, disk.snapshot)).map_err(
                |e| ObjectError::LocalName {
                    object: s.describe(),
                    detail: e.to_string(),
                },
            )?;
            let rec = put_change(&after);
            match self.store.delete_with(&r, std::slice::from_ref(&rec)) {
                Ok(()) => {}
                Err(
                    platter_snapshotter::StoreError::NoSuchVolume(_)
                    | platter_snapshotter::StoreError::NoSuchSnapshot(_),
                ) => self.store.change_records(&[rec])?,
                Err(e) => {
                    if let Some(c) = after.internal.content.as_mut() {
                        c.disks.push(disk);
                    }
                    after.record_events(
                        &[CEvent::warning(
                            "DeleteFailed",
                            format!("snapshot {r} cannot be deleted yet: {e}"),
                        )],
                        now(),
                    );
                    return self.save(s, &after);
                }
            }
        }
        after.internal.content = None;
        self.store.change_records(&[put_change(&after)])?;
        Ok(())
    }

    fn vm_restore(
        &self,
        mut s: Stored,
        vms: &[Stored],
        libvirt: &mut Option<Launcher>,
    ) -> Result<(), ObjectError> {
        let before = s.clone();
        let Object::VirtualMachineRestore(r) = s.typed()? else {
            return Ok(());
        };
        let ns = s.namespace().to_string();
        let t = now();
        if s.deleting() {
            // What a restore made stays: deleting it only drops the record.
            self.store.change_records(&[delete_change(&s)])?;
            return Ok(());
        }
        let snap = get(
            &self.store,
            Kind::VirtualMachineSnapshot,
            &key(&ns, &r.spec.virtual_machine_snapshot_name),
        )?;
        let content = snap.as_ref().and_then(|x| x.internal.content.clone());
        let target_name = &r.spec.target.name;
        let source_name = snap.as_ref().and_then(|x| {
            x.object["spec"]["source"]["name"]
                .as_str()
                .map(str::to_string)
        });
        let target_local = local_name(&ns, target_name)?;
        let target = match vms
            .iter()
            .find(|v| v.namespace() == ns && v.name() == target_name)
        {
            // The name is taken by a VMI or a VM of `vm create`: not ours to make.
            None if get(
                &self.store,
                Kind::VirtualMachineInstance,
                &key(&ns, target_name),
            )?
            .is_some()
                || crate::vm::records::get(&self.store, &target_local)
                    .ok()
                    .flatten()
                    .is_some() =>
            {
                sr::Target::Other
            }
            None => sr::Target::Absent,
            Some(_) if source_name.as_deref() != Some(target_name.as_str()) => sr::Target::Other,
            Some(v) => sr::Target::Source {
                // One being deleted is not restored into either.
                running: v.deleting()
                    || domain(libvirt, &local_name(&ns, v.name())?)? == vmr::Domain::Running,
            },
        };
        let seen = sr::RestoreObserved {
            snapshot: snap.as_ref().map(|x| {
                content.is_some() && x.object["status"]["readyToUse"] == Value::Bool(true)
            }),
            target,
        };
        let d = sr::reconcile_restore(&r, &seen, t);
        let mut after = s.clone();
        after.object["status"] = serde_json::to_value(&d.status).unwrap_or(Value::Null);
        after.record_events(&d.events, t);
        let (Some(action), Some(content)) = (d.actions.first(), content) else {
            return self.save(&before, &after);
        };
        let result =
            match action {
                sr::RestoreAction::RollBack => {
                    let mut pairs = Vec::new();
                    for disk in &content.disks {
                        let (Ok(v), Ok(sn)) =
                            (Name::new(&disk.store_volume), Name::new(&disk.snapshot))
                        else {
                            continue;
                        };
                        pairs.push((v, sn));
                    }
                    self.store
                        .rollback_many(&pairs, &[put_change(&after)])
                        .map(|_| ())
                }
                sr::RestoreAction::CreateVm => {
                    let saved: VirtualMachine = serde_json::from_value(content.vm.clone())
                        .map_err(|e| ObjectError::Damaged {
                            object: format!("{} (its snapshot's VM)", s.describe()),
                            detail: e.to_string(),
                        })?;
                    let disks: Vec<sr::SnapshotDisk> = content
                        .disks
                        .iter()
                        .map(|d| sr::SnapshotDisk {
                            volume: d.volume.clone(),
                            snapshot: d.snapshot.clone(),
                            size: d.size,
                        })
                        .collect();
                    let uid = s.object["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let vm = sr::restored_vm(&saved, target_name, &ns, &uid, &disks);
                    let mut new = Stored::new(&content.api_version, &Object::VirtualMachine(vm));
                    super::apply::fill_server_fields(&mut new, t);
                    let RecordChange::Put { kind, name, value } = put_change(&new) else {
                        return Ok(());
                    };
                    self.store.change_records(&[
                        RecordChange::Create { kind, name, value },
                        put_change(&after),
                    ])
                }
            };
        if let Err(e) = result {
            s.record_events(
                &[CEvent::warning(
                    "RestoreFailed",
                    format!("restoring {target_name}: {e}"),
                )],
                t,
            );
            return self.save(&before, &s);
        }
        self.host.runtime().wake();
        Ok(())
    }
}

fn without_heartbeats(s: &Stored) -> Stored {
    let mut s = s.clone();
    if let Some(cs) = s.object["status"]["conditions"].as_array_mut() {
        for c in cs {
            if let Value::Object(m) = c {
                m.remove("lastHeartbeatTime");
            }
        }
    }
    s
}

/// What libvirt says of domain `local`, through one connection per pass.
pub(crate) fn domain(
    libvirt: &mut Option<Launcher>,
    local: &Name,
) -> Result<vmr::Domain, ObjectError> {
    if libvirt.is_none() {
        *libvirt = Some(Launcher::new(None).map_err(|e| ObjectError::Unavailable {
            what: "libvirt".into(),
            detail: e.to_string(),
        })?);
    }
    let Some(l) = libvirt.as_ref() else {
        return Ok(vmr::Domain::Absent);
    };
    Ok(match l.state_and_exit(local.as_str()) {
        Err(LauncherError::NoSuchVm { .. }) => vmr::Domain::Absent,
        Err(e) => {
            return Err(ObjectError::Unavailable {
                what: format!("domain {local}"),
                detail: e.to_string(),
            })
        }
        Ok((VmState::ShutOff | VmState::Crashed, exit)) => vmr::Domain::Stopped {
            exit: match exit {
                Some(LastExit::Shutdown) | Some(LastExit::Destroyed) => Some(vmr::Exit::Clean),
                Some(LastExit::Crashed) => Some(vmr::Exit::Failed),
                _ => None,
            },
        },
        Ok(_) => vmr::Domain::Running,
    })
}

/// What a pvc or snapshot source clones: the volume of that claim, or the one store
/// snapshot of that name among the namespace's volumes (`platter volume snapshot`, or a
/// VirtualMachineSnapshot's `vmsnapshot-…`); `None` while there is none (or several).
fn clone_source(store: &Store, spec: &DataVolumeSpec, ns: &str) -> Option<VolumeRef> {
    match (&spec.source, &spec.source_ref) {
        (Some(s), _) => resolve_source(store, s.pvc.as_ref(), s.snapshot.as_ref(), ns),
        (None, Some(r)) => {
            let ds_ns = r.namespace.as_deref().unwrap_or(ns);
            let ds = data_source(store, &key(ds_ns, &r.name))?;
            let s = &ds.spec.source;
            resolve_source(store, s.pvc.as_ref(), s.snapshot.as_ref(), ds_ns)
        }
        (None, None) => None,
    }
}

/// The DataSource `key` (`ns/name`), when it exists and is sound.
fn data_source(store: &Store, key: &str) -> Option<platter_api::DataSource> {
    match get(store, Kind::DataSource, key).ok()??.typed().ok()? {
        Object::DataSource(ds) => Some(ds),
        _ => None,
    }
}

/// The volume a pvc source names, or the one store snapshot a snapshot source names
/// (namespaces default to `ns`).
fn resolve_source(
    store: &Store,
    pvc: Option<&platter_api::datavolume::NamespacedName>,
    snapshot: Option<&platter_api::datavolume::NamespacedName>,
    ns: &str,
) -> Option<VolumeRef> {
    if let Some(src) = pvc {
        return local_name(src.namespace_or(ns), &src.name)
            .ok()
            .map(VolumeRef::volume);
    }
    let src = snapshot?;
    let src_ns = src.namespace_or(ns);
    let mine = |v: &str| match src_ns {
        "default" => !v.contains('_'),
        other => v.strip_prefix(other).is_some_and(|r| r.starts_with('_')),
    };
    let mut found = store
        .list()
        .ok()?
        .into_iter()
        .filter(|i| i.kind == platter_snapshotter::Kind::Volume && mine(&i.name))
        .flat_map(|i| i.snapshots)
        .filter_map(|r| VolumeRef::parse(&r).ok())
        .filter(|r| r.snapshot.as_ref().is_some_and(|s| s.as_str() == src.name));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Makes the VM's own disks that are missing (containerDisk clones, the image cached
/// once; empty disks) and takes its kernel boot files out of their image. Images are
/// pulled with their `imagePullSecret` (read now, from the VM's namespace `ns`).
fn prepare_disks(
    store: &Store,
    host: &VmHost,
    (ns, vm): (&str, &Name),
    backings: &[(String, Backing)],
    cancel: &CancelFlag,
) -> Result<(), ControlError> {
    let pull = |secret: &Option<String>, at: &str| match secret {
        Some(name) => super::access::pull_access(store, ns, name, at),
        None => Ok(crate::api::RegistryParams::default()),
    };
    for (entry, b) in backings {
        if let Backing::KernelBoot(k) = b {
            let registry = pull(&k.pull_secret, "kernelBoot.container.imagePullSecret")?;
            crate::vm::ensure_boot_files(
                store,
                vm,
                &k.image,
                &k.kernel_path,
                k.initrd_path.as_deref(),
                &registry,
                cancel.clone(),
            )?;
            continue;
        }
        let Some(volume) = b.volume() else { continue };
        if store.inspect(&VolumeRef::volume(volume.clone())).is_ok() {
            continue;
        }
        match b {
            Backing::ContainerDisk {
                image,
                volume,
                pull_secret,
            } => {
                let at = format!("volumes[{entry}].containerDisk.imagePullSecret");
                let registry = pull(pull_secret, &at)?;
                let cached = crate::vm::ensure_image(
                    store,
                    Some(host),
                    image,
                    &registry,
                    cancel.clone(),
                    &mut |_| {},
                )?;
                store.clone_volume(&cached.base, volume)?;
            }
            Backing::EmptyDisk { size, volume } => {
                store.create_volume(volume, *size)?;
            }
            _ => {}
        }
    }
    Ok(())
}
