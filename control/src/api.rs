//! The typed requests and responses of the control API (documented in ARCHITECTURE.md).
//!
//! On the wire each request is one JSON line; the server answers with any number of
//! `{"event": …}` lines and then exactly one `{"response": …}` or `{"error": …}` line;
//! the error is a [`Failure`] (kind, object, message).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use platter_api::Kind;
use platter_launcher::{AccelChoice, StopOutcome};
use platter_snapshotter::{GcReport, VolumeInfo};
use platter_types::{Name, VolumeRef};

use crate::error::Failure;

/// Disk image formats a volume can be exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Raw,
    Qcow2,
}

/// Compression of qcow2 clusters on export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zlib,
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    VolumeCreate {
        name: Name,
        size: u64,
    },
    /// Every volume and snapshot; the image cache's (`img-…`) only with `all`.
    VolumeList {
        #[serde(default)]
        all: bool,
    },
    VolumeInspect {
        target: VolumeRef,
    },
    VolumeSnapshot {
        volume: Name,
        snapshot: Name,
    },
    VolumeClone {
        source: VolumeRef,
        name: Name,
    },
    VolumeResize {
        name: Name,
        size: u64,
    },
    VolumeDelete {
        target: VolumeRef,
    },
    VolumeExport {
        target: VolumeRef,
        path: PathBuf,
        format: ExportFormat,
        compression: Option<Compression>,
    },
    VolumeGc,
    /// Saves (creates or replaces) a VM record; the record is the launcher's, opaque here.
    VmPut {
        name: Name,
        record: serde_json::Value,
    },
    VmGet {
        name: Name,
    },
    VmList,
    /// Forgets a VM record (its volumes are deleted by separate requests).
    VmRemove {
        name: Name,
    },
    /// Imports an image (file, HTTP(S), registry, OCI layout) into a new volume.
    Import {
        source: String,
        name: Name,
        #[serde(default)]
        params: ImportParams,
    },
    /// Pushes a volume or snapshot as a KubeVirt containerDisk.
    Push {
        target: VolumeRef,
        dest: String,
        #[serde(default)]
        params: PushParams,
    },
    /// Defines a VM (and starts it with `start`): its disks checked or made (an `--image`
    /// cached and cloned), its record saved. Needs `platter serve` (it serves the disks);
    /// what can be refused without one is refused first, also in-process.
    VmCreate {
        params: VmCreateParams,
    },
    /// Starts a defined VM (defining its domain again from the record if libvirt lost it).
    VmStart {
        name: Name,
        #[serde(default)]
        connect: Option<String>,
    },
    /// ACPI shutdown, then power off after `timeout` seconds.
    VmStop {
        name: Name,
        timeout: u64,
        #[serde(default)]
        connect: Option<String>,
    },
    /// Stop (as `vm_stop`), then start.
    VmRestart {
        name: Name,
        timeout: u64,
        #[serde(default)]
        connect: Option<String>,
    },
    /// Powers off and undefines a VM, deletes its throw-away disks and its record.
    VmDelete {
        name: Name,
        #[serde(default)]
        connect: Option<String>,
    },
    /// Every VM of the store with its libvirt state (`vm_list` gives the bare records).
    VmStatus {
        #[serde(default)]
        connect: Option<String>,
    },
    /// Where VM `name`'s serial console is logged and, with `follow` (or an explicit
    /// `connect`, which is then checked), whether it is running.
    VmConsole {
        name: Name,
        #[serde(default)]
        connect: Option<String>,
        #[serde(default)]
        follow: bool,
    },
    /// The cached, read-only base of an image (`img-KEY@base`) for `vm create --image`:
    /// imported once (a registry image pinned to its digest), snapshotted, reused after.
    ImageEnsure {
        source: String,
        #[serde(default)]
        registry: RegistryParams,
    },
    /// Applies a file of declarative documents (all of them, or none); with `dry_run`
    /// only checks them.
    Apply {
        /// What the file is called in errors (`vm.yaml`, `-`).
        file: String,
        text: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Objects of a kind: one by name, or all (in `namespace`, or every namespace).
    ObjectGet {
        kind: Kind,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        namespace: Option<String>,
    },
    /// Marks an object for deletion; the reconciler removes what it made, then it.
    ObjectDelete {
        kind: Kind,
        name: String,
        #[serde(default)]
        namespace: Option<String>,
    },
    /// Fills a DataVolume with an upload source from the client's standard input or file
    /// (passed with the request).
    Upload {
        name: String,
        #[serde(default)]
        namespace: Option<String>,
    },
    /// Liveness check (used by clients to tell a live server from a stale socket).
    Ping,
}

