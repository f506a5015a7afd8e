//! Every disk format and wrapper, made by the real qemu-img and compression tools from a
//! raw disk with data, holes and zeros, imports byte-identically (qemu-img compare) and
//! sparsely into a file.

mod common;

use common::*;
use platter_importer::ImportOptions;
use std::path::Path;

const SIZE: u64 = 6 << 20;

fn check(dir: &Path, image: &Path, fmt: &str, data: u64, expect_format: &str) {
    let out = dir.join(format!(
        "{}.out",
        image.file_name().unwrap().to_string_lossy()
    ));
    let r = import_file(image.to_str().unwrap(), &out, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("importing {}: {e}", image.display()));
    assert_eq!(r.format, expect_format, "{}", image.display());
    assert_same(&out, image, fmt);
    assert_sparse(&out, data);
    assert!(r.bytes_written <= data + data / 8 + (256 << 10), "{r:?}");
}

#[test]
fn raw_and_qcow2_variants() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = make_raw(dir.path(), "disk.raw", SIZE, 1);
    check(dir.path(), &raw, "raw", data, "raw");
    let variants: &[(&str, &[&str])] = &[
        ("v2.qcow2", &["-o", "compat=0.10"]),
        ("v3.qcow2", &["-o", "compat=1.1"]),
        ("zlib.qcow2", &["-c", "-o", "compression_type=zlib"]),
        ("zstd.qcow2", &["-c", "-o", "compression_type=zstd"]),
        ("ext.qcow2", &["-o", "extended_l2=on,cluster_size=128k"]),
        ("c512.qcow2", &["-o", "cluster_size=512"]),
        ("c4k.qcow2", &["-o", "cluster_size=4096"]),
        ("c2m.qcow2", &["-o", "cluster_size=2M"]),
        ("c2m-zlib.qcow2", &["-c", "-o", "cluster_size=2M"]),
    ];
    for (name, opts) in variants {
        let img = dir.path().join(name);
        convert(&raw, &img, "qcow2", opts);
        check(dir.path(), &img, "qcow2", data, "qcow2");
    }
}

#[test]
fn vpc_and_vdi() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = make_raw(dir.path(), "disk.raw", SIZE, 2);
    for (name, fmt, opts) in [
        (
            "fixed.vhd",
            "vpc",
            vec!["-o", "subformat=fixed,force_size=on"],
        ),
        (
            "dynamic.vhd",
            "vpc",
            vec!["-o", "subformat=dynamic,force_size=on"],
        ),
        ("disk.vdi", "vdi", vec![]),
        ("static.vdi", "vdi", vec!["-o", "static=on"]),
    ] {
        let img = dir.path().join(name);
        convert(&raw, &img, fmt, &opts);
        let expect = if fmt == "vpc" { "vhd" } else { "vdi" };
        check(dir.path(), &img, fmt, data, expect);
    }
}

#[test]
fn vmdk_and_vhdx() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = make_raw(dir.path(), "disk.raw", SIZE, 3);
    for (name, fmt, opts) in [
        (
            "sparse.vmdk",
            "vmdk",
            vec!["-o", "subformat=monolithicSparse"],
        ),
        (
            "stream.vmdk",
            "vmdk",
            vec!["-o", "subformat=streamOptimized"],
        ),
        ("disk.vhdx", "vhdx", vec![]),
    ] {
        let img = dir.path().join(name);
        convert(&raw, &img, fmt, &opts);
        check(dir.path(), &img, fmt, data, fmt);
    }
    // Compressed around them: a streamOptimized vmdk and a vhdx both stream (no spool);
    // both identical.
    let ds = dir.path().display();
    sh(&format!(
        "cd {ds} && gzip -c -1 stream.vmdk > stream.vmdk.gz && xz -c -0 disk.vhdx > disk.vhdx.xz"
    ));
    for (name, orig, fmt, spooled) in [
        ("stream.vmdk.gz", "stream.vmdk", "vmdk", false),
        ("disk.vhdx.xz", "disk.vhdx", "vhdx", false),
    ] {
        let out = dir.path().join(format!("{name}.out"));
        let r = import_file(
            dir.path().join(name).to_str().unwrap(),
            &out,
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(r.spooled, spooled, "{name}");
        assert_same(&out, &dir.path().join(orig), fmt);
    }
}

