//! containerDisks against the real Debian docker-registry (plain, and with htpasswd auth
//! and TLS from a throw-away CA), skopeo and umoci: push/pull round trips, the KubeVirt
//! layer layout, interop both ways, OCI layouts, tampered layouts, and the default qcow2
//! push streaming without any temporary file.

mod common;

use common::*;
use platter_importer::checksum::sha256_digest;
use platter_importer::oci::auth_file::AuthFile;
use platter_importer::oci::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use platter_importer::push::{
    push, DiskFormat, LayerCompression, PushExtent, PushOptions, PushVolume,
};
use platter_importer::{
    import, resolve_digest, Credentials, FileSink, ImportError, ImportOptions, ImportReport,
    NoProgress, Platform, ProgressEvent, RegistryOptions, StoreSink, TlsOptions,
};
use platter_snapshotter::Store;
use platter_types::{Name, VolumeRef};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

fn disk(dir: &Path) -> std::path::PathBuf {
    make_raw(dir, "vol.raw", 3 << 20, 21).0
}

/// Lists a layer blob with GNU tar: "mode owner size name" lines.
fn tar_listing(blob: &Path) -> Vec<String> {
    sh(&format!("tar --numeric-owner -tvf {}", blob.display()))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {} {}", f[0], f[1], f[2], f[5])
        })
        .collect()
}

/// The single layer blob of an OCI layout made by skopeo.
fn only_layer(layout: &Path) -> std::path::PathBuf {
    let index: serde_json::Value =
        serde_json::from_slice(&read(&layout.join("index.json"))).unwrap();
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let m: serde_json::Value =
        serde_json::from_slice(&read(&layout.join("blobs/sha256").join(mdigest))).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{m}");
    layout
        .join("blobs/sha256")
        .join(layers[0]["digest"].as_str().unwrap().replace("sha256:", ""))
}

#[test]
fn plain_registry_round_trip_and_interop() {
    let reg = Registry::start_plain();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = disk(d);
    let vol = FileVolume::open(&src);

    for (tag, fmt, comp) in [
        ("qcow2-gzip", DiskFormat::Qcow2, LayerCompression::Gzip),
        ("raw-zstd", DiskFormat::Raw, LayerCompression::Zstd),
        ("raw-none", DiskFormat::Raw, LayerCompression::None),
    ] {
        let dest = format!("docker://{}", reg.reference(&format!("vm:{tag}")));
        let opts = PushOptions {
            disk_format: fmt,
            compression: comp,
            ..Default::default()
        };
        let rep =
            push(&vol, &dest, &opts, &NoProgress).unwrap_or_else(|e| panic!("push {tag}: {e}"));
        assert!(rep.manifest_digest.starts_with("sha256:"));

        // Pull it back: identical.
        let out = d.join(format!("{tag}.out"));
        let r = import_file(&dest, &out, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("pull {tag}: {e}"));
        assert_eq!(r.member.as_deref(), Some("disk/disk.img"));
        // Our qcow2 puts its tables before their data: the gzip layer streams, no spool.
        assert!(!r.spooled, "{tag} was spooled");
        assert_eq!(
            r.manifest_digest.as_deref(),
            Some(rep.manifest_digest.as_str())
        );
        assert_same(&out, &src, "raw");

        // skopeo accepts it, and the layer has exactly the KubeVirt layout.
        let inspect = run("skopeo", &["inspect", "--tls-verify=false", &dest]);
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(v["Architecture"], "amd64");
        assert_eq!(v["Os"], "linux");
        let layout = d.join(format!("layout-{tag}"));
        run(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                &dest,
                &format!("oci:{}:x", layout.display()),
            ],
        );
        let blob = only_layer(&layout);
        let plain = d.join(format!("{tag}.tar"));
        match comp {
            LayerCompression::Gzip => sh(&format!(
                "gzip -dc {} > {}",
                blob.display(),
                plain.display()
            )),
            LayerCompression::Zstd => sh(&format!(
                "zstd -q -dc {} > {}",
                blob.display(),
                plain.display()
            )),
            LayerCompression::None => sh(&format!("cp {} {}", blob.display(), plain.display())),
        };
        let listing = tar_listing(&plain);
        assert_eq!(listing.len(), 2, "{listing:?}");
        assert!(
            listing[0].starts_with("dr-xr-xr-x 107/107 0 disk/"),
            "{listing:?}"
        );
        assert!(
            listing[1].starts_with("-r--r--r-- 107/107 ") && listing[1].ends_with(" disk/disk.img"),
            "{listing:?}"
        );
        if fmt == DiskFormat::Qcow2 {
            let img = d.join(format!("{tag}.img"));
            sh(&format!(
                "tar -xOf {} disk/disk.img > {}",
                plain.display(),
                img.display()
            ));
            assert_same(&src, &img, "qcow2");
            run("qemu-img", &["check", img.to_str().unwrap()]);
        }
    }
}

