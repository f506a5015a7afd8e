//! The metadata database, `STORE/meta.redb` (format version 2): the truth about what
//! exists. A redb file (copy-on-write B-trees, checksummed pages, one writer), with tables
//!
//! | table | key | value (JSON) |
//! |---|---|---|
//! | `meta` | `"format_version"` | u64 (2), not JSON |
//! | `layers` | layer id | `{parent, blob, created}` |
//! | `volumes` | volume name | `{size, top, created, origin}` |
//! | `snapshots` | (volume, snapshot) | `{size, layer, created}` |
//! | `temp_volumes` | import id | as `volumes` |
//! | `records` | (kind, name) | the record |
//!
//! Every store change is one write transaction holding only the entries that change,
//! committed with immediate durability (fsynced) before the change is acknowledged.
//! Nothing here decides what a change is: `store.rs` builds the [`Change`]s, this module
//! writes them or fails without writing any.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;

use platter_types::Name;

use crate::catalog::{Catalog, Change, FORMAT_VERSION};
use crate::error::{Result, StoreError};
use crate::records::{self, RecordChange};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
const SNAPSHOTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("snapshots");
const TEMPS: TableDefinition<&str, &[u8]> = TableDefinition::new("temp_volumes");
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
const FORMAT_KEY: &str = "format_version";
/// redb caches pages it read; the whole metadata of a large store fits in this.
const CACHE_BYTES: usize = 64 << 20;

pub(crate) struct MetaDb {
    db: Db,
    path: PathBuf,
}

/// A database open for writing, or (a store this user may not write) for reading only.
enum Db {
    Writable(Database),
    ReadOnly(ReadOnlyDatabase),
}

/// Maps a redb error to the store's: corruption is damage naming the file.
fn db_err<E: Into<redb::Error>>(path: &Path, op: &'static str) -> impl FnOnce(E) -> StoreError {
    let path = path.to_path_buf();
    move |e| match e.into() {
        redb::Error::Corrupted(detail) => StoreError::Damaged { path, detail },
        // Not a database, or shorter than its own header says.
        redb::Error::Io(source)
            if matches!(
                source.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Damaged {
                path,
                detail: source.to_string(),
            }
        }
        redb::Error::Io(source) => StoreError::Io { op, path, source },
        redb::Error::UpgradeRequired(v) => StoreError::Damaged {
            path,
            detail: format!("redb file format {v} is not one this platter reads"),
        },
        other => StoreError::Database {
            op,
            path,
            detail: other.to_string(),
        },
    }
}

fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    // A plain open trusts the file and may panic on one damaged outside redb; the check
    // verifies every page's checksum, so damage is an error naming the file instead.
    b.set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true);
    b
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Entries are plain structs of strings and integers: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The database holds the records of declarative objects, Secrets among them: only its
/// owner may read it (a store made before this rule is tightened on open).
fn owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(path).map_err(StoreError::io("stat", path))?;
    if md.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(StoreError::io("chmod", path))?;
    }
    Ok(())
}

impl MetaDb {
    /// Opens an existing database and checks its format version.
    pub fn open(path: &Path) -> Result<MetaDb> {
        let db = builder().open(path).map_err(db_err(path, "open"))?;
        owner_only(path)?;
        MetaDb::checked(Db::Writable(db), path)
    }

    /// Opens an existing database for reading only: nothing is written, not even the
    /// recovery a database left by a crash needs (that is refused as an error).
    pub fn open_read_only(path: &Path) -> Result<MetaDb> {
        let db = builder()
            .open_read_only(path)
            .map_err(db_err(path, "open read-only"))?;
        MetaDb::checked(Db::ReadOnly(db), path)
    }

