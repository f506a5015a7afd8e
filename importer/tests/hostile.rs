//! Hostile inputs: truncated images, corrupt qcow2 tables, absurd sizes, tar entries that
//! escape the tree, bad containerDisk layers and compression bombs. Each must be a clear
//! error, never a panic, and leave nothing behind.

mod common;

use common::*;
use platter_importer::{ImportError, ImportOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

fn expect_err(dir: &Path, source: &str, name: &str, opts: &ImportOptions) -> ImportError {
    let out = dir.join(name);
    let e = import_file(source, &out, opts).expect_err(name);
    assert_nothing_left(dir, name);
    assert!(!e.to_string().is_empty());
    e
}

fn qcow2_of(dir: &Path, size: u64) -> std::path::PathBuf {
    let (raw, _) = make_raw(dir, "base.raw", size, 31);
    let q = dir.join("base.qcow2");
    convert(&raw, &q, "qcow2", &[]);
    q
}

#[test]
fn truncated_and_corrupt_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let q = qcow2_of(d, 2 << 20);
    let bytes = read(&q);

    let cut = d.join("cut.qcow2");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = expect_err(
        d,
        cut.to_str().unwrap(),
        "cut-out",
        &ImportOptions::default(),
    );
    assert!(matches!(e, ImportError::Format { .. }), "{e}");

    let tiny = d.join("tiny.qcow2");
    std::fs::write(&tiny, &bytes[..40]).unwrap();
    expect_err(
        d,
        tiny.to_str().unwrap(),
        "tiny-out",
        &ImportOptions::default(),
    );

    // L1[0] points far past the end of the file.
    let l1 = u64::from_be_bytes(bytes[40..48].try_into().unwrap());
    let bad = d.join("badl1.qcow2");
    std::fs::write(&bad, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
    f.write_all_at(&(0x8000_0000_0000_0000u64 | (1 << 40)).to_be_bytes(), l1)
        .unwrap();
    let e = expect_err(
        d,
        bad.to_str().unwrap(),
        "badl1-out",
        &ImportOptions::default(),
    );
    assert!(matches!(e, ImportError::Format { .. }), "{e}");

    // L1[0] points into the header (offset 0 would mean "unallocated": use an unaligned
    // offset inside the header cluster).
    f.write_all_at(&(0x8000_0000_0000_0200u64).to_be_bytes(), l1)
        .unwrap();
    expect_err(
        d,
        bad.to_str().unwrap(),
        "hdr-out",
        &ImportOptions::default(),
    );

    // An absurd virtual size.
    let huge = d.join("huge.qcow2");
    std::fs::write(&huge, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&huge).unwrap();
    f.write_all_at(&(1u64 << 62).to_be_bytes(), 24).unwrap();
    expect_err(
        d,
        huge.to_str().unwrap(),
        "huge-out",
        &ImportOptions::default(),
    );

    // Truncated gzip stream.
    sh(&format!(
        "cd {} && gzip -c -1 base.raw > full.gz && head -c 100000 full.gz > cut.gz",
        d.display()
    ));
    expect_err(
        d,
        d.join("cut.gz").to_str().unwrap(),
        "cutgz-out",
        &ImportOptions::default(),
    );
    // A qcow2 smaller than --size is grown; a --size below the image is refused.
    let opts = ImportOptions {
        size: Some(1 << 20),
        ..Default::default()
    };
    let e = expect_err(d, q.to_str().unwrap(), "small-out", &opts);
    assert!(matches!(e, ImportError::TooLarge { .. }), "{e}");
}

#[test]
fn tar_escapes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = make_raw(d, "disk.img", 1 << 20, 32);
    let py = |script: &str| run("python3", &["-c", script]);
    let ds = d.display();
    py(&format!(
        "import tarfile\n\
         for name, arc in [('dotdot.tar', '../evil.img'), ('abs.tar', '/evil.img'), ('deep.tar', 'a/../../evil.img')]:\n\
         \x20   t = tarfile.open('{ds}/' + name, 'w', format=tarfile.GNU_FORMAT)\n\
         \x20   i = t.gettarinfo('{raw}'); i.name = arc\n\
         \x20   t.addfile(i, open('{raw}', 'rb'))\n\
         \x20   t.close()\n\
         t = tarfile.open('{ds}/link.tar', 'w')\n\
         i = tarfile.TarInfo('disk.img'); i.type = tarfile.SYMTYPE; i.linkname = '/etc/passwd'\n\
         t.addfile(i); t.close()\n\
         t = tarfile.open('{ds}/link2.tar', 'w')\n\
         i = tarfile.TarInfo('x/disk.img'); i.type = tarfile.SYMTYPE; i.linkname = '../../etc/shadow'\n\
         t.addfile(i); t.close()\n\
         t = tarfile.open('{ds}/hard.tar', 'w')\n\
         i = tarfile.TarInfo('disk.img'); i.type = tarfile.LNKTYPE; i.linkname = '../outside'\n\
         t.addfile(i); t.close()\n\
         t = tarfile.open('{ds}/pax.tar', 'w', format=tarfile.PAX_FORMAT)\n\
         t.add('{raw}', arcname='ok/' + 'x' * 150 + '/../../../../evil.img')\n\
         t.close()\n\
         t = tarfile.open('{ds}/none.tar', 'w'); t.add('{raw}', arcname='vm.ovf'); t.close()\n",
        raw = raw.display()
    ));
    for name in ["dotdot", "abs", "deep", "link", "link2", "hard", "pax"] {
        let e = expect_err(
            d,
            d.join(format!("{name}.tar")).to_str().unwrap(),
            &format!("{name}-out"),
            &ImportOptions::default(),
        );
        assert!(matches!(e, ImportError::Tar { .. }), "{name}: {e}");
        // The same archives compressed go through the streaming tar reader.
        sh(&format!("gzip -c -1 {ds}/{name}.tar > {ds}/{name}.tgz"));
        let e = expect_err(
            d,
            d.join(format!("{name}.tgz")).to_str().unwrap(),
            &format!("{name}z-out"),
            &ImportOptions::default(),
        );
        assert!(matches!(e, ImportError::Tar { .. }), "{name}.tgz: {e}");
    }
    let e = expect_err(
        d,
        d.join("none.tar").to_str().unwrap(),
        "none-out",
        &ImportOptions::default(),
    );
    assert!(matches!(e, ImportError::NoDisk { .. }), "{e}");
}

