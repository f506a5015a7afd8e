//! VM records in the store: `STORE/vms/NAME.json`, one file per VM, replaced atomically.
//!
//! The record's shape is the launcher's business; here it is an opaque JSON object, so
//! the control API does not depend on libvirt.

use std::path::{Path, PathBuf};

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
}

fn dir(store: &Path) -> PathBuf {
    store.join("vms")
}

fn path(store: &Path, name: &Name) -> PathBuf {
    dir(store).join(format!("{name}.json"))
}

pub fn put(store: &Path, name: &Name, record: &serde_json::Value) -> Result<(), VmRecordError> {
    let d = dir(store);
    std::fs::create_dir_all(&d).map_err(|source| VmRecordError::Io {
        path: d.clone(),
        source,
    })?;
    let p = path(store, name);
    let tmp = d.join(format!(".{name}.json.tmp"));
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| VmRecordError::Damaged {
        path: p.clone(),
        detail: e.to_string(),
    })?;
    let io = |source| VmRecordError::Io {
        path: p.clone(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, &p).map_err(io)
}

pub fn get(store: &Path, name: &Name) -> Result<serde_json::Value, VmRecordError> {
    let p = path(store, name);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| VmRecordError::Damaged {
            path: p,
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(VmRecordError::NoSuchVm(name.to_string()))
        }
        Err(source) => Err(VmRecordError::Io { path: p, source }),
    }
}

pub fn list(store: &Path) -> Result<Vec<serde_json::Value>, VmRecordError> {
    let d = dir(store);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(VmRecordError::Io { path: d, source }),
    };
    let mut names: Vec<Name> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .and_then(|n| Name::new(n).ok())
        })
        .collect();
    names.sort();
    names.iter().map(|n| get(store, n)).collect()
}

pub fn remove(store: &Path, name: &Name) -> Result<(), VmRecordError> {
    let p = path(store, name);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(VmRecordError::NoSuchVm(name.to_string()))
        }
        Err(source) => Err(VmRecordError::Io { path: p, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_missing_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let n = Name::new("vm1").unwrap();
        assert!(matches!(get(d.path(), &n), Err(VmRecordError::NoSuchVm(_))));
        assert!(list(d.path()).unwrap().is_empty());
        put(d.path(), &n, &serde_json::json!({"name": "vm1"})).unwrap();
        assert_eq!(get(d.path(), &n).unwrap()["name"], "vm1");
        assert_eq!(list(d.path()).unwrap().len(), 1);
        std::fs::write(d.path().join("vms/vm1.json"), b"{broken").unwrap();
        assert!(matches!(
            get(d.path(), &n),
            Err(VmRecordError::Damaged { .. })
        ));
        remove(d.path(), &n).unwrap();
        assert!(matches!(
            remove(d.path(), &n),
            Err(VmRecordError::NoSuchVm(_))
        ));
    }
}