#[test]
fn umoci_built_containerdisk_imports() {
    let reg = Registry::start_plain();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = disk(d);
    let qcow = d.join("disk.qcow2");
    convert(&src, &qcow, "qcow2", &[]);
    let lay = d.join("umoci");
    let ds = d.display();
    sh(&format!(
        "umoci init --layout {l} && umoci new --image {l}:cd && \
         umoci insert --image {l}:cd {ds}/disk.qcow2 /disk/disk.img",
        l = lay.display()
    ));
    let dest = format!("docker://{}", reg.reference("umoci:cd"));
    run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:cd", lay.display()),
            &dest,
        ],
    );
    let out = d.join("umoci.out");
    // A qemu-img qcow2 in a gzip layer streams in one pass: no temporary file at all
    // (the temp dir does not exist, so making one would fail).
    let opts = ImportOptions {
        temp_dir: Some(d.join("no-such-temp-dir")),
        ..Default::default()
    };
    let r = import_file(&dest, &out, &opts).unwrap();
    assert_eq!(r.format, "qcow2");
    assert!(!r.spooled);
    assert_same(&out, &src, "raw");
    // The umoci layout imports directly too.
    let out = d.join("umoci-oci.out");
    import_file(
        &format!("oci:{}:cd", lay.display()),
        &out,
        &ImportOptions::default(),
    )
    .unwrap();
    assert_same(&out, &src, "raw");
}

