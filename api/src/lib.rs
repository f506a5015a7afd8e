//! The objects users write to describe VMs and their disks, in the shapes KubeVirt and
//! CDI define: `DataVolume` (cdi.kubevirt.io/v1beta1), `VirtualMachine` and
//! `VirtualMachineInstance` (kubevirt.io/v1), `VirtualMachineSnapshot` and
//! `VirtualMachineRestore` (snapshot.kubevirt.io/v1beta1), each also accepted under
//! `platter.dev/v1beta1`; and the core `Secret` and `ConfigMap` (v1) that DataVolumes
//! read credentials, headers and CA certificates from.
//!
//! IO-free: types with serde and JSON schemas, the YAML document reader, Kubernetes
//! quantities, and validation with the upstream webhooks' messages. The reconcilers
//! (embedded in `platter serve`, or against a Kubernetes API) build on these types; this
//! crate never touches a file, a socket or a clock.
#![forbid(unsafe_code)]

pub mod datasource;
pub mod datavolume;
pub mod document;
pub mod meta;
pub mod quantity;
pub mod secret;
pub mod snapshot;
pub mod validate;
pub mod vm;

pub use datasource::DataSource;
pub use datavolume::DataVolume;
pub use document::{parse_documents, Document, DocumentError, Object};
pub use meta::{Condition, Kind, ObjectMeta};
pub use quantity::Quantity;
pub use secret::{ConfigMap, Secret};
pub use snapshot::{VirtualMachineRestore, VirtualMachineSnapshot};
pub use vm::{VirtualMachine, VirtualMachineInstance};

/// The JSON schema of a kind's documents (what `platter crdgen` will turn into CRDs).
pub fn schema(kind: Kind) -> schemars::Schema {
    match kind {
        Kind::DataVolume => schemars::schema_for!(DataVolume),
        Kind::DataSource => schemars::schema_for!(DataSource),
        Kind::VirtualMachine => schemars::schema_for!(VirtualMachine),
        Kind::VirtualMachineInstance => schemars::schema_for!(VirtualMachineInstance),
        Kind::VirtualMachineSnapshot => schemars::schema_for!(VirtualMachineSnapshot),
        Kind::VirtualMachineRestore => schemars::schema_for!(VirtualMachineRestore),
        Kind::Secret => schemars::schema_for!(Secret),
        Kind::ConfigMap => schemars::schema_for!(ConfigMap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_schema_with_its_fields() {
        for kind in Kind::ALL {
            let s = serde_json::to_value(schema(kind)).unwrap();
            let body = if kind.reconciled() { "spec" } else { "data" };
            assert!(s["properties"][body].is_object(), "{kind}: {s}");
        }
        let dv = serde_json::to_string(&schema(Kind::DataVolume)).unwrap();
        for field in [
            "sourceRef",
            "certConfigMap",
            "extraHeaders",
            "x-kubernetes-int-or-string",
        ] {
            assert!(dv.contains(field), "{field}");
        }
        let vm = serde_json::to_string(&schema(Kind::VirtualMachine)).unwrap();
        for field in [
            "dataVolumeTemplates",
            "runStrategy",
            "cloudInitNoCloud",
            "kernelBoot",
        ] {
            assert!(vm.contains(field), "{field}");
        }
    }
}
