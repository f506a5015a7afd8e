//! Imports are atomic (issue 5, item 9): Ctrl-C or SIGTERM during `platter import` (in
//! process, `--to-file`, or through `platter serve`), `platter push` and `volume export` leaves
//! nothing behind, existing volumes untouched, and says so in one line; a client that
//! disappears makes the server cancel; and `platter import - NAME` works through a server
//! (the CLI passes its stdin to it over the control socket).
//!
//! The slow sources are real: an HTTP server in the test that sends a large body a little
//! at a time, and a pipe the test writes into and then leaves silent.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// Guard against hangs only; nothing is asserted about how long anything takes.
const PATIENCE: Duration = Duration::from_secs(120);

fn signal(child: &Child, sig: Signal) -> rustix::io::Result<()> {
    kill_process(Pid::from_raw(child.id() as i32).unwrap(), sig)
}

/// Starts `platter --store STORE ARGS…` with stderr collected on a thread.
fn spawn(store: &Path, args: &[&str], stdin: Stdio) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err: ChildStderr = child.stderr.take().unwrap();
    let text = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(err).read_to_string(&mut s);
        s
    });
    (child, text)
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("platter did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The store's blob directories (a temporary import volume has one too).
fn blobs(store: &Path) -> BTreeSet<String> {
    std::fs::read_dir(store.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn volume_names(store: &Path) -> Vec<String> {
    let list = json(store, &["volume", "list"]);
    let items = list
        .get("items")
        .and_then(|i| i.as_array())
        .cloned()
        .or_else(|| list.as_array().cloned())
        .unwrap_or_else(|| panic!("unexpected volume list: {list}"));
    let mut names: Vec<String> = items
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A raw image with data runs (non-zero, seeded) between holes.
fn make_raw(path: &Path, size: usize, seed: u64) {
    let mut data = vec![0u8; size];
    let mut x = seed | 1;
    for (i, run) in data.chunks_mut(256 << 10).enumerate() {
        if i % 3 == 1 {
            continue;
        }
        for b in run.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8 | 1;
        }
    }
    std::fs::write(path, data).unwrap();
}

fn export_bytes(store: &Path, vol: &str, scratch: &Path) -> Vec<u8> {
    let out = scratch.join(format!("{vol}.export.raw"));
    ok(
        store,
        &[
            "volume",
            "export",
            vol,
            out.to_str().unwrap(),
            "--format",
            "raw",
        ],
    );
    let b = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    b
}

/// Asserts the command was cancelled by `sig` and said so in one line, last.
fn assert_cancelled(status: ExitStatus, stderr: &str, what: &str, code: i32) {
    assert_eq!(status.code(), Some(code), "exit status; stderr:\n{stderr}");
    let last = stderr.lines().rfind(|l| !l.trim().is_empty());
    assert_eq!(
        last,
        Some(format!("platter: {what} cancelled").as_str()),
        "{stderr}"
    );
    assert!(!stderr.contains("error"), "{stderr}");
}

/// A store holding volume `keep` (imported from a file) and what it reads as.
fn store_with_keep(scratch: &Path) -> (PathBuf, Vec<u8>) {
    let st = scratch.join("store");
    let src = scratch.join("keep.raw");
    make_raw(&src, 4 << 20, 7);
    ok(&st, &["import", src.to_str().unwrap(), "keep"]);
    let bytes = export_bytes(&st, "keep", scratch);
    assert_eq!(bytes, std::fs::read(&src).unwrap());
    (st, bytes)
}

/// `platter import URL new`, interrupted with SIGINT once its temporary volume exists:
/// the command says so and the store's blobs are `before` again when it has exited.
fn ctrl_c_import(st: &Path, url: &str, before: &BTreeSet<String>) {
    let (child, err) = spawn(st, &["import", url, "new"], Stdio::null());
    ctrl_c_once_importing(st, child, err, before);
}

/// Sends SIGINT to `child` once its import's temporary volume exists: the command says
/// it cancelled the import, and the store's blobs are `before` again when it has exited.
fn ctrl_c_once_importing(
    st: &Path,
    mut child: Child,
    err: std::thread::JoinHandle<String>,
    before: &BTreeSet<String>,
) {
    wait_for("the temporary volume", || blobs(st).len() > before.len());
    signal(&child, Signal::Int).unwrap();
    let status = wait_exit(&mut child);
    assert_cancelled(status, &err.join().unwrap(), "import", 130);
    assert_eq!(&blobs(st), before, "blobs left behind");
}

#[test]
fn ctrl_c_in_process_removes_the_temporary_volume() {
    let dir = tempfile::tempdir().unwrap();
    let (st, keep) = store_with_keep(dir.path());
    let before = blobs(&st);
    let http = SlowHttp::start(1 << 30);
    ctrl_c_import(&st, &http.url(), &before);
    assert_eq!(volume_names(&st), ["keep"]);
    assert_eq!(export_bytes(&st, "keep", dir.path()), keep);
    // The name is free: the same import from a file now succeeds.
    let src = dir.path().join("new.raw");
    make_raw(&src, 2 << 20, 9);
    ok(&st, &["import", src.to_str().unwrap(), "new"]);
    assert_eq!(volume_names(&st), ["keep", "new"]);
}

#[test]
fn sigterm_during_import_to_file_removes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("store");
    let out = dir.path().join("pvc.raw");
    let partial = dir.path().join("pvc.raw.partial");
    let http = SlowHttp::start(1 << 30);
    let (mut child, err) = spawn(
        &st,
        &["import", &http.url(), "--to-file", out.to_str().unwrap()],
        Stdio::null(),
    );
    wait_for("the partial file to be sized", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0)
    });
    signal(&child, Signal::Term).unwrap();
    let status = wait_exit(&mut child);
    assert_cancelled(status, &err.join().unwrap(), "import", 143);
    assert!(!partial.exists(), "partial file left behind");
    assert!(!out.exists(), "output appeared");
}

