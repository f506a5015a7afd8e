//! A streamOptimized vmdk that arrives as a stream (gzip, zstd, an OVA-like tar.gz) decodes
//! in one pass with no temporary file (the temp dir points nowhere, so any attempt would
//! fail), byte-identical and sparse; a cut or damaged stream gives a clear error.

mod common;

use common::*;
use platter_importer::ImportError;

#[test]
fn stream_optimized_vmdk_streams_without_a_spool() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Data far out too, and a size that is not a multiple of the grain.
    let (raw, data) = sparse_raw_at(d, 31, (300 << 20) + 4096, 290 << 20);
    let vmdk = d.join("disk.vmdk");
    convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    sh(&format!(
        "cd {d} && gzip -k -1 disk.vmdk && zstd -q -1 disk.vmdk && mkdir -p t/disk && cp disk.vmdk t/disk/disk.img && tar -C t -czf disk.tar.gz disk",
        d = d.display()
    ));
    for (name, wrappers) in [
        ("disk.vmdk.gz", vec!["gzip"]),
        ("disk.vmdk.zst", vec!["zstd"]),
        ("disk.tar.gz", vec!["gzip", "tar"]),
    ] {
        let out = d.join(format!("{name}.out"));
        let r = import_file(d.join(name).to_str().unwrap(), &out, &no_temp(d))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.format, "vmdk", "{name}");
        assert_eq!(r.wrappers, wrappers, "{name}");
        assert!(!r.spooled, "{name} was spooled");
        assert_same(&out, &raw, "raw");
        assert_sparse(&out, data);
    }

    // Cut short (before the end-of-stream marker): a clear error, nothing left.
    let bytes = std::fs::read(&vmdk).unwrap();
    let cut = d.join("cut.vmdk");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    sh(&format!("gzip -1 {}", cut.display()));
    let out = d.join("cut.out");
    let e = import_file(d.join("cut.vmdk.gz").to_str().unwrap(), &out, &no_temp(d)).unwrap_err();
    assert!(
        matches!(e, ImportError::Format { .. }) && e.to_string().contains("vmdk"),
        "{e}"
    );
    assert!(!out.exists());
}
