//! qcow2 images that arrive as a stream (gzip, zstd, a containerDisk-shaped tar.gz)
//! decode in one pass: byte-identical, sparse, and with no temporary file at all for
//! images made by `qemu-img` (the temp dir points nowhere, so any attempt would fail).
//! Images whose tables come after their data (`qemu-img resize`, hand-moved tables) go
//! through the bounded fallback; hostile streams give clear errors.

mod common;

use common::*;
use platter_importer::{ImportError, ImportOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A 640 MiB sparse raw disk: the usual test pattern at the start plus data at 600 MiB,
/// so 64 KiB-cluster images need two L2 tables. Returns the path and the data bytes.
fn sparse_raw(d: &Path, seed: u64) -> (PathBuf, u64) {
    sparse_raw_at(d, seed, 640 << 20, 600 << 20)
}

fn convert(raw: &Path, out: &Path, opts: &[&str]) {
    common::convert(raw, out, "qcow2", opts);
}

/// gzip, zstd and containerDisk-layer (`disk/disk.img` in a tar, gzip'ed) forms of a
/// qcow2: (file name, expected wrappers, expected member).
fn wrap(d: &Path, qcow: &Path) -> Vec<(PathBuf, Vec<&'static str>, Option<&'static str>)> {
    let q = qcow.display();
    let ds = d.display();
    sh(&format!(
        "cd {ds} && rm -rf disk layer.tar.gz && gzip -1 -c {q} > s.gz && zstd -q -f -c {q} > s.zst \
         && mkdir disk && cp {q} disk/disk.img && tar -cf - disk | gzip -1 > layer.tar.gz && rm -rf disk"
    ));
    vec![
        (d.join("s.gz"), vec!["gzip"], None),
        (d.join("s.zst"), vec!["zstd"], None),
        (
            d.join("layer.tar.gz"),
            vec!["gzip", "tar"],
            Some("disk/disk.img"),
        ),
    ]
}

#[test]
fn qemu_img_images_stream_without_a_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, data) = sparse_raw(d, 41);
    let variants: &[(&str, &[&str])] = &[
        ("v2", &["-o", "compat=0.10"]),
        ("v3", &["-o", "compat=1.1"]),
        ("c512", &["-o", "cluster_size=512"]),
        ("c4k", &["-o", "cluster_size=4096"]),
        ("c2m", &["-o", "cluster_size=2M"]),
        ("ext", &["-o", "extended_l2=on,cluster_size=128k"]),
        ("zlib", &["-c", "-o", "compression_type=zlib"]),
        ("zstd", &["-c", "-o", "compression_type=zstd"]),
        ("zlib512", &["-c", "-o", "cluster_size=512"]),
        (
            "zstd2m",
            &["-c", "-o", "cluster_size=2M,compression_type=zstd"],
        ),
        ("extzlib", &["-c", "-o", "extended_l2=on,cluster_size=64k"]),
    ];
    for (name, opts) in variants {
        let qcow = d.join(format!("{name}.qcow2"));
        convert(&raw, &qcow, opts);
        for (src, wrappers, member) in wrap(d, &qcow) {
            let what = format!("{name} {}", src.display());
            let out = d.join("out.raw");
            let _ = std::fs::remove_file(&out);
            let r = import_file(src.to_str().unwrap(), &out, &no_temp(d))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(r.format, "qcow2", "{what}");
            assert_eq!(r.wrappers, wrappers, "{what}");
            assert_eq!(r.member.as_deref(), member, "{what}");
            assert!(!r.spooled, "{what}: spooled");
            assert_eq!(r.size, 640 << 20, "{what}");
            assert_same(&out, &qcow, "qcow2");
            assert_sparse(&out, data);
        }
    }
}

/// Overwrites 8 bytes of a file at `at`.
fn poke(path: &Path, at: u64, v: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&v.to_be_bytes(), at).unwrap();
}

fn peek(path: &Path, at: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_be_bytes(b)
}

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

