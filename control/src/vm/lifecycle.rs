//! Start, stop, restart, delete, status and console of VMs that exist: the record says
//! what the VM is and which libvirt URI reaches it (`connect` overrides it); libvirt says
//! what state it is in.

use std::time::Duration;

use platter_launcher::{
    Launcher, LauncherError, Media, StopOutcome, VmRecord, VmState, DEFAULT_URI,
};
use platter_snapshotter::{Store, StoreError};
use platter_types::{Name, VolumeRef};

use crate::api::{Response, VmInfo};
use crate::error::ControlError;

use super::{locked, records, serving, VmError, VmHost};

/// The one shape of a VM in every answer (`vm create`, `vm start`, `vm list`).
pub fn info(r: &VmRecord, uri: &str, state: &str) -> VmInfo {
    let exports = |media: Media| {
        r.disks
            .iter()
            .filter(|d| d.media == media)
            .map(|d| d.volume.to_string())
            .collect()
    };
    VmInfo {
        name: r.name.to_string(),
        state: state.to_string(),
        accel: r.accel.accel.to_string(),
        accel_reason: r.accel.reason.clone(),
        memory: r.memory_bytes,
        cpus: r.cpus,
        uri: uri.to_string(),
        disks: exports(Media::Disk),
        cdroms: exports(Media::Cdrom),
        throwaway: r.throwaway_volumes().map(|v| v.to_string()).collect(),
        console_log: r.console_log.clone(),
    }
}

fn launcher(uri: &str) -> Result<Launcher, ControlError> {
    Launcher::new(Some(uri)).map_err(|e| VmError::from(e).into())
}

fn state_of(l: &Launcher, name: &str) -> String {
    l.state(name)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "undefined".into())
}

pub fn start(
    store: &Store,
    host: Option<&VmHost>,
    name: &Name,
    connect: Option<&str>,
) -> Result<Response, ControlError> {
    let rec = records::require(store, name)?;
    serving(host, store.dir())?;
    let l = launcher(rec.uri_or(connect))?;
    l.ensure_defined(&rec).map_err(VmError::from)?;
    l.start(name.as_str()).map_err(VmError::from)?;
    Ok(Response::VmInfo {
        vm: info(&rec, l.uri(), &state_of(&l, name.as_str())),
    })
}

/// The libvirt URI for `name` when there may be no record (stop, restart): `connect`,
/// else the record's, else the default. A missing record is not an error here: libvirt
/// then says whether the VM exists.
fn uri_for(store: &Store, name: &Name, connect: Option<&str>) -> String {
    if let Some(uri) = connect {
        return uri.to_string();
    }
    match records::get(store, name) {
        Ok(Some(r)) => r.uri_or(None).to_string(),
        other => {
            tracing::debug!(vm = %name, ?other, "no usable vm record; default URI");
            DEFAULT_URI.to_string()
        }
    }
}

pub fn stop(
    store: &Store,
    name: &Name,
    timeout: u64,
    connect: Option<&str>,
) -> Result<Response, ControlError> {
    let l = launcher(&uri_for(store, name, connect))?;
    let outcome = l
        .stop(name.as_str(), Duration::from_secs(timeout))
        .map_err(VmError::from)?;
    Ok(Response::VmStopped {
        name: name.to_string(),
        outcome,
    })
}

pub fn restart(
    store: &Store,
    name: &Name,
    timeout: u64,
    connect: Option<&str>,
) -> Result<Response, ControlError> {
    let l = launcher(&uri_for(store, name, connect))?;
    let outcome: StopOutcome = l
        .restart(name.as_str(), Duration::from_secs(timeout))
        .map_err(VmError::from)?;
    Ok(Response::VmStopped {
        name: name.to_string(),
        outcome,
    })
}

