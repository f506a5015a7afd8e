//! Errors as users see them: one line, `platter: error: …`, the same line and exit status
//! whether the command opened the store itself or went through `platter serve`, and one
//! exit-status scheme: 1 failed, 2 a usage error (every bad argument, whoever finds it).

mod common;
use common::*;

use std::path::Path;

/// The failing commands of these tests, against a store holding volume `a`, its
/// snapshot `a@s1` and the clone `b` of that snapshot, with their exit status.
const FAILING: &[(&[&str], i32)] = &[
    (&["volume", "inspect", "nosuch"], 1),
    (&["volume", "inspect", "a@nosuch"], 1),
    (&["volume", "create", "a", "--size", "1M"], 1),
    (&["volume", "delete", "a@s1"], 1),
    (&["volume", "snapshot", "a@s1"], 1),
    // Bad arguments, found by the store: usage errors all the same.
    (&["volume", "create", "c", "--size", "0"], 2),
    (&["volume", "create", "c", "--size", "1000"], 2),
    (&["volume", "resize", "a", "--size", "4K"], 2),
    (&["import", "--creds", "nocolon", "/etc/hostname", "c"], 2),
    (&["import", "--format", "vmdk", "/etc/hostname", "c"], 2),
];

fn setup(st: &Path) {
    ok(st, &["volume", "create", "a", "--size", "1M"]);
    ok(st, &["volume", "snapshot", "a@s1"]);
    ok(st, &["volume", "clone", "a@s1", "b"]);
}

/// Each failing command's one-line error and exit status.
fn failures(st: &Path) -> Vec<(String, Option<i32>)> {
    FAILING
        .iter()
        .map(|(args, _)| {
            let err = fails(st, args);
            (err, platter(st, args).status.code())
        })
        .collect()
}

#[test]
fn errors_are_the_same_through_serve_and_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    setup(st);
    let here = failures(st);
    assert_eq!(
        here[0].0, "platter: error: volume nosuch does not exist",
        "{here:?}"
    );
    assert_eq!(here[2].0, "platter: error: volume a already exists");
    assert!(here[3].0.contains("clone b depends on it"), "{here:?}");
    for ((line, code), (args, want)) in here.iter().zip(FAILING) {
        assert!(line.starts_with("platter: error: "), "{line}");
        assert_eq!(*code, Some(*want), "{args:?}: {line}");
    }
    let json_here = json_failures(st);
    let _srv = Serve::start(st);
    assert_eq!(failures(st), here);
    assert_eq!(json_failures(st), json_here);
}

/// The failing commands with `-o json`: one JSON line on stderr, the wire's shape.
fn json_failures(st: &Path) -> Vec<serde_json::Value> {
    FAILING
        .iter()
        .map(|(args, _)| {
            let mut a = vec!["-o", "json"];
            a.extend_from_slice(args);
            let err = fails(st, &a);
            serde_json::from_str(&err).unwrap_or_else(|e| panic!("{a:?}: not JSON ({e}): {err}"))
        })
        .collect()
}

#[test]
fn json_errors_carry_the_kind_and_object() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    setup(st);
    let out = platter(st, &["-o", "json", "volume", "inspect", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        r#"{"error":{"kind":"not_found","object":"volume nosuch","message":"volume nosuch does not exist"}}"#
    );
    let kinds: Vec<String> = json_failures(st)
        .iter()
        .map(|v| v["error"]["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "not_found",
            "not_found",
            "already_exists",
            "in_use",
            "already_exists",
            "invalid",
            "invalid",
            "invalid",
            "invalid",
            "invalid"
        ]
    );
}

/// `platter ARGS` fails with exactly `line` on stderr and exit status `code`.
fn says(st: &Path, args: &[&str], line: &str, code: i32) {
    let out = platter(st, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end(), line, "platter {args:?}");
    assert_eq!(out.status.code(), Some(code), "platter {args:?}: {err}");
}