impl Request {
    /// Whether this request may be the first one a store sees: it makes something (a
    /// volume, an import, a VM, objects). Every other request reads or changes what a
    /// store already holds, so against a directory that is no store it can only fail,
    /// and opening one there would leave an empty store behind (a typo in `--store`).
    /// Whether this request only reads the store (lists, inspects, exports, pushes): it
    /// can be served by a store opened read-only.
    pub fn only_reads(&self) -> bool {
        matches!(
            self,
            Request::VolumeList { .. }
                | Request::VolumeInspect { .. }
                | Request::VolumeExport { .. }
                | Request::Push { .. }
                | Request::VmGet { .. }
                | Request::VmList
                | Request::VmStatus { .. }
                | Request::ObjectGet { .. }
                | Request::Ping
        )
    }

    pub fn may_create_store(&self) -> bool {
        matches!(
            self,
            Request::VolumeCreate { .. }
                | Request::Import { .. }
                | Request::VmCreate { .. }
                | Request::VmPut { .. }
                | Request::ImageEnsure { .. }
                | Request::Apply { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Volume(VolumeInfoWire),
    Volumes {
        items: Vec<VolumeInfoWire>,
    },
    Deleted {
        target: String,
    },
    Exported {
        target: String,
        path: PathBuf,
        bytes_written: u64,
        allocated: u64,
    },
    Gc(GcReportWire),
    Pong {
        pid: u32,
    },
    Vm {
        record: serde_json::Value,
    },
    Vms {
        items: Vec<serde_json::Value>,
    },
    VmRemoved {
        name: String,
    },
    Imported {
        report: serde_json::Value,
        volume: VolumeInfoWire,
    },
    Pushed {
        report: serde_json::Value,
    },
    /// One VM (`vm_create`, `vm_start`, `vm_restart`).
    VmInfo {
        vm: VmInfo,
    },
    /// Every VM (`vm_status`).
    VmInfos {
        items: Vec<VmInfo>,
    },
    VmStopped {
        name: String,
        outcome: StopOutcome,
    },
    /// A start or stop of a declarative VM was handed to its object (what was done).
    VmRequested {
        name: String,
        message: String,
    },
    VmDeleted {
        name: String,
        /// The throw-away disks deleted with it.
        volumes: Vec<String>,
    },
    VmConsole {
        name: String,
        log: PathBuf,
        running: bool,
    },
    Applied(crate::objects::Applied),
    Objects {
        items: Vec<crate::objects::Stored>,
    },
    /// The object is marked for deletion (or gone already).
    ObjectDeleting {
        kind: Kind,
        name: String,
    },
    Uploaded {
        name: String,
        volume: VolumeInfoWire,
    },
    /// The cached image's base snapshot, and what it is to a guest.
    Image {
        base: VolumeRef,
        iso: bool,
    },
}

/// What `vm create` asks for, as the command line gives it. Paths are absolute (the
/// server may run in another directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCreateParams {
    pub name: Name,
    /// Boot from (and write to) this volume; with an ISO `image`, the ISO is a CD-ROM
    /// next to it.
    #[serde(default)]
    pub volume: Option<Name>,
    /// Boot from a throw-away clone of this image (an ISO: a read-only CD-ROM).
    #[serde(default)]
    pub image: Option<String>,
    pub memory: u64,
    pub cpus: u32,
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub cloud_init_user_data: Option<PathBuf>,
    #[serde(default)]
    pub accel: AccelChoice,
    /// The libvirt URI (default `qemu:///system`), kept in the record.
    #[serde(default)]
    pub connect: Option<String>,
    #[serde(default)]
    pub start: bool,
    #[serde(default)]
    pub registry: RegistryParams,
}

impl VmCreateParams {
    /// The defaults of `platter vm create NAME`: 512 MiB, 1 vCPU, automatic accelerator.
    pub fn new(name: Name) -> VmCreateParams {
        VmCreateParams {
            name,
            volume: None,
            image: None,
            memory: 512 << 20,
            cpus: 1,
            kernel: None,
            initrd: None,
            cmdline: None,
            cloud_init_user_data: None,
            accel: AccelChoice::Auto,
            connect: None,
            start: false,
            registry: RegistryParams::default(),
        }
    }
}

/// A VM as every command shows it (`vm create -o json`, `vm list -o json`): one shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    pub name: String,
    /// libvirt's state (`running`, `shut-off`, …), or `undefined` when libvirt has no
    /// such domain.
    pub state: String,
    /// `kvm` or `tcg`, and why it was chosen.
    pub accel: String,
    pub accel_reason: String,
    /// Bytes.
    pub memory: u64,
    pub cpus: u32,
    /// The libvirt URI the VM is reached through.
    pub uri: String,
    /// Disk exports in boot order.
    pub disks: Vec<String>,
    /// CD-ROM exports in boot order (the cloud-init seed not included).
    pub cdroms: Vec<String>,
    /// The disks made for this VM alone, deleted with it.
    pub throwaway: Vec<String>,
    /// Where the serial console is logged.
    pub console_log: PathBuf,
}

/// Registry and HTTP access options, as the command line gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryParams {
    pub creds: Option<String>,
    pub authfile: Option<PathBuf>,
    pub tls_verify: bool,
    pub cert_dir: Option<PathBuf>,
    pub platform: Option<String>,
    /// CA certificates (PEM) trusted besides the system's and `cert_dir`'s, each with the
    /// name errors give it (a DataVolume's `certConfigMap`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certs: Vec<(String, String)>,
    /// `Name: value` headers sent with every HTTP request (a DataVolume's `extraHeaders`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// A containers auth.json given as text (a KubeVirt `imagePullSecret`), with the name
    /// errors give it; used when `creds` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_json: Option<(String, String)>,
}

