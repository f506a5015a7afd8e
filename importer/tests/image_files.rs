//! Files out of ordinary container images (what `kernelBoot.container` reads), built by
//! the real umoci: the top-most layer that holds a path gives it, whiteouts hide lower
//! layers' files, links and damaged layers are refused, and a failed extraction leaves
//! nothing at the destinations.

mod common;

use common::*;
use platter_importer::{extract_files, ImportError, ImportOptions, NoProgress, WantedFile};
use std::path::{Path, PathBuf};

/// An OCI layout `L` in `dir` with tags: `one` (boot/vmlinuz = "kernel-1", boot/initrd.img
/// = "initrd-1", boot/link -> vmlinuz) and `two` (`one` plus a layer that replaces vmlinuz
/// with "kernel-2" and deletes initrd.img).
fn layout(dir: &Path) -> PathBuf {
    let d = dir.display();
    sh(&format!(
        "cd {d} && umoci init --layout L && umoci new --image L:one \
         && umoci unpack --image L:one b >/dev/null && mkdir -p b/rootfs/boot \
         && printf kernel-1 > b/rootfs/boot/vmlinuz && printf initrd-1 > b/rootfs/boot/initrd.img \
         && ln -s vmlinuz b/rootfs/boot/link && umoci repack --image L:one b && rm -rf b \
         && umoci unpack --image L:one b >/dev/null && rm b/rootfs/boot/initrd.img \
         && printf kernel-2 > b/rootfs/boot/vmlinuz && umoci repack --image L:two b && rm -rf b"
    ));
    dir.join("L")
}

fn want(dir: &Path, path: &str, name: &str) -> WantedFile {
    WantedFile {
        path: path.into(),
        dest: dir.join(name),
        max_size: 1 << 20,
    }
}

fn extract(lay: &Path, tag: &str, wanted: &[WantedFile]) -> Result<String, ImportError> {
    extract_files(
        &format!("oci:{}:{tag}", lay.display()),
        wanted,
        &ImportOptions::default(),
        &NoProgress,
    )
    .map(|(digest, files)| {
        assert_eq!(files.len(), wanted.len());
        digest
    })
}

fn nothing_at(wanted: &[WantedFile]) {
    for w in wanted {
        assert!(!w.dest.exists(), "{} was left behind", w.dest.display());
        let mut partial = w.dest.clone().into_os_string();
        partial.push(".partial");
        assert!(!Path::new(&partial).exists(), "{partial:?} was left behind");
    }
}

#[test]
fn the_merged_view_gives_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lay = layout(d);
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();

    let w = [
        want(&out, "/boot/vmlinuz", "k"),
        want(&out, "boot/initrd.img", "i"),
    ];
    let digest = extract(&lay, "one", &w).unwrap();
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(read(&out.join("k")), b"kernel-1");
    assert_eq!(read(&out.join("i")), b"initrd-1");

    // The upper layer's file wins over the lower one.
    let w = [want(&out, "/boot/vmlinuz", "k2")];
    extract(&lay, "two", &w).unwrap();
    assert_eq!(read(&out.join("k2")), b"kernel-2");

    // A whiteout hides the lower layer's file: not found, and nothing of the request
    // is written (not even the file that was found).
    let w = [
        want(&out, "/boot/vmlinuz", "k3"),
        want(&out, "/boot/initrd.img", "i3"),
    ];
    let e = extract(&lay, "two", &w).unwrap_err();
    assert!(
        matches!(e, ImportError::NoDisk { .. })
            && e.to_string().contains("no file /boot/initrd.img"),
        "{e}"
    );
    nothing_at(&w);
}

#[test]
fn links_missing_files_limits_and_damage_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lay = layout(d);
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();

    let w = [want(&out, "/boot/link", "l")];
    let e = extract(&lay, "one", &w).unwrap_err();
    assert!(
        e.to_string().contains("/boot/link is a symbolic link"),
        "{e}"
    );
    nothing_at(&w);

    let w = [want(&out, "/boot/nosuch", "n")];
    let e = extract(&lay, "one", &w).unwrap_err();
    assert!(e.to_string().contains("no file /boot/nosuch"), "{e}");

    let w = [WantedFile {
        max_size: 4,
        ..want(&out, "/boot/vmlinuz", "small")
    }];
    let e = extract(&lay, "one", &w).unwrap_err();
    assert!(matches!(e, ImportError::TooLarge { .. }), "{e}");
    nothing_at(&w);

    let w = [want(&out, "/../etc/passwd", "x")];
    let e = extract(&lay, "one", &w).unwrap_err();
    assert!(matches!(e, ImportError::InvalidSource { .. }), "{e}");

    let e = extract_files(
        "/some/file.img",
        &[want(&out, "/boot/vmlinuz", "f")],
        &ImportOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("container images"), "{e}");

    // Every layer blob flipped in turn: the layer that gives the file, or one above it,
    // fails its digest and nothing is kept. (Config and manifest blobs fail earlier.)
    let blobs: Vec<PathBuf> = std::fs::read_dir(lay.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut refused = 0;
    for b in &blobs {
        let orig = read(b);
        if orig.first() == Some(&b'{') {
            continue; // manifests and configs: JSON
        }
        let mut bad = orig.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        std::fs::write(b, &bad).unwrap();
        let w = [want(&out, "/boot/vmlinuz", "bad")];
        let r = extract(&lay, "two", &w);
        std::fs::write(b, &orig).unwrap();
        if let Err(e) = r {
            refused += 1;
            nothing_at(&w);
            assert!(!e.to_string().is_empty());
        } else {
            // Only a layer below the one that gave the file is never read.
            assert_eq!(read(&out.join("bad")), b"kernel-2");
            std::fs::remove_file(out.join("bad")).unwrap();
        }
    }
    assert!(refused >= 1, "no damaged layer was refused");
}

#[test]
fn a_later_entry_of_one_layer_replaces_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tarp = d.join("dup.tar");
    run(
        "python3",
        &[
            "-c",
            &format!(
                "import tarfile, io\nt = tarfile.open('{}', 'w')\nfor body in (b'old-kernel', b'new-kernel'):\n    i = tarfile.TarInfo('boot/vmlinuz'); i.size = len(body); t.addfile(i, io.BytesIO(body))\nt.close()\n",
                tarp.display()
            ),
        ],
    );
    let lay = d.join("lay");
    layout_with_layer(&lay, &read(&tarp));
    let w = [want(d, "/boot/vmlinuz", "k")];
    extract(&lay, "t", &w).unwrap();
    assert_eq!(read(&d.join("k")), b"new-kernel");
}
