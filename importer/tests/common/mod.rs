//! Shared helpers for the importer's integration tests: test images made by the real
//! qemu-img and byte comparison with `qemu-img compare`. The HTTP(S) server, the
//! throw-away CA and docker-registry come from platter-testkit.
#![allow(dead_code, unused_imports)]

pub mod token;

pub use platter_testkit::ca::{throwaway_ca, TestCa};
pub use platter_testkit::http::{Behaviour, Change, HttpServer, Seen};
pub use platter_testkit::registry::Registry;
pub use platter_testkit::{free_port, run, sh};

use platter_importer::push::{PushExtent, PushVolume};
use platter_importer::{import, FileSink, ImportError, ImportOptions, ImportReport, NoProgress};
use sha2::Digest;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use platter_testkit::random_bytes;

/// Options whose temp dir does not exist: creating any temporary file (a spool) fails.
pub fn no_temp(d: &Path) -> ImportOptions {
    ImportOptions {
        temp_dir: Some(d.join("no-such-temp-dir")),
        ..Default::default()
    }
}

/// `qemu-img convert` of a raw file to `fmt`, with extra arguments (`-o ...`, `-c`).
pub fn convert(raw: &Path, out: &Path, fmt: &str, opts: &[&str]) {
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    args.extend_from_slice(opts);
    args.push(raw.to_str().unwrap());
    args.push(out.to_str().unwrap());
    run("qemu-img", &args);
}

/// `disk.raw` in `dir`: [`make_raw`]'s 6 MiB pattern grown (sparsely) to `size` bytes,
/// with 1 MiB of random data at `far`. Returns the path and the data bytes.
pub fn sparse_raw_at(dir: &Path, seed: u64, size: u64, far: u64) -> (PathBuf, u64) {
    let (raw, data) = make_raw(dir, "disk.raw", 6 << 20, seed);
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&random_bytes(seed + 100, 1 << 20), far)
        .unwrap();
    (raw, data + (1 << 20))
}

/// A raw test disk of `size` bytes: random data runs, holes, an explicitly written zero
/// run and an unaligned tail. Returns the path and the number of non-zero data bytes.
pub fn make_raw(dir: &Path, name: &str, size: u64, seed: u64) -> (PathBuf, u64) {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let mut data = 0u64;
    let mut off = 0u64;
    let mut i = 0u64;
    while off < size {
        let len = ((i * 37 + 11) % 23 + 1) * 16 * 1024;
        let len = len.min(size - off);
        match i % 4 {
            0 | 2 => {
                f.write_all_at(&random_bytes(seed + i, len as usize), off)
                    .unwrap();
                data += len;
            }
            3 => f.write_all_at(&vec![0u8; len as usize], off).unwrap(), // allocated zeros
            _ => {}                                                      // hole
        }
        off += len + ((i * 13) % 7) * 64 * 1024;
        i += 1;
    }
    // A few bytes in the last sector, so tails are exercised.
    f.write_all_at(b"tail!", size - 5).unwrap();
    (path, data + 5)
}

/// Imports `source` into a new file `out`.
pub fn import_file(
    source: &str,
    out: &Path,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let sink = FileSink::create(out)?;
    import(source, sink, opts, &NoProgress).map(|(r, _)| r)
}

/// `qemu-img compare` of a raw result against an image of format `fmt`.
pub fn assert_same(raw: &Path, image: &Path, fmt: &str) {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", fmt])
        .arg(raw)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        raw.display(),
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes allocated on disk for a file.
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Asserts a result is sparse: allocation close to the data size.
pub fn assert_sparse(path: &Path, data_bytes: u64) {
    let a = allocated(path);
    assert!(
        a <= data_bytes + data_bytes / 8 + (256 << 10),
        "{} allocates {a} bytes for {data_bytes} bytes of data",
        path.display()
    );
}

/// Nothing named like `base` (or its .partial) is left in `dir`.
pub fn assert_nothing_left(dir: &Path, base: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !n.starts_with(base),
            "{n} was left behind in {}",
            dir.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// A file as a volume to push

/// A raw file as a [`PushVolume`]; zero 64 KiB runs are reported as holes.
pub struct FileVolume(pub std::fs::File, pub u64);

impl FileVolume {
    pub fn open(p: &Path) -> FileVolume {
        let f = std::fs::File::open(p).unwrap();
        let len = f.metadata().unwrap().len();
        FileVolume(f, len)
    }
}

impl PushVolume for FileVolume {
    fn size(&self) -> u64 {
        self.1
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn block_status(&self, offset: u64, len: u64) -> std::io::Result<Vec<PushExtent>> {
        let mut out: Vec<PushExtent> = Vec::new();
        let mut pos = offset;
        let end = offset + len.min(16 << 20);
        let mut buf = vec![0u8; 64 << 10];
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            self.0.read_exact_at(&mut buf[..n], pos)?;
            let data = buf[..n].iter().any(|&b| b != 0);
            match out.last_mut() {
                Some(l) if l.data == data => l.len += n as u64,
                _ => out.push(PushExtent {
                    offset: pos,
                    len: n as u64,
                    data,
                }),
            }
            pos += n as u64;
        }
        Ok(out)
    }
}

/// Reads a whole file.
pub fn read(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Writes an OCI layout with one uncompressed layer holding `layer_tar`.
pub fn layout_with_layer(dir: &Path, layer_tar: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let hex = hex::encode(sha2::Sha256::digest(data));
        std::fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let (ld, ls) = put(layer_tar);
    let (cd, cs) =
        put(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{ls}}}]}}"#
    );
    let (md, ms) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#
        ),
    )
    .unwrap();
}
