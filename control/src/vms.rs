//! VM records in the store's metadata database (kind `vm`, keyed by the VM's name), so
//! that a record changes in the same transaction as the volumes it names when asked to.
//! (Format 1 stores kept them as `STORE/vms/NAME.json`; opening the store migrates them.)
//!
//! The record's shape is the launcher's business; here it is an opaque JSON object, so
//! the control API does not depend on libvirt.

use std::path::PathBuf;

use platter_snapshotter::{Store, StoreError, VM_KIND};
use platter_types::Name;

#[derive(Debug, thiserror::Error)]
pub enum VmRecordError {
    #[error("vm {0} does not exist")]
    NoSuchVm(String),
    #[error("vm record {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("vm record {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for VmRecordError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchRecord { name, .. } => VmRecordError::NoSuchVm(name),
            StoreError::Io { path, source, .. } => VmRecordError::Io { path, source },
            StoreError::Damaged { path, detail } => VmRecordError::Damaged { path, detail },
            other => VmRecordError::Store(other),
        }
    }
}

pub fn put(store: &Store, name: &Name, record: &serde_json::Value) -> Result<(), VmRecordError> {
    Ok(store.put_record(VM_KIND, name.as_str(), record)?)
}

pub fn get(store: &Store, name: &Name) -> Result<serde_json::Value, VmRecordError> {
    Ok(store.get_record(VM_KIND, name.as_str())?)
}

/// Every VM record, ordered by name.
pub fn list(store: &Store) -> Result<Vec<serde_json::Value>, VmRecordError> {
    Ok(store
        .list_records(VM_KIND)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

pub fn remove(store: &Store, name: &Name) -> Result<(), VmRecordError> {
    Ok(store.delete_record(VM_KIND, name.as_str())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_persist_and_missing_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let n = Name::new("vm1").unwrap();
        {
            let store = Store::open(d.path()).unwrap();
            assert!(matches!(get(&store, &n), Err(VmRecordError::NoSuchVm(_))));
            assert!(list(&store).unwrap().is_empty());
            put(&store, &n, &serde_json::json!({"name": "vm1"})).unwrap();
        }
        let store = Store::open(d.path()).unwrap();
        assert_eq!(get(&store, &n).unwrap()["name"], "vm1");
        assert_eq!(list(&store).unwrap().len(), 1);
        remove(&store, &n).unwrap();
        let e = remove(&store, &n).unwrap_err();
        assert!(matches!(e, VmRecordError::NoSuchVm(_)), "{e}");
        assert_eq!(e.to_string(), "vm vm1 does not exist");
    }
}
