//! The `platter volume` commands as users and scripts run them: exit codes, one-line
//! errors, JSON output, and exports checked by the real `qemu-img`.

mod common;
use common::*;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use platter_snapshotter::Store;
use platter_types::VolumeRef;
use rand::{Rng, SeedableRng};

/// Writes random data with holes into a volume through the library.
fn fill(store: &Path, name: &str, size: u64) {
    let s = Store::open(store).unwrap();
    let v = s.open_volume(&VolumeRef::parse(name).unwrap()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut pos = 0;
    while pos < size {
        let len = rng.gen_range(4096..300_000).min(size - pos);
        if rng.gen_bool(0.5) {
            let buf: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            v.write_at(&buf, pos).unwrap();
        }
        pos += len + rng.gen_range(0..500_000);
    }
    v.flush().unwrap();
}

fn qemu_img(args: &[&str]) -> Output {
    Command::new("qemu-img").args(args).output().unwrap()
}

#[test]
fn volume_lifecycle_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    let v = json(st, &["volume", "create", "vm-disk", "--size", "10G"]);
    assert_eq!(v["size"], 10u64 << 30);
    assert_eq!(v["kind"], "volume");
    ok(st, &["volume", "snapshot", "vm-disk@base"]);
    ok(st, &["volume", "clone", "vm-disk@base", "vm2"]);
    let list = json(st, &["volume", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vm-disk", "vm-disk@base", "vm2"]);
    let table = ok(st, &["volume", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    let snap = json(st, &["volume", "inspect", "vm-disk@base"]);
    assert_eq!(snap["clones"][0], "vm2");
    let grown = json(st, &["volume", "resize", "vm2", "--size", "20G"]);
    assert_eq!(grown["size"], 20u64 << 30);
    let e = fails(st, &["volume", "delete", "vm-disk@base"]);
    assert!(e.contains("vm2") && e.contains("vm-disk@base"), "{e}");
    ok(st, &["volume", "delete", "vm2"]);
    ok(st, &["volume", "delete", "vm-disk"]);
    assert_eq!(json(st, &["volume", "list"]), serde_json::json!([]));
    let gc = json(st, &["volume", "gc"]);
    assert!(gc["bytes_freed"].is_u64());
}

#[test]
fn bad_input_is_a_one_line_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    ok(st, &["volume", "create", "a", "--size", "1G"]);
    let before = json(st, &["volume", "list"]);
    for (args, needle) in [
        (
            vec!["volume", "create", "Bad_Name", "--size", "1G"],
            "Bad_Name",
        ),
        (vec!["volume", "create", "b", "--size", "12X"], "12X"),
        (
            vec!["volume", "create", "b", "--size", "1000"],
            "multiple of 512",
        ),
        (
            vec!["volume", "create", "a", "--size", "1G"],
            "already exists",
        ),
        (vec!["volume", "resize", "a", "--size", "1M"], "shrink"),
        (vec!["volume", "inspect", "nope"], "nope"),
        (vec!["volume", "delete", "a@nope"], "a@nope"),
        (vec!["volume", "snapshot", "a"], "NAME@SNAP"),
    ] {
        let e = fails(st, &args);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    assert_eq!(
        json(st, &["volume", "list"]),
        before,
        "a refused command changed the store"
    );
    // A damaged metadata database is reported as such.
    let db = st.join("meta.redb");
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(st, &["volume", "list"]);
    assert!(e.contains("damaged") && e.contains("meta.redb"), "{e}");
}

#[test]
fn exports_are_sparse_and_qemu_img_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    let out = tempfile::tempdir().unwrap();
    let size: u64 = 24 << 20;
    ok(
        st,
        &["volume", "create", "src", "--size", &size.to_string()],
    );
    fill(st, "src", size);
    ok(st, &["volume", "snapshot", "src@s"]);
    let raw = out.path().join("src.raw");
    let rep = json(st, &["volume", "export", "src@s", raw.to_str().unwrap()]);
    let data = rep["bytes_written"].as_u64().unwrap();
    assert!(data > 0 && data < size);
    let m = std::fs::metadata(&raw).unwrap();
    assert_eq!(m.len(), size);
    assert!(
        m.blocks() * 512 < size * 3 / 4,
        "raw export is not sparse: {} allocated",
        m.blocks() * 512
    );
    for (name, extra) in [
        ("plain.qcow2", vec![]),
        ("zlib.qcow2", vec!["--compress", "zlib"]),
        ("zstd.qcow2", vec!["--compress", "zstd"]),
    ] {
        let q = out.path().join(name);
        let mut args = vec![
            "volume",
            "export",
            "src@s",
            q.to_str().unwrap(),
            "--format",
            "qcow2",
        ];
        args.extend(extra);
        ok(st, &args);
        let check = qemu_img(&["check", q.to_str().unwrap()]);
        assert!(
            check.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        assert!(
            String::from_utf8_lossy(&check.stdout).contains("No errors"),
            "{name}"
        );
        let cmp = qemu_img(&["compare", raw.to_str().unwrap(), q.to_str().unwrap()]);
        assert!(
            cmp.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&cmp.stdout)
        );
    }
    // A failed export leaves no file under the requested name.
    let e = fails(
        st,
        &[
            "volume",
            "export",
            "src",
            out.path().join("x.raw").to_str().unwrap(),
            "--compress",
            "zlib",
        ],
    );
    assert!(e.contains("qcow2"), "{e}");
    assert!(!out.path().join("x.raw").exists() && !out.path().join("x.raw.partial").exists());
}

/// One style for counts and sizes: `1 layer`, `0 B`, `1 MiB (1048576 bytes)`.
#[test]
fn counts_and_sizes_are_written_one_way() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    let out = ok(st, &["volume", "create", "a", "--size", "1M"]);
    assert!(out.contains("size       1 MiB (1048576 bytes)\n"), "{out}");
    assert!(out.contains("chain      1 layer: w-"), "{out}");
    ok(st, &["volume", "snapshot", "a@s"]);
    let out = ok(st, &["volume", "inspect", "a"]);
    assert!(out.contains("chain      2 layers: w-"), "{out}");
    let out = ok(st, &["volume", "gc"]);
    assert!(out.starts_with("freed 0 B; 0 layers removed, "), "{out}");
}

/// Scripts get one shape for a volume from every command that returns one (create,
/// inspect, list, snapshot, clone, resize, and import's `volume`), with RFC 3339 times as
/// kubectl prints them; `import -o json` names where the data went.
#[test]
fn every_command_returns_a_volume_in_one_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    let raw = st.join("x.raw");
    std::fs::write(&raw, vec![9u8; 1 << 20]).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let mut shapes = vec![
        json(st, &["volume", "create", "a", "--size", "1M"]),
        json(st, &["volume", "inspect", "a"]),
        json(st, &["volume", "snapshot", "a@s"]),
        json(st, &["volume", "clone", "a@s", "b"]),
        json(st, &["volume", "resize", "b", "--size", "2M"]),
    ];
    shapes.extend(
        json(st, &["volume", "list"])
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    let imported = json(st, &["import", raw.to_str().unwrap(), "c"]);
    assert_eq!(imported["volume"]["name"], "c", "{imported}");
    assert_eq!(imported["size"], 1 << 20, "{imported}");
    shapes.push(imported["volume"].clone());
    let first = keys(&shapes[0]);
    for s in &shapes {
        assert_eq!(keys(s), first, "{s}");
        let t = s["created"]
            .as_str()
            .unwrap_or_else(|| panic!("created: {s}"));
        let b = t.as_bytes();
        assert!(
            t.len() == 20 && b[4] == b'-' && b[10] == b'T' && t.ends_with('Z'),
            "not RFC 3339: {t}"
        );
    }
    let out = st.join("out.raw");
    let to_file = json(
        st,
        &[
            "import",
            raw.to_str().unwrap(),
            "--to-file",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(to_file["file"], out.to_str().unwrap(), "{to_file}");
}
