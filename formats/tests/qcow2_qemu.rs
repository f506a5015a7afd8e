//! qcow2 against the real QEMU tools: images from `Qcow2Writer` must pass `qemu-img
//! check` and compare equal to their raw source; images from `qemu-img create/convert`
//! and `qemu-io` (v2, v3, zlib, zstd, extended L2, zero clusters, 512 B..2 MiB clusters,
//! backing files, encryption) must read byte-identically through `Qcow2Image`.

use platter_formats::qcow2::{ClusterMap, Compression, Qcow2Image, Qcow2Writer, WriterOptions};
use platter_formats::{DiskImage, ExtentKind, FormatError};
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// xorshift64: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// A sparse raw disk: virtual size and the chunks of non-zero content.
struct Source {
    size: u64,
    chunks: Vec<(u64, Vec<u8>)>,
}

impl Source {
    /// Random data, compressible text, a 20 KiB-period repetition (long deflate
    /// distances), zeros inside chunks, holes between them, and a chunk at the very end.
    fn new(size: u64, seed: u64) -> Source {
        let mut n = Noise(seed | 1);
        let mut chunks = Vec::new();
        let mut noise = vec![0u8; 700_000];
        n.fill(&mut noise);
        chunks.push((4096 * 3 + 100, noise));
        let text: Vec<u8> = (0..900_000u32)
            .flat_map(|i| format!("line {} of the test disk\n", i % 977).into_bytes())
            .take(900_000)
            .collect();
        chunks.push((1 << 20, text));
        let mut period = vec![0u8; 20 << 10];
        n.fill(&mut period);
        let mut rep: Vec<u8> = period.iter().cycle().take(600_000).copied().collect();
        rep[200_000..300_000].fill(0);
        chunks.push(((2 << 20) + 512 * 7, rep));
        let mut mid = vec![0u8; 300_000];
        n.fill(&mut mid[..100_000]);
        chunks.push(((size / 2).max(3 << 20) + 12345, mid));
        let mut tail = vec![0u8; 5000];
        n.fill(&mut tail);
        chunks.push((size - 5000, tail));
        Source { size, chunks }
    }

    fn write_raw(&self, path: &Path) {
        let f = File::create(path).unwrap();
        f.set_len(self.size).unwrap();
        for (off, data) in &self.chunks {
            f.write_all_at(data, *off).unwrap();
        }
    }

    /// Feeds the writer every cluster that overlaps a chunk, in order.
    fn write_qcow2(&self, path: &Path, opts: WriterOptions) {
        let raw = path.with_extension("src.raw");
        self.write_raw(&raw);
        let src = File::open(&raw).unwrap();
        let mut w = Qcow2Writer::new(File::create(path).unwrap(), self.size, opts).unwrap();
        let cs = opts.cluster_size;
        let mut indexes: Vec<u64> = self
            .chunks
            .iter()
            .flat_map(|(off, d)| (off / cs)..(off + d.len() as u64).div_ceil(cs))
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        let mut buf = vec![0u8; cs as usize];
        for idx in indexes {
            let len = cs.min(self.size - idx * cs) as usize;
            src.read_exact_at(&mut buf[..len], idx * cs).unwrap();
            w.write_cluster(idx, &buf[..len]).unwrap();
        }
        w.finish().unwrap().sync_all().unwrap();
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed: {text}");
    text
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn writer_output_passes_qemu_img_check_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (512u64, 4 << 20),
        (65536, (1 << 30) + 12345),
        (2 << 20, (1 << 30) + 12345),
    ];
    for (cluster_size, size) in cases {
        let src = Source::new(size, cluster_size);
        let raw = dir.path().join(format!("src-{cluster_size}.raw"));
        src.write_raw(&raw);
        for compression in [Compression::None, Compression::Zlib, Compression::Zstd] {
            let out = dir
                .path()
                .join(format!("out-{cluster_size}-{compression:?}.qcow2"));
            let opts = WriterOptions {
                cluster_size,
                compression,
            };
            src.write_qcow2(&out, opts);
            let check = run("qemu-img", &["check", "-f", "qcow2", p(&out)]);
            assert!(check.contains("No errors were found"), "{opts:?}: {check}");
            assert!(!check.contains("leaked"), "{opts:?}: {check}");
            let cmp = run(
                "qemu-img",
                &["compare", "-f", "raw", "-F", "qcow2", p(&raw), p(&out)],
            );
            assert!(cmp.contains("Images are identical"), "{opts:?}: {cmp}");
            let info = run("qemu-img", &["info", p(&out)]);
            assert!(
                info.contains(&format!("cluster_size: {cluster_size}")),
                "{info}"
            );
            if compression == Compression::Zstd {
                assert!(info.contains("compression type: zstd"), "{info}");
            }
            // Our own reader agrees too.
            let img = Qcow2Image::open(File::open(&out).unwrap()).unwrap();
            assert_chunks_match(&img, &src);
            let kinds = mapping_kinds(&img);
            assert_eq!(
                kinds.contains("compressed"),
                compression != Compression::None,
                "{opts:?}: {kinds:?}"
            );
            // With 2 MiB clusters every cluster mixes noise with compressible data.
            if cluster_size <= 65536 {
                assert!(
                    kinds.contains("data"),
                    "{opts:?}: incompressible clusters stay raw: {kinds:?}"
                );
            }
        }
    }
}