#[test]
fn bad_containerdisk_layers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = make_raw(d, "disk.img", 1 << 20, 33);
    let ds = d.display();
    let cases = [
        ("symout", "i = tarfile.TarInfo('disk/disk.img'); i.type = tarfile.SYMTYPE; i.linkname = '../../etc/shadow'; t.addfile(i)"),
        ("symin", "t.add(RAW, arcname='disk/real.img'); i = tarfile.TarInfo('disk/disk.img'); i.type = tarfile.SYMTYPE; i.linkname = 'real.img'; t.addfile(i)"),
        ("two", "t.add(RAW, arcname='disk/a.img'); t.add(RAW, arcname='disk/b.img')"),
        ("nodisk", "t.add(RAW, arcname='etc/disk.img')"),
        ("dotdot", "t.add(RAW, arcname='disk/../../x.img')"),
    ];
    for (name, body) in cases {
        let tarp = d.join(format!("{name}.tar"));
        run(
            "python3",
            &[
                "-c",
                &format!(
                    "import tarfile\nRAW = '{}'\nt = tarfile.open('{}', 'w')\n{body}\nt.close()\n",
                    raw.display(),
                    tarp.display()
                ),
            ],
        );
        let lay = d.join(format!("lay-{name}"));
        layout_with_layer(&lay, &read(&tarp));
        let e = expect_err(
            d,
            &format!("oci:{}:t", lay.display()),
            &format!("{name}-out"),
            &ImportOptions::default(),
        );
        match name {
            "symout" | "dotdot" => assert!(matches!(e, ImportError::Tar { .. }), "{name}: {e}"),
            _ => assert!(matches!(e, ImportError::NoDisk { .. }), "{name}: {e}"),
        }
    }
    // A good layer made the same way imports (the harness itself is sound).
    let tarp = d.join("good.tar");
    sh(&format!(
        "cd {ds} && mkdir -p g/disk && cp disk.img g/disk/ && tar -C g -cf good.tar disk"
    ));
    let lay = d.join("lay-good");
    layout_with_layer(&lay, &read(&tarp));
    let out = d.join("good.out");
    import_file(
        &format!("oci:{}:t", lay.display()),
        &out,
        &ImportOptions::default(),
    )
    .unwrap();
    assert_same(&out, &raw, "raw");
}

#[test]
fn compression_bombs_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = d.display();
    // A qcow2 header declaring 1 MiB followed by 200 MiB: the spool stops at the bound.
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            d.join("small.qcow2").to_str().unwrap(),
            "1M",
        ],
    );
    sh(&format!(
        "cd {ds} && (cat small.qcow2; head -c 200M /dev/zero | tr '\\0' 'x') | zstd -q -1 -c > bomb.qcow2.zst"
    ));
    let e = expect_err(
        d,
        d.join("bomb.qcow2.zst").to_str().unwrap(),
        "bomb-out",
        &ImportOptions::default(),
    );
    assert!(matches!(e, ImportError::TooLarge { .. }), "{e}");
    // Raw data beyond --size.
    sh(&format!(
        "cd {ds} && head -c 64M /dev/zero | tr '\\0' 'y' | zstd -q -1 -c > raw.zst"
    ));
    let opts = ImportOptions {
        size: Some(1 << 20),
        ..Default::default()
    };
    let e = expect_err(d, d.join("raw.zst").to_str().unwrap(), "rawbomb-out", &opts);
    assert!(matches!(e, ImportError::TooLarge { .. }), "{e}");
    // Too many nested wrappers.
    sh(&format!(
        "cd {ds} && printf 'x' | gzip | gzip | gzip | gzip | gzip > deep.gz"
    ));
    let e = expect_err(
        d,
        d.join("deep.gz").to_str().unwrap(),
        "deep-out",
        &ImportOptions::default(),
    );
    assert!(matches!(e, ImportError::Unsupported { .. }), "{e}");
}
