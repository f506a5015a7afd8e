//! What other tools write, and what users are told (issue 23, items 11 and 5).
//!
//! containerDisks built without platter import byte for byte: by umoci (init, new,
//! unpack, repack: a `.` root entry), by `tar -C dir .` (`./`, `./disk/`), by `tar` of
//! `disk/disk.img` alone (no directory entry), by GNU tar in pax format (pax headers on
//! every entry, a long name in a `path` record) and in GNU format (`././@LongLink`). Each
//! is made an OCI image with umoci, pushed by skopeo to a real docker-registry and
//! imported from there. Sparse tarballs from GNU tar -S (old GNU and pax 1.0) expand. A missing tag, repository or digest is named as such, and an
//! empty input says it is empty.

mod common;

use common::*;
use platter_importer::{ImportError, ImportOptions};
use std::path::Path;

/// `root/disk/NAME` as KubeVirt wants it: `disk/` 0555, the file 0444, both 107:107.
fn kubevirt_tree(root: &Path, disk: &Path, name: &str) {
    let d = root.join("disk");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(disk, d.join(name)).unwrap();
    sh(&format!(
        "chown -R 107:107 {d} && chmod 0444 {d}/{name} && chmod 0555 {d}",
        d = d.display()
    ));
}

/// An OCI layout `lay` whose image `cd` has `layer` (an uncompressed tar) as its only
/// layer, added by umoci as it is (umoci gzips it).
fn layout_of_layer(lay: &Path, layer: &Path) {
    let l = lay.display();
    sh(&format!(
        "umoci init --layout {l} && umoci new --image {l}:cd && umoci raw add-layer --image {l}:cd {}",
        layer.display()
    ));
}

/// The names in the only layer of image `cd` of a layout, as GNU tar lists them.
fn layer_names(lay: &Path) -> Vec<String> {
    let l = lay.display();
    let listing = sh(&format!(
        "m=$(sed 's/.*\"digest\":\"sha256:\\([0-9a-f]*\\)\".*/\\1/' {l}/index.json) && \
         layer=$(tr ',' '\\n' < {l}/blobs/sha256/$m | grep -A1 'layer.v1.tar' | sed -n 's/.*sha256:\\([0-9a-f]*\\).*/\\1/p' | tail -1) && \
         tar -tzf {l}/blobs/sha256/$layer"
    ));
    listing.lines().map(str::to_string).collect()
}

/// Pushes image `cd` of `lay` with skopeo and imports it back from the registry.
fn push_and_import(reg: &Registry, lay: &Path, repo: &str, out: &Path) {
    let dest = format!("docker://{}", reg.reference(&format!("{repo}:v1")));
    run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:cd", lay.display()),
            &dest,
        ],
    );
    let r = import_file(&dest, out, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("importing {repo}: {e}"));
    assert!(r.member.is_some_and(|m| m.starts_with("disk/")), "{repo}");
}

#[test]
fn containerdisks_built_by_other_tools_import() {
    let reg = Registry::start_plain();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = d.display();
    let (raw, _) = make_raw(d, "disk.raw", 3 << 20, 71);
    let qcow = d.join("disk.qcow2");
    convert(&raw, &qcow, "qcow2", &[]);
    let long = format!("{}.qcow2", "q".repeat(120));

    // umoci: unpack an empty image, put the disk into its rootfs, repack.
    let lay = d.join("umoci");
    let l = lay.display();
    sh(&format!(
        "umoci init --layout {l} && umoci new --image {l}:cd && umoci unpack --image {l}:cd {ds}/bundle"
    ));
    kubevirt_tree(&d.join("bundle/rootfs"), &raw, "disk.img");
    sh(&format!("umoci repack --image {l}:cd {ds}/bundle"));
    let names = layer_names(&lay);
    assert!(names.iter().any(|n| n == "." || n == "./"), "{names:?}");

    // The tar spellings, each from a tree of its own.
    let cases: [(&str, &str, &Path, &str, &str); 4] = [
        (
            "dot",
            "disk.img",
            &raw,
            "tar -cf LAYER -C TREE .",
            "./disk/disk.img",
        ),
        (
            "nodir",
            "disk.img",
            &raw,
            "cd TREE && tar -cf LAYER disk/disk.img",
            "disk/disk.img",
        ),
        (
            "pax",
            &long,
            &qcow,
            "tar --format=posix -cf LAYER -C TREE .",
            "./",
        ),
        (
            "gnulong",
            &long,
            &qcow,
            "tar --format=gnu -cf LAYER -C TREE disk",
            "disk/",
        ),
    ];
    for (name, file, disk, cmd, expect) in cases {
        let tree = d.join(format!("tree-{name}"));
        kubevirt_tree(&tree, disk, file);
        let layer = d.join(format!("{name}.tar"));
        sh(&cmd
            .replace("LAYER", layer.to_str().unwrap())
            .replace("TREE", tree.to_str().unwrap()));
        let lay = d.join(format!("lay-{name}"));
        layout_of_layer(&lay, &layer);
        let names = layer_names(&lay);
        assert!(names.iter().any(|n| n == expect), "{name}: {names:?}");
        if name == "nodir" {
            assert_eq!(names, ["disk/disk.img"]);
        }
        // The layer holds the headers this case is about (tar lists names after them).
        let bytes = read(&layer);
        let has = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
        match name {
            "pax" => assert!(has(b" path=./disk/qqq") && has(b" mtime="), "{name}"),
            "gnulong" => assert!(has(b"././@LongLink"), "{name}"),
            _ => {}
        }
    }

    let out = d.join("umoci.out");
    push_and_import(&reg, &lay, "interop/umoci", &out);
    assert_eq!(read(&out), read(&raw), "umoci");
    for (name, fmt) in [
        ("dot", "raw"),
        ("nodir", "raw"),
        ("pax", "qcow2"),
        ("gnulong", "qcow2"),
    ] {
        let out = d.join(format!("{name}.out"));
        push_and_import(
            &reg,
            &d.join(format!("lay-{name}")),
            &format!("interop/{name}"),
            &out,
        );
        let src = if fmt == "raw" { &raw } else { &qcow };
        assert_same(&out, src, fmt);
        assert_eq!(read(&out), read(&raw), "{name}");
    }
}