/// Compares an image against a source without reading gigabytes of holes: the chunks
/// byte for byte, and the map says zero between them.
fn assert_chunks_match(img: &dyn DiskImage, src: &Source) {
    // The writer rounds the size up to whole sectors, as qemu-img does.
    assert_eq!(img.virtual_size(), src.size.next_multiple_of(512));
    for (off, data) in &src.chunks {
        let mut buf = vec![0u8; data.len()];
        img.read_at(&mut buf, *off).unwrap();
        assert!(buf == *data, "chunk at {off} differs");
    }
    let mut pos = 0;
    while pos < img.virtual_size() {
        let e = img.map(pos, u64::MAX).unwrap();
        if e.kind == ExtentKind::Zero {
            let overlaps = src.chunks.iter().any(|(o, d)| {
                let start = pos.max(*o);
                let end = (pos + e.len).min(o + d.len() as u64);
                start < end
                    && d[(start - o) as usize..(end - o) as usize]
                        .iter()
                        .any(|&b| b != 0)
            });
            assert!(!overlaps, "zero extent {pos}+{} covers data", e.len);
        }
        pos += e.len;
    }
}

/// Reads a whole image through our reader.
fn read_all(img: &dyn DiskImage) -> Vec<u8> {
    let mut out = vec![0u8; img.virtual_size() as usize];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        img.read_at(chunk, (i as u64) << 20).unwrap();
    }
    out
}

/// The raw bytes of an image according to qemu.
fn qemu_raw(img: &Path, fmt: &str) -> Vec<u8> {
    let raw = img.with_extension("ref.raw");
    run(
        "qemu-img",
        &["convert", "-f", fmt, "-O", "raw", p(img), p(&raw)],
    );
    std::fs::read(raw).unwrap()
}

/// Which kinds of cluster mapping an image uses, so tests know they covered them.
fn mapping_kinds(img: &Qcow2Image<File>) -> BTreeSet<&'static str> {
    let clusters = img.virtual_size().div_ceil(img.geometry().cluster_size());
    (0..clusters)
        .map(|c| match img.cluster_map(c).unwrap() {
            ClusterMap::Unallocated => "unallocated",
            ClusterMap::Zero => "zero",
            ClusterMap::Data { .. } => "data",
            ClusterMap::Compressed { .. } => "compressed",
            ClusterMap::Subclusters { .. } => "subclusters",
        })
        .collect()
}

fn assert_reads_like_qemu(path: &Path, what: &str) -> BTreeSet<&'static str> {
    let img = Qcow2Image::open(File::open(path).unwrap())
        .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    let ours = read_all(&img);
    let theirs = qemu_raw(path, "qcow2");
    assert_eq!(ours.len(), theirs.len(), "{what}");
    assert!(ours == theirs, "{what}: contents differ");
    let mut pos = 0;
    while pos < img.virtual_size() {
        let e = img.map(pos, u64::MAX).unwrap();
        if e.kind == ExtentKind::Zero {
            assert!(
                ours[pos as usize..(pos + e.len) as usize]
                    .iter()
                    .all(|&b| b == 0),
                "{what}: zero extent at {pos} holds data"
            );
        }
        pos += e.len;
    }
    mapping_kinds(&img)
}

struct Fixture {
    dir: tempfile::TempDir,
    raw: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    Source::new((8 << 20) + 4096 + 333, 7).write_raw(&raw);
    Fixture { dir, raw }
}

fn convert(f: &Fixture, name: &str, extra: &[&str]) -> PathBuf {
    let out = f.dir.path().join(format!("{name}.qcow2"));
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(extra);
    args.push(p(&f.raw));
    args.push(p(&out));
    run("qemu-img", &args);
    out
}

#[test]
fn reads_qemu_converted_images() {
    let f = fixture();
    let cases: [(&str, &[&str], &str); 10] = [
        ("v2", &["-o", "compat=0.10"], "data"),
        ("v3", &["-o", "compat=1.1"], "data"),
        ("zlib", &["-c"], "compressed"),
        (
            "zlib-v2-4k",
            &["-c", "-o", "compat=0.10,cluster_size=4096"],
            "compressed",
        ),
        ("zstd", &["-c", "-o", "compression_type=zstd"], "compressed"),
        (
            "zstd-2m",
            &["-c", "-o", "compression_type=zstd,cluster_size=2M"],
            "compressed",
        ),
        ("ext-l2", &["-o", "extended_l2=on"], "data"),
        (
            "ext-l2-zstd",
            &[
                "-c",
                "-o",
                "extended_l2=on,compression_type=zstd,cluster_size=16k",
            ],
            "compressed",
        ),
        ("c512", &["-o", "cluster_size=512"], "data"),
        ("c2m", &["-o", "cluster_size=2M"], "data"),
    ];
    for (name, extra, expect) in cases {
        let out = convert(&f, name, extra);
        let kinds = assert_reads_like_qemu(&out, name);
        assert!(kinds.contains(expect), "{name}: {kinds:?}");
    }
}

