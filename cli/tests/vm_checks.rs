//! VMs and volumes checked against each other (issue 23 item 2), with no guest booted:
//! libvirt is its `test:///default` driver, so no libvirtd is needed. Each refusal is one
//! exact line with its exit status, the same in-process and through `platter serve`.

mod common;
use common::*;

use std::path::Path;

const TEST_URI: &str = "test:///default";

/// `platter ARGS` fails with exactly `line` on stderr and exit status `code`.
fn says(st: &Path, args: &[&str], line: &str, code: i32) {
    let out = platter(st, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end(), line, "platter {args:?}");
    assert_eq!(out.status.code(), Some(code), "platter {args:?}: {err}");
}

fn volume_names(st: &Path) -> Vec<String> {
    json(st, &["volume", "list", "--all"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// A 1 MiB raw disk image (not an ISO) in `dir`.
fn raw_disk(dir: &Path) -> String {
    let p = dir.join("disk.raw");
    std::fs::write(&p, vec![7u8; 1 << 20]).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn vm_create_refuses_a_volume_that_does_not_exist_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("store");
    ok(&st, &["volume", "create", "x", "--size", "1M"]);
    let line = "platter: error: vm v1: volume nosuch does not exist";
    let cases: [&[&str]; 2] = [
        &["vm", "create", "v1", "--volume", "nosuch"],
        // Nothing is fetched: this registry does not exist, and is never asked.
        &[
            "vm",
            "create",
            "v1",
            "--volume",
            "nosuch",
            "--image",
            "docker://127.0.0.1:9/nothing/here:v1",
        ],
    ];
    for args in cases {
        says(&st, args, line, 1);
    }
    let _srv = Serve::start(&st);
    for args in cases {
        says(&st, args, line, 1);
    }
    let e = json_error(&st, cases[0]);
    assert_eq!(e["kind"], "not_found", "{e}");
    assert_eq!(e["object"], "volume nosuch", "{e}");
    assert_eq!(volume_names(&st), ["x"]);
}

#[test]
fn a_disk_image_next_to_a_volume_is_refused_before_it_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("store");
    let disk = raw_disk(dir.path());
    ok(&st, &["volume", "create", "x", "--size", "1M"]);
    let _srv = Serve::start(&st);
    says(
        &st,
        &[
            "vm",
            "create",
            "v1",
            "--volume",
            "x",
            "--image",
            &disk,
            "--connect",
            TEST_URI,
        ],
        &format!(
            "platter: error: vm v1: image {disk} is a disk image, not an ISO: --volume with \
             --image attaches an ISO as a CD-ROM next to the volume; boot a disk image with \
             --image alone"
        ),
        2,
    );
    assert_eq!(volume_names(&st), ["x"], "the image was imported");
}

#[test]
fn volume_delete_refuses_a_volume_a_vm_uses_naming_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("store");
    let disk = raw_disk(dir.path());
    ok(&st, &["volume", "create", "x", "--size", "1M"]);
    ok(&st, &["volume", "snapshot", "x@s1"]);
    let srv = Serve::start(&st);
    ok(
        &st,
        &["vm", "create", "v1", "--volume", "x", "--connect", TEST_URI],
    );
    ok(
        &st,
        &[
            "vm",
            "create",
            "v2",
            "--image",
            &disk,
            "--connect",
            TEST_URI,
        ],
    );
    let refusals = [
        (
            "x",
            "platter: error: cannot delete volume x: vm v1 uses it (delete the vm first: `platter vm delete v1`)",
        ),
        (
            "v2-disk",
            "platter: error: cannot delete volume v2-disk: vm v2 uses it (delete the vm first: `platter vm delete v2`)",
        ),
    ];
    for (volume, line) in refusals {
        says(&st, &["volume", "delete", volume], line, 1);
    }
    let e = json_error(&st, &["volume", "delete", "x"]);
    assert_eq!(e["kind"], "in_use", "{e}");
    assert_eq!(e["object"], "volume x", "{e}");
    // The image cache a VM's disk was cloned from says which clone needs it.
    let cache: Vec<String> = volume_names(&st)
        .into_iter()
        .filter(|v| v.starts_with("img-"))
        .collect();
    assert_eq!(cache.len(), 2, "{cache:?}");
    for c in &cache {
        let err = fails(&st, &["volume", "delete", c]);
        assert!(
            err.ends_with(": clone v2-disk depends on it (delete the clones first)"),
            "{err}"
        );
    }
    drop(srv);
    // The same refusal without a server, from the same records.
    for (volume, line) in refusals {
        says(&st, &["volume", "delete", volume], line, 1);
    }
    // A snapshot no VM uses goes as before.
    ok(&st, &["volume", "delete", "x@s1"]);

    let _srv = Serve::start(&st);
    ok(&st, &["vm", "delete", "v1", "--connect", TEST_URI]);
    ok(&st, &["vm", "delete", "v2", "--connect", TEST_URI]);
    ok(&st, &["volume", "delete", "x"]);
    let left = volume_names(&st);
    assert!(
        !left.is_empty() && left.iter().all(|v| v.starts_with("img-")),
        "only the image cache stays: {left:?}"
    );
    // It is the store's own: listed only with --all.
    let shown = json(&st, &["volume", "list"]);
    assert_eq!(shown, serde_json::json!([]), "{shown}");
    let table = ok(&st, &["volume", "list"]);
    assert!(!table.contains("img-"), "{table}");
}

#[test]
fn vm_create_and_vm_list_print_one_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("store");
    let disk = raw_disk(dir.path());
    ok(&st, &["volume", "create", "x", "--size", "1M"]);
    let _srv = Serve::start(&st);
    let created = [
        json(
            &st,
            &["vm", "create", "v1", "--volume", "x", "--connect", TEST_URI],
        ),
        json(
            &st,
            &[
                "vm",
                "create",
                "v2",
                "--image",
                &disk,
                "--connect",
                TEST_URI,
            ],
        ),
    ];
    let listed = json(&st, &["vm", "list", "--connect", TEST_URI]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    for (c, l) in created.iter().zip(listed) {
        assert_eq!(keys(c), keys(l), "create: {c}\nlist: {l}");
        // The same object: only the state is libvirt's of the moment.
        let (mut c, mut l) = (c.clone(), l.clone());
        c["state"] = serde_json::Value::Null;
        l["state"] = serde_json::Value::Null;
        assert_eq!(c, l);
    }
    assert_eq!(created[0]["disks"], serde_json::json!(["x"]));
    assert_eq!(created[0]["memory"], 512 << 20);
    assert_eq!(created[0]["accel"], "tcg");
    assert_eq!(created[1]["disks"], serde_json::json!(["v2-disk"]));
    assert_eq!(created[1]["throwaway"], serde_json::json!(["v2-disk"]));
    for vm in ["v1", "v2"] {
        ok(&st, &["vm", "delete", vm, "--connect", TEST_URI]);
    }
}

/// The error of a failing `-o json` command (one JSON line on stderr).
fn json_error(st: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    let err = fails(st, &a);
    serde_json::from_str::<serde_json::Value>(&err).unwrap()["error"].clone()
}