    fn checked(db: Db, path: &Path) -> Result<MetaDb> {
        let me = MetaDb {
            db,
            path: path.to_path_buf(),
        };
        let found = me.format_version()?;
        if found > u64::from(FORMAT_VERSION) {
            return Err(StoreError::NewerFormat {
                dir: path.parent().unwrap_or(path).to_path_buf(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        if found < u64::from(FORMAT_VERSION) {
            return Err(StoreError::damaged(
                path,
                format!("format version {found} is not a database format"),
            ));
        }
        Ok(me)
    }

    /// Creates a database at `path` (which must not exist) holding `cat` and `records`,
    /// in one transaction. The caller publishes it by renaming.
    pub fn create(path: &Path, cat: &Catalog, recs: &[RecordChange]) -> Result<()> {
        let db = builder().create(path).map_err(db_err(path, "create"))?;
        owner_only(path)?;
        let me = MetaDb {
            db: Db::Writable(db),
            path: path.to_path_buf(),
        };
        let all = everything(cat);
        me.write(&all, recs, |tx| {
            crate::failpoint!("migrate-before-commit");
            let mut t = tx.open_table(META).map_err(db_err(path, "create"))?;
            t.insert(FORMAT_KEY, u64::from(FORMAT_VERSION))
                .map_err(db_err(path, "create"))?;
            Ok(())
        })
    }

    fn begin_read(&self) -> std::result::Result<ReadTransaction, redb::TransactionError> {
        match &self.db {
            Db::Writable(db) => db.begin_read(),
            Db::ReadOnly(db) => db.begin_read(),
        }
    }

    fn format_version(&self) -> Result<u64> {
        let op = "read format version";
        let tx = self.begin_read().map_err(db_err(&self.path, op))?;
        let t = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(StoreError::damaged(&self.path, "no format version"))
            }
            Err(err) => return Err(db_err(&self.path, op)(err)),
        };
        let v = t.get(FORMAT_KEY).map_err(db_err(&self.path, op))?;
        v.map(|g| g.value())
            .ok_or_else(|| StoreError::damaged(&self.path, "no format version"))
    }

    /// Reads every volume, snapshot, layer and import into the in-memory catalog.
    pub fn load(&self) -> Result<Catalog> {
        let op = "read metadata";
        let tx = self.begin_read().map_err(db_err(&self.path, op))?;
        let mut layers = BTreeMap::new();
        let mut volumes = BTreeMap::new();
        let mut snapshots: BTreeMap<Name, BTreeMap<Name, _>> = BTreeMap::new();
        let mut temps = BTreeMap::new();
        macro_rules! each {
            ($def:expr, |$k:ident, $v:ident| $body:expr) => {
                match tx.open_table($def) {
                    Ok(t) => {
                        for row in t.range(..).map_err(db_err(&self.path, op))? {
                            let (k, v) = row.map_err(db_err(&self.path, op))?;
                            let ($k, $v) = (k.value(), v.value());
                            $body
                        }
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    Err(err) => return Err(db_err(&self.path, op)(err)),
                }
            };
        }
        each!(LAYERS, |k, v| {
            layers.insert(k.to_string(), self.decode(v, || format!("layer {k}"))?);
        });
        each!(VOLUMES, |k, v| {
            volumes.insert(self.name(k)?, self.decode(v, || format!("volume {k}"))?);
        });
        each!(SNAPSHOTS, |k, v| {
            let entry = self.decode(v, || format!("snapshot {}@{}", k.0, k.1))?;
            snapshots
                .entry(self.name(k.0)?)
                .or_default()
                .insert(self.name(k.1)?, entry);
        });
        each!(TEMPS, |k, v| {
            temps.insert(k.to_string(), self.decode(v, || format!("import {k}"))?);
        });
        Catalog::from_parts(layers, volumes, snapshots, temps)
            .map_err(|why| StoreError::damaged(&self.path, why))
    }

    fn decode<T: DeserializeOwned>(&self, v: &[u8], what: impl Fn() -> String) -> Result<T> {
        serde_json::from_slice(v)
            .map_err(|err| StoreError::damaged(&self.path, format!("{}: {err}", what())))
    }

    fn name(&self, s: &str) -> Result<Name> {
        Name::new(s).map_err(|err| StoreError::damaged(&self.path, err.to_string()))
    }

    /// Commits `changes` and `recs` in one transaction, durable when this returns. A
    /// record change that is refused (exists, missing) aborts the whole transaction.
    pub fn commit(&self, changes: &[Change], recs: &[RecordChange]) -> Result<()> {
        self.write(changes, recs, |_| Ok(()))
    }

    fn write(
        &self,
        changes: &[Change],
        recs: &[RecordChange],
        extra: impl FnOnce(&WriteTransaction) -> Result<()>,
    ) -> Result<()> {
        let op = "commit metadata";
        let Db::Writable(db) = &self.db else {
            return Err(StoreError::StoreReadOnly {
                dir: self.path.parent().unwrap_or(&self.path).to_path_buf(),
            });
        };
        let mut tx = db.begin_write().map_err(db_err(&self.path, op))?;
        tx.set_durability(Durability::Immediate)
            .map_err(db_err(&self.path, op))?;
        let staged = extra(&tx)
            .and_then(|()| self.stage(&tx, changes))
            .and_then(|()| {
                crate::failpoint!("meta-between-volumes-and-records");
                self.stage_records(&tx, recs)
            });
        match staged {
            Ok(()) => {
                crate::failpoint!("meta-before-commit");
                tx.commit().map_err(db_err(&self.path, op))
            }
            Err(err) => {
                if let Err(abort) = tx.abort() {
                    tracing::warn!(error = %abort, "aborting a metadata transaction failed");
                }
                Err(err)
            }
        }
    }

    fn stage(&self, tx: &WriteTransaction, changes: &[Change]) -> Result<()> {
        let op = "commit metadata";
        let mut layers = tx.open_table(LAYERS).map_err(db_err(&self.path, op))?;
        let mut volumes = tx.open_table(VOLUMES).map_err(db_err(&self.path, op))?;
        let mut snapshots = tx.open_table(SNAPSHOTS).map_err(db_err(&self.path, op))?;
        let mut temps = tx.open_table(TEMPS).map_err(db_err(&self.path, op))?;
        for c in changes {
            match c {
                Change::PutLayer(id, l) => layers.insert(id.as_str(), json(l).as_slice()),
                Change::DeleteLayer(id) => layers.remove(id.as_str()),
                Change::PutVolume(n, v) => volumes.insert(n.as_str(), json(v).as_slice()),
                Change::DeleteVolume(n) => volumes.remove(n.as_str()),
                Change::PutSnapshot(v, s, entry) => {
                    snapshots.insert((v.as_str(), s.as_str()), json(entry).as_slice())
                }
                Change::DeleteSnapshot(v, s) => snapshots.remove((v.as_str(), s.as_str())),
                Change::PutTemp(id, v) => temps.insert(id.as_str(), json(v).as_slice()),
                Change::DeleteTemp(id) => temps.remove(id.as_str()),
            }
            .map_err(db_err(&self.path, op))?;
        }
        Ok(())
    }

    fn stage_records(&self, tx: &WriteTransaction, recs: &[RecordChange]) -> Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        let op = "commit record";
        let mut t = tx.open_table(RECORDS).map_err(db_err(&self.path, op))?;
        for r in recs {
            let (kind, name) = r.key();
            records::check_key(kind, name)?;
            match r {
                RecordChange::Create { value, .. } | RecordChange::Put { value, .. } => {
                    let bytes = records::encode_value(kind, name, value)?;
                    let old = t
                        .insert((kind, name), bytes.as_slice())
                        .map_err(db_err(&self.path, op))?;
                    if old.is_some() && matches!(r, RecordChange::Create { .. }) {
                        return Err(StoreError::Exists(format!("{kind} {name}")));
                    }
                }
                RecordChange::Delete { .. } => {
                    if t.remove((kind, name))
                        .map_err(db_err(&self.path, op))?
                        .is_none()
                    {
                        return Err(StoreError::NoSuchRecord {
                            kind: kind.to_string(),
                            name: name.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    pub fn get_record(&self, kind: &str, name: &str) -> Result<Option<serde_json::Value>> {
        records::check_key(kind, name)?;
        let op = "read record";
        let tx = self.begin_read().map_err(db_err(&self.path, op))?;
        let t = match tx.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(err) => return Err(db_err(&self.path, op)(err)),
        };
        let Some(v) = t.get((kind, name)).map_err(db_err(&self.path, op))? else {
            return Ok(None);
        };
        self.decode(v.value(), || format!("record {kind} {name}"))
            .map(Some)
    }

    /// Every record of `kind`, by name.
    pub fn list_records(&self, kind: &str) -> Result<Vec<(String, serde_json::Value)>> {
        records::check_key(kind, "-")?;
        let op = "read records";
        let tx = self.begin_read().map_err(db_err(&self.path, op))?;
        let t = match tx.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(db_err(&self.path, op)(err)),
        };
        let mut out = Vec::new();
        for row in t.range((kind, "")..).map_err(db_err(&self.path, op))? {
            let (k, v) = row.map_err(db_err(&self.path, op))?;
            let (k_kind, k_name) = k.value();
            if k_kind != kind {
                break;
            }
            let value = self.decode(v.value(), || format!("record {kind} {k_name}"))?;
            out.push((k_name.to_string(), value));
        }
        Ok(out)
    }
}

/// Every entry of `cat` as changes (to write a whole new database).
fn everything(cat: &Catalog) -> Vec<Change> {
    let mut out: Vec<Change> = cat
        .layers()
        .iter()
        .map(|(id, l)| Change::PutLayer(id.clone(), l.clone()))
        .collect();
    out.extend(
        cat.volumes()
            .iter()
            .map(|(n, v)| Change::PutVolume(n.clone(), v.clone())),
    );
    for (v, m) in cat.snapshots() {
        out.extend(
            m.iter()
                .map(|(s, e)| Change::PutSnapshot(v.clone(), s.clone(), e.clone())),
        );
    }
    out.extend(
        cat.temp_volumes()
            .iter()
            .map(|(id, v)| Change::PutTemp(id.clone(), v.clone())),
    );
    out
}