#[test]
fn iso_imports_as_raw() {
    // scripts/install.sh installs genisoimage: without it the test fails (here, naming it)
    // rather than passing unchecked.
    assert!(
        std::process::Command::new("genisoimage")
            .arg("-version")
            .output()
            .is_ok(),
        "genisoimage is missing: run scripts/install.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("content")).unwrap();
    std::fs::write(d.join("content/file.bin"), random_bytes(8, 300_000)).unwrap();
    let iso = d.join("cd.iso");
    run(
        "genisoimage",
        &[
            "-quiet",
            "-o",
            iso.to_str().unwrap(),
            d.join("content").to_str().unwrap(),
        ],
    );
    let out = d.join("iso.out");
    let r = import_file(iso.to_str().unwrap(), &out, &ImportOptions::default()).unwrap();
    assert_eq!(r.format, "iso");
    assert_eq!(read(&out), read(&iso));
}

#[test]
fn wrappers_and_nesting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, data) = make_raw(d, "disk.raw", SIZE, 4);
    let qcow = d.join("disk.qcow2");
    convert(&raw, &qcow, "qcow2", &[]);
    let ds = d.display();
    sh(&format!(
        "cd {ds} && gzip -k -1 disk.raw && xz -k -0 -T1 disk.raw && zstd -q -k disk.raw && bzip2 -k -1 disk.raw \
         && gzip -c -1 disk.qcow2 > disk.qcow2.gz && xz -c -0 disk.qcow2 > disk.qcow2.xz \
         && printf 'descriptor' > vm.ovf && tar -cf vm.ova vm.ovf disk.qcow2 \
         && tar -cf raw.tar disk.raw && gzip -c -1 raw.tar > raw.tar.gz \
         && cp vm.ova nested.ova && zstd -q -c nested.ova | gzip -1 > nested.ova.zst.gz"
    ));
    for (name, cmp, fmt, wrappers) in [
        ("disk.raw.gz", &raw, "raw", vec!["gzip"]),
        ("disk.raw.xz", &raw, "raw", vec!["xz"]),
        ("disk.raw.zst", &raw, "raw", vec!["zstd"]),
        ("disk.raw.bz2", &raw, "raw", vec!["bzip2"]),
        ("disk.qcow2.gz", &qcow, "qcow2", vec!["gzip"]),
        ("disk.qcow2.xz", &qcow, "qcow2", vec!["xz"]),
        ("vm.ova", &qcow, "qcow2", vec!["tar"]),
        ("raw.tar.gz", &raw, "raw", vec!["gzip", "tar"]),
        (
            "nested.ova.zst.gz",
            &qcow,
            "qcow2",
            vec!["gzip", "zstd", "tar"],
        ),
    ] {
        let out = d.join(format!("{name}.out"));
        let r = import_file(
            d.join(name).to_str().unwrap(),
            &out,
            &ImportOptions::default(),
        )
        .unwrap_or_else(|e| panic!("importing {name}: {e}"));
        assert_eq!(r.format, fmt, "{name}");
        assert_eq!(r.wrappers, wrappers, "{name}");
        assert_same(&out, cmp, if fmt == "raw" { "raw" } else { "qcow2" });
        assert_sparse(&out, data);
    }
    // A qcow2 inside a compressed wrapper is decoded in one pass (no spool), and so is
    // a bare OVA member (read in place).
    let out = d.join("spool.out");
    let r = import_file(
        d.join("disk.qcow2.gz").to_str().unwrap(),
        &out,
        &ImportOptions::default(),
    )
    .unwrap();
    assert!(!r.spooled);
    let r = import_file(
        d.join("vm.ova").to_str().unwrap(),
        &out,
        &ImportOptions::default(),
    )
    .unwrap();
    assert!(!r.spooled);
    assert_eq!(r.member.as_deref(), Some("disk.qcow2"));
}

#[test]
fn checksum_and_size_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = make_raw(d, "disk.raw", 2 << 20, 5);
    let qcow = d.join("disk.qcow2");
    convert(&raw, &qcow, "qcow2", &[]);
    let sum = sh(&format!("sha256sum {} | cut -d' ' -f1", qcow.display()));
    let mut opts = ImportOptions {
        checksum: Some(format!("sha256:{}", sum.trim()).parse().unwrap()),
        ..Default::default()
    };
    let out = d.join("ok.raw");
    let r = import_file(qcow.to_str().unwrap(), &out, &opts).unwrap();
    assert!(r.checksum.is_some());
    assert_same(&out, &qcow, "qcow2");

    // A wrong checksum fails, names both digests and leaves nothing.
    opts.checksum = Some(format!("sha256:{}", "0".repeat(64)).parse().unwrap());
    let out = d.join("bad.raw");
    let e = import_file(qcow.to_str().unwrap(), &out, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checksum mismatch") && e.contains(sum.trim()) && e.contains(&"0".repeat(64)),
        "{e}"
    );
    assert_nothing_left(d, "bad.raw");

    // md5 over a compressed source: the hash is of the bytes as downloaded.
    sh(&format!("gzip -k -1 {}", raw.display()));
    let gz = d.join("disk.raw.gz");
    let md5 = sh(&format!("md5sum {} | cut -d' ' -f1", gz.display()));
    let opts = ImportOptions {
        checksum: Some(format!("md5:{}", md5.trim()).parse().unwrap()),
        size: Some(4 << 20),
        ..Default::default()
    };
    let out = d.join("grown.raw");
    let r = import_file(gz.to_str().unwrap(), &out, &opts).unwrap();
    assert_eq!(r.size, 4 << 20);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 4 << 20);
    assert_eq!(read(&out)[..2 << 20], read(&raw)[..]);
}