/// An image converted with `create` options, then modified by `qemu-io` commands; the
/// reader must see every mapping kind in `expect`.
struct QemuIoCase {
    name: &'static str,
    create: &'static [&'static str],
    io: &'static [&'static str],
    expect: &'static [&'static str],
}

#[test]
fn reads_zero_clusters_and_subclusters() {
    let f = fixture();
    let cases = [
        QemuIoCase {
            name: "zero-v3",
            create: &["-o", "compat=1.1"],
            io: &[
                "write -z 0 1M",
                "write -z 3145728 65536",
                "write -z -u 5M 128k",
            ],
            expect: &["zero", "data"],
        },
        QemuIoCase {
            name: "zero-v2",
            create: &["-o", "compat=0.10"],
            io: &["write -z 0 1M", "write -P 0x5a 7M 3000"],
            expect: &["data"],
        },
        QemuIoCase {
            name: "zero-ext-l2",
            create: &["-o", "extended_l2=on"],
            // Subcluster-sized zero and data writes leave clusters with mixed states.
            io: &[
                "write -z 4096 8192",
                "write -P 0xab 6291456 3072",
                "write -z 1M 2048",
                "write -P 0x11 8M 2048",
            ],
            expect: &["subclusters", "data"],
        },
        QemuIoCase {
            name: "zero-c512",
            create: &["-o", "cluster_size=512"],
            io: &["write -z 100k 3k", "write -P 0x33 6M 1536"],
            expect: &["zero", "data"],
        },
    ];
    for QemuIoCase {
        name,
        create,
        io,
        expect,
    } in cases
    {
        let out = convert(&f, name, create);
        for cmd in io {
            run("qemu-io", &["-f", "qcow2", "-c", cmd, p(&out)]);
        }
        let kinds = assert_reads_like_qemu(&out, name);
        for k in expect {
            assert!(kinds.contains(k), "{name}: {kinds:?} lacks {k}");
        }
    }
}

#[test]
fn backing_file_refused_unless_given() {
    let f = fixture();
    let base = convert(&f, "base", &[]);
    let overlay = f.dir.path().join("overlay.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            p(&base),
            "-F",
            "qcow2",
            p(&overlay),
        ],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x77 1M 100k", p(&overlay)],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -z 0 4096", p(&overlay)],
    );
    match Qcow2Image::open(File::open(&overlay).unwrap()) {
        Err(FormatError::BackingFile { path }) => assert_eq!(path, p(&base)),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened an image with a backing file"),
    }
    let backing = Qcow2Image::open(File::open(&base).unwrap()).unwrap();
    let img =
        Qcow2Image::open_with_backing(File::open(&overlay).unwrap(), Box::new(backing)).unwrap();
    assert!(read_all(&img) == qemu_raw(&overlay, "qcow2"));
}

#[test]
fn encrypted_image_refused() {
    // LUKS creation benchmarks the CPU (and fails in some sandboxes); the legacy AES
    // method needs no benchmark. LUKS is covered by the header unit tests.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("enc.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "--object",
            "secret,id=sec0,data=hunter2",
            "-o",
            "encrypt.format=aes,encrypt.key-secret=sec0",
            p(&img),
            "1M",
        ],
    );
    match Qcow2Image::open(File::open(&img).unwrap()) {
        Err(FormatError::Encrypted { method, .. }) => assert_eq!(method, "AES"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened an encrypted image"),
    }
}

#[test]
fn truncated_qemu_image_errors_without_panic() {
    let f = fixture();
    let full = convert(&f, "full", &["-c"]);
    let bytes = std::fs::read(&full).unwrap();
    for cut in [10, 100, 65536 + 10, bytes.len() / 2, bytes.len() - 1000] {
        let data = platter_formats::MemImage(bytes[..cut].to_vec());
        match Qcow2Image::open(data) {
            Err(e) => assert!(
                matches!(
                    e,
                    FormatError::Truncated { .. } | FormatError::Corrupt { .. }
                ),
                "cut {cut}: {e}"
            ),
            Ok(img) => {
                // The metadata survived; data past the cut must error, never panic.
                let mut buf = vec![0u8; img.virtual_size() as usize];
                let r = img.read_at(&mut buf, 0);
                assert!(
                    matches!(
                        r,
                        Err(FormatError::Corrupt { .. }) | Err(FormatError::Io { .. }) | Ok(())
                    ),
                    "cut {cut}: {r:?}"
                );
            }
        }
    }
}
