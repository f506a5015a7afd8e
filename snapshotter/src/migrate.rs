//! Opening a store's metadata: the database if there is one, else a new database built
//! from a format 1 store (`catalog` plus `vms/*.json` VM records) or, for a new store,
//! an empty one.
//!
//! The database is always built whole under `meta.redb.tmp`, committed (fsynced), and
//! renamed into place, then the directory is fsynced; only then are the v1 files removed,
//! the VM record files first and `catalog` last. So every crash leaves one of:
//! - no `meta.redb`: the v1 files are intact (a stale `.tmp` is discarded) and the next
//!   open migrates again from scratch;
//! - `meta.redb` and `catalog`: the database is complete, the cleanup was cut short; the
//!   next open finishes it (`catalog` is the marker that it is pending);
//! - `meta.redb` alone: done.
//!
//! It never starts a store afresh when blobs exist without metadata: that is damage.

use std::path::Path;

use platter_types::Name;

use crate::blob::sync_dir;
use crate::catalog::{Catalog, FORMAT_VERSION};
use crate::catalog_v1::{self, DecodeError};
use crate::error::{Result, StoreError};
use crate::metadb::MetaDb;
use crate::records::{RecordChange, VM_KIND};
use platter_types::StoreLayout;

/// The format 1 catalog file.
pub const CATALOG_V1: &str = "catalog";
const CATALOG_V1_TMP: &str = "catalog.tmp";
const META_TMP: &str = "meta.redb.tmp";
/// Where format 1 kept VM records (`NAME.json`; the VMs' console logs and seeds stay).
const VMS_V1: &str = "vms";

pub(crate) fn open(dir: &Path) -> Result<(MetaDb, Catalog)> {
    let db_path = StoreLayout::new(dir).meta_db();
    if !exists(&db_path)? {
        let tmp = dir.join(META_TMP);
        remove_file_if_any(&tmp)?;
        let (cat, recs) = match read_v1(dir)? {
            Some(cat) => (cat, vm_records_v1(dir)?),
            None => {
                if has_blobs(dir) {
                    return Err(StoreError::damaged(
                        &db_path,
                        "the metadata database is missing but the store holds blobs",
                    ));
                }
                (Catalog::new(), Vec::new())
            }
        };
        MetaDb::create(&tmp, &cat, &recs)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::io("sync metadata database", &tmp))?;
        crate::failpoint!("migrate-before-rename");
        std::fs::rename(&tmp, &db_path)
            .map_err(StoreError::io("publish metadata database", &db_path))?;
        sync_dir(dir)?;
        crate::failpoint!("migrate-after-rename");
    }
    let db = MetaDb::open(&db_path)?;
    let cat = db.load()?;
    finish_v1_cleanup(dir)?;
    Ok((db, cat))
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .map_err(StoreError::io("look for metadata database", path))
}

fn remove_file_if_any(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::io("remove", path)(e))
        }
        _ => Ok(()),
    }
}

fn has_blobs(dir: &Path) -> bool {
    std::fs::read_dir(StoreLayout::new(dir).blobs())
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// The v1 catalog, if the store has one.
fn read_v1(dir: &Path) -> Result<Option<Catalog>> {
    let path = dir.join(CATALOG_V1);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read catalog", &path)(e)),
    };
    match catalog_v1::decode(&bytes) {
        Ok(cat) => Ok(Some(cat)),
        Err(DecodeError::Newer(found)) if found > FORMAT_VERSION => Err(StoreError::NewerFormat {
            dir: dir.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        }),
        Err(DecodeError::Newer(found)) => Err(StoreError::damaged(
            &path,
            format!("no platter writes a catalog file of version {found}"),
        )),
        Err(DecodeError::Damaged(why)) => Err(StoreError::damaged(&path, why)),
    }
}

/// The `vms/NAME.json` files of a v1 store and their names. Other files there (console
/// logs, cloud-init seeds, a `.NAME.json.tmp` of an interrupted write) are not records.
fn vm_record_files(dir: &Path) -> Result<Vec<(Name, std::path::PathBuf)>> {
    let vms = dir.join(VMS_V1);
    let entries = match std::fs::read_dir(&vms) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list vm records", &vms)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(StoreError::io("list vm records", &vms))?;
        let file = e.file_name();
        let name = file
            .to_str()
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|n| Name::new(n).ok());
        if let Some(name) = name {
            out.push((name, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn vm_records_v1(dir: &Path) -> Result<Vec<RecordChange>> {
    vm_record_files(dir)?
        .into_iter()
        .map(|(name, path)| {
            let bytes = std::fs::read(&path).map_err(StoreError::io("read vm record", &path))?;
            let value = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::damaged(&path, format!("vm record: {e}")))?;
            Ok(RecordChange::Put {
                kind: VM_KIND.to_string(),
                name: name.to_string(),
                value,
            })
        })
        .collect()
}

/// Removes what a migration left (the database is in place and complete).
fn finish_v1_cleanup(dir: &Path) -> Result<()> {
    remove_file_if_any(&dir.join(META_TMP))?;
    remove_file_if_any(&dir.join(CATALOG_V1_TMP))?;
    let catalog = dir.join(CATALOG_V1);
    if !catalog
        .try_exists()
        .map_err(StoreError::io("look for catalog", &catalog))?
    {
        return Ok(());
    }
    let files = vm_record_files(dir)?;
    for (_, path) in &files {
        remove_file_if_any(path)?;
    }
    if !files.is_empty() {
        sync_dir(&dir.join(VMS_V1))?;
    }
    crate::failpoint!("migrate-after-records");
    remove_file_if_any(&catalog)?;
    sync_dir(dir)
}