pub fn delete(
    store: &Store,
    host: Option<&VmHost>,
    name: &Name,
    connect: Option<&str>,
) -> Result<Response, ControlError> {
    let rec = records::require(store, name)?;
    serving(host, store.dir())?;
    locked(host, &format!("vm {name}"), || {
        // Refused before anything is touched: a throw-away disk that was snapshotted and
        // cloned cannot go while its clones need it.
        let volumes = store.list()?;
        for disk in rec.throwaway_volumes() {
            let disk = disk.volume.as_str();
            let clones: Vec<&str> = volumes
                .iter()
                .filter(|v| {
                    v.origin.as_deref().is_some_and(|o| {
                        o == disk || o.strip_prefix(disk).is_some_and(|r| r.starts_with('@'))
                    })
                })
                .map(|v| v.name.as_str())
                .collect();
            if !clones.is_empty() {
                return Err(VmError::DiskHasClones {
                    vm: name.to_string(),
                    disk: disk.to_string(),
                    clones: clones.join(", "),
                }
                .into());
            }
        }
        let l = launcher(rec.uri_or(connect))?;
        match l.delete(name.as_str()) {
            Ok(()) | Err(LauncherError::NoSuchVm { .. }) => {}
            Err(e) => return Err(VmError::from(e).into()),
        }
        // The record goes in the transaction that deletes the last throw-away disk, so a
        // crash leaves the VM whole (to delete again) or gone, never a record naming a
        // disk that is not there.
        let mut deleted = Vec::new();
        let disks: Vec<&VolumeRef> = rec.throwaway_volumes().collect();
        let mut record_left = true;
        for (i, v) in disks.iter().enumerate() {
            let last = i + 1 == disks.len();
            let with: &[_] = if last {
                &[records::delete_change(name)]
            } else {
                &[]
            };
            match store.delete_with(v, with) {
                Ok(()) => record_left &= !last,
                // Gone already: an earlier delete stopped after it.
                Err(StoreError::NoSuchVolume(_)) => {}
                Err(e) => return Err(e.into()),
            }
            deleted.push(v.to_string());
        }
        for f in [Some(rec.console_log.clone()), rec.cloud_init_seed.clone()]
            .into_iter()
            .flatten()
        {
            let _ = std::fs::remove_file(f);
        }
        super::remove_boot_files(store, name);
        if record_left {
            records::remove(store, name)?;
        }
        Ok(Response::VmDeleted {
            name: name.to_string(),
            volumes: deleted,
        })
    })
}

/// Every VM with its state; one libvirt connection per URI, made when first needed (an
/// explicit `connect` at once, so that a bad URI is reported even with no VMs).
pub fn status(store: &Store, connect: Option<&str>) -> Result<Response, ControlError> {
    let records = records::list(store)?;
    let mut launchers: Vec<(String, Launcher)> = Vec::new();
    if let Some(uri) = connect {
        launchers.push((uri.to_string(), launcher(uri)?));
    }
    let mut items = Vec::new();
    for r in &records {
        let uri = r.uri_or(connect);
        let l = match launchers.iter().position(|(u, _)| u == uri) {
            Some(i) => &launchers[i].1,
            None => {
                launchers.push((uri.to_string(), launcher(uri)?));
                &launchers[launchers.len() - 1].1
            }
        };
        items.push(info(r, uri, &state_of(l, r.name.as_str())));
    }
    Ok(Response::VmInfos { items })
}

/// Where the console of `name` is logged; with `follow` or an explicit `connect` (which
/// is then checked, never silently ignored), whether the VM is running.
pub fn console(
    store: &Store,
    name: &Name,
    connect: Option<&str>,
    follow: bool,
) -> Result<Response, ControlError> {
    let rec = records::require(store, name)?;
    let running = if follow || connect.is_some() {
        let l = launcher(rec.uri_or(connect))?;
        matches!(
            l.state(name.as_str()),
            Ok(VmState::Running | VmState::Blocked | VmState::Paused)
        )
    } else {
        false
    };
    Ok(Response::VmConsole {
        name: name.to_string(),
        log: rec.console_log,
        running,
    })
}
