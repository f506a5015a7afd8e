//! Documents in the shapes KubeVirt's and CDI's documentation write them, valid and
//! invalid: each invalid one is refused naming the document, the field and the reason.

use platter_api::document::parse_documents;
use platter_api::{Kind, Object};

fn parse_ok(text: &str) -> Vec<platter_api::Document> {
    parse_documents(text)
        .expect("yaml")
        .into_iter()
        .map(|d| d.unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The error text of a file holding one invalid document.
fn refused(text: &str) -> String {
    let mut docs = parse_documents(text).expect("yaml");
    assert_eq!(docs.len(), 1);
    match docs.remove(0) {
        Ok(d) => panic!("accepted: {d:?}"),
        Err(e) => e.to_string(),
    }
}

const DV_HEAD: &str =
    "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: d1\nspec:\n";

fn dv(spec: &str) -> String {
    format!("{DV_HEAD}{spec}")
}

#[test]
fn upstream_shaped_fixtures_parse() {
    let docs = parse_ok(include_str!("fixtures/vm-with-dvtemplate.yaml"));
    let kinds: Vec<Kind> = docs.iter().map(|d| d.object.kind()).collect();
    assert_eq!(
        kinds,
        [
            Kind::VirtualMachine,
            Kind::DataVolume,
            Kind::DataVolume,
            Kind::DataVolume,
            Kind::VirtualMachineSnapshot,
            Kind::VirtualMachineRestore,
            Kind::VirtualMachineInstance,
        ]
    );
    let vm = &docs[0];
    assert_eq!(
        vm.ignored,
        [
            "spec.template.spec.networks",
            "spec.template.spec.domain.firmware.bootloader.bios",
            "spec.template.spec.domain.devices.interfaces",
            "spec.template.spec.domain.devices.rng",
        ]
    );
    let Object::VirtualMachine(v) = &vm.object else {
        panic!()
    };
    let size = v.spec.data_volume_templates[0]
        .spec
        .storage
        .as_ref()
        .and_then(|s| s.storage_request())
        .unwrap();
    assert_eq!(size.value(), Ok(500 << 20));
    assert_eq!(size.as_str(), "000500Mi");
    assert_eq!(v.spec.template.spec.domain.cpu.as_ref().unwrap().vcpus(), 2);
    assert_eq!(docs[1].object.namespace(), "default");
}

#[test]
fn cdi_validation_messages() {
    for (spec, field, message) in [
        (
            "  source:\n    blank: {}\n    upload: {}\n  pvc:\n    accessModes: [ReadWriteOnce]\n    resources: {requests: {storage: 1Gi}}\n",
            "spec.source",
            "Multiple Data volume sources",
        ),
        (
            "  pvc:\n    accessModes: [ReadWriteOnce]\n    resources: {requests: {storage: 1Gi}}\n",
            "spec.source",
            "Data volume should have either Source or SourceRef",
        ),
        ("  source:\n    blank: {}\n", "spec.pvc", "Missing Data volume PVC"),
        (
            "  source:\n    blank: {}\n  pvc:\n    accessModes: [ReadWriteOnce]\n",
            "spec.pvc.resources.requests.storage",
            "PVC size is missing",
        ),
        (
            "  source:\n    blank: {}\n  storage: {}\n",
            "spec.storage.resources.requests.storage",
            "Storage size is missing",
        ),
        (
            "  source:\n    blank: {}\n  pvc:\n    resources: {requests: {storage: 1Gi}}\n",
            "spec.pvc.accessModes",
            "Required value: at least 1 access mode is required",
        ),
        (
            "  source:\n    blank: {}\n  storage:\n    resources: {requests: {storage: '0'}}\n",
            "spec.storage.resources.requests.storage",
            "Storage size can't be equal or less than zero",
        ),
        (
            "  source:\n    http: {url: 'ftp://x/y'}\n  storage:\n    resources: {requests: {storage: 1Gi}}\n",
            "spec.source.http.url",
            "spec.source Invalid source URL scheme: ftp://x/y",
        ),
        (
            "  source:\n    registry: {url: 'http://r/i'}\n  storage:\n    resources: {requests: {storage: 1Gi}}\n",
            "spec.source.registry.url",
            "Illegal registry source URL scheme http://r/i",
        ),
        (
            "  source:\n    s3: {url: 'https://b/k'}\n  storage:\n    resources: {requests: {storage: 1Gi}}\n",
            "spec.source.s3",
            "source s3 is not supported by platter",
        ),
        (
            "  sourceRef:\n    kind: PVC\n    name: x\n  storage:\n    resources: {requests: {storage: 1Gi}}\n",
            "spec.sourceRef.kind",
            "Unsupported sourceRef kind PVC, currently only DataSource is supported",
        ),
        (
            "  source:\n    pvc: {name: x}\n  storage: {}\n",
            "spec.source.pvc",
            "spec.source.pvc source PVC is not valid",
        ),
    ] {
        let e = refused(&dv(spec));
        assert!(
            e.starts_with("document 1 (DataVolume d1): ") && e.contains(&format!("{field}: {message}")),
            "{spec}\n=> {e}"
        );
    }
}

#[test]
fn quantities_and_unknown_fields_are_refused_with_their_path() {
    let e = refused(&dv(
        "  source:\n    blank: {}\n  storage:\n    resources: {requests: {storage: 2Ng}}\n",
    ));
    assert!(e.contains("spec.storage.resources.requests.storage"), "{e}");
    assert!(
        e.contains("quantities must match the regular expression"),
        "{e}"
    );
    let e = refused(&dv(
        "  source:\n    blank: {}\n  storage: {}\n  sourcez: {}\n",
    ));
    assert!(e.contains("unknown field `sourcez`"), "{e}");
    // A VM field platter neither implements nor lists as ignored: refused by name.
    let e = refused(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: v}\nspec:\n  instancetype: {name: u1.small}\n  template:\n    spec:\n      domain: {memory: {guest: 1Gi}}\n",
    );
    assert!(e.contains("unknown field `instancetype`"), "{e}");
}

#[test]
fn kubevirt_validation_messages() {
    let vm = |spec: &str| {
        format!("apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: v}}\nspec:\n{spec}")
    };
    let tpl = "  template:\n    spec:\n      domain:\n        memory: {guest: 128Mi}\n        devices: {disks: [{name: a, disk: {}}]}\n      volumes: [{name: a, containerDisk: {image: 'r/i:t'}}]\n";
    let e = refused(&vm(&format!(
        "  running: true\n  runStrategy: Always\n{tpl}"
    )));
    assert!(
        e.contains("spec.running: Running and RunStrategy are mutually exclusive"),
        "{e}"
    );
    let e = refused(&vm(&format!("  runStrategy: Sometimes\n{tpl}")));
    assert!(
        e.contains("spec.runStrategy: Invalid RunStrategy (Sometimes)"),
        "{e}"
    );
    let e = refused(&vm("  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        memory: {guest: 128Mi}\n        devices: {disks: [{name: b, disk: {}}]}\n      volumes: [{name: a, containerDisk: {image: 'r/i:t'}}]\n"));
    assert!(
        e.contains("spec.template.spec.domain.devices.disks[0].name 'b' not found."),
        "{e}"
    );
    let e = refused(&vm("  runStrategy: Halted\n  dataVolumeTemplates:\n  - metadata: {name: orphan}\n    spec: {source: {blank: {}}, storage: {resources: {requests: {storage: 1Gi}}}}\n  template:\n    spec:\n      domain: {memory: {guest: 128Mi}}\n"));
    assert!(e.contains("DataVolumeTemplate entry spec.dataVolumeTemplate[0] must be referenced in the VMI template's 'volumes' list"), "{e}");
    let e = refused(&vm(
        "  runStrategy: Halted\n  template:\n    spec:\n      domain: {}\n",
    ));
    assert!(e.contains("domain.memory.guest must be set"), "{e}");
    let kb = |firmware: &str| {
        vm(&format!("  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        memory: {{guest: 128Mi}}\n        firmware: {{kernelBoot: {firmware}}}\n"))
    };
    for (firmware, message) in [
        ("{kernelArgs: quiet}", "kernelBoot.kernelArgs: spec.template.spec.domain.firmware.kernelBoot.kernelArgs can be provided only with an external kernel"),
        ("{container: {image: 'r/k:1'}}", "kernelBoot.container: spec.template.spec.domain.firmware.kernelBoot.container must be defined with at least one of the following: kernelPath, initrdPath"),
        ("{container: {image: '', kernelPath: /boot/k}}", "kernelBoot.container.image: spec.template.spec.domain.firmware.kernelBoot.container must be defined with an image"),
        ("{container: {image: 'r/k:1', kernelPath: boot/k}}", "kernelBoot.container.kernelPath: spec.template.spec.domain.firmware.kernelBoot.container.kernelPath must be an absolute path to a file without relative components"),
        ("{container: {image: 'r/k:1', kernelPath: /boot/k, initrdPath: /boot/../i}}", "container.initrdPath must be an absolute path"),
    ] {
        let e = refused(&kb(firmware));
        assert!(e.contains(message), "{firmware}: {e}");
    }
    parse_ok(&kb("{kernelArgs: 'console=ttyS0', container: {image: 'r/k:1', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}"));
    let ci = |ci: &str| {
        vm(&format!("  runStrategy: Halted\n  template:\n    spec:\n      domain: {{memory: {{guest: 128Mi}}}}\n      volumes: [{{name: ci, cloudInitNoCloud: {ci}}}]\n"))
    };
    for (c, message) in [
        ("{userData: a, userDataBase64: YQ==}", "spec.template.spec.volumes[0].cloudInitNoCloud: spec.template.spec.volumes[0].cloudInitNoCloud must have only one userdatasource set."),
        ("{networkData: a, networkDataBase64: YQ==}", "must have only one networkdata source set."),
        ("{userDataBase64: '!!!'}", "cloudInitNoCloud.userDataBase64: userDataBase64 is not valid base64"),
        ("{networkDataBase64: '%%'}", "cloudInitNoCloud.networkDataBase64: networkDataBase64 is not valid base64"),
    ] {
        let e = refused(&ci(c));
        assert!(e.contains(message), "{c}: {e}");
    }
    parse_ok(&ci(
        "{userData: '#cloud-config', networkDataBase64: dmVyc2lvbjogMgo=}",
    ));
    // Neither running nor runStrategy: Halted, as KubeVirt defaults it.
    let docs = parse_ok(&vm(tpl));
    let Object::VirtualMachine(v) = &docs[0].object else {
        panic!()
    };
    assert_eq!(
        v.spec.strategy(),
        Some(platter_api::vm::RunStrategy::Halted)
    );
}

#[test]
fn datasources_name_exactly_one_source() {
    let ds = |source: &str| {
        format!("apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataSource\nmetadata: {{name: g}}\nspec:\n  source: {source}\n")
    };
    let e = refused(&ds("{pvc: {name: a}, snapshot: {name: b}}"));
    assert!(
        e.contains("spec.source: DataSource source must have only one of pvc and snapshot"),
        "{e}"
    );
    let e = refused(&ds("{}"));
    assert!(
        e.contains("spec.source: DataSource source must have pvc or snapshot"),
        "{e}"
    );
    let e = refused(&ds("{pvc: {namespace: x}}"));
    assert!(e.contains("spec.source.pvc.name: name is required"), "{e}");
    let docs = parse_ok(&ds("{snapshot: {namespace: golden, name: fedora}}"));
    assert_eq!(docs[0].object.kind(), Kind::DataSource);
    assert_eq!(Kind::from_cli("das"), Some(Kind::DataSource));
}

#[test]
fn document_level_errors_name_the_document() {
    let e = refused("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");
    assert!(e.contains("kind \"Pod\" is not one platter knows"), "{e}");
    let e = refused(
        "apiVersion: kubevirt.io/v2\nkind: VirtualMachine\nmetadata: {name: p}\nspec: {}\n",
    );
    assert!(
        e.contains("apiVersion \"kubevirt.io/v2\" is not one platter accepts for VirtualMachine"),
        "{e}"
    );
    let e = refused("kind: DataVolume\nmetadata: {name: p}\n");
    assert!(e.contains("apiVersion: apiVersion is required"), "{e}");
    let e = refused(
        &dv("  source: {blank: {}}\n  storage: {resources: {requests: {storage: 1Gi}}}\n")
            .replace("name: d1", "name: Bad_Name"),
    );
    assert!(
        e.contains("metadata.name: a lowercase RFC 1123 subdomain"),
        "{e}"
    );
    let e = refused(
        &dv("  source: {blank: {}}\n  storage: {resources: {requests: {storage: 1Gi}}}\n")
            .replace("name: d1", "generateName: d-"),
    );
    assert!(e.contains("cannot use generate name with apply"), "{e}");
    assert!(
        parse_documents("a: [b\n").is_err(),
        "broken YAML is one error for the file"
    );
    // Several documents: the good ones parse, each bad one has its own index.
    let two = format!(
        "{}\n---\napiVersion: v1\nkind: Pod\n",
        dv("  source: {blank: {}}\n  storage: {resources: {requests: {storage: 1Gi}}}\n")
    );
    let docs = parse_documents(&two).unwrap();
    assert!(docs[0].is_ok());
    assert_eq!(docs[1].as_ref().unwrap_err().index, 2);
}

#[test]
fn kinds_by_kubectl_names() {
    for (name, kind) in [
        ("dv", Kind::DataVolume),
        ("datavolumes", Kind::DataVolume),
        ("DataVolume", Kind::DataVolume),
        ("dv.cdi.kubevirt.io", Kind::DataVolume),
        ("vm", Kind::VirtualMachine),
        ("vmi", Kind::VirtualMachineInstance),
        ("vmsnapshot", Kind::VirtualMachineSnapshot),
        ("vmrestores", Kind::VirtualMachineRestore),
    ] {
        assert_eq!(Kind::from_cli(name), Some(kind), "{name}");
    }
    assert_eq!(Kind::from_cli("pods"), None);
}

mod arbitrary {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = platter_api::parse_documents(&s);
        }

        #[test]
        fn arbitrary_json_documents_never_panic(
            keys in proptest::collection::vec("[a-zA-Z]{1,12}", 0..8),
            kind in prop_oneof![Just("DataVolume"), Just("VirtualMachine"), Just("VirtualMachineSnapshot"), Just("VirtualMachineRestore"), Just("VirtualMachineInstance")],
        ) {
            let mut spec = serde_json::Map::new();
            for (i, k) in keys.iter().enumerate() {
                spec.insert(k.clone(), if i % 2 == 0 { serde_json::json!({}) } else { serde_json::json!([1, "x"]) });
            }
            let doc = serde_json::json!({"apiVersion": "platter.dev/v1beta1", "kind": kind, "metadata": {"name": "x"}, "spec": spec});
            let _ = platter_api::document::parse_document(1, doc);
        }
    }
}

/// One file holds ten thousand objects (the store is built for that many): more than the
/// YAML parser's default budget of 1,024 documents.
#[test]
fn ten_thousand_documents_in_one_file() {
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!(
            "---\napiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: d{i}\nspec:\n  source:\n    blank: {{}}\n  storage:\n    resources:\n      requests:\n        storage: 1Mi\n"
        ));
    }
    let docs = parse_ok(&text);
    assert_eq!(docs.len(), 10_000);
    assert_eq!(docs[9_999].object.metadata().name.as_deref(), Some("d9999"));
}