/// Volume `big`: large enough that compressing it takes seconds (random data, no holes).
fn import_big(st: &Path, scratch: &Path) {
    let src = scratch.join("big.raw");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..(256usize << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(&src, data).unwrap();
    ok(st, &["import", src.to_str().unwrap(), "big"]);
    std::fs::remove_file(&src).unwrap();
}

/// Ctrl-C during `volume export` (compressed qcow2: slow) in process and through a
/// server: exit 130, one line, neither the file nor its `.partial` left, server alive.
#[test]
fn ctrl_c_during_export_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (st, _) = store_with_keep(dir.path());
    import_big(&st, dir.path());
    let out = dir.path().join("big.qcow2");
    let partial = dir.path().join("big.qcow2.partial");
    let args = [
        "volume",
        "export",
        "big",
        out.to_str().unwrap(),
        "--format",
        "qcow2",
        "--compress",
        "zlib",
    ];
    let export_and_interrupt = || {
        let (mut child, err) = spawn(&st, &args, Stdio::null());
        wait_for("the partial file", || partial.exists());
        signal(&child, Signal::Int).unwrap();
        let status = wait_exit(&mut child);
        assert_cancelled(status, &err.join().unwrap(), "export", 130);
        assert!(!partial.exists(), "partial file left behind");
        assert!(!out.exists(), "output appeared");
    };
    export_and_interrupt();
    let mut srv = Serve::start(&st);
    export_and_interrupt();
    assert!(srv.alive());
    assert_eq!(volume_names(&st), ["big", "keep"]);
}

#[test]
fn ctrl_c_during_push_to_a_layout_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (st, _) = store_with_keep(dir.path());
    import_big(&st, dir.path());
    let layout = dir.path().join("layout");
    let dest = |tag: &str| format!("oci:{}:{tag}", layout.display());
    ok(&st, &["push", "keep", &dest("v1"), "--disk-format", "raw"]);
    let sha_dir = layout.join("blobs/sha256");
    let list = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let blobs_before = list(&sha_dir);
    let index_before = std::fs::read(layout.join("index.json")).unwrap();
    let (mut child, err) = spawn(
        &st,
        &["push", "big", &dest("v2"), "--disk-format", "raw"],
        Stdio::null(),
    );
    // In flight: the layer is streaming into a temporary file in the blob directory.
    wait_for("the layer to be written", || {
        std::fs::read_dir(&sha_dir).unwrap().any(|e| {
            let e = e.unwrap();
            e.file_name().to_string_lossy().starts_with(".tmp")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    });
    signal(&child, Signal::Int).unwrap();
    let status = wait_exit(&mut child);
    assert_cancelled(status, &err.join().unwrap(), "push", 130);
    assert_eq!(list(&sha_dir), blobs_before, "blobs left in the layout");
    assert_eq!(
        std::fs::read(layout.join("index.json")).unwrap(),
        index_before
    );
    let names: BTreeSet<String> = list(&layout);
    assert_eq!(
        names,
        BTreeSet::from(["blobs".into(), "index.json".into(), "oci-layout".into()])
    );
    // A push into a layout directory that did not exist leaves no directory.
    let fresh = dir.path().join("fresh-layout");
    let (mut child, err) = spawn(
        &st,
        &[
            "push",
            "big",
            &format!("oci:{}:v1", fresh.display()),
            "--disk-format",
            "raw",
        ],
        Stdio::null(),
    );
    wait_for("the fresh layout", || fresh.join("blobs/sha256").exists());
    signal(&child, Signal::Int).unwrap();
    let status = wait_exit(&mut child);
    assert_cancelled(status, &err.join().unwrap(), "push", 130);
    assert!(!fresh.exists(), "a half-made layout was left");
}

/// `vm create --image URL` imports the image into the cache first: Ctrl-C then cancels
/// that import like `platter import`, and no VM, clone or cache entry is left.
#[test]
fn ctrl_c_during_the_image_import_of_vm_create_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (st, keep) = store_with_keep(dir.path());
    let before = blobs(&st);
    let srv = Serve::start(&st);
    let http = SlowHttp::start(1 << 30);
    let (child, err) = spawn(
        &st,
        &[
            "vm",
            "create",
            "--connect",
            "test:///default",
            "--image",
            &http.url(),
            "vm1",
        ],
        Stdio::null(),
    );
    ctrl_c_once_importing(&st, child, err, &before);
    assert_eq!(volume_names(&st), ["keep"]);
    assert_eq!(export_bytes(&st, "keep", dir.path()), keep);
    let list = ok(&st, &["vm", "list", "--connect", "test:///default"]);
    assert!(!list.contains("vm1"), "{list}");
    drop(srv);
}

