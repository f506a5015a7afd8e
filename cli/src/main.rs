//! `platter`: the one command line in front of the store, the disk server, the importer
//! and the launcher. Thin: it parses arguments, picks the store, sends each command to a
//! running server's control socket or handles it in-process, and prints the result.

mod args;
mod image;
mod interrupt;
mod objects;
mod output;
mod progress;
mod reference;
mod run;
mod serve;
mod usage;
mod vm;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue};
use clap::Parser;
use platter_control::{ErrorKind, Failure};

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("platter: {} (see --help)", usage_line(&e));
            return ExitCode::from(usage::USAGE);
        }
    };
    let filter = std::env::var("PLATTER_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    progress::set_quiet(cli.quiet);
    progress::set_verbose(cli.verbose);
    let json = cli.output == args::OutputFormat::Json;
    match run::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(i) = e.downcast_ref::<interrupt::Interrupted>() {
                match json {
                    true => {
                        print_json_error(&Failure::new(ErrorKind::Cancelled, None, i.to_string()))
                    }
                    false => eprintln!("platter: {i}"),
                }
                return ExitCode::from(i.exit_code());
            }
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let message = dedup_chain(&chain);
            match json {
                true => print_json_error(&usage::failure(&e, message)),
                false => eprintln!("platter: error: {message}"),
            }
            ExitCode::from(usage::exit_status(&e))
        }
    }
}

/// clap's error on one line, like every other error (`--help` has the rest): its first
/// line, what it lists under it (the missing arguments), and its suggestion for a typo.
fn usage_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut head: Option<&str> = None;
    let mut items = Vec::new();
    let mut tips = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        match (head, line.strip_prefix("tip: ")) {
            _ if line.is_empty() => {}
            (None, _) => head = Some(line),
            (Some(_), Some(tip)) => tips.push(tip),
            (Some(_), None) => items.push(line),
        }
    }
    let mut out = head.unwrap_or("error: invalid arguments").to_string();
    if !items.is_empty() {
        out = format!("{out} {}", items.join(", "));
    }
    let suggested: Vec<String> = [
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedArg,
        ContextKind::SuggestedValue,
    ]
    .into_iter()
    .filter_map(|k| e.get(k))
    .flat_map(|v| match v {
        ContextValue::String(s) => vec![s.clone()],
        ContextValue::Strings(v) => v.clone(),
        _ => Vec::new(),
    })
    .collect();
    if !suggested.is_empty() {
        let quoted: Vec<String> = suggested.iter().map(|s| format!("'{s}'")).collect();
        out = format!("{out}; did you mean {}?", quoted.join(" or "));
        // clap's own wording of the same suggestion.
        tips.retain(|t| !t.starts_with("a similar"));
    }
    for t in tips {
        out = format!("{out}; {t}");
    }
    out
}

/// With `-o json`, an error is one JSON line on stderr, shaped as on the control socket:
/// `{"error":{"kind":"not_found","object":"volume a","message":"volume a does not exist"}}`.
fn print_json_error(f: &Failure) {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        error: &'a Failure,
    }
    match serde_json::to_string(&Line { error: f }) {
        Ok(line) => eprintln!("{line}"),
        Err(_) => eprintln!("platter: error: {f}"),
    }
}

/// Joins an error chain into one line, skipping causes already quoted by their parent.
fn dedup_chain(chain: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in chain {
        if !out.iter().any(|o| o.contains(c.as_str())) {
            out.push(c);
        }
    }
    out.join(": ")
}
