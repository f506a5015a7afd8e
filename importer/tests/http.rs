//! HTTP sources against a hand-written server started by each test: Range reads for
//! qcow2 (no scratch copy), resume after a cut or a stall, 404/500/auth errors, slow
//! bodies, servers without ranges, and checksum mismatches that leave nothing behind.

mod common;

use common::*;
use platter_importer::{Credentials, Headers, ImportError, ImportOptions, RegistryOptions};
use std::time::Duration;

fn fast_opts() -> ImportOptions {
    ImportOptions {
        registry: RegistryOptions {
            retries: 3,
            retry_delay: Duration::from_millis(20),
            read_timeout: Duration::from_millis(700),
            ..Default::default()
        },
        ..Default::default()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    raw: std::path::PathBuf,
    qcow: std::path::PathBuf,
    server: HttpServer,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = make_raw(d, "disk.raw", 4 << 20, 9);
    let qcow = d.join("disk.qcow2");
    convert(&raw, &qcow, "qcow2", &[]);
    sh(&format!("gzip -k -1 {}", raw.display()));
    let server = HttpServer::start();
    server.add("disk.qcow2", read(&qcow));
    server.add("disk.raw.gz", read(&d.join("disk.raw.gz")));
    Fixture {
        dir,
        raw,
        qcow,
        server,
    }
}

#[test]
fn qcow2_over_range_requests() {
    let f = fixture();
    let out = f.dir.path().join("q.raw");
    let r = import_file(&f.server.url("disk.qcow2"), &out, &fast_opts()).unwrap();
    assert_eq!(r.format, "qcow2");
    assert!(
        !r.spooled,
        "a qcow2 over HTTP with ranges must not be spooled"
    );
    assert_same(&out, &f.qcow, "qcow2");
    let ranges = f.server.ranges();
    assert!(
        ranges
            .iter()
            .filter(|r| r.as_deref().is_some_and(|r| r != "bytes=0-"))
            .count()
            > 0,
        "no Range reads: {ranges:?}"
    );
}

#[test]
fn resume_after_cut_and_stall() {
    let f = fixture();
    // Cut twice mid-stream: the download resumes with Range from where it stopped.
    f.server.set(Behaviour {
        cut_after: Some(300_000),
        fail_times: 2,
        ..Default::default()
    });
    let out = f.dir.path().join("cut.raw");
    let opts = ImportOptions {
        checksum: Some(
            format!(
                "sha256:{}",
                sh(&format!("sha256sum {}.gz | cut -d' ' -f1", f.raw.display())).trim()
            )
            .parse()
            .unwrap(),
        ),
        ..fast_opts()
    };
    let r = import_file(&f.server.url("disk.raw.gz"), &out, &opts).unwrap();
    assert_eq!(r.wrappers, vec!["gzip"]);
    assert_same(&out, &f.raw, "raw");
    let ranges = f.server.ranges();
    assert!(
        ranges.iter().any(|r| r
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-")),
        "no resume request: {ranges:?}"
    );

    // A stall longer than the read timeout is an interruption too.
    f.server.set(Behaviour {
        cut_after: Some(200_000),
        fail_times: 1,
        stall: Some(Duration::from_secs(3)),
        ..Default::default()
    });
    let out = f.dir.path().join("stall.raw");
    import_file(&f.server.url("disk.raw.gz"), &out, &fast_opts()).unwrap();
    assert_same(&out, &f.raw, "raw");
}

#[test]
fn slow_body_and_no_range_support() {
    let f = fixture();
    f.server.set(Behaviour {
        slow: Some(Duration::from_millis(5)),
        no_ranges: true,
        ..Default::default()
    });
    // qcow2 without Range support: streamed in one pass (no spool), still identical.
    let out = f.dir.path().join("slow.raw");
    let r = import_file(&f.server.url("disk.qcow2"), &out, &fast_opts()).unwrap();
    assert!(!r.spooled);
    assert_same(&out, &f.qcow, "qcow2");
    // A cut without ranges restarts from the beginning and skips what was delivered.
    f.server.set(Behaviour {
        no_ranges: true,
        cut_after: Some(100_000),
        fail_times: 1,
        ..Default::default()
    });
    let out = f.dir.path().join("restart.raw");
    import_file(&f.server.url("disk.raw.gz"), &out, &fast_opts()).unwrap();
    assert_same(&out, &f.raw, "raw");
}

#[test]
fn errors_are_clear_and_leave_nothing() {
    let f = fixture();
    let d = f.dir.path();
    let out = d.join("e404.raw");
    let e = import_file(&f.server.url("missing.img"), &out, &fast_opts()).unwrap_err();
    assert!(
        matches!(e, ImportError::HttpStatus { status: 404, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("missing.img") && e.to_string().contains("404"),
        "{e}"
    );
    assert_nothing_left(d, "e404");

    f.server.set(Behaviour {
        status: Some(500),
        ..Default::default()
    });
    let out = d.join("e500.raw");
    let e = import_file(&f.server.url("disk.qcow2"), &out, &fast_opts()).unwrap_err();
    assert!(e.to_string().contains("500"), "{e}");
    assert_nothing_left(d, "e500");

    // A cut on every attempt runs out of retries with a clear error.
    f.server.set(Behaviour {
        cut_after: Some(100_000),
        fail_times: 100,
        ..Default::default()
    });
    let out = d.join("ecut.raw");
    let e = import_file(&f.server.url("disk.raw.gz"), &out, &fast_opts()).unwrap_err();
    assert!(e.to_string().contains("disk.raw.gz"), "{e}");
    assert_nothing_left(d, "ecut");

    // Wrong checksum over HTTP: mismatch named, nothing left.
    f.server.set(Behaviour::default());
    let opts = ImportOptions {
        checksum: Some(format!("sha512:{}", "ab".repeat(64)).parse().unwrap()),
        ..fast_opts()
    };
    let out = d.join("esum.raw");
    let e = import_file(&f.server.url("disk.qcow2"), &out, &opts).unwrap_err();
    assert!(matches!(e, ImportError::ChecksumMismatch { .. }), "{e}");
    assert_nothing_left(d, "esum");
}

#[test]
fn basic_auth() {
    let f = fixture();
    f.server.set(Behaviour {
        basic_auth: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    });
    let out = f.dir.path().join("noauth.raw");
    let e = import_file(&f.server.url("disk.qcow2"), &out, &fast_opts()).unwrap_err();
    assert!(
        matches!(e, ImportError::HttpStatus { status: 401, .. }),
        "{e}"
    );
    let mut opts = fast_opts();
    opts.registry.creds = Some(Credentials::parse("alice:s3cret").unwrap());
    let out = f.dir.path().join("auth.raw");
    import_file(&f.server.url("disk.qcow2"), &out, &opts).unwrap();
    assert_same(&out, &f.qcow, "qcow2");
}

/// A server that stops sending mid-body and never hangs up: a cancel is noticed while
/// the download waits (not only after the read timeout, here far longer than the test).
#[test]
fn cancel_is_noticed_while_the_server_is_silent() {
    let f = fixture();
    f.server.set(Behaviour {
        cut_after: Some(200_000),
        fail_times: 1,
        stall: Some(Duration::from_secs(900)),
        no_ranges: true,
        ..Default::default()
    });
    let out = f.dir.path().join("silent.raw");
    let opts = ImportOptions {
        registry: RegistryOptions {
            read_timeout: Duration::from_secs(900),
            ..Default::default()
        },
        ..Default::default()
    };
    let cancel = opts.cancel.clone();
    let url = f.server.url("disk.raw.gz");
    let (tx, rx) = std::sync::mpsc::channel();
    let out2 = out.clone();
    std::thread::spawn(move || {
        let _ = tx.send(import_file(&url, &out2, &opts));
    });
    // Let the download reach the silence, then cancel.
    let partial = f.dir.path().join("silent.raw.partial");
    while !partial.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    cancel.cancel();
    // Only a guard against a hang: the server stays silent for 900 s.
    let r = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the cancel was not noticed while the server was silent");
    assert!(matches!(r, Err(ImportError::Cancelled)), "{r:?}");
    assert!(!out.exists() && !partial.exists());
}

fn sha256_of(data: &[u8]) -> platter_importer::Checksum {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
        .parse()
        .unwrap()
}

/// A second qcow2 with other contents: what a changed resource serves.
fn other_qcow2(d: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let sub = d.join("other");
    std::fs::create_dir(&sub).unwrap();
    let (raw, _) = make_raw(&sub, "other.raw", 4 << 20, 77);
    let qcow = sub.join("other.qcow2");
    convert(&raw, &qcow, "qcow2", &[]);
    let data = read(&qcow);
    (qcow, data)
}

/// With `--checksum`, a qcow2 over HTTP is decoded from the one download that is hashed:
/// one request, about one image of bytes, and no scratch file.
#[test]
fn checksummed_qcow2_is_one_download() {
    let f = fixture();
    let d = f.dir.path();
    let image = read(&f.qcow);
    let opts = ImportOptions {
        checksum: Some(sha256_of(&image)),
        temp_dir: no_temp(d).temp_dir,
        ..fast_opts()
    };
    f.server.set(Behaviour::default());
    let out = d.join("sum.raw");
    let r = import_file(&f.server.url("disk.qcow2"), &out, &opts).unwrap();
    assert_eq!(r.format, "qcow2");
    assert!(!r.spooled);
    assert_eq!(r.source_bytes, image.len() as u64);
    assert_same(&out, &f.qcow, "qcow2");
    let seen = f.server.seen();
    assert_eq!(seen.len(), 1, "one download, no Range reads: {seen:?}");
    let sent = f.server.bytes_sent();
    assert_eq!(
        sent,
        image.len() as u64,
        "fetched {sent} bytes for one image"
    );
}

/// A resource that changes after the first request: the checksummed import hashes and
/// decodes that first response only, so the checksum of what later requests get fails
/// (nothing left), and the checksum of the first response imports exactly that image.
#[test]
fn checksum_covers_the_bytes_decoded_when_the_source_changes() {
    let f = fixture();
    let d = f.dir.path();
    let (other, other_data) = other_qcow2(d);
    let first = read(&f.qcow);
    let change = Behaviour {
        change: Some(Change {
            after: 1,
            body: other_data.clone(),
        }),
        ..Default::default()
    };

    f.server.set(change.clone());
    let opts = ImportOptions {
        checksum: Some(sha256_of(&other_data)),
        ..fast_opts()
    };
    let out = d.join("changed.raw");
    let e = import_file(&f.server.url("disk.qcow2"), &out, &opts).unwrap_err();
    assert!(matches!(e, ImportError::ChecksumMismatch { .. }), "{e}");
    assert_nothing_left(d, "changed");

    f.server.set(change);
    let opts = ImportOptions {
        checksum: Some(sha256_of(&first)),
        ..fast_opts()
    };
    let out = d.join("first.raw");
    import_file(&f.server.url("disk.qcow2"), &out, &opts).unwrap();
    assert_same(&out, &f.qcow, "qcow2");
    let cmp = std::process::Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
        .arg(&out)
        .arg(&other)
        .status()
        .unwrap();
    assert!(!cmp.success(), "the two test images must differ");
}

/// Without a checksum a change is still caught by the validators: Range reads compare
/// the ETag with the first response's, and a download restarted from 0 (server without
/// ranges) or resumed with If-Range refuses another object.
#[test]
fn a_changed_source_is_refused() {
    let f = fixture();
    let d = f.dir.path();
    let (_, other_data) = other_qcow2(d);
    let gz_sum = sha256_of(&read(&d.join("disk.raw.gz")));
    // (file, cut the first response here, no ranges, checksum)
    let cases = [
        // Range reads after the first response.
        ("disk.qcow2", None, false, None),
        // A resume with If-Range (with a checksum the download is the only stream, so
        // this is refused before any spliced byte reaches the hash).
        ("disk.raw.gz", Some(100_000), false, Some(gz_sum)),
        // A restart from 0 on a server without ranges.
        ("disk.raw.gz", Some(100_000), true, None),
    ];
    for (i, (name, cut, no_ranges, checksum)) in cases.into_iter().enumerate() {
        // A server per case: a failed import's resume may still be on its way.
        let server = HttpServer::start();
        server.add("disk.qcow2", read(&f.qcow));
        server.add("disk.raw.gz", read(&d.join("disk.raw.gz")));
        server.set(Behaviour {
            change: Some(Change {
                after: 1,
                body: other_data.clone(),
            }),
            cut_after: cut,
            fail_times: usize::from(cut.is_some()),
            no_ranges,
            ..Default::default()
        });
        let base = format!("chg{i}");
        let out = d.join(format!("{base}.raw"));
        let opts = ImportOptions {
            checksum,
            ..fast_opts()
        };
        let e = import_file(&server.url(name), &out, &opts).unwrap_err();
        assert!(
            matches!(e, ImportError::SourceChanged { .. }),
            "{name} cut {cut:?} no_ranges {no_ranges}: {e}"
        );
        assert!(e.to_string().contains(name), "{e}");
        assert_nothing_left(d, &base);
    }
}

#[test]
fn redirects_are_followed() {
    let f = fixture();
    let d = f.dir.path();
    // Absolute Location (302), relative with `..` (302), absolute path (301).
    f.server
        .redirect("abs.qcow2", 302, &f.server.url("disk.qcow2"));
    f.server.redirect("old/rel.qcow2", 302, "../disk.qcow2");
    f.server.redirect("moved.raw.gz", 301, "/disk.raw.gz");
    for (name, target, image, fmt) in [
        ("abs.qcow2", "disk.qcow2", &f.qcow, "qcow2"),
        ("old/rel.qcow2", "disk.qcow2", &f.qcow, "qcow2"),
        ("moved.raw.gz", "disk.raw.gz", &f.raw, "raw"),
    ] {
        f.server.set(Behaviour::default());
        let out = d.join(format!("redir-{}.raw", target));
        import_file(&f.server.url(name), &out, &fast_opts()).unwrap();
        assert_same(&out, image, fmt);
        let lines: Vec<String> = f.server.seen().into_iter().map(|s| s.line).collect();
        assert_eq!(lines.first(), Some(&format!("GET /{name} HTTP/1.1")));
        assert_eq!(lines.get(1), Some(&format!("GET /{target} HTTP/1.1")));
        std::fs::remove_file(&out).unwrap();
    }
}

/// `--creds :TOKEN` (an empty user) sends `Authorization: Bearer TOKEN`.
#[test]
fn bearer_auth() {
    let f = fixture();
    f.server.set(Behaviour {
        bearer: Some("t0ken".into()),
        ..Default::default()
    });
    let d = f.dir.path();
    for (i, creds) in [None, Some(":wrong"), Some("user:t0ken")]
        .into_iter()
        .enumerate()
    {
        let mut opts = fast_opts();
        opts.registry.creds = creds.map(|c| Credentials::parse(c).unwrap());
        let out = d.join(format!("bearer{i}.raw"));
        let e = import_file(&f.server.url("disk.qcow2"), &out, &opts).unwrap_err();
        assert!(
            matches!(e, ImportError::HttpStatus { status: 401, .. }),
            "{creds:?}: {e}"
        );
        assert!(e.to_string().contains("--creds"), "{e}");
        assert!(
            !e.to_string().contains("wrong"),
            "a token in a message: {e}"
        );
        assert_nothing_left(d, &format!("bearer{i}"));
    }
    let mut opts = fast_opts();
    opts.registry.creds = Some(Credentials::parse(":t0ken").unwrap());
    let out = d.join("bearer-ok.raw");
    import_file(&f.server.url("disk.qcow2"), &out, &opts).unwrap();
    assert_same(&out, &f.qcow, "qcow2");
}

/// Transient failures (500, a connection closed unanswered) are retried with growing
/// delays; a server that never recovers fails after `retries + 1` tries.
#[test]
fn retries_with_backoff() {
    let f = fixture();
    let d = f.dir.path();
    // 3 retries from 20 ms; with a checksum the download is the only request.
    let opts = ImportOptions {
        checksum: Some(sha256_of(&read(&d.join("disk.raw.gz")))),
        ..fast_opts()
    };
    for (i, b) in [
        Behaviour {
            status: Some(500),
            status_times: Some(2),
            ..Default::default()
        },
        Behaviour {
            hangup_times: 2,
            ..Default::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        f.server.set(b);
        let out = d.join(format!("retry{i}.raw"));
        import_file(&f.server.url("disk.raw.gz"), &out, &opts).unwrap();
        assert_same(&out, &f.raw, "raw");
        assert_eq!(f.server.seen().len(), 3, "2 failures, then the download");
    }

    f.server.set(Behaviour {
        status: Some(500),
        ..Default::default()
    });
    let out = d.join("always500.raw");
    let t = std::time::Instant::now();
    let e = import_file(&f.server.url("disk.raw.gz"), &out, &opts).unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(e, ImportError::HttpStatus { status: 500, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("gave up after 4 attempts"), "{e}");
    let seen = f.server.seen();
    assert_eq!(seen.len(), 4, "1 try + 3 retries");
    for (i, w) in seen.windows(2).enumerate() {
        let gap = w[1].at - w[0].at;
        let backoff = Duration::from_millis(20 << i);
        assert!(
            gap >= backoff,
            "retry {i} after {gap:?}, before {backoff:?}"
        );
    }
    assert!(took < Duration::from_secs(5), "gave up after {took:?}");
    assert_nothing_left(d, "always500");
}

/// A forward proxy on 127.0.0.1 that records each request line (absolute-form) and
/// passes the request on in origin-form to the loopback server it names.
struct ForwardProxy {
    port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ForwardProxy {
    fn start() -> ForwardProxy {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let l = l.clone();
                std::thread::spawn(move || -> std::io::Result<()> {
                    let mut r = std::io::BufReader::new(client.try_clone()?);
                    let mut line = String::new();
                    r.read_line(&mut line)?;
                    let line = line.trim_end().to_string();
                    l.lock().unwrap().push(line.clone());
                    let mut parts = line.split_whitespace();
                    let (method, uri) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let rest = uri.strip_prefix("http://").unwrap_or("");
                    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let port = authority
                        .strip_prefix("127.0.0.1:")
                        .or_else(|| authority.strip_prefix("localhost:"))
                        .and_then(|p| p.parse::<u16>().ok());
                    let Some(port) = port else {
                        // Only loopback servers are ever forwarded to.
                        return client.write_all(
                            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    };
                    let mut up = std::net::TcpStream::connect(("127.0.0.1", port))?;
                    let mut head = format!("{method} {path} HTTP/1.1\r\n");
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h)?;
                        if h.trim_end().is_empty() {
                            break;
                        }
                        let name = h.split(':').next().unwrap_or("").to_ascii_lowercase();
                        if !name.starts_with("proxy-") && name != "connection" {
                            head.push_str(&h);
                        }
                    }
                    head.push_str("Connection: close\r\n\r\n");
                    up.write_all(head.as_bytes())?;
                    std::io::copy(&mut up, &mut client)?;
                    client.shutdown(std::net::Shutdown::Both)
                });
            }
        });
        ForwardProxy { port, lines }
    }
}

const CHILD_IMPORT: &str = "PLATTER_TEST_CHILD_IMPORT";

/// Proxies come from the environment (`http_proxy` and `HTTP_PROXY`), read when the
/// process starts its client, so each import runs in a child process of this test binary
/// with only that variable set. Loopback targets are not exempt from the proxy unless
/// `NO_PROXY` says so.
#[test]
fn proxy_from_the_environment() {
    let f = fixture();
    let d = f.dir.path();
    let proxy = ForwardProxy::start();
    for var in ["http_proxy", "HTTP_PROXY"] {
        f.server.set(Behaviour::default());
        proxy.lines.lock().unwrap().clear();
        let out = d.join(format!("proxied-{var}.raw"));
        let url = f.server.url("disk.qcow2");
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "proxied_import_in_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]);
        for v in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            cmd.env_remove(v);
        }
        let o = cmd
            .env(var, format!("http://127.0.0.1:{}", proxy.port))
            .env(CHILD_IMPORT, format!("{url}\n{}", out.display()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && stdout.contains("1 passed"),
            "child import with {var}: {stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_same(&out, &f.qcow, "qcow2");
        let lines = proxy.lines.lock().unwrap().clone();
        let seen = f.server.seen();
        assert!(!seen.is_empty());
        assert_eq!(
            lines.len(),
            seen.len(),
            "every request went through the proxy"
        );
        for l in &lines {
            assert_eq!(l, &format!("GET {url} HTTP/1.1"), "absolute-form via {var}");
        }
        for s in &seen {
            assert_eq!(s.line, "GET /disk.qcow2 HTTP/1.1");
        }
    }
}

/// The import run by `proxy_from_the_environment` in a child process.
#[test]
#[ignore = "run in a child process by proxy_from_the_environment"]
fn proxied_import_in_child() {
    let spec = std::env::var(CHILD_IMPORT).expect("set by proxy_from_the_environment");
    let (url, out) = spec.split_once('\n').unwrap();
    import_file(url, std::path::Path::new(out), &fast_opts()).unwrap();
}

/// HTTPS from a throw-away CA: refused with a certificate error unless `--cert-dir`
/// names the CA (or `--tls-verify=false`); Range reads then work over TLS.
#[test]
fn https_with_cert_dir() {
    let f = fixture();
    let d = f.dir.path();
    let server = HttpServer::start_tls();
    server.add("disk.qcow2", read(&f.qcow));
    let url = server.url("disk.qcow2");
    assert!(url.starts_with("https://127.0.0.1:"));

    let out = d.join("untrusted.raw");
    let e = import_file(&url, &out, &fast_opts()).unwrap_err();
    assert!(matches!(e, ImportError::Network { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&url) && msg.contains("certificate"), "{msg}");
    assert!(
        server.seen().is_empty(),
        "a request passed an untrusted TLS"
    );
    assert_nothing_left(d, "untrusted");

    let mut opts = fast_opts();
    opts.registry.tls.cert_dir = server.ca_dir.clone();
    let out = d.join("trusted.raw");
    let r = import_file(&url, &out, &opts).unwrap();
    assert_eq!(r.format, "qcow2");
    assert_same(&out, &f.qcow, "qcow2");
    assert!(
        server.ranges().iter().flatten().any(|r| r != "bytes=0-"),
        "no Range reads over TLS: {:?}",
        server.ranges()
    );

    let mut opts = fast_opts();
    opts.registry.tls.verify = false;
    let out = d.join("noverify.raw");
    import_file(&url, &out, &opts).unwrap();
    assert_same(&out, &f.qcow, "qcow2");
}

/// A CA given in memory (a DataVolume's certConfigMap) is trusted like `--cert-dir`;
/// one that is not a certificate is refused by the name it was given. Extra headers go
/// with every request (the qcow2 is read with several), and their absence is refused.
#[test]
fn in_memory_ca_and_extra_headers() {
    let f = fixture();
    let d = f.dir.path();
    let server = HttpServer::start_tls();
    server.add("disk.qcow2", read(&f.qcow));
    let want = ("X-Token".to_string(), "t0k3n value".to_string());
    server.set(Behaviour {
        require_headers: vec![want.clone()],
        ..Default::default()
    });
    let url = server.url("disk.qcow2");
    let ca = std::fs::read(server.ca_dir.as_ref().unwrap().join("ca.crt")).unwrap();

    let mut opts = fast_opts();
    opts.registry.tls.extra_certs = vec![("ConfigMap default/ca key ca.pem".into(), ca)];
    let out = d.join("noheader.raw");
    let e = import_file(&url, &out, &opts).unwrap_err();
    assert!(e.to_string().contains("403"), "{e}");
    assert_nothing_left(d, "noheader");

    opts.registry.headers = Headers::parse(&["X-Token: t0k3n value"]).unwrap();
    assert_eq!(format!("{:?}", opts.registry.headers), "[\"X-Token: ***\"]");
    let out = d.join("trusted.raw");
    import_file(&url, &out, &opts).unwrap();
    assert_same(&out, &f.qcow, "qcow2");
    assert!(server.seen().len() > 1, "{:?}", server.seen());

    let mut opts = fast_opts();
    opts.registry.tls.extra_certs = vec![(
        "ConfigMap default/ca key bad.pem".into(),
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec(),
    )];
    let e = import_file(&url, &d.join("bad.raw"), &opts).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("ConfigMap default/ca key bad.pem"), "{msg}");
    assert_nothing_left(d, "bad");

    // The check a certConfigMap gets before an import uses it.
    let good = std::fs::read(server.ca_dir.as_ref().unwrap().join("ca.crt")).unwrap();
    assert_eq!(platter_importer::check_ca_certificate(&good), Ok(()));
    let bad_pem = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
    assert!(platter_importer::check_ca_certificate(bad_pem).is_err());
    let e = platter_importer::check_ca_certificate(b"PEM").unwrap_err();
    assert!(e.contains("not a PEM certificate"), "{e}");
}