#[test]
fn a_server_cancels_the_import_of_a_client_that_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let (st, keep) = store_with_keep(dir.path());
    let before = blobs(&st);
    let mut srv = Serve::start(&st);
    let http = SlowHttp::start(1 << 30);

    // Ctrl-C: the client half-closes, the server cancels and replies, then the client
    // exits, so the store is clean by the time it has.
    ctrl_c_import(&st, &http.url(), &before);
    assert!(srv.alive());
    assert_eq!(volume_names(&st), ["keep"]);

    // kill -9: the connection just closes; the server notices and cleans up alone.
    let (mut child, _err) = spawn(&st, &["import", &http.url(), "new"], Stdio::null());
    wait_for("the temporary volume", || blobs(&st).len() > before.len());
    signal(&child, Signal::Kill).unwrap();
    wait_exit(&mut child);
    wait_for("the server to remove the import", || blobs(&st) == before);
    assert!(srv.alive());
    assert_eq!(volume_names(&st), ["keep"]);
    assert_eq!(export_bytes(&st, "keep", dir.path()), keep);

    // The server still serves, and the name is free.
    let src = dir.path().join("new.raw");
    make_raw(&src, 2 << 20, 9);
    ok(&st, &["import", src.to_str().unwrap(), "new"]);
    assert_eq!(volume_names(&st), ["keep", "new"]);
    assert_eq!(
        export_bytes(&st, "new", dir.path()),
        std::fs::read(&src).unwrap()
    );
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cat FILE | platter --store STORE import - ARGS…`
fn import_piped(store: &Path, file: &Path, args: &[&str]) -> (ExitStatus, String) {
    let mut cat = Command::new("cat")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = cat.stdout.take().unwrap();
    let mut all = vec!["import", "-"];
    all.extend_from_slice(args);
    let (mut child, err) = spawn(store, &all, Stdio::from(pipe));
    let status = wait_exit(&mut child);
    cat.wait().unwrap();
    (status, err.join().unwrap())
}

#[test]
fn stdin_imports_go_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (st, _) = store_with_keep(dir.path());
    let raw = dir.path().join("image.raw");
    make_raw(&raw, 8 << 20, 13);
    let image = dir.path().join("image.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    let before = blobs(&st);
    let mut srv = Serve::start(&st);

    let (status, err) = import_piped(&st, &image, &["piped"]);
    assert!(status.success(), "{err}");
    let out = dir.path().join("piped.raw");
    ok(
        &st,
        &[
            "volume",
            "export",
            "piped",
            out.to_str().unwrap(),
            "--format",
            "raw",
        ],
    );
    qemu_img(&[
        "compare",
        "-f",
        "qcow2",
        "-F",
        "raw",
        image.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    ok(&st, &["volume", "delete", "piped"]);
    assert_eq!(blobs(&st), before);

    // A wrong checksum over the piped bytes: a one-line error, nothing left.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (status, err) = import_piped(&st, &image, &["bad", "--checksum", &wrong]);
    assert!(!status.success());
    // Progress lines come first; the error is one line, the last.
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("platter:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.trim().lines().next_back(), Some(errors[0]), "{err}");
    assert!(errors[0].contains("checksum mismatch"), "{err}");
    assert_eq!(blobs(&st), before, "blobs left behind");
    assert_eq!(volume_names(&st), ["keep"]);
    assert!(srv.alive());
}

#[test]
fn ctrl_c_stops_a_stdin_import_whose_writer_went_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (st, _) = store_with_keep(dir.path());
    let before = blobs(&st);
    let mut srv = Serve::start(&st);
    let (mut child, err) = spawn(
        &st,
        &["import", "-", "quiet", "--size", "64M"],
        Stdio::piped(),
    );
    let mut pipe = child.stdin.take().unwrap();
    let data: Vec<u8> = (0..(4 << 20)).map(|i| (i % 251 + 1) as u8).collect();
    pipe.write_all(&data).unwrap();
    pipe.flush().unwrap();
    // The pipe stays open and silent: only the cancellation can end the import.
    ctrl_c_once_importing(&st, child, err, &before);
    assert_eq!(volume_names(&st), ["keep"]);
    assert!(srv.alive());
    drop(pipe);
}