#[test]
fn missing_arguments_are_named_and_typos_get_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    let missing = "platter: error: the following required arguments were not provided:";
    for (args, what) in [
        (&["volume", "create", "foo"][..], "--size <SIZE>"),
        (&["volume", "clone", "a"], "<NAME>"),
        (&["volume", "export", "a"], "<FILE>"),
        (&["import"], "<SOURCE>, <NAME>"),
        (&["push", "a"], "<DEST>"),
        (&["vm", "create", "v1"], "--image <IMAGE>"),
        (&["serve", "--tls-cert", "c.pem"], "--tls-key <TLS_KEY>"),
    ] {
        says(st, args, &format!("{missing} {what} (see --help)"), 2);
    }
    says(
        st,
        &["volum"],
        "platter: error: unrecognized subcommand 'volum'; did you mean 'volume'? (see --help)",
        2,
    );
    says(
        st,
        &["volume", "craete", "x"],
        "platter: error: unrecognized subcommand 'craete'; did you mean 'create'? (see --help)",
        2,
    );
    says(
        st,
        &["volume", "create", "x", "--sise", "1M"],
        "platter: error: unexpected argument '--sise' found; did you mean '--size'? (see --help)",
        2,
    );
}

#[test]
fn argument_checks_come_before_the_server_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    says(
        st,
        &["vm", "create", "v1", "--volume", "x", "--memory", "0"],
        "platter: error: invalid vm \"v1\": memory 0 B is below the minimum 32 MiB",
        2,
    );
    says(
        st,
        &["vm", "create", "v1", "--volume", "x", "--cpus", "0"],
        "platter: error: invalid vm \"v1\": cpus 0 is not between 1 and 255",
        2,
    );
    says(
        st,
        &[
            "vm",
            "create",
            "v1",
            "--volume",
            "x",
            "--kernel",
            "/nonexistent",
        ],
        "platter: error: --kernel /nonexistent: no such file",
        1,
    );
    for cmd in ["delete", "start", "console"] {
        says(
            st,
            &["vm", cmd, "nosuch"],
            "platter: error: vm nosuch does not exist",
            1,
        );
    }
    // Looking for a VM does not create a store.
    let none = st.join("nosuch-store");
    let e = fails(&none, &["vm", "delete", "web"]);
    assert!(e.contains("vm web does not exist"), "{e}");
    assert!(!none.exists(), "vm delete created the store");
    // Without a server, a good command still says what it needs.
    ok(st, &["volume", "create", "x", "--size", "1M"]);
    let e = fails(st, &["vm", "create", "v1", "--volume", "x"]);
    assert!(e.contains("platter serve is not running"), "{e}");
}

#[test]
fn bad_arguments_exit_2_whoever_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    ok(st, &["volume", "create", "boot", "--size", "1M"]);
    says(
        st,
        &["push", "boot", "127.0.0.1:5000/x:v1"],
        "platter: error: push destination \"127.0.0.1:5000/x:v1\" names no transport; \
         did you mean docker://127.0.0.1:5000/x:v1? \
         (DEST is docker://HOST[:PORT]/REPO:TAG, oci:DIR:TAG or oci-archive:FILE:TAG)",
        2,
    );
    says(
        st,
        &["volume", "snapshot", "boot"],
        "platter: error: volume snapshot takes NAME@SNAP, e.g. boot@s1",
        2,
    );
    for args in [
        &["volume", "create", "Bad_Name", "--size", "1M"][..],
        &["volume", "create", "b", "--size", "12X"],
        &["volume", "create", "b", "--size", "0"],
        &["volume", "inspect", "a@b@c"],
        &["push", "boot", "docker://127.0.0.1:5000/x"],
        &["push", "boot", "oci:/tmp/x", "--compression", "lzma"],
    ] {
        let e = fails(st, args);
        assert_eq!(
            platter(st, args).status.code(),
            Some(2),
            "platter {args:?}: {e}"
        );
    }
    // Not arguments: a failure.
    let e = fails(st, &["volume", "inspect", "nosuch"]);
    assert_eq!(
        platter(st, &["volume", "inspect", "nosuch"]).status.code(),
        Some(1),
        "{e}"
    );
}

