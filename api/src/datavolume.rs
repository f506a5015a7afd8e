//! CDI's `DataVolume` (cdi.kubevirt.io/v1beta1): a disk and where its contents come from.
//! Here a DataVolume becomes a platter volume of the same name: imported (http,
//! registry), cloned in O(1) (pvc, snapshot), created empty (blank) or filled by
//! `platter upload` (upload).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{Condition, ObjectMeta, ResourceRequirements};
use crate::validate::Causes;
use crate::Quantity;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolume {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: DataVolumeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DataVolumeStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataVolumeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<DataVolumeSourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<PvcSpec>,
    /// "kubevirt" (a disk image, the default) or "archive" (refused here: a tar of files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preallocation: Option<bool>,
}

/// Where the contents come from: exactly one member is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataVolumeSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<NamespacedName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<NamespacedName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blank: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Empty>,
    /// CDI sources platter does not implement: recognised so they are refused by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imageio: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vddk: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `{}`: a source with no parameters (blank, upload).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSource {
    #[serde(default)]
    pub url: String,
    /// A Secret with `accessKeyId`/`secretKey` (basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    /// A ConfigMap holding the CA bundle that signs the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_config_map: Option<String>,
    /// `Name: value` headers sent with every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_extra_headers: Vec<String>,
    /// `sha256:HEX` (or sha512/md5) the download must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrySource {
    /// `docker://HOST/REPO[:TAG|@DIGEST]` or `oci-archive://PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_stream: Option<String>,
    /// "pod" or "node" (both pull through platter's importer here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_config_map: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlatformOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedName {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
}

