//! Dynamic VHDs, VDIs (dynamic and static), VHDXs (several block sizes) and
//! monolithicSparse VMDKs made by qemu-img that arrive as a stream (gzip, zstd, an
//! OVA-like tar in gzip, stdin) decode in one pass: byte-identical, sparse, and with no
//! temporary file (the temp dir points nowhere, so any attempt would fail). A stream cut
//! inside the data fails clearly and leaves nothing; a VHD whose BAT comes after its data
//! still imports (from memory when small, through the spool when its tables are too far
//! in).

mod common;

use common::*;
use platter_importer::{import, FileSink, ImportError, ImportOptions, ProgressEvent};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A 40 MiB sparse raw disk: the usual test pattern in the first 6 MiB plus 1 MiB of
/// data at 36 MiB, so a VMDK needs two grain tables and a VHDX with 32 MiB blocks two
/// blocks. Returns the path and the data bytes.
fn sparse_raw(d: &Path, seed: u64) -> (PathBuf, u64) {
    sparse_raw_at(d, seed, 40 << 20, 36 << 20)
}

/// gzip, zstd and OVA-like (a descriptor and the disk in a tar, gzip'ed) forms of an
/// image: (file, expected wrappers, expected member).
fn wrap(d: &Path, img: &Path) -> Vec<(PathBuf, Vec<&'static str>, Option<String>)> {
    let name = img.file_name().unwrap().to_str().unwrap().to_string();
    sh(&format!(
        "cd {} && gzip -1 -c {name} > s.gz && zstd -q -f -c {name} > s.zst \
         && printf 'descriptor' > vm.ovf && tar -cf - vm.ovf {name} | gzip -1 > vm.ova.gz",
        d.display()
    ));
    vec![
        (d.join("s.gz"), vec!["gzip"], None),
        (d.join("s.zst"), vec!["zstd"], None),
        (d.join("vm.ova.gz"), vec!["gzip", "tar"], Some(name)),
    ]
}

/// (file name, qemu-img format, options, format in the report).
const VARIANTS: &[(&str, &str, &[&str], &str)] = &[
    (
        "dyn.vhd",
        "vpc",
        &["-o", "subformat=dynamic,force_size=on"],
        "vhd",
    ),
    ("dyn.vdi", "vdi", &[], "vdi"),
    ("static.vdi", "vdi", &["-o", "static=on"], "vdi"),
    ("dyn.vhdx", "vhdx", &[], "vhdx"),
    ("b1m.vhdx", "vhdx", &["-o", "block_size=1M"], "vhdx"),
    ("b32m.vhdx", "vhdx", &["-o", "block_size=32M"], "vhdx"),
    (
        "sparse.vmdk",
        "vmdk",
        &["-o", "subformat=monolithicSparse"],
        "vmdk",
    ),
];

