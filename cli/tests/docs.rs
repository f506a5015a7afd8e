//! What ships about the command line, run as a user would: shell completions that the
//! shell accepts, and man pages for every command.

mod common;
use common::*;

use std::process::Command;

#[test]
fn completions_load_in_bash_and_name_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let bash = ok(dir.path(), &["completion", "bash"]);
    assert!(
        bash.contains("volume") && bash.contains("--store"),
        "{bash}"
    );
    let script = dir.path().join("platter.bash");
    std::fs::write(&script, &bash).unwrap();
    // bash sources it and registers the completion function for `platter`.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p platter",
            script.display()
        ))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("platter"),
        "{said} {out:?}"
    );
    for shell in ["zsh", "fish"] {
        let text = ok(dir.path(), &["completion", shell]);
        assert!(text.contains("import"), "{shell}: {text}");
    }
    let e = fails(dir.path(), &["completion", "tcsh"]);
    assert!(e.contains("invalid value 'tcsh'"), "{e}");
}

#[test]
fn man_pages_for_every_command_render() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    ok(dir.path(), &["man", out.to_str().unwrap()]);
    for page in [
        "platter.1",
        "platter-volume-create.1",
        "platter-vm-create.1",
        "platter-apply.1",
    ] {
        let text =
            std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    // man renders it (as a user reading `man -l` would).
    let rendered = Command::new("man")
        .arg("-l")
        .arg(out.join("platter-volume-create.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        text.contains("--size") && text.contains("1.5G"),
        "{text} {rendered:?}"
    );
}
