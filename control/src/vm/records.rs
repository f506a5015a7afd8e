//! The VM use cases' one way to the VM records: typed [`VmRecord`]s over the record
//! store (`crate::vms`, which the `vm_put`/`vm_get`/`vm_list`/`vm_remove` requests use
//! too). Swapping the record store touches this file and the dispatcher, nothing else.

use platter_launcher::VmRecord;
use platter_snapshotter::{RecordChange, Store, VM_KIND};
use platter_types::{Name, VolumeRef};
use serde::Deserialize;

use crate::error::ControlError;
use crate::vms::VmRecordError;

use super::VmError;

/// The record of `name`, or `None` when there is none.
pub(crate) fn get(store: &Store, name: &Name) -> Result<Option<VmRecord>, ControlError> {
    match crate::vms::get(store, name) {
        Ok(v) => parse(name.as_str(), v).map(Some),
        Err(VmRecordError::NoSuchVm(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The record of `name`; a missing one is `not_found` ("vm NAME does not exist").
pub(crate) fn require(store: &Store, name: &Name) -> Result<VmRecord, ControlError> {
    get(store, name)?.ok_or_else(|| VmRecordError::NoSuchVm(name.to_string()).into())
}

/// Every record of the launcher's shape; others are skipped (with a warning), as `vm
/// list` always did.
pub(crate) fn list(store: &Store) -> Result<Vec<VmRecord>, ControlError> {
    Ok(crate::vms::list(store)?
        .into_iter()
        .filter_map(|v| match serde_json::from_value::<VmRecord>(v) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "skipping a vm record of another shape");
                None
            }
        })
        .collect())
}

pub(crate) fn put(store: &Store, record: &VmRecord) -> Result<(), ControlError> {
    Ok(crate::vms::put(store, &record.name, &value(record)?)?)
}

fn value(record: &VmRecord) -> Result<serde_json::Value, ControlError> {
    Ok(serde_json::to_value(record).map_err(|e| VmError::Record {
        vm: record.name.to_string(),
        detail: e.to_string(),
    })?)
}

/// The change that creates `record`, for a store operation that must commit with it (a
/// VM and its throw-away disk appear in one transaction).
pub(crate) fn create_change(record: &VmRecord) -> Result<RecordChange, ControlError> {
    Ok(RecordChange::Create {
        kind: VM_KIND.to_string(),
        name: record.name.to_string(),
        value: value(record)?,
    })
}

/// The change that removes VM `name`'s record (with its last throw-away disk).
pub(crate) fn delete_change(name: &Name) -> RecordChange {
    RecordChange::Delete {
        kind: VM_KIND.to_string(),
        name: name.to_string(),
    }
}

pub(crate) fn remove(store: &Store, name: &Name) -> Result<(), ControlError> {
    Ok(crate::vms::remove(store, name)?)
}

fn parse(name: &str, v: serde_json::Value) -> Result<VmRecord, ControlError> {
    serde_json::from_value(v).map_err(|e| {
        VmError::Record {
            vm: name.to_string(),
            detail: e.to_string(),
        }
        .into()
    })
}

/// Just the disks of a record: enough to tell what it uses even when the rest of it is
/// of another shape (a newer or declarative VM).
#[derive(Deserialize)]
struct Disks {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disks: Vec<DiskRef>,
}

#[derive(Deserialize)]
struct DiskRef {
    volume: VolumeRef,
}

/// Refuses to delete `target` while a VM record uses it: as a disk or CD-ROM (its own
/// volume or a throw-away clone), or, for a volume, through one of its snapshots.
pub fn check_volume_unused(store: &Store, target: &VolumeRef) -> Result<(), ControlError> {
    for v in crate::vms::list(store)? {
        let Ok(rec) = serde_json::from_value::<Disks>(v) else {
            // A record we cannot read at all uses nothing we can name; `vm list` reports it.
            tracing::warn!("unreadable vm record while checking what uses {target}");
            continue;
        };
        let uses = rec.disks.iter().any(|d| match &target.snapshot {
            Some(_) => d.volume == *target,
            None => d.volume.volume == target.volume,
        });
        if uses {
            let what = if target.is_snapshot() {
                "snapshot"
            } else {
                "volume"
            };
            return Err(VmError::VolumeInUse {
                target: format!("{what} {target}"),
                vm: rec.name.unwrap_or_else(|| "?".into()),
            }
            .into());
        }
    }
    Ok(())
}