impl Default for RegistryParams {
    fn default() -> Self {
        RegistryParams {
            creds: None,
            authfile: None,
            tls_verify: true,
            cert_dir: None,
            platform: None,
            ca_certs: Vec::new(),
            headers: Vec::new(),
            auth_json: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportParams {
    /// `--format` (None or "auto" detects).
    pub format: Option<String>,
    /// `--checksum ALGO:HEX`.
    pub checksum: Option<String>,
    pub size: Option<u64>,
    #[serde(default)]
    pub registry: RegistryParams,
    /// `--backing FILE`: the backing image of a qcow2 overlay (absolute path).
    #[serde(default)]
    pub backing: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushParams {
    /// raw | qcow2 (default qcow2).
    pub disk_format: Option<String>,
    /// gzip | zstd | none (default gzip).
    pub compression: Option<String>,
    #[serde(default)]
    pub registry: RegistryParams,
}

/// Progress of long work, streamed before the response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Bytes done in the current phase; `total` is null when the size is not known (a
    /// stream), so a client shows a spinner instead of a bar. A new phase (another
    /// total, or `done` going back) starts a new bar.
    Progress {
        done: u64,
        #[serde(default)]
        total: Option<u64>,
    },
    /// `detail`: how the work is done rather than what it found (shown with `-v`).
    Message {
        text: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        detail: bool,
    },
    /// The work completed; the response follows.
    Finished,
}

/// One line from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Event(Event),
    Response(Response),
    /// `{"error":{"kind":…,"object":…,"message":…}}`; the plain `{"error":"…"}` of older
    /// servers is read too (as kind `failed`).
    Error(#[serde(deserialize_with = "crate::error::failure_or_text")] Failure),
}

/// `VolumeInfo` as it travels (owned, deserializable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfoWire {
    pub name: String,
    pub kind: String,
    pub size: u64,
    pub allocated: u64,
    pub chain_allocated: u64,
    pub chain: Vec<LayerWire>,
    pub snapshots: Vec<String>,
    pub clones: Vec<String>,
    pub origin: Option<String>,
    /// When it was made, RFC 3339 in UTC as kubectl prints times (`2026-12-07T15:30:00Z`).
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerWire {
    pub id: String,
    pub blob: String,
    pub allocated: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReportWire {
    pub bytes_freed: u64,
    pub layers_removed: usize,
    pub layers_sealed: usize,
    pub layers_deduplicated: usize,
}

impl From<VolumeInfo> for VolumeInfoWire {
    fn from(v: VolumeInfo) -> Self {
        VolumeInfoWire {
            name: v.name,
            kind: match v.kind {
                platter_snapshotter::Kind::Volume => "volume".into(),
                platter_snapshotter::Kind::Snapshot => "snapshot".into(),
            },
            size: v.size,
            allocated: v.allocated,
            chain_allocated: v.chain_allocated,
            chain: v
                .chain
                .into_iter()
                .map(|l| LayerWire {
                    id: l.id,
                    blob: l.blob,
                    allocated: l.allocated,
                })
                .collect(),
            snapshots: v.snapshots,
            clones: v.clones,
            origin: v.origin,
            created: platter_controller::rfc3339(v.created),
        }
    }
}

impl From<GcReport> for GcReportWire {
    fn from(g: GcReport) -> Self {
        GcReportWire {
            bytes_freed: g.bytes_freed,
            layers_removed: g.layers_removed,
            layers_sealed: g.layers_sealed,
            layers_deduplicated: g.layers_deduplicated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip_as_json() {
        let reqs = [
            Request::VolumeCreate {
                name: Name::new("a").unwrap(),
                size: 4096,
            },
            Request::VolumeDelete {
                target: VolumeRef::parse("a@b").unwrap(),
            },
            Request::VolumeExport {
                target: VolumeRef::parse("a").unwrap(),
                path: "/tmp/x".into(),
                format: ExportFormat::Qcow2,
                compression: Some(Compression::Zstd),
            },
        ];
        for r in reqs {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        }
    }

    #[test]
    fn every_response_round_trips() {
        let v = VolumeInfoWire {
            name: "a".into(),
            kind: "volume".into(),
            size: 1,
            allocated: 0,
            chain_allocated: 0,
            chain: vec![],
            snapshots: vec![],
            clones: vec![],
            origin: None,
            created: "1970-01-01T00:00:00Z".into(),
        };
        for r in [
            Response::Volume(v.clone()),
            Response::Volumes {
                items: vec![v.clone()],
            },
            Response::Imported {
                report: serde_json::json!({"format": "raw"}),
                volume: v,
            },
            Response::Pong { pid: 1 },
        ] {
            let line = serde_json::to_string(&Reply::Response(r.clone())).unwrap();
            assert_eq!(
                serde_json::from_str::<Reply>(&line).unwrap(),
                Reply::Response(r)
            );
        }
    }

    #[test]
    fn invalid_names_in_requests_are_refused() {
        let bad = r#"{"op":"volume_create","name":"../etc","size":4096}"#;
        assert!(serde_json::from_str::<Request>(bad).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(s in ".{0,200}") {
            let _ = serde_json::from_str::<Request>(&s);
            let _ = serde_json::from_str::<Reply>(&s);
        }
    }
}