#[test]
fn sparse_tarballs_import() {
    // GNU tar -S writes old GNU `S` members by default and pax 1.0 sparse members with
    // --format=posix; both are expanded, read by offset (a .tar file), streamed (.tar.gz)
    // and as a containerDisk layer.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = d.display();
    let (raw, _) = make_raw(d, "disk.raw", 4 << 20, 73);
    sh(&format!(
        "cd {ds} && mkdir -p tree/disk && cp --sparse=always disk.raw tree/disk/disk.img && \
         tar -Scf gnu.tar disk.raw && tar --format=posix -Scf pax.tar disk.raw && \
         gzip -1 -k gnu.tar && gzip -1 -k pax.tar && \
         tar -Scf layer-gnu.tar -C tree disk && tar --format=posix -Scf layer-pax.tar -C tree disk"
    ));
    let gnu = read(&d.join("gnu.tar"));
    assert_eq!(gnu.get(156), Some(&b'S'), "GNU tar wrote no sparse member");
    let pax = read(&d.join("pax.tar"));
    assert!(pax.windows(18).any(|w| w == b"GNU.sparse.major=1"));
    for name in ["gnu.tar", "pax.tar", "gnu.tar.gz", "pax.tar.gz"] {
        let out = d.join(format!("{name}.out"));
        let r = import_file(
            d.join(name).to_str().unwrap(),
            &out,
            &ImportOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.member.as_deref(), Some("disk.raw"), "{name}");
        assert_eq!(read(&out), read(&raw), "{name}");
    }
    for name in ["gnu", "pax"] {
        let lay = d.join(format!("lay-{name}"));
        layout_of_layer(&lay, &d.join(format!("layer-{name}.tar")));
        let out = d.join(format!("layer-{name}.out"));
        import_file(
            &format!("oci:{}:cd", lay.display()),
            &out,
            &ImportOptions::default(),
        )
        .unwrap_or_else(|e| panic!("layer {name}: {e}"));
        assert_eq!(read(&out), read(&raw), "layer {name}");
    }
}

#[test]
fn missing_tags_repositories_and_inputs_are_named() {
    let reg = Registry::start_plain();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = make_raw(d, "disk.raw", 1 << 20, 72);
    let tree = d.join("tree");
    kubevirt_tree(&tree, &raw, "disk.img");
    let layer = d.join("layer.tar");
    sh(&format!(
        "tar -cf {} -C {} disk",
        layer.display(),
        tree.display()
    ));
    let lay = d.join("lay");
    layout_of_layer(&lay, &layer);
    push_and_import(&reg, &lay, "vm", &d.join("ok.out"));

    let host = reg.reference("").trim_end_matches('/').to_string();
    let err = |source: &str, name: &str| -> ImportError {
        let e = import_file(source, &d.join(name), &ImportOptions::default()).unwrap_err();
        assert_nothing_left(d, name);
        e
    };
    let e = err(&format!("docker://{host}/vm:nosuchtag"), "tag.out");
    assert_eq!(e.to_string(), format!("no tag nosuchtag in {host}/vm"));
    let e = err(&format!("docker://{host}/nosuchrepo:v1"), "repo.out");
    assert_eq!(
        e.to_string(),
        format!("no repository nosuchrepo in registry {host}")
    );
    let digest = format!("sha256:{}", "0".repeat(64));
    let e = err(&format!("docker://{host}/vm@{digest}"), "digest.out");
    assert_eq!(e.to_string(), format!("no manifest {digest} in {host}/vm"));

    // An empty file, and an empty disk inside a tar, say they are empty.
    let empty = d.join("empty.raw");
    std::fs::write(&empty, b"").unwrap();
    let e = err(empty.to_str().unwrap(), "empty.out");
    assert_eq!(
        e.to_string(),
        format!(
            "{} is empty: there is no disk image to import",
            empty.display()
        )
    );
    sh(&format!(
        "cd {} && tar -cf empty.tar empty.raw && gzip -c empty.tar > empty.tgz",
        d.display()
    ));
    let tgz = d.join("empty.tgz");
    let e = err(tgz.to_str().unwrap(), "emptytar.out");
    assert_eq!(
        e.to_string(),
        format!(
            "{} member empty.raw is empty: there is no disk image to import",
            tgz.display()
        )
    );
    // With --size an empty input is a blank disk of that size.
    let out = d.join("blank.out");
    let opts = ImportOptions {
        size: Some(1 << 20),
        ..Default::default()
    };
    import_file(empty.to_str().unwrap(), &out, &opts).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 1 << 20);
}