#[test]
fn tls_and_auth_registry() {
    let reg = Registry::start_tls_auth();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = disk(d);
    let vol = FileVolume::open(&src);
    let dest = format!("docker://{}", reg.reference("secure/vm:1"));
    let tls = TlsOptions {
        verify: true,
        cert_dir: reg.ca.clone(),
        ..Default::default()
    };
    let with_creds = RegistryOptions {
        creds: Some(Credentials::parse("user:secret").unwrap()),
        tls: tls.clone(),
        ..Default::default()
    };

    // No credentials: refused.
    let opts = PushOptions {
        registry: RegistryOptions {
            tls: tls.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let e = push(&vol, &dest, &opts, &NoProgress).unwrap_err();
    assert!(matches!(e, ImportError::Registry { .. }), "{e}");

    // Without the CA the certificate is refused, unless --tls-verify=false.
    let opts = PushOptions {
        registry: RegistryOptions {
            creds: with_creds.creds.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(push(&vol, &dest, &opts, &NoProgress).is_err());

    let opts = PushOptions {
        registry: with_creds.clone(),
        ..Default::default()
    };
    let rep = push(&vol, &dest, &opts, &NoProgress).unwrap();

    // Pull with an auth file.
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("user:secret");
    let authfile = d.join("auth.json");
    std::fs::write(
        &authfile,
        format!(
            r#"{{"auths":{{"127.0.0.1:{}":{{"auth":"{auth}"}}}}}}"#,
            reg.port
        ),
    )
    .unwrap();
    let iopts = ImportOptions {
        registry: RegistryOptions {
            authfile: Some(authfile),
            tls: tls.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = d.join("tls.out");
    let r = import_file(&dest, &out, &iopts).unwrap();
    assert_eq!(
        r.manifest_digest.as_deref(),
        Some(rep.manifest_digest.as_str())
    );
    assert_same(&out, &src, "raw");

    // The same entries in memory (an imagePullSecret): used, and a file is not needed.
    let json = |user_pass: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(user_pass);
        format!(
            r#"{{"auths":{{"127.0.0.1:{}":{{"auth":"{auth}"}}}}}}"#,
            reg.port
        )
    };
    let in_memory = |user_pass: &str| ImportOptions {
        registry: RegistryOptions {
            auth: Some(AuthFile::parse(json(user_pass).as_bytes()).unwrap()),
            tls: tls.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = d.join("memory.out");
    import_file(&dest, &out, &in_memory("user:secret")).unwrap();
    assert_same(&out, &src, "raw");
    let e = import_file(&dest, &d.join("wrong.out"), &in_memory("user:wrong")).unwrap_err();
    assert!(matches!(e, ImportError::Registry { .. }), "{e}");
    assert_nothing_left(d, "wrong");

    // Skip verification instead of trusting the CA; pull by digest.
    let iopts = ImportOptions {
        registry: RegistryOptions {
            creds: with_creds.creds.clone(),
            tls: TlsOptions {
                verify: false,
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let by_digest = format!(
        "docker://{}@{}",
        reg.reference("secure/vm"),
        rep.manifest_digest
    );
    let out = d.join("insecure.out");
    import_file(&by_digest, &out, &iopts).unwrap();
    assert_same(&out, &src, "raw");
    run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "user:secret",
            &dest,
        ],
    );
}

#[test]
fn oci_layouts_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = disk(d);
    let vol = FileVolume::open(&src);
    let lay = d.join("lay");
    push(
        &vol,
        &format!("oci:{}:v1", lay.display()),
        &PushOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let raw_opts = PushOptions {
        disk_format: DiskFormat::Raw,
        ..Default::default()
    };
    push(
        &vol,
        &format!("oci:{}:v2", lay.display()),
        &raw_opts,
        &NoProgress,
    )
    .unwrap();
    let arch = d.join("img.tar");
    push(
        &vol,
        &format!("oci-archive:{}:v1", arch.display()),
        &PushOptions::default(),
        &NoProgress,
    )
    .unwrap();

    for (srcs, name) in [
        (format!("oci:{}:v1", lay.display()), "a"),
        (format!("oci:{}:v2", lay.display()), "b"),
        (format!("oci-archive:{}:v1", arch.display()), "c"),
        (format!("oci-archive:{}", arch.display()), "d"),
    ] {
        let out = d.join(format!("{name}.out"));
        import_file(&srcs, &out, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{srcs}: {e}"));
        assert_same(&out, &src, "raw");
    }
    // skopeo reads what we wrote.
    run("skopeo", &["inspect", &format!("oci:{}:v1", lay.display())]);
    run(
        "skopeo",
        &["inspect", &format!("oci-archive:{}:v1", arch.display())],
    );

    // A layer blob whose content does not match its digest is refused, nothing left.
    let blob = only_layer_for_tag(&lay, "v2");
    let mut data = read(&blob);
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&blob, data).unwrap();
    let out = d.join("tampered.out");
    let e = import_file(
        &format!("oci:{}:v2", lay.display()),
        &out,
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ImportError::ChecksumMismatch { .. } | ImportError::Tar { .. } | ImportError::Io { .. }
        ),
        "{e}"
    );
    assert_nothing_left(d, "tampered");
    // A manifest that names a wrong digest for an intact layer: only the digest check
    // can catch it.
    let good = only_layer_for_tag(&lay, "v1");
    let fake = format!("sha256:{}", "1".repeat(64));
    std::fs::copy(&good, lay.join("blobs/sha256").join("1".repeat(64))).unwrap();
    let index_path = lay.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&read(&index_path)).unwrap();
    let entry = index["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .unwrap();
    let mpath = lay
        .join("blobs/sha256")
        .join(entry["digest"].as_str().unwrap().replace("sha256:", ""));
    let mut m: serde_json::Value = serde_json::from_slice(&read(&mpath)).unwrap();
    m["layers"][0]["digest"] = serde_json::Value::String(fake.clone());
    let mbytes = serde_json::to_vec(&m).unwrap();
    let tmp = d.join("m.json");
    std::fs::write(&tmp, &mbytes).unwrap();
    let mhex = sh(&format!("sha256sum {} | cut -d' ' -f1", tmp.display()))
        .trim()
        .to_string();
    std::fs::write(lay.join("blobs/sha256").join(&mhex), &mbytes).unwrap();
    entry["digest"] = serde_json::Value::String(format!("sha256:{mhex}"));
    entry["size"] = serde_json::Value::from(mbytes.len());
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let out = d.join("wrongdigest.out");
    let e = import_file(
        &format!("oci:{}:v1", lay.display()),
        &out,
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ImportError::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&fake), "{e}");
    assert_nothing_left(d, "wrongdigest");
}

fn only_layer_for_tag(layout: &Path, tag: &str) -> std::path::PathBuf {
    let index: serde_json::Value =
        serde_json::from_slice(&read(&layout.join("index.json"))).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let md = m["digest"].as_str().unwrap().replace("sha256:", "");
    let m: serde_json::Value =
        serde_json::from_slice(&read(&layout.join("blobs/sha256").join(md))).unwrap();
    layout.join("blobs/sha256").join(
        m["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .replace("sha256:", ""),
    )
}

/// Imports `source` into `out` with no temp dir; returns the report and the messages.
fn import_noting(source: &str, out: &Path, d: &Path) -> (ImportReport, Vec<String>) {
    let msgs = Mutex::new(Vec::new());
    let progress = |e: ProgressEvent| {
        if let ProgressEvent::Message { text } | ProgressEvent::Detail { text } = e {
            msgs.lock().unwrap().push(text);
        }
    };
    let sink = FileSink::create(out).unwrap();
    let (r, _) = import(source, sink, &no_temp(d), &progress)
        .unwrap_or_else(|e| panic!("import {source}: {e}"));
    (r, msgs.into_inner().unwrap())
}

/// Asserts an import of a pushed qcow2 streamed: no spool, nothing kept for later.
fn assert_streamed(r: &ImportReport, msgs: &[String]) {
    assert_eq!(r.format, "qcow2");
    assert!(!r.spooled, "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.contains("without a spool file")),
        "{msgs:?}"
    );
    assert!(
        !msgs.iter().any(|m| m.contains("came before the tables")),
        "{msgs:?}"
    );
}

/// Extracts `disk/disk.img` from the gzip layer of `tag` in an OCI layout; checks the
/// tar entry's size against `disk_bytes` and runs `qemu-img check` on it.
fn layout_disk_img(d: &Path, lay: &Path, tag: &str, disk_bytes: u64) -> std::path::PathBuf {
    let blob = only_layer_for_tag(lay, tag);
    let plain = d.join(format!("{tag}.tar"));
    sh(&format!(
        "gzip -dc {} > {}",
        blob.display(),
        plain.display()
    ));
    let listing = tar_listing(&plain);
    assert_eq!(
        listing[1],
        format!("-r--r--r-- 107/107 {disk_bytes} disk/disk.img"),
        "{listing:?}"
    );
    let img = d.join(format!("{tag}.img"));
    sh(&format!(
        "tar -xOf {} disk/disk.img > {}",
        plain.display(),
        img.display()
    ));
    assert_eq!(std::fs::metadata(&img).unwrap().len(), disk_bytes);
    let check = run("qemu-img", &["check", "-f", "qcow2", img.to_str().unwrap()]);
    assert!(check.contains("No errors were found"), "{check}");
    assert!(!check.contains("leaked"), "{check}");
    img
}

#[test]
fn default_qcow2_push_streams_without_a_temp_file() {
    let reg = Registry::start_plain();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Data runs, holes, allocated zeros; not a whole number of clusters.
    let (src, _) = make_raw(d, "vol.raw", (5 << 20) + 4608, 31);
    let vol = FileVolume::open(&src);
    // Making any temporary file in this directory fails.
    let opts = PushOptions {
        temp_dir: Some(d.join("no-such-temp-dir")),
        ..Default::default()
    };
    assert_eq!(opts.disk_format, DiskFormat::Qcow2);
    // The control: the staged mode (compressed clusters) does need the temp dir.
    let staged = PushOptions {
        qcow2_compressed_clusters: true,
        ..opts.clone()
    };
    let lay = d.join("lay");
    let e = push(
        &vol,
        &format!("oci:{}:staged", lay.display()),
        &staged,
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("temporary file"), "{e}");

    // To a registry, then pulled back through the streaming decoder.
    let dest = format!("docker://{}", reg.reference("stream:qcow2"));
    let rep = push(&vol, &dest, &opts, &NoProgress).unwrap();
    assert_eq!(rep.disk_format, "qcow2");
    let out = d.join("pulled.raw");
    let (r, msgs) = import_noting(&dest, &out, d);
    assert_streamed(&r, &msgs);
    assert_same(&out, &src, "raw");

    // To an OCI layout: the same layer, byte for byte; disk.img is a clean qcow2.
    let rep2 = push(
        &vol,
        &format!("oci:{}:v1", lay.display()),
        &opts,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(rep2.layer_digest, rep.layer_digest);
    let img = layout_disk_img(d, &lay, "v1", rep2.disk_bytes);
    assert_same(&src, &img, "qcow2");
    let out = d.join("layout.raw");
    let (r, msgs) = import_noting(&format!("oci:{}:v1", lay.display()), &out, d);
    assert_streamed(&r, &msgs);
    assert_same(&out, &src, "raw");
}

/// Plans from one file's allocation and reads another's bytes: a volume written between
/// push's two passes.
struct Changed {
    before: FileVolume,
    after: FileVolume,
}

impl PushVolume for Changed {
    fn size(&self) -> u64 {
        self.before.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.after.read_at(buf, offset)
    }
    fn block_status(&self, offset: u64, len: u64) -> std::io::Result<Vec<PushExtent>> {
        self.before.block_status(offset, len)
    }
}

#[test]
fn qcow2_push_of_a_volume_changed_between_passes_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 4 << 20;
    let (before, _) = make_raw(d, "before.raw", size, 41);
    let (after, _) = make_raw(d, "after.raw", size, 42);
    // Different seeds give different data, and the hole pattern shifted by a few runs.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&after)
        .unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 0).unwrap(); // planned clusters now holes
    f.write_all_at(&random_bytes(43, 300_000), 3 << 20).unwrap(); // maybe unplanned
    let vol = Changed {
        before: FileVolume::open(&before),
        after: FileVolume::open(&after),
    };
    let lay = d.join("lay");
    let rep = push(
        &vol,
        &format!("oci:{}:v1", lay.display()),
        &PushOptions {
            temp_dir: Some(d.join("no-such-temp-dir")),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let img = layout_disk_img(d, &lay, "v1", rep.disk_bytes);
    // What it must hold: the new bytes of the clusters planned from the old map.
    let (old, new) = (read(&before), read(&after));
    let mut want = vec![0u8; size as usize];
    for (i, c) in old.chunks(64 << 10).enumerate() {
        if c.iter().any(|&b| b != 0) {
            let r = i * (64 << 10)..(i * (64 << 10) + c.len());
            want[r.clone()].copy_from_slice(&new[r]);
        }
    }
    let expect = d.join("expect.raw");
    std::fs::write(&expect, &want).unwrap();
    assert_same(&expect, &img, "qcow2");
    assert_ne!(want, new, "the test should drop some new data");
}

/// The Docker/distribution token flow against the real registry (`auth: token`): it
/// answers 401 with a Bearer challenge; the client fetches a token from the realm with
/// Basic credentials and retries with it. The registry verifies every token itself.
#[test]
fn token_auth_registry_push_and_pull() {
    let (reg, tokens) = common::token::start_token_registry("user", "pass");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = disk(d);
    let vol = FileVolume::open(&src);
    let dest = format!("docker://{}", reg.reference("secure/vm:1"));
    let creds = |c: &str| RegistryOptions {
        creds: Some(Credentials::parse(c).unwrap()),
        ..Default::default()
    };
    let granted = |scope: &str| {
        tokens.requests.lock().unwrap().iter().any(|r| {
            r.authorized
                && r.service.as_deref() == Some(common::token::SERVICE)
                && r.scopes.iter().any(|s| s == scope)
        })
    };

    let rep = push(
        &vol,
        &dest,
        &PushOptions {
            registry: creds("user:pass"),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(granted("repository:secure/vm:pull,push"));

    let out = d.join("token.out");
    let r = import_file(
        &dest,
        &out,
        &ImportOptions {
            registry: creds("user:pass"),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(granted("repository:secure/vm:pull"));
    assert_eq!(
        r.manifest_digest.as_deref(),
        Some(rep.manifest_digest.as_str())
    );
    assert_same(&out, &src, "raw");

    // An auth file's credentials go through the token service the same way.
    use base64::Engine;
    let authfile = d.join("auth.json");
    std::fs::write(
        &authfile,
        format!(
            r#"{{"auths":{{"127.0.0.1:{}":{{"auth":"{}"}}}}}}"#,
            reg.port,
            base64::engine::general_purpose::STANDARD.encode("user:pass")
        ),
    )
    .unwrap();
    let out = d.join("authfile.out");
    let opts = ImportOptions {
        registry: RegistryOptions {
            authfile: Some(authfile),
            ..Default::default()
        },
        ..Default::default()
    };
    import_file(&dest, &out, &opts).unwrap();
    assert_same(&out, &src, "raw");

    // The registry enforces the tokens: without credentials it refuses, and says why.
    let e = import_file(&dest, &d.join("anon.out"), &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, ImportError::Registry { .. }), "{e}");
    assert!(e.to_string().contains("no credentials were given"), "{e}");
    assert_nothing_left(d, "anon");

    // Wrong credentials: the token service's refusal is the error, for pull and push.
    let before = tokens.requests.lock().unwrap().len();
    let e = import_file(
        &dest,
        &d.join("wrong.out"),
        &ImportOptions {
            registry: creds("user:wrong"),
            ..Default::default()
        },
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("logging in to pull") && msg.contains("invalid username or password"),
        "{msg}"
    );
    assert_nothing_left(d, "wrong");
    let dest2 = format!("docker://{}", reg.reference("secure/vm:2"));
    let e = push(
        &vol,
        &dest2,
        &PushOptions {
            registry: creds("user:wrong"),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("logging in to push") && msg.contains("invalid username or password"),
        "{msg}"
    );
    let log = tokens.requests.lock().unwrap().clone();
    assert!(log[before..].iter().all(|r| !r.authorized), "{log:?}");
    // Nothing was pushed under the refused tag.
    let e = import_file(
        &dest2,
        &d.join("tag2.out"),
        &ImportOptions {
            registry: creds("user:pass"),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("no tag 2 in {}", reg.reference("secure/vm"))
    );
}

/// The descriptor (digest, size) of the manifest tagged `tag` in an OCI layout.
fn layout_manifest(lay: &Path, tag: &str) -> (String, u64) {
    let index: serde_json::Value = serde_json::from_slice(&read(&lay.join("index.json"))).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    (
        m["digest"].as_str().unwrap().to_string(),
        m["size"].as_u64().unwrap(),
    )
}

/// An image index (or manifest list) of `media_type` with one entry per
/// (media type, digest, size, architecture), all linux.
fn index_doc(media_type: &str, entries: &[(&str, &str, u64, &str)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(mt, digest, size, arch)| {
            serde_json::json!({
                "mediaType": mt,
                "digest": digest,
                "size": size,
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    }))
    .unwrap()
}

/// Imports `source` for each platform and checks which disk came out; a platform the
/// index lacks is an error naming it, and leaves nothing.
fn check_platforms(source: &str, d: &Path, amd: &Path, arm: &Path, name: &str) {
    let plat = |p: &str| ImportOptions {
        platform: Platform::parse(p).unwrap(),
        ..Default::default()
    };
    let out = d.join(format!("{name}-default.out"));
    import_file(source, &out, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{source}: {e}"));
    assert_same(&out, amd, "raw");
    let out = d.join(format!("{name}-arm64.out"));
    import_file(source, &out, &plat("linux/arm64")).unwrap_or_else(|e| panic!("{source}: {e}"));
    assert_same(&out, arm, "raw");
    let gone = format!("{name}-s390x");
    let e = import_file(source, &d.join(format!("{gone}.out")), &plat("linux/s390x")).unwrap_err();
    assert!(matches!(e, ImportError::NoDisk { .. }), "{e}");
    assert!(e.to_string().contains("no linux/s390x manifest"), "{e}");
    assert_nothing_left(d, &gone);
}

#[test]
fn platform_selects_the_index_entry() {
    let reg = Registry::start_plain();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (amd, _) = make_raw(d, "amd.raw", 3 << 20, 51);
    let (arm, _) = make_raw(d, "arm.raw", (2 << 20) + 4096, 52);
    let lay = d.join("lay");
    for (tag, src, p) in [("amd", &amd, "linux/amd64"), ("arm", &arm, "linux/arm64")] {
        let opts = PushOptions {
            platform: Platform::parse(p).unwrap(),
            ..Default::default()
        };
        push(
            &FileVolume::open(src),
            &format!("oci:{}:{tag}", lay.display()),
            &opts,
            &NoProgress,
        )
        .unwrap();
    }
    let (amd_digest, amd_size) = layout_manifest(&lay, "amd");
    let (arm_digest, arm_size) = layout_manifest(&lay, "arm");
    // arm64 first: picking the first entry instead of matching would take it.
    let index = index_doc(
        OCI_INDEX,
        &[
            (OCI_MANIFEST, &arm_digest, arm_size, "arm64"),
            (OCI_MANIFEST, &amd_digest, amd_size, "amd64"),
        ],
    );
    let index_digest = sha256_digest(&index);
    std::fs::write(
        lay.join("blobs/sha256")
            .join(index_digest.trim_start_matches("sha256:")),
        &index,
    )
    .unwrap();
    let index_path = lay.join("index.json");
    let mut top: serde_json::Value = serde_json::from_slice(&read(&index_path)).unwrap();
    top["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": OCI_INDEX,
            "digest": index_digest,
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }));
    std::fs::write(&index_path, serde_json::to_vec(&top).unwrap()).unwrap();

    let layout_src = format!("oci:{}:multi", lay.display());
    check_platforms(&layout_src, d, &amd, &arm, "layout");

    // The same OCI index in a registry (skopeo copies it with both images).
    let oci_ref = reg.reference("multi:oci");
    run(
        "skopeo",
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &layout_src,
            &format!("docker://{oci_ref}"),
        ],
    );
    check_platforms(&format!("docker://{oci_ref}"), d, &amd, &arm, "oci-index");
    // What `vm create --image` caches on: the platform's manifest, not the index.
    for (p, want) in [("linux/amd64", &amd_digest), ("linux/arm64", &arm_digest)] {
        let opts = ImportOptions {
            platform: Platform::parse(p).unwrap(),
            ..Default::default()
        };
        let got = resolve_digest(&format!("docker://{oci_ref}"), &opts).unwrap();
        assert_eq!(got.as_ref(), Some(want), "{p}");
    }

    // A Docker manifest list over Docker schema 2 manifests (skopeo converts them).
    let mut entries = Vec::new();
    for (tag, arch) in [("arm", "arm64"), ("amd", "amd64")] {
        let r = reg.reference(&format!("multi:{tag}-v2s2"));
        run(
            "skopeo",
            &[
                "copy",
                "--format",
                "v2s2",
                "--dest-tls-verify=false",
                &format!("oci:{}:{tag}", lay.display()),
                &format!("docker://{r}"),
            ],
        );
        let m = d.join(format!("{tag}.v2s2.json"));
        sh(&format!(
            "curl -sSf -H 'Accept: {DOCKER_MANIFEST}' -o {} http://127.0.0.1:{}/v2/multi/manifests/{tag}-v2s2",
            m.display(),
            reg.port
        ));
        let bytes = read(&m);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["mediaType"], DOCKER_MANIFEST);
        entries.push((sha256_digest(&bytes), bytes.len() as u64, arch));
    }
    let list = index_doc(
        DOCKER_LIST,
        &entries
            .iter()
            .map(|(dg, n, a)| (DOCKER_MANIFEST, dg.as_str(), *n, *a))
            .collect::<Vec<_>>(),
    );
    let list_file = d.join("list.json");
    std::fs::write(&list_file, &list).unwrap();
    sh(&format!(
        "curl -sSf -X PUT -H 'Content-Type: {DOCKER_LIST}' --data-binary @{} http://127.0.0.1:{}/v2/multi/manifests/docker",
        list_file.display(),
        reg.port
    ));
    check_platforms(
        &format!("docker://{}", reg.reference("multi:docker")),
        d,
        &amd,
        &arm,
        "docker-list",
    );
}

fn store_volume_bytes(store: &Store, name: &str) -> Vec<u8> {
    let v = store.open_volume(&VolumeRef::parse(name).unwrap()).unwrap();
    let mut buf = vec![0u8; v.size() as usize];
    v.read_at(&mut buf, 0).unwrap();
    buf
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `--checksum` on a registry or layout source covers the blob of the layer holding the
/// disk, as downloaded (still compressed): what `sha256sum` of that blob prints.
#[test]
fn checksum_covers_the_disk_layer_blob() {
    let reg = Registry::start_plain();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = disk(d);
    let want = read(&src);
    let vol = FileVolume::open(&src);
    let lay = d.join("lay");
    let arch = d.join("img.tar");
    let docker = format!("docker://{}", reg.reference("sum:1"));
    let mut layer_digests = Vec::new();
    for dest in [
        docker.clone(),
        format!("oci:{}:v1", lay.display()),
        format!("oci-archive:{}:v1", arch.display()),
    ] {
        let rep = push(&vol, &dest, &PushOptions::default(), &NoProgress).unwrap();
        layer_digests.push((rep.layer_digest, rep.diff_id));
    }
    let (layer_digest, diff_id) = layer_digests[0].clone();
    assert!(layer_digests.iter().all(|l| l.0 == layer_digest));
    let blob = only_layer_for_tag(&lay, "v1");
    let sha512 = sh(&format!("sha512sum {} | cut -d' ' -f1", blob.display()));
    let md5 = sh(&format!("md5sum {} | cut -d' ' -f1", blob.display()));
    assert_eq!(
        format!(
            "sha256:{}",
            sh(&format!("sha256sum {} | cut -d' ' -f1", blob.display())).trim()
        ),
        layer_digest
    );

    let store = Store::open(&d.join("store")).unwrap();
    let blobs = d.join("store/blobs");
    let mut n = 0;
    for source in [
        docker,
        format!("oci:{}:v1", lay.display()),
        format!("oci-archive:{}:v1", arch.display()),
    ] {
        for good in [
            layer_digest.clone(),
            format!("sha512:{}", sha512.trim()),
            format!("md5:{}", md5.trim()),
        ] {
            n += 1;
            let name = format!("ok{n}");
            let opts = ImportOptions {
                checksum: Some(good.parse().unwrap()),
                ..Default::default()
            };
            let sink = StoreSink::new(&store, &Name::new(&name).unwrap()).unwrap();
            let (r, _) = import(&source, sink, &opts, &NoProgress)
                .unwrap_or_else(|e| panic!("{source} {good}: {e}"));
            assert_eq!(r.checksum.as_deref(), Some(good.as_str()));
            assert_eq!(store_volume_bytes(&store, &name), want, "{source}");
        }
        // Wrong: any other value, including the digests of what the blob decompresses
        // to (the layer tar's diff_id) and of the disk itself.
        let disk_sha = sh(&format!("sha256sum {} | cut -d' ' -f1", src.display()));
        for bad in [
            format!("sha256:{}", "0".repeat(64)),
            diff_id.clone(),
            format!("sha256:{}", disk_sha.trim()),
        ] {
            let volumes = store.list().unwrap().len();
            let blob_dirs = dir_names(&blobs);
            let opts = ImportOptions {
                checksum: Some(bad.parse().unwrap()),
                ..Default::default()
            };
            let sink = StoreSink::new(&store, &Name::new("bad").unwrap()).unwrap();
            let e = import(&source, sink, &opts, &NoProgress).unwrap_err();
            assert!(
                matches!(e, ImportError::ChecksumMismatch { .. }),
                "{source}: {e}"
            );
            assert!(e.to_string().contains(&bad), "{e}");
            assert!(
                e.to_string().contains(&layer_digest),
                "names the layer: {e}"
            );
            // No volume, and the temporary volume's blob is gone.
            assert_eq!(store.list().unwrap().len(), volumes);
            assert!(store.inspect(&VolumeRef::parse("bad").unwrap()).is_err());
            assert_eq!(dir_names(&blobs), blob_dirs, "{source}");
        }
    }
}

/// qcow2 with compressed clusters (`PushOptions::qcow2_compressed_clusters`; the CLI has
/// no flag for it): a valid image with compressed clusters, identical to the volume, that
/// imports back identical; its temporary file is gone after the push.
#[test]
fn qcow2_compressed_clusters_push() {
    let reg = Registry::start_plain();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, _) = make_raw(d, "vol.raw", (5 << 20) + 4608, 61);
    // Compressible data too (random data does not shrink, and is stored as is).
    let text: Vec<u8> = b"platter compressed cluster "
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .unwrap()
        .write_all_at(&text, 2 << 20)
        .unwrap();
    let vol = FileVolume::open(&src);
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let opts = PushOptions {
        qcow2_compressed_clusters: true,
        temp_dir: Some(tmp.clone()),
        ..Default::default()
    };
    let lay = d.join("lay");
    let rep = push(
        &vol,
        &format!("oci:{}:c", lay.display()),
        &opts,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(rep.disk_format, "qcow2");
    assert!(dir_names(&tmp).is_empty(), "{:?}", dir_names(&tmp));
    let img = layout_disk_img(d, &lay, "c", rep.disk_bytes);
    let check: serde_json::Value = serde_json::from_str(&run(
        "qemu-img",
        &[
            "check",
            "-f",
            "qcow2",
            "--output=json",
            img.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let compressed = check["compressed-clusters"].as_u64().unwrap_or(0);
    assert!(compressed >= 8, "{check}");
    // The source volume's raw export is the file itself.
    assert_same(&src, &img, "qcow2");

    let dest = format!("docker://{}", reg.reference("compressed:1"));
    let rep2 = push(&vol, &dest, &opts, &NoProgress).unwrap();
    assert_eq!(rep2.layer_digest, rep.layer_digest);
    for source in [format!("oci:{}:c", lay.display()), dest] {
        let out = d.join("back.raw");
        let r = import_file(&source, &out, &ImportOptions::default()).unwrap();
        assert_eq!(r.format, "qcow2");
        assert_same(&out, &src, "raw");
        std::fs::remove_file(&out).unwrap();
    }
}
