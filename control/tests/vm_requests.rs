//! The VM requests through the dispatcher in-process (no `platter serve`, no libvirt):
//! what is refused up front, with which kind and object, and the wire shapes.

use platter_control::api::{VmCreateParams, VmInfo};
use platter_control::{handle, Context, ControlError, ErrorKind, Request, Response};
use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn run(store: &Store, req: Request) -> Result<Response, ControlError> {
    handle(store, req, Context::default(), &mut |_| {})
}

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    run(
        &s,
        Request::VolumeCreate {
            name: name("a"),
            size: 1 << 20,
        },
    )
    .unwrap();
    (d, s)
}

#[test]
fn a_volume_a_vm_record_uses_is_not_deleted() {
    let (_d, s) = store();
    run(
        &s,
        Request::VolumeSnapshot {
            volume: name("a"),
            snapshot: name("s1"),
        },
    )
    .unwrap();
    let record = serde_json::json!({
        "name": "web",
        "disks": [{"volume": "a", "throwaway": false}],
    });
    run(
        &s,
        Request::VmPut {
            name: name("web"),
            record,
        },
    )
    .unwrap();
    let f = run(
        &s,
        Request::VolumeDelete {
            target: VolumeRef::parse("a").unwrap(),
        },
    )
    .unwrap_err()
    .failure();
    assert_eq!(f.kind, ErrorKind::InUse);
    assert_eq!(f.object.as_deref(), Some("volume a"));
    assert_eq!(
        f.message,
        "cannot delete volume a: vm web uses it (delete the vm first: `platter vm delete web`)"
    );
    // Its snapshot is not the VM's disk; once the record goes, the volume may go too.
    for target in ["a@s1", "a"] {
        if target == "a" {
            run(&s, Request::VmRemove { name: name("web") }).unwrap();
        }
        run(
            &s,
            Request::VolumeDelete {
                target: VolumeRef::parse(target).unwrap(),
            },
        )
        .unwrap();
    }
}

#[test]
fn vm_create_checks_what_it_can_before_it_needs_the_server() {
    let (_d, s) = store();
    let create = |p: VmCreateParams| run(&s, Request::VmCreate { params: p }).unwrap_err();

    let mut p = VmCreateParams::new(name("v1"));
    p.volume = Some(name("nosuch"));
    let f = create(p.clone()).failure();
    assert_eq!(
        (f.kind, f.object.as_deref(), f.message.as_str()),
        (
            ErrorKind::NotFound,
            Some("volume nosuch"),
            "vm v1: volume nosuch does not exist"
        )
    );

    p.memory = 0;
    assert_eq!(create(p.clone()).kind(), ErrorKind::Invalid);
    p.memory = 256 << 20;
    p.kernel = Some("/nonexistent/vmlinuz".into());
    let f = create(p.clone()).failure();
    assert_eq!(f.kind, ErrorKind::NotFound);
    assert_eq!(f.message, "--kernel /nonexistent/vmlinuz: no such file");
    p.kernel = None;

    p.volume = Some(name("a"));
    let f = create(p).failure();
    assert_eq!(f.kind, ErrorKind::Unavailable, "{f:?}");
    assert!(
        f.message
            .starts_with("platter serve is not running for store"),
        "{f:?}"
    );

    for req in [
        Request::VmStart {
            name: name("nosuch"),
            connect: None,
        },
        Request::VmDelete {
            name: name("nosuch"),
            connect: None,
        },
        Request::VmConsole {
            name: name("nosuch"),
            connect: None,
            follow: false,
        },
    ] {
        let f = run(&s, req).unwrap_err().failure();
        assert_eq!(
            (f.kind, f.message.as_str()),
            (ErrorKind::NotFound, "vm nosuch does not exist")
        );
    }
}

#[test]
fn vm_requests_and_the_vm_object_round_trip() {
    let mut p = VmCreateParams::new(name("v1"));
    p.image = Some("docker://127.0.0.1:5000/a:v1".into());
    p.kernel = Some("/k".into());
    for req in [
        Request::VmCreate { params: p },
        Request::VmStop {
            name: name("v1"),
            timeout: 30,
            connect: Some("test:///default".into()),
        },
        Request::VmStatus { connect: None },
        Request::ImageEnsure {
            source: "/tmp/disk.raw".into(),
            registry: Default::default(),
        },
    ] {
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(
            serde_json::from_str::<Request>(&line).unwrap(),
            req,
            "{line}"
        );
    }
    // Optional fields may be left out on the wire.
    let r: Request = serde_json::from_str(r#"{"op":"vm_status"}"#).unwrap();
    assert_eq!(r, Request::VmStatus { connect: None });

    let vm = VmInfo {
        name: "v1".into(),
        state: "running".into(),
        accel: "tcg".into(),
        accel_reason: "no kvm".into(),
        memory: 256 << 20,
        cpus: 1,
        uri: "qemu:///system".into(),
        disks: vec!["v1-disk".into()],
        cdroms: vec![],
        throwaway: vec!["v1-disk".into()],
        console_log: "/s/vms/v1.console.log".into(),
    };
    let v = serde_json::to_value(&vm).unwrap();
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "accel",
            "accel_reason",
            "cdroms",
            "console_log",
            "cpus",
            "disks",
            "memory",
            "name",
            "state",
            "throwaway",
            "uri"
        ]
    );
    let one = Response::VmInfo { vm: vm.clone() };
    let many = Response::VmInfos { items: vec![vm] };
    for r in [one, many] {
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), r);
    }
}
