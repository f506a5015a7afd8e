//! `platter import` errors a user reads (issue 23, item 5, importer side): an empty input
//! says it is empty instead of "invalid size 0", and leaves no volume behind.

mod common;
use common::*;

use std::process::{Command, Stdio};

#[test]
fn import_of_empty_stdin_says_it_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let out = Command::new(BIN)
        .arg("--store")
        .arg(&store)
        .args(["import", "-", "vol"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(
        err,
        "platter: error: standard input is empty: there is no disk image to import"
    );
    let list = ok(&store, &["volume", "list"]);
    assert!(!list.contains("vol"), "{list}");
}
