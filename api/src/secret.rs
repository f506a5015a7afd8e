//! The two core (`v1`) kinds that DataVolumes refer to: a `Secret` (registry and HTTP
//! credentials, headers that carry a token) and a `ConfigMap` (the CA certificates that
//! sign a source's server). Platter keeps them as objects of its store and reads them when
//! an import starts; nothing reconciles them.
//!
//! As the API server does, a Secret's `stringData` is folded into `data` (base64) when
//! the document is read, so the stored object has one map; `get -o yaml` shows `data`.

use std::collections::BTreeMap;

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validate::Causes;

/// The most a Secret or ConfigMap may hold, as Kubernetes limits it.
pub const MAX_DATA_BYTES: usize = 1 << 20;

/// CDI's keys for the user name and the password of a `secretRef`.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_KEY: &str = "secretKey";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `Opaque` (the default), `kubernetes.io/basic-auth`, …: kept, not acted on.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Values in base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Values as text; folded into `data` when read (a key in both takes this value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Values as UTF-8 text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Values in base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Secret {
    /// Folds `stringData` into `data`, as the API server does on every write.
    pub fn normalize(&mut self) {
        for (k, v) in std::mem::take(&mut self.string_data) {
            self.data.insert(k, b64().encode(v));
        }
    }

    /// The decoded values (of a normalized Secret), by key.
    pub fn values(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out = decode_map(&self.data, "data")?;
        for (k, v) in &self.string_data {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Ok(out)
    }

    /// The value of `key` as UTF-8 text.
    pub fn text(&self, key: &str) -> Result<Option<String>, String> {
        let values = self.values()?;
        let Some(v) = values.get(key) else {
            return Ok(None);
        };
        String::from_utf8(v.clone())
            .map(Some)
            .map_err(|_| format!("data.{key} is not UTF-8 text"))
    }
}

impl ConfigMap {
    /// Every value, text and binary, by key.
    pub fn values(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out = decode_map(&self.binary_data, "binaryData")?;
        for (k, v) in &self.data {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Ok(out)
    }
}

fn decode_map(
    m: &BTreeMap<String, String>,
    field: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    m.iter()
        .map(|(k, v)| {
            b64()
                .decode(v.trim())
                .map(|d| (k.clone(), d))
                .map_err(|e| format!("{field}.{k}: not valid base64: {e}"))
        })
        .collect()
}

/// A key of a Secret or ConfigMap: letters, digits, `-`, `_` and `.`, at most 253.
fn validate_key(key: &str, field: &str, causes: &mut Causes) {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() || key.len() > 253 || !key.chars().all(ok) || key == "." || key == ".." {
        causes.push(
            format!("{field}[{key}]"),
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
        );
    }
}

fn validate_size(values: &Result<BTreeMap<String, Vec<u8>>, String>, causes: &mut Causes) {
    if let Ok(v) = values {
        let total: usize = v.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > MAX_DATA_BYTES {
            causes.push(
                "data",
                format!("Too long: must have at most {MAX_DATA_BYTES} bytes (has {total})"),
            );
        }
    }
}

pub fn validate_secret(s: &Secret, causes: &mut Causes) {
    for k in s.data.keys() {
        validate_key(k, "data", causes);
    }
    for k in s.string_data.keys() {
        validate_key(k, "stringData", causes);
    }
    let values = s.values();
    if let Err(e) = &values {
        causes.push("data", e.clone());
    }
    validate_size(&values, causes);
}

pub fn validate_config_map(c: &ConfigMap, causes: &mut Causes) {
    for k in c.data.keys() {
        validate_key(k, "data", causes);
    }
    for k in c.binary_data.keys() {
        validate_key(k, "binaryData", causes);
        if c.data.contains_key(k) {
            causes.push(
                format!("binaryData[{k}]"),
                "duplicate of key present in data",
            );
        }
    }
    let values = c.values();
    if let Err(e) = &values {
        causes.push("binaryData", e.clone());
    }
    validate_size(&values, causes);
}

/// One header of `extraHeaders` (or a value of a `secretExtraHeaders` Secret), as CDI's
/// importer sends it: `Name: value`.
pub use platter_types::parse_header;

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
        let map = |x: &[(&str, &str)]| {
            x.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Secret {
            metadata: ObjectMeta::default(),
            type_: None,
            data: map(data),
            string_data: map(string_data),
            immutable: None,
        }
    }

    #[test]
    fn string_data_is_folded_into_data_and_wins() {
        let mut s = secret(
            &[("accessKeyId", "YWxpY2U=")],
            &[("accessKeyId", "bob"), ("secretKey", "pw")],
        );
        s.normalize();
        assert!(s.string_data.is_empty());
        assert_eq!(s.text(ACCESS_KEY_ID).unwrap().as_deref(), Some("bob"));
        assert_eq!(s.text(SECRET_KEY).unwrap().as_deref(), Some("pw"));
        assert_eq!(s.data["secretKey"], "cHc=");
    }

    #[test]
    fn bad_keys_base64_and_sizes_are_named() {
        let mut c = Causes::default();
        validate_secret(&secret(&[("a/b", "eA=="), ("ok", "%%%")], &[]), &mut c);
        let text = format!("{:?}", c.0);
        assert!(text.contains("data[a/b]"), "{text}");
        assert!(text.contains("data.ok: not valid base64"), "{text}");
        let mut c = Causes::default();
        let big = "x".repeat(MAX_DATA_BYTES + 1);
        validate_secret(&secret(&[], &[("k", &big)]), &mut c);
        assert!(format!("{:?}", c.0).contains("at most 1048576 bytes"));

        let cm = ConfigMap {
            metadata: ObjectMeta::default(),
            data: [("ca.pem".to_string(), "x".to_string())].into(),
            binary_data: [("ca.pem".to_string(), "eA==".to_string())].into(),
            immutable: None,
        };
        let mut c = Causes::default();
        validate_config_map(&cm, &mut c);
        assert_eq!(c.0[0].field, "binaryData[ca.pem]");
        assert_eq!(c.0[0].message, "duplicate of key present in data");
    }
}