/// Where the store is and where an export goes are checked and named before anything is
/// made: a read on a store that does not exist refuses (and creates none), a store path
/// that is a file is a usage error, an export into a missing directory names it, a user
/// with no HOME gets no store relative to the working directory; sizes take decimal
/// fractions as qemu-img does.
#[test]
fn store_paths_export_directories_and_sizes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path();
    let typo = st.join("typo");
    let no_store = format!(
        "platter: error: there is no store at {}: check --store or PLATTER_STORE (a store is made by the first command that writes: volume create, import, vm create, apply, serve)",
        typo.display()
    );
    for args in [
        &["volume", "list"][..],
        &["volume", "inspect", "a"],
        &["volume", "gc"],
        &["get", "dv"],
        &["vm", "list"],
    ] {
        says(&typo, args, &no_store, 1);
    }
    assert!(!typo.exists(), "a read created the store");

    let file = st.join("file");
    std::fs::write(&file, "x").unwrap();
    says(
        &file,
        &["volume", "list"],
        &format!(
            "platter: error: store {} is not a directory (give --store a directory)",
            file.display()
        ),
        2,
    );

    ok(st, &["volume", "create", "a", "--size", "1.5M"]);
    assert_eq!(json(st, &["volume", "inspect", "a"])["size"], 1536 << 10);
    says(
        st,
        &["volume", "create", "b", "--size", "1.1K"],
        "platter: error: invalid value '1.1K' for '--size <SIZE>': invalid size \"1.1K\": not a whole number of bytes (see --help)",
        2,
    );
    says(
        st,
        &["volume", "export", "a", "/nonexistent/dir/x.raw"],
        "platter: error: export to /nonexistent/dir/x.raw: directory /nonexistent/dir does not exist",
        1,
    );
    // As nobody, from a copy of the binary that nobody may run (the checkout may be
    // somewhere only root can reach).
    use std::os::unix::fs::PermissionsExt;
    let open = st.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = open.join("platter");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(st, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args([
            "env",
            "-u",
            "HOME",
            "-u",
            "XDG_DATA_HOME",
            "-u",
            "PLATTER_STORE",
        ])
        .arg(&bin)
        .args(["volume", "list"])
        .current_dir(&open)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "platter: error: no default store: neither XDG_DATA_HOME nor HOME is an absolute path; give --store DIR or set PLATTER_STORE"
    );
    assert_eq!(out.status.code(), Some(2));
}

/// A read-only bind mount of a store, unmounted when dropped (also when a test fails).
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn of(store: &Path, at: &Path) -> ReadOnlyMount {
        std::fs::create_dir(at).unwrap();
        let mount = |args: &[&str]| {
            let out = std::process::Command::new("mount")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "mount {args:?}: {out:?}");
        };
        let (from, to) = (store.to_str().unwrap(), at.to_str().unwrap());
        mount(&["--bind", from, to]);
        let m = ReadOnlyMount(at.to_path_buf());
        mount(&["-o", "remount,bind,ro", to]);
        m
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A store this process cannot write (here a read-only mount; also a store of another
/// user made readable) is opened read-only for commands that only read: list, inspect,
/// get and export work and give what the store holds; a command that changes it is
/// refused, naming the store, and leaves it as it was.
#[test]
fn a_store_that_cannot_be_written_is_read_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("store");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let src = dir.path().join("src.raw");
    std::fs::write(&src, &data).unwrap();
    ok(&st, &["import", src.to_str().unwrap(), "a"]);
    ok(&st, &["volume", "snapshot", "a@s1"]);
    let before = ok(&st, &["volume", "list"]);

    let ro = dir.path().join("ro");
    let _mount = ReadOnlyMount::of(&st, &ro);
    assert_eq!(ok(&ro, &["volume", "list"]), before);
    assert_eq!(json(&ro, &["volume", "inspect", "a@s1"])["size"], 1 << 20);
    ok(&ro, &["get", "dv"]);
    for r in ["a", "a@s1"] {
        let out = dir.path().join(format!("{r}.raw"));
        ok(&ro, &["volume", "export", r, out.to_str().unwrap()]);
        assert!(
            std::fs::read(&out).unwrap() == data,
            "export of {r} differs"
        );
    }
    let refused = format!(
        "platter: error: store {} cannot be written by this user, or its filesystem is read-only: only commands that read it work there (list, inspect, get, export, push)",
        ro.display()
    );
    for args in [
        &["volume", "create", "b", "--size", "1M"][..],
        &["volume", "delete", "a@s1"],
        &["volume", "snapshot", "a@s2"],
        &["volume", "gc"],
    ] {
        says(&ro, args, &refused, 1);
    }
    drop(_mount);
    assert_eq!(ok(&st, &["volume", "list"]), before);
}
