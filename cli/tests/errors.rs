//! Errors as users see them: one line, `platter: error: …`, exit status 1, and the same
//! line whether the command opened the store itself or went through `platter serve`.

mod common;
use common::*;

use std::path::Path;

/// The failing commands of these tests, against a store holding volume `a`, its
/// snapshot `a@s1` and the clone `b` of that snapshot.
const FAILING: &[&[&str]] = &[
    &["volume", "inspect", "nosuch"],
    &["volume", "inspect", "a@nosuch"],
    &["volume", "create", "a", "--size", "1M"],
    &["volume", "delete", "a@s1"],
    &["volume", "create", "c", "--size", "0"],
    &["volume", "resize", "a", "--size", "4K"],
    &["volume", "snapshot", "a@s1"],
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
        .map(|args| {
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
    for (line, code) in &here {
        assert!(line.starts_with("platter: error: "), "{line}");
        assert_eq!(*code, Some(1), "{line}");
    }
    let _srv = Serve::start(st);
    assert_eq!(failures(st), here);
}
