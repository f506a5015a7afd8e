//! What the project ships about its own command line, all made from the one grammar in
//! `args.rs`: shell completions (`platter completion SHELL`), man pages (`platter man
//! DIR`) and the Markdown reference `docs/cli.md` (a test fails when it is stale; `make
//! cli-docs` writes it again).

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::Cli;

pub fn completion(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "platter", &mut std::io::stdout());
    Ok(())
}

pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    println!("man pages written to {}", dir.display());
    Ok(())
}

/// The Markdown reference, made only by `make cli-docs` (through the test below).
#[cfg(test)]
mod markdown {
    use std::fmt::Write as _;

    use clap::{Arg, ArgAction, Command, CommandFactory};

    use crate::args::Cli;

    /// The Markdown reference: every command with its usage, description and arguments.
    pub(super) fn markdown() -> String {
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = String::from(
            "# The `platter` command line\n\n\
             Generated from the command definitions (`cli/src/args.rs` and the argument structs \
             it names) by `make cli-docs`; a test fails when this file and the program differ. \
             The same text is in `platter COMMAND --help`, the man pages (`platter man DIR`) \
             and the shell completions (`platter completion bash|zsh|fish`).\n\n\
             Exit status: 0 done, 1 failed, 2 a usage error (a bad or missing argument, \
             whoever finds it), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Errors are \
             one line on standard error, `platter: error: …`; with `-o json` they are a JSON \
             document with the error's kind and object.\n\n\
         JSON output (`-o json`): one document on standard output, progress as JSON lines on \
         standard error. A volume has one shape from every command that returns one \
         (`volume create/inspect/list/snapshot/clone/resize`, `import`'s `volume`): `name` \
         (`NAME` or `NAME@SNAP`), `kind` (`volume` or `snapshot`), `size`, `allocated` (bytes \
         in its own top layer), `chain_allocated`, `chain` (layers, top first: `id`, `blob`, \
         `allocated`), `snapshots`, `clones`, `origin` (what it was cloned from, or null), \
         `created` (RFC 3339, UTC). A VM has one shape from `vm create` and `vm list`: \
         `name`, `state`, `accel`, `accel_reason`, `memory` (bytes), `cpus`, `uri`, `disks`, \
         `cdroms`, `throwaway`, `console_log`. `import` adds to the importer's report (`format`, \
         `size`, `source`, `source_bytes`, `bytes_written`, `checksum`, `manifest_digest`, …) \
         where the data went: `volume`, `file` or `device`. Declarative objects (`get -o \
         json`) are Kubernetes documents.\n",
        );
        section(&mut out, &cmd, "platter", true);
        out
    }

    fn section(out: &mut String, cmd: &Command, path: &str, top: bool) {
        let _ = writeln!(out, "\n{} `{path}`\n", if top { "##" } else { "###" });
        if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
            let _ = writeln!(out, "{}\n", about.to_string().trim_end());
        }
        let usage = cmd.clone().render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ").replace('\n', " ");
        let _ = writeln!(out, "```\n{}\n```\n", usage.trim());
        let args: Vec<&Arg> = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && (top || !a.is_global_set()))
            .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
            .collect();
        if !args.is_empty() {
            out.push_str("| argument | meaning |\n|---|---|\n");
            for a in args {
                let _ = writeln!(out, "| `{}` | {} |", spelling(a), meaning(a));
            }
            out.push('\n');
        }
        let subs: Vec<&Command> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            .collect();
        if !subs.is_empty() {
            out.push_str("| command | what it does |\n|---|---|\n");
            for s in &subs {
                let about = s.get_about().map(|a| a.to_string()).unwrap_or_default();
                let _ = writeln!(out, "| `{path} {}` | {} |", s.get_name(), cell(&about));
            }
        }
        for s in subs {
            section(out, s, &format!("{path} {}", s.get_name()), false);
        }
    }

    /// How an argument is written: `<NAME>`, `--size <SIZE>`, `-o, --output <OUTPUT>`.
    fn spelling(a: &Arg) -> String {
        let value = a
            .get_value_names()
            .map(|v| {
                v.iter()
                    .map(|n| format!("<{n}>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| format!("<{}>", a.get_id().as_str().to_ascii_uppercase()));
        let takes_value = matches!(a.get_action(), ArgAction::Set | ArgAction::Append);
        match (a.get_short(), a.get_long()) {
            (None, None) => value,
            (short, long) => {
                let mut names = Vec::new();
                if let Some(s) = short {
                    names.push(format!("-{s}"));
                }
                if let Some(l) = long {
                    names.push(format!("--{l}"));
                }
                let names = names.join(", ");
                match takes_value {
                    true => format!("{names} {value}"),
                    false => names,
                }
            }
        }
    }

    fn meaning(a: &Arg) -> String {
        let mut text = a
            .get_long_help()
            .or(a.get_help())
            .map(|h| h.to_string().trim_end().to_string())
            .unwrap_or_default();
        if !text.is_empty() && !text.ends_with('.') {
            text.push('.');
        }
        let values: Vec<String> = a
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !values.is_empty() && a.get_action().takes_values() {
            let _ = write!(text, " One of {}.", values.join(", "));
        }
        let defaults: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && a.get_action().takes_values() {
            let _ = write!(text, " Default: `{}`.", defaults.join(","));
        }
        if a.is_required_set() {
            text.push_str(" Required.");
        }
        cell(text.trim())
    }

    /// Text fit for one table cell.
    fn cell(s: &str) -> String {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|")
    }
}

#[cfg(test)]
mod tests {
    use super::markdown::markdown;
    use super::*;

    /// docs/cli.md is what the program says about itself (`make cli-docs` rewrites it).
    #[test]
    fn docs_cli_md_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md");
        let now = markdown();
        if std::env::var_os("PLATTER_BLESS").is_some() {
            std::fs::write(&path, &now).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == now,
            "docs/cli.md is stale: run `make cli-docs` and commit it"
        );
    }

    #[test]
    fn the_reference_names_every_command_and_argument() {
        let md = markdown();
        for needle in [
            "### `platter volume create`",
            "| `--size <SIZE>` |",
            "### `platter vm create`",
            "### `platter apply`",
            "### `platter completion`",
            "| `-o, --output <OUTPUT>` |",
            "`table`, `json`, `yaml`, `wide`",
        ] {
            assert!(md.contains(needle), "{needle} missing from:\n{md}");
        }
    }
}