#[test]
fn stdin_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = make_raw(d, "disk.raw", 2 << 20, 6);
    let qcow = d.join("disk.qcow2");
    convert(&raw, &qcow, "qcow2", &[]);
    // The test binary's stdin cannot be replaced, so run the import in a child process
    // that is this very test binary with a marker variable.
    if std::env::var("PLATTER_STDIN_CHILD").is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = d.join("stdin.raw");
    let status = std::process::Command::new(exe)
        .args(["--exact", "stdin_child", "--nocapture"])
        .env("PLATTER_STDIN_OUT", &out)
        .stdin(std::fs::File::open(&qcow).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_same(&out, &qcow, "qcow2");
}

#[test]
fn stdin_child() {
    let Ok(out) = std::env::var("PLATTER_STDIN_OUT") else {
        return; // only meaningful when started by stdin_source
    };
    let r = import_file("-", Path::new(&out), &ImportOptions::default()).unwrap();
    // A qemu-img qcow2 on stdin streams without a spool.
    assert!(!r.spooled);
}

#[test]
fn device_sink_replaces_old_data() {
    use platter_importer::{import, DeviceSink, NoProgress};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = make_raw(d, "disk.raw", 2 << 20, 7);
    let qcow = d.join("disk.qcow2");
    convert(&raw, &qcow, "qcow2", &[]);
    // A "device" full of old data, larger than the image.
    let dev = d.join("dev");
    std::fs::write(&dev, vec![0xAAu8; 3 << 20]).unwrap();
    let sink = DeviceSink::open(&dev).unwrap();
    import(
        qcow.to_str().unwrap(),
        sink,
        &ImportOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let got = read(&dev);
    assert_eq!(got.len(), 3 << 20, "a device keeps its size");
    assert_eq!(&got[..2 << 20], &read(&raw)[..]);
    // Too small a device is refused.
    let small = d.join("small");
    std::fs::write(&small, vec![0u8; 1 << 20]).unwrap();
    let e = import(
        qcow.to_str().unwrap(),
        DeviceSink::open(&small).unwrap(),
        &ImportOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("device"), "{e}");
}

/// Without a discard (refused by the device, or turned off), each hole of the image is
/// read back: old data there is zeroed, and blocks that already read as zero are left
/// alone (a thin device stays thin). Both ways of zeroing are covered: the device
/// zeroing the range itself (ZERO_RANGE), and writing zeros.
#[test]
fn device_without_discard_zeroes_old_data_in_holes() {
    use platter_importer::sink::{DeviceOptions, DeviceSink};
    use platter_importer::{import, NoProgress};
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 32 MiB: 6 MiB of data runs and holes, 1 MiB far out, the rest holes.
    let (raw, data) = sparse_raw_at(d, 11, 32 << 20, 24 << 20);
    let qcow = d.join("disk.qcow2");
    convert(&raw, &qcow, "qcow2", &[]);
    let image = read(&raw);
    for offload_zeroes in [true, false] {
        // Old data over the first 4 MiB and past the image; sparse (zero) elsewhere.
        let dev = d.join(format!("dev-{offload_zeroes}"));
        let f = std::fs::File::create(&dev).unwrap();
        f.set_len(40 << 20).unwrap();
        f.write_all_at(&vec![0xAA; 4 << 20], 0).unwrap();
        f.write_all_at(&vec![0xBB; 1 << 20], 36 << 20).unwrap();
        drop(f);
        let sink = DeviceSink::open_with(
            &dev,
            DeviceOptions {
                discard: false,
                offload_zeroes,
            },
        )
        .unwrap();
        assert!(!sink.discarded());
        import(
            qcow.to_str().unwrap(),
            sink,
            &ImportOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let got = read(&dev);
        assert_eq!(got.len(), 40 << 20);
        assert!(
            got[..32 << 20] == image[..],
            "offload {offload_zeroes}: old data left in the image's holes"
        );
        // Past the image the device is not the image's: untouched.
        assert!(got[36 << 20..37 << 20].iter().all(|&b| b == 0xBB));
        // Only the old data was zeroed: the holes that read as zero stayed unallocated.
        let a = allocated(&dev);
        assert!(
            a <= data + (5 << 20) + (1 << 20),
            "offload {offload_zeroes}: {a} bytes allocated for {data} bytes of data"
        );
    }
}