impl NamespacedName {
    /// The namespace, or `default` (the referring object's) when none is given.
    pub fn namespace_or<'a>(&'a self, default: &'a str) -> &'a str {
        match self.namespace.as_str() {
            "" => default,
            ns => ns,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataVolumeSourceRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
}

/// `spec.pvc` (a PersistentVolumeClaimSpec) or `spec.storage` (the same fields, with
/// defaults filled in by CDI).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PvcSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    #[serde(default)]
    pub resources: ResourceRequirements,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// "Filesystem" or "Block".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}

impl PvcSpec {
    pub fn storage_request(&self) -> Option<&Quantity> {
        self.resources.requests.get("storage")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DataVolumePhase {
    Pending,
    PVCBound,
    ImportScheduled,
    ImportInProgress,
    CloneScheduled,
    CloneInProgress,
    UploadScheduled,
    UploadReady,
    WaitForFirstConsumer,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DataVolumePhase>,
    /// "45.00%" while importing, "100.0%" when done, "N/A" where there is nothing to count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
}

const ACCESS_MODES: [&str; 3] = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"];

/// What a source needs to be a clone (whose size may come from the source).
fn is_clone(spec: &DataVolumeSpec) -> bool {
    spec.source_ref.is_some()
        || spec
            .source
            .as_ref()
            .is_some_and(|s| s.pvc.is_some() || s.snapshot.is_some())
}

/// Validates a DataVolume spec as CDI's admission webhook does, in its words; `at` is
/// the spec's path (`spec`, or `spec.dataVolumeTemplates[0].spec` inside a VM).
pub fn validate_spec(spec: &DataVolumeSpec, at: &str, causes: &mut Causes) {
    let target = match (&spec.pvc, &spec.storage) {
        (None, None) => {
            return causes.push(format!("{at}.pvc"), "Missing Data volume PVC");
        }
        (Some(_), Some(_)) => {
            return causes.push(
                format!("{at}.pvc"),
                "Duplicate storage definition, both target storage and target pvc defined",
            );
        }
        (Some(p), None) => ("pvc", p),
        (None, Some(s)) => ("storage", s),
    };
    if !validate_target(spec, target, at, causes) {
        return;
    }
    if spec.source.is_some() == spec.source_ref.is_some() {
        return causes.push(
            format!("{at}.source"),
            "Data volume should have either Source or SourceRef",
        );
    }
    if let Some(r) = &spec.source_ref {
        let at = format!("{at}.sourceRef");
        if r.kind.is_empty() {
            causes.push(format!("{at}.kind"), "Missing sourceRef kind");
        } else if r.kind != "DataSource" {
            causes.push(
                format!("{at}.kind"),
                format!(
                    "Unsupported sourceRef kind {}, currently only DataSource is supported",
                    r.kind
                ),
            );
        } else if r.name.is_empty() {
            causes.push(format!("{at}.name"), "Missing sourceRef name");
        }
        return;
    }
    if let Some(source) = &spec.source {
        validate_source(spec, source, at, causes);
    }
}

/// `spec.pvc`/`spec.storage`: size and access modes. Returns whether to go on.
fn validate_target(
    spec: &DataVolumeSpec,
    (name, t): (&str, &PvcSpec),
    at: &str,
    causes: &mut Causes,
) -> bool {
    let size_at = format!("{at}.{name}.resources.requests.storage");
    let title = if name == "pvc" { "PVC" } else { "Storage" };
    match t.storage_request() {
        // spec.storage may leave the size out when it comes from a clone's source.
        None if name == "storage" && is_clone(spec) => {}
        None => {
            causes.push(size_at, format!("{title} size is missing"));
            return false;
        }
        Some(q) if q.is_zero() || q.value().is_err() => {
            causes.push(
                size_at,
                format!("{title} size can't be equal or less than zero"),
            );
            return false;
        }
        Some(_) => {}
    }
    let modes_at = format!("{at}.{name}.accessModes");
    if name == "pvc" {
        if t.access_modes.is_empty() {
            causes.push(
                modes_at,
                "Required value: at least 1 access mode is required",
            );
            return false;
        }
        if t.access_modes.len() > 1 {
            causes.push(modes_at, "PVC multiple accessModes");
            return false;
        }
    }
    if let Some(bad) = t
        .access_modes
        .iter()
        .find(|m| !ACCESS_MODES.contains(&m.as_str()))
    {
        causes.push(
            modes_at,
            format!("Unsupported value: \"{bad}\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\""),
        );
        return false;
    }
    if let Some(mode) = &t.volume_mode {
        if mode != "Filesystem" && mode != "Block" {
            causes.push(
                format!("{at}.{name}.volumeMode"),
                format!(
                    "Unsupported value: \"{mode}\": supported values: \"Block\", \"Filesystem\""
                ),
            );
            return false;
        }
    }
    true
}

fn validate_source(spec: &DataVolumeSpec, s: &DataVolumeSource, at: &str, causes: &mut Causes) {
    let src_at = format!("{at}.source");
    let set = [
        ("http", s.http.is_some()),
        ("registry", s.registry.is_some()),
        ("pvc", s.pvc.is_some()),
        ("snapshot", s.snapshot.is_some()),
        ("blank", s.blank.is_some()),
        ("upload", s.upload.is_some()),
        ("s3", s.s3.is_some()),
        ("gcs", s.gcs.is_some()),
        ("imageio", s.imageio.is_some()),
        ("vddk", s.vddk.is_some()),
    ];
    let named: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
    match named.as_slice() {
        [] => return causes.push(src_at, "Missing Data volume source"),
        [_] => {}
        _ => return causes.push(src_at, "Multiple Data volume sources"),
    }
    if let Some(unsupported) = ["s3", "gcs", "imageio", "vddk"]
        .into_iter()
        .find(|n| named.contains(n))
    {
        return causes.push(
            format!("{src_at}.{unsupported}"),
            format!("source {unsupported} is not supported by platter (it supports http, registry, pvc, snapshot, blank and upload)"),
        );
    }
    match spec.content_type.as_deref() {
        None | Some("") | Some("kubevirt") => {}
        Some("archive") => {
            return causes.push(
                format!("{at}.contentType"),
                "contentType archive is not supported by platter (a DataVolume here holds a disk image: kubevirt)",
            )
        }
        Some(_) => {
            return causes.push(
                format!("{at}.contentType"),
                "ContentType not one of: kubevirt, archive",
            )
        }
    }
    if let Some(h) = &s.http {
        let url_at = format!("{src_at}.http.url");
        if let Some(problem) = url_problem(&h.url) {
            return causes.push(url_at, format!("{src_at} {problem}"));
        }
        if let Some(c) = &h.checksum {
            if !valid_checksum(c) {
                causes.push(
                    format!("{src_at}.http.checksum"),
                    format!("checksum {c:?} must be sha256:HEX, sha512:HEX or md5:HEX"),
                );
            }
        }
        for (i, hdr) in h.extra_headers.iter().enumerate() {
            if let Err(e) = crate::secret::parse_header(hdr) {
                causes.push(format!("{src_at}.http.extraHeaders[{i}]"), e);
            }
        }
        access_names(
            &format!("{src_at}.http"),
            &h.secret_ref,
            &h.cert_config_map,
            causes,
        );
        for (i, name) in h.secret_extra_headers.iter().enumerate() {
            if name.is_empty() {
                causes.push(
                    format!("{src_at}.http.secretExtraHeaders[{i}]"),
                    "name is required",
                );
            }
        }
    }
    if let Some(r) = &s.registry {
        validate_registry(r, &src_at, causes);
    }
    for (which, nn) in [("pvc", &s.pvc), ("snapshot", &s.snapshot)] {
        if let Some(nn) = nn {
            if nn.namespace.is_empty() || nn.name.is_empty() {
                let title = if which == "pvc" { "PVC" } else { "snapshot" };
                causes.push(
                    format!("{src_at}.{which}"),
                    format!("{src_at}.{which} source {title} is not valid"),
                );
            }
        }
    }
}

/// A source's `secretRef` and `certConfigMap`, when given, must name something.
fn access_names(at: &str, secret: &Option<String>, cm: &Option<String>, causes: &mut Causes) {
    for (field, name) in [("secretRef", secret), ("certConfigMap", cm)] {
        if name.as_deref() == Some("") {
            causes.push(format!("{at}.{field}"), "name is required");
        }
    }
}

fn validate_registry(r: &RegistrySource, src_at: &str, causes: &mut Causes) {
    let url_at = format!("{src_at}.registry.url");
    if r.image_stream.is_some() {
        return causes.push(
            format!("{src_at}.registry.imageStream"),
            "registry imageStream is an OpenShift source: not supported by platter (give url)",
        );
    }
    let Some(url) = r.url.as_deref() else {
        return causes.push(url_at, "source registry should have url");
    };
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("docker") | Some("oci-archive")) {
        return causes.push(url_at, format!("Illegal registry source URL scheme {url}"));
    }
    access_names(
        &format!("{src_at}.registry"),
        &r.secret_ref,
        &r.cert_config_map,
        causes,
    );
    if let Some(m) = r.pull_method.as_deref() {
        if m != "pod" && m != "node" {
            causes.push(
                format!("{src_at}.registry.pullMethod"),
                format!("ImportMethod {m} is neither pod, node or \"\""),
            );
        }
    }
}

/// CDI's URL check: an absolute http(s) URL.
fn url_problem(url: &str) -> Option<String> {
    if url.is_empty() {
        return Some("source URL is empty".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(format!("Invalid source URL: {url}"));
    };
    if rest.is_empty() || rest.starts_with('/') || url.contains(char::is_whitespace) {
        return Some(format!("Invalid source URL: {url}"));
    }
    if scheme != "http" && scheme != "https" {
        return Some(format!("Invalid source URL scheme: {url}"));
    }
    None
}

fn valid_checksum(c: &str) -> bool {
    let Some((algo, hex)) = c.split_once(':') else {
        return false;
    };
    let len = match algo {
        "sha256" => 64,
        "sha512" => 128,
        "md5" => 32,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// CDI refuses any change of a DataVolume's spec once created.
pub const IMMUTABLE_SPEC: &str = "Cannot update DataVolume Spec";
