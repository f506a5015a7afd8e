//! Records: JSON documents the store keeps for others, keyed by (kind, name): VM records
//! now (kind `vm`), declarative objects (DataVolume, VirtualMachine, ...) later. They live
//! in the metadata database beside the volumes, so a record and the volumes it names
//! change in one transaction ([`crate::Store::clone_volume_with`] and friends).
//!
//! The store never looks inside a record; it only checks the key and bounds the size.

use crate::error::{Result, StoreError};
use crate::store::Store;

/// The kind of VM records written by `platter vm create`.
pub const VM_KIND: &str = "vm";
/// Largest record accepted (a record is metadata, not data).
pub const MAX_RECORD_BYTES: usize = 4 << 20;
const MAX_KIND: usize = 63;
/// Kubernetes object names go up to 253 bytes (DNS subdomains), plus a namespace.
const MAX_NAME: usize = 253 + 1 + 63;

/// One record change, committed together with the volume change it comes with.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordChange {
    /// Writes the record; refused with [`StoreError::Exists`] if it is there already.
    Create {
        kind: String,
        name: String,
        value: serde_json::Value,
    },
    /// Writes the record, replacing any.
    Put {
        kind: String,
        name: String,
        value: serde_json::Value,
    },
    /// Removes the record; refused with [`StoreError::NoSuchRecord`] if it is not there.
    Delete { kind: String, name: String },
}

impl RecordChange {
    pub fn key(&self) -> (&str, &str) {
        match self {
            RecordChange::Create { kind, name, .. }
            | RecordChange::Put { kind, name, .. }
            | RecordChange::Delete { kind, name } => (kind, name),
        }
    }
}

/// Kinds are `[A-Za-z0-9._-]{1,63}`; names are 1 to 317 printable ASCII bytes other than
/// space (room for `namespace/name`).
pub fn check_key(kind: &str, name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(StoreError::BadRecord {
            record: format!("{kind:?} {name:?}"),
            reason: reason.to_string(),
        })
    };
    if kind.is_empty() || kind.len() > MAX_KIND {
        return bad("the kind must be 1 to 63 characters");
    }
    if !kind
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("the kind may hold only letters, digits, '.', '_' and '-'");
    }
    if name.is_empty() || name.len() > MAX_NAME {
        return bad("the name must be 1 to 317 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("the name may hold only printable characters other than space");
    }
    Ok(())
}

/// The bytes stored for a record value, bounded.
pub fn encode_value(kind: &str, name: &str, value: &serde_json::Value) -> Result<Vec<u8>> {
    // Serializing a `Value` cannot fail (its maps have string keys).
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(StoreError::BadRecord {
            record: format!("{kind} {name}"),
            reason: format!(
                "the record is {} bytes, the most is {MAX_RECORD_BYTES}",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

impl Store {
    /// Writes record (kind, name), replacing any; durable when this returns.
    pub fn put_record(&self, kind: &str, name: &str, value: &serde_json::Value) -> Result<()> {
        self.change_records(&[RecordChange::Put {
            kind: kind.to_string(),
            name: name.to_string(),
            value: value.clone(),
        }])
    }

    /// Reads record (kind, name); [`StoreError::NoSuchRecord`] if there is none.
    pub fn get_record(&self, kind: &str, name: &str) -> Result<serde_json::Value> {
        self.db()
            .get_record(kind, name)?
            .ok_or_else(|| StoreError::NoSuchRecord {
                kind: kind.to_string(),
                name: name.to_string(),
            })
    }

    /// Every record of `kind`, ordered by name.
    pub fn list_records(&self, kind: &str) -> Result<Vec<(String, serde_json::Value)>> {
        self.db().list_records(kind)
    }

    /// Removes record (kind, name); [`StoreError::NoSuchRecord`] if there is none.
    pub fn delete_record(&self, kind: &str, name: &str) -> Result<()> {
        self.change_records(&[RecordChange::Delete {
            kind: kind.to_string(),
            name: name.to_string(),
        }])
    }

    /// Several record changes in one transaction: all or none.
    pub fn change_records(&self, changes: &[RecordChange]) -> Result<()> {
        let mut meta = self.lock_meta();
        self.commit(&mut meta, Vec::new(), changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("vm", "vm1").is_ok());
        assert!(check_key("DataVolume", "default/my-dv.1").is_ok());
        for (k, n) in [
            ("", "a"),
            ("a b", "a"),
            ("vm", ""),
            ("vm", "a b"),
            ("vm", "a\n"),
        ] {
            assert!(check_key(k, n).is_err(), "{k:?} {n:?}");
        }
        assert!(check_key("vm", &"a".repeat(318)).is_err());
    }
}