#[test]
fn qemu_img_images_stream_without_a_temp_file_and_cut_ones_fail() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, data) = sparse_raw(d, 51);
    for (name, fmt, opts, report) in VARIANTS {
        let img = d.join(name);
        convert(&raw, &img, fmt, opts);
        for (src, wrappers, member) in wrap(d, &img) {
            let what = format!("{name} {}", src.display());
            let out = d.join("out.raw");
            let _ = std::fs::remove_file(&out);
            let r = import_file(src.to_str().unwrap(), &out, &no_temp(d))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(r.format, *report, "{what}");
            assert_eq!(r.wrappers, wrappers, "{what}");
            assert_eq!(r.member, member, "{what}");
            assert!(!r.spooled, "{what}: spooled");
            assert_eq!(r.size, 40 << 20, "{what}");
            assert_same(&out, &img, fmt);
            assert_same(&out, &raw, "raw");
            assert_sparse(&out, data);
        }

        // Cut in half (inside the data of every layout here): a clear error, nothing left.
        let bytes = std::fs::read(&img).unwrap();
        let cut = d.join(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        sh(&format!("gzip -1 -f {}", cut.display()));
        let out_name = format!("out-{name}");
        let e = import_file(
            &format!("{}.gz", cut.display()),
            &d.join(&out_name),
            &no_temp(d),
        )
        .expect_err(name);
        assert!(
            matches!(e, ImportError::Format { .. }) && e.to_string().contains("truncated"),
            "{name}: {e}"
        );
        assert_nothing_left(d, &out_name);
    }
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Copies a dynamic VHD made by qemu-img with its BAT moved behind the data (the old
/// place zeroed), the dynamic header pointing there.
fn move_bat_to_end(src: &Path, dst: &Path) {
    let mut f = std::fs::read(src).unwrap();
    let footer = f[f.len() - 512..].to_vec();
    let dh = be64(&f, 16) as usize;
    let bat_at = be64(&f, dh + 16) as usize;
    let entries = u32::from_be_bytes(f[dh + 28..dh + 32].try_into().unwrap()) as usize;
    let bat_len = (entries * 4).next_multiple_of(512);
    let bat = f[bat_at..bat_at + bat_len].to_vec();
    f.truncate(f.len() - 512);
    let new_at = f.len() as u64;
    f.extend(&bat);
    f.extend(&footer);
    f[bat_at..bat_at + bat_len].fill(0);
    f[dh + 16..dh + 24].copy_from_slice(&new_at.to_be_bytes());
    f[dh + 36..dh + 40].fill(0);
    let sum = f[dh..dh + 1024]
        .iter()
        .fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    f[dh + 36..dh + 40].copy_from_slice(&(!sum).to_be_bytes());
    std::fs::write(dst, f).unwrap();
}

/// A dynamic VHD of `raw` with its BAT moved behind the data, gzip'ed: `NAME.vhd.gz` beside
/// `raw`.
fn moved_vhd_gz(raw: &Path, name: &str) -> PathBuf {
    let img = raw.with_file_name(format!("{name}-orig.vhd"));
    convert(raw, &img, "vpc", &["-o", "subformat=dynamic,force_size=on"]);
    let moved = raw.with_file_name(format!("{name}.vhd"));
    move_bat_to_end(&img, &moved);
    std::fs::remove_file(&img).unwrap();
    sh(&format!("gzip -1 {}", moved.display()));
    raw.with_file_name(format!("{name}.vhd.gz"))
}

/// Imports with a progress callback; returns the result and the messages.
fn import_with_messages(
    src: &Path,
    out: &Path,
    opts: &ImportOptions,
) -> (
    Result<platter_importer::ImportReport, ImportError>,
    Vec<String>,
) {
    let msgs = Mutex::new(Vec::new());
    let p = |e: ProgressEvent| {
        if let ProgressEvent::Message { text } | ProgressEvent::Detail { text } = e {
            msgs.lock().unwrap().push(text);
        }
    };
    let r = FileSink::create(out)
        .and_then(|sink| import(src.to_str().unwrap(), sink, opts, &p).map(|(r, _)| r));
    (r, msgs.into_inner().unwrap())
}

#[test]
fn vhd_with_its_bat_after_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Small: the planner reads the whole stream ahead, still no temporary file.
    let (raw, _) = sparse_raw(d, 53);
    let src = moved_vhd_gz(&raw, "small");
    let out = d.join("small.out");
    let r = import_file(src.to_str().unwrap(), &out, &no_temp(d)).unwrap();
    assert!(!r.spooled);
    assert_same(&out, &raw, "raw");

    // Its BAT past the 64 MiB read-ahead: spooled, with a message saying why.
    let big_raw = d.join("big.raw");
    let pattern: Vec<u8> = (0..(72u32 << 20)).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(&big_raw, &pattern).unwrap();
    drop(pattern);
    let src = moved_vhd_gz(&big_raw, "big");
    let temp = d.join("temp");
    std::fs::create_dir(&temp).unwrap();
    let opts = ImportOptions {
        temp_dir: Some(temp.clone()),
        ..Default::default()
    };
    let out = d.join("big.out");
    let (r, msgs) = import_with_messages(&src, &out, &opts);
    let r = r.unwrap();
    assert!(r.spooled);
    assert_eq!(r.format, "vhd");
    assert_same(&out, &big_raw, "raw");
    assert!(
        msgs.iter()
            .any(|m| m.contains("cannot be decoded in one pass") && m.contains("read ahead")),
        "{msgs:?}"
    );
    assert_eq!(std::fs::read_dir(&temp).unwrap().count(), 0, "spool left");
    // Without a usable temp dir that fallback fails cleanly.
    let e = import_file(src.to_str().unwrap(), &d.join("nt.out"), &no_temp(d))
        .unwrap_err()
        .to_string();
    assert!(e.contains("spool"), "{e}");
    assert_nothing_left(d, "nt.out");
}

#[test]
fn stdin_streams_without_a_temp_file() {
    if std::env::var("PLATTER_MAP_STDIN_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = sparse_raw(d, 54);
    for (name, fmt, opts) in [
        ("in.vhdx", "vhdx", &[][..]),
        (
            "in.vhd",
            "vpc",
            &["-o", "subformat=dynamic,force_size=on"][..],
        ),
    ] {
        let img = d.join(name);
        convert(&raw, &img, fmt, opts);
        // The test binary's stdin cannot be replaced: the import runs in a child process
        // that is this very test binary (`stdin_child`).
        let out = d.join(format!("{name}.out"));
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "stdin_child", "--nocapture"])
            .env("PLATTER_MAP_STDIN_CHILD", "1")
            .env("PLATTER_MAP_STDIN_OUT", &out)
            .env("PLATTER_MAP_STDIN_TEMP", d.join("no-such-temp-dir"))
            .stdin(std::fs::File::open(&img).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{name}");
        assert_same(&out, &raw, "raw");
    }
}

#[test]
fn stdin_child() {
    let (Ok(out), Ok(temp)) = (
        std::env::var("PLATTER_MAP_STDIN_OUT"),
        std::env::var("PLATTER_MAP_STDIN_TEMP"),
    ) else {
        return; // only meaningful when started by stdin_streams_without_a_temp_file
    };
    let opts = ImportOptions {
        temp_dir: Some(temp.into()),
        ..Default::default()
    };
    let r = import_file("-", Path::new(&out), &opts).unwrap();
    assert!(!r.spooled);
}
