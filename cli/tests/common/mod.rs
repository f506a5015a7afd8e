//! Helpers shared by the CLI integration tests: run `platter` against a store.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_platter");

pub fn platter(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(store: &Path, args: &[&str]) -> String {
    let out = platter(store, args);
    assert!(
        out.status.success(),
        "platter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its error, checked to be one line.
pub fn fails(store: &Path, args: &[&str]) -> String {
    let out = platter(store, args);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "platter {args:?} succeeded");
    assert_eq!(
        err.lines().count(),
        1,
        "platter {args:?}: not one line: {err}"
    );
    err
}

/// Runs a command with `-o json` and parses its one JSON document.
pub fn json(store: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(store, &a)).unwrap()
}
