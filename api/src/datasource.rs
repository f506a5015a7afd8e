//! CDI's `DataSource` (cdi.kubevirt.io/v1beta1): a name for a golden image, a PVC or a
//! VolumeSnapshot, that DataVolumes clone through `spec.sourceRef` without knowing where
//! the image lives.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::datavolume::NamespacedName;
use crate::meta::ObjectMeta;
use crate::validate::Causes;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: DataSourceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSourceSpec {
    pub source: DataSourceSource,
}

/// Exactly one of a PVC (a platter volume, or a DataVolume's) and a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSourceSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<NamespacedName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<NamespacedName>,
}

pub fn validate_spec(spec: &DataSourceSpec, causes: &mut Causes) {
    let s = &spec.source;
    match (&s.pvc, &s.snapshot) {
        (Some(_), Some(_)) => causes.push(
            "spec.source",
            "DataSource source must have only one of pvc and snapshot",
        ),
        (None, None) => causes.push("spec.source", "DataSource source must have pvc or snapshot"),
        (Some(n), None) | (None, Some(n)) => {
            if n.name.is_empty() {
                let which = if s.pvc.is_some() { "pvc" } else { "snapshot" };
                causes.push(format!("spec.source.{which}.name"), "name is required");
            }
        }
    }
}
