//! HTTP sources against a hand-written server started by each test: Range reads for
//! qcow2 (no scratch copy), resume after a cut or a stall, 404/500/auth errors, slow
//! bodies, servers without ranges, and checksum mismatches that leave nothing behind.

mod common;

use common::*;
use platter_importer::{Credentials, ImportError, ImportOptions, RegistryOptions};
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
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            qcow.to_str().unwrap(),
        ],
    );
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
    let ranges = f.server.ranges.lock().unwrap().clone();
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
    let ranges = f.server.ranges.lock().unwrap().clone();
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