#[test]
fn tables_after_their_data_use_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let temp = d.join("temp");
    std::fs::create_dir(&temp).unwrap();
    let opts = ImportOptions {
        temp_dir: Some(temp.clone()),
        ..Default::default()
    };

    // `qemu-img resize` moves the L1 table to the end of the file: every cluster comes
    // before the tables. A small image fits the in-memory stash: still no temp file.
    let (raw, _) = sparse_raw(d, 42);
    let small = d.join("small.qcow2");
    convert(&raw, &small, &[]);
    run(
        "qemu-img",
        &["resize", "-q", small.to_str().unwrap(), "20G"],
    );
    assert!(peek(&small, 40) > 1 << 20, "L1 not moved to the end");
    for (src, _, _) in wrap(d, &small) {
        let out = d.join("small.out");
        let _ = std::fs::remove_file(&out);
        let r = import_file(src.to_str().unwrap(), &out, &no_temp(d)).unwrap();
        assert!(!r.spooled);
        assert_eq!(r.size, 20 << 30);
        assert_same(&out, &small, "qcow2");
    }

    // 50 MiB of data behind a moved L1 passes the memory budget: the rest of the
    // out-of-order clusters go to a temporary file, and the report says so.
    let (big_raw, data) = make_raw(d, "big.raw", 192 << 20, 43);
    assert!(data > 40 << 20, "{data}");
    let big = d.join("big.qcow2");
    convert(&big_raw, &big, &[]);
    run("qemu-img", &["resize", "-q", big.to_str().unwrap(), "1G"]);
    sh(&format!(
        "gzip -1 -c {} > {}/big.gz",
        big.display(),
        d.display()
    ));
    let out = d.join("big.out");
    let r = import_file(d.join("big.gz").to_str().unwrap(), &out, &opts).unwrap();
    assert!(r.spooled);
    assert_same(&out, &big, "qcow2");
    assert_sparse(&out, data);
    assert_eq!(
        std::fs::read_dir(&temp).unwrap().count(),
        0,
        "temp file left"
    );
    // Without a usable temp dir that fallback fails cleanly.
    let e = import_file(
        d.join("big.gz").to_str().unwrap(),
        &d.join("nt.out"),
        &no_temp(d),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("temporary file"), "{e}");
    assert_nothing_left(d, "nt.out");

    // The second L2 table moved after the data it maps (its old copy left as junk).
    let (raw, _) = sparse_raw(d, 44);
    let moved = d.join("moved.qcow2");
    convert(&raw, &moved, &[]);
    let l1 = peek(&moved, 40);
    let l2 = peek(&moved, l1 + 8) & OFFSET_MASK;
    let len = std::fs::metadata(&moved).unwrap().len();
    let new_l2 = len.next_multiple_of(65536);
    let mut table = vec![0u8; 65536];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&moved)
        .unwrap();
    f.read_exact_at(&mut table, l2).unwrap();
    f.write_all_at(&table, new_l2).unwrap();
    drop(f);
    poke(&moved, l1 + 8, new_l2 | 1 << 63);
    let (src, _, _) = wrap(d, &moved).remove(0);
    let out = d.join("moved.out");
    let r = import_file(src.to_str().unwrap(), &out, &no_temp(d)).unwrap();
    assert!(!r.spooled);
    assert_same(&out, &moved, "qcow2");
}

fn gz(d: &Path, img: &Path, name: &str) -> String {
    let p = d.join(name);
    sh(&format!("gzip -1 -c {} > {}", img.display(), p.display()));
    p.to_str().unwrap().to_string()
}

fn expect_err(d: &Path, src: &str, name: &str) -> ImportError {
    let e = import_file(src, &d.join(name), &no_temp(d)).expect_err(name);
    assert_nothing_left(d, name);
    e
}

#[test]
fn hostile_streams_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = make_raw(d, "disk.raw", 4 << 20, 45);
    let base = d.join("base.qcow2");
    convert(&raw, &base, &[]);
    let l1 = peek(&base, 40);
    let l2 = peek(&base, l1) & OFFSET_MASK;
    let copy = |name: &str| {
        let p = d.join(name);
        std::fs::copy(&base, &p).unwrap();
        p
    };

    // Truncated in the middle of the data.
    let t = copy("trunc.qcow2");
    let len = std::fs::metadata(&t).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&t)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let e = expect_err(d, &gz(d, &t, "trunc.gz"), "trunc-out").to_string();
    assert!(e.contains("past the end of the file"), "{e}");

    // An L2 entry pointing into the header.
    let h = copy("header.qcow2");
    poke(&h, l2, 1 << 62 | 0x100);
    let e = expect_err(d, &gz(d, &h, "header.gz"), "header-out").to_string();
    assert!(e.contains("header"), "{e}");

    // An L2 entry pointing at its own table: the stream has passed it.
    let s = copy("self.qcow2");
    poke(&s, l2, l2 | 1 << 63);
    let e = expect_err(d, &gz(d, &s, "self.gz"), "self-out").to_string();
    assert!(e.contains("seekable"), "{e}");

    // An L1 entry pointing far past the end of the stream.
    let p = copy("past.qcow2");
    poke(&p, l1, 1 << 40 | 1 << 63);
    let e = expect_err(d, &gz(d, &p, "past.gz"), "past-out").to_string();
    assert!(e.contains("past the end"), "{e}");

    // An absurd virtual size.
    let a = copy("absurd.qcow2");
    poke(&a, 24, 1 << 62);
    let e = expect_err(d, &gz(d, &a, "absurd.gz"), "absurd-out");
    assert!(e.to_string().contains("virtual size"), "{e}");

    // A backing file and encryption are refused by name, as for a seekable image.
    let b = d.join("backed.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            b.to_str().unwrap(),
        ],
    );
    let e = expect_err(d, &gz(d, &b, "backed.gz"), "backed-out").to_string();
    assert!(
        e.contains("backing file") && e.contains("base.qcow2"),
        "{e}"
    );
    let c = copy("crypt.qcow2");
    let mut w = [0u8; 4];
    w.copy_from_slice(&2u32.to_be_bytes());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&c)
        .unwrap()
        .write_all_at(&w, 32)
        .unwrap();
    let e = expect_err(d, &gz(d, &c, "crypt.gz"), "crypt-out").to_string();
    assert!(e.contains("encrypted"), "{e}");

    // Two L1 entries sharing an L2 table read the same data twice, as qemu does.
    let (raw, _) = sparse_raw(d, 46);
    let shared = d.join("shared.qcow2");
    convert(&raw, &shared, &[]);
    let l1 = peek(&shared, 40);
    poke(&shared, l1 + 8, peek(&shared, l1));
    let out = d.join("shared.out");
    let r = import_file(&gz(d, &shared, "shared.gz"), &out, &no_temp(d)).unwrap();
    assert!(!r.spooled);
    assert_same(&out, &shared, "qcow2");
}
